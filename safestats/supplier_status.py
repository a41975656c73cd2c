"""How each supplier's data stands: its last drop, rows loaded and quarantined, and freshness against its cadence.

The read side of ingest, for the admin data-status pages (``dashapp.admin_status``) and the feed API's drop
outcome (``dashapp.feeds``). Each supplier has an expected cadence (``suppliers.expected_cadence``, e.g. one
month for police.uk); a supplier is *late* when ``now - last loaded > cadence + grace`` (grace:
``SAFESTATS_CADENCE_GRACE_DAYS``, default 7), computed in PostgreSQL so a month is a calendar month. Rows
"loaded" and "quarantined" are given for the last drop and for the supplier's live drops (loaded, not
superseded by a re-issue). Everything here reads; nothing writes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterator

from sqlalchemy import text
from sqlalchemy.engine import Engine

from safestats.location_levels import LOCATION_METHODS

# How many quarantined lines a drop outcome quotes, and how many distinct reasons it counts.
SAMPLE_LINES = 5
TOP_REASONS = 20


@dataclass
class SupplierStatus:
    """One supplier's data status (see the module docstring for "late")."""

    code: str
    name: str
    cadence: str | None                 # PostgreSQL's text for the interval, e.g. "1 mon"
    last_drop_id: int | None
    last_drop_file: str | None
    last_drop_status: str | None        # loaded | rejected | superseded
    last_drop_received_at: datetime | None
    last_drop_rows_loaded: int
    last_drop_rows_quarantined: int
    last_loaded_at: datetime | None     # the newest drop that loaded (rejected ones do not count)
    live_drops: int
    rejected_drops: int
    rows_loaded: int                    # over live drops
    rows_quarantined: int
    due_by: datetime | None             # last loaded + cadence + grace
    late: bool

    @property
    def freshness(self) -> str:
        """late | on time | never loaded | no cadence."""
        if self.cadence is None:
            return "no cadence"
        if self.last_loaded_at is None:
            return "never loaded"
        return "late" if self.late else "on time"

    @property
    def cadence_label(self) -> str:
        if self.cadence is None:
            return "none set"
        return (self.cadence.replace("mons", "months").replace("mon", "month")
                .replace("00:00:00", "").strip() or self.cadence)


def _grace(grace: timedelta | None) -> timedelta:
    if grace is not None:
        return grace
    from safestats.config import get_settings

    return timedelta(days=get_settings().cadence_grace_days)


_STATUS_SQL = """
    SELECT s.code, s.name, s.expected_cadence::text AS cadence,
           last.id AS last_drop_id, last.file_name AS last_drop_file, last.status AS last_drop_status,
           last.received_at AS last_drop_received_at, coalesce(last.rows_loaded, 0) AS last_drop_rows_loaded,
           coalesce(last.rows_quarantined, 0) AS last_drop_rows_quarantined,
           agg.last_loaded_at, coalesce(agg.live_drops, 0) AS live_drops,
           coalesce(agg.rejected_drops, 0) AS rejected_drops, coalesce(agg.rows_loaded, 0) AS rows_loaded,
           coalesce(agg.rows_quarantined, 0) AS rows_quarantined,
           agg.last_loaded_at + s.expected_cadence + :grace AS due_by,
           coalesce(:now > agg.last_loaded_at + s.expected_cadence + :grace, false) AS late
    FROM suppliers s
    LEFT JOIN LATERAL (SELECT * FROM drops d WHERE d.supplier = s.code ORDER BY d.id DESC LIMIT 1) last ON true
    LEFT JOIN LATERAL (
        SELECT max(d.loaded_at) AS last_loaded_at,
               count(*) FILTER (WHERE d.status = 'loaded') AS live_drops,
               count(*) FILTER (WHERE d.status = 'rejected') AS rejected_drops,
               sum(d.rows_loaded) FILTER (WHERE d.status = 'loaded') AS rows_loaded,
               sum(d.rows_quarantined) FILTER (WHERE d.status = 'loaded') AS rows_quarantined
        FROM drops d WHERE d.supplier = s.code) agg ON true
    WHERE :supplier IS NULL OR s.code = :supplier
    ORDER BY s.code"""


