"""PostgreSQL's CPU time per row for COPYing prepared incident rows, by index set, and for bulk index builds.

Prepares drops through the real pipeline (``prepare_drop``: parse, harmonise, locate, binary COPY payload),
then COPYs the same payloads into a scratch table shaped like ``incidents`` (``LIKE incidents``) with one
set of indexes at a time, reading the backend's own CPU time from /proc (the server must be local, as the
embedded cluster is). With ``--builds`` it also times building each index in bulk on the filled, index-free
table: what attaching a fresh month partition costs (loaders/pipeline.py, FRESH_MONTH_MIN_ROWS). Corpora:
the real police.uk street files (``--corpus real``), or one generated police.uk month of about ``--rows``
rows (``--corpus month``). Runs in the ``safestats_bench`` database (bench/ingest's).

    bench/copy_costs [--corpus real|month] [--rows 300000] [--loops 4] [--repeats 3] [--builds]
"""
from __future__ import annotations

import argparse
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
PK = "ALTER TABLE copy_cost_scratch ADD PRIMARY KEY (id, occurred_at)"
TIME = "CREATE INDEX ON copy_cost_scratch (occurred_at, category_id)"
BOROUGH = "CREATE INDEX ON copy_cost_scratch (borough_code, occurred_at)"
GIST = "CREATE INDEX ON copy_cost_scratch USING gist (geom)"
SPGIST = "CREATE INDEX ON copy_cost_scratch USING spgist (geom)"
# Index sets, each COPYed into separately; the last one stores attributes unparsed (bytea takes the binary
# jsonb field as it is), to show what PostgreSQL's jsonb parse costs.
VARIANTS = {
    "no indexes": [],
    "primary key": [PK],
    "+ (occurred_at, category_id)": [PK, TIME],
    "+ (borough_code, occurred_at)": [PK, TIME, BOROUGH],
    "+ GiST (geom): incidents' indexes": [PK, TIME, BOROUGH, GIST],
    "the same with SP-GiST for GiST": [PK, TIME, BOROUGH, SPGIST],
    "no indexes, attributes not parsed": ["ALTER TABLE copy_cost_scratch ALTER attributes DROP DEFAULT, "
                                          "ALTER attributes TYPE bytea USING NULL"],
}


def backend_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def prepared_payloads(conn, files: list[Path]) -> tuple[list[bytes], int]:
    from loaders.pipeline import prepare_drop

    payloads, rows = [], 0
    for f in files:
        prepared = prepare_drop(conn, f)
        if prepared.located is None:
            sys.exit(f"bench/copy_costs: {f.name} was not prepared ({prepared.rejection or prepared.skipped})")
        # A drop that may open its month is encoded as a COPY per staging connection (loaders/staging.py).
        payloads.extend(stream.for_drop(1).readall() for stream in prepared.located.copy_streams)
        rows += prepared.located.staged_rows
    return payloads, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/copy_costs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=("real", "month"), default="real")
    parser.add_argument("--rows", type=int, default=300_000, help="rows of the generated month (--corpus month)")
    parser.add_argument("--loops", type=int, default=1, help="COPY the corpus this many times per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--builds", action="store_true", help="also time bulk builds of each index")
    parser.add_argument("--shared-data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    args = parser.parse_args(argv)

    from loaders.boundaries import load_boundaries
    from loaders.pipeline import BytesChunkReader, copy_incident_rows, expand_paths

    url = bench_database("safestats_bench")
    migrate.upgrade(url)
    load_boundaries(url, regions=("london",), log=lambda *a: None)
    conn = psycopg2.connect(libpq_dsn(url))
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SET jit = off")
    cur.execute("SELECT pg_backend_pid()")
    pid = cur.fetchone()[0]
    with tempfile.TemporaryDirectory() as tmp:
        if args.corpus == "real":
            files = [f for f in expand_paths([args.shared_data / "police_uk"]) if "-street.csv" in f.name]
        else:
            from loaders.demo import generate_demo_drops

            files = [f for f in generate_demo_drops(Path(tmp), months=1, rows_per_month=args.rows,
                                                    fire_and_transport=False) if f.name.endswith("-street.csv")]
        payloads, rows = prepared_payloads(conn, files)
    rows *= args.loops
    print(f"{len(files)} files prepared, {rows:,} rows per repeat; {load_average()}", flush=True)

    def fresh_table(statements: list[str]) -> None:
        cur.execute("DROP TABLE IF EXISTS copy_cost_scratch; "
                    "CREATE TABLE copy_cost_scratch (LIKE incidents INCLUDING DEFAULTS INCLUDING IDENTITY)")
        for statement in statements:
            cur.execute(statement)

    for name, statements in VARIANTS.items():
        cpu_us = []
        for _ in range(args.repeats):
            fresh_table(statements)
            before = backend_cpu_seconds(pid)
            for payload in payloads * args.loops:       # one transaction per drop, as the loader does
                cur.execute("BEGIN")
                copy_incident_rows(cur, "copy_cost_scratch", BytesChunkReader(bytearray(payload)))
                cur.execute("COMMIT")
            cpu_us.append((backend_cpu_seconds(pid) - before) / rows * 1e6)
        print(f"COPY, {name:36s} median {statistics.median(cpu_us):6.2f} us/row (best {min(cpu_us):.2f}); "
              f"{load_average()}", flush=True)
    if args.builds:
        fresh_table([])
        for payload in payloads * args.loops:
            copy_incident_rows(cur, "copy_cost_scratch", BytesChunkReader(bytearray(payload)))
        for statement in (PK, TIME, BOROUGH, GIST, SPGIST):
            before, started = backend_cpu_seconds(pid), time.perf_counter()
            cur.execute(statement)
            print(f"bulk build: {statement.split(' copy_cost_scratch ')[1]:36s} "
                  f"{(backend_cpu_seconds(pid) - before) / rows * 1e6:.2f} us/row of this backend "
                  f"(parallel workers not counted), {time.perf_counter() - started:.2f} s", flush=True)
    cur.execute("DROP TABLE IF EXISTS copy_cost_scratch")
    conn.close()
    print(f"command: bench/copy_costs {' '.join(argv or sys.argv[1:])}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
