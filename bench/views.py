"""Views benchmark: full and incremental refresh of the rollups, and panel latency from the rollups against
the raw table, at 1, 10 or 30 million generated incidents.

Builds (or, with ``--keep``, reuses) a database of its own, ``safestats_bench_views_<rows>`` in the embedded
cluster: migrations, London's boundaries, then ``--rows`` incidents written by ``bench/generate.py`` over
``--years`` years less their last month (every supplier, spread over the LSOAs; not timed beyond the
rate it prints). Then it reports:

1. a full refresh of every rollup over every month (``refresh_rollups``: a year per connection, two at a
   time), per rollup (summed over its years) and wall time;
2. the incremental refresh after one month's drop: the last month is generated (one drop per supplier) and
   ``refresh_after_load`` refreshes only that month of every rollup, as after a real load; the month is then
   deleted again so a reused database stays the same;
3. panel latency, cold (panel cache cleared, per-process reference data warm), for the dashboard's filter
   changes (``bench/dashboard``'s set): each panel from the views as the query layer plans it, and from the
   raw ``incidents`` table (the planner denied every rollup), p50 and p95. The hotspot layer is Gi* on 500 m
   cells, cold (its grid months read from the database) and as a running worker answers a filter change
   (the grid months in memory, ``queries.study_counts_by_month``).

    bench/views [--rows 1000000] [--years 4] [--repeats 5] [--raw-repeats 1] [--keep] [--drop]
                [--skip-refresh | --skip-full-refresh] [--panels hotspots]

``--drop`` drops the database at the end (a 10-million-row database is several GB).
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from datetime import date


from bench.common import bench_database, drop_bench_database, load_average, percentile
from bench.common import run_sql as _rows
from safestats.rollups import OPERATOR as ADMIN  # every supplier and borough, as a DBA benchmarking the views


def _months(first_year: int, years: int) -> list[date]:
    return [date(y, m, 1) for y in range(first_year, first_year + years) for m in range(1, 13)]


def _scalar(url: str, sql: str, params=None):
    return _rows(url, sql, params)[0][0]


def prepare(url: str, rows: int, months: list[date]) -> None:
    from bench.generate import generate_incidents
    from db import migrate
    from loaders.boundaries import load_boundaries

    started = time.perf_counter()
    migrate.upgrade(url)
    print(f"migrations: {time.perf_counter() - started:.1f} s (building the rollup views of any data already "
          f"there)", flush=True)
    if not _scalar(url, "SELECT count(*) FROM areas"):
        load_boundaries(url, regions=("london",), log=lambda *a: None)
    if _scalar(url, "SELECT count(*) FROM incidents") == 0:
        print(f"generating {rows:,} incidents over {months[0]:%Y-%m} .. {months[-1]:%Y-%m} ({load_average()}) ...",
              flush=True)
        started = time.perf_counter()
        n = generate_incidents(url, rows, months=months)
        elapsed = time.perf_counter() - started
        print(f"generated {n:,} incidents in {elapsed:.0f} s ({n / elapsed:,.0f} rows/s)", flush=True)


def per_rollup(timings: dict[str, float]) -> dict[str, float]:
    """Seconds per rollup, summed over its runs of months ("<rollup> <months>" keys)."""
    from safestats.rollups import ROLLUP_VIEWS

    return {name: sum(s for run, s in timings.items() if run.split(" ", 1)[0] == name) for name in ROLLUP_VIEWS}


def time_refreshes(url: str, rows_per_month: int, incremental_month: date, full_refresh: bool = True) -> None:
    from bench.generate import generate_incidents
    from safestats import rollups

    print(f"\n== refresh ({load_average()})")
    if not _scalar(url, "SELECT count(*) FROM rollup_months"):
        started = time.perf_counter()
        rollups.refresh_rollups(url, trigger="bench/views first build")
        print(f"first build of every rollup (empty tables): {time.perf_counter() - started:.1f} s wall "
              f"({load_average()})", flush=True)
    if full_refresh:
        started = time.perf_counter()
        full = rollups.refresh_rollups(url, trigger="bench/views full refresh")
        wall = time.perf_counter() - started
        rows = {r.name: _scalar(url, f"SELECT count(*) FROM {r.name}") for r in rollups.ROLLUPS}
        print(f"full refresh of every rollup, every month: {wall:.1f} s wall, "
              f"{rollups.REFRESH_CONNECTIONS} connections ({load_average()})")
        print(f"  {'rollup':24} {'rows':>12} {'refresh s (sum of years)':>26}")
        for name, seconds in per_rollup(full).items():
            print(f"  {name:24} {rows[name]:>12,} {seconds:>26.1f}")

    last_drop = _scalar(url, "SELECT coalesce(max(id), 0) FROM drops")
    generate_incidents(url, rows_per_month, months=[incremental_month], seed=99, log=lambda *a: None)
    drop_ids = [d for (d,) in _rows(url, "SELECT id FROM drops WHERE id > %s", (last_drop,))]
    started = time.perf_counter()
    incremental = rollups.refresh_after_load(url, drop_ids, trigger="bench/views one month's drop")
    wall = time.perf_counter() - started
    print(f"incremental refresh after one month's drop ({incremental_month:%Y-%m}, {rows_per_month:,} incidents, "
          f"{len(drop_ids)} drops): {wall:.1f} s wall, {len(incremental)} rollup refreshes "
          f"({', '.join(sorted({v.split(' ', 1)[1] for v in incremental}))}) ({load_average()})")
    for name, seconds in per_rollup(incremental).items():
        print(f"  {name:24} {seconds:>8.1f} s")
    # Take the month out again, so a reused database is the same next time.
    _rows(url, "DELETE FROM incidents WHERE drop_id = ANY(%s)", (drop_ids,))
    _rows(url, "DELETE FROM drops WHERE id = ANY(%s)", (drop_ids,))
    rollups.refresh_rollups(url, trigger="bench/views restore", months=[incremental_month])


class _NoRollup:
    """A source's dimension set that answers nothing: ``needed <= _NoRollup()`` is False, ``x in`` is False."""

    def __ge__(self, other):
        return False

    def __contains__(self, item):
        return False


