"""A large drop that opens its month is written into a fresh month partition, with every guarantee kept.

The pipeline COPYs such a drop (FRESH_MONTH_MIN_ROWS rows or more, all in one month whose partition does not
exist yet) into a new table without indexes and attaches it as the month's partition (migration 0017). These
tests load generated police.uk months big enough for that path (in months no other test uses) and check that
the result is exactly what the COPY through the existing indexes gives, that the new partition carries the
parent's indexes and forced row-level security and nothing is left unattached, that the same file twice
changes nothing and a re-issue replaces it, and that kill -9 at each stage of the path leaves the database
as it was.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psycopg2
import pytest

from db import libpq_dsn
from loaders import pipeline
from loaders.demo import generate_demo_drops
from loaders.pipeline import load_paths
from tests.conftest import query
from tests.test_loader_kill9 import snapshot, start_loader, wait_for_pause

ROWS_PER_MONTH = 30_000     # the Met's file of the month is then well over FRESH_MONTH_MIN_ROWS


def street_files(folder: Path, month: str) -> list[Path]:
    files = generate_demo_drops(folder, months=1, end_month=month, rows_per_month=ROWS_PER_MONTH,
                                fire_and_transport=False)
    street = sorted(f for f in files if f.name.endswith("-street.csv"))
    met = next(f for f in street if "metropolitan" in f.name)
    assert sum(1 for _ in met.open()) - 1 >= pipeline.FRESH_MONTH_MIN_ROWS, "the Met file must take the fresh path"
    return street


def unattached_incident_tables(url: str) -> list[str]:
    return [r[0] for r in query(url, """
        SELECT relname FROM pg_class WHERE relname LIKE 'incidents\\_y%%' AND relkind IN ('r', 'p')
          AND oid NOT IN (SELECT relid FROM pg_partition_tree('incidents'))""")]


def month_partition(url: str, name: str) -> list[tuple]:
    return query(url, """SELECT c.relkind, p.relname, c.relrowsecurity, c.relforcerowsecurity
                         FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid
                         JOIN pg_class p ON p.oid = i.inhparent WHERE c.relname = %s""", (name,))


def made_fresh(url: str, name: str) -> bool:
    """Whether the month partition was made by the fresh path (its table carries the month's bounds CHECK)."""
    return query(url, "SELECT count(*) FROM pg_constraint WHERE conname = %s", (f"{name}_bounds",)) == [(1,)]


def contents(url: str) -> list[tuple]:
    """Every loaded incident without its generated ids, in a stable order."""
    return query(url, """SELECT supplier, supplier_record_id, occurred_at, category_id, supplier_category,
                                ST_AsEWKT(geom), longitude, latitude, lsoa_code, msoa_code, borough_code,
                                access_level, location_confidence, attributes::text
                         FROM incidents ORDER BY 2, 6, 14, 5""")


def quarantine_and_quality(url: str) -> tuple[list[tuple], list[tuple]]:
    """Every drop's quarantined rows and location quality, by the drop's file name (not its id)."""
    return (query(url, """SELECT d.file_name, q.line_no, q.raw_line, q.reason FROM quarantine q
                          JOIN drops d ON d.id = q.drop_id ORDER BY 1, 2"""),
            query(url, """SELECT d.file_name, l.method, l.rows, l.mean_confidence FROM drop_location_quality l
                          JOIN drops d ON d.id = l.drop_id ORDER BY 1, 2"""))


def test_a_large_month_in_a_fresh_partition_equals_the_copy_through_the_indexes(clean_data, tmp_path):
    from tests.conftest import truncate_data

    url = clean_data
    files = street_files(tmp_path, "2016-05")
    met = next(f for f in files if "metropolitan" in f.name)
    with met.open("a") as fh:  # two bad rows, quarantined while the helpers COPY (their reasons kept)
        fh.write(",2016-05,Metropolitan Police Service,,-0.1,51.5,On or near X,E01000001,Camden 001A,\n"
                 "too,few,fields\n")
    assert month_partition(url, "incidents_y2016m05") == []
    first = load_paths(url, files, progress=False, refresh_rollups=False)
    assert [r.status for r in first] == ["loaded", "loaded"]
    # The month's partition was made by the fresh path: a plain table under its year, indexed as its parent,
    # with row-level security enabled and forced; nothing else was left unattached.
    assert month_partition(url, "incidents_y2016m05") == [("r", "incidents_y2016", True, True)]
    assert made_fresh(url, "incidents_y2016m05")
    assert unattached_incident_tables(url) == []
    parent_indexes = query(url, """SELECT regexp_replace(pg_get_indexdef(indexrelid), '^.* USING ', '')
                                   FROM pg_index WHERE indrelid = 'incidents'::regclass ORDER BY 1""")
    leaf_indexes = query(url, """SELECT regexp_replace(pg_get_indexdef(indexrelid), '^.* USING ', '')
                                 FROM pg_index WHERE indrelid = 'incidents_y2016m05'::regclass ORDER BY 1""")
    assert leaf_indexes == parent_indexes and len(parent_indexes) == 4
    # ... and each of them is attached to the incidents table's own index (the primary key's included).
    assert query(url, """SELECT count(*) FROM pg_index x WHERE x.indrelid = 'incidents_y2016m05'::regclass
                           AND EXISTS (SELECT 1 FROM pg_partition_ancestors(x.indexrelid) a
                                       JOIN pg_index p ON p.indexrelid = a.relid
                                       WHERE p.indrelid = 'incidents'::regclass)""") == [(4,)]
    loaded = sum(r.rows_loaded for r in first)
    assert query(url, "SELECT count(*), count(DISTINCT id) FROM incidents") == [(loaded, loaded)]
    assert loaded + sum(r.rows_quarantined for r in first) == sum(r.rows_read for r in first)
    fresh, fresh_quarantine = contents(url), quarantine_and_quality(url)
    assert len(fresh_quarantine[0]) >= 2 and fresh_quarantine[1]

    # The same files again change nothing.
    assert [r.status for r in load_paths(url, files, progress=False, refresh_rollups=False)] == ["skipped"] * 2
    assert contents(url) == fresh

    # Emptied, the month's partition stays: the same files now go through its indexes, with the same result.
    truncate_data(url)
    again = load_paths(url, files, progress=False, refresh_rollups=False)
    assert [r.rows_loaded for r in again] == [r.rows_loaded for r in first]
    assert contents(url) == fresh and quarantine_and_quality(url) == fresh_quarantine

    # A re-issue of the Met's month replaces it.
    lines = met.read_text().splitlines(keepends=True)
    reissue = tmp_path / "reissue" / met.name
    reissue.parent.mkdir()
    reissue.write_text("".join(lines[:-100]))
    [result] = load_paths(url, [reissue], progress=False, refresh_rollups=False)
    [met_drop] = [r.drop_id for r in again if r.path == met]
    assert result.status == "loaded" and result.replaced_drop_ids == [met_drop]
    assert query(url, "SELECT count(*) FROM incidents")[0][0] == (
        result.rows_loaded + sum(r.rows_loaded for r in again if r.path != met))


@pytest.mark.parametrize("stages", [("partitions", "inserted", "before_commit")])
def test_kill_during_a_fresh_month_leaves_the_database_as_it_was(clean_data, tmp_path, stages):
    url = clean_data
    met = next(f for f in street_files(tmp_path, "2016-02") if "metropolitan" in f.name)
    before = snapshot(url)
    for stage in stages:
        proc = start_loader(url, met, pause_at=stage)
        wait_for_pause(proc, stage)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while query(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                         "AND state = 'idle in transaction'")[0][0] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert snapshot(url) == before, stage
        # The fresh table was rolled back with the transaction: no month partition, nothing unattached.
        assert month_partition(url, "incidents_y2016m02") == [], stage
        assert query(url, "SELECT to_regclass('incidents_y2016m02')") == [(None,)], stage
    [result] = load_paths(url, [met], progress=False, refresh_rollups=False)
    assert result.status == "loaded"
    assert month_partition(url, "incidents_y2016m02") == [("r", "incidents_y2016", True, True)]
    assert made_fresh(url, "incidents_y2016m02")
    assert query(url, "SELECT count(*) FROM incidents")[0][0] == result.rows_loaded
    assert unattached_incident_tables(url) == []


def test_a_drop_opening_its_month_holds_the_month_before_the_next_drop_may_make_it(clean_data, tmp_path):
    """The Met's month drop takes the month's lock in its first round trip: a smaller drop of the same month,
    started meanwhile (the next drop of a batch begins as soon as the first holds its drop row), waits for it
    instead of making the month's partition first and sending the big drop through the indexes."""
    import threading

    url = clean_data
    met, city = (next(f for f in street_files(tmp_path, "2016-08") if force in f.name)
                 for force in ("metropolitan", "city"))
    proc = start_loader(url, met, pause_at="drop_row")
    try:
        wait_for_pause(proc, "drop_row")
        city_results = []
        city_load = threading.Thread(target=lambda: city_results.extend(
            load_paths(url, [city], progress=False, refresh_rollups=False)))
        city_load.start()
        city_load.join(timeout=5)
        assert city_load.is_alive(), "the City's drop made the month's partition while the Met's drop held it"
        assert month_partition(url, "incidents_y2016m08") == []
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    city_load.join(timeout=60)
    assert [r.status for r in city_results] == ["loaded"]   # once the Met's loader is gone, the City's goes on
    assert month_partition(url, "incidents_y2016m08") == [("r", "incidents_y2016", True, True)]


def disk_order(url: str) -> list[tuple]:
    """Every incident's record id and point in the order of its partition's pages (ctid)."""
    return query(url, "SELECT supplier_record_id, ST_AsEWKT(geom) FROM incidents ORDER BY tableoid, ctid")


def test_a_drop_copied_in_chunks_equals_one_copy_in_order_and_content(clean_data, tmp_path, monkeypatch):
    """The COPY is encoded and sent COPY_CHUNK_ROWS at a time on the encoder's thread (CopyStream): with chunks
    of 1,000 rows (31 of them for the Met's month) the incidents, their drop ids and their order on disk (by
    borough, then Z-order) are those of a single chunk. The month is staged as one share here: two shares
    COPYed at once fill pages in an order that depends on timing (their content is checked above)."""
    from tests.conftest import truncate_data

    url = clean_data
    files = street_files(tmp_path, "2016-11")
    monkeypatch.setattr(pipeline, "STAGING_CONNECTIONS", 1)
    monkeypatch.setattr(pipeline, "COPY_CHUNK_ROWS", 10 ** 9)
    single = load_paths(url, files, progress=False, refresh_rollups=False)
    assert [r.status for r in single] == ["loaded", "loaded"]
    assert made_fresh(url, "incidents_y2016m11")
    one_chunk, one_chunk_order = contents(url), disk_order(url)
    truncate_data(url)
    conn = psycopg2.connect(libpq_dsn(url))
    with conn, conn.cursor() as cur:
        cur.execute("DROP TABLE incidents_y2016m11")    # so the second load takes the fresh path too
    conn.close()

    monkeypatch.setattr(pipeline, "COPY_CHUNK_ROWS", 1_000)
    chunked = load_paths(url, files, progress=False, refresh_rollups=False)
    assert [r.rows_loaded for r in chunked] == [r.rows_loaded for r in single]
    assert made_fresh(url, "incidents_y2016m11")
    assert contents(url) == one_chunk
    assert disk_order(url) == one_chunk_order
    # Every row carries its own drop's id, the first chunk's and the last's alike.
    assert sorted(query(url, "SELECT drop_id, count(*) FROM incidents GROUP BY 1")) == sorted(
        (r.drop_id, r.rows_loaded) for r in chunked)


def test_an_encoding_failure_mid_copy_rolls_the_drop_back(clean_data, tmp_path, monkeypatch):
    """A chunk that fails to encode after earlier chunks were sent fails the COPY: the drop rolls back whole
    (no incidents, no month table, no drop row but the failed load's), and the same file loads afterwards."""
    url = clean_data
    met = next(f for f in street_files(tmp_path, "2016-12") if "metropolitan" in f.name)
    before = snapshot(url)
    monkeypatch.setattr(pipeline, "COPY_CHUNK_ROWS", 5_000)
    real_binary_copy, calls = pipeline.binary_copy, []

    def failing_third_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("a broken column in the third chunk")
        return real_binary_copy(*args, **kwargs)

    monkeypatch.setattr(pipeline, "binary_copy", failing_third_chunk)
    [failed] = load_paths(url, [met], progress=False, refresh_rollups=False)
    assert failed.status == "failed"
    assert "encoding the drop's rows for COPY failed: a broken column in the third chunk" in failed.message
    assert snapshot(url) == before
    assert query(url, "SELECT to_regclass('incidents_y2016m12')") == [(None,)]
    assert unattached_incident_tables(url) == []

    monkeypatch.setattr(pipeline, "binary_copy", real_binary_copy)
    [result] = load_paths(url, [met], progress=False, refresh_rollups=False)
    assert result.status == "loaded" and result.rows_loaded > 20_000
    assert query(url, "SELECT count(*) FROM incidents")[0][0] == result.rows_loaded


def test_a_killed_loaders_staging_table_is_closed_to_the_web_and_dropped_by_the_next_staging(clean_data, tmp_path):
    """A month is staged on helper connections, committed before the drop's own transaction commits
    (loaders/staging.py). Killed between the two, the loader leaves its staging table: its rows are in no
    partition, so analysts never see them, and the web role cannot read the table itself. The next staging of
    any month drops it."""
    url = clean_data
    met = next(f for f in street_files(tmp_path / "march", "2016-03") if "metropolitan" in f.name)
    before = snapshot(url)
    proc = start_loader(url, met, pause_at="copied")
    try:
        wait_for_pause(proc, "copied")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    staged = query(url, "SELECT count(*) FROM incidents_y2016m03_staged")[0][0]
    assert staged > pipeline.FRESH_MONTH_MIN_ROWS
    assert snapshot(url) == before
    assert unattached_incident_tables(url) == ["incidents_y2016m03_staged"]
    conn = psycopg2.connect(libpq_dsn(url))
    try:
        with conn.cursor() as cur:
            cur.execute("SET ROLE safestats_web")
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("SELECT count(*) FROM incidents_y2016m03_staged")
        conn.rollback()
        with conn.cursor() as cur:  # and were it granted, row-level security is forced with no policy for it
            cur.execute("SELECT relrowsecurity, relforcerowsecurity FROM pg_class "
                        "WHERE relname = 'incidents_y2016m03_staged'")
            assert cur.fetchone() == (True, True)
    finally:
        conn.close()

    # Another month's staging drops it (nobody holds its month), then this month loads as if never tried.
    other = next(f for f in street_files(tmp_path / "april", "2016-04") if "metropolitan" in f.name)
    [april] = load_paths(url, [other], progress=False, refresh_rollups=False)
    assert april.status == "loaded" and made_fresh(url, "incidents_y2016m04")
    assert unattached_incident_tables(url) == []
    [march] = load_paths(url, [met], progress=False, refresh_rollups=False)
    assert march.status == "loaded" and made_fresh(url, "incidents_y2016m03")
    assert query(url, "SELECT count(*) FROM incidents")[0][0] == april.rows_loaded + march.rows_loaded
    assert unattached_incident_tables(url) == []
