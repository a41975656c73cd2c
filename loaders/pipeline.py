"""The one ingest pipeline every supplier's drops go through.

A supplier format (one short class per file format, see ``loaders/police_uk.py``) says which files it
claims, which columns it expects and how to harmonise one row. The pipeline does everything else, the
same way for every supplier: sha256 the file and skip it if that content was already loaded; detect the
encoding (UTF-8 with or without BOM, cp1252; a mostly-UTF-8 file's undecodable lines are quarantined);
check the header (missing or unexpected columns reject the whole drop, naming them, and change nothing);
parse and validate rows, quarantining bad ones with a reason; assign LSOA / MSOA / borough by spatial join
(loaders/areas.py); then, in one transaction, replace any earlier drop with the same replace key (a
re-issued police.uk month), COPY the rows in, record the quarantine and the drop. The transaction is the
staging area: nothing is visible to anyone until it commits, a killed loader leaves the database exactly as
it was, and running it again completes. (A separate staging table was measured and dropped: once areas are
assigned before the COPY it only added a second copy of every row, about 6 us a row.)
"""
from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar, Iterable

import psycopg2

from db import libpq_dsn

# The harmonised columns every format's harmonise_row returns, in this order. x, y are the supplier's point
# in the format's coordinate_srid (or None); the pipeline adds the projected point and the areas.
HARMONISED_COLUMNS = (
    "line_no", "supplier_record_id", "occurred_at", "time_precision", "category_id", "supplier_category",
    "theme_weapon", "theme_dava", "theme_young_victim", "theme_night_time_economy", "theme_arson",
    "x", "y", "location_precision", "borough_hint", "access_level", "attributes",
)
X_POS, Y_POS, OCCURRED_POS, BOROUGH_HINT_POS = 11, 12, 2, 14
# What the pipeline COPYs into the incidents table: the harmonised row, the drop, the point and its areas.
INCIDENT_COPY_COLUMNS = (
    "supplier", "supplier_record_id", "drop_id", "occurred_at", "time_precision", "category_id",
    "supplier_category", "theme_weapon", "theme_dava", "theme_young_victim", "theme_night_time_economy",
    "theme_arson", "geom", "longitude", "latitude", "location_precision", "lsoa_code", "msoa_code",
    "borough_code", "access_level", "attributes",
)
COPY_CHUNK_ROWS = 2000


_json_string = json.encoder.encode_basestring  # the C encoder json.dumps uses, without its per-call set-up


def json_object(*pairs: tuple[str, str]) -> str:
    """A JSON object of the non-empty string values, built directly: 2.5x faster than json.dumps here."""
    return "{" + ",".join(f'"{key}":{_json_string(value)}' for key, value in pairs if value) + "}"


class DropRejected(Exception):
    """The whole drop is refused (wrong header, undecodable file...); nothing is loaded."""


class Quarantine(Exception):
    """One row is refused; it is kept in the quarantine table with this reason."""


@dataclass(frozen=True)
class CategoryMapping:
    category_id: int
    theme_weapon: bool | None
    theme_dava: bool | None
    theme_young_victim: bool | None
    theme_arson: bool | None


class SupplierFormat:
    """Base class of a supplier's file format. Subclasses declare the class attributes and harmonise rows.

    One instance handles one drop, so it may keep per-drop state (the drop's month, caches).
    """

    supplier: ClassVar[str]                 # suppliers.code
    file_pattern: ClassVar[re.Pattern]      # which file names this format claims
    columns: ClassVar[tuple[str, ...]]      # the header, exactly as the supplier writes it
    coordinate_srid: ClassVar[int] = 4326   # of the x, y that harmonise_row returns

    def __init__(self, file_name: str, mapping: dict[str, CategoryMapping]):
        self.file_name = file_name
        self.mapping = mapping
        self.file_match = self.file_pattern.match(file_name)

    @classmethod
    def claims(cls, file_name: str) -> bool:
        return cls.file_pattern.match(file_name) is not None

    def harmonise_row(self, fields: list[str], line_no: int) -> tuple:
        """Return the row's harmonised values in HARMONISED_COLUMNS order, or raise Quarantine(reason)."""
        raise NotImplementedError

    def replace_key(self) -> str | None:
        """After all rows: the key of what this drop replaces (None: it replaces nothing)."""
        return None


