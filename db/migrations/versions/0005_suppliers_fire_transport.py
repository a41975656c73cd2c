"""Fire and transport suppliers: London Fire Brigade incident records and TfL bus safety data.

Revision ID: 0005_suppliers_fire_transport
Revises: 0004_rollups
Create Date: 2026-11-23

Registers the suppliers ``lfb`` and ``tfl_bus``, the fire (ids 30-49) and transport (50-69) categories of the
harmonised taxonomy, and both suppliers' mappings onto them with their theme columns; the SQL is
``db/sql/taxonomy_fire_transport.sql``, the loaders ``loaders/lfb.py`` and ``loaders/tfl_bus.py``. The
downgrade deletes exactly these rows, after these suppliers' incidents, quarantined rows and drops (the
drops reference the suppliers rows, and incidents of a category that no longer exists would be orphans).
"""
from alembic import op

from db import read_sql

revision = "0005_suppliers_fire_transport"
down_revision = "0004_rollups"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("taxonomy_fire_transport.sql"))


def downgrade() -> None:
    op.execute("""
    DELETE FROM incidents WHERE supplier IN ('lfb', 'tfl_bus');
    DELETE FROM quarantine WHERE drop_id IN (SELECT id FROM drops WHERE supplier IN ('lfb', 'tfl_bus'));
    UPDATE drops SET superseded_by = NULL WHERE supplier IN ('lfb', 'tfl_bus');
    DELETE FROM drops WHERE supplier IN ('lfb', 'tfl_bus');
    DELETE FROM supplier_category_map WHERE supplier IN ('lfb', 'tfl_bus');
    DELETE FROM categories WHERE id BETWEEN 30 AND 69;
    DELETE FROM suppliers WHERE code IN ('lfb', 'tfl_bus');
    """)
    # The rollups (0004) must not go on counting incidents that are gone.
    for view in ("rollup_area_month", "rollup_borough_month", "rollup_borough_day_hour", "rollup_grid_month"):
        op.execute(f"REFRESH MATERIALIZED VIEW {view}")
