"""Rollup refresh version 3: fresh counts always hashed; retained counts unioned in only where there are some.

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-30

``safestats_refresh_rollup`` (``db/sql/rollup_refresh_v3.sql``) groups a month's fresh counts by hashing
(the planner had sorted the H3 family's 7.7 million rows a year on disk after misjudging its join), and
skips the second grouping over the retained counts for months retention has folded nothing into. Same
signature, same results; the downgrade puts version 2 back.
"""
from alembic import op

from db import read_sql

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("rollup_refresh_v3.sql"))


def downgrade() -> None:
    op.execute(read_sql("rollup_refresh_v2.sql"))
