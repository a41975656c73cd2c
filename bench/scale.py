"""Scale benchmark (issue 9, "measure first"): one command per figure, at 1, 10 or 30 million incidents.

Every figure goes through the real code, on a database of its own that is kept between commands
(``safestats_bench_scale_<size>`` in the embedded cluster, or SAFESTATS_BENCH_DATABASE_URL), and is printed
with the load average and appended to ``bench/scale-results/scale-<size>.json`` (which ``plot`` reads):

    bench/scale generate --rows 10000000 [--fresh]  migrations, boundaries, --rows incidents (bench/generate.py,
                                                   2021-01 .. 2024-11), then the first build of every view
    bench/scale ingest   --rows N [--drop-rows 300000]  one month's police.uk drop (2024-12, demo street files
                                                   of --drop-rows rows) through loaders.pipeline.load_paths on
                                                   top: rows/s and wall time to commit; then the views that
                                                   drop touches refreshed (rollups.refresh_after_load); then
                                                   the drop is taken out again. --drop-month 2025-01: a month
                                                   that opens its partition; --warm: the files prepared once
                                                   first, unwritten (a long-lived loader, as the scheduler)
    bench/scale refresh  --rows N                  full refresh of every view (rollups.refresh_rollups)
    bench/scale panels   --rows N [--repeats 5]    in-process server time for a filter change, all panels, cold
                                                   (bench/dashboard's filter changes and timing), bytes per panel
    bench/scale http     --rows N [--repeats 3] [--workers 2]  the same through HTTP: gunicorn (safestats/serving)
                                                   on loopback, a signed-in partner analyst POSTing sync_state
                                                   then every panel at once to /_dash-update-component; the
                                                   panel cache made cold before each change (a refresh row
                                                   bumps the data version); bytes per callback; RSS per worker
    bench/scale load     --rows N [--users 10,50,100] [--duration 60] [--workers 5]  bench/loadtest.py from a
                                                   second process against gunicorn: p95 and error rate
    bench/scale size     --rows N                  pg_database_size and the largest relations
    bench/scale all      --rows N                  generate (if needed), ingest, refresh, panels, http, load, size
    bench/scale plot                               bench/scale_latency.png: latency against size, every results file
    bench/scale report                             the results files as the Markdown tables of bench/README.md
    bench/scale drop     --rows N                  drop the benchmark database
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timezone
from pathlib import Path
from types import SimpleNamespace

from bench.common import (bench_database, children_of, dashboard_callback_bodies, drop_bench_database,
                          load_average, login_form_token, percentile, rss_kib, run_sql)
from safestats.serving import DEFAULT_THREADS

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "scale-results"  # kept in git: the plot and bench/README.md are made from them
PLOT_PATH = REPO_ROOT / "bench" / "scale_latency.png"
GENERATED_MONTHS = [date(y, m, 1) for y in range(2021, 2025) for m in range(1, 13)][:-1]  # 2021-01 .. 2024-11
DROP_MONTH = "2024-12"  # into 2024's partition: the generator writes plain year tables, so through its indexes
FRESH_MONTH = "2025-01"  # opens a month partition of a new year: the fresh-table path a portal's new months take
ANALYST_PASSWORD = "a load-test analyst passphrase 9"
PARTNER = SimpleNamespace(id=None, tier="partner_analyst", is_authenticated=True, is_active=True)
# The map as a page opens: all of London at zoom 11 (boroughs), no points layer.
MAP_ZOOM, MAP_BOUNDS = 11, ((51.28, -0.51), (51.69, 0.33))


def size_label(rows: int) -> str:
    return f"{rows // 1_000_000}m" if rows >= 1_000_000 and rows % 1_000_000 == 0 else str(rows)


def save(rows: int, section: str, figures: dict, argv: list[str]) -> None:
    """Add a section's figures to bench/scale-results/scale-<size>.json (replacing that section's earlier ones)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"scale-{size_label(rows)}.json"
    results = json.loads(path.read_text()) if path.exists() else {"rows": rows}
    results[section] = dict(figures, load_average=os.getloadavg()[:2],
                            measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            command="bench/scale " + " ".join(argv))
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"  (saved to {path.relative_to(REPO_ROOT)}; {load_average()})", flush=True)


def database(rows: int, fresh: bool = False) -> str:
    return bench_database(f"safestats_bench_scale_{size_label(rows)}", keep=not fresh)


