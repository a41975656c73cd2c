"""Audit log: append-only for the web role and hash-chained (issue 7, guard).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29

``audit_log`` gets one row per data view, export and denied call (written by ``dashapp.guard`` through
``safestats.audit``). The web role ``safestats_web`` may INSERT and SELECT only (no UPDATE, DELETE or
TRUNCATE; triggers refuse those for everyone on the normal path), and each row carries the sha256 of the
previous row's hash and its own canonical text, so ``safestats audit verify`` finds any later edit. The role
is created NOLOGIN here when it does not exist yet, so this works with or without the web-role migration.
The SQL is ``db/sql/audit_v1.sql``.
"""
from alembic import op

from db import read_sql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("audit_v1.sql"))


def downgrade() -> None:
    # The role stays: it may be the web role another migration made, and roles are cluster-wide.
    op.execute("DROP FUNCTION IF EXISTS audit_row_text(audit_log)")  # before the table: it takes its row type
    op.execute("DROP TABLE IF EXISTS audit_log")   # its triggers go with it
    op.execute("DROP FUNCTION IF EXISTS audit_log_chain()")
    op.execute("DROP FUNCTION IF EXISTS audit_log_refuse_change()")
