"""The packed cell points also count their points by category and themes: a polygon's inside cells read them.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-01

``db/sql/cell_points_v2.sql`` adds ``groups`` and ``group_counts`` to ``incident_cell_points``, rewrites
``safestats_refresh_cell_points`` to fill them, and makes the web role's view again so that it shows them. The
upgrade refills every month. The downgrade drops the two columns and puts back version 1's function and view
(the packed points stay valid: only their order within a row changed).
"""
from alembic import op

from db import read_sql

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("cell_points_v2.sql"))
    # (The function sorts one month at a time; 256 MB keeps a month's sort in memory.)
    op.execute("SET LOCAL work_mem = '256MB'")
    op.execute("""SELECT safestats_refresh_cell_points(since, until) FROM safestats_rollup_source_span()
                  WHERE since IS NOT NULL""")
    op.execute("ANALYZE incident_cell_points")


def downgrade() -> None:
    op.execute("""DROP VIEW incident_cell_points_visible;
                  DROP FUNCTION safestats_refresh_cell_points(date, date);
                  ALTER TABLE incident_cell_points DROP COLUMN groups, DROP COLUMN group_counts""")
    version_1 = read_sql("cell_points_v1.sql")
    op.execute(version_1[version_1.index("-- Rewrite the London months"):])  # its function and view, not its table