def ensure_generated(url: str, rows: int) -> dict:
    """Migrations, boundaries and the generated incidents, each only if missing; the generation's figures."""
    from bench.generate import generate_incidents
    from db import migrate
    from loaders.boundaries import load_boundaries
    from safestats import rollups

    migrate.upgrade(url)
    if not run_sql(url, "SELECT count(*) FROM areas")[0][0]:
        load_boundaries(url, regions=("london",), log=lambda *a: None)
    figures: dict = {}
    if run_sql(url, "SELECT count(*) FROM incidents")[0][0] == 0:
        print(f"generating {rows:,} incidents over {GENERATED_MONTHS[0]:%Y-%m} .. {GENERATED_MONTHS[-1]:%Y-%m} "
              f"({load_average()}) ...", flush=True)
        started = time.perf_counter()
        n = generate_incidents(url, rows, months=GENERATED_MONTHS)
        elapsed = time.perf_counter() - started
        print(f"generated {n:,} incidents in {elapsed:.0f} s ({n / elapsed:,.0f} rows/s, indexes and ANALYZE "
              f"included; {load_average()})", flush=True)
        figures.update(generated=n, generate_s=round(elapsed, 1), generate_rows_per_s=round(n / elapsed))
    if not run_sql(url, "SELECT count(*) FROM rollup_months")[0][0]:
        print(f"first build of every view ({load_average()}) ...", flush=True)
        started = time.perf_counter()
        built = rollups.refresh_rollups(url, trigger="bench/scale first build")
        elapsed = time.perf_counter() - started
        print(f"first build of every view: {elapsed:.0f} s wall ({len(built)} view-years; {load_average()})",
              flush=True)
        figures.update(first_build_s=round(elapsed, 1))
    return figures


def cmd_generate(args) -> dict:
    url = database(args.rows, fresh=args.fresh)
    return ensure_generated(url, args.rows)


def per_rollup(timings: dict[str, float]) -> dict[str, float]:
    from safestats.rollups import CELL_POINTS, ROLLUP_VIEWS

    # refresh_rollups keys its timings "<rollup> <first month>..<last month>"
    return {name: round(sum(s for key, s in timings.items() if key.split(" ", 1)[0] == name), 1)
            for name in ROLLUP_VIEWS + (CELL_POINTS,)}


def month_street_files(folder: Path, month: str, rows: int) -> list[Path]:
    """``month``'s police.uk street drop (the Met's and the City's demo files, about ``rows`` rows) in ``folder``."""
    from loaders.demo import generate_demo_drops

    return [f for f in generate_demo_drops(folder, months=1, end_month=month, rows_per_month=rows,
                                           fire_and_transport=False) if "street" in f.name]


def month_partition(month: str) -> str:
    return f"incidents_y{month[:4]}m{month[5:7]}"


def made_fresh(url: str, partition: str) -> bool:
    """Whether the month partition was made by the fresh path (it carries its bounds CHECK, migration 0017)."""
    return run_sql(url, "SELECT count(*) FROM pg_constraint WHERE conname = %s", (partition + "_bounds",))[0][0] == 1


def take_drop_out(url: str, drop_ids: list[int], partition: str | None) -> None:
    """Delete the drops' incidents and rows, and ``partition`` (the month partition the drop opened), so the
    database is as it was and the next run opens the month too. The rollups are the caller's to refresh."""
    run_sql(url, "DELETE FROM incidents WHERE drop_id = ANY(%s)", (drop_ids,))
    run_sql(url, "DELETE FROM drops WHERE id = ANY(%s)", (drop_ids,))
    if partition:
        run_sql(url, f"DROP TABLE {partition}")


