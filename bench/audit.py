"""Audit benchmark: what writing an audit row costs a callback, and how the hash chain holds under concurrency.

Builds its own database (``safestats_bench_audit`` in the embedded cluster, or SAFESTATS_BENCH_DATABASE_URL):
migrations and London's boundaries. Then prints:

1. one ``safestats.audit.record`` after another (one INSERT in its own transaction, chained by the trigger):
   p50/p95 ms and rows/s;
2. the same from ``--threads`` threads at once (several gunicorn workers): rows/s and p50/p95 ms, the
   chain lock serialising them — then ``audit.verify`` over everything written (rows/s);
3. a dashboard filter change as the browser makes it (``sync_state`` and the seven data panels, POSTed to
   ``/_dash-update-component`` through the Flask test client, panel cache warm so only the guard's cost and
   Dash's dispatch remain): p50/p95 ms per filter change with the audit row written and with ``record``
   replaced by a no-op; the difference is what the audit costs a filter change.

    bench/audit [--rows 2000] [--threads 4] [--changes 200] [--keep]
"""
from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

from bench.common import bench_database, dashboard_callback_bodies, login_form_token


def percentiles(samples_s: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples_s)
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
    return f"p50 {statistics.median(ms):.2f} ms, p95 {p95:.2f} ms"


def _record(engine, i: int) -> None:
    from safestats import audit

    audit.record(engine, user_id=i % 50, email=f"bench{i % 50}@bench.example", organisation="GLA",
                 tier="partner_analyst", kind="callback", target="update_map",
                 filter_state=f"borough=E09000007&from=2024-01-01&to=2024-12-31&cat={i % 30}", rows_returned=33,
                 exported=False, allowed=True, outcome="ok")


def sequential(engine, rows: int) -> None:
    samples = []
    started = time.perf_counter()
    for i in range(rows):
        t = time.perf_counter()
        _record(engine, i)
        samples.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - started
    print(f"1. sequential audit.record: {rows:,} rows in {elapsed:.2f} s ({rows / elapsed:,.0f} rows/s); "
          f"{percentiles(samples)}", flush=True)


def concurrent(engine, rows: int, threads: int) -> None:
    samples: list[float] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        mine = []
        for i in range(offset, rows, threads):
            t = time.perf_counter()
            _record(engine, i)
            mine.append(time.perf_counter() - t)
        with lock:
            samples.extend(mine)

    started = time.perf_counter()
    workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    print(f"2. {threads} threads at once: {rows:,} rows in {elapsed:.2f} s ({rows / elapsed:,.0f} rows/s); "
          f"{percentiles(samples)}", flush=True)
    from safestats import audit

    started = time.perf_counter()
    result = audit.verify(engine)
    elapsed = time.perf_counter() - started
    print(f"   verify: {result.rows:,} rows in {elapsed:.2f} s ({result.rows / elapsed:,.0f} rows/s), "
          f"{'intact' if result.ok else 'BROKEN: ' + result.problems[0]}", flush=True)


def filter_changes(url: str, changes: int) -> None:
    from dashapp import create_app
    from dashapp.auth import upsert_user
    from db import get_engine
    from safestats import audit

    password = "bench audit passphrase"
    upsert_user(get_engine(url), "bench.partner@bench.example", password, "Bench", "GLA", "partner_analyst")
    server = create_app(url)
    dash_app = server.extensions["safestats_dash"]
    client = server.test_client()
    token = login_form_token(client.get("/login").get_data(as_text=True))
    client.post("/login", data={"email": "bench.partner@bench.example", "password": password, "csrf_token": token})

    qs = "borough=E09000007&from=2024-01-01&to=2024-12-31"
    bodies = list(dashboard_callback_bodies(dash_app, qs).values())

    def one_change() -> float:
        t = time.perf_counter()
        for body in bodies:
            response = client.post("/_dash-update-component", data=body, content_type="application/json")
            assert response.status_code in (200, 204), response.status_code
        return time.perf_counter() - t

    for _ in range(3):
        one_change()  # warm the panel cache and the engine's pool
    real_record = audit.record
    results = {}
    for label in ("with audit", "audit off", "with audit"):
        audit.record = real_record if label == "with audit" else (lambda *a, **k: None)
        results.setdefault(label, []).extend(one_change() for _ in range(changes))
    audit.record = real_record
    on, off = results["with audit"], results["audit off"]
    print(f"3. a filter change, {len(bodies)} callbacks POSTed, panel cache warm: with audit {percentiles(on)}; "
          f"audit off {percentiles(off)}; the audit costs {1000 * (statistics.median(on) - statistics.median(off)):.2f} "
          f"ms at p50 per filter change ({len(bodies)} callbacks, each writing one audit row)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database afterwards")
    args = parser.parse_args(argv)
    from db import get_engine, migrate
    from loaders.boundaries import load_boundaries

    print(f"load average {os.getloadavg()[0]:.2f}, {os.getloadavg()[1]:.2f}, {os.getloadavg()[2]:.2f} "
          f"on {os.cpu_count()} cores", flush=True)
    url = bench_database("safestats_bench_audit")
    try:
        migrate.upgrade(url)
        load_boundaries(url, regions=("london",), log=lambda *a: None)
        engine = get_engine(url)
        sequential(engine, args.rows)
        concurrent(engine, args.rows, args.threads)
        filter_changes(url, args.changes)
    finally:
        if not args.keep and not os.environ.get("SAFESTATS_BENCH_DATABASE_URL"):
            from tests.conftest import drop_database

            drop_database(url)
    print(f"load average {os.getloadavg()[0]:.2f} at the end", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
