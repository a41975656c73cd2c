"""Keeping the dashboard's rollups (materialised views, ``db/sql/rollups_v*.sql``) up to date.

``refresh_rollups`` refreshes every rollup CONCURRENTLY (analysts' queries keep running against the old
contents until the new ones are swapped in) in dependency order, and records each refresh in
``rollup_refreshes``. The newest refresh id is the data version: the query layer keys its panel cache on
it, so a web worker never serves numbers from before a load it has not seen. The loader calls this after
every batch of drops; ``safestats views refresh`` calls it by hand.
"""
from __future__ import annotations

import time
from typing import Callable

import psycopg2

from db import libpq_dsn

# Refresh order: a view comes after anything it reads (rollup_borough_month reads rollup_area_month).
ROLLUP_VIEWS = ("rollup_area_month", "rollup_borough_month", "rollup_borough_day_hour", "rollup_grid_month")


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


def explain_panel(url: str, panel: str, query_string: str = "", analyze: bool = True) -> list[str]:
    """The query plans a dashboard panel runs for a filter state (its SQL captured from the query layer)."""
    from sqlalchemy import text

    from db import get_engine
    from safestats import queries
    from safestats.filters import FilterState

    panels = {
        "headline": lambda e, s: queries.headline(e, s),
        "timeseries": lambda e, s: queries.monthly_series(e, s),
        "categories": lambda e, s: queries.category_counts(e, s),
        "hour_day": lambda e, s: queries.hour_day_grid(e, s),
        "top_areas": lambda e, s: queries.top_areas(e, s),
        "map": lambda e, s: queries.area_values(e, s, s.map_level or "borough"),
        "hotspots": lambda e, s: queries.hotspot_layer(e, s),
    }
    if panel not in panels:
        raise ValueError(f"unknown panel {panel!r} (known: {', '.join(panels)})")
    state = FilterState.from_query_string(query_string)
    engine = get_engine(url)
    queries.clear_caches()
    queries.data_span(engine), queries.taxonomy(engine), queries.areas(engine)  # reference data, not the panel
    with queries.capture_sql() as statements:
        panels[panel](engine, state)
    plans = []
    with engine.connect() as conn:
        for sql, params in statements:
            explain = "EXPLAIN (ANALYZE, BUFFERS)" if analyze else "EXPLAIN"
            rows = conn.execute(text(f"{explain} {sql}"), params).all()
            plans.append(sql.strip() + "\n" + "\n".join(r[0] for r in rows))
    return plans
