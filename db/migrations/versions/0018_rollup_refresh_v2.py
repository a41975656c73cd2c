"""Rollup refresh version 2: the changes of a month found by one hash full join.

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-29

``safestats_refresh_rollup`` (``db/sql/rollup_refresh_v2.sql``) compares a month's fresh counts with the
table's in one hash FULL JOIN and writes only the differences, instead of an anti-join DELETE and an
INSERT ... ON CONFLICT over every fresh row (a full refresh at 10 million incidents went from 179 s; the
figures are in bench/README.md). Same signature, same results; the downgrade puts version 1 back.
"""
from alembic import op

from db import read_sql

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("rollup_refresh_v2.sql"))


def downgrade() -> None:
    op.execute(read_sql("rollup_refresh_v1.sql"))
