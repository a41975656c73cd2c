"""Ingesting supplier files from their incoming folders: lock, load through the pipeline, file away, refresh.

Each supplier has a folder ``<SAFESTATS_INCOMING>/<supplier>/`` (default ``$SAFESTATS_HOME/incoming``). A
file put there (written elsewhere and renamed in, or left alone for ``settle_seconds``) is loaded through
the one ingest pipeline (``loaders.pipeline.load_paths``) and then moved to ``processed/`` or ``rejected/``
beside it, next to ``<name>.reason.txt`` saying what happened. The scheduler (``safestats.scheduler``) and
the feed API (``dashapp.feeds``) both come through ``ingest_files``.

Safety, in the order things can go wrong: every file is handled under a PostgreSQL session advisory lock
keyed on its path, taken with ``pg_try_advisory_lock``, so when two or three schedulers run by mistake only
one handles a file and the others skip it; the lock goes with the holder's connection, so a killed
scheduler releases it. A drop is one transaction in the pipeline, so a kill mid-load leaves nothing and the
file, still in incoming/, is loaded by the next run. A file is moved only after its drop committed; a kill
between the commit and the move is harmless because the pipeline recognises the content by its sha256 and
skips it, and the next run just moves it. The rollup views a batch touches are refreshed once it has been
filed, and again on any later run that finds a view older than a drop touching it (a refresh a kill
interrupted).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psycopg2

from db import libpq_dsn

log = logging.getLogger("safestats.ingest")

PROCESSED, REJECTED = "processed", "rejected"
REASON_SUFFIX = ".reason.txt"
# Names a supplier's copy tool uses while still writing; they are left alone, never rejected.
IN_PROGRESS_SUFFIXES = (".part", ".partial", ".tmp", ".uploading", ".crdownload")
# A file written in place (not renamed in) must be this many seconds old before it is read.
DEFAULT_SETTLE_SECONDS = 5.0
# Rollup refreshes from different schedulers queue up behind each other for nothing; one at a time.
REFRESH_LOCK_NAME = "safestats-rollup-refresh"


@dataclass
class IngestOutcome:
    """What happened to one incoming file."""

    path: Path                      # where the file was found
    status: str                     # loaded | skipped | rejected | failed | busy (another process has it) | gone
    drop_id: int | None = None
    message: str = ""
    moved_to: Path | None = None    # its place under processed/ or rejected/ (None: left in incoming/)
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0

    def line(self) -> str:
        where = f" -> {self.moved_to}" if self.moved_to else ""
        drop = f" drop {self.drop_id}" if self.drop_id else ""
        return f"{self.path.name}: {self.status}{drop}{': ' + self.message if self.message else ''}{where}"


def incoming_root() -> Path:
    from safestats.config import get_settings

    return get_settings().incoming


def supplier_folder(supplier: str, root: Path | None = None) -> Path:
    if not re.fullmatch(r"[a-z0-9_]+", supplier):
        raise ValueError(f"not a supplier code: {supplier!r}")
    return (root or incoming_root()) / supplier


def formats_of(supplier: str) -> list:
    from loaders.pipeline import supplier_formats

    return [fmt for fmt in supplier_formats() if fmt.supplier == supplier]


def claimed_by(supplier: str, file_name: str) -> bool:
    """Whether one of ``supplier``'s formats claims this file name."""
    return any(fmt.claims(file_name) for fmt in formats_of(supplier))


def expected_names(supplier: str) -> str:
    return "; ".join(fmt.file_pattern.pattern for fmt in formats_of(supplier)) or "(no format registered)"


def known_suppliers() -> list[str]:
    """Suppliers with a registered file format (each gets an incoming folder)."""
    from loaders.pipeline import supplier_formats

    return sorted({fmt.supplier for fmt in supplier_formats()})


def ensure_folders(root: Path | None = None) -> dict[str, Path]:
    folders = {}
    for supplier in known_suppliers():
        folder = supplier_folder(supplier, root)
        for sub in (folder, folder / PROCESSED, folder / REJECTED):
            sub.mkdir(parents=True, exist_ok=True)
        folders[supplier] = folder
    return folders


