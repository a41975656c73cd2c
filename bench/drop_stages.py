"""Where a month drop's time goes: the stages of one police.uk month through ``load_paths``, on a timeline.

``bench/scale ingest`` gives a month drop's wall time; this shows its parts. It generates the month's demo
street files once (Met and City, ``--drop-rows``), then loads them ``--repeats`` times into the
``bench/scale`` database of ``--rows`` incidents (which must exist: ``bench/scale generate``), in one
process, so the first run is a new loader process (``safestats load``) and the later ones a warm one (the
scheduler). Each run prints, in order of starting time, every stage of 10 ms or more: reading, parsing
(``parse_columns``), locating (``LocatedDrop``), each drop's write (``_write_drop``), and every SQL statement
and COPY the writers send; the stages are timed by wrapping those functions and the writers' cursors in
this process (nothing in the loaders changes). After each run the drop is deleted again, with the month
partition it opened, so the next run opens it too; the rollups are not refreshed (the drop never stays).

    bench/drop_stages --rows 30000000 [--repeats 3] [--drop-month 2025-01] [--drop-rows 300000]
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import io
import tempfile
import time
from pathlib import Path

import psycopg2.extensions

from bench.common import load_average, run_sql
from bench.scale import FRESH_MONTH, database, made_fresh, month_partition, month_street_files, take_drop_out

STAGES: list[tuple[str, float, float]] = []     # (name, started, seconds) of the current run


def timed(name: str, function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            STAGES.append((name, started, time.perf_counter() - started))
    return wrapper


class TimedCursor(psycopg2.extensions.cursor):
    """A cursor that records each statement (its first words) and COPY as a stage."""

    def execute(self, query, vars=None):
        return timed("SQL " + " ".join(str(query).split())[:60], super().execute)(query, vars)

    def copy_expert(self, sql, file, size=8192):
        return timed("COPY " + sql.split()[1], super().copy_expert)(sql, file, size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/drop_stages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="the bench/scale database to load into")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--drop-month", default=FRESH_MONTH)
    parser.add_argument("--drop-rows", type=int, default=300_000)
    args = parser.parse_args(argv)

    import loaders.pipeline as pipeline

    url = database(args.rows)
    if not run_sql(url, "SELECT to_regclass('incidents') IS NOT NULL")[0][0]:
        raise SystemExit(f"bench/drop_stages: no incidents at {args.rows:,}; run bench/scale generate --rows {args.rows}")
    pipeline.read_drop_bytes = timed("read the file", pipeline.read_drop_bytes)
    pipeline.parse_columns = timed("parse (parse_columns)", pipeline.parse_columns)
    pipeline.LocatedDrop.__init__ = timed("locate (LocatedDrop)", pipeline.LocatedDrop.__init__)
    pipeline._write_drop = timed("write the drop (_write_drop)", pipeline._write_drop)
    connect = pipeline.psycopg2.connect
    pipeline.psycopg2.connect = lambda *a, **k: connect(*a, cursor_factory=TimedCursor, **k)
    partition = month_partition(args.drop_month)
    with tempfile.TemporaryDirectory() as tmp:
        files = month_street_files(Path(tmp), args.drop_month, args.drop_rows)
        for run in range(args.repeats):
            STAGES.clear()
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                results = pipeline.load_paths(url, files, progress=False, refresh_rollups=False)
            wall = time.perf_counter() - started
            kind = "a new loader process" if run == 0 else "the same process again (warm)"
            print(f"run {run + 1}, {kind}: {sum(r.rows_loaded for r in results):,} rows committed in {wall:.2f} s "
                  f"({load_average()})")
            print("     start  seconds  stage")
            for name, at, seconds in sorted(STAGES, key=lambda s: s[1]):
                if seconds >= 0.01:
                    print(f"   {at - started:7.2f}  {seconds:7.3f}  {name}")
            take_drop_out(url, [r.drop_id for r in results if r.drop_id],
                          partition if made_fresh(url, partition) else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