def supplier_statuses(engine: Engine, now: datetime | None = None, grace: timedelta | None = None,
                      supplier: str | None = None) -> list[SupplierStatus]:
    """Every supplier's status (or just ``supplier``'s), as of ``now`` (default: the current time)."""
    params = {"now": now or datetime.now(timezone.utc), "grace": _grace(grace), "supplier": supplier}
    with engine.connect() as conn:
        return [SupplierStatus(**row._mapping) for row in conn.execute(text(_STATUS_SQL), params)]


def supplier_status(engine: Engine, supplier: str, now: datetime | None = None,
                    grace: timedelta | None = None) -> SupplierStatus | None:
    found = supplier_statuses(engine, now, grace, supplier)
    return found[0] if found else None


@dataclass
class DropOutcome:
    """One drop as the feed API and the admin page report it."""

    id: int
    supplier: str
    file_name: str
    status: str                        # loaded | rejected | superseded
    received_at: datetime
    loaded_at: datetime | None
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    period_start: object
    period_end: object
    superseded_by: int | None
    error: str | None                  # the rejection reason
    quarantine_reasons: list[dict] = field(default_factory=list)   # [{"reason", "rows"}], most common first
    quarantine_sample: list[dict] = field(default_factory=list)    # [{"line_no", "reason", "raw_line"}]

    def as_json(self) -> dict:
        return {
            "drop_id": self.id, "supplier": self.supplier, "file_name": self.file_name, "status": self.status,
            "received_at": _iso(self.received_at), "loaded_at": _iso(self.loaded_at),
            "rows": {"read": self.rows_read, "loaded": self.rows_loaded, "quarantined": self.rows_quarantined},
            "period": {"start": _iso(self.period_start), "end": _iso(self.period_end)},
            "superseded_by": self.superseded_by,
            "rejection_reason": self.error,
            "quarantine": {"reasons": self.quarantine_reasons, "first_lines": self.quarantine_sample},
        }


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def drop_outcome(engine: Engine, supplier: str, drop_id: int, sample_lines: int = SAMPLE_LINES,
                 top_reasons: int = TOP_REASONS) -> DropOutcome | None:
    """Drop ``drop_id`` of ``supplier`` with its quarantine summary, or None (no such drop for that supplier)."""
    with engine.connect() as conn:
        row = conn.execute(text("""
            SELECT id, supplier, file_name, status, received_at, loaded_at, rows_read, rows_loaded,
                   rows_quarantined, period_start, period_end, superseded_by, error
            FROM drops WHERE id = :id AND supplier = :supplier"""), {"id": drop_id, "supplier": supplier}).one_or_none()
        if row is None:
            return None
        outcome = DropOutcome(**row._mapping)
        if outcome.rows_quarantined:
            outcome.quarantine_reasons = [
                {"reason": r.reason, "rows": r.rows} for r in conn.execute(text("""
                    SELECT reason, count(*) AS rows FROM quarantine WHERE drop_id = :id
                    GROUP BY reason ORDER BY count(*) DESC, reason LIMIT :n"""), {"id": drop_id, "n": top_reasons})]
            outcome.quarantine_sample = [
                {"line_no": r.line_no, "reason": r.reason, "raw_line": r.raw_line.rstrip("\r\n")[:500]}
                for r in conn.execute(text("""
                    SELECT line_no, reason, raw_line FROM quarantine WHERE drop_id = :id
                    ORDER BY line_no LIMIT :n"""), {"id": drop_id, "n": sample_lines})]
    return outcome


def recent_drops(engine: Engine, supplier: str, limit: int = 50) -> list[DropOutcome]:
    """The supplier's newest drops (without quarantine detail), newest first."""
    with engine.connect() as conn:
        rows = conn.execute(text("""
            SELECT id, supplier, file_name, status, received_at, loaded_at, rows_read, rows_loaded,
                   rows_quarantined, period_start, period_end, superseded_by, error
            FROM drops WHERE supplier = :supplier ORDER BY id DESC LIMIT :n"""), {"supplier": supplier, "n": limit})
        return [DropOutcome(**r._mapping) for r in rows]


