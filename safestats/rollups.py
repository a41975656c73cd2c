"""Keeping the dashboard's rollups (materialised views, ``db/sql/rollups_v2.sql``) up to date.

Every rollup is one materialised view per calendar year (``rollup_area_month_y2024``) under a plain
UNION ALL view with the rollup's name, which is what the query layer reads. ``ROLLUPS`` below is the one
list of them in Python, in refresh order, with what each reads (another engineer's security wrappers are
generated from it; a test checks it against the ``rollup_families`` table the SQL builds from).

After a load, ``refresh_after_load`` refreshes only the views the new drops touch: the years their periods
cover, nothing for an update drop (police.uk outcomes change no count). Each view is refreshed
CONCURRENTLY in dependency order (analysts' queries keep reading the old contents until the new ones are
swapped in), a year seen for the first time gets its views created (``safestats_ensure_rollup_year``),
and every refresh is recorded in ``rollup_refreshes`` (view, family, year, started, duration, rows, the
trigger and the drops that caused it). The newest refresh id is the data version: the query layer keys its
panel cache on it, so a web worker never serves numbers from before a load it has not seen.
``safestats views status|refresh|explain`` and the admin views page sit on top of this module.

The rollups are never granted to the web role: it reads each through ``<rollup>_visible``, a
security-barrier view generated for every rollup in ``ROLLUPS`` from one template (``visible_view_sql``,
``db/sql/rollup_visible_view.sql``) that keeps only what the current user's tier may see.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, Iterable

import psycopg2

from db import libpq_dsn

H3_RESOLUTION = 8  # see h3_points in db/sql/rollups_v2.sql for why


@dataclass(frozen=True)
class Rollup:
    name: str                 # the UNION ALL view the query layer reads; years are <name>_y<YYYY>
    reads: tuple[str, ...]    # 'incidents', 'h3_points' or earlier rollups (the same year's view)
    dimensions: tuple[str, ...]
    # The finest area level it breaks data down to: a tier whose TierPolicy.min_area_level is coarser gets no
    # rows from its visible view (grid squares and hexagons count as finer than borough).
    finest_area_level: str = "lsoa"


# Refresh order: a rollup comes after everything it reads.
ROLLUPS = (
    Rollup("rollup_area_month", ("incidents",),
           ("month", "supplier", "category_id", "theme_mask", "lsoa_code", "msoa_code", "borough_code")),
    Rollup("rollup_msoa_month", ("rollup_area_month",),
           ("month", "supplier", "category_id", "theme_mask", "msoa_code", "borough_code"), "msoa"),
    Rollup("rollup_borough_month", ("rollup_msoa_month",),
           ("month", "supplier", "category_id", "theme_mask", "borough_code"), "borough"),
    Rollup("rollup_borough_day_hour", ("incidents",),
           ("day", "hour", "isodow", "supplier", "category_id", "theme_mask", "borough_code"), "borough"),
    Rollup("rollup_grid_month", ("incidents",),
           ("month", "supplier", "category_id", "theme_mask", "borough_code", "cell_x", "cell_y")),
    Rollup("rollup_grid500_month", ("rollup_grid_month",),
           ("month", "supplier", "category_id", "theme_mask", "borough_code", "cell_x", "cell_y")),
    Rollup("rollup_h3_month", ("incidents", "h3_points"),
           ("month", "supplier", "category_id", "theme_mask", "borough_code", "h3_r8")),
)
ROLLUP_VIEWS = tuple(r.name for r in ROLLUPS)
DEPENDS_ON = {r.name: r.reads for r in ROLLUPS}
# Every rollup counts incidents in a column of that name.
COUNT_COLUMN = "incidents"


def visible_view(view: str) -> str:
    """The name of the security-barrier view through which the web role reads the rollup ``view``."""
    return f"{view}_visible"


def visible_view_sql(view: str) -> str:
    """CREATE VIEW (and GRANT) of ``view``'s visible view, from ``db/sql/rollup_visible_view.sql``. Migrations
    that create a rollup run this for it; the catalog tests fail for a rollup without one."""
    from db import read_sql

    rollup = next((r for r in ROLLUPS if r.name == view), None)
    if rollup is None:
        raise ValueError(f"unknown rollup {view!r} (known: {', '.join(ROLLUP_VIEWS)})")
    return read_sql("rollup_visible_view.sql").format(view=view, finest_level=rollup.finest_area_level)


def drop_web_doors(bind) -> None:
    """Drop the views the web role reads the rollups through (before the UNION ALL views are dropped)."""
    bind.exec_driver_sql("DROP VIEW IF EXISTS incident_months_span")
    for view in ROLLUP_VIEWS:
        bind.exec_driver_sql(f"DROP VIEW IF EXISTS {visible_view(view)}")


def create_web_doors(bind) -> None:
    """Create the web role's security-barrier view of every rollup, and the span of months with data."""
    from db import read_sql

    for view in ROLLUP_VIEWS:
        bind.exec_driver_sql(visible_view_sql(view))
    bind.exec_driver_sql(read_sql("incident_months_span.sql"))


