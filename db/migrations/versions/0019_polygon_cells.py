"""A drawn polygon counted from the grid rollup's cells inside it: a covering cell index, folded counts readable.

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-30

``db/sql/polygon_cells_v1.sql`` makes ``rollup_grid_month``'s (cell_x, cell_y) index cover the columns a
polygon's inside cells are summed by (an index-only scan instead of a page per row), indexes
``retained_grid_month`` by cell, and gives the web role that table through a visible view like the rollups'
(the inside cells' folded counts are taken off, so a polygon counts the records held, as its raw SQL does).
The downgrade puts the plain index back and drops the view.
"""
from alembic import op

from db import read_sql
from safestats.rollups import visible_view_sql_for

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

RETAINED_WITH_VISIBLE_VIEW = ("retained_grid_month",)  # (0025 drops its view again)


def upgrade() -> None:
    op.execute(read_sql("polygon_cells_v1.sql"))
    for table in RETAINED_WITH_VISIBLE_VIEW:  # (at the 250 m grid's grain: as finely as LSOAs, as its rollup)
        op.execute(visible_view_sql_for(table, "lsoa"))


def downgrade() -> None:
    for table in RETAINED_WITH_VISIBLE_VIEW:
        op.execute(f"DROP VIEW IF EXISTS {table}_visible")
    op.execute("DROP INDEX IF EXISTS retained_grid_month_cell_idx")
    op.execute("DROP INDEX IF EXISTS rollup_grid_month_cell_idx")
    op.execute("CREATE INDEX rollup_grid_month_cell_idx ON rollup_grid_month (cell_x, cell_y)")
