"""Retention of record-level rows (UK GDPR storage limitation): fold old records into the aggregates, then remove them.

Each supplier keeps its records for ``suppliers.record_retention`` (health data the shortest; NULL keeps
them). ``run_retention`` takes, per supplier, the cutoff: the start (Europe/London) of the month that
began that long before now, so whole months go at once. In one transaction per supplier,
``safestats_fold_and_remove_records`` (``db/sql/retention_v1.sql``) adds the records before the cutoff to the
``retained_*`` tables at the rollups' grains, deletes them (with their drops' quarantined raw lines and any
police.uk outcome history before the cutoff) and the run is written to ``retention_runs`` and the audit
log; then the rollups are refreshed. They add the retained counts to the live ones, so every trend, map and
chart still shows the folded months, while no record of them is kept. A run that fails rolls that supplier back whole.
``safestats retention run`` runs it by hand; ``safestats scheduler`` runs it daily (``RETENTION_JOB_ID``).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

import psycopg2

from db import libpq_dsn
from safestats.rollups import fill_h3_points


@dataclass(frozen=True)
class RetentionRun:
    supplier: str
    record_retention: timedelta
    cutoff: datetime
    records_folded: int
    records_deleted: int
    quarantine_deleted: int
    outcome_rows_deleted: int


def retention_periods(url: str) -> dict[str, timedelta | None]:
    """Supplier code -> how long its records are kept (None: no limit)."""
    conn = psycopg2.connect(libpq_dsn(url))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT code, record_retention FROM suppliers ORDER BY code")
            return dict(cur.fetchall())
    finally:
        conn.close()


def _audit(url: str, run: "RetentionRun", trigger: str) -> None:
    """Each supplier's run is an audit row (kind 'job'), chained with every data view and export."""
    from db import get_engine
    from safestats import audit

    audit.record(get_engine(url), user_id=None, email=None, organisation=None, tier="system", kind="job",
                 target=f"retention {run.supplier}", filter_state=f"trigger={trigger}&cutoff={run.cutoff.isoformat()}",
                 rows_returned=run.records_deleted, exported=False, allowed=True,
                 outcome=f"{run.records_folded} folded and removed, {run.quarantine_deleted} quarantined lines, "
                         f"{run.outcome_rows_deleted} outcome rows removed")


def run_retention(url: str, trigger: str, now: datetime | None = None,
                  log: Callable[[str], None] | None = None) -> list[RetentionRun]:
    """Fold and remove every supplier's records older than its retention period; one ``retention_runs`` row per
    supplier (also when nothing was old enough: the run itself is on record). Refreshes the folded months of
    the rollups after."""
    now = now or datetime.now(timezone.utc)
    run_id = uuid.uuid4()
    runs = []
    folded_months: set = set()
    conn = psycopg2.connect(libpq_dsn(url))
    try:
        with conn.cursor() as cur:
            cur.execute("SET jit = off")
            cur.execute("SELECT code, record_retention FROM suppliers WHERE record_retention IS NOT NULL ORDER BY code")
            periods = cur.fetchall()
            fill_h3_points(cur)  # the H3 rollup's retained counts are folded by each point's cell
        conn.commit()
        for supplier, period in periods:
            started = datetime.now(timezone.utc)
            with conn.cursor() as cur:
                # The start of the London month that began `period` before now: whole months are folded.
                cur.execute("""SELECT date_trunc('month', (%s::timestamptz - %s::interval) AT TIME ZONE 'Europe/London')
                                      AT TIME ZONE 'Europe/London'""", (now, period))
                cutoff = cur.fetchone()[0]
                # The London months about to be folded: the only rollup months this run can change.
                cur.execute("""SELECT DISTINCT date_trunc('month', occurred_at AT TIME ZONE 'Europe/London')::date
                               FROM incidents WHERE supplier = %s AND occurred_at < %s""", (supplier, cutoff))
                folded_months.update(m for (m,) in cur.fetchall())
                cur.execute("SELECT * FROM safestats_fold_and_remove_records(%s, %s)", (supplier, cutoff))
                folded, deleted, quarantined, outcomes = cur.fetchone()
                cur.execute("""
                    INSERT INTO retention_runs (run_id, started_at, finished_at, trigger, supplier, record_retention,
                                                cutoff, records_folded, records_deleted, quarantine_deleted,
                                                outcome_rows_deleted)
                    VALUES (%s, %s, clock_timestamp(), %s, %s, %s, %s, %s, %s, %s, %s)""",
                            (str(run_id), started, trigger, supplier, period, cutoff, folded, deleted, quarantined,
                             outcomes))
            conn.commit()
            run = RetentionRun(supplier, period, cutoff, folded, deleted, quarantined, outcomes)
            runs.append(run)
            _audit(url, run, trigger)
            if log:
                log(f"{supplier}: kept {period}; records before {cutoff:%Y-%m-%d}: {folded:,} folded into the "
                    f"aggregates and removed; {quarantined:,} quarantined lines and {outcomes:,} outcome rows removed")
    except Exception:
        conn.rollback()
        raise
    finally:
        conn.close()
    if folded_months:  # the months of the records folded (and removed) above
        from safestats.rollups import refresh_rollups

        # Only the folded months: a nightly run folds about one month per supplier, and a full refresh of
        # every month (minutes at 10 million incidents) would rewrite nothing else.
        refresh_rollups(url, trigger=f"retention ({trigger})", months=sorted(folded_months), log=log)
    return runs
