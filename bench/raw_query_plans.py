"""Which raw-table queries use which incidents index: EXPLAIN ANALYZE of every panel that reads ``incidents``.

The loader pays for every index on ``incidents`` with every row it COPYs (bench/README.md), so an index has
to earn its place in a query plan. This runs each dashboard panel (and the map's point and density layers)
for filter states that send it to the raw table, captures the SQL the query layer sends
(``queries.capture_sql``), and explains each statement twice on the same data: as the schema stands, and
inside a transaction that drops the index named by ``--index`` (rolled back afterwards). It prints, per
statement, which indexes the plan used and the execution time both ways, and the total. Data: generated
police.uk demo drops (``--demo-months``), loaded through the real pipeline into a database of its own.

    bench/raw_query_plans [--demo-months 48] [--index incidents_borough_time_idx] [--repeats 3]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import re
import statistics
import sys
import tempfile
from pathlib import Path

# Filter states (URL query strings) that make the query layer read raw incidents rather than a rollup:
# a drawn polygon, an MSOA or LSOA with times of day, days of a short range in an MSOA, a borough with
# hours (for the point and density layers), and the same with categories.
RAW_STATES = {
    "borough + polygon": "borough=E09000033&poly=-0.16,51.50;-0.12,51.50;-0.12,51.53;-0.16,51.53",
    "borough + hours (points, density)": "borough=E09000028&hours=22-4",
    "borough + category + days": "borough=E09000022&cat=10&dow=6,7",
    "msoa + hours": "msoa=E02000970&hours=18-23",
    "lsoa + weekend": "lsoa=E01003029&dow=6,7",
    "polygon only": "poly=-0.14,51.50;-0.10,51.50;-0.10,51.52;-0.14,51.52",
}
PANELS = ("headline", "timeseries", "categories", "hour_day", "top_areas", "map", "points", "density")


def _run_panel(engine, panel: str, state) -> None:
    from safestats import queries

    if panel == "points":
        queries.point_clusters(engine, state, (-0.35, 51.38, 0.15, 51.62), 13)
    elif panel == "density":
        queries.density_cells(engine, state, queries.LONDON_BBOX_3857, 500)
    elif panel == "map":
        queries.area_values(engine, state, "lsoa")
    else:
        {"headline": queries.headline, "timeseries": queries.monthly_series, "categories": queries.category_counts,
         "hour_day": queries.hour_day_grid, "top_areas": queries.top_areas}[panel](engine, state)


def captured_statements(engine) -> list[tuple[str, str, dict]]:
    """(label, SQL, params) of every statement that reads the raw incidents table, for every state and panel."""
    from safestats import queries
    from safestats.filters import FilterState

    found = []
    for label, query in RAW_STATES.items():
        state = FilterState.from_query_string(query)
        for panel in PANELS:
            queries.clear_caches()
            queries.data_span(engine), queries.taxonomy(engine), queries.areas(engine)
            with queries.capture_sql() as statements:
                _run_panel(engine, panel, state)
            for sql, params in statements:
                if re.search(r"\bFROM incidents\b", sql):
                    found.append((f"{label} / {panel}", sql, params))
    return found


def explain(conn, sql: str, params: dict) -> tuple[float, set[str]]:
    from sqlalchemy import text

    rows = conn.execute(text(f"EXPLAIN (ANALYZE, FORMAT TEXT) {sql}"), params).all()
    plan = "\n".join(r[0] for r in rows)
    ms = float(re.search(r"Execution Time: ([\d.]+) ms", plan).group(1))
    used = set(re.findall(r"(?:Index|Bitmap Index) (?:Only )?Scan (?:Backward )?(?:using|on) (incidents_y\d+_\w+)", plan))
    return ms, {re.sub(r"^incidents_y\d+_", "", u) for u in used}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/raw_query_plans", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-months", type=int, default=48)
    parser.add_argument("--index", default="incidents_borough_time_idx")
    parser.add_argument("--repeats", type=int, default=3, help="EXPLAIN ANALYZE runs per statement (median)")
    args = parser.parse_args(argv)

    from sqlalchemy import text

    from bench.ingest import bench_database, load_average
    from db import get_engine, migrate
    from loaders.boundaries import load_boundaries
    from loaders.demo import generate_demo_drops
    from loaders.pipeline import format_for, load_paths

    print(f"Preparing: migrations, boundaries, {args.demo_months} months of police.uk demo drops ({load_average()})",
          flush=True)
    url = bench_database("safestats_plans")
    migrate.upgrade(url)
    load_boundaries(url, regions=("london",), log=lambda *a: None)
    with tempfile.TemporaryDirectory() as tmp:
        files = [f for f in generate_demo_drops(Path(tmp), months=args.demo_months, fire_and_transport=False)
                 if format_for(f).supplier == "police_uk"]
        with contextlib.redirect_stdout(io.StringIO()):
            load_paths(url, files, progress=False, refresh_rollups=True)
    engine = get_engine(url)
    with engine.connect() as conn:
        conn.execute(text("ANALYZE incidents"))
        conn.commit()
        n = conn.execute(text("SELECT count(*) FROM incidents")).scalar()
    print(f"{n:,} incidents loaded; explaining every raw-table statement with and without {args.index}")

    statements = captured_statements(engine)
    with engine.connect() as conn:
        # The plans name each yearly partition's own copy of the index (incidents_y2024_borough_code_..._idx).
        partition_names = {re.sub(r"^incidents_y\d+_", "", name) for (name,) in conn.execute(text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(:index)"), {"index": args.index})}
    totals = {"with": 0.0, "without": 0.0}
    using = 0
    with engine.connect() as conn:
        for label, sql, params in statements:
            with_ms, with_used = zip(*[explain(conn, sql, params) for _ in range(args.repeats)])
            conn.execute(text(f"DROP INDEX {args.index}"))
            without_ms, without_used = zip(*[explain(conn, sql, params) for _ in range(args.repeats)])
            conn.rollback()
            a, b = statistics.median(with_ms), statistics.median(without_ms)
            totals["with"] += a
            totals["without"] += b
            uses = bool(partition_names & set().union(*with_used))
            using += uses
            print(f"{label:55s} {a:8.1f} ms -> {b:8.1f} ms without  "
                  f"indexes used: {', '.join(sorted(set().union(*with_used))) or 'none (seq scan)'}"
                  f"{'  <- uses it' if uses else ''}  | without: {', '.join(sorted(set().union(*without_used))) or 'seq scan'}")
    print(f"{len(statements)} raw-table statements, {using} use {args.index}; total execution "
          f"{totals['with']:.0f} ms with it, {totals['without']:.0f} ms without ({load_average()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
