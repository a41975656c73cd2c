"""Keeping the dashboard's rollups (materialised views, ``db/sql/rollups_v*.sql``) up to date.

``refresh_rollups`` refreshes every rollup CONCURRENTLY (analysts' queries keep running against the old
contents until the new ones are swapped in) in dependency order, and records each refresh in
``rollup_refreshes``. The newest refresh id is the data version: the query layer keys its panel cache on
it, so a web worker never serves numbers from before a load it has not seen. The loader calls this after
every batch of drops; ``safestats views refresh`` calls it by hand.

The rollups are never granted to the web role: it reads each through ``<rollup>_visible``, a
security-barrier view generated for every rollup in ``ROLLUP_VIEWS`` from one template
(``visible_view_sql``) that keeps only what the current user's tier may see (see ``db/sql/rollup_visible_view.sql``).
"""
from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Callable

import psycopg2

from db import libpq_dsn

# Refresh order: a view comes after anything it reads (rollup_borough_month reads rollup_area_month).
ROLLUP_VIEWS = ("rollup_area_month", "rollup_borough_month", "rollup_borough_day_hour", "rollup_grid_month")
# The finest area level each rollup breaks data down to: a tier whose TierPolicy.min_area_level is coarser
# gets no rows from its visible view (the 250 m grid counts as finer than borough).
FINEST_AREA_LEVEL = {"rollup_area_month": "lsoa", "rollup_borough_month": "borough",
                     "rollup_borough_day_hour": "borough", "rollup_grid_month": "lsoa"}


def visible_view(view: str) -> str:
    """The name of the security-barrier view through which the web role reads the rollup ``view``."""
    return f"{view}_visible"


def visible_view_sql(view: str) -> str:
    """CREATE VIEW (and GRANT) of ``view``'s visible view, from ``db/sql/rollup_visible_view.sql``. Migrations
    that create a rollup run this for it; the catalog tests fail for a rollup without one."""
    from db import read_sql

    if view not in FINEST_AREA_LEVEL:
        raise ValueError(f"no finest area level recorded for rollup {view!r} (add it to FINEST_AREA_LEVEL)")
    return read_sql("rollup_visible_view.sql").format(view=view, finest_level=FINEST_AREA_LEVEL[view])


def refresh_rollups(url: str, trigger: str, views: tuple[str, ...] = ROLLUP_VIEWS,
                    log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Refresh ``views`` (each in its own transaction) and return seconds taken per view."""
    unknown = set(views) - set(ROLLUP_VIEWS)
    if unknown:
        raise ValueError(f"unknown rollup view(s): {', '.join(sorted(unknown))} (known: {', '.join(ROLLUP_VIEWS)})")
    timings: dict[str, float] = {}
    conn = psycopg2.connect(libpq_dsn(url))
    try:
        with conn.cursor() as cur:
            cur.execute("SET jit = off")
        conn.commit()
        for view in ROLLUP_VIEWS:
            if view not in views:
                continue
            started = time.monotonic()
            with conn.cursor() as cur:
                cur.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {view}")
                cur.execute(f"SELECT count(*) FROM {view}")
                rows = cur.fetchone()[0]
                seconds = time.monotonic() - started
                cur.execute("""INSERT INTO rollup_refreshes (view_name, started_at, duration_ms, row_count, trigger)
                               VALUES (%s, now() - make_interval(secs => %s), %s, %s, %s)""",
                            (view, seconds, round(seconds * 1000), rows, trigger))
            conn.commit()
            timings[view] = seconds
            if log:
                log(f"refreshed {view}: {rows:,} rows in {seconds:.2f} s")
    finally:
        conn.close()
    return timings


# What each rollup reads, for `safestats views status` and for refreshing in dependency order.
DEPENDS_ON = {"rollup_area_month": ("incidents",), "rollup_borough_month": ("rollup_area_month",),
              "rollup_borough_day_hour": ("incidents",), "rollup_grid_month": ("incidents",)}


def views_status(url: str) -> list[dict]:
    """Per rollup: rows, size on disk, last refresh (when, how long, why), and whether a drop loaded since
    then has made it stale."""
    conn = psycopg2.connect(libpq_dsn(url))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT max(loaded_at) FROM drops WHERE status = 'loaded'")
            newest_drop = cur.fetchone()[0]
            out = []
            for view in ROLLUP_VIEWS:
                cur.execute(f"SELECT count(*), pg_total_relation_size('{view}') FROM {view}")
                rows, size = cur.fetchone()
                cur.execute("""SELECT started_at, duration_ms, trigger FROM rollup_refreshes
                               WHERE view_name = %s ORDER BY started_at DESC LIMIT 1""", (view,))
                last = cur.fetchone()
                refreshed_at = last[0] if last else None
                stale = newest_drop is not None and (refreshed_at is None or refreshed_at < newest_drop)
                out.append({"view": view, "rows": rows, "size_bytes": size, "refreshed_at": refreshed_at,
                            "duration_ms": last[1] if last else None, "trigger": last[2] if last else None,
                            "stale": stale, "depends_on": DEPENDS_ON[view]})
            return out
    finally:
        conn.close()


# `safestats views explain` is an operator's tool run with the owner's credentials: it explains a panel as an
# admin would see it (every supplier, every borough).
OPERATOR = SimpleNamespace(id=None, tier="admin", is_authenticated=True, is_active=True)


def explain_panel(url: str, panel: str, query_string: str = "", analyze: bool = True, user=OPERATOR) -> list[str]:
    """The query plans a dashboard panel runs for a filter state (its SQL captured from the query layer), as
    ``user`` sees it."""
    from sqlalchemy import text

    from db import get_engine
    from safestats import queries
    from safestats.db_scope import acting_as
    from safestats.filters import FilterState

    panels = {
        "headline": queries.headline,
        "timeseries": queries.monthly_series,
        "categories": queries.category_counts,
        "hour_day": queries.hour_day_grid,
        "top_areas": queries.top_areas,
        "map": lambda e, s, user: queries.area_values(e, s, s.map_level or "borough", user),
        "hotspots": queries.hotspot_layer,
    }
    if panel not in panels:
        raise ValueError(f"unknown panel {panel!r} (known: {', '.join(panels)})")
    state = FilterState.from_query_string(query_string)
    engine = get_engine(url)
    queries.clear_caches()
    queries.data_span(engine), queries.taxonomy(engine), queries.areas(engine)  # reference data, not the panel
    with queries.capture_sql() as statements:
        panels[panel](engine, state, user=user)
    plans = []
    with acting_as(user), engine.connect() as conn:
        for sql, params in statements:
            explain = "EXPLAIN (ANALYZE, BUFFERS)" if analyze else "EXPLAIN"
            rows = conn.execute(text(f"{explain} {sql}"), params).all()
            plans.append(sql.strip() + "\n" + "\n".join(r[0] for r in rows))
    return plans
