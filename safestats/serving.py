"""The production web server: gunicorn serving ``wsgi:app`` with several workers and a sized connection pool.

Flask's own server (``safestats serve`` without ``--workers``, and ``./dev portal``) is one process; in
production ``safestats serve --workers N`` runs gunicorn instead: N worker processes (default one per core),
each with ``--threads`` threads (default 8; gthread workers, so a panel waiting for PostgreSQL does not hold
a whole process). Not gunicorn's ``2 x cores + 1``: a worker holds its own rollup months in memory (300-450
MiB at 30 million incidents) and its own panel cache, so every process beyond the cores multiplies that
memory and the cold work of each new filter, while most panels are now numpy on those months rather than
waits on PostgreSQL. At 30 million incidents on 2 cores, 50 analysts' filter changes had a p95 of 776 ms
with 2 workers x 8 threads against 2,387 ms with 5 x 4 (bench/README.md). Each worker opens two
SQLAlchemy engines (the web role's for the dashboard, the owner's for the audit log, sessions and the admin
pages), so it can hold ``2 x (pool_size + max_overflow)`` connections; ``pool_plan`` sizes the pool so that
``workers x 2 x (pool_size + max_overflow)`` stays within the server's ``max_connections`` less what the
loaders, the scheduler, refreshes and superusers need (``reserved``), and refuses a plan that does not fit.
The plan reaches the workers through SAFESTATS_DB_POOL_SIZE and SAFESTATS_DB_MAX_OVERFLOW (read by
``safestats.config``), and the database URL resolved once in the master through DATABASE_URL, so the
workers never start the embedded cluster themselves.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

ENGINES_PER_WORKER = 2  # the web role's engine and the owner's (db.get_web_engine, db.get_engine)
# Connections kept free for everything that is not the web tier: PostgreSQL's own
# superuser_reserved_connections (3); the scheduler's ingest lock (1) and its load (a reader, two writers
# and, while a month is staged, each writer's two helpers, loaders/staging.py: 7; the refresh after it,
# rollups.REFRESH_CONNECTIONS, starts once the load's are closed); a supplier's upload through the feed API,
# the same in a web worker (8); an operator's psql (1). Before month staging a load needed 3, and this was 15.
DEFAULT_RESERVED_CONNECTIONS = 20
KEEP_ALIVE_S = 75


@dataclass(frozen=True)
class PoolPlan:
    workers: int
    threads: int
    pool_size: int        # per engine, per worker
    max_overflow: int     # per engine, per worker

    @property
    def connections(self) -> int:
        """The most connections the web tier can open: every worker's engines at their pools' limits."""
        return self.workers * ENGINES_PER_WORKER * (self.pool_size + self.max_overflow)

    def environment(self) -> dict[str, str]:
        return {"SAFESTATS_DB_POOL_SIZE": str(self.pool_size), "SAFESTATS_DB_MAX_OVERFLOW": str(self.max_overflow)}


DEFAULT_THREADS = 8


def default_workers(cores: int | None = None) -> int:
    """One worker per core (see the module's docstring for why not gunicorn's 2 x cores + 1)."""
    return cores or os.cpu_count() or 1


def pool_plan(workers: int, threads: int, max_connections: int,
              reserved: int = DEFAULT_RESERVED_CONNECTIONS) -> PoolPlan:
    """Pool size per engine: one connection per thread (a request holds at most one of each engine's at a
    time), plus one overflow for the odd request that needs a second; shrunk to fit ``max_connections -
    reserved``. Raises ValueError, saying what to change, when even one connection per thread does not fit."""
    if workers < 1 or threads < 1:
        raise ValueError("workers and threads must be at least 1")
    budget = max_connections - reserved
    per_engine = budget // (workers * ENGINES_PER_WORKER)
    if per_engine < threads:
        raise ValueError(
            f"{workers} workers x {threads} threads need {workers * ENGINES_PER_WORKER * threads} connections "
            f"({ENGINES_PER_WORKER} engines each), but max_connections {max_connections} less {reserved} reserved "
            f"leaves {budget}: use fewer workers or threads, or raise PostgreSQL's max_connections")
    max_overflow = min(1, per_engine - threads)
    return PoolPlan(workers=workers, threads=threads, pool_size=threads, max_overflow=max_overflow)


def server_max_connections(url: str) -> int:
    """PostgreSQL's max_connections on the server ``url`` names."""
    import psycopg2

    from db import libpq_dsn

    conn = psycopg2.connect(libpq_dsn(url))
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW max_connections")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def gunicorn_argv(host: str, port: int, plan: PoolPlan, timeout: int = 120, access_log: bool = True) -> list[str]:
    """The gunicorn command line that serves ``wsgi:app`` (the repository's WSGI entry point)."""
    from safestats.config import PROJECT_ROOT

    argv = [sys.executable, "-m", "gunicorn", "--chdir", str(PROJECT_ROOT), "--bind", f"{host}:{port}",
            "--workers", str(plan.workers), "--threads", str(plan.threads), "--worker-class", "gthread",
            "--timeout", str(timeout), "--graceful-timeout", "30",
            # gunicorn closes an idle kept-alive connection after 2 s by default, which races a browser's next
            # callback on it after a pause (the load test saw "connection reset" on 15% of its filter
            # changes): keep idle connections longer than an analyst's pause (gthread parks them off-thread).
            "--keep-alive", str(KEEP_ALIVE_S)]
    if access_log:
        argv += ["--access-logfile", "-", "--access-logformat", '%(h)s "%(r)s" %(s)s %(B)s %(M)sms']
    return argv + ["wsgi:app"]


def worker_environment(database_url: str, plan: PoolPlan) -> dict[str, str]:
    """The environment gunicorn's workers get: the database, the pool sizes, and the hotspot months read at
    each worker's start (``queries.warm_hotspot_months``)."""
    return dict(os.environ, DATABASE_URL=database_url, SAFESTATS_WARM_HOTSPOTS="true", **plan.environment())


def serve(host: str, port: int, workers: int, threads: int, database_url: str,
          reserved: int = DEFAULT_RESERVED_CONNECTIONS, access_log: bool = True) -> None:
    """Replace this process with gunicorn serving the portal (returns only if exec fails)."""
    plan = pool_plan(workers, threads, server_max_connections(database_url), reserved)
    argv = gunicorn_argv(host, port, plan, access_log=access_log)
    env = worker_environment(database_url, plan)
    print(f"safestats serve: gunicorn on http://{host}:{port}, {plan.workers} workers x {plan.threads} threads, "
          f"pool {plan.pool_size}+{plan.max_overflow} per engine ({plan.connections} connections at most)",
          flush=True)
    os.execve(sys.executable, argv, env)