def recreate_rollups(bind) -> None:
    """Build every rollup again after a migration changed what one reads (``rollup_families``): the web role's
    doors to them are dropped first and made again after; the H3 points are filled before. Migration use."""
    doors = bind.exec_driver_sql("SELECT to_regclass('incident_months_span')").scalar() is not None
    if doors:
        drop_web_doors(bind)
    with bind.connection.cursor() as cur:  # the migration's own transaction
        fill_h3_points(cur)
    bind.exec_driver_sql("SELECT safestats_recreate_rollups()")
    if doors:
        create_web_doors(bind)


def dependants_of(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` and every rollup that reads them, directly or not, in refresh order."""
    chosen = set(names)
    for rollup in ROLLUPS:  # refresh order, so one pass sees each reader after what it reads
        if chosen & set(rollup.reads):
            chosen.add(rollup.name)
    return tuple(r.name for r in ROLLUPS if r.name in chosen)


def _update_suppliers() -> list[str]:
    """Suppliers whose drops update records already loaded (police.uk outcomes): they change no count."""
    from loaders.pipeline import is_update_format
    from loaders.registry import SUPPLIER_FORMATS

    return sorted(fmt.supplier for fmt in SUPPLIER_FORMATS if is_update_format(fmt))


# ---- H3 --------------------------------------------------------------------------------------------------

def fill_h3_points(cur, year: int | None = None) -> int:
    """Add the H3 cell of every point of ``year``'s incidents (all years when None) that ``h3_points`` lacks;
    returns how many were added. Runs in the caller's transaction."""
    from h3.api import basic_int as h3

    source = "incidents" if year is None else f"incidents_y{int(year)}"
    cur.execute("SELECT to_regclass(%s)", (source,))
    if cur.fetchone()[0] is None:
        return 0
    cur.execute(f"""SELECT DISTINCT i.longitude, i.latitude FROM {source} i
                    WHERE i.longitude IS NOT NULL AND i.latitude IS NOT NULL
                      AND NOT EXISTS (SELECT 1 FROM h3_points p
                                      WHERE p.longitude = i.longitude AND p.latitude = i.latitude)""")
    points = cur.fetchall()
    if not points:
        return 0
    from psycopg2.extras import execute_values

    execute_values(cur, "INSERT INTO h3_points (longitude, latitude, h3_r8) VALUES %s ON CONFLICT DO NOTHING",
                   [(lon, lat, h3.latlng_to_cell(lat, lon, H3_RESOLUTION)) for lon, lat in points],
                   page_size=5000)
    return len(points)


# ---- refreshing ------------------------------------------------------------------------------------------

def incident_years(cur) -> list[int]:
    """Years with an incidents partition (each has, or gets, its own rollup views)."""
    cur.execute("""SELECT substring(c.relname FROM '^incidents_y(\\d{4})$')::int FROM pg_inherits i
                   JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'incidents'::regclass ORDER BY 1""")
    return [y for (y,) in cur.fetchall() if y is not None]


def _record(cur, view: str, family: str, year: int, seconds: float, rows: int, trigger: str,
            drop_ids: list[int] | None) -> None:
    # Started = now less the duration, by the clock: now() is the transaction's start, which may be earlier.
    cur.execute("""INSERT INTO rollup_refreshes (view_name, family, year, started_at, duration_ms, row_count,
                                                 trigger, drop_ids)
                   VALUES (%s, %s, %s, clock_timestamp() - make_interval(secs => %s), %s, %s, %s, %s)""",
                (view, family, year, seconds, round(seconds * 1000), rows, trigger, drop_ids))


def _session(url: str):
    conn = psycopg2.connect(libpq_dsn(url))
    with conn.cursor() as cur:
        # JIT compiles each refresh's aggregate for seconds of no gain; hash aggregates and the concurrent
        # refresh's diff join spill to disk below a few hundred MB at 10 million incidents; and the years are
        # already refreshed on one connection per core, so parallel workers would only contend with them.
        cur.execute("SET jit = off; SET work_mem = '256MB'; SET maintenance_work_mem = '256MB'; "
                    "SET max_parallel_workers_per_gather = 0")
    conn.commit()
    return conn


# Years are refreshed on this many connections at once (a year's views in dependency order on one): each
# refresh is one backend on one core, and the machine has two.
REFRESH_CONNECTIONS = 2


def _refresh_year(url: str, year: int, chosen: tuple[str, ...], trigger: str, drop_ids: list[int] | None,
                  log: Callable[[str], None] | None) -> tuple[dict[str, float], bool]:
    """Create ``year``'s missing views and refresh its ``chosen`` ones, each in its own transaction, in
    dependency order; returns (seconds per view, whether any view was created)."""
    timings: dict[str, float] = {}
    created_any = False
    conn = _session(url)
    try:
        for rollup in ROLLUPS:
            view = f"{rollup.name}_y{year}"
            started = time.monotonic()
            with conn.cursor() as cur:
                cur.execute("SELECT safestats_create_rollup_view(%s, %s)", (rollup.name, year))
                created = cur.fetchone()[0]
                if not created and rollup.name not in chosen:
                    conn.rollback()
                    continue
                if not created:
                    cur.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {view}")
                cur.execute(f"SELECT count(*) FROM {view}")
                rows = cur.fetchone()[0]
                seconds = time.monotonic() - started
                _record(cur, view, rollup.name, year, seconds, rows,
                        trigger + (" (new year: created)" if created else ""), drop_ids)
            conn.commit()
            created_any |= created
            timings[view] = seconds
            if log:
                log(f"{'created' if created else 'refreshed'} {view}: {rows:,} rows in {seconds:.2f} s")
    finally:
        conn.close()
    return timings, created_any


def refresh_rollups(url: str, trigger: str, views: Iterable[str] = ROLLUP_VIEWS,
                    years: Iterable[int] | None = None, drop_ids: list[int] | None = None,
                    log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Refresh ``views`` (rollup names; their dependants come along) for ``years`` (default: every year
    with incidents), each year's view CONCURRENTLY in its own transaction, in dependency order, two years
    at a time; create the views of a year seen for the first time. Returns seconds per year's view."""
    from concurrent.futures import ThreadPoolExecutor

    views = tuple(views)
    unknown = set(views) - set(ROLLUP_VIEWS)
    if unknown:
        raise ValueError(f"unknown rollup view(s): {', '.join(sorted(unknown))} (known: {', '.join(ROLLUP_VIEWS)})")
    chosen = dependants_of(views)
    conn = _session(url)
    try:
        with conn.cursor() as cur:
            existing = incident_years(cur)
        wanted = existing if years is None else sorted(set(years) & set(existing))
        with conn.cursor() as cur:
            # The new points' H3 cells first, from this one connection: years share points, and two
            # connections inserting the same points in different orders would deadlock.
            for year in wanted:
                cur.execute("SELECT to_regclass(%s)", (f"rollup_h3_month_y{year}",))
                if "rollup_h3_month" in chosen or cur.fetchone()[0] is None:
                    fill_h3_points(cur, year)
        conn.commit()
        timings: dict[str, float] = {}
        created_any = False
        with ThreadPoolExecutor(max_workers=REFRESH_CONNECTIONS) as pool:
            for year_timings, created in pool.map(
                    lambda year: _refresh_year(url, year, chosen, trigger, drop_ids, log), wanted):
                timings.update(year_timings)
                created_any |= created
        with conn.cursor() as cur:
            if created_any:  # name the new years' views in the UNION ALL views, once, from one connection
                cur.execute("SELECT safestats_rebuild_rollup_views()")
            if not wanted:
                # Nothing to refresh (no incidents at all, e.g. after emptying the tables): still a new data
                # version, so caches keyed on it forget what they held.
                cur.execute("""INSERT INTO rollup_refreshes (view_name, started_at, duration_ms, row_count, trigger,
                                                             drop_ids)
                               VALUES ('(none)', now(), 0, 0, %s, %s)""", (trigger, drop_ids))
        conn.commit()
    finally:
        conn.close()
    return timings


def years_touched(url: str, drop_ids: Iterable[int]) -> list[int]:
    """The years whose rollups these drops change: the years their periods cover (every year with incidents
    for a drop without a period); none for update drops, which change no count."""
    conn = psycopg2.connect(libpq_dsn(url))
    try:
        with conn.cursor() as cur:
            cur.execute("""SELECT period_start, period_end FROM drops
                           WHERE id = ANY(%s) AND status IN ('loaded', 'superseded') AND supplier <> ALL(%s)""",
                        (list(drop_ids), _update_suppliers()))
            periods = cur.fetchall()
            years: set[int] = set()
            for start, end in periods:
                if start is None or end is None:
                    return incident_years(cur)
                years.update(range(start.year, end.year + 1))
            return sorted(years)
    finally:
        conn.close()


def refresh_after_load(url: str, drop_ids: list[int], trigger: str,
                       log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Refresh the views the loaded drops touch (every rollup of the years they cover), recording the drops."""
    years = years_touched(url, drop_ids)
    if not years:
        if log:
            log("no rollup refresh needed: these drops change no counts")
        return {}
    return refresh_rollups(url, trigger=trigger, years=years, drop_ids=sorted(drop_ids), log=log)


# ---- staleness and status --------------------------------------------------------------------------------

def _stale_sql() -> str:
    """(family, year, newest drop loaded since its last refresh) for every view older than a drop that
    touches its year, and for every year with incidents but no view yet."""
    return """
        WITH views AS (SELECT f.name AS family, y.year
                       FROM rollup_families f, safestats_rollup_years(f.name) AS y(year)),
        missing AS (SELECT f.name AS family, y.year FROM rollup_families f,
                           unnest(%(years)s::int[]) AS y(year)
                    WHERE NOT EXISTS (SELECT 1 FROM views v WHERE v.family = f.name AND v.year = y.year)),
        last AS (SELECT family, year, max(started_at) AS at FROM rollup_refreshes
                 WHERE family IS NOT NULL GROUP BY 1, 2),
        newest AS (SELECT y AS year, max(d.loaded_at) AS at FROM drops d,
                          generate_series(coalesce(extract(year FROM d.period_start)::int, 1900),
                                          coalesce(extract(year FROM d.period_end)::int, 2100)) AS y
                   WHERE d.status IN ('loaded', 'superseded') AND d.supplier <> ALL(%(update_suppliers)s)
                   GROUP BY 1)
        SELECT v.family, v.year, n.at FROM views v
        JOIN newest n ON n.year = v.year
        LEFT JOIN last l ON l.family = v.family AND l.year = v.year
        WHERE l.at IS NULL OR l.at < n.at
        UNION ALL
        SELECT family, year, NULL FROM missing"""


def stale_views(url: str) -> list[tuple[str, int]]:
    """(rollup, year) pairs a drop has changed since their last refresh, or not yet created."""
    conn = psycopg2.connect(libpq_dsn(url))
    try:
        with conn.cursor() as cur:
            years = incident_years(cur)
            cur.execute(_stale_sql(), {"years": years, "update_suppliers": _update_suppliers()})
            return sorted((family, year) for family, year, _ in cur.fetchall())
    finally:
        conn.close()


def refresh_stale(url: str, trigger: str, log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Refresh every stale view (with its dependants): what a scheduler run does after an interrupted one."""
    stale = stale_views(url)
    if not stale:
        return {}
    return refresh_rollups(url, trigger=trigger, views=sorted({f for f, _ in stale}),
                           years=sorted({y for _, y in stale}), log=log)


def views_status(url: str) -> list[dict]:
    """Per rollup: rows, size on disk, last refresh (when, how long, why), the years it holds, which of
    them a drop loaded since has made stale, and what it reads."""
    conn = psycopg2.connect(libpq_dsn(url))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT max(loaded_at) FROM drops WHERE status = 'loaded'")
            newest_drop = cur.fetchone()[0]
            years_with_incidents = incident_years(cur)
            cur.execute(_stale_sql(), {"years": years_with_incidents, "update_suppliers": _update_suppliers()})
            stale: dict[str, list[int]] = {}
            for family, year, _ in cur.fetchall():
                stale.setdefault(family, []).append(year)
            out = []
            for rollup in ROLLUPS:
                cur.execute("SELECT safestats_rollup_years(%s)", (rollup.name,))
                years = [y for (y,) in cur.fetchall()]
                rows = size = 0
                per_year = []
                for year in years:
                    view = f"{rollup.name}_y{year}"
                    cur.execute("""SELECT started_at, duration_ms, row_count, trigger FROM rollup_refreshes
                                   WHERE view_name = %s ORDER BY id DESC LIMIT 1""", (view,))
                    last = cur.fetchone()
                    if last is None:  # built by a migration, never refreshed since: count it
                        cur.execute(f"SELECT count(*) FROM {view}")
                        last = (None, None, cur.fetchone()[0], None)
                    cur.execute("SELECT pg_total_relation_size(%s::regclass)", (view,))
                    view_size = cur.fetchone()[0]
                    rows += last[2]
                    size += view_size
                    per_year.append({"view": view, "year": year, "rows": last[2], "size_bytes": view_size,
                                     "refreshed_at": last[0], "duration_ms": last[1], "trigger": last[3],
                                     "stale": year in stale.get(rollup.name, ())})
                refreshed = [p for p in per_year if p["refreshed_at"] is not None]
                latest = max(refreshed, key=lambda p: p["refreshed_at"]) if refreshed else None
                out.append({"view": rollup.name, "rows": rows, "size_bytes": size,
                            "refreshed_at": latest["refreshed_at"] if latest else None,
                            "duration_ms": latest["duration_ms"] if latest else None,
                            "trigger": latest["trigger"] if latest else None,
                            "newest_drop_at": newest_drop,
                            "stale": bool(stale.get(rollup.name)),
                            "stale_years": sorted(stale.get(rollup.name, ())),
                            "years": per_year, "depends_on": rollup.reads})
            return out
    finally:
        conn.close()


PANELS = ("headline", "timeseries", "categories", "hour_day", "top_areas", "map", "hotspots")


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
