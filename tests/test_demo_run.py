"""`safestats demo run` (./dev portal) prepares a working demo, and running it again changes nothing.

Runs the real command in a subprocess, as ./dev does, with --no-serve, against a fresh database of its own
(DATABASE_URL) and a temporary SAFESTATS_HOME, so it never touches the project's own demo data.
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from db import get_engine
from tests.conftest import drop_database, make_database, query


@pytest.fixture
def demo_env(tmp_path):
    url = make_database(f"safestats_test_demo_{uuid.uuid4().hex[:10]}")
    try:
        yield url, tmp_path / "home", dict(os.environ, DATABASE_URL=url, SAFESTATS_HOME=str(tmp_path / "home"))
    finally:
        get_engine.cache_clear()
        drop_database(url)


def _demo_run(env: dict) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("safestats")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "safestats.cli"]
    return subprocess.run(command + ["demo", "run", "--months", "1", "--no-serve"], env=env, capture_output=True,
                          text=True, timeout=600)


def test_demo_run_prepares_everything_and_is_safe_to_repeat(demo_env):
    from dashapp.auth import authenticate

    url, home, env = demo_env

    first = _demo_run(env)

    assert first.returncode == 0, first.stdout + first.stderr
    assert query(url, "SELECT count(*) FROM areas WHERE level = 'borough'")[0][0] == 33
    drops = query(url, "SELECT count(*) FROM drops WHERE status = 'loaded'")[0][0]
    incidents = query(url, "SELECT count(*) FROM incidents")[0][0]
    assert drops >= 1 and incidents > 0
    # A population for every year the demo incidents fall in, for every London LSOA.
    population = query(url, "SELECT year, count(*) FROM area_population GROUP BY year ORDER BY year")
    incident_years = query(url, "SELECT DISTINCT extract(year FROM occurred_at AT TIME ZONE 'Europe/London')::int "
                                "FROM incidents ORDER BY 1")
    assert [year for year, _ in population] == [year for (year,) in incident_years]
    assert {count for _, count in population} == {4835}
    login_file = home / "demo-login.txt"
    assert stat.S_IMODE(login_file.stat().st_mode) == 0o600
    password = next(line.split(":", 1)[1].strip() for line in login_file.read_text().splitlines()
                    if line.startswith("password:"))
    user = authenticate(get_engine(url), "demo@safestats.local", password)
    assert user is not None and user.tier == "admin"

    second = _demo_run(env)

    assert second.returncode == 0, second.stdout + second.stderr
    assert "already loaded" in second.stdout and "already in" in second.stdout
    assert "LSOA populations already loaded" in second.stdout
    assert query(url, "SELECT year, count(*) FROM area_population GROUP BY year ORDER BY year") == population
    assert query(url, "SELECT count(*) FROM drops WHERE status = 'loaded'")[0][0] == drops
    assert query(url, "SELECT count(*) FROM incidents")[0][0] == incidents
    assert login_file.read_text().count(password) == 1, "the demo password must stay the same across runs"
    assert authenticate(get_engine(url), "demo@safestats.local", password) is not None
