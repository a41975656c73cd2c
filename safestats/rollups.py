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