def cmd_ingest(args) -> dict:
    """A month's drop through the real pipeline on top of the generated data, then the views it touches; then
    the drop is taken out again (and the month partition it opened dropped, so the next run opens it too)."""
    from loaders.pipeline import load_paths
    from safestats import rollups

    url = database(args.rows)
    ensure_generated(url, args.rows)
    month = args.drop_month
    partition = month_partition(month)
    with tempfile.TemporaryDirectory() as tmp:
        files = month_street_files(Path(tmp), month, args.drop_rows)
        size = sum(f.stat().st_size for f in files)
        if args.warm:
            warm_up_loader(url, files)
        print(f"loading {month}'s police.uk street drop ({len(files)} files, {size / 1e6:.0f} MB) through "
              f"the pipeline ({load_average()}) ...", flush=True)
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            results = load_paths(url, files, progress=False, refresh_rollups=False)
        elapsed = time.perf_counter() - started
    drop_ids = [r.drop_id for r in results if r.drop_id]
    loaded = sum(r.rows_loaded for r in results)
    read = sum(r.rows_read for r in results)
    if not loaded:
        raise SystemExit(f"the drop loaded nothing: {[r.message for r in results]}")
    fresh = made_fresh(url, partition)     # (which path it took)
    largest = max(results, key=lambda r: r.rows_read)
    path_text = ("a fresh month partition, staged and indexed on helper connections, then attached" if fresh
                 else "through the indexes of an existing partition")
    print(f"ingest: {read:,} rows read, {loaded:,} loaded and committed in {elapsed:.2f} s "
          f"({read / elapsed:,.0f} rows/s end to end; {path_text}; largest drop {largest.rows_read:,} rows: "
          f"read to committed {largest.seconds:.2f} s, of which writing {largest.write_seconds:.2f} s; "
          f"{load_average()})", flush=True)
    try:
        started = time.perf_counter()
        touched = rollups.refresh_after_load(url, drop_ids, trigger="bench/scale one month's drop")
        refresh_s = time.perf_counter() - started
        print(f"views the drop touches ({len(touched)} view-months) refreshed in {refresh_s:.1f} s wall "
              f"({load_average()})", flush=True)
        for name, seconds in per_rollup(touched).items():
            print(f"  {name:24} {seconds:8.1f} s")
    finally:
        take_drop_out(url, drop_ids, partition if fresh else None)
        rollups.refresh_rollups(url, trigger="bench/scale restore", months=[date.fromisoformat(month + "-01")])
    key = ("" if month == DROP_MONTH else f"_{month}") + ("_warm" if args.warm else "")
    return {f"drop_rows_read{key}": read, f"drop_rows_loaded{key}": loaded, f"drop_files{key}": len(files),
            f"drop_wall_s{key}": round(elapsed, 2), f"ingest_rows_per_s{key}": round(read / elapsed),
            f"drop_fresh_partition{key}": fresh, f"drop_largest_seconds{key}": round(largest.seconds, 2),
            f"drop_largest_write_seconds{key}": round(largest.write_seconds, 2),
            f"touched_refresh_s{key}": round(refresh_s, 1), f"touched_views{key}": len(touched),
            f"touched_per_rollup_s{key}": per_rollup(touched)}


def warm_up_loader(url: str, files: list[Path]) -> None:
    """Prepare ``files`` once without writing them (prepare_drop only reads), as a long-lived loader process
    (``safestats scheduler``) has prepared drops before the month's arrives: the LSOA index in memory,
    pyarrow's kernels and regular expressions set up. ``safestats load`` in a new process pays these."""
    import psycopg2

    from db import libpq_dsn
    from loaders.areas import area_index_for
    from loaders.pipeline import prepare_drop

    conn = psycopg2.connect(libpq_dsn(url))
    conn.set_session(readonly=True, autocommit=True)
    try:
        with conn.cursor() as cur:
            area_index = area_index_for(cur, conn.dsn)
        started = time.perf_counter()
        for path in files:
            prepared = prepare_drop(conn, path, area_index=area_index)
            if prepared.located is not None:
                for stream in prepared.located.copy_streams:
                    stream.cancel()
        print(f"warm loader: the drop's files prepared once, not written, in {time.perf_counter() - started:.2f} s",
              flush=True)
    finally:
        conn.close()


def cmd_refresh(args) -> dict:
    from safestats import rollups

    url = database(args.rows)
    ensure_generated(url, args.rows)
    print(f"full refresh of every view ({load_average()}) ...", flush=True)
    started = time.perf_counter()
    timings = rollups.refresh_rollups(url, trigger="bench/scale full refresh")
    elapsed = time.perf_counter() - started
    print(f"full refresh: {elapsed:.1f} s wall, {len(timings)} view-years ({load_average()})", flush=True)
    for name, seconds in per_rollup(timings).items():
        print(f"  {name:24} {seconds:8.1f} s")
    return {"full_refresh_s": round(elapsed, 1), "per_rollup_s": per_rollup(timings)}


def summarise(times_by_change: dict[str, list[float]]) -> dict:
    every = [t for times in times_by_change.values() for t in times]
    return {"p50_ms": round(statistics.median(every), 1), "p95_ms": round(percentile(every, 0.95), 1),
            "by_change": {name: {"p50_ms": round(statistics.median(t), 1), "p95_ms": round(percentile(t, 0.95), 1)}
                          for name, t in times_by_change.items()}}


