"""Ingest speed: incidents partitioned by year, then by month; a large drop opening a month fills a fresh table.

Revision ID: 0017
Revises: 0013
Create Date: 2026-11-29

New year partitions are partitioned by calendar month (Europe/London), and a drop of at least
``loaders.pipeline.FRESH_MONTH_MIN_ROWS`` rows that is the first to reach its month is COPYed into a new
table without indexes, which ATTACH PARTITION then indexes in bulk (``db/sql/incident_partitions_v3.sql``;
measured in bench/README.md, "Ingest speed"). Year partitions that exist already are left as plain tables
(their rollup views depend on them), so their drops keep the COPY through the indexes. Row-level security
is enabled and forced on every partition at every level, as before. The downgrade restores version 2 of the
partition function; month partitions made meanwhile stay (ordinary partitions), but a year partitioned by
month then takes rows only for the months that have their partition.
"""
from alembic import op

from db import read_sql

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("incident_partitions_v3.sql"))


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS safestats_attach_incident_month(timestamptz)")
    op.execute("DROP FUNCTION IF EXISTS safestats_new_incident_month(timestamptz)")
    op.execute("DROP FUNCTION IF EXISTS safestats_ensure_incident_partitions(timestamptz, timestamptz, boolean)")
    op.execute(read_sql("incident_partitions_v2.sql"))
    op.execute("DROP FUNCTION IF EXISTS safestats_incident_month_partition(timestamptz)")