@dataclass
class DropResult:
    path: Path
    supplier: str | None = None
    status: str = "failed"          # loaded | skipped | rejected | failed
    drop_id: int | None = None
    encoding: str | None = None
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    replaced_drop_ids: list[int] = field(default_factory=list)
    message: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("loaded", "skipped")

    def summary_line(self) -> str:
        name = self.path.name
        if self.status == "loaded":
            extra = f", replaced drop {', '.join(map(str, self.replaced_drop_ids))}" if self.replaced_drop_ids else ""
            return (f"{name}: loaded as drop {self.drop_id}: {self.rows_read:,} rows read, {self.rows_loaded:,} "
                    f"loaded, {self.rows_quarantined:,} quarantined{extra} ({self.seconds:.2f} s)")
        return f"{name}: {self.status}: {self.message}"


# -- encodings ----------------------------------------------------------------------------------------------

@dataclass
class DecodedText:
    lines: list[str]                   # with line endings kept, so raw lines can be stored exactly
    encoding: str
    bad_lines: dict[int, str]          # 0-based line index -> why it could not be decoded


def decode_supplier_bytes(data: bytes) -> DecodedText:
    """Decode a supplier file: UTF-8 (BOM or not), else cp1252; per-line quarantine for mixed files."""
    encoding = "utf-8"
    if data.startswith(codecs.BOM_UTF8):
        data, encoding = data[len(codecs.BOM_UTF8):], "utf-8-sig"
    try:
        return DecodedText(data.decode("utf-8").splitlines(keepends=True), encoding, {})
    except UnicodeDecodeError:
        pass
    raw_lines = data.splitlines(keepends=True)
    # If any line holds real multi-byte UTF-8, the file is UTF-8 with some corrupt lines: decoding it all
    # as cp1252 would garble the good lines, so only the bad lines are set aside.
    has_utf8_text = False
    decoded: list[str | None] = []
    for raw in raw_lines:
        try:
            text = raw.decode("utf-8")
            has_utf8_text = has_utf8_text or not raw.isascii()
            decoded.append(text)
        except UnicodeDecodeError:
            decoded.append(None)
    if has_utf8_text:
        bad: dict[int, str] = {}
        lines = []
        for i, (raw, text) in enumerate(zip(raw_lines, decoded)):
            if text is None:
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    bad[i] = (f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}) in a file "
                              "that is otherwise UTF-8")
                text = raw.decode("utf-8", errors="backslashreplace")
            lines.append(text)
        return DecodedText(lines, encoding + " (with undecodable lines)", bad)
    try:
        return DecodedText(data.decode("cp1252").splitlines(keepends=True), "cp1252", {})
    except UnicodeDecodeError as exc:
        raise DropRejected(
            f"the file is neither UTF-8 nor cp1252 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "ask the supplier to re-export it as UTF-8") from None


# -- the pipeline ---------------------------------------------------------------------------------------------

def _pause_for_tests(stage: str) -> None:
    """Lets the kill -9 tests stop the loader at a named stage (SAFESTATS_LOADER_PAUSE_AT=stage)."""
    if os.environ.get("SAFESTATS_LOADER_PAUSE_AT") == stage:
        print(f"PAUSED {stage}", file=sys.stderr, flush=True)
        time.sleep(600)


def supplier_formats() -> list[type[SupplierFormat]]:
    from loaders.registry import SUPPLIER_FORMATS

    return SUPPLIER_FORMATS


def format_for(path: Path) -> type[SupplierFormat]:
    for fmt in supplier_formats():
        if fmt.claims(path.name):
            return fmt
    expected = "; ".join(f"{f.supplier}: {f.file_pattern.pattern}" for f in supplier_formats())
    raise DropRejected(f"no supplier format claims the file name {path.name!r} (expected one of: {expected})")


def read_drop_bytes(path: Path) -> tuple[bytes, str, int]:
    """The file's content (gunzipped if .gz), the sha256 and size of the file as received."""
    received = path.read_bytes()
    digest = hashlib.sha256(received).hexdigest()
    data = gzip.decompress(received) if path.suffix == ".gz" else received
    return data, digest, len(received)


def load_category_mapping(cur, supplier: str) -> dict[str, CategoryMapping]:
    cur.execute("""SELECT supplier_category, category_id, theme_weapon, theme_dava, theme_young_victim, theme_arson
                   FROM supplier_category_map WHERE supplier = %s""", (supplier,))
    return {row[0]: CategoryMapping(*row[1:]) for row in cur.fetchall()}


def check_header(header: list[str], expected: tuple[str, ...]) -> list[int]:
    """Column positions of ``expected`` in ``header``; DropRejected naming missing/unexpected columns."""
    names = [h.strip() for h in header]
    missing = [c for c in expected if c not in names]
    unexpected = [h for h in names if h not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append("missing column(s) " + ", ".join(repr(c) for c in missing))
        if unexpected:
            parts.append("unexpected column(s) " + ", ".join(repr(c) for c in unexpected))
        raise DropRejected("header does not match the expected format: " + "; ".join(parts)
                           + f". Expected: {', '.join(expected)}")
    if len(set(names)) != len(names):
        raise DropRejected("header repeats a column name: " + ", ".join(names))
    return [names.index(c) for c in expected]


@dataclass
class ParsedDrop:
    rows: list[tuple]                              # harmonised rows (HARMONISED_COLUMNS)
    row_ends: list[int]                           # index just past each kept row's last physical line
    quarantined: list[tuple[int, str, str]]       # (line number, raw line, reason)
    rows_read: int


def parse_rows(fmt: SupplierFormat, decoded: DecodedText, progress=None) -> ParsedDrop:
    """Harmonise every data row; set aside quarantined rows with their reasons and raw lines."""
    lines = decoded.lines
    if not lines or not lines[0].strip():
        raise DropRejected("the file is empty (no header line)")
    header = next(csv.reader([lines[0]]))
    positions = check_header(header, fmt.columns)
    reorder = positions != list(range(len(fmt.columns)))
    n_columns = len(header)

    rows: list[tuple] = []
    keep = rows.append
    row_ends: list[int] = []
    keep_end = row_ends.append
    quarantined: list[tuple[int, str, str]] = []
    rows_read = 0
    reader = csv.reader(lines[1:])
    consumed = 0                      # physical lines consumed so far (after the header)
    harmonise = fmt.harmonise_row
    bad_lines = decoded.bad_lines
    tick = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # A malformed record (e.g. an unterminated quote in a truncated last line): quarantine what is left.
            raw = "".join(lines[1 + consumed:])
            quarantined.append((consumed + 2, raw, f"unreadable CSV from here to the end of the file ({exc})"))
            rows_read += 1
            break
        start, consumed = consumed, reader.line_num
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line
        rows_read += 1
        line_no = start + 2          # 1-based, counting the header as line 1
        reason = None
        if bad_lines:
            reason = next((bad_lines[i] for i in range(start + 1, consumed + 1) if i in bad_lines), None)
        if reason is None and len(fields) != n_columns:
            reason = f"expected {n_columns} fields, found {len(fields)} (truncated or malformed row)"
        if reason is None:
            if reorder:
                fields = [fields[p] for p in positions]
            try:
                keep(harmonise(fields, line_no))
            except Quarantine as q:
                reason = str(q)
        if reason is not None:
            quarantined.append((line_no, "".join(lines[1 + start:1 + consumed]), reason))
            continue
        keep_end(1 + consumed)
        if progress is not None:
            tick += 1
            if tick == 5000:
                progress(tick)
                tick = 0
    if progress is not None and tick:
        progress(tick)
    return ParsedDrop(rows, row_ends, quarantined, rows_read)


class LocatedDrop:
    """A parsed drop with every point projected and its areas assigned, ready to stream into COPY."""

    def __init__(self, rows: list[tuple], fmt: SupplierFormat, area_index, tolerance_m: float):
        import numpy as np

        self.rows = rows
        with_point = [r for r in rows if r[X_POS] is not None]
        assigned = area_index.assign(np.fromiter((r[X_POS] for r in with_point), float, len(with_point)),
                                     np.fromiter((r[Y_POS] for r in with_point), float, len(with_point)),
                                     fmt.coordinate_srid, tolerance_m)
        self.lsoa, self.msoa, self.borough = area_index.lsoa_codes, area_index.msoa_codes, area_index.borough_codes
        # Points travel as hex EWKB (SRID 27700), built for the whole drop at once: cheaper to make here and
        # to parse in PostgreSQL than WKT.
        ewkb = np.zeros(len(with_point), dtype=[("order", "u1"), ("type", "<u4"), ("srid", "<u4"),
                                                 ("x", "<f8"), ("y", "<f8")])
        ewkb["order"], ewkb["type"], ewkb["srid"] = 1, 0x20000001, 27700
        ewkb["x"], ewkb["y"] = assigned.easting.round(2), assigned.northing.round(2)
        self.ewkb_hex = ewkb.tobytes().hex()
        self.longitude = assigned.longitude.round(7).tolist()
        self.latitude = assigned.latitude.round(7).tolist()
        self.found = assigned.area_index.tolist()

        # Where each row goes, decided once: (row index, its point's index or -1 for a borough-only row).
        self.placed: list[tuple[int, int]] = []
        self.outside: list[tuple[int, str]] = []   # (row index, reason) of rows with nowhere to go
        i = -1
        for k, row in enumerate(rows):
            if row[X_POS] is None:
                if row[BOROUGH_HINT_POS] is None:
                    self.outside.append((k, "no location: neither a point nor a borough"))
                else:
                    self.placed.append((k, -1))
                continue
            i += 1
            if self.found[i] < 0:
                self.outside.append((k, f"outside the configured area: no LSOA within {tolerance_m:g} m of "
                                        f"the point ({row[X_POS]}, {row[Y_POS]})"))
            else:
                self.placed.append((k, i))
        self.staged_rows = len(self.placed)
        placed_at = [rows[k][OCCURRED_POS] for k, _ in self.placed]
        self.first_at = min(placed_at) if placed_at else None
        self.last_at = max(placed_at) if placed_at else None

    def copy_chunks(self, supplier: str, drop_id: int):
        """COPY text-format lines, a chunk at a time, so formatting overlaps with the server's work."""
        lsoa, msoa, borough, found = self.lsoa, self.msoa, self.borough, self.found
        lon, lat, ewkb_hex = self.longitude, self.latitude, self.ewkb_hex
        tabs = len(INCIDENT_COPY_COLUMNS) - 1
        rows = self.rows
        lines: list[str] = []
        for k, i in self.placed:
            row = rows[k]
            head = (supplier, row[1], drop_id) + row[2:11]
            if i < 0:
                values = head + (None, None, None, row[13], None, None, row[BOROUGH_HINT_POS], row[15], row[16])
            else:
                a = found[i]
                values = head + (ewkb_hex[50 * i:50 * i + 50], lon[i], lat[i], row[13], lsoa[a], msoa[a],
                                 borough[a], row[15], row[16])
            line = "\t".join(["" if v is None else str(v) for v in values])
            # Almost no supplier value holds a tab, newline or backslash; the few that do are escaped.
            if "\\" in line or "\n" in line or "\r" in line or line.count("\t") != tabs:
                line = "\t".join(["" if v is None else _copy_escape(str(v)) for v in values])
            lines.append(line)
            if len(lines) == COPY_CHUNK_ROWS:
                yield "\n".join(lines) + "\n"
                lines = []
        if lines:
            yield "\n".join(lines) + "\n"


def _copy_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


class ChunkReader(io.TextIOBase):
    """A read()-able view of a generator of text chunks, for psycopg2's copy_expert."""

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._pending = ""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> str:
        while size < 0 or len(self._pending) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._pending += chunk
        if size < 0:
            out, self._pending = self._pending, ""
        else:
            out, self._pending = self._pending[:size], self._pending[size:]
        return out


def _record_rejection(conn, supplier: str, path: Path, digest: str, size: int, received_at: datetime,
                      encoding: str | None, message: str) -> int:
    with conn, conn.cursor() as cur:
        cur.execute("""INSERT INTO drops (supplier, file_name, sha256, size_bytes, received_at, status, encoding, error)
                       VALUES (%s, %s, %s, %s, %s, 'rejected', %s, %s) RETURNING id""",
                    (supplier, path.name, digest, size, received_at, encoding, message))
        return cur.fetchone()[0]


def _already_loaded(cur, supplier: str, digest: str) -> tuple[int, str] | None:
    cur.execute("""SELECT id, status FROM drops WHERE supplier = %s AND sha256 = %s
                   AND status IN ('loaded', 'superseded') ORDER BY id LIMIT 1""", (supplier, digest))
    return cur.fetchone()


@dataclass
class PreparedDrop:
    """Everything about a drop that can be worked out without writing to the database."""

    path: Path
    received_at: datetime
    started: float
    supplier: str | None = None
    digest: str = ""
    size: int = 0
    encoding: str | None = None
    skipped: tuple[int, str] | None = None        # (drop id, status) of the same content loaded before
    rejection: str | None = None
    fmt: SupplierFormat | None = None
    parsed: ParsedDrop | None = None
    located: LocatedDrop | None = None
    quarantined: list[tuple[int, str, str]] = field(default_factory=list)


def prepare_drop(read_conn, path: Path, progress: bool = False, area_index=None) -> PreparedDrop:
    """Read, decode, check, parse, harmonise and locate one file. Reads from the database, never writes.

    ``area_index`` may be passed in by a caller loading a batch, so the area set is checked once per batch.
    """
    from tqdm import tqdm

    from loaders.areas import area_index_for
    from safestats.config import get_settings

    prepared = PreparedDrop(path=path, received_at=datetime.now(timezone.utc), started=time.monotonic())
    try:
        fmt_class = format_for(path)
    except DropRejected as exc:
        prepared.rejection = str(exc)
        return prepared
    prepared.supplier = fmt_class.supplier
    data, prepared.digest, prepared.size = read_drop_bytes(path)
    with read_conn.cursor() as cur:
        prepared.skipped = _already_loaded(cur, fmt_class.supplier, prepared.digest)
        mapping = load_category_mapping(cur, fmt_class.supplier) if not prepared.skipped else {}
        if area_index is None and not prepared.skipped:
            area_index = area_index_for(cur, read_conn.dsn)
    read_conn.rollback()
    if prepared.skipped:
        return prepared

    fmt = prepared.fmt = fmt_class(path.name, mapping)
    try:
        decoded = decode_supplier_bytes(data)
        prepared.encoding = decoded.encoding
        _pause_for_tests("parse")
        with tqdm(total=max(len(decoded.lines) - 1, 0), unit="row", leave=False, file=sys.stderr,
                  disable=None if progress else True, desc=path.name[:40]) as bar:
            parsed = prepared.parsed = parse_rows(fmt, decoded, bar.update)
    except DropRejected as exc:
        prepared.rejection = str(exc)
        return prepared

    located = prepared.located = LocatedDrop(parsed.rows, fmt, area_index, get_settings().area_snap_tolerance_m)
    prepared.quarantined = list(parsed.quarantined)
    for k, reason in located.outside:
        line_no = parsed.rows[k][0]
        raw = "".join(decoded.lines[line_no - 1:parsed.row_ends[k]])
        prepared.quarantined.append((line_no, raw, reason))
    return prepared


def load_drop(conn, path: Path, progress: bool = False) -> DropResult:
    """Load one supplier file through the pipeline on ``conn`` (a psycopg2 connection).

    With ``progress``, a row-level progress bar shows on a terminal (tqdm hides it elsewhere).
    """
    _prepare_session(conn)
    return commit_drop(conn, prepare_drop(conn, path, progress))


def _prepare_session(conn) -> None:
    with conn.cursor() as cur:
        # JIT compiling the ingest statements costs more than running them (measured: 430 of 630 ms).
        cur.execute("SET jit = off")
    conn.commit()


def commit_drop(conn, prepared: PreparedDrop) -> DropResult:
    """Write a prepared drop: the rejection, or its rows, quarantine and drop record in one transaction."""
    path = prepared.path
    result = DropResult(path=path, supplier=prepared.supplier, encoding=prepared.encoding)
    if prepared.skipped:
        result.status, result.drop_id = "skipped", prepared.skipped[0]
        result.message = (f"already loaded as drop {prepared.skipped[0]} ({prepared.skipped[1]}); same sha256, "
                          "nothing changed")
        return result
    if prepared.rejection:
        if prepared.supplier:  # a file no format claims has no supplier to record it against
            result.drop_id = _record_rejection(conn, prepared.supplier, path, prepared.digest, prepared.size,
                                               prepared.received_at, prepared.encoding, prepared.rejection)
        result.status, result.message = "rejected", prepared.rejection
        result.seconds = time.monotonic() - prepared.started
        return result

    fmt, parsed, located, quarantined = prepared.fmt, prepared.parsed, prepared.located, prepared.quarantined
    digest = prepared.digest
    if located.first_at is not None:
        # Partitions are made in their own short transaction: creating one locks the parent table, and an empty
        # partition left behind by a killed load is harmless.
        with conn, conn.cursor() as cur:
            cur.execute("SELECT safestats_ensure_incident_partitions(%s, %s)", (located.first_at, located.last_at))
    _pause_for_tests("partitions")

    replace_key = fmt.replace_key()
    with conn, conn.cursor() as cur:
        # Serialise loads of the same content and of the same replace key (two schedulers, two shells).
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('safestats-drop-sha:' || %s))", (digest,))
        if replace_key:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('safestats-drop-key:' || %s || ':' || %s))",
                        (fmt.supplier, replace_key))
        previous = _already_loaded(cur, fmt.supplier, digest)
        if previous:
            result.status, result.drop_id = "skipped", previous[0]
            result.message = f"already loaded as drop {previous[0]} by a concurrent loader; nothing changed"
            return result
        cur.execute("""INSERT INTO drops (supplier, file_name, sha256, size_bytes, received_at, status, encoding)
                       VALUES (%s, %s, %s, %s, %s, 'loaded', %s) RETURNING id""",
                    (fmt.supplier, path.name, digest, prepared.size, prepared.received_at, prepared.encoding))
        drop_id = cur.fetchone()[0]
        _pause_for_tests("drop_row")

        replaced: list[int] = []
        if replace_key:
            cur.execute("""SELECT id, period_start, period_end FROM drops
                           WHERE supplier = %s AND replace_key = %s AND status = 'loaded' FOR UPDATE""",
                        (fmt.supplier, replace_key))
            for old_id, old_start, old_end in cur.fetchall():
                replaced.append(old_id)
                # Found through the time index by the old drop's period (there is no drop_id index).
                cur.execute("""DELETE FROM incidents WHERE drop_id = %s
                               AND occurred_at >= %s::date - 1 AND occurred_at < %s::date + 2""",
                            (old_id, old_start or "-infinity", old_end or "infinity"))
                cur.execute("UPDATE drops SET status = 'superseded', superseded_by = %s WHERE id = %s",
                            (drop_id, old_id))
        _pause_for_tests("replaced")

        # Text format with empty meaning NULL: every empty supplier value is stored as NULL anyway.
        cur.copy_expert(f"COPY incidents ({', '.join(INCIDENT_COPY_COLUMNS)}) FROM STDIN WITH (NULL '')",
                        ChunkReader(located.copy_chunks(fmt.supplier, drop_id)), size=65536)
        rows_loaded = cur.rowcount
        _pause_for_tests("inserted")

        if quarantined:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            for line_no, raw, reason in sorted(quarantined):
                writer.writerow((drop_id, line_no, raw.replace("\x00", "\\x00"), reason))
            buffer.seek(0)
            cur.copy_expert("COPY quarantine (drop_id, line_no, raw_line, reason) FROM STDIN WITH (FORMAT csv)",
                            buffer)
        cur.execute("""UPDATE drops SET replace_key = %s, loaded_at = clock_timestamp(), rows_read = %s,
                              rows_loaded = %s, rows_quarantined = %s,
                              period_start = (%s::timestamptz AT TIME ZONE 'Europe/London')::date,
                              period_end = (%s::timestamptz AT TIME ZONE 'Europe/London')::date
                       WHERE id = %s""",
                    (replace_key, parsed.rows_read, rows_loaded, len(quarantined), located.first_at,
                     located.last_at, drop_id))
        # Checked before the commit, so a drop whose rows do not add up rolls back instead of landing.
        if rows_loaded + len(quarantined) != parsed.rows_read:
            raise AssertionError(f"row accounting broke for {path}: {rows_loaded} + {len(quarantined)} != "
                                 f"{parsed.rows_read}")
        _pause_for_tests("before_commit")
    # Leaving the `with conn` block committed the transaction: everything above lands together or not at all.
    result.status, result.drop_id = "loaded", drop_id
    result.rows_read, result.rows_loaded, result.rows_quarantined = parsed.rows_read, rows_loaded, len(quarantined)
    result.replaced_drop_ids = replaced
    result.seconds = time.monotonic() - prepared.started
    return result


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files as given; folders expanded to the files inside them that some supplier format claims."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and any(
                fmt.claims(f.name) for fmt in supplier_formats())))
        else:
            files.append(p)
    return files