def cmd_panels(args) -> dict:
    from bench.dashboard import bench_panels
    from db import get_web_engine

    url = database(args.rows)
    ensure_generated(url, args.rows)
    engine = get_web_engine(url)
    print(f"in-process server time per filter change, all panels, {args.repeats} cold runs each, as a "
          f"partner analyst through the web role ({load_average()})", flush=True)
    figures = bench_panels(engine, args.repeats, PARTNER)
    return dict(summarise(figures["changes"]), bytes_per_panel={p: round(statistics.median(v))
                                                                 for p, v in figures["sizes"].items()})


# --- the portal served by gunicorn --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gunicorn(url: str, workers: int, threads: int):
    """The portal on the benchmark database, served by gunicorn as ``safestats serve --workers`` serves it
    (safestats/serving.py), on a free loopback port; yields (base URL, master pid). Cookies without Secure:
    the load driver speaks plain HTTP to 127.0.0.1 (a browser counts that as secure, ``requests`` does not)."""
    import requests

    from safestats.serving import gunicorn_argv, pool_plan, server_max_connections, worker_environment

    port = free_port()
    plan = pool_plan(workers, threads, server_max_connections(url))
    env = dict(worker_environment(url, plan), SAFESTATS_SECURE_COOKIES="false")
    log = tempfile.NamedTemporaryFile("w+", prefix="bench-scale-gunicorn-", suffix=".log", delete=False)
    process = subprocess.Popen(gunicorn_argv("127.0.0.1", port, plan, access_log=False), env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise SystemExit(f"gunicorn stopped (exit {process.returncode}); its log: {log.name}")
            try:
                if requests.get(f"{base}/login", timeout=5).status_code == 200 and \
                        len(children_of(process.pid)) >= workers:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"gunicorn did not answer within 180 s; its log: {log.name}")
            time.sleep(0.5)
        # Each worker reads the opening view's months when it starts (queries.warm_hotspot_months): wait for
        # that to end, so the figures are a running portal's and not its start-up's.
        started, seen, quiet = time.monotonic(), False, 0
        while time.monotonic() - started < 600:
            # The workers are the web role's only sessions: done when none has run a query for 3 s.
            busy = run_sql(url, """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                                   AND usename <> current_user AND state = 'active'""")[0][0]
            seen, quiet = seen or busy > 0, 0 if busy else quiet + 1
            if quiet >= 3 and (seen or time.monotonic() - started > 30):
                break
            time.sleep(1)
        print(f"workers' start-up warm-up done after {time.monotonic() - started:.0f} s", flush=True)
        print(f"gunicorn: {workers} workers x {threads} threads on {base}, pool {plan.pool_size}+"
              f"{plan.max_overflow} per engine (log {log.name})", flush=True)
        yield base, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def analyst_accounts(url: str, count: int) -> list[tuple[str, str]]:
    """``count`` partner analysts (no second factor) with a known password, made or reset."""
    from dashapp.auth import upsert_user
    from db import get_engine

    engine = get_engine(url)
    accounts = []
    for i in range(count):
        email = f"analyst{i:03d}@loadtest.example"
        upsert_user(engine, email, ANALYST_PASSWORD, f"Load-test analyst {i}", "GLA", "partner_analyst")
        accounts.append((email, ANALYST_PASSWORD))
    return accounts


def change_bodies(url: str) -> dict[str, dict[str, str]]:
    """The callbacks' bodies of each typical filter change (bench/dashboard's set), keyed by its name."""
    from bench.dashboard import filter_changes
    from dashapp import create_app
    from db import get_web_engine

    dash_app = create_app(url).extensions["safestats_dash"]
    return {name: dashboard_callback_bodies(dash_app, state.to_query_string(), MAP_ZOOM, MAP_BOUNDS)
            for name, state in filter_changes(get_web_engine(url)).items()}


def signed_in_session(base: str, email: str, password: str):
    import requests

    session = requests.Session()
    token = login_form_token(session.get(f"{base}/login", timeout=60).text)
    response = session.post(f"{base}/login", data={"email": email, "password": password, "csrf_token": token},
                            timeout=60, allow_redirects=False)
    if response.status_code != 302 or "/login" in response.headers.get("Location", ""):
        raise SystemExit(f"sign-in failed: {response.status_code} {response.headers.get('Location')}")
    return session


def bump_data_version(url: str) -> None:
    """Make every worker's panel cache miss (its key holds the newest rollup refresh's id) without touching the
    reference data: a refresh row as a real refresh writes it. The workers look the version up at most once a
    second, hence the pause."""
    run_sql(url, """INSERT INTO rollup_refreshes (view_name, family, year, started_at, duration_ms, row_count, trigger)
                  SELECT view_name, family, year, clock_timestamp(), 0, row_count, 'bench/scale: panel cache cold'
                  FROM rollup_refreshes ORDER BY id DESC LIMIT 1""")
    time.sleep(1.2)


