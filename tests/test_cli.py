"""The `safestats` command as a user runs it: its help lists the subcommands, and `migrate` reaches head.

Each test runs the installed console script in a subprocess with its own environment, the way the README
and ./dev call it, against a fresh database made for the test and dropped afterwards.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from db import migrate
from tests.conftest import drop_database, make_database

SUBCOMMANDS = ("db", "migrate", "boundaries", "load", "population", "demo", "users", "orgs", "scheduler", "tokens", "serve")


def _safestats(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("safestats")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "safestats.cli"]
    return subprocess.run(command + args, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def fresh_database():
    url = make_database(f"safestats_test_cli_{uuid.uuid4().hex[:10]}")
    try:
        yield url
    finally:
        drop_database(url)


def test_help_lists_every_subcommand():
    result = _safestats(["--help"])

    assert result.returncode == 0, result.stderr
    choices = re.search(r"\{([a-z,]+)\}", result.stdout)
    assert choices, f"no subcommand list in safestats --help:\n{result.stdout}"
    assert set(choices.group(1).split(",")) >= set(SUBCOMMANDS)
    for name in SUBCOMMANDS:
        assert re.search(rf"^ {{4}}{name} +\S", result.stdout, re.M), f"no help line for `{name}`:\n{result.stdout}"


def test_migrate_brings_a_fresh_database_to_head(fresh_database, tmp_path):
    head = ScriptDirectory.from_config(migrate.alembic_config(fresh_database)).get_current_head()
    assert migrate.current_revision(fresh_database) is None
    env = dict(os.environ, DATABASE_URL=fresh_database, SAFESTATS_HOME=str(tmp_path / "home"))

    result = _safestats(["migrate"], env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Database at revision {head}." in result.stdout
    assert migrate.current_revision(fresh_database) == head

    again = _safestats(["migrate"], env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert migrate.current_revision(fresh_database) == head