def pending_files(folder: Path, settle_seconds: float = DEFAULT_SETTLE_SECONDS) -> list[Path]:
    """The files waiting in one supplier folder, oldest first: not hidden, not still being written."""
    now = time.time()
    files = []
    for entry in folder.iterdir():
        name = entry.name
        if name.startswith(".") or name.endswith(IN_PROGRESS_SUFFIXES) or not entry.is_file():
            continue
        try:
            mtime = entry.stat().st_mtime
        except FileNotFoundError:      # moved away by another scheduler since the listing
            continue
        if now - mtime < settle_seconds:
            continue
        files.append((mtime, name, entry))
    return [entry for _, _, entry in sorted(files)]


def file_lock_key(path: Path) -> int:
    """The advisory lock key (signed 64-bit) for the file at ``path``: the same path, the same key."""
    digest = hashlib.sha256(b"safestats-incoming:" + str(path.resolve()).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or, if that is taken (police.uk re-issues a month under the same name), a name
    prefixed with the time it was filed."""
    target = folder / name
    if not target.exists():
        return target
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1, 1000):
        target = folder / (f"{stamp}-{name}" if n == 1 else f"{stamp}-{n}-{name}")
        if not target.exists():
            return target
    raise FileExistsError(f"no free name for {name} in {folder}; clear out old files there")


def file_away(path: Path, outcome: IngestOutcome, supplier_dir: Path) -> Path:
    """Move ``path`` to processed/ or rejected/ under ``supplier_dir``, its reason file written first."""
    folder = supplier_dir / (PROCESSED if outcome.status in ("loaded", "skipped") else REJECTED)
    folder.mkdir(parents=True, exist_ok=True)
    target = _free_name(folder, path.name)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    drop = f"drop {outcome.drop_id}" if outcome.drop_id else "no drop recorded"
    # Written before the move: a kill in between leaves the file in incoming/, and the next run rewrites it.
    _write_atomically(target.with_name(target.name + REASON_SUFFIX),
                      f"{outcome.status} ({drop}) at {stamp}\n{outcome.message}\n")
    os.replace(path, target)
    return target


def _outcome_from(result, path: Path) -> IngestOutcome:
    outcome = IngestOutcome(path=path, status=result.status, drop_id=result.drop_id, message=result.message,
                            rows_read=result.rows_read, rows_loaded=result.rows_loaded,
                            rows_quarantined=result.rows_quarantined)
    if result.status == "loaded":
        replaced = (f", replaced drop {', '.join(map(str, result.replaced_drop_ids))}"
                    if result.replaced_drop_ids else "")
        outcome.message = (f"{result.rows_read:,} rows read, {result.rows_loaded:,} loaded, "
                           f"{result.rows_quarantined:,} quarantined{replaced}")
    return outcome


def ingest_files(url: str, supplier: str, paths: list[Path], supplier_dir: Path | None = None,
                 refresh: bool = True) -> list[IngestOutcome]:
    """Load ``paths`` (files of ``supplier``) under per-file advisory locks, then file each one away.

    A file another process holds the lock for is skipped (``busy``), as is one that is gone once the lock
    is held (another process finished it first). A file none of the supplier's formats claims is rejected
    without touching the database. A file whose load failed (database down, a bug) is left in place, to be
    tried again on the next run. ``supplier_dir`` is where processed/ and rejected/ go (default: the file's
    own folder).
    """
    from loaders.pipeline import load_paths

    lock_conn = psycopg2.connect(libpq_dsn(url))
    lock_conn.autocommit = True
    outcomes: dict[Path, IngestOutcome] = {}
    locked: list[tuple[Path, int]] = []
    try:
        to_load: list[Path] = []
        with lock_conn.cursor() as cur:
            for path in paths:
                key = file_lock_key(path)
                cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                if not cur.fetchone()[0]:
                    outcomes[path] = IngestOutcome(path, "busy", message="another process is loading it")
                    continue
                locked.append((path, key))
                if not path.exists():
                    outcomes[path] = IngestOutcome(path, "gone", message="already handled by another process")
                elif not claimed_by(supplier, path.name):
                    outcomes[path] = IngestOutcome(
                        path, "rejected",
                        message=(f"{supplier} does not send files named {path.name!r} (expected a name matching "
                                 f"{expected_names(supplier)}); rename it or put it in the right supplier's folder"))
                else:
                    to_load.append(path)
        if to_load:
            for result in load_paths(url, to_load, progress=False, refresh_rollups=False):
                outcomes[result.path] = _outcome_from(result, result.path)
        for path, _ in locked:
            outcome = outcomes.get(path)
            if outcome is None or outcome.status not in ("loaded", "skipped", "rejected"):
                continue
            try:
                outcome.moved_to = file_away(path, outcome, supplier_dir or path.parent)
            except OSError as exc:
                # Loaded but not moved: the next run sees the same sha256, skips the load and moves it.
                outcome.message += f" (not moved: {exc}; the next run will move it)"
        if refresh and any(o.status == "loaded" for o in outcomes.values()):
            refresh_rollups_if_stale(url, trigger=f"ingest of {supplier} drops")
            if supplier == "police_uk":
                refresh_gazetteer_logged(url)
    finally:
        # Closing the session releases its advisory locks too; unlocking first just says so explicitly, and
        # must not hide the error that brought us here if the connection is gone.
        try:
            with lock_conn.cursor() as cur:
                for _, key in locked:
                    cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
        except psycopg2.Error:
            pass
        lock_conn.close()
    for outcome in outcomes.values():
        level = logging.WARNING if outcome.status in ("rejected", "failed") else logging.INFO
        log.log(level, "%s: %s", supplier, outcome.line())
    return [outcomes[p] for p in paths if p in outcomes]


def rollups_stale(url: str) -> bool:
    """True when some rollup view is older than a drop loaded since that touches its year (or not yet made)."""
    from safestats.rollups import stale_views

    return bool(stale_views(url))


def refresh_rollups_if_stale(url: str, trigger: str) -> bool:
    """Refresh the rollup views older than a drop that touches them; False when another process is at it or
    nothing was stale."""
    from safestats.rollups import refresh_stale

    conn = psycopg2.connect(libpq_dsn(url))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (REFRESH_LOCK_NAME,))
            if not cur.fetchone()[0]:
                # Another process is refreshing; if it began before our commit, the next run catches up.
                return False
            try:
                if not refresh_stale(url, trigger=trigger):
                    return False
                try:
                    from safestats import queries

                    queries.clear_caches()   # this process's panel cache, if it has one (the web worker)
                except Exception:            # noqa: BLE001 - the cache is keyed on the refresh id anyway
                    pass
                return True
            finally:
                cur.execute("SELECT pg_advisory_unlock(hashtext(%s))", (REFRESH_LOCK_NAME,))
    finally:
        conn.close()


def scan_incoming(url: str, root: Path | None = None,
                  settle_seconds: float = DEFAULT_SETTLE_SECONDS) -> list[IngestOutcome]:
    """One pass over every supplier's incoming folder: what the scheduler runs each interval."""
    from loaders.pipeline import supplier_formats

    outcomes: list[IngestOutcome] = []
    locating = {f.supplier for f in supplier_formats() if f.uses_locator}
    police_loaded = gazetteer_rebuilt = False
    # Suppliers whose records are located through the street gazetteer (ED) go last, after the gazetteer is
    # rebuilt from the police.uk drops this pass loaded (it is made from police.uk's locations).
    for supplier, folder in sorted(ensure_folders(root).items(), key=lambda kv: kv[0] in locating):
        files = pending_files(folder, settle_seconds)
        if not files:
            continue
        if supplier in locating and police_loaded and not gazetteer_rebuilt:
            gazetteer_rebuilt = refresh_gazetteer_logged(url)
        batch = ingest_files(url, supplier, files, refresh=False)
        police_loaded |= supplier == "police_uk" and any(o.status == "loaded" for o in batch)
        outcomes.extend(batch)
    if police_loaded and not gazetteer_rebuilt:
        refresh_gazetteer_logged(url)
    # Also after a batch that loaded nothing: a previous run may have committed and been killed before its
    # refresh.
    refresh_rollups_if_stale(url, trigger="scheduled ingest")
    return outcomes


def refresh_gazetteer_logged(url: str) -> bool:
    """Rebuild the street gazetteer (loaders/locating.py) after police.uk drops were loaded, and log it."""
    from loaders.locating import refresh_gazetteer

    log.info("%s", refresh_gazetteer(url).summary())
    return True
