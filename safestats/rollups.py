"""Keeping the dashboard's rollups (summary tables, ``db/sql/rollups_v3.sql``) up to date.

Every rollup is one table (``rollup_area_month``) with the rollup's name, which is what the query layer
reads, refreshed by month: ``safestats_refresh_rollup(family, since, until)`` deletes the rows of those
months and writes them again from the source in the caller's transaction. ``ROLLUPS`` below is the one list
of them in Python, in refresh order, with what each reads (the web role's security wrappers are generated
from it; a test checks it against the ``rollup_tables`` table the SQL builds from).

After a load, ``refresh_after_load`` refreshes only the months the new drops touch (their periods; nothing
for an update drop: police.uk outcomes change no count), every family in dependency order in one
transaction per run of months, so analysts' queries never wait (a DELETE and an INSERT block no reader;
until the commit they read the old rows, then the new ones, every family at once). A full refresh is the
same over every month, a year per connection, two at a time. Every refresh is recorded in
``rollup_refreshes`` (view, family, months, started, duration, rows, the trigger and the drops that caused
it) and each month's in ``rollup_months`` (staleness). The newest refresh id is the data version: the query
layer keys its panel cache on it, so a web worker never serves numbers from before a load it has not seen.
``safestats views status|refresh|explain`` and the admin views page sit on top of this module. A drawn
polygon's points packed by cell (``incident_cell_points``, records rather than counts) are rewritten with
``rollup_grid_month``, in the same transaction, and recorded in ``rollup_refreshes`` the same way.

The rollups are never granted to the web role: it reads each through ``<rollup>_visible``, a
security-barrier view generated for every rollup in ``ROLLUPS`` from one template (``visible_view_sql``,
``db/sql/rollup_visible_view.sql``) that keeps only what the current user's tier may see.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date
from types import SimpleNamespace
from typing import Callable, Iterable

import psycopg2

from db import libpq_dsn

H3_RESOLUTION = 8  # see h3_points in db/sql/rollups_v2.sql for why


@dataclass(frozen=True)
class Rollup:
    name: str                 # the table the query layer reads (through its visible view)
    reads: tuple[str, ...]    # 'incidents', 'h3_points' or earlier rollups (the same months)
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
    # No borough (version 3): the hotspot layers that read it never filter by area, and a boundary cell
    # is one row, not one per borough.
    Rollup("rollup_grid500_month", ("rollup_grid_month",),
           ("month", "supplier", "category_id", "theme_mask", "cell_x", "cell_y")),
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
    rollup = next((r for r in ROLLUPS if r.name == view), None)
    if rollup is None:
        raise ValueError(f"unknown rollup {view!r} (known: {', '.join(ROLLUP_VIEWS)})")
    return visible_view_sql_for(view, rollup.finest_area_level)


def visible_view_sql_for(table: str, finest_level: str) -> str:
    """CREATE VIEW (and GRANT) of ``table``'s visible view, for any table at a rollup's grain (a rollup, or
    the folded counts retention adds to one) that breaks data down to ``finest_level``."""
    from db import read_sql

    return read_sql("rollup_visible_view.sql").format(view=table, finest_level=finest_level)


def drop_web_doors(bind) -> None:
    """Drop the views the web role reads the rollups through (before the rollups themselves are dropped)."""
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
    """Version 2's rebuild (migrations 0008-0013 only): every year's materialised views again after a migration
    changed ``rollup_families``; the web role's doors are dropped first and made again after, the H3 points
    filled before. Version 3's tables are built by ``build_rollup_tables``."""
    doors = bind.exec_driver_sql("SELECT to_regclass('incident_months_span')").scalar() is not None
    if doors:
        drop_web_doors(bind)
    with bind.connection.cursor() as cur:  # the migration's own transaction
        fill_h3_points(cur)
    bind.exec_driver_sql("SELECT safestats_recreate_rollups()")
    if doors:
        create_web_doors(bind)


def build_rollup_tables(bind) -> None:
    """Fill every rollup table from the data in place (migration use, in the migration's transaction): the
    H3 points first, then each family over every month, in refresh order."""
    with bind.connection.cursor() as cur:
        fill_h3_points(cur)
        cur.execute("SELECT since, until FROM safestats_rollup_source_span()")
        since, until = cur.fetchone()
        if since is not None:
            for rollup in ROLLUPS:
                cur.execute("SELECT safestats_refresh_rollup(%s, %s, %s)", (rollup.name, since, until))
        for rollup in ROLLUPS:
            cur.execute(f"ANALYZE {rollup.name}")


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

