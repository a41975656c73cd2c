"""The production server (safestats/serving.py): the connection-pool plan that keeps every gunicorn worker's
pools within PostgreSQL's max_connections, the gunicorn command line, and ``safestats serve --workers``
serving the real app to the load-test driver (bench/loadtest.py) with two signed-in analysts, no errors."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from safestats.serving import ENGINES_PER_WORKER, default_workers, gunicorn_argv, pool_plan, worker_environment


def test_default_workers_are_one_per_core():
    assert default_workers(2) == 2
    assert default_workers(8) == 8


def test_pool_plan_keeps_every_worker_within_max_connections():
    plan = pool_plan(workers=5, threads=4, max_connections=100, reserved=15)
    assert plan.pool_size == 4  # one connection per thread, per engine
    assert plan.connections == 5 * ENGINES_PER_WORKER * (plan.pool_size + plan.max_overflow)
    assert plan.connections <= 100 - 15
    assert plan.environment() == {"SAFESTATS_DB_POOL_SIZE": "4", "SAFESTATS_DB_MAX_OVERFLOW": str(plan.max_overflow)}
    # Exactly one connection per thread left: no overflow.
    assert pool_plan(workers=2, threads=4, max_connections=31, reserved=15).max_overflow == 0


def test_pool_plan_refuses_a_plan_that_does_not_fit_and_says_what_to_change():
    with pytest.raises(ValueError, match="max_connections 100 less 15 reserved leaves 85"):
        pool_plan(workers=17, threads=4, max_connections=100, reserved=15)


def test_workers_get_the_database_the_pool_sizes_and_the_hotspot_warm_up():
    plan = pool_plan(workers=2, threads=4, max_connections=100)
    env = worker_environment("postgresql://u@127.0.0.1/db", plan)
    assert env["DATABASE_URL"] == "postgresql://u@127.0.0.1/db"
    assert env["SAFESTATS_WARM_HOTSPOTS"] == "true"  # each worker reads the opening view's months at start
    assert {k: env[k] for k in plan.environment()} == plan.environment()


def test_gunicorn_serves_the_wsgi_entry_point_with_the_plans_workers_and_threads():
    argv = gunicorn_argv("127.0.0.1", 8123, pool_plan(3, 2, 100), access_log=False)
    assert argv[-1] == "wsgi:app"
    assert argv[argv.index("--workers") + 1] == "3" and argv[argv.index("--threads") + 1] == "2"
    assert argv[argv.index("--bind") + 1] == "127.0.0.1:8123"
    assert "--access-logfile" not in argv


def test_engines_take_their_pool_size_from_the_settings(monkeypatch, db_url):
    from db import get_engine
    from safestats.config import get_settings

    monkeypatch.setenv("SAFESTATS_DB_POOL_SIZE", "3")
    monkeypatch.setenv("SAFESTATS_DB_MAX_OVERFLOW", "1")
    get_settings.cache_clear()
    get_engine.cache_clear()
    try:
        engine = get_engine(db_url)
        assert (engine.pool.size(), engine.pool._max_overflow) == (3, 1)
    finally:
        get_settings.cache_clear()
        get_engine.cache_clear()


def test_serve_with_workers_answers_two_signed_in_analysts_without_errors(areas_loaded):
    from bench.common import children_of, dashboard_callback_bodies
    from bench.loadtest import run
    from dashapp import create_app
    from dashapp.auth import upsert_user
    from db import get_engine
    from safestats.filters import FilterState

    url = areas_loaded
    accounts = [(f"serve{i}@loadtest.example", "a served analyst passphrase 1") for i in range(2)]
    for email, password in accounts:
        upsert_user(get_engine(url), email, password, "Served analyst", "GLA", "partner_analyst")
    dash_app = create_app(url).extensions["safestats_dash"]
    changes = [dashboard_callback_bodies(dash_app, FilterState().to_query_string(), 11),
               dashboard_callback_bodies(dash_app, FilterState(borough_code="E09000007").to_query_string(), 11)]

    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    safestats = str(Path(sys.executable).parent / "safestats")
    env = dict(os.environ, DATABASE_URL=url, SAFESTATS_SECURE_COOKIES="false")
    server = subprocess.Popen([safestats, "serve", "--workers", "2", "--threads", "2", "--port", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                if requests.get(f"{base}/login", timeout=5).status_code == 200 and len(children_of(server.pid)) == 2:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "gunicorn did not answer within 120 s"
            time.sleep(0.5)
        result = run(base, accounts, changes, users=2, duration=4, think=(0.2, 0.5), ramp=0.5)
        changes_made = result["kinds"]["filter change"]
        assert result["first_errors"] == []
        assert changes_made["errors"] == 0 and changes_made["n"] >= 2
        assert result["kinds"]["sign-in"]["n"] == 2
    finally:
        server.terminate()
        server.wait(timeout=30)
