"""Suppliers: police.uk stop and search and outcomes, London Ambulance Service assaults, ED (ISTV) assaults.

Revision ID: 0006_suppliers_police_health
Revises: 0005_suppliers_fire_transport
Create Date: 2026-11-23

Registers four suppliers with their access levels (ambulance and A&E records are health data, level 20),
the 'police_activity' domain, the health (70-89) and police activity (90-99) categories and each supplier's
mapping onto them (``db/sql/suppliers_police_health_v1.sql``). It also adds what an *update* drop needs:
police.uk outcomes files change crimes already loaded instead of adding incidents, so ``drops`` counts the
rows whose crime is not loaded (``rows_unmatched``: not errors), and ``police_uk_outcome_history`` keeps
every outcome row of every live outcomes drop (the incidents keep only the latest, in ``attributes``).
"""
from alembic import op

from db import read_sql

revision = "0006_suppliers_police_health"
down_revision = "0005_suppliers_fire_transport"
branch_labels = None
depends_on = None

SUPPLIERS = ("police_uk_stop_search", "police_uk_outcomes", "las", "istv_ed")


def upgrade() -> None:
    op.execute(read_sql("suppliers_police_health_v1.sql"))
    op.execute("""
    ALTER TABLE drops ADD COLUMN rows_unmatched integer NOT NULL DEFAULT 0;
    COMMENT ON COLUMN drops.rows_unmatched IS
        'Update drops (police.uk outcomes): rows whose record is not loaded; rows_read = loaded + quarantined + unmatched';

    CREATE TABLE police_uk_outcome_history (
        drop_id       bigint NOT NULL REFERENCES drops (id) ON DELETE CASCADE,
        line_no       integer NOT NULL,
        crime_id      text NOT NULL,
        month         date NOT NULL,
        outcome_type  text NOT NULL,
        force         text NOT NULL,
        matched       boolean NOT NULL,
        PRIMARY KEY (drop_id, line_no)
    );
    COMMENT ON TABLE police_uk_outcome_history IS
        'Every row of the live police.uk outcomes drops; incidents.attributes holds the latest outcome of each crime';
    COMMENT ON COLUMN police_uk_outcome_history.matched IS 'A police_uk incident with this Crime ID was loaded when the drop was';
    CREATE INDEX police_uk_outcome_history_crime_idx ON police_uk_outcome_history (crime_id, month);
    """)


def downgrade() -> None:
    codes = ", ".join(f"'{c}'" for c in SUPPLIERS)
    op.execute(f"""
    DROP TABLE IF EXISTS police_uk_outcome_history;
    ALTER TABLE drops DROP COLUMN IF EXISTS rows_unmatched;
    DELETE FROM quarantine WHERE drop_id IN (SELECT id FROM drops WHERE supplier IN ({codes}));
    DELETE FROM incidents WHERE supplier IN ({codes});
    UPDATE drops SET superseded_by = NULL WHERE superseded_by IN (SELECT id FROM drops WHERE supplier IN ({codes}));
    DELETE FROM drops WHERE supplier IN ({codes});
    DELETE FROM supplier_category_map WHERE supplier IN ({codes});
    DELETE FROM suppliers WHERE code IN ({codes});
    DELETE FROM categories WHERE id BETWEEN 70 AND 89 OR id BETWEEN 90 AND 99;
    DELETE FROM domains WHERE code = 'police_activity';
    """)