def fill_h3_points(cur, year: int | None = None, since: date | None = None, until: date | None = None) -> int:
    """Add the H3 cell of every point of ``year``'s incidents (all years when None; only the London months
    [``since``, ``until``) when given) that ``h3_points`` lacks; returns how many were added. Runs in the
    caller's transaction."""
    from h3.api import basic_int as h3

    source = "incidents" if year is None else f"incidents_y{int(year)}"
    cur.execute("SELECT to_regclass(%s)", (source,))
    if cur.fetchone()[0] is None:
        return 0
    in_months = ""
    if since is not None:
        in_months = ("AND i.occurred_at >= (%(since)s::timestamp AT TIME ZONE 'Europe/London') "
                     "AND i.occurred_at < (%(until)s::timestamp AT TIME ZONE 'Europe/London')")
    cur.execute(f"""SELECT DISTINCT i.longitude, i.latitude FROM {source} i
                    WHERE i.longitude IS NOT NULL AND i.latitude IS NOT NULL {in_months}
                      AND NOT EXISTS (SELECT 1 FROM h3_points p
                                      WHERE p.longitude = i.longitude AND p.latitude = i.latitude)""",
                {"since": since, "until": until})
    points = cur.fetchall()
    if not points:
        return 0
    from psycopg2.extras import execute_values

    execute_values(cur, "INSERT INTO h3_points (longitude, latitude, h3_r8) VALUES %s ON CONFLICT DO NOTHING",
                   [(lon, lat, h3.latlng_to_cell(lat, lon, H3_RESOLUTION)) for lon, lat in points],
                   page_size=5000)
    return len(points)


# ---- refreshing ------------------------------------------------------------------------------------------

def _next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def month_runs(months: Iterable[date]) -> list[tuple[date, date]]:
    """Months (any day of them) as runs [since, until) of consecutive months, none crossing a year: a year
    is one unit of work for one connection."""
    runs: list[tuple[date, date]] = []
    for month in sorted({m.replace(day=1) for m in months}):
        if runs and runs[-1][1] == month and month.month != 1:
            runs[-1] = (runs[-1][0], _next_month(month))
        else:
            runs.append((month, _next_month(month)))
    return runs


def _every_month(cur) -> list[date]:
    """Every month any rollup source holds (incidents, retained counts) or any rollup was refreshed for."""
    cur.execute("SELECT since, until FROM safestats_rollup_source_span()")
    since, until = cur.fetchone()
    months = []
    while since is not None and since < until:
        months.append(since)
        since = _next_month(since)
    return months


def _record(cur, family: str, since: date, until: date, seconds: float, rows: int, trigger: str,
            drop_ids: list[int] | None) -> None:
    # Started = now less the duration, by the clock: now() is the transaction's start, which may be earlier.
    last = date.fromordinal(until.toordinal() - 1).replace(day=1)
    cur.execute("""INSERT INTO rollup_refreshes (view_name, family, year, month_from, month_to, started_at,
                                                 duration_ms, row_count, trigger, drop_ids)
                   VALUES (%s, %s, %s, %s, %s, clock_timestamp() - make_interval(secs => %s), %s, %s, %s, %s)""",
                (family, family, since.year, since, last, seconds, round(seconds * 1000), rows, trigger, drop_ids))


def _session(url: str):
    conn = psycopg2.connect(libpq_dsn(url))
    with conn.cursor() as cur:
        # JIT compiles each refresh's aggregate for seconds of no gain; hash aggregates spill to disk below a
        # few hundred MB at 10 million incidents; and the years are already refreshed on one connection per
        # core, so parallel workers would only contend with them.
        cur.execute("SET jit = off; SET work_mem = '256MB'; SET maintenance_work_mem = '256MB'; "
                    "SET max_parallel_workers_per_gather = 0")
    conn.commit()
    return conn


# Runs of months (at most a year each) are refreshed on this many connections at once: each refresh is
# one backend on one core, and the machine has two.
REFRESH_CONNECTIONS = 2
# Two refreshes of the same year (the scheduler's and the admin page's) queue up rather than collide.
_YEAR_LOCK = 0x5afe5747


# A drawn polygon's points by 250 m cell (db/sql/cell_points_v1.sql, v2): records, not counts, so not a rollup
# family (whose refresh compares counts), but rewritten with the grid rollup, in its transaction, so a polygon
# and the grid's other readers never disagree about what has been loaded.
CELL_POINTS, CELL_POINTS_WITH = "incident_cell_points", "rollup_grid_month"


