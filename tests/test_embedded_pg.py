"""The embedded default database: a private cluster that starts, restarts, stops and reports its state.

Every test here uses its own SAFESTATS_HOME in a temporary folder, never the project's shared cluster
(other test runs use that one). As root the cluster of a home under pytest's private tmp folder lives in
/var/lib/postgresql/safestats/<hash>; the fixture stops it and removes that folder afterwards.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from safestats import embedded_pg
from safestats.embedded_pg import EmbeddedDatabaseError, EmbeddedPostgres

# A port range of its own, so this throwaway cluster never takes the port a stopped shared cluster expects.
TEST_FIRST_PORT = 56500


def _one_value(url: str, sql: str):
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]
    finally:
        conn.close()


def _postgis_version(url: str) -> str:
    return _one_value(url, "SELECT postgis_version()")


def _remove_cluster(pg: EmbeddedPostgres) -> None:
    state = pg._state()
    try:
        pg.stop()
    finally:
        if state:
            cluster_dir = Path(state["data_dir"]).parent
            # Only ever a folder this test made: under its tmp home, or the root fallback for that home.
            if cluster_dir.is_relative_to(pg.home) or cluster_dir.parent == Path("/var/lib/postgresql/safestats"):
                shutil.rmtree(cluster_dir, ignore_errors=True)
        shutil.rmtree(pg.home, ignore_errors=True)


@pytest.fixture(scope="module")
def private_cluster(tmp_path_factory):
    """A cluster of its own (initialised by the first test that starts it), removed after this module."""
    original_choose_port = embedded_pg._choose_port
    embedded_pg._choose_port = lambda start=TEST_FIRST_PORT: original_choose_port(start)
    pg = EmbeddedPostgres(home=tmp_path_factory.mktemp("embedded") / "home", log=lambda *a: None)
    try:
        yield pg
    finally:
        embedded_pg._choose_port = original_choose_port
        _remove_cluster(pg)


def test_first_start_initialises_and_gives_a_postgis_database(private_cluster):
    pg = private_cluster
    assert pg.status()["initialised"] is False
    assert pg.status()["running"] is False

    url = pg.ensure_running()

    assert _postgis_version(url).startswith("3.")
    assert url.startswith("postgresql://") and "@127.0.0.1:" in url and url.endswith("/safestats")
    assert (os.stat(pg.state_file).st_mode & 0o777) == 0o600, "pg.json holds the password: owner-only"
    # A single-node cluster with no replicas: a drop's COPY into the month table it creates skips the WAL.
    assert _one_value(url, "SHOW wal_level") == "minimal"


def test_second_ensure_running_is_a_no_op_with_the_same_url(private_cluster):
    pg = private_cluster
    first = pg.ensure_running()
    data_dir = pg.status()["data_dir"]
    pid_before = (Path(data_dir) / "postmaster.pid").read_text().splitlines()[0]

    second = pg.ensure_running()

    assert second == first
    assert (Path(data_dir) / "postmaster.pid").read_text().splitlines()[0] == pid_before, "server was restarted"


def test_status_reports_running_and_stopped_and_restart_works(private_cluster):
    pg = private_cluster
    url = pg.ensure_running()
    assert pg.status()["running"] is True
    assert pg.status()["url"] == url

    assert pg.stop() is True
    assert pg.status()["running"] is False
    assert pg.status()["initialised"] is True
    assert pg.stop() is False, "stopping a stopped cluster reports that it was not running"

    assert pg.ensure_running() == url
    assert pg.status()["running"] is True
    assert _postgis_version(url).startswith("3.")


def test_missing_packages_without_root_stop_with_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(embedded_pg, "find_pg_bin", lambda: None)
    monkeypatch.setattr(embedded_pg, "_is_root", lambda: False)
    pg = EmbeddedPostgres(home=tmp_path / "home", log=lambda *a: None)

    with pytest.raises(EmbeddedDatabaseError) as excinfo:
        pg.ensure_running()

    assert embedded_pg.INSTALL_COMMAND in str(excinfo.value)
    assert not pg.state_file.exists()


def _safestats(args: list[str], env: dict) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("safestats")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "safestats.cli"]
    return subprocess.run(command + args, env=env, capture_output=True, text=True, timeout=120)


def test_with_database_url_set_db_start_starts_nothing(tmp_path):
    home = tmp_path / "home"
    external = "postgresql://someone:secret@127.0.0.1:1/elsewhere"
    env = dict(os.environ, DATABASE_URL=external, SAFESTATS_HOME=str(home))

    started = _safestats(["db", "start"], env)
    assert started.returncode == 0, started.stderr
    assert "DATABASE_URL is set" in started.stdout

    url = _safestats(["db", "url"], env)
    assert url.returncode == 0, url.stderr
    assert url.stdout.strip() == external

    status = _safestats(["db", "status"], env)
    assert status.returncode == 0, status.stderr
    assert "running      False" in status.stdout

    assert not (home / "pg.json").exists()
    assert not (home / "pg").exists()
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]
    assert not (Path("/var/lib/postgresql/safestats") / digest).exists()
