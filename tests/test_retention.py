"""Retention: records past their supplier's period are folded into the aggregates, removed, and each run recorded.

The rollups must read the same before and after (trends survive), the removed records must be gone from
``incidents`` (with their drops' quarantined raw lines), a second run must not count anything twice, and
every supplier with a period gets a ``retention_runs`` row per run.
"""
from __future__ import annotations

from datetime import date, datetime, timezone

import psycopg2

from db import libpq_dsn
from safestats.retention import run_retention
from safestats.rollups import ROLLUP_VIEWS
from tests.conftest import query, refresh_after_seeding

WESTMINSTER = "E09000033"
NOW = datetime(2026, 11, 15, 12, 0, tzinfo=timezone.utc)
# las (health) keeps 3 years: cutoff 1 Nov 2023. police_uk keeps 7 years: cutoff 1 Nov 2019.
RECORDS = [("las", 20, 70, "2022-06-10 21:15+01"), ("las", 20, 70, "2022-06-10 21:40+01"),
           ("las", 20, 71, "2023-10-31 23:30+00"),                     # 31 Oct in London: before the cutoff
           ("las", 20, 70, "2023-11-01 00:30+00"),                     # 1 Nov: kept
           ("las", 20, 70, "2024-03-02 08:00+00"),
           ("police_uk", 10, 1, "2022-06-01 00:00+01"), ("police_uk", 10, 1, "2019-10-01 00:00+01")]


def _seed(url: str) -> None:
    conn = psycopg2.connect(libpq_dsn(url))
    with conn, conn.cursor() as cur:
        cur.execute("SELECT safestats_ensure_incident_partitions('2019-01-01', '2024-12-31')")
        for supplier, level, category, at in RECORDS:
            cur.execute("""
                INSERT INTO incidents (supplier, drop_id, occurred_at, time_precision, category_id, supplier_category,
                                       location_precision, borough_code, lsoa_code, access_level, theme_weapon, geom)
                SELECT %s, 1, %s, 'minute', %s, 'test', 'exact', %s, 'lsoa-test', %s, %s, ST_PointOnSurface(geom)
                FROM areas WHERE code = %s""", (supplier, at, category, WESTMINSTER, level, category == 71, WESTMINSTER))
        cur.execute("""INSERT INTO drops (supplier, file_name, sha256, size_bytes, received_at, loaded_at, status,
                                          period_start, period_end)
                       VALUES ('las', 'old.csv', repeat('a', 64), 1, now(), now(), 'loaded', '2022-06-01', '2022-06-30'),
                              ('las', 'new.csv', repeat('b', 64), 1, now(), now(), 'loaded', '2024-03-01', '2024-03-31')
                       RETURNING id""")
        old_drop, new_drop = (r[0] for r in cur.fetchall())
        cur.executemany("INSERT INTO quarantine (drop_id, line_no, raw_line, reason) VALUES (%s, 2, 'raw', 'bad')",
                        [(old_drop,), (new_drop,)])
    conn.close()
    refresh_after_seeding(url)


def _rollup_contents(url: str) -> dict[str, list]:
    return {view: sorted(query(url, f"SELECT * FROM {view}"), key=repr) for view in ROLLUP_VIEWS}


def test_retention_folds_old_records_into_the_aggregates_and_removes_them(clean_data):
    _seed(clean_data)
    before = _rollup_contents(clean_data)
    assert sum(r[-1] for r in before["rollup_borough_month"]) == len(RECORDS)

    runs = {r.supplier: r for r in run_retention(clean_data, trigger="test", now=NOW)}
    assert runs["las"].cutoff == datetime(2023, 11, 1, tzinfo=timezone.utc)
    assert (runs["las"].records_folded, runs["las"].records_deleted, runs["las"].quarantine_deleted) == (3, 3, 1)
    assert runs["police_uk"].records_deleted == 1, "only the police record older than 7 years"
    assert query(clean_data, "SELECT supplier, occurred_at < '2023-11-01' FROM incidents WHERE supplier = 'las'") == \
        [("las", False), ("las", False)]
    assert query(clean_data, "SELECT count(*) FROM quarantine") == [(1,)], "the old drop's raw line is gone"
    assert _rollup_contents(clean_data) == before, "every rollup reads exactly as before"
    # A drawn polygon's packed points are records: the removed ones are gone from them too.
    assert query(clean_data, "SELECT month, supplier, points FROM incident_cell_points ORDER BY 1, 2") == [
        (date(2022, 6, 1), "police_uk", 1), (date(2023, 11, 1), "las", 1), (date(2024, 3, 1), "las", 1)]
    # Only the folded months were refreshed (2019-10, 2022-06, 2023-10), not every month with data.
    refreshed = query(clean_data, """SELECT DISTINCT to_char(m, 'YYYY-MM') FROM rollup_refreshes r,
                                         generate_series(r.month_from, r.month_to, interval '1 month') m
                                     WHERE r.trigger = 'retention (test)' ORDER BY 1""")
    assert [m for (m,) in refreshed] == ["2019-10", "2022-06", "2023-10"]

    # Every supplier with a period is on record for this run; a second run removes and double-counts nothing.
    [(suppliers, run_ids)] = query(clean_data, "SELECT count(DISTINCT supplier), count(DISTINCT run_id) FROM retention_runs")
    assert suppliers == len(query(clean_data, "SELECT 1 FROM suppliers WHERE record_retention IS NOT NULL"))
    assert run_ids == 1
    # ... and in the audit log, chained with every data view: one 'job' row per supplier, with what it removed.
    audited = dict(query(clean_data, "SELECT target, rows_returned FROM audit_log WHERE kind = 'job' "
                                     "AND target LIKE 'retention %%'"))
    assert audited["retention las"] == 3 and audited["retention police_uk"] == 1 and len(audited) == suppliers
    again = run_retention(clean_data, trigger="test", now=NOW)
    assert sum(r.records_deleted for r in again) == 0
    refresh_after_seeding(clean_data)
    assert _rollup_contents(clean_data) == before
    assert query(clean_data, "SELECT count(DISTINCT run_id) FROM retention_runs") == [(2,)]
    assert query(clean_data, "SELECT record_retention < (SELECT record_retention FROM suppliers WHERE code = 'police_uk') "
                             "FROM suppliers WHERE code = 'istv_ed'") == [(True,)], "health data is kept the shortest"


def test_the_scheduler_runs_retention_nightly(db_url):
    from apscheduler.schedulers.background import BackgroundScheduler

    from safestats.scheduler import RETENTION_JOB_ID, build_scheduler

    scheduler = build_scheduler(db_url, scheduler_class=BackgroundScheduler)
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert RETENTION_JOB_ID in jobs
    assert "hour='3'" in str(jobs[RETENTION_JOB_ID].trigger)
