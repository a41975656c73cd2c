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
    # (The function sorts one month at a time; 256 MB keeps a month's sort in memory.)
    op.execute("SET LOCAL work_mem = '256MB'")
    op.execute("""SELECT safestats_refresh_cell_points(since, until) FROM safestats_rollup_source_span()
                  WHERE since IS NOT NULL""")
    op.execute("ANALYZE incident_cell_points")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS incident_cell_points_visible")
    op.execute("DROP FUNCTION IF EXISTS safestats_refresh_cell_points(date, date)")
    op.execute("DROP TABLE IF EXISTS incident_cell_points")
