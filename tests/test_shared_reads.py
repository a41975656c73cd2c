"""safestats.shared_reads: a read that every web worker of a host asks at once is made by one of them.

Workers are separate processes, so these tests fork real ones: the key's lock makes the others wait and
load the first one's result; a worker killed while reading leaves the lock to the next, which reads itself;
results are owner-only files, kept for a while and only so many; clear() forgets them.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import stat
import time

import numpy as np
import pytest

from safestats import shared_reads

FORK = multiprocessing.get_context("fork")


@pytest.fixture
def shared_home(tmp_path, monkeypatch):
    """A SAFESTATS_HOME of the test's own (the settings are cached per process: read again, and after)."""
    from safestats.config import get_settings

    monkeypatch.setenv("SAFESTATS_HOME", str(tmp_path))
    monkeypatch.setattr(shared_reads, "_directory", None)
    get_settings.cache_clear()
    yield tmp_path / "cache" / "shared-reads"
    get_settings.cache_clear()
    monkeypatch.setattr(shared_reads, "_directory", None)


def _worker(key, log_path, seconds, results):
    """A worker asking for ``key``: its computation (logged, so the test can count them) takes ``seconds``."""
    def compute():
        with open(log_path, "a") as log:
            log.write(f"{os.getpid()}\n")
        time.sleep(seconds)
        return {"counts": np.arange(5, dtype=np.int32) * 7, "who": np.array([os.getpid()])}
    arrays = shared_reads.read_once(key, compute)
    results.put((os.getpid(), arrays["counts"].tolist(), int(arrays["who"][0])))


def _run_workers(n, key, log_path, seconds=0.5):
    results = FORK.Queue()
    workers = [FORK.Process(target=_worker, args=(key, log_path, seconds, results)) for _ in range(n)]
    for w in workers:
        w.start()
    answers = [results.get(timeout=30) for _ in workers]
    for w in workers:
        w.join(timeout=30)
    return answers


def test_workers_asking_at_once_compute_once_and_all_get_that_result(shared_home, tmp_path):
    log_path = tmp_path / "computed.log"
    answers = _run_workers(3, ("polygon months", "db", 7, ("scope",), ((-0.1, 51.5),)), log_path)
    computed_by = log_path.read_text().split()
    assert len(computed_by) == 1, "one worker computes, the others wait for it"
    assert {tuple(counts) for _, counts, _ in answers} == {(0, 7, 14, 21, 28)}
    assert {who for _, _, who in answers} == {int(computed_by[0])}, "every worker got the one result"
    # The result is a file only its owner can read, in a folder only its owner can open.
    assert stat.S_IMODE(os.stat(shared_home).st_mode) == 0o700
    [stored] = shared_home.glob("*.npz")
    assert stat.S_IMODE(os.stat(stored).st_mode) == 0o600


def test_another_key_is_computed_again(shared_home, tmp_path):
    """The key holds what the result depends on (the caller's data version and access scope among it): a
    worker asking with another scope never loads the first one's result."""
    log_path = tmp_path / "computed.log"
    _run_workers(1, ("polygon months", "db", 7, ("record level 10",)), log_path)
    _run_workers(1, ("polygon months", "db", 7, ("record level 20",)), log_path)
    _run_workers(1, ("polygon months", "db", 7, ("record level 20",)), log_path, seconds=0)
    assert len(log_path.read_text().split()) == 2


def test_a_worker_killed_while_computing_leaves_the_key_to_the_next(shared_home, tmp_path):
    log_path = tmp_path / "computed.log"
    key = ("polygon day hour", "db", 8)
    results = FORK.Queue()
    stuck = FORK.Process(target=_worker, args=(key, log_path, 3600, results))
    stuck.start()
    deadline = time.monotonic() + 30
    while not (log_path.exists() and log_path.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(stuck.pid, signal.SIGKILL)     # holding the key's lock, mid-computation
    stuck.join(timeout=30)
    [(pid, counts, who)] = _run_workers(1, key, log_path, seconds=0)
    assert who == pid and counts == [0, 7, 14, 21, 28], "the next worker computed it itself"
    assert len(log_path.read_text().split()) == 2


def test_results_are_kept_a_while_and_only_so_many_and_clear_forgets_them(shared_home, monkeypatch):
    monkeypatch.setattr(shared_reads, "KEEP_FILES", 3)
    computed = []

    def compute(k):
        computed.append(k)
        return {"k": np.array([k])}
    for k in range(5):
        shared_reads.read_once(("month", k), lambda k=k: compute(k))
        time.sleep(0.01)    # (distinct modification times)
    assert len(list(shared_home.glob("*.npz"))) == 3, "the newest KEEP_FILES results are kept"
    assert shared_reads.read_once(("month", 4), lambda: compute(-1))["k"].tolist() == [4]
    assert shared_reads.read_once(("month", 0), lambda: compute(0))["k"].tolist() == [0]
    assert computed == [0, 1, 2, 3, 4, 0], "the newest was loaded; the oldest had been removed"
    old = next(shared_home.glob("*.npz"))
    os.utime(old, (time.time() - shared_reads.KEEP_SECONDS - 60,) * 2)
    shared_reads.read_once(("month", 9), lambda: compute(9))
    assert not old.exists(), "a result older than KEEP_SECONDS is removed"
    shared_reads.clear()
    assert list(shared_home.glob("*.npz")) == []
