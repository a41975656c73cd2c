"""The audit log: writing a row per data view, export and denied call; verifying its hash chain; searching it.

``record`` is what ``dashapp.guard`` calls for every checked callback and endpoint (one INSERT in its own
short transaction: the trigger in ``db/sql/audit_v1.sql`` numbers the row, stamps the server's time and
chains it to the previous row's hash). ``verify`` walks the chain in order and recomputes every hash in
Python from the row's fields — it does not trust the database's own function — so a row edited, deleted
or inserted later, even by a superuser who bypassed the append-only triggers, is reported by its ``seq``.
``search`` is the admins' page's query (``dashapp.admin_audit``).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Iterator

from sqlalchemy import text
from sqlalchemy.engine import Engine

from safestats import db_scope

GENESIS_HASH = bytes(32)  # the "previous hash" of the first row
FIELDS = ("seq", "at", "user_id", "email", "organisation", "tier", "kind", "target", "filter_state",
          "rows_returned", "exported", "allowed", "outcome")
# One round trip: the transaction is spelled out in the statement (the connection is in autocommit), and it
# commits without waiting for the WAL flush (synchronous_commit off, for this transaction only). Measured
# (bench/audit): waiting for the flush was most of an audit row's cost on a busy disk, 6-16 ms, which eight
# callbacks a filter change pay in turn. The price: if PostgreSQL itself crashes, rows committed in the
# last ~0.6 s (3 x wal_writer_delay) can be lost; they go as whole transactions, so the chain stays intact.
# seq, at and the hashes are set by the chain trigger.
_INSERT = text("""
    BEGIN;
    SET LOCAL synchronous_commit = off;
    INSERT INTO audit_log (user_id, email, organisation, tier, kind, target, filter_state, rows_returned,
                           exported, allowed, outcome)
    VALUES (:user_id, :email, :organisation, :tier, :kind, :target, :filter_state, :rows_returned,
            :exported, :allowed, :outcome);
    COMMIT""")
MAX_FILTER_STATE = 4000  # a forged state can be long; the row keeps its start (the chain hashes what is kept)


def record(engine: Engine, *, user_id: int | None, email: str | None, organisation: str | None, tier: str,
           kind: str, target: str, filter_state: str | None, rows_returned: int | None, exported: bool,
           allowed: bool, outcome: str) -> None:
    """Append one audit row (committed before returning: the caller sends its data only afterwards)."""
    params = {"user_id": user_id, "email": email, "organisation": organisation, "tier": tier, "kind": kind,
              "target": target[:200], "filter_state": filter_state[:MAX_FILTER_STATE] if filter_state else None,
              "rows_returned": rows_returned, "exported": bool(exported), "allowed": bool(allowed),
              "outcome": outcome}
    # audit_log has no row-level security: the user's scope settings would be a round trip for nothing.
    with db_scope.outside_scope(), engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        try:
            conn.execute(_INSERT, params)
        except Exception:
            # A failed statement may leave its BEGIN open on this connection: never return it to the pool.
            conn.invalidate()
            raise


def canonical_text(row: dict) -> str:
    """The text a row's hash covers: the same JSON array ``audit_row_text`` builds in PostgreSQL."""
    at = row["at"].astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    values = [row["seq"], at] + [row[name] for name in FIELDS[2:]]
    return json.dumps(values, ensure_ascii=False, separators=(", ", ": "))


def row_hash(prev_hash: bytes, row: dict) -> bytes:
    return hashlib.sha256(prev_hash + canonical_text(row).encode("utf-8")).digest()


@dataclass(frozen=True)
class Verification:
    rows: int
    problems: list[str]          # empty: the chain is intact
    head_hash: str | None        # the last row's hash (hex): keep it elsewhere to detect a truncated tail

    @property
    def ok(self) -> bool:
        return not self.problems


def _chain(engine: Engine, batch: int = 5000) -> Iterator[dict]:
    columns = ", ".join(FIELDS + ("prev_hash", "hash"))
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=batch).execute(
            text(f"SELECT {columns} FROM audit_log ORDER BY seq"))
        for row in result:
            yield dict(row._mapping)


def verify(engine: Engine, progress=None) -> Verification:
    """Recompute the chain from the first row; report every row whose hash, link or position is wrong."""
    problems: list[str] = []
    previous, expected_seq, count = GENESIS_HASH, 1, 0
    for row in _chain(engine):
        count += 1
        stored_prev, stored_hash = bytes(row["prev_hash"]), bytes(row["hash"])
        if row["seq"] != expected_seq:
            problems.append(f"seq {row['seq']}: expected seq {expected_seq} (rows missing or inserted)")
        if stored_prev != previous:
            problems.append(f"seq {row['seq']}: does not link to the row before it (a row before was changed, "
                            "removed or inserted)")
        if row_hash(stored_prev, row) != stored_hash:
            problems.append(f"seq {row['seq']}: its content does not match its hash (edited after it was written)")
        previous, expected_seq = stored_hash, row["seq"] + 1
        if progress and count % 100_000 == 0:
            progress(count)
    return Verification(count, problems, previous.hex() if count else None)


@dataclass(frozen=True)
class AuditRow:
    seq: int
    at: datetime
    user_id: int | None
    email: str | None
    organisation: str | None
    tier: str
    kind: str
    target: str
    filter_state: str | None
    rows_returned: int | None
    exported: bool
    allowed: bool
    outcome: str


SEARCH_LIMIT = 500


def search(engine: Engine, *, email: str | None = None, target: str | None = None, day_from: date | None = None,
           day_to: date | None = None, allowed: bool | None = None, exported: bool | None = None,
           limit: int = SEARCH_LIMIT) -> list[AuditRow]:
    """The newest rows matching every given criterion (email and target: case-insensitive substrings)."""
    conditions, params = [], {"limit": max(1, min(int(limit), SEARCH_LIMIT))}
    if email:
        conditions.append("email ILIKE :email")
        params["email"] = "%" + _like_escape(email) + "%"
    if target:
        conditions.append("target ILIKE :target")
        params["target"] = "%" + _like_escape(target) + "%"
    if day_from:
        conditions.append("at >= CAST(:day_from AS date)::timestamp AT TIME ZONE 'Europe/London'")
        params["day_from"] = day_from
    if day_to:
        conditions.append("at < CAST(:day_to AS date)::timestamp AT TIME ZONE 'Europe/London'")
        params["day_to"] = day_to + timedelta(days=1)
    if allowed is not None:
        conditions.append("allowed = :allowed")
        params["allowed"] = allowed
    if exported is not None:
        conditions.append("exported = :exported")
        params["exported"] = exported
    where = ("WHERE " + " AND ".join(conditions)) if conditions else ""
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT {', '.join(FIELDS)} FROM audit_log {where} ORDER BY seq DESC "
                                 "LIMIT :limit"), params).all()
    return [AuditRow(*row) for row in rows]


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
