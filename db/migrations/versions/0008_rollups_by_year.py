"""Rollups by year: every rollup becomes one materialised view per year under a UNION ALL view, and gains
MSOA-level, 500 m grid and H3 hexagon siblings.

Revision ID: 0008
Revises: 0007_feeds
Create Date: 2026-11-29

Version 1 (migration 0004) kept four materialised views over all incidents; a concurrent refresh of them
took about 52 s at 1 million incidents, every load. Version 2 (``db/sql/rollups_v2.sql``) splits each
rollup by calendar year (``<name>_y<YYYY>``, created by ``safestats_ensure_rollup_year`` as years arrive),
so a month's drop refreshes only its year's views; the UNION ALL views keep version 1's names and columns,
so the query layer reads them unchanged. The theme-mask expression becomes one SQL function. Upgrading
with data in place fills the H3 points and builds every year's views; downgrading restores version 1's
views, populated.
"""
from alembic import op

from db import read_sql

revision = "0008"
down_revision = "0007_feeds"
branch_labels = None
depends_on = None

V1_VIEWS = ("rollup_area_month", "rollup_borough_month", "rollup_borough_day_hour", "rollup_grid_month")


def upgrade() -> None:
    for view in reversed(V1_VIEWS):
        op.execute(f"DROP MATERIALIZED VIEW IF EXISTS {view}")
    op.execute(read_sql("rollups_v2.sql"))
    op.execute(read_sql("rollup_create_view_v1.sql"))
    from safestats.rollups import fill_h3_points

    with op.get_bind().connection.cursor() as cur:  # the migration's own transaction
        fill_h3_points(cur)
    op.execute("SELECT safestats_recreate_rollups()")


def downgrade() -> None:
    op.execute("SELECT safestats_drop_rollups()")
    for function in ("safestats_recreate_rollups()", "safestats_drop_rollups()",
                     "safestats_ensure_rollup_year(integer)", "safestats_create_rollup_view(text, integer)",
                     "safestats_rebuild_rollup_views()",
                     "safestats_rollup_years(text)",
                     "safestats_theme_mask(boolean, boolean, boolean, boolean, boolean)"):
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    op.execute("DROP TABLE IF EXISTS rollup_families, h3_points")
    op.execute("DROP INDEX IF EXISTS rollup_refreshes_family_idx")
    op.execute("ALTER TABLE rollup_refreshes DROP COLUMN family, DROP COLUMN year, DROP COLUMN drop_ids")
    # Version 1's views (its file also creates rollup_refreshes, which this migration kept).
    v1 = read_sql("rollups_v1.sql")
    op.execute(v1[:v1.index("CREATE TABLE rollup_refreshes")])
    for view in V1_VIEWS:
        op.execute(f"REFRESH MATERIALIZED VIEW {view}")
