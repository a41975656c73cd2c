"""Rollups version 3: summary tables refreshed by month instead of one materialised view per year.

Revision ID: 0016
Revises: 0013
Create Date: 2026-11-29

Version 2 (migration 0008) refreshed a year's materialised views CONCURRENTLY after each drop: 323 s at 10
million incidents for one month's drop, 571 s for a full refresh. Version 3 (``db/sql/rollups_v3.sql``)
keeps every rollup's name and columns (the 500 m grid loses its borough) as a plain table, and
``safestats_refresh_rollup(family, since, until)`` rewrites just the months a drop touches, in one
transaction readers never wait on. The web role's visible views and the months span are recreated over the
tables. Upgrading with data in place fills the H3 points and builds every month; downgrading drops the
tables and rebuilds version 2's year views (the functions and ``rollup_families`` of 0008/0013 are kept).
"""
from alembic import op

from db import read_sql

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

V3_FUNCTIONS = ("safestats_refresh_rollup(text, date, date)", "safestats_rollup_source_span()")


def upgrade() -> None:
    from safestats.rollups import ROLLUP_VIEWS, build_rollup_tables, create_web_doors, drop_web_doors

    bind = op.get_bind()
    drop_web_doors(bind)
    op.execute("SELECT safestats_drop_rollups()")  # version 2's UNION ALL views and year views
    op.execute(read_sql("rollups_v3.sql"))
    op.execute(read_sql("rollup_refresh_v1.sql"))
    assert ROLLUP_VIEWS == tuple(r for (r,) in bind.exec_driver_sql(
        "SELECT name FROM rollup_tables ORDER BY refresh_order")), "rollups_v3.sql and safestats.rollups disagree"
    build_rollup_tables(bind)
    create_web_doors(bind)


def downgrade() -> None:
    from safestats.rollups import ROLLUP_VIEWS, create_web_doors, drop_web_doors, fill_h3_points

    bind = op.get_bind()
    drop_web_doors(bind)
    for view in reversed(ROLLUP_VIEWS):
        op.execute(f"DROP TABLE IF EXISTS {view}")
    op.execute("DROP TABLE IF EXISTS rollup_months, rollup_tables")
    for function in V3_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    op.execute("ALTER TABLE rollup_refreshes DROP COLUMN month_from, DROP COLUMN month_to")
    with bind.connection.cursor() as cur:  # the migration's own transaction
        fill_h3_points(cur)
    op.execute("SELECT safestats_recreate_rollups()")  # version 2's year views (0013's builder)
    create_web_doors(bind)
