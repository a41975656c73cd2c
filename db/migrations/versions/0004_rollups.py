"""Rollups: materialised counts by month x category x area, by day x hour x borough, and on a 250 m grid.

Revision ID: 0004_rollups
Revises: 0003_population
Create Date: 2026-11-23

The dashboard reads these instead of the raw incident table (month x category over 5 million raw rows took
0.6-0.9 s; from a rollup, milliseconds). They are created empty (WITH NO DATA) and populated by the first
refresh, which the loader runs after every load (``safestats.rollups``); the SQL is ``db/sql/rollups_v1.sql``.
Changing a view means a new file and a new migration that drops and recreates it.
"""
from alembic import op

from db import read_sql

revision = "0004_rollups"
down_revision = "0003_population"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("rollups_v1.sql"))
    # Populate now (a non-concurrent refresh is allowed on an unpopulated view), so the app never sees
    # "materialized view has not been populated" even before the first load.
    for view in ("rollup_area_month", "rollup_borough_month", "rollup_borough_day_hour", "rollup_grid_month"):
        op.execute(f"REFRESH MATERIALIZED VIEW {view}")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS rollup_refreshes")
    for view in ("rollup_grid_month", "rollup_borough_day_hour", "rollup_borough_month", "rollup_area_month"):
        op.execute(f"DROP MATERIALIZED VIEW IF EXISTS {view}")
