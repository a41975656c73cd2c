"""Personal API tokens for the read API (/api/v1/) and its per-token rate limit.

Revision ID: 0015
Revises: 0013
Create Date: 2026-11-29

``api_tokens``: a user's named bearer tokens (only the sha256 of each is stored; optional expiry; revoked
tokens stay listed), used by ``dashapp/api.py`` through ``safestats/api_tokens.py``. ``api_rate_limit``:
calls per token in the current one-minute window, counted in PostgreSQL so the limit holds across workers.
The web role may read, insert and update both. SQL in ``db/sql/api_tokens_v1.sql``.
"""
from alembic import op

from db import read_sql

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("api_tokens_v1.sql"))


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS api_rate_limit, api_tokens")