@contextlib.contextmanager
def raw_table_only():
    """The query layer's planner with every rollup denied: each panel reads ``incidents``."""
    from safestats import queries

    saved = dict(queries._SOURCE_DIMENSIONS)
    for source in saved:
        if source != "incidents":
            queries._SOURCE_DIMENSIONS[source] = _NoRollup()
    try:
        yield
    finally:
        queries._SOURCE_DIMENSIONS.update(saved)


def panels(engine) -> dict:
    from safestats import queries

    return {
        "headline": lambda s: queries.headline(engine, s, user=ADMIN),
        "time series": lambda s: queries.monthly_series(engine, s, user=ADMIN),
        "categories": lambda s: queries.category_counts(engine, s, user=ADMIN),
        "hour x weekday": lambda s: queries.hour_day_grid(engine, s, user=ADMIN),
        "top areas": lambda s: queries.top_areas(engine, s, user=ADMIN),
        "map (choropleth)": lambda s: queries.area_values(engine, s, s.map_level or "borough", user=ADMIN),
        "hotspots (Gi* 500 m)": lambda s: queries.hotspot_layer(engine, s, cell_m=500, user=ADMIN),
        "hotspots, months in mem": lambda s: queries.hotspot_layer(engine, s, cell_m=500, user=ADMIN),
        "hotspots (Gi* LSOA)": lambda s: queries.lsoa_hotspot_layer(engine, s, user=ADMIN),
        "hotspots LSOA, in mem": lambda s: queries.lsoa_hotspot_layer(engine, s, user=ADMIN),
    }


# Panels timed as a running worker answers a filter change: their grid (or LSOA) months already in memory,
# as safestats serve's workers hold the opening view's from their start (queries.warm_hotspot_months).
MONTHS_IN_MEMORY = {"hotspots, months in mem", "hotspots LSOA, in mem"}


def _warm_reference(engine, keep_grid_months: bool = False) -> None:
    """What a running web worker already holds: areas, taxonomy, the hotspot study area (and, when
    ``keep_grid_months``, the grid months earlier runs read)."""
    from safestats import queries

    queries.clear_caches(keep_reference=keep_grid_months)
    queries.areas(engine), queries.taxonomy(engine), queries.study_area_cells(engine, 500)


