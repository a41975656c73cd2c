"""Reads shared between the web worker processes of one host: one process computes, the others load its result.

The portal runs a worker process per core (``safestats serve --workers``), and the browser sends a filter
change's panel callbacks at once over several connections, so they land on every worker. Each worker keeps
its own results in memory (``queries._single_flight`` stops its own threads repeating a read), but a read
that is a second of database work, such as a newly drawn polygon's months (``queries._polygon_months``),
was made by every worker at once: at 30M two workers reading the same million-point polygon doubled the
work on two cores (bench/README.md, "A drawn polygon read once per host").

``read_once(key, compute)`` makes it once per host: the first process to ask takes an exclusive lock on the
key's lock file, computes, and writes the arrays to a file beside it (written aside, then renamed into
place); a process asking meanwhile waits on the lock and then loads that file. Results are numpy arrays
only (``np.load`` without pickle), kept in ``<SAFESTATS_HOME>/cache/shared-reads`` (owner-only, like the
secret key beside it) for ``KEEP_SECONDS`` and at most ``KEEP_FILES`` of them. The key must say everything
the result depends on (the caller puts in the database, its data version and the user's access scope, as
for its in-memory cache), so a file is only ever loaded for the same question asked at the same access.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

KEEP_SECONDS = 15 * 60      # a result outlives the filter changes that reuse it; a new drop changes its key
KEEP_FILES = 64             # results kept at most (a polygon's are a few MB)
WAIT_SECONDS = 120          # a process waits this long for another's result before computing it itself

_directory: Path | None = None


def shared_directory() -> Path | None:
    """The folder shared by this host's workers (made owner-only on first use); None when it cannot be made."""
    global _directory
    if _directory is None:
        from safestats.config import get_settings

        folder = get_settings().home / "cache" / "shared-reads"
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            folder.chmod(0o700)
        except OSError as exc:
            log.warning("shared reads off: cannot make %s (%s)", folder, exc)
            return None
        _directory = folder
    return _directory


def _name(key: tuple) -> str:
    # JSON, not repr or hash(): the same key gives the same name in every process (set order and string
    # hashes differ between processes).
    return hashlib.sha256(json.dumps(key, default=repr, sort_keys=True).encode()).hexdigest()


def _lock(fd: int, deadline: float) -> bool:
    """Take the exclusive lock on ``fd``, waiting until ``deadline``; whether it was taken."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                return False
        time.sleep(0.005)


def _load(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    except (OSError, ValueError):
        return None


def _store(folder: Path, path: Path, arrays: dict[str, np.ndarray]) -> None:
    fd, aside = tempfile.mkstemp(dir=folder, suffix=".part")    # (mode 0600)
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez(out, **arrays)
        os.replace(aside, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(aside)
        raise


def _prune(folder: Path) -> None:
    """Remove results older than KEEP_SECONDS and beyond the KEEP_FILES newest, and stale lock files."""
    now = time.time()
    results = []
    for entry in os.scandir(folder):
        with contextlib.suppress(OSError):
            age = now - entry.stat().st_mtime
            if entry.name.endswith(".npz"):
                results.append((age, entry.path))
            elif age > KEEP_SECONDS:    # a lock or a part left by a killed worker
                os.unlink(entry.path)
    results.sort()
    for k, (age, path) in enumerate(results):
        if age > KEEP_SECONDS or k >= KEEP_FILES:
            with contextlib.suppress(OSError):
                os.unlink(path)


def clear() -> None:
    """Forget every shared result (queries.clear_caches: after a refresh, and between tests and benchmark runs,
    which must not find an earlier run's result)."""
    folder = shared_directory()
    if folder is not None:
        for entry in os.scandir(folder):
            if entry.name.endswith(".npz"):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def read_once(key: tuple, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``compute()``'s arrays for ``key``, computed by one process of this host at a time: a process asking
    while another computes waits for it and loads its result. Without the shared folder (or when another
    process holds the key longer than WAIT_SECONDS), computed here."""
    folder = shared_directory()
    if folder is None:
        return compute()
    name = _name(key)
    path = folder / f"{name}.npz"
    found = _load(path)
    if found is not None:
        return found
    fd = os.open(folder / f"{name}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        locked = _lock(fd, time.monotonic() + WAIT_SECONDS)
        found = _load(path)     # made by the process that held the lock
        if found is not None:
            return found
        arrays = compute()
        if locked:
            _store(folder, path, arrays)
            _prune(folder)
        return arrays
    finally:
        os.close(fd)    # (releases the lock)
