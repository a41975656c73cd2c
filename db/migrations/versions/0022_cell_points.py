"""A drawn polygon's points packed by 250 m cell: incident_cell_points, its refresh and the web role's view.

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-30

``db/sql/cell_points_v1.sql`` creates the table (each cell's points of a month, per supplier, borough and
access level, their attributes packed side by side), ``safestats_refresh_cell_points(since, until)``, which
``safestats.rollups`` runs with every refresh of ``rollup_grid_month``, and the security-barrier view the web
role reads it through. The upgrade fills every month with data; the downgrade drops all three.
"""
from alembic import op

from db import read_sql

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("cell_points_v1.sql"))
    # Month by month: one sort of a month's points fits in memory, a sort of every point would spill.
    op.execute("SET LOCAL work_mem = '256MB'")
    op.execute("""DO $$
        DECLARE
            span record;
            m date;
        BEGIN
            SELECT * INTO span FROM safestats_rollup_source_span();
            IF span.since IS NULL THEN
                RETURN;
            END IF;
            m := span.since;
            WHILE m < span.until LOOP
                PERFORM safestats_refresh_cell_points(m, (m + interval '1 month')::date);
                m := (m + interval '1 month')::date;
            END LOOP;
        END $$""")
    op.execute("ANALYZE incident_cell_points")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS incident_cell_points_visible")
    op.execute("DROP FUNCTION IF EXISTS safestats_refresh_cell_points(date, date)")
    op.execute("DROP TABLE IF EXISTS incident_cell_points")