def _tables_rewritten(chosen: tuple[str, ...]) -> tuple[str, ...]:
    """The tables a refresh of the ``chosen`` families rewrites, in order: those families, then the cell points
    when the grid rollup is among them."""
    return chosen + ((CELL_POINTS,) if CELL_POINTS_WITH in chosen else ())


def _refresh_run(url: str, run: tuple[date, date], chosen: tuple[str, ...], trigger: str,
                 drop_ids: list[int] | None, log: Callable[[str], None] | None) -> dict[str, float]:
    """Refresh the ``chosen`` families (in refresh order, as ``dependants_of`` gives them) for the months
    ``run``, and the cell points after the grid rollup, in ONE transaction (readers see every change at once,
    at the commit); returns seconds per family and run."""
    since, until = run
    label = f"{since:%Y-%m}" + (f"..{date.fromordinal(until.toordinal() - 1):%Y-%m}" if _next_month(since) < until else "")
    timings: dict[str, float] = {}
    conn = _session(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_YEAR_LOCK, since.year))
            for name in _tables_rewritten(chosen):
                started = time.monotonic()
                if name == CELL_POINTS:
                    cur.execute("SELECT safestats_refresh_cell_points(%s, %s)", (since, until))
                else:
                    cur.execute("SELECT safestats_refresh_rollup(%s, %s, %s)", (name, since, until))
                rows = cur.fetchone()[0]
                seconds = time.monotonic() - started
                _record(cur, name, since, until, seconds, rows, trigger, drop_ids)
                timings[f"{name} {label}"] = seconds
                if log:
                    log(f"refreshed {name} {label}: {rows:,} rows in {seconds:.2f} s")
        conn.commit()
    finally:
        conn.close()
    return timings


