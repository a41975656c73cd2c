"""The month stager's helper connections (loaders/staging.py), apart from the drops that use them.

Whole drops through the staged path (content, indexes, kills, failures, leftovers) are in
tests/test_pipeline_fresh_month.py; these cover what a drop rarely meets: a month that has its partition
already, and a helper connection lost between two drops.
"""
from __future__ import annotations

from datetime import datetime, timezone

import psycopg2

from db import libpq_dsn
from loaders.staging import STAGING_CONNECTIONS, MonthStager
from tests.conftest import query


def test_a_month_with_its_partition_is_not_staged(clean_data):
    url = clean_data
    july = datetime(2016, 7, 10, tzinfo=timezone.utc)
    conn = psycopg2.connect(libpq_dsn(url))
    with conn, conn.cursor() as cur:   # the month's partition, committed
        cur.execute("SELECT safestats_ensure_incident_partitions(%s, %s)", (july, july))
    conn.close()
    assert query(url, "SELECT to_regclass('incidents_y2016m07') IS NOT NULL") == [(True,)]
    stager = MonthStager(libpq_dsn(url))
    try:
        assert stager.stage(july, []) is None
    finally:
        stager.close()
    assert query(url, "SELECT to_regclass('incidents_y2016m07_staged')") == [(None,)]


def test_a_lost_helper_connection_is_replaced_before_the_next_drop(clean_data):
    stager = MonthStager(libpq_dsn(clean_data))
    try:
        first = stager._connections()
        assert len(first) == STAGING_CONNECTIONS
        first[1].close()    # as a server restart or a broken COPY leaves it
        again = stager._connections()
        assert len(again) == STAGING_CONNECTIONS and not any(conn.closed for conn in again)
        assert not any(conn is old for conn in again for old in first)
        with again[1].cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        stager.close()
