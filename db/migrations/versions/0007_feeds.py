"""Supplier feeds: upload tokens per supplier, and the scheduled-ingest job store.

Revision ID: 0007_feeds
Revises: 0006_suppliers_police_health
Create Date: 2026-11-23

``supplier_tokens`` holds the bearer tokens suppliers use on ``POST /api/feeds/v1/<supplier>/drops``
(dashapp/feeds.py): only the sha256 of each token is stored, a token is scoped to one supplier, and
revoking it sets ``revoked_at`` (the row stays, so the token list keeps its history). ``apscheduler_jobs`` is
APScheduler 3's SQLAlchemyJobStore table, in the exact shape that job store creates, made here so that
several ``safestats scheduler`` processes starting at once never race to create it, and so it goes away
with a downgrade like everything else.
"""
from alembic import op

revision = "0007_feeds"
down_revision = "0006_suppliers_police_health"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE supplier_tokens (
        id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        supplier      text NOT NULL REFERENCES suppliers (code),
        label         text NOT NULL DEFAULT '',
        token_hash    char(64) NOT NULL UNIQUE,
        created_at    timestamptz NOT NULL DEFAULT now(),
        revoked_at    timestamptz,
        last_used_at  timestamptz
    );
    COMMENT ON TABLE supplier_tokens IS 'Bearer tokens for the supplier feed API; token_hash = sha256 hex of the whole token';
    CREATE INDEX supplier_tokens_supplier_idx ON supplier_tokens (supplier);

    CREATE TABLE apscheduler_jobs (
        id             varchar(191) PRIMARY KEY,
        next_run_time  double precision,
        job_state      bytea NOT NULL
    );
    CREATE INDEX ix_apscheduler_jobs_next_run_time ON apscheduler_jobs (next_run_time);
    COMMENT ON TABLE apscheduler_jobs IS 'APScheduler 3 SQLAlchemyJobStore: the safestats scheduler''s persisted jobs';
    """)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS apscheduler_jobs")
    op.execute("DROP TABLE IF EXISTS supplier_tokens")