def load_paths(url: str, paths: Iterable[Path], progress: bool = True,
               refresh_rollups: bool = True) -> list[DropResult]:
    """Load files (or folders of files) one drop at a time; print a line per drop and a summary line.

    When anything was loaded, the dashboard's rollups are refreshed afterwards (once for the whole batch,
    concurrently, so analysts keep querying); ``refresh_rollups=False`` leaves that to the caller.

    While one drop is written, the next is read and parsed in a worker thread on its own read-only
    connection: psycopg2 releases the GIL while PostgreSQL works through a COPY, so the two overlap.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from loaders.areas import area_index_for

    files = expand_paths(paths)
    started = time.monotonic()
    results: list[DropResult] = []
    conn = psycopg2.connect(libpq_dsn(url))
    read_conn = psycopg2.connect(libpq_dsn(url))
    read_conn.set_session(readonly=True)
    try:
        _prepare_session(conn)
        with read_conn.cursor() as cur:
            area_index = area_index_for(cur, read_conn.dsn)
        read_conn.rollback()

        def prepare(path: Path):
            if not path.exists():
                return DropResult(path=path, status="failed", message="no such file")
            return prepare_drop(read_conn, path, progress, area_index)

        bar = tqdm(total=len(files), unit="file", disable=None if progress else True, file=sys.stderr,
                   dynamic_ncols=True)
        with ThreadPoolExecutor(max_workers=1) as pool:
            upcoming = pool.submit(prepare, files[0]) if files else None
            for n, path in enumerate(files):
                bar.set_description(path.name[:40])
                try:
                    prepared = upcoming.result()
                except Exception as exc:
                    read_conn.rollback()
                    prepared = DropResult(path=path, status="failed", message=f"{type(exc).__name__}: {exc}")
                upcoming = pool.submit(prepare, files[n + 1]) if n + 1 < len(files) else None
                if isinstance(prepared, DropResult):
                    result = prepared
                else:
                    try:
                        result = commit_drop(conn, prepared)
                    except Exception as exc:  # report and go on with the next file; the transaction rolled back
                        conn.rollback()
                        result = DropResult(path=path, status="failed", message=f"{type(exc).__name__}: {exc}")
                results.append(result)
                bar.update(1)
                if progress:
                    tqdm.write(result.summary_line(), file=sys.stderr)
        bar.close()
    finally:
        conn.close()
        read_conn.close()
    elapsed = time.monotonic() - started
    loaded = sum(r.rows_loaded for r in results)
    counts = {s: sum(1 for r in results if r.status == s) for s in ("loaded", "skipped", "rejected", "failed")}
    rate = f" ({loaded / elapsed:,.0f} rows/s)" if elapsed > 0 and loaded else ""
    print(f"{len(files)} file(s): {counts['loaded']} loaded, {counts['skipped']} skipped (already loaded), "
          f"{counts['rejected']} rejected, {counts['failed']} failed; {loaded:,} rows loaded, "
          f"{sum(r.rows_quarantined for r in results):,} quarantined in {elapsed:.2f} s{rate}.")
    for r in results:
        if r.status in ("rejected", "failed"):
            print(f"  {r.summary_line()}")
    if refresh_rollups and counts["loaded"]:
        from safestats.rollups import refresh_rollups as refresh

        refresh(url, trigger=f"load of {counts['loaded']} drop(s)", log=print if progress else None)
    return results
