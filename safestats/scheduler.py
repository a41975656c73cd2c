"""``safestats scheduler``: the separate process that loads suppliers' drops from their incoming folders.

It runs APScheduler 3 (a BlockingScheduler: this process does nothing else) with two jobs: the scan of
every supplier's incoming folder (``safestats.ingest.scan_incoming``) at an interval, and the daily
retention run (``safestats.retention.run_retention``: old records folded into the aggregates, then removed). The job is persisted in PostgreSQL
(SQLAlchemyJobStore on the app's database, table ``apscheduler_jobs`` made by migration 0007), with
``coalesce=True`` (runs missed while the process was down or busy collapse into one), ``max_instances=1``
(a slow scan is never overlapped by the next) and an explicit ``misfire_grace_time``. It must never run
inside the web workers: every worker would scan. APScheduler 3 does not coordinate several schedulers
sharing one job store, so a second or third scheduler started by mistake may scan at the same time;
the per-file advisory locks in ``safestats.ingest`` make each file load exactly once regardless. The
database URL is never stored in the job (it holds the password): the job reads it from this process.
"""
from __future__ import annotations

import logging
import signal
from datetime import datetime, timezone
from pathlib import Path

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from safestats.ingest import DEFAULT_SETTLE_SECONDS, scan_incoming

log = logging.getLogger("safestats.scheduler")

JOB_ID = "safestats-scan-incoming"
RETENTION_JOB_ID = "safestats-retention"
RETENTION_HOUR_UTC = 3  # nightly, when nobody is loading or looking
DEFAULT_INTERVAL_SECONDS = 60
# A scan that could not start on time (the process was busy or asleep) still runs if it is at most this
# late; later than that it is dropped, and the next interval's scan picks up the same files anyway.
DEFAULT_MISFIRE_GRACE_SECONDS = 300

# What this process's job needs and must not be persisted: set by configure_job_context.
_context: dict = {}


def configure_job_context(url: str, incoming: Path | None = None,
                          settle_seconds: float = DEFAULT_SETTLE_SECONDS) -> None:
    _context.update(url=url, incoming=incoming, settle_seconds=settle_seconds)


def scan_incoming_job() -> int:
    """The scheduled job (referenced by name in the job store): one scan; returns how many files it loaded."""
    if "url" not in _context:
        raise RuntimeError("the scheduler's job context is not set; run it through `safestats scheduler`")
    outcomes = scan_incoming(_context["url"], _context["incoming"], _context["settle_seconds"])
    return sum(1 for o in outcomes if o.status == "loaded")


def retention_job() -> int:
    """The scheduled retention run (referenced by name in the job store); returns how many records it removed."""
    if "url" not in _context:
        raise RuntimeError("the scheduler's job context is not set; run it through `safestats scheduler`")
    from safestats.retention import run_retention

    runs = run_retention(_context["url"], trigger="scheduled", log=log.info)
    return sum(r.records_deleted for r in runs)


def build_scheduler(url: str, interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
                    misfire_grace_seconds: int = DEFAULT_MISFIRE_GRACE_SECONDS,
                    scheduler_class: type[BaseScheduler] = BlockingScheduler) -> BaseScheduler:
    """A scheduler whose job store is the app's database, with the scan job added (replacing a stored one,
    so a changed interval takes effect) and due at once."""
    from db import get_engine

    job_defaults = {"coalesce": True, "max_instances": 1, "misfire_grace_time": misfire_grace_seconds}
    scheduler = scheduler_class(
        jobstores={"default": SQLAlchemyJobStore(engine=get_engine(url), tablename="apscheduler_jobs")},
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults=job_defaults,
        timezone=timezone.utc,
    )
    scheduler.add_job("safestats.scheduler:scan_incoming_job", trigger="interval", seconds=interval_seconds,
                      id=JOB_ID, name="scan suppliers' incoming folders", replace_existing=True,
                      next_run_time=datetime.now(timezone.utc), **job_defaults)
    scheduler.add_job("safestats.scheduler:retention_job", trigger="cron", hour=RETENTION_HOUR_UTC, minute=0,
                      id=RETENTION_JOB_ID, name="fold and remove records past their retention period",
                      replace_existing=True, **job_defaults)
    return scheduler


def run_scheduler(url: str, interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
                  misfire_grace_seconds: int = DEFAULT_MISFIRE_GRACE_SECONDS,
                  settle_seconds: float = DEFAULT_SETTLE_SECONDS, once: bool = False) -> int:
    """Scan every ``interval_seconds`` until interrupted (or, with ``once``, scan once and return)."""
    from safestats.ingest import ensure_folders, incoming_root

    root = incoming_root()
    configure_job_context(url, root, settle_seconds)
    folders = ensure_folders(root)
    if once:
        loaded = scan_incoming_job()
        print(f"Scanned {len(folders)} incoming folder(s) under {root}: {loaded} file(s) loaded.")
        return 0
    print(f"Watching {', '.join(str(f) for f in folders.values())} every {interval_seconds:g} s "
          f"(Ctrl-C to stop).", flush=True)
    scheduler = build_scheduler(url, interval_seconds, misfire_grace_seconds)

    def stop(signum, frame):
        # A scan under way finishes first (its drop commits or rolls back whole either way).
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        if scheduler.running:
            scheduler.shutdown(wait=False)
    return 0