def time_panels(engine, repeats: int, raw_repeats: int, only: str | None = None) -> None:
    from bench.dashboard import filter_changes
    from safestats import queries

    changes = filter_changes(engine)
    print(f"\n== panel latency, cold, over {len(changes)} filter changes ({load_average()})")
    print(f"  {'panel':22} {'views p50':>10} {'views p95':>10} {'raw p50':>10} {'raw p95':>10}  (ms)")
    hotspot_by_filter = {}
    for panel, run in panels(engine).items():
        if only and not panel.startswith(only):
            continue
        figures = []
        for raw, n in ((False, repeats), (True, raw_repeats)):
            times = []
            for name, state in changes.items():
                if panel in MONTHS_IN_MEMORY and not raw:
                    # The months this filter reads, as a served worker that has answered it before holds them
                    # (a period's LSOA months are read on a thread after its first LSOA map: waited for).
                    queries.READ_MONTHS_IN_BACKGROUND = True
                    _warm_reference(engine, keep_grid_months=True)  # no cached result: the panel runs
                    run(state)
                    queries.wait_for_background_reads()
                    queries.READ_MONTHS_IN_BACKGROUND = False
                for _ in range(n):
                    _warm_reference(engine, keep_grid_months=panel in MONTHS_IN_MEMORY)
                    with raw_table_only() if raw else contextlib.nullcontext():
                        started = time.perf_counter()
                        run(state)
                        times.append((time.perf_counter() - started) * 1000)
                    if panel.startswith("hotspots") and not raw:
                        hotspot_by_filter.setdefault((panel, name), []).append(times[-1])
            figures += [statistics.median(times), percentile(times, 0.95)] if times else [float("nan")] * 2
        print(f"  {panel:22} {figures[0]:>10.0f} {figures[1]:>10.0f} {figures[2]:>10.0f} {figures[3]:>10.0f}",
              flush=True)
    queries.clear_caches()
    print("\n  hotspot layer from the rollups, per filter change (ms): p50 / p95")
    for (panel, name), times in hotspot_by_filter.items():
        print(f"    {panel:24} {name:34} {statistics.median(times):7.0f} / {percentile(times, 0.95):7.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/views", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--years", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="cold runs per filter change from the views")
    parser.add_argument("--raw-repeats", type=int, default=1, help="cold runs per filter change from the raw table")
    parser.add_argument("--keep", action="store_true", help="reuse the database if it holds incidents")
    parser.add_argument("--drop", action="store_true", help="drop the database at the end")
    parser.add_argument("--skip-refresh", action="store_true", help="only the panel latencies")
    parser.add_argument("--panels", default=None, help="only the panels whose name starts with this, e.g. hotspots")
    parser.add_argument("--skip-full-refresh", action="store_true",
                        help="time the incremental refresh and the panels, not the full refresh")
    args = parser.parse_args(argv)

    from db import get_engine

    months = _months(2025 - args.years, args.years)
    generated, incremental_month = months[:-1], months[-1]
    name = f"safestats_bench_views_{args.rows // 1_000_000}m" if args.rows >= 1_000_000 else \
        f"safestats_bench_views_{args.rows}"
    url = bench_database(name, keep=args.keep)
    prepare(url, round(args.rows * len(generated) / len(months)), generated)
    incidents = _scalar(url, "SELECT count(*) FROM incidents")
    size = _scalar(url, "SELECT pg_size_pretty(pg_database_size(current_database()))")
    print(f"{incidents:,} incidents in {name} ({size}); {load_average()}", flush=True)
    if not args.skip_refresh:
        time_refreshes(url, round(args.rows / len(months)), incremental_month, not args.skip_full_refresh)
    time_panels(get_engine(url), args.repeats, args.raw_repeats, args.panels)
    print(f"\ncommand: bench/views {' '.join(argv if argv is not None else sys.argv[1:])}; {load_average()}")
    if args.drop:
        get_engine(url).dispose()
        drop_bench_database(url)
        print(f"dropped {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
