"""kill -9 of the loader at any moment leaves the database as it was; running it again completes.

The loader runs as a real `safestats load` subprocess. It is stopped with SIGKILL at each named stage of
the pipeline (the pipeline pauses there when SAFESTATS_LOADER_PAUSE_AT names it), including mid-way
through replacing a re-issued month, and at random moments; the database is then compared with its state
before, and a second run must end with exactly the right rows.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loaders.pipeline import load_paths
from tests.conftest import REPO_ROOT, query

pytestmark = pytest.mark.shared_data

STAGES = ["parse", "partitions", "drop_row", "replaced", "inserted", "before_commit"]


def snapshot(url):
    return (query(url, "SELECT count(*), sum(hashtext(coalesce(supplier_record_id, '') || coalesce(ST_AsText(geom), '')"
                       " || coalesce(attributes->>'last_outcome_category', ''))) FROM incidents"),
            query(url, "SELECT id, status, rows_loaded FROM drops ORDER BY id"),
            query(url, "SELECT count(*) FROM quarantine"))


def start_loader(url: str, path: Path, pause_at: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, DATABASE_URL=url, PYTHONUNBUFFERED="1")
    env.pop("SAFESTATS_LOADER_PAUSE_AT", None)
    if pause_at:
        env["SAFESTATS_LOADER_PAUSE_AT"] = pause_at
    return subprocess.Popen([sys.executable, "-m", "safestats.cli", "load", "--quiet", str(path)], cwd=REPO_ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_pause(proc: subprocess.Popen, stage: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for line in proc.stderr:
        if line.strip() == f"PAUSED {stage}":
            return
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError(f"the loader never reached stage {stage!r}: {proc.stdout.read()}")


def run_to_completion(url: str, path: Path) -> str:
    proc = start_loader(url, path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out


def reissued_copy(original: Path, folder: Path) -> tuple[Path, int]:
    """A re-issue of a month: outcomes updated and the last 20 records withdrawn."""
    lines = original.read_text().splitlines(keepends=True)
    kept = [lines[0]] + [l.replace("Under investigation", "Court result unavailable") for l in lines[1:-20]]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / original.name
    path.write_text("".join(kept))
    located = sum(1 for l in kept[1:] if l.split(",")[4])
    return path, located


@pytest.mark.parametrize("stage", STAGES)
def test_kill_during_reissue_leaves_the_old_month_intact(clean_data, shared_data, tmp_path, stage):
    url = clean_data
    original = shared_data / "police_uk" / "2023-01-city-of-london-street.csv"
    other = shared_data / "police_uk" / "2023-02-city-of-london-street.csv"
    assert [r.status for r in load_paths(url, [original, other], progress=False)] == ["loaded", "loaded"]
    before = snapshot(url)
    reissue, expected_rows = reissued_copy(original, tmp_path / "reissue")

    proc = start_loader(url, reissue, pause_at=stage)
    wait_for_pause(proc, stage)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # The server notices the dead client and rolls its transaction back; wait until its backend is gone.
    deadline = time.monotonic() + 30
    while query(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                     "AND state = 'idle in transaction'")[0][0] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert snapshot(url) == before

    run_to_completion(url, reissue)
    january = query(url, """SELECT count(*), count(*) FILTER (WHERE attributes->>'last_outcome_category'
                                                              = 'Under investigation')
                            FROM incidents WHERE occurred_at < '2023-02-01'""")
    assert january == [(expected_rows, 0)]
    assert query(url, "SELECT status FROM drops ORDER BY id") == [("superseded",), ("loaded",), ("loaded",)]
    # February was never touched.
    assert query(url, "SELECT rows_loaded FROM drops WHERE id = 2")[0][0] == \
        query(url, "SELECT count(*) FROM incidents WHERE occurred_at >= '2023-02-01'")[0][0]


def test_kill_at_random_moments_then_rerun(clean_data, shared_data):
    url = clean_data
    path = shared_data / "police_uk" / "metropolitan_burglary_only" / "2023-01-metropolitan-street.csv.gz"
    before = snapshot(url)
    rng = random.Random(20261123)
    for _ in range(6):
        proc = start_loader(url, path)
        time.sleep(rng.uniform(0.3, 2.5))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        time.sleep(0.2)
        state = snapshot(url)
        if state != before:
            # The kill came after the commit: then the whole drop is there, never a part of it.
            (count, _), drops, _ = state[0][0], state[1], state[2]
            assert len(drops) == 1 and drops[0][1] == "loaded" and drops[0][2] == count
            break
    out = run_to_completion(url, path)
    assert "1 loaded" in out or "1 skipped" in out
    [(drop_id, status, rows_loaded)] = query(url, "SELECT id, status, rows_loaded FROM drops")
    assert status == "loaded"
    assert query(url, "SELECT count(*) FROM incidents")[0][0] == rows_loaded > 4900
