"""Saved and shared dashboard views, under row-level security for the web role.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29

Adds ``saved_views`` (name, description, owner, the FilterState query string, created/updated) and
``saved_view_shares`` (one row per user, organisation or tier a view is shared with), both with row-level
security for ``safestats_web`` (read what one owns or is shared with; change only one's own) and the
grants the web role needs to write them itself (``db/sql/saved_views_v1.sql``; ``safestats/saved_views.py``).
"""
from alembic import op

from db import read_sql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("saved_views_v1.sql"))


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS saved_view_shares, saved_views")
    op.execute("DROP FUNCTION IF EXISTS safestats_view_shared_with_me(bigint)")
    op.execute("DROP FUNCTION IF EXISTS safestats_acting_user_id()")