def refresh_rollups(url: str, trigger: str, views: Iterable[str] = ROLLUP_VIEWS,
                    months: Iterable[date] | None = None, drop_ids: list[int] | None = None,
                    log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Refresh ``views`` (rollup names; their dependants come along) for ``months`` (default: every month
    with data), each run of consecutive months of a year in one transaction, two at a time. Returns seconds
    per family and run of months (``"rollup_area_month 2024-01..2024-12"``)."""
    from concurrent.futures import ThreadPoolExecutor

    views = tuple(views)
    unknown = set(views) - set(ROLLUP_VIEWS)
    if unknown:
        raise ValueError(f"unknown rollup view(s): {', '.join(sorted(unknown))} (known: {', '.join(ROLLUP_VIEWS)})")
    chosen = dependants_of(views)
    conn = _session(url)
    try:
        with conn.cursor() as cur:
            full = months is None
            runs = month_runs(_every_month(cur) if full else months)
            # The new points' H3 cells first, from this one connection: runs share points, and two
            # connections inserting the same points in different orders would deadlock.
            if "rollup_h3_month" in chosen and full:
                fill_h3_points(cur)
            elif "rollup_h3_month" in chosen:
                for since, until in runs:
                    fill_h3_points(cur, since.year, since, until)
        conn.commit()
        timings: dict[str, float] = {}
        with ThreadPoolExecutor(max_workers=REFRESH_CONNECTIONS) as pool:
            for run_timings in pool.map(lambda run: _refresh_run(url, run, chosen, trigger, drop_ids, log), runs):
                timings.update(run_timings)
        with conn.cursor() as cur:
            if full:  # a whole table rewritten: fresh statistics for the planner (ANALYZE blocks no reader)
                # (the cell points too: planned as the empty table a first build starts from, a polygon's
                # per-cell scans became sequential scans, 18.5 s for the central polygon at 10M)
                for name in _tables_rewritten(chosen):
                    cur.execute(f"ANALYZE {name}")
            if not runs:
                # Nothing to refresh (no incidents at all, e.g. after emptying the tables): still a new data
                # version, so caches keyed on it forget what they held.
                cur.execute("""INSERT INTO rollup_refreshes (view_name, started_at, duration_ms, row_count, trigger,
                                                             drop_ids)
                               VALUES ('(none)', now(), 0, 0, %s, %s)""", (trigger, drop_ids))
        conn.commit()
    finally:
        conn.close()
    return timings


_DROP_MONTHS_SQL = """
    SELECT d.id, m::date FROM drops d, safestats_rollup_source_span() span,
           generate_series(date_trunc('month', coalesce(d.period_start, span.since)::timestamp),
                           coalesce(d.period_end, span.until - 1)::timestamp, interval '1 month') m
    WHERE d.status IN ('loaded', 'superseded') AND d.supplier <> ALL(%(update_suppliers)s)"""


def months_touched(url: str, drop_ids: Iterable[int]) -> list[date]:
    """The months whose rollups these drops change: the months their periods cover (every month with data
    for a drop without a period); none for update drops, which change no count."""
    conn = psycopg2.connect(libpq_dsn(url))
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT DISTINCT m FROM ({_DROP_MONTHS_SQL} AND d.id = ANY(%(ids)s)) t(id, m) ORDER BY 1",
                        {"ids": list(drop_ids), "update_suppliers": _update_suppliers()})
            return [m for (m,) in cur.fetchall()]
    finally:
        conn.close()


def refresh_after_load(url: str, drop_ids: list[int], trigger: str,
                       log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Refresh the months the loaded drops touch (every rollup), recording the drops."""
    months = months_touched(url, drop_ids)
    if not months:
        if log:
            log("no rollup refresh needed: these drops change no counts")
        return {}
    return refresh_rollups(url, trigger=trigger, months=months, drop_ids=sorted(drop_ids), log=log)


# ---- staleness and status --------------------------------------------------------------------------------

def _stale_sql() -> str:
    """(family, month, newest drop loaded since its last refresh) for every rollup month older than a drop
    that touches it, or never refreshed."""
    return f"""
        WITH newest AS (SELECT m AS month, max(d.loaded_at) AS at
                        FROM ({_DROP_MONTHS_SQL}) t(id, m) JOIN drops d ON d.id = t.id GROUP BY 1)
        SELECT t.name, n.month, n.at FROM rollup_tables t CROSS JOIN newest n
        LEFT JOIN rollup_months r ON r.family = t.name AND r.month = n.month
        WHERE r.refreshed_at IS NULL OR r.refreshed_at < n.at"""


def _stale(cur) -> list[tuple[str, date]]:
    cur.execute(_stale_sql(), {"update_suppliers": _update_suppliers()})
    return sorted((family, month) for family, month, _ in cur.fetchall())


def stale_views(url: str) -> list[tuple[str, date]]:
    """(rollup, month) pairs a drop has changed since their last refresh, or never refreshed."""
    conn = psycopg2.connect(libpq_dsn(url))
    try:
        with conn.cursor() as cur:
            return _stale(cur)
    finally:
        conn.close()


def refresh_stale(url: str, trigger: str, log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Refresh every stale month (with its dependants): what a scheduler run does after an interrupted one."""
    stale = stale_views(url)
    if not stale:
        return {}
    return refresh_rollups(url, trigger=trigger, views=sorted({f for f, _ in stale}),
                           months=sorted({m for _, m in stale}), log=log)


def views_status(url: str) -> list[dict]:
    """Per rollup: rows, size on disk, last refresh (when, how long, why), the years it holds (rows and last
    refresh per year, from its months), which of them a drop loaded since has made stale, and what it reads."""
    conn = psycopg2.connect(libpq_dsn(url))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT max(loaded_at) FROM drops WHERE status = 'loaded'")
            newest_drop = cur.fetchone()[0]
            stale: dict[str, set[date]] = {}
            for family, month in _stale(cur):
                stale.setdefault(family, set()).add(month)
            out = []
            for rollup in ROLLUPS:
                cur.execute("""SELECT extract(year FROM month)::int, sum(rows)::bigint, max(refreshed_at)
                               FROM rollup_months WHERE family = %s GROUP BY 1 ORDER BY 1""", (rollup.name,))
                stale_months = sorted(stale.get(rollup.name, ()))
                per_year = [{"year": year, "rows": rows, "refreshed_at": at,
                             "stale": any(m.year == year for m in stale_months)}
                            for year, rows, at in cur.fetchall()]
                cur.execute("""SELECT started_at, duration_ms, trigger FROM rollup_refreshes WHERE family = %s
                               ORDER BY id DESC LIMIT 1""", (rollup.name,))
                last = cur.fetchone() or (None, None, None)
                cur.execute("SELECT pg_total_relation_size(%s::regclass)", (rollup.name,))
                size = cur.fetchone()[0]
                out.append({"view": rollup.name, "rows": sum(y["rows"] for y in per_year), "size_bytes": size,
                            "refreshed_at": last[0], "duration_ms": last[1], "trigger": last[2],
                            "newest_drop_at": newest_drop,
                            "stale": bool(stale_months),
                            "stale_months": stale_months,
                            "stale_years": sorted({m.year for m in stale_months}),
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