def worker_rss_mib(master: int) -> list[float]:
    return [round(rss_kib(pid) / 1024, 1) for pid in children_of(master)]


def cmd_http(args) -> dict:
    from bench.loadtest import MAP_KEY, boundaries_sent, fetch_boundaries, post_callback

    url = database(args.rows)
    ensure_generated(url, args.rows)
    (email, password), = analyst_accounts(url, 1)
    bodies_by_change = change_bodies(url)
    times: dict[str, list[float]] = {}
    per_callback_ms: dict[str, list[float]] = {}
    bytes_per_callback: dict[str, list[int]] = {}
    with gunicorn(url, args.workers, args.threads) as (base, master):
        session = signed_in_session(base, email, password)
        rss_start = worker_rss_mib(master)
        pool = ThreadPoolExecutor(max_workers=6)

        boundaries: dict[str, tuple[float, int]] = {}  # this browser's cache: URL -> (ms, bytes) of its one GET

        def timed(key, body):
            started = time.perf_counter()
            response = post_callback(session, base, body, 120)
            size = len(response.content)
            if key == MAP_KEY:  # the map layer then fetches boundaries new to this browser (dashapp.boundaries)
                fetch_boundaries(session, base, boundaries_sent(response), boundaries, 120)
            return key, (time.perf_counter() - started) * 1000, size

        def one_change(bodies: dict[str, str]) -> float:
            sync_key, *panel_keys = list(bodies)
            started = time.perf_counter()
            results = [timed(sync_key, bodies[sync_key])]
            results += list(pool.map(lambda k: timed(k, bodies[k]), panel_keys))
            elapsed = (time.perf_counter() - started) * 1000
            for key, ms, size in results:
                per_callback_ms.setdefault(key, []).append(ms)
                bytes_per_callback.setdefault(key, []).append(size)
            return elapsed

        print(f"warming each worker's reference data ({load_average()}) ...", flush=True)
        for _ in range(2 * args.workers):
            for bodies in bodies_by_change.values():
                one_change(bodies)
        per_callback_ms.clear()
        bytes_per_callback.clear()
        print(f"\n{'filter change (HTTP, cold panels)':34} {'p50 ms':>8} {'p95 ms':>8}", flush=True)
        for name, bodies in bodies_by_change.items():
            for _ in range(args.repeats):
                bump_data_version(url)
                times.setdefault(name, []).append(one_change(bodies))
            print(f"{name:34} {statistics.median(times[name]):8.0f} {percentile(times[name], 0.95):8.0f}", flush=True)
        rss_end = worker_rss_mib(master)
        pool.shutdown()
    figures = summarise(times)
    print(f"{'all filter changes':34} {figures['p50_ms']:8.0f} {figures['p95_ms']:8.0f}")
    print(f"\n{'callback (first output)':28} {'p50 ms':>8} {'bytes (median)':>15} {'bytes (max)':>12}")
    for key, sizes in bytes_per_callback.items():
        print(f"{key:28} {statistics.median(per_callback_ms[key]):8.0f} {statistics.median(sizes):15,.0f} "
              f"{max(sizes):12,}")
    for url, (ms, size) in boundaries.items():
        print(f"{url.split('?')[0]:28} {ms:8.0f} {size:15,} (gzipped; fetched once, then from the browser's cache)")
    print(f"worker RSS MiB: after start {rss_start}, after the run {rss_end}")
    figures.update(workers=args.workers, threads=args.threads, repeats=args.repeats,
                   bytes_per_callback={k: round(statistics.median(v)) for k, v in bytes_per_callback.items()},
                   callback_p50_ms={k: round(statistics.median(v), 1) for k, v in per_callback_ms.items()},
                   worker_rss_mib_start=rss_start, worker_rss_mib_end=rss_end,
                   boundaries_first_fetch={url.split("?")[0]: {"ms": round(ms, 1), "bytes": size}
                                           for url, (ms, size) in boundaries.items()})
    return figures


