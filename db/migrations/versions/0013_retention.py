"""Retention of record-level rows: each supplier's period, the retained_* counts, and rollups that keep them.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29

Adds ``suppliers.record_retention`` (health data 3 years, the rest 7), the ``retained_*`` tables that
``safestats.retention`` folds removed records into (at the rollups' own grains, never finer),
``retention_runs`` and the fold-and-remove function (``db/sql/retention_v1.sql``). Each rollup family that
reads incidents names its retained table, and the view builder (``db/sql/rollup_create_view_v2.sql``) adds
that year's retained counts to the live ones, so a trend, map or chart never changes when old records go.
Every year's rollup views are rebuilt on the way up and down. The downgrade loses the folded counts (the
records they came from are gone for good).
"""
from alembic import op

from db import read_sql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

RETAINED_TABLES = ("retained_h3_month", "retained_grid_month", "retained_borough_day_hour", "retained_area_month")


def upgrade() -> None:
    from safestats.rollups import recreate_rollups

    op.execute(read_sql("retention_v1.sql"))
    op.execute(read_sql("rollup_create_view_v2.sql"))
    recreate_rollups(op.get_bind())


def downgrade() -> None:
    from safestats.rollups import recreate_rollups

    op.execute("ALTER TABLE rollup_families DROP COLUMN retained_table")
    op.execute(read_sql("rollup_create_view_v1.sql"))
    recreate_rollups(op.get_bind())
    op.execute("DROP FUNCTION IF EXISTS safestats_fold_and_remove_records(text, timestamptz)")
    op.execute("DROP TABLE IF EXISTS retention_runs, " + ", ".join(RETAINED_TABLES))
    op.execute("ALTER TABLE suppliers DROP COLUMN IF EXISTS record_retention")
