"""Users who log in to the portal (argon2id password hashes; tiers are refined by the access-tier issue).

Revision ID: 0002_users
Revises: 0001_foundation
Create Date: 2026-11-23
"""
from alembic import op

revision = "0002_users"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE users (
        id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        email          text NOT NULL,
        display_name   text NOT NULL,
        organisation   text NOT NULL,
        tier           text NOT NULL DEFAULT 'viewer'
                       CHECK (tier IN ('viewer', 'borough_analyst', 'partner_analyst', 'istv_analyst', 'admin')),
        password_hash  text NOT NULL,
        active         boolean NOT NULL DEFAULT true,
        created_at     timestamptz NOT NULL DEFAULT now(),
        last_login_at  timestamptz
    );
    CREATE UNIQUE INDEX users_email_unique ON users (lower(email));
    """)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS users")
