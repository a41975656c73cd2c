"""Staged months: a large drop opening its month is filled and indexed over several connections, then attached.

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-30

Version 3 of the partition functions COPYed such a drop into a fresh table and let ATTACH PARTITION build its
indexes, all on the drop's one backend. Version 4 (``db/sql/incident_partitions_v4.sql``) stages it: helper
connections fill a committed, unattached, row-level-secured staging table and build its indexes side by side,
and the drop's transaction renames and attaches it (measured in bench/README.md, "The month drop staged").
The downgrade restores version 3's functions and drops any staging table left behind.
"""
from alembic import op

from db import read_sql

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("incident_partitions_v4.sql"))


def downgrade() -> None:
    op.execute("""DO $$
        DECLARE leftover text;
        BEGIN
            FOR leftover IN SELECT relname FROM pg_class
                            WHERE relname ~ '^incidents_y[0-9]{4}m[0-9]{2}_staged$' AND relkind = 'r' LOOP
                EXECUTE format('DROP TABLE %I', leftover);
            END LOOP;
        END $$""")
    op.execute("DROP FUNCTION IF EXISTS safestats_attach_staged_incident_month(timestamptz)")
    op.execute("DROP FUNCTION IF EXISTS safestats_staged_month_index_statements(regclass)")
    op.execute("DROP FUNCTION IF EXISTS safestats_stage_incident_month(timestamptz)")
    op.execute("DROP FUNCTION IF EXISTS safestats_staged_month_table(timestamptz)")
    op.execute("DROP FUNCTION IF EXISTS safestats_incident_month_end(timestamptz)")
    op.execute(read_sql("incident_partitions_v3.sql"))