def quarantine_rows(engine: Engine, supplier: str, drop_id: int) -> Iterator[tuple[int, str, str]]:
    """(line number, reason, raw line) of every quarantined row of the drop, in line order, streamed."""
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=2000).execute(text("""
            SELECT q.line_no, q.reason, q.raw_line FROM quarantine q JOIN drops d ON d.id = q.drop_id
            WHERE q.drop_id = :id AND d.supplier = :supplier ORDER BY q.line_no"""),
            {"id": drop_id, "supplier": supplier})
        for row in result:
            yield row.line_no, row.reason, row.raw_line


@dataclass
class LocationQuality:
    """A supplier's live rows by location method (safestats/location_levels.py), over all and per drop, with
    the mean confidence of each; read from ``drop_location_quality``, written by the loader with each drop."""

    overall: dict[str, int]                                 # method -> rows
    by_drop: dict[int, dict[str, int]]                      # drop id -> method -> rows
    confidence: dict[str, float] = field(default_factory=dict)                  # method -> mean confidence
    drop_confidence: dict[int, dict[str, float]] = field(default_factory=dict)  # drop id -> method -> mean

    @staticmethod
    def shares(counts: dict[str, int]) -> dict[str, float]:
        total = sum(counts.values())
        return {level: n / total for level, n in counts.items()} if total else {}


def location_quality(engine: Engine, supplier: str, drop_ids: list[int] | None = None) -> LocationQuality:
    """Rows per location method for ``supplier``'s live drops (all of them) and for each drop (the live ones,
    or ``drop_ids``), from the per-drop counts the loader stores: no scan of the incidents."""
    overall: dict[str, int] = {}
    weighted: dict[str, float] = {}
    by_drop: dict[int, dict[str, int]] = {}
    drop_confidence: dict[int, dict[str, float]] = {}
    with engine.connect() as conn:
        for row in conn.execute(text("""
                SELECT q.drop_id, q.method, q.rows, q.mean_confidence, d.status = 'loaded' AS live
                FROM drop_location_quality q JOIN drops d ON d.id = q.drop_id
                WHERE d.supplier = :supplier AND (d.status = 'loaded' OR q.drop_id = ANY(:drops))"""),
                {"supplier": supplier, "drops": list(drop_ids or [])}):
            by_drop.setdefault(row.drop_id, {})[row.method] = row.rows
            drop_confidence.setdefault(row.drop_id, {})[row.method] = row.mean_confidence
            if row.live:
                overall[row.method] = overall.get(row.method, 0) + row.rows
                weighted[row.method] = weighted.get(row.method, 0.0) + (row.mean_confidence or 0) * row.rows
    order = {m: k for k, m in enumerate(LOCATION_METHODS)}

    def best_first(counts: dict) -> dict:
        return dict(sorted(counts.items(), key=lambda kv: order.get(kv[0], 99)))

    overall = best_first(overall)
    by_drop = {drop_id: best_first(counts) for drop_id, counts in by_drop.items()}
    confidence = {m: weighted[m] / n for m, n in overall.items() if n}
    return LocationQuality(overall, by_drop, confidence, drop_confidence)


def drop_location_report(engine: Engine, supplier: str | None = None, limit: int = 20) -> list[dict]:
    """The newest loaded drops (of ``supplier``, or all) with their share located by each method, for the CLI."""
    with engine.connect() as conn:
        drops = conn.execute(text("""
            SELECT id, supplier, file_name, status, rows_loaded FROM drops
            WHERE status IN ('loaded', 'superseded') AND (CAST(:supplier AS text) IS NULL OR supplier = :supplier)
              AND EXISTS (SELECT 1 FROM drop_location_quality q WHERE q.drop_id = drops.id)
            ORDER BY id DESC LIMIT :n"""), {"supplier": supplier, "n": limit}).all()
        quality: dict[int, dict[str, tuple[int, float]]] = {}
        for row in conn.execute(text("""SELECT drop_id, method, rows, mean_confidence FROM drop_location_quality
                                        WHERE drop_id = ANY(:ids)"""), {"ids": [d.id for d in drops]}):
            quality.setdefault(row.drop_id, {})[row.method] = (row.rows, row.mean_confidence or 0.0)
    return [{"drop_id": d.id, "supplier": d.supplier, "file_name": d.file_name, "status": d.status,
             "rows": d.rows_loaded, "quality": quality.get(d.id, {})} for d in drops]