def cmd_load(args) -> dict:
    url = database(args.rows)
    ensure_generated(url, args.rows)
    users = [int(u) for u in args.users.split(",")]
    accounts = analyst_accounts(url, max(users))
    spec = {"accounts": accounts, "changes": list(change_bodies(url).values())}
    figures: dict = {"workers": args.workers, "threads": args.threads, "by_users": {}}
    with tempfile.NamedTemporaryFile("w", suffix=".json") as spec_file, \
            gunicorn(url, args.workers, args.threads) as (base, master):
        json.dump(spec, spec_file)
        spec_file.flush()
        for n in users:
            print(f"\n{n} concurrent analysts for {args.duration:.0f} s, think time {args.think} s "
                  f"({load_average()}) ...", flush=True)
            output = subprocess.run([sys.executable, "-m", "bench.loadtest", "--url", base, "--users", str(n),
                                     "--duration", str(args.duration), "--think", args.think,
                                     "--accounts", spec_file.name],
                                    cwd=REPO_ROOT, capture_output=True, text=True, check=False)
            if output.returncode != 0:
                raise SystemExit(f"bench/loadtest failed:\n{output.stderr[-3000:]}")
            result = json.loads(output.stdout.strip().splitlines()[-1])
            result["worker_rss_mib"] = worker_rss_mib(master)
            result["load_average"] = os.getloadavg()[:2]
            figures["by_users"][str(n)] = result
            for kind, k in result["kinds"].items():
                print(f"  {kind:24} n={k['n']:<5} errors={k['errors']:<4} ({100 * k['error_rate']:.1f}%) "
                      f"p50 {k['p50_ms']} ms, p95 {k['p95_ms']} ms, max {k['max_ms']} ms")
            if result["first_errors"]:
                print("  first errors: " + "; ".join(result["first_errors"]))
            print(f"  worker RSS MiB: {result['worker_rss_mib']}", flush=True)
    return figures


def cmd_size(args) -> dict:
    url = database(args.rows)
    ensure_generated(url, args.rows)
    (total,), = run_sql(url, "SELECT pg_database_size(current_database())")
    (incidents,), = run_sql(url, "SELECT count(*) FROM incidents")
    top = run_sql(url, """SELECT c.relname, c.relkind, pg_total_relation_size(c.oid)
                        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'm')
                        ORDER BY 3 DESC LIMIT %s""", (args.top,))
    groups = dict(run_sql(url, """SELECT CASE WHEN c.relname LIKE 'incidents_y%%' THEN 'incidents'
                                             WHEN c.relkind = 'm' OR c.relname LIKE 'rollup\_%%'
                                             THEN 'rollup views' ELSE 'other' END,
                                        sum(pg_total_relation_size(c.oid))
                                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'm') GROUP BY 1"""))
    print(f"database: {total / 2**30:.2f} GiB for {incidents:,} incidents ({total / max(incidents, 1):.0f} bytes "
          f"an incident, views and indexes included): " +
          ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in sorted(groups.items())))
    print(f"  {'relation (with its indexes)':36} {'kind':>5} {'MiB':>10}")
    for name, kind, size in top:
        print(f"  {name:36} {'view' if kind == 'm' else 'table':>5} {size / 2**20:10.1f}")
    return {"database_bytes": total, "incidents": incidents,
            "bytes_by_kind": {k: int(v) for k, v in groups.items()},
            "top_relations_mib": {name: round(size / 2**20, 1) for name, _kind, size in top}}


