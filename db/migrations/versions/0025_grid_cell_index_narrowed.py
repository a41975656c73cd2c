"""What only the polygon's old inside-cell read used goes: the cell index's included columns, the folded counts' view.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-01

Since 0024 a drawn polygon's inside cells are counted from the cell points' groups (``queries._cell_groups``),
which hold only the records still kept. Nothing reads the grid rollup by cell for them any more, so 0019's
covering index is narrowed back to the plain (cell_x, cell_y) index the picked-cell queries use: the grid
rollup's refresh no longer maintains six included columns (at 30 million incidents the index went from
708 MB to 85 MB; a drop's refresh took as long as before, bench/README.md), and retention's folded counts lose their cell index and the web role's view of
them (they stay closed to the web role, as every rollup table is). The downgrade puts 0019's objects back.
"""
from alembic import op

from db import read_sql
from safestats.rollups import visible_view_sql_for

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS retained_grid_month_visible")
    op.execute("DROP INDEX IF EXISTS retained_grid_month_cell_idx")
    op.execute("DROP INDEX IF EXISTS rollup_grid_month_cell_idx")
    op.execute("CREATE INDEX rollup_grid_month_cell_idx ON rollup_grid_month (cell_x, cell_y)")


def downgrade() -> None:
    op.execute(read_sql("polygon_cells_v1.sql"))
    op.execute(visible_view_sql_for("retained_grid_month", "lsoa"))
