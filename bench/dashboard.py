"""Dashboard benchmark: server time for a filter change (every panel's data) and the bytes each panel sends.

Builds its own database (``safestats_bench_dashboard`` in the embedded cluster, or
SAFESTATS_BENCH_DATABASE_URL): migrations, London's boundaries, then about ``--rows`` generated incidents
as demo police.uk drops through the real loader, and the rollups refreshed (load and refresh are timed and
reported, not part of the latency figures). Then, for a set of typical analyst filter changes (one borough,
one category, a theme, a day-level range, an MSOA, a drawn polygon, ...), it times what the server does
for a filter change — the data of every panel (headline, freshness, time series, categories, hour x
weekday, top areas, the choropleth) and its presentation (figures, legend) — with the panel cache cleared
each time, so every figure is a cold computation. Prints p50/p95 per change and overall, and the JSON bytes
each panel sends. The panels are asked as a user of ``--tier`` (default partner_analyst) through the web
role's engine, as the portal asks them (row-level security and the rollups' visible views included);
``--role owner`` asks through the owner's engine instead, which skips the incidents table's row-level
security (the owner is superuser in the embedded cluster) but not the visible views: the difference is what
row-level security costs the raw-table plans.

each panel sends. Then (issue 6) each hotspot layer of the map — Gi* on 500 m cells and on LSOAs, the
kernel density surface and one central tile of it, emerging hot spots over 12 monthly steps, and the period
comparison — for a few filter states, cold in the same way (per-process reference data such as the study
area's cells and the LSOA neighbour pairs is built once first, as in a running portal), with the bytes of the
GeoJSON each sends.

    bench/dashboard [--rows 1000000] [--repeats 7] [--keep] [--sections panels,hotspots] [--tier TIER] [--role web|owner]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from bench.common import bench_database, load_average, percentile

REPO_ROOT = Path(__file__).resolve().parent.parent
MONTHS = 48


def prepare(url: str, rows: int) -> None:
    from db import migrate
    from loaders.boundaries import load_boundaries
    from loaders.demo import generate_demo_drops
    from loaders.pipeline import load_paths
    from safestats.rollups import refresh_rollups

    migrate.upgrade(url)
    load_boundaries(url, regions=("london",), log=lambda *a: None)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"generating about {rows:,} incidents ({MONTHS} months of demo police.uk drops)...", flush=True)
        files = generate_demo_drops(Path(tmp), months=MONTHS, rows_per_month=round(rows / MONTHS))
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            results = load_paths(url, files, progress=False, refresh_rollups=False)
        loaded = sum(r.rows_loaded for r in results)
        elapsed = time.perf_counter() - started
        print(f"loaded {loaded:,} incidents in {elapsed:.1f} s ({loaded / elapsed:,.0f} rows/s)", flush=True)
    started = time.perf_counter()
    timings = refresh_rollups(url, trigger="bench/dashboard")
    print(f"rollup refresh: {time.perf_counter() - started:.1f} s wall; "
          + ", ".join(f"{v} {s:.1f} s" for v, s in timings.items()), flush=True)


def filter_changes(engine) -> dict:
    from safestats import queries
    from safestats.filters import FilterState

    span = queries.data_span(engine)
    last = span[1]
    first_of_last = last.replace(day=1)
    some_msoa = next(a.code for a in queries.areas(engine).values() if a.level == "msoa" and a.parent_code == "E09000030")
    return {
        "default (latest 12 months)": FilterState(),
        "one borough (Camden)": FilterState(borough_code="E09000007"),
        "one category (burglary)": FilterState(categories=(3,)),
        "domain + theme (crime, weapon)": FilterState(domains=("crime",), themes=("weapon",)),
        "last 28 days (day-level range)": FilterState(date_from=date.fromordinal(last.toordinal() - 27), date_to=last),
        "a year of whole months": FilterState(date_from=first_of_last.replace(year=first_of_last.year - 1),
                                              date_to=last),
        "an MSOA (Tower Hamlets)": FilterState(borough_code="E09000030", msoa_code=some_msoa),
        "a drawn polygon (central)": FilterState(polygon=((-0.14, 51.50), (-0.08, 51.50), (-0.08, 51.53),
                                                           (-0.14, 51.53))),
        "borough + category, MSOA map": FilterState(borough_code="E09000033", categories=(1,), map_level="msoa"),
        "LSOA map, natural breaks": FilterState(map_level="lsoa", map_breaks="jenks"),
    }


def all_panels(engine, state, user) -> dict[str, object]:
    """What the server sends after a filter change, panel by panel (the dashboard callbacks' work)."""
    from dashapp.layouts import dashboard as view
    from safestats import queries

    level = state.map_level or view.level_for_zoom(state.zoom)
    head = queries.headline(engine, state, user)
    fresh = queries.freshness(engine)
    values = queries.area_values(engine, state, level, user)
    hideout = view.area_hideout(values.measure(state.map_measure), state.map_measure, state.map_breaks,
                                state.selected_area and state.selected_area[1])
    grid = queries.hour_day_grid(engine, state, user)
    return {
        "headline": [repr(c) for c in view.headline_cards(head, fresh, None)],
        "time series": view.timeseries_figure(queries.monthly_series(engine, state, user),
                                              queries.current_period(engine, state), state),
        "categories": view.categories_figure(queries.category_counts(engine, state, user), state, ()),
        "hour x weekday": view.hour_day_figure(grid, state),
        "top areas": [r.__dict__ for r in queries.top_areas(engine, state, user)],
        "map (hideout)": hideout,
    }


HOTSPOT_LAYERS = ("gi_grid", "gi_lsoa", "kde", "emerging", "compare")


def hotspot_states(engine) -> dict:
    changes = filter_changes(engine)
    return {name: changes[name] for name in ("default (latest 12 months)", "one category (burglary)",
                                             "domain + theme (crime, weapon)", "last 28 days (day-level range)",
                                             "one borough (Camden)")}


def warm_reference_data(engine) -> None:
    """What a running portal computes once per process (not per filter): areas, taxonomy, study cells, LSOA
    neighbours, the cells' Web Mercator boxes."""
    from safestats import queries

    queries.areas(engine), queries.taxonomy(engine)
    queries.study_area_cells(engine, queries.HOTSPOT_CELL_M), queries.study_area_cells(engine, queries.KDE_CELL_M)
    queries.lsoa_neighbours(engine), queries.study_area_boxes_3857(engine, queries.KDE_CELL_M)
    queries.study_area_corners_wgs84(engine, queries.HOTSPOT_CELL_M)
    queries.boundaries_geojson(engine, "lsoa")


def one_hotspot_layer(engine, state, kind: str, user) -> object:
    """What the hotspot callback does for one view state (and, for the density, one central tile)."""
    from dataclasses import replace

    from dashapp.layouts import dashboard as view
    from safestats import queries
    from safestats.tilerender import render_density_tile, tile_bounds_3857

    state = replace(state, hotspot=kind)
    layer = queries.hotspot_map_layer(engine, state, user)
    view.hotspot_legend(layer, state)
    if kind == "kde":
        bounds = tile_bounds_3857(12, 2046, 1362)
        render_density_tile(bounds, queries.kde_tile_cells(engine, layer, bounds), layer.scale_max)
        return {}
    return layer.geojson


def bench_hotspots(engine, repeats: int, user) -> None:
    """Each layer and filter change: the first run with nothing in memory but the reference data (a worker's
    first request; its grid months are read from the database), then ``repeats`` runs with the panel cache
    cleared but the grid months in memory (a filter change in a running worker, which keeps each month's
    grid rows until a refresh rewrites that month)."""
    from safestats import queries

    print(f"\n{'hotspot layer':14} {'filter change':34} {'first ms':>8} {'p50 ms':>8} {'p95 ms':>8} {'features':>9} "
          f"{'bytes':>10}")
    per_layer: dict[str, list[float]] = {}
    first_runs: dict[str, list[float]] = {}
    for kind in HOTSPOT_LAYERS:
        for name, state in hotspot_states(engine).items():
            times = []
            warm_reference_data(engine)
            for run in range(repeats + 1):
                queries.clear_caches(keep_reference=True, keep_grid_months=run > 0)
                started = time.perf_counter()
                geojson = one_hotspot_layer(engine, state, kind, user)
                times.append((time.perf_counter() - started) * 1000)
            first, times = times[0], times[1:]
            first_runs.setdefault(kind, []).append(first)
            per_layer.setdefault(kind, []).extend(times)
            features = len(geojson.get("features", [])) if geojson else 0
            size = len(json.dumps(geojson)) if geojson else 0
            print(f"{kind:14} {name:34} {first:8.0f} {statistics.median(times):8.0f} {percentile(times, 0.95):8.0f} "
                  f"{features:9,} {size:10,}", flush=True)
    print()
    for kind, times in per_layer.items():
        print(f"{kind:14} {'all filter changes':34} {max(first_runs[kind]):8.0f} {statistics.median(times):8.0f} "
              f"{percentile(times, 0.95):8.0f}   (first: the largest)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="reuse the loaded database if it is there")
    parser.add_argument("--tier", default="partner_analyst", help="the tier of the user asking (default partner_analyst)")
    parser.add_argument("--role", choices=("web", "owner"), default="web",
                        help="connect as the web role (as the portal does; default) or as the owner")
    parser.add_argument("--sections", default="panels,hotspots",
                        help="what to time, comma-separated: panels (issue 4), hotspots (issue 6)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))

    from types import SimpleNamespace

    from db import get_engine, get_web_engine

    user = SimpleNamespace(id=None, tier=args.tier, is_authenticated=True, is_active=True)

    if args.keep and os.environ.get("SAFESTATS_BENCH_DATABASE_URL"):
        url = os.environ["SAFESTATS_BENCH_DATABASE_URL"]
    else:
        url = bench_database("safestats_bench_dashboard")
        prepare(url, args.rows)
    engine = get_web_engine(url) if args.role == "web" else get_engine(url)
    with get_engine(url).connect() as conn:
        (n_incidents,) = conn.exec_driver_sql("SELECT count(*) FROM incidents").one()
    print(f"\n{n_incidents:,} incidents; {args.repeats} cold runs per filter change (panel cache cleared); "
          f"asked by a {args.tier} through the {args.role} role; "
          f"{load_average()}\n")

    sections = set(args.sections.split(","))
    if "panels" in sections:
        bench_panels(engine, args.repeats, user)
    if "hotspots" in sections:
        bench_hotspots(engine, args.repeats, user)
    return 0


def bench_panels(engine, repeats: int, user) -> dict:
    """Print and return the figures: ``{"changes": {filter change: [ms, ...]}, "sizes": {panel: [bytes, ...]}}``."""
    from safestats import queries

    all_times: list[float] = []
    by_change: dict[str, list[float]] = {}
    sizes: dict[str, list[int]] = {}
    # As a worker started by `safestats serve` holds them: the opening view's hotspot and LSOA months, read at
    # its start (not timed); every run below is cold otherwise (no cached panel result).
    queries.clear_caches()
    queries.warm_hotspot_months(engine)
    import dashapp.layouts.dashboard  # noqa: F401  (a worker has its modules imported: 0.6 s not to time)
    print(f"{'filter change':34} {'p50 ms':>8} {'p95 ms':>8}  sources")
    for name, state in filter_changes(engine).items():
        times = []
        for _ in range(repeats):
            queries.clear_caches(keep_reference=True)
            queries.areas(engine), queries.taxonomy(engine)  # per-process reference data, loaded once per worker
            started = time.perf_counter()
            panels = all_panels(engine, state, user)
            times.append((time.perf_counter() - started) * 1000)
        all_times.extend(times)
        by_change[name] = times
        for panel, payload in panels.items():
            sizes.setdefault(panel, []).append(len(json.dumps(payload, default=str)))
        source = queries.headline(engine, state, user).source.replace("rollup_", "")
        print(f"{name:34} {statistics.median(times):8.0f} {percentile(times, 0.95):8.0f}  {source}")
    print(f"{'all filter changes':34} {statistics.median(all_times):8.0f} {percentile(all_times, 0.95):8.0f}")

    print(f"\n{'panel':20} {'bytes (median)':>15} {'bytes (max)':>12}")
    for panel, values in sizes.items():
        print(f"{panel:20} {statistics.median(values):15,.0f} {max(values):12,}")
    for level in ("borough", "msoa", "lsoa"):
        once = len(json.dumps(queries.boundaries_geojson(engine, level)))
        print(f"{'boundaries ' + level:20} {once:15,} {'(fetched once, kept by the browser)':>12}")
    return {"changes": by_change, "sizes": sizes}


if __name__ == "__main__":
    raise SystemExit(main())