def cmd_plot(args) -> dict:
    """Latency against size from every results file: in-process and HTTP p50/p95 of a filter change, and the
    load test's p95 per number of analysts."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("bench/scale plot needs matplotlib, the benchmarks' one extra: "
                         ".venv/bin/pip install -e '.[bench]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = sorted((json.loads(p.read_text()) for p in RESULTS_DIR.glob("scale-*.json")), key=lambda r: r["rows"])
    if not results:
        raise SystemExit("no results yet: run bench/scale panels/http/load --rows N first")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for section, label, marker, colour in (("panels", "in-process", "o", "C0"),
                                           ("http", "HTTP /_dash-update-component", "s", "C1")):
        points = [(r["rows"] / 1e6, r[section]) for r in results if section in r]
        for stat, line in (("p50_ms", "-"), ("p95_ms", "--")):
            if points:
                left.plot([p[0] for p in points], [p[1][stat] for p in points], marker=marker, linestyle=line,
                          color=colour, label=f"{label} {stat[:3]}")
    left.axhline(300, color="grey", linewidth=0.8, linestyle=":")
    left.text(0.02, 300, " target p95 300 ms (30M)", color="grey", fontsize=8, va="bottom",
              transform=left.get_yaxis_transform())
    left.set(xscale="log", yscale="log", xlabel="incidents (millions)", ylabel="ms per filter change (all panels)",
             title="Filter change, cold panel cache")
    left.legend(fontsize=8)
    for r in results:
        load = r.get("load", {}).get("by_users", {})
        if load:
            users = sorted(int(u) for u in load)
            p95 = [load[str(u)]["kinds"].get("filter change", {}).get("p95_ms") or float("nan") for u in users]
            right.plot(users, p95, "o-", label=f"{r['rows'] / 1e6:g}M incidents")
    right.axhline(1000, color="grey", linewidth=0.8, linestyle=":")
    right.text(0.02, 1000, " target p95 1 s (50 analysts)", color="grey", fontsize=8, va="bottom",
               transform=right.get_yaxis_transform())
    right.set(yscale="log", xlabel="concurrent analysts", ylabel="p95 ms per filter change",
              title="Load test (gunicorn, loopback)")
    right.legend(fontsize=8)
    fig.suptitle(f"SafeStats on the shared 2-core machine (load averages in bench/README.md)", fontsize=9)
    fig.tight_layout()
    fig.savefig(PLOT_PATH, dpi=110)
    print(f"wrote {PLOT_PATH.relative_to(REPO_ROOT)} from {len(results)} results files")
    return {}


def _la(section: dict) -> str:
    return f"{section['load_average'][0]:.1f}"


def cmd_report(args) -> dict:
    """Markdown tables of every results file, sizes side by side (what bench/README.md shows)."""
    results = sorted((json.loads(p.read_text()) for p in RESULTS_DIR.glob("scale-*.json")), key=lambda r: r["rows"])
    sizes = [f"{r['rows'] / 1e6:g}M" for r in results]
    print("| figure | " + " | ".join(sizes) + " |\n|---|" + "---|" * len(results))

    def row(label, section, render, where=lambda section: section):
        cells = [render(r[section]) + f" (load {_la(where(r[section]))})" if section in r else "not measured"
                 for r in results]
        print(f"| {label} | " + " | ".join(cells) + " |")

    row("generate (bench/generate.py, indexes and ANALYZE included)", "generate",
        lambda g: f"{g['generate_s']:.0f} s, {g['generate_rows_per_s']:,} rows/s" if "generate_s" in g else "-")
    row("first build of every view", "generate", lambda g: f"{g.get('first_build_s', float('nan')):.0f} s")
    row("a month's police.uk drop through the pipeline", "ingest",
        lambda i: f"{i['drop_rows_read']:,} rows in {i['drop_wall_s']:.1f} s = {i['ingest_rows_per_s']:,} rows/s")
    row("views that drop touches, refreshed", "ingest",
        lambda i: f"{i['touched_refresh_s']:.0f} s ({i['touched_views']} view-months)")
    fresh = f"_{FRESH_MONTH}"
    row(f"the same drop opening its month partition ({FRESH_MONTH}, --drop-month)", "ingest_fresh_month",
        lambda i: f"{i['drop_rows_read' + fresh]:,} rows in {i['drop_wall_s' + fresh]:.1f} s = "
                  f"{i['ingest_rows_per_s' + fresh]:,} rows/s")
    warm = fresh + "_warm"
    row(f"the same, the loader process warm (--warm: a scheduler's)", "ingest_fresh_month_warm",
        lambda i: f"{i['drop_rows_read' + warm]:,} rows in {i['drop_wall_s' + warm]:.1f} s = "
                  f"{i['ingest_rows_per_s' + warm]:,} rows/s")
    row("full refresh of every view", "refresh", lambda f: f"{f['full_refresh_s']:.0f} s")
    row("filter change, all panels, in-process, cold: p50 / p95", "panels",
        lambda p: f"{p['p50_ms']:,.0f} / {p['p95_ms']:,.0f} ms")
    row("the same through HTTP (gunicorn, signed in): p50 / p95", "http",
        lambda h: f"{h['p50_ms']:,.0f} / {h['p95_ms']:,.0f} ms")
    row("web worker RSS after the HTTP run", "http",
        lambda h: f"{min(h['worker_rss_mib_end']):.0f}-{max(h['worker_rss_mib_end']):.0f} MiB")
    for users in ("10", "50", "100"):
        row(f"load test, {users} analysts: filter change p50 / p95, errors", "load",
            lambda l, u=users: (lambda k: f"{k['p50_ms']:,.0f} / {k['p95_ms']:,.0f} ms, {k['errors']} of "
                                          f"{k['n'] + k['errors']}")(l["by_users"][u]["kinds"]["filter change"])
            if u in l.get("by_users", {}) else "-",
            where=lambda l, u=users: l["by_users"].get(u, l))
    row("database size", "size", lambda z: f"{z['database_bytes'] / 2**30:.2f} GiB "
                                            f"({z['database_bytes'] / z['incidents']:.0f} B an incident)")
    row("of which incidents / rollups (tables or views)", "size",
        lambda z: f"{z['bytes_by_kind'].get('incidents', 0) / 2**30:.2f} / "
                  f"{z['bytes_by_kind'].get('rollup views', 0) / 2**30:.2f} GiB")
    print("\n| filter change (cold) | " + " | ".join(f"{s} in-process p50 / p95 | {s} HTTP p50 / p95" for s in sizes)
          + " |\n|---|" + "---|---|" * len(results))
    names = next((list(r["panels"]["by_change"]) for r in results if "panels" in r), [])
    for name in names:
        cells = []
        for r in results:
            for section in ("panels", "http"):
                c = r.get(section, {}).get("by_change", {}).get(name)
                cells.append(f"{c['p50_ms']:,.0f} / {c['p95_ms']:,.0f}" if c else "-")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n| callback (HTTP) | " + " | ".join(f"{s} p50 ms | {s} bytes (median)" for s in sizes)
          + " |\n|---|" + "---|---|" * len(results))
    keys = next((list(r["http"]["bytes_per_callback"]) for r in results if "http" in r), [])
    for key in keys:
        cells = []
        for r in results:
            h = r.get("http", {})
            cells += [f"{h['callback_p50_ms'][key]:,.0f}", f"{h['bytes_per_callback'][key]:,}"] if h else ["-", "-"]
        print(f"| {key} | " + " | ".join(cells) + " |")
    return {}


def cmd_drop(args) -> dict:
    drop_bench_database(database(args.rows))
    print(f"dropped safestats_bench_scale_{size_label(args.rows)}")
    return {}


def cmd_all(args) -> dict:
    for name in ("generate", "ingest", "refresh", "panels", "http", "load", "size"):
        run_section(name, args, [name] + sys.argv[2:])
    return {}


COMMANDS = {"generate": cmd_generate, "ingest": cmd_ingest, "refresh": cmd_refresh, "panels": cmd_panels,
            "http": cmd_http, "load": cmd_load, "size": cmd_size, "plot": cmd_plot, "report": cmd_report, "drop": cmd_drop, "all": cmd_all}
SAVED = {"generate", "ingest", "refresh", "panels", "http", "load", "size"}


def run_section(name: str, args, argv: list[str]) -> None:
    print(f"\n== bench/scale {name} at {args.rows:,} incidents ({load_average()})", flush=True)
    figures = COMMANDS[name](args)
    if name in SAVED and figures:
        fresh_month = name == "ingest" and args.drop_month != DROP_MONTH
        section = "ingest_fresh_month" if fresh_month else name
        save(args.rows, section + ("_warm" if name == "ingest" and args.warm else ""), figures, argv)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--rows", type=int, default=1_000_000, help="incidents generated (default 1,000,000)")
    parser.add_argument("--fresh", action="store_true", help="generate: drop and rebuild the database")
    parser.add_argument("--drop-rows", type=int, default=300_000, help="ingest: rows in the month's drop")
    parser.add_argument("--warm", action="store_true",
                        help="ingest: prepare the drop's files once first (not written), as a long-lived "
                             "loader process (safestats scheduler) is warm")
    parser.add_argument("--drop-month", default=DROP_MONTH, choices=[DROP_MONTH, FRESH_MONTH],
                        help=f"ingest: the drop's month: {DROP_MONTH} (through 2024's indexes, default) or "
                             f"{FRESH_MONTH} (a new month partition, as a portal's new months)")
    parser.add_argument("--repeats", type=int, default=5, help="panels/http: cold runs per filter change")
    parser.add_argument("--workers", type=int, default=None,
                        help="http/load: gunicorn workers (default: http 2, load as safestats serve: one per core)")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help="http/load: threads per worker (default as safestats serve)")
    parser.add_argument("--users", default="10,50,100", help="load: concurrent analysts, comma-separated")
    parser.add_argument("--duration", type=float, default=60, help="load: seconds per number of analysts")
    parser.add_argument("--think", default="1,3", help="load: think time between changes, seconds MIN,MAX")
    parser.add_argument("--top", type=int, default=15, help="size: how many relations to list")
    args = parser.parse_args(argv)
    if args.workers is None:
        from safestats.serving import default_workers

        args.workers = 2 if args.command == "http" else default_workers()
    sys.path.insert(0, str(REPO_ROOT))
    run_section(args.command, args, argv if argv is not None else sys.argv[1:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
