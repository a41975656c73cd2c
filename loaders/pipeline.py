"""The one ingest pipeline every supplier's drops go through.

A supplier format (one short class per file format, see ``loaders/police_uk.py``) says which files it
claims, which columns it expects and how to harmonise one row, and may also harmonise whole columns at once
(``harmonise_columns``: the fast path, with the row-wise method as its reference and fallback). The
pipeline does everything else, the same way for every supplier: sha256 the file and skip it if that content was already loaded; detect the
encoding (UTF-8 with or without BOM, cp1252; a mostly-UTF-8 file's undecodable lines are quarantined);
check the header (missing or unexpected columns reject the whole drop, naming them, and change nothing);
parse and validate rows, quarantining bad ones with a reason; assign LSOA / MSOA / borough by spatial join
(loaders/areas.py); then, in one transaction, replace any earlier drop with the same replace key (a
re-issued police.uk month), COPY the rows in, record the quarantine and the drop. The transaction is the
staging area: nothing is visible to anyone until it commits, a killed loader leaves the database exactly as
it was, and running it again completes. (A separate staging table was measured and dropped: once areas are
assigned before the COPY it only added a second copy of every row, about 6 us a row.) Plain files are read
column-wise (pyarrow, loaders/columnar.py) and written with a binary COPY built from arrays; anything the
column path cannot reproduce exactly goes through the row path, line by line or, for the rare file with
quoted line breaks or odd line separators, whole. Incidents are partitioned by year and then by month
(db/sql/incident_partitions_v3.sql): a large drop that is the first to reach its month is COPYed into a fresh
table without indexes, attached as the month's partition in the same transaction (its indexes built in bulk),
instead of paying for every index entry row by row. bench/README.md has the measurements.
"""
from __future__ import annotations

import codecs
import csv
import functools
import gzip
import hashlib
import io
import json
import os
import queue
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, ClassVar, Iterable
from zoneinfo import ZoneInfo

import numpy as np
import psycopg2
import pyarrow as pa
import pyarrow.compute as pc

from db import libpq_dsn
from loaders.columnar import BinaryCopyRows, binary_copy, json_text, scan_csv, timestamps_utc
from loaders.staging import STAGING_CONNECTIONS, MonthStager

# The harmonised columns every format's harmonise_row returns, in this order (occurred_at: ISO 8601 text
# with an offset, or an aware datetime). x, y are the supplier's point in the format's coordinate_srid (or
# None); the pipeline adds the projected point and the areas.
HARMONISED_COLUMNS = (
    "line_no", "supplier_record_id", "occurred_at", "time_precision", "category_id", "supplier_category",
    "theme_weapon", "theme_dava", "theme_young_victim", "theme_night_time_economy", "theme_arson",
    "x", "y", "location_precision", "borough_hint", "access_level", "attributes",
)
# What the pipeline COPYs into the incidents table: the drop (first: filled in last, see DROP_ID_OFFSET), the
# harmonised row, the point and its areas.
INCIDENT_COPY_COLUMNS = (
    "drop_id", "supplier", "supplier_record_id", "occurred_at", "time_precision", "category_id",
    "supplier_category", "theme_weapon", "theme_dava", "theme_young_victim", "theme_night_time_economy",
    "theme_arson", "geom", "longitude", "latitude", "location_precision", "location_confidence", "lsoa_code",
    "msoa_code", "borough_code", "access_level", "attributes",
)
LONDON = ZoneInfo("Europe/London")
# The arrow type of each harmonised column (occurred_at: an instant; the row path's ISO text is converted).
HARMONISED_TYPES = {
    "line_no": pa.int64(), "supplier_record_id": pa.string(), "occurred_at": pa.timestamp("us", tz="UTC"),
    "time_precision": pa.string(), "category_id": pa.int16(), "supplier_category": pa.string(),
    "theme_weapon": pa.bool_(), "theme_dava": pa.bool_(), "theme_young_victim": pa.bool_(),
    "theme_night_time_economy": pa.bool_(), "theme_arson": pa.bool_(), "x": pa.float64(), "y": pa.float64(),
    "location_precision": pa.string(), "borough_hint": pa.string(), "access_level": pa.int16(),
    "attributes": pa.string(),
}


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


@dataclass
class HarmonisedColumns:
    """Rows harmonised column-wise by SupplierFormat.harmonise_columns.

    ``values`` maps every HARMONISED_COLUMNS name but line_no to an arrow array with one value per input row
    (types: HARMONISED_TYPES) or to one Python value shared by every row (occurred_at: an aware datetime).
    ``row_wise`` (bool, one per input row) marks the rows to send through harmonise_row instead; their
    entries in ``values`` are ignored.
    """

    values: dict[str, object]
    row_wise: np.ndarray


class SupplierFormat:
    """Base class of a supplier's file format. Subclasses declare the class attributes and harmonise rows.

    One instance handles one drop, so it may keep per-drop state (the drop's month, caches).
    """

    supplier: ClassVar[str]                 # suppliers.code
    file_pattern: ClassVar[re.Pattern]      # which file names this format claims
    columns: ClassVar[tuple[str, ...]]      # the header, exactly as the supplier writes it
    coordinate_srid: ClassVar[int] = 4326   # of the x, y that harmonise_row returns
    uses_locator: ClassVar[bool] = False    # locates rows through the gazetteer (see location_requests)

    def __init__(self, file_name: str, mapping: dict[str, CategoryMapping]):
        self.file_name = file_name
        self.mapping = mapping
        self.file_match = self.file_pattern.match(file_name)
        # Rows the format cannot place itself (line number -> loaders.locating.LocationRequest), filled by
        # harmonise_row as its last step; the pipeline resolves them (postcode, gazetteer, borough) before
        # locating the drop in areas. Formats that set uses_locator = True are loaded after police.uk
        # drops in a batch, once the gazetteer has been refreshed from them.
        self.location_requests: dict = {}

    @classmethod
    def claims(cls, file_name: str) -> bool:
        return cls.file_pattern.match(file_name) is not None

    def harmonise_row(self, fields: list[str], line_no: int) -> tuple:
        """Return the row's harmonised values in HARMONISED_COLUMNS order, or raise Quarantine(reason)."""
        raise NotImplementedError

    def harmonise_columns(self, columns: dict[str, pa.Array]) -> HarmonisedColumns | None:
        """Optional: harmonise many rows at once, as arrays (the fast path; see HarmonisedColumns).

        ``columns`` maps each name in ``columns`` to a string array (the file's fields, in file order). Rows
        the vector checks cannot vouch for are marked ``row_wise`` and handed to harmonise_row, which stays
        the one definition of the format: it gives those rows' quarantine reasons or values. Return None (the
        default) to harmonise every row with harmonise_row. Per-drop state that harmonise_row keeps (for
        replace_key) must be kept here too, for the rows not marked.
        """
        return None

    def replace_key(self) -> str | None:
        """After all rows: the key of what this drop replaces (None: it replaces nothing)."""
        return None

    def as_csv(self, data: bytes) -> bytes:
        """Optional: the file's bytes as CSV bytes with ``columns`` as header, for the rest of the pipeline.

        A format whose files are not CSV (ISTV XML submissions) converts them here, and raises DropRejected
        for a file that breaks its schema; everything after (encoding, header, rows, quarantine) is the
        same as for CSV files. The default returns the bytes unchanged.
        """
        return data

    def apply_update(self, cur, drop_id: int, columns: dict[str, pa.Array], replaced_drop_ids: list[int]) -> int:
        """Optional, for an update drop: rows that change records already loaded instead of adding incidents.

        Formats that define it (police.uk outcomes) get the drop's harmonised rows (``columns``, one array
        per HARMONISED_COLUMNS name, rows already quarantined left out) inside the drop's open transaction,
        after the drops it replaces are marked superseded, and write them wherever they belong. Return how
        many rows matched no loaded record: they are counted in ``drops.rows_unmatched``, not quarantined.
        Formats that do not define it add their rows to ``incidents`` (the COPY).
        """
        raise NotImplementedError


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
    rows_unmatched: int = 0         # update drops: rows whose record is not loaded (not errors)
    replaced_drop_ids: list[int] = field(default_factory=list)
    location_quality: dict[str, tuple[int, float]] = field(default_factory=dict)  # method -> (rows, mean confidence)
    message: str = ""
    seconds: float = 0.0            # from starting to read the file to the commit
    write_seconds: float = 0.0      # the writing alone: the drop's transaction and its partitions

    @property
    def ok(self) -> bool:
        return self.status in ("loaded", "skipped")

    def summary_line(self) -> str:
        name = self.path.name
        if self.status == "loaded":
            extra = f", replaced drop {', '.join(map(str, self.replaced_drop_ids))}" if self.replaced_drop_ids else ""
            unmatched = f", {self.rows_unmatched:,} unmatched" if self.rows_unmatched else ""
            located = f"; located: {quality_text(self.location_quality)}" if self.location_quality else ""
            return (f"{name}: loaded as drop {self.drop_id}: {self.rows_read:,} rows read, {self.rows_loaded:,} "
                    f"loaded, {self.rows_quarantined:,} quarantined{unmatched}{extra}{located} "
                    f"({self.seconds:.2f} s)")
        return f"{name}: {self.status}: {self.message}"


def quality_text(quality: dict[str, tuple[int, float]]) -> str:
    """"exact 80.0%, postcode 12.0% (conf. 88), borough 8.0% (conf. 100)": the share of rows per location method."""
    from safestats.location_levels import LOCATION_METHODS

    total = sum(rows for rows, _ in quality.values())
    parts = []
    for method in LOCATION_METHODS:
        if method in quality and total:
            rows, confidence = quality[method]
            conf = f" (conf. {confidence:.0f})" if method != "exact" else ""
            parts.append(f"{method} {rows / total:.1%}{conf}")
    return ", ".join(parts)


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
    """A drop's harmonised rows, column-wise, whichever path produced them."""

    n_rows: int
    columns: dict[str, object]                    # HARMONISED_COLUMNS name -> arrow array, or one value for all rows
    line_ends: np.ndarray                         # per row: 0-based index just past its last physical line
    quarantined: list[tuple[int, str, str]]       # (line number, raw line, reason)
    rows_read: int
    raw_text: Callable[[int, int], str]           # (first line, end line), 0-based -> the raw text of those lines


def _rows_to_columns(rows: list[tuple]) -> dict[str, pa.Array]:
    """Row-wise harmonised tuples as HARMONISED_COLUMNS arrays (occurred_at: ISO text or datetimes)."""
    columns = {}
    for pos, name in enumerate(HARMONISED_COLUMNS):
        values = [row[pos] for row in rows]
        if name == "occurred_at":
            columns[name] = timestamps_utc(values)
        else:
            columns[name] = pa.array(values, HARMONISED_TYPES[name])
    return columns


class _RecordSink:
    """What both parse paths do with one CSV record: count it, check its width, harmonise or quarantine it."""

    def __init__(self, fmt: SupplierFormat, n_columns: int, positions: list[int], bad_lines: dict[int, str]):
        self.harmonise = fmt.harmonise_row
        self.n_columns = n_columns
        self.positions = positions if positions != list(range(n_columns)) else None
        self.bad_lines = bad_lines
        self.rows: list[tuple] = []
        self.row_ends: list[int] = []
        self.quarantined: list[tuple[int, str, str]] = []

    def take(self, fields: list[str], first: int, end: int, raw_text: Callable[[int, int], str],
             ordered: bool = False) -> None:
        """A record on physical lines first .. end-1 (0-based; line first + 1 in the file's numbering)."""
        line_no = first + 1
        reason = None
        if self.bad_lines:
            reason = next((self.bad_lines[i] for i in range(first, end) if i in self.bad_lines), None)
        if reason is None and len(fields) != self.n_columns:
            reason = f"expected {self.n_columns} fields, found {len(fields)} (truncated or malformed row)"
        if reason is None:
            if self.positions is not None and not ordered:
                fields = [fields[p] for p in self.positions]
            try:
                self.rows.append(self.harmonise(fields, line_no))
                self.row_ends.append(end)
                return
            except Quarantine as q:
                reason = str(q)
        self.quarantined.append((line_no, raw_text(first, end), reason))


def _read_header(first_line: str, fmt: SupplierFormat) -> tuple[int, list[int]]:
    if not first_line.strip():
        raise DropRejected("the file is empty (no header line)")
    header = next(csv.reader([first_line]))
    return len(header), check_header(header, fmt.columns)


def parse_rows(fmt: SupplierFormat, decoded: DecodedText, progress=None) -> ParsedDrop:
    """The row path: harmonise every record with fmt.harmonise_row; quarantine bad ones with reason and raw lines.

    It reads any file the csv module can (quoted line breaks, stray bytes, truncated quotes) and defines the
    result the column path must reproduce.
    """
    lines = decoded.lines
    if not lines:
        raise DropRejected("the file is empty (no header line)")
    n_columns, positions = _read_header(lines[0], fmt)

    def raw_text(first: int, end: int) -> str:
        return "".join(lines[first:end])

    sink = _RecordSink(fmt, n_columns, positions, decoded.bad_lines)
    rows_read = 0
    reader = csv.reader(lines[1:])
    consumed = 0                      # physical lines consumed so far (after the header)
    tick = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # A malformed record (e.g. an unterminated quote in a truncated last line): quarantine what is left.
            sink.quarantined.append((consumed + 2, raw_text(1 + consumed, len(lines)),
                                     f"unreadable CSV from here to the end of the file ({exc})"))
            rows_read += 1
            break
        start, consumed = consumed, reader.line_num
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line
        rows_read += 1
        sink.take(fields, 1 + start, 1 + consumed, raw_text)
        if progress is not None:
            tick += 1
            if tick == 5000:
                progress(tick)
                tick = 0
    if progress is not None and tick:
        progress(tick)
    return ParsedDrop(len(sink.rows), _rows_to_columns(sink.rows), np.array(sink.row_ends, dtype=np.int64),
                      sink.quarantined, rows_read, raw_text)


def utf8_for_column_path(data: bytes) -> tuple[bytes, str] | None:
    """The file as UTF-8 bytes without BOM, and its encoding, when it decodes whole; None otherwise.

    Same rules as decode_supplier_bytes: UTF-8 (BOM or not), else cp1252. Files with undecodable lines (or
    none of the two) are the row path's: it quarantines those lines or rejects the file.
    """
    encoding = "utf-8"
    if data.startswith(codecs.BOM_UTF8):
        data, encoding = data[len(codecs.BOM_UTF8):], "utf-8-sig"
    if data.isascii():
        return data, encoding       # (ASCII is UTF-8; a check a tenth the cost of decoding it)
    try:
        data.decode("utf-8")
        return data, encoding
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        return None
    # A file with a valid multi-byte UTF-8 line is UTF-8 with corrupt lines (decode_supplier_bytes' rule).
    if any(not raw.isascii() and _is_utf8(raw) for raw in data.splitlines()):
        return None
    return text.encode("utf-8"), "cp1252"


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def parse_columns(fmt: SupplierFormat, buf: bytes, progress=None) -> ParsedDrop | None:
    """The column path: pyarrow reads the plain lines, fmt.harmonise_columns harmonises them as arrays.

    Returns None when the file is not plain enough for the result to be exactly the row path's (see
    loaders/columnar.scan_csv); the caller then uses parse_rows. Rows the format's vector checks cannot vouch
    for, and the few lines pyarrow does not read, go through the row path's code one at a time, so every
    quarantine reason and raw line is the row path's own.
    """
    first_end = buf.find(b"\n")
    n_columns, positions = _read_header(buf[:first_end + 1 if first_end >= 0 else len(buf)].decode("utf-8"), fmt)
    scan = scan_csv(buf, n_columns)
    if scan is None:
        return None

    def raw_text(first: int, end: int) -> str:
        return scan.line_text(first, end)

    sink = _RecordSink(fmt, n_columns, positions, {})
    for k, fields in scan.other_lines:
        sink.take(fields, k, k + 1, raw_text)

    table = scan.table
    columns = {name: table.column(p).combine_chunks() for name, p in zip(fmt.columns, positions)}
    harmonised = fmt.harmonise_columns(columns) if table.num_rows else None
    if harmonised is None:
        harmonised = HarmonisedColumns({}, np.ones(table.num_rows, dtype=bool))
    row_wise = np.flatnonzero(harmonised.row_wise)
    if len(row_wise):
        picked = {name: columns[name].take(pa.array(row_wise)).to_pylist() for name in fmt.columns}
        for j, i in enumerate(row_wise.tolist()):
            k = int(scan.table_lines[i])
            sink.take([picked[name][j] for name in fmt.columns], k, k + 1, raw_text, ordered=True)

    kept = ~harmonised.row_wise
    n_kept = int(kept.sum())
    values = {}
    for name in HARMONISED_COLUMNS[1:]:
        v = harmonised.values.get(name) if n_kept else None
        if isinstance(v, (pa.Array, pa.ChunkedArray)):
            v = v.filter(pa.array(kept)) if n_kept < table.num_rows else v
            v = v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v
        values[name] = v
    line_index = scan.table_lines[kept]
    values["line_no"] = pa.array(line_index + 1)
    line_ends = line_index + 1
    if sink.rows:
        # Rows the row-wise code kept after all: appended, then everything put back in file order.
        extra = _rows_to_columns(sink.rows)
        merged = {}
        for name in HARMONISED_COLUMNS:
            v = values[name]
            if not isinstance(v, pa.Array):
                v = pa.array([v] * n_kept, HARMONISED_TYPES[name]) if n_kept else pa.array([], HARMONISED_TYPES[name])
            merged[name] = pa.concat_arrays([json_text(v).cast(HARMONISED_TYPES[name]), extra[name]])
        order = pc.sort_indices(merged["line_no"])
        values = {name: v.take(order) for name, v in merged.items()}
        line_ends = np.concatenate([line_ends, np.array(sink.row_ends, dtype=np.int64)])[order.to_numpy()]
        n_kept += len(sink.rows)
    if progress is not None:
        progress(scan.rows_read)
    return ParsedDrop(n_kept, values, line_ends, sorted(sink.quarantined), scan.rows_read, raw_text)


# A large file is parsed in parts, one thread each: pyarrow's kernels and numpy's passes release the GIL, so
# on two cores a 300,000-row police.uk month parsed in 0.29-0.37 s instead of 0.49-0.54 s (0.48 instead of
# 1.29 s in a new process; bench/README.md). Below PARSE_PART_MIN_BYTES a part's threads cost more than they save.
PARSE_PARTS = max(1, min(4, os.cpu_count() or 1))
PARSE_PART_MIN_BYTES = 4 << 20


def parse_columns_in_parts(fmt: SupplierFormat, buf: bytes, progress=None, parts: int | None = None,
                           min_part_bytes: int | None = None) -> ParsedDrop | None:
    """parse_columns, with the file cut at line ends into up to ``parts`` parts parsed side by side.

    Each part is the header line plus a run of whole lines, so it is a file of its own, and the result is
    exactly the whole file's: the parts' rows, quarantine and line numbers put back in file order. Every
    reason parse_columns has to decline a file is a property of single lines (or of bytes anywhere), so the
    parts decline exactly when the whole would; then this returns None too. The parts share ``fmt``, each on
    its own thread, so a format with a column path must judge each row on its own (police.uk's does; a rule
    across rows, such as LFB's first line of an incident number, would need the whole file).
    """
    parts = PARSE_PARTS if parts is None else parts
    min_part_bytes = PARSE_PART_MIN_BYTES if min_part_bytes is None else min_part_bytes
    header_end = buf.find(b"\n") + 1
    parts = max(1, min(parts, (len(buf) - header_end) // max(1, min_part_bytes)))
    if parts == 1 or header_end == 0:
        return parse_columns(fmt, buf, progress)
    cuts = [header_end]
    for k in range(1, parts):
        cut = buf.find(b"\n", header_end + (len(buf) - header_end) * k // parts) + 1
        if cut > cuts[-1]:
            cuts.append(cut)
    cuts.append(len(buf))
    spans = [(start, end) for start, end in zip(cuts, cuts[1:]) if end > start]
    pieces = [buf[:end] if start == header_end else buf[:header_end] + buf[start:end] for start, end in spans]
    # A part's line i (its header is line 0) is the file's line i + shift.
    shifts = [buf.count(b"\n", 0, start) - 1 for start, _ in spans]
    with ThreadPoolExecutor(max_workers=len(pieces), thread_name_prefix="parse-part") as pool:
        parsed = list(pool.map(lambda piece: parse_columns(fmt, piece, progress), pieces))
    if any(p is None for p in parsed):
        return None
    return _concatenated(parsed, shifts)


def _concatenated(parts: list[ParsedDrop], shifts: list[int]) -> ParsedDrop:
    """One drop of parts parsed on their own, part k's line numbers moved on by shifts[k]."""
    columns: dict[str, object] = {}
    for name in HARMONISED_COLUMNS:
        values = [p.columns[name] for p in parts]
        if name == "line_no":
            values = [pc.add(v, pa.scalar(shift, v.type)) for v, shift in zip(values, shifts)]
        elif not any(isinstance(v, (pa.Array, pa.ChunkedArray)) for v in values) and all(
                type(v) is type(values[0]) and v == values[0] for v in values):
            columns[name] = values[0]       # one value for every row of every part
            continue
        arrays = [v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v if isinstance(v, pa.Array)
                  else pa.array([v] * p.n_rows, HARMONISED_TYPES[name]) for v, p in zip(values, parts)]
        if any(a.type != arrays[0].type for a in arrays):
            arrays = [json_text(a).cast(HARMONISED_TYPES[name]) for a in arrays]
        columns[name] = pa.concat_arrays(arrays)
    starts = [shift + 1 for shift in shifts]    # each part's first data line, in the file's numbering

    def raw_text(first: int, end: int) -> str:
        k = int(np.searchsorted(starts, first, side="right")) - 1
        return parts[k].raw_text(first - shifts[k], end - shifts[k])

    return ParsedDrop(
        n_rows=sum(p.n_rows for p in parts), columns=columns,
        line_ends=np.concatenate([p.line_ends + shift for p, shift in zip(parts, shifts)]),
        quarantined=[(line_no + shift, raw, reason) for p, shift in zip(parts, shifts)
                     for line_no, raw, reason in p.quarantined],
        rows_read=sum(p.rows_read for p in parts), raw_text=raw_text)


def _z_order(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The Morton (Z-order) key of non-negative grid squares: nearby squares get nearby keys."""
    def spread(v: np.ndarray) -> np.ndarray:  # the low 16 bits of v to the even bits
        v = v.astype(np.uint64) & 0xFFFF
        v = (v | (v << 8)) & 0x00FF00FF
        v = (v | (v << 4)) & 0x0F0F0F0F
        v = (v | (v << 2)) & 0x33333333
        return (v | (v << 1)) & 0x55555555
    return spread(x) | (spread(y) << np.uint64(1))


class LocatedDrop:
    """A parsed drop with every point projected and its areas assigned, encoded for a binary COPY."""

    def __init__(self, parsed: ParsedDrop, fmt: SupplierFormat, area_index, tolerance_m: float):
        columns, n = parsed.columns, parsed.n_rows

        def array(name: str) -> pa.Array:
            v = columns[name]
            return v if isinstance(v, pa.Array) else pa.array([v] * n, HARMONISED_TYPES[name])

        x_col, y_col = array("x"), array("y")
        has_point = x_col.is_valid().to_numpy(zero_copy_only=False) if x_col.null_count else np.ones(n, dtype=bool)
        x = x_col.fill_null(0.0).to_numpy(zero_copy_only=False)[has_point]
        y = y_col.fill_null(0.0).to_numpy(zero_copy_only=False)[has_point]
        assigned = area_index.assign(x, y, fmt.coordinate_srid, tolerance_m)

        # Where each row goes: a point with an LSOA, a borough-only row (no point but a borough), or quarantine.
        point_of_row = np.full(n, -1, dtype=np.int64)
        point_of_row[has_point] = np.arange(len(x))
        area_of_row = np.full(n, -1, dtype=np.int64)
        area_of_row[has_point] = assigned.area_index
        hint = columns["borough_hint"]
        hint_valid = (array("borough_hint").is_valid().to_numpy(zero_copy_only=False) if hint is not None
                      else np.zeros(n, dtype=bool))
        # A row the format locates to nothing on purpose (location_precision 'none': a stop and search with
        # no coordinates, an ambulance call with neither point nor borough) is kept, with no areas.
        precision = columns["location_precision"]
        if isinstance(precision, pa.Array):
            located_to_nothing = pc.equal(precision, "none").fill_null(False).to_numpy(zero_copy_only=False)
        else:
            located_to_nothing = np.full(n, precision == "none")
        placed = (has_point & (area_of_row >= 0)) | (~has_point & (hint_valid | located_to_nothing))
        self.placed = placed
        self.outside: list[tuple[int, str]] = []     # (row index, reason) of rows with nowhere to go
        for k in np.flatnonzero(~placed).tolist():
            if not has_point[k]:
                self.outside.append((k, "no location: neither a point nor a borough"))
            else:
                self.outside.append((k, f"outside the configured area: no LSOA within {tolerance_m:g} m of "
                                        f"the point ({x_col[k].as_py()}, {y_col[k].as_py()})"))
        self.staged_rows = int(placed.sum())
        all_placed = self.staged_rows == n
        take = None if all_placed else pa.array(np.flatnonzero(placed))

        def placed_values(name: str):
            v = columns.get(name)
            if isinstance(v, pa.Array) and take is not None:
                return v.take(take)
            return v

        occurred = placed_values("occurred_at")
        if self.staged_rows == 0:
            self.first_at = self.last_at = None
        elif isinstance(occurred, pa.Array):
            bounds = pc.min_max(occurred)
            self.first_at, self.last_at = bounds["min"].as_py(), bounds["max"].as_py()
        else:
            self.first_at = self.last_at = occurred

        # The point columns: EWKB (SRID 27700) for geom, WGS84 for display; NULL for borough-only rows.
        point_k = point_of_row[placed]
        with_point = point_k >= 0
        ewkb = np.zeros(self.staged_rows, dtype=[("order", "u1"), ("type", "<u4"), ("srid", "<u4"),
                                                  ("x", "<f8"), ("y", "<f8")])
        ewkb["order"], ewkb["type"], ewkb["srid"] = 1, 0x20000001, 27700
        safe_k = np.where(with_point, point_k, 0)
        if len(x):
            ewkb["x"] = assigned.easting.round(2)[safe_k]
            ewkb["y"] = assigned.northing.round(2)[safe_k]
            lon = assigned.longitude.round(7)[safe_k]
            lat = assigned.latitude.round(7)[safe_k]
        else:
            lon = lat = np.zeros(self.staged_rows)
        mask = None if with_point.all() else pa.array(~with_point)
        geom = pa.FixedSizeBinaryArray.from_buffers(pa.binary(25), self.staged_rows,
                                                    [None, pa.py_buffer(ewkb.tobytes())]).cast(pa.binary())
        longitude, latitude = pa.array(lon), pa.array(lat)
        area_k = area_of_row[placed]
        codes = np.where(area_k >= 0, area_k, 0)
        area_mask = pa.array(area_k < 0)
        lsoa = area_index.lsoa_array.take(pa.array(codes))
        msoa = area_index.msoa_array.take(pa.array(codes))
        borough = area_index.borough_array.take(pa.array(codes))
        if mask is not None:
            null_geom, null_float = pa.scalar(None, pa.binary()), pa.scalar(None, pa.float64())
            geom = pc.if_else(mask, null_geom, geom)
            longitude, latitude = pc.if_else(mask, null_float, longitude), pc.if_else(mask, null_float, latitude)
        if not (area_k >= 0).all():
            null_text = pa.scalar(None, pa.string())
            lsoa, msoa = pc.if_else(area_mask, null_text, lsoa), pc.if_else(area_mask, null_text, msoa)
            hints = placed_values("borough_hint")
            borough = pc.if_else(area_mask, pa.scalar(None, pa.string()) if hints is None else hints, borough)

        confidence = self._confidence_and_quality(placed_values("location_precision"),
                                                  placed_values("location_confidence"))
        # Rows go to disk in borough order, and within a borough along a Z-order curve of 100 m squares, so an
        # area's incidents share few pages: a drawn polygon, an MSOA or an LSOA reads a small part of a
        # month's pages instead of nearly all of them (rows without a point last).
        order = None
        if self.staged_rows > 1:
            borough_rank = np.where(area_k >= 0, area_index.borough_rank[codes], np.iinfo(np.int32).max)
            cell_x = np.where(with_point, (ewkb["x"] // 100).astype(np.int64), 0)
            cell_y = np.where(with_point, (ewkb["y"] // 100).astype(np.int64), 0)
            order = pa.array(np.lexsort((~with_point, _z_order(cell_x, cell_y), borough_rank)))

        # In INCIDENT_COPY_COLUMNS order; drop_id first in every row, so it can be filled in once it is known.
        # Encoded later, in chunks, by copy_streams (in ``order``).
        self._copy_order = order
        self._copy_columns = [(kind, value) for kind, value in [
            ("int8", 0), ("text", fmt.supplier), ("text", placed_values("supplier_record_id")),
            ("timestamptz", occurred), ("text", placed_values("time_precision")),
            ("int2", placed_values("category_id")), ("text", placed_values("supplier_category")),
            ("bool", placed_values("theme_weapon")), ("bool", placed_values("theme_dava")),
            ("bool", placed_values("theme_young_victim")), ("bool", placed_values("theme_night_time_economy")),
            ("bool", placed_values("theme_arson")), ("bytea", geom), ("float8", longitude), ("float8", latitude),
            ("text", placed_values("location_precision")), ("int2", confidence), ("text", lsoa), ("text", msoa),
            ("text", borough),
            ("int2", placed_values("access_level")), ("jsonb", placed_values("attributes")),
        ]]
        # One COPY normally; a drop that may open its month is staged (loaders/staging.py): a COPY per helper
        # connection, each of a consecutive share of the rows, so each share keeps the disk order.
        shares = STAGING_CONNECTIONS if fresh_month_candidate(self, fmt) else 1
        bounds = [self.staged_rows * k // shares for k in range(shares + 1)]
        self.copy_streams = [CopyStream(functools.partial(self._copy_chunks, first, end))
                             for first, end in zip(bounds, bounds[1:])]

    def _copy_chunks(self, first: int, end: int) -> Iterable[BinaryCopyRows]:
        """Rows ``first`` to ``end`` (in disk order) of the staged rows, encoded for a binary COPY of their
        own, COPY_CHUNK_ROWS at a time (an empty share still sends the COPY's header and trailer)."""
        for start in range(first, end, COPY_CHUNK_ROWS) or [first]:
            stop = min(end, start + COPY_CHUNK_ROWS)
            rows = self._copy_order.slice(start, stop - start) if self._copy_order is not None else None

            def part(kind: str, value):
                if not isinstance(value, (pa.Array, pa.ChunkedArray)):
                    return value        # one value for every row
                chunk = value.take(rows) if rows is not None else value.slice(start, stop - start)
                return json_text(chunk) if kind == "jsonb" else chunk

            yield binary_copy(stop - start, [(kind, part(kind, value)) for kind, value in self._copy_columns],
                              header=start == first, trailer=stop >= end)

    def _confidence_and_quality(self, precision, given):
        """Each placed row's location confidence (as resolved by loaders.locating, else the default of its
        precision) and ``self.quality``: method -> (rows, mean confidence) over the placed rows."""
        from safestats.location_levels import DEFAULT_CONFIDENCE, METHOD_OF_PRECISION

        self.quality: dict[str, tuple[int, float]] = {}
        if self.staged_rows == 0:
            return given if given is not None else 0
        levels = list(DEFAULT_CONFIDENCE)
        if not isinstance(precision, pa.Array):
            if given is None:
                given = DEFAULT_CONFIDENCE[precision]
            mean = float(np.mean(given.to_numpy(zero_copy_only=False))) if isinstance(given, pa.Array) else given
            self.quality[METHOD_OF_PRECISION[precision]] = (self.staged_rows, mean)
            return given
        codes = pc.index_in(precision, value_set=pa.array(levels)).fill_null(levels.index("none"))
        codes = codes.to_numpy(zero_copy_only=False)
        if given is None:
            given = pa.array(np.array([DEFAULT_CONFIDENCE[p] for p in levels], dtype=np.int16)[codes])
        values = given.to_numpy(zero_copy_only=False).astype(float) if isinstance(given, pa.Array) else \
            np.full(len(codes), float(given))
        rows = np.bincount(codes, minlength=len(levels))
        sums = np.bincount(codes, weights=values, minlength=len(levels))
        for k, level in enumerate(levels):
            if rows[k]:
                method = METHOD_OF_PRECISION[level]
                n, mean = self.quality.get(method, (0, 0.0))
                self.quality[method] = (n + int(rows[k]), float((mean * n + sums[k]) / (n + rows[k])))
        return given


# drop_id is the first column of every COPY row: after the field count (2 bytes) and its length word (4).
DROP_ID_OFFSET = 6


class BytesChunkReader(io.RawIOBase):
    """A read()-able view of a bytearray for psycopg2's copy_expert, without copying it into a BytesIO first."""

    def __init__(self, payload: bytearray):
        self._view = memoryview(payload)
        self._at = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size < 0 else min(len(self._view), self._at + size)
        chunk = bytes(self._view[self._at:end])
        self._at = end
        return chunk


# Rows per chunk of a drop's binary COPY. Large enough that a chunk's pyarrow kernels dwarf their Python
# overhead, small enough that PostgreSQL has the first chunk to insert a few milliseconds after the COPY starts.
COPY_CHUNK_ROWS = 32_768


class CopyStream(BytesChunkReader):
    """A drop's rows for ``COPY ... FROM STDIN (FORMAT binary)``, encoded chunk by chunk on a thread of its own.

    Why: encoding a 300,000-row month is about a third of its Python time, and once it ran before the drop's
    transaction began, PostgreSQL waited for all of it. ``start()`` (when the drop is prepared) begins the
    encoding; the writer's copy_expert then reads chunks as they come, each with the drop id written into
    its rows first (known only once the drop's row is inserted). pyarrow's kernels and psycopg2's sending
    release the GIL, so encoding later chunks, PostgreSQL inserting earlier ones and the next file's
    preparation run side by side. A failure while encoding surfaces in the COPY, which rolls the drop back.
    """

    def __init__(self, chunks: Callable[[], Iterable[BinaryCopyRows]]):
        self._chunks_of = chunks
        self._ready: queue.Queue = queue.Queue()    # encoded chunks, then None, or the exception that stopped it
        self._cancelled = threading.Event()
        self._thread: threading.Thread | None = None
        self._drop_id: int | None = None
        self._ended = False
        super().__init__(bytearray())

    def start(self) -> "CopyStream":
        if self._thread is None:
            self._thread = threading.Thread(target=self._encode, name="copy-encoder", daemon=True)
            self._thread.start()
        return self

    def _encode(self) -> None:
        try:
            for chunk in self._chunks_of():
                if self._cancelled.is_set():
                    return
                self._ready.put(chunk)
            self._ready.put(None)
        except BaseException as exc:  # handed to the reader, which raises it inside the COPY
            self._ready.put(exc)

    def for_drop(self, drop_id: int) -> "CopyStream":
        """This stream with ``drop_id`` in every row (encoding starts now if it had not)."""
        self._drop_id = drop_id
        return self.start()

    def cancel(self) -> None:
        """Stop encoding: the drop will not be written (a concurrent loader loaded the same file first, or
        its staging failed)."""
        self._cancelled.set()

    def read(self, size: int = -1) -> bytes:
        while self._at >= len(self._view):
            if self._ended:
                return b""
            item = self._ready.get()
            if item is None:
                self._ended = True
                return b""
            if isinstance(item, BaseException):
                self._ended = True
                raise RuntimeError(f"encoding the drop's rows for COPY failed: {item}") from item
            item.patch_int8(DROP_ID_OFFSET, self._drop_id)
            self._view, self._at = memoryview(item.payload), 0
        return super().read(size)


def copy_incident_rows(cur, table: str, stream) -> int:
    """COPY a drop's encoded rows (a CopyStream) into ``table`` (incidents, or a staging table); the rows."""
    cur.copy_expert(f"COPY {table} ({', '.join(INCIDENT_COPY_COLUMNS)}) FROM STDIN WITH (FORMAT binary)", stream,
                    size=1 << 20)
    return cur.rowcount


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


def prepare_drop(read_conn, path: Path, progress: bool = False, area_index=None,
                 mappings: dict[str, dict[str, CategoryMapping]] | None = None) -> PreparedDrop:
    """Read, decode, check, parse, harmonise and locate one file. Reads from the database, never writes.

    ``area_index`` and ``mappings`` (supplier -> its category mapping, filled as suppliers are met) may be
    passed in by a caller loading a batch, so they are read once per batch.
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
        mapping = {}
        if not prepared.skipped:
            mapping = mappings.get(fmt_class.supplier) if mappings is not None else None
            if mapping is None:
                mapping = load_category_mapping(cur, fmt_class.supplier)
                if mappings is not None:
                    mappings[fmt_class.supplier] = mapping
        if area_index is None and not prepared.skipped:
            area_index = area_index_for(cur, read_conn.dsn)
    read_conn.rollback()
    if prepared.skipped:
        return prepared

    fmt = prepared.fmt = fmt_class(path.name, mapping)
    try:
        data = fmt.as_csv(data)
        # The column path when the format offers one and the file is plain enough to give exactly the row
        # path's result; otherwise (or when parse_columns declines the file) the row path.
        column_input = utf8_for_column_path(data) if has_column_path(fmt) else None
        _pause_for_tests("parse")
        with tqdm(total=data.count(b"\n") if progress else 0, unit="row", leave=False, file=sys.stderr,
                  disable=None if progress else True, desc=path.name[:40]) as bar:
            parsed = None
            if column_input is not None:
                buf, prepared.encoding = column_input
                parsed = parse_columns_in_parts(fmt, buf, bar.update)
            if parsed is None:
                decoded = decode_supplier_bytes(data)
                prepared.encoding = decoded.encoding
                parsed = parse_rows(fmt, decoded, bar.update)
        prepared.parsed = parsed
    except DropRejected as exc:
        prepared.rejection = str(exc)
        return prepared

    if fmt.location_requests and parsed.n_rows:
        with read_conn.cursor() as cur:
            apply_locations(parsed, fmt, cur, read_conn.dsn)
        read_conn.rollback()
    located = prepared.located = LocatedDrop(parsed, fmt, area_index, get_settings().area_snap_tolerance_m)
    prepared.quarantined = list(parsed.quarantined)
    if located.outside:
        line_no = parsed.columns["line_no"]
        for k, reason in located.outside:
            first = line_no[k].as_py() - 1
            prepared.quarantined.append((first + 1, parsed.raw_text(first, int(parsed.line_ends[k])), reason))
    if not is_update_format(fmt):
        for stream in located.copy_streams:
            stream.start()      # encoded while the drop's transaction begins and its COPY runs
    return prepared


def apply_locations(parsed: ParsedDrop, fmt: SupplierFormat, cur, cache_key: str) -> None:
    """Resolve the rows the format could not place (fmt.location_requests, loaders/locating.py) and write the
    answers into the parsed columns: point (British National Grid), precision, borough, confidence, and how
    it was located (attributes.location_method). Such rows are few (ambulance and ED records), so this works
    on Python lists."""
    from loaders.locating import locate_requests
    from safestats.location_levels import DEFAULT_CONFIDENCE

    if fmt.coordinate_srid != 27700:
        raise ValueError(f"{type(fmt).__name__} files location requests but its points are EPSG:"
                         f"{fmt.coordinate_srid}; located points are British National Grid (27700)")
    resolved = locate_requests(cur, cache_key, fmt.location_requests)
    columns, n = parsed.columns, parsed.n_rows

    def as_list(name: str) -> list:
        v = json_text(columns.get(name))
        return v.to_pylist() if isinstance(v, pa.Array) else [v] * n

    x, y, precision = as_list("x"), as_list("y"), as_list("location_precision")
    hint, attributes = as_list("borough_hint"), as_list("attributes")
    confidence = [DEFAULT_CONFIDENCE.get(p, 0) for p in precision]
    for k, line_no in enumerate(as_list("line_no")):
        found = resolved.get(line_no)
        if found is None:
            continue
        x[k], y[k], precision[k], confidence[k] = found.easting, found.northing, found.precision, found.confidence
        hint[k] = found.borough
        attrs = json.loads(attributes[k] or "{}")
        attrs["location_method"] = found.note
        attributes[k] = json.dumps(attrs, ensure_ascii=False, separators=(",", ":"))
    for name, values in (("x", x), ("y", y), ("location_precision", precision), ("borough_hint", hint),
                         ("attributes", attributes)):
        columns[name] = pa.array(values, HARMONISED_TYPES[name])
    columns["location_confidence"] = pa.array(confidence, pa.int16())


def has_column_path(fmt: SupplierFormat) -> bool:
    return type(fmt).harmonise_columns is not SupplierFormat.harmonise_columns


def is_update_format(fmt: SupplierFormat | type[SupplierFormat]) -> bool:
    fmt_class = fmt if isinstance(fmt, type) else type(fmt)
    return fmt_class.apply_update is not SupplierFormat.apply_update


def claims_update(path: Path) -> bool:
    """Whether the format that claims this file name is an update format (False when none claims it)."""
    return any(fmt.claims(path.name) and is_update_format(fmt) for fmt in supplier_formats())


def claims_locator(path: Path) -> bool:
    """Whether the format that claims this file name locates rows through the gazetteer (uses_locator)."""
    return any(fmt.claims(path.name) and fmt.uses_locator for fmt in supplier_formats())


def _prepare_session(conn) -> None:
    with conn.cursor() as cur:
        # JIT compiling the ingest statements costs more than running them (measured: 430 of 630 ms).
        cur.execute("SET jit = off")
    conn.commit()


def commit_drop(conn, prepared: PreparedDrop, stager: MonthStager, partitions_known: set | None = None,
                began: Callable[[], None] | None = None) -> DropResult:
    """Write a prepared drop: the rejection, or its rows, quarantine and drop record in one transaction.

    ``stager`` holds this writer's helper connections, which stage a drop that opens its month (see
    loaders/staging.py). Optional, for a caller loading a batch: ``partitions_known`` remembers the years
    whose incident partitions exist, to save a round trip per drop; ``began`` is called once the drop holds
    its locks and has its drops row (or turned out to be loaded already), so the next drop may begin.
    """
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

    # The transaction is driven with explicit BEGIN / COMMIT in autocommit mode, so that statements that
    # belong together travel in one round trip (psycopg2 would send its own BEGIN and run them one by one):
    # a drop costs five or six round trips instead of fifteen. The server still sees one transaction, so a
    # killed loader leaves nothing behind.
    was_autocommit = conn.autocommit
    if not was_autocommit:
        conn.commit()       # (what the caller left open; nothing, normally) autocommit needs no open transaction
        conn.autocommit = True
    writing_from = time.monotonic()
    try:
        with conn.cursor() as cur:
            try:
                _write_drop(cur, prepared, result, stager, partitions_known, began)
                result.write_seconds = time.monotonic() - writing_from
            except BaseException:
                if not conn.closed and conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                    cur.execute("ROLLBACK")
                stager.discard()    # once rolled back: the transaction had locked the staging table
                raise
    finally:
        if not conn.closed:
            conn.autocommit = was_autocommit
    return result


def _partition_keys(first_at: datetime, last_at: datetime) -> tuple[set[str], set[str]]:
    """The incident partitions a drop's rows fall in: its years ("2024") and its months ("2024-03"), London time."""
    first, last = first_at.astimezone(LONDON), last_at.astimezone(LONDON)
    years = {str(y) for y in range(first.year, last.year + 1)}
    months = {f"{n // 12}-{n % 12 + 1:02d}" for n in range(first.year * 12 + first.month - 1,
                                                          last.year * 12 + last.month)}
    return years, months


# A drop of at least this many rows that is the first to reach its month (all its rows in one month) is COPYed
# into a fresh table without indexes, whose indexes are then built in bulk before it is attached as the month's
# partition: PostgreSQL's time per row about halves, 10.7 -> 5.9 us (bench/README.md, "Ingest speed"); the
# table is staged over helper connections, so its COPY and index builds use every core (loaders/staging.py).
# Below it the fixed cost outweighs that: making, filling and attaching a fresh table of 700 rows took 170 ms
# against 50 ms for making an empty month partition (load average 14), i.e. the 4.8 us a row saved repays the
# difference from about 24,000 rows.
FRESH_MONTH_MIN_ROWS = 20_000


def likely_fresh_month(path: Path, batch: list[Path]) -> bool:
    """Whether a file of a batch looks large enough for fresh_month_candidate and no earlier file of the batch
    has its name (its order must stay). By its size (a gzip file's read from its trailer): 250 bytes a row, a
    police.uk street row's size, so smaller batches (stop and search, LFB, TfL files) keep their order."""
    try:
        with path.open("rb") as fh:
            if path.suffix == ".gz":
                fh.seek(-4, os.SEEK_END)
                size = int.from_bytes(fh.read(4), "little")     # ISIZE: the uncompressed size (mod 2^32)
            else:
                size = os.fstat(fh.fileno()).st_size
    except OSError:
        return False
    return size >= FRESH_MONTH_MIN_ROWS * 250 and not any(p.name == path.name for p in batch[:batch.index(path)])


def fresh_month_candidate(located: "LocatedDrop", fmt: SupplierFormat) -> bool:
    """Whether a drop may open its month in a fresh table (decided in the transaction: its month is new)."""
    if located.first_at is None or located.staged_rows < FRESH_MONTH_MIN_ROWS or is_update_format(fmt):
        return False
    return len(_partition_keys(located.first_at, located.last_at)[1]) == 1


def _write_quarantine(cur, drop_id: int, quarantined: list[tuple[int, str, str]], quality: dict) -> None:
    """The drop's quarantined rows (line number, raw line, reason) and its location quality per method."""
    ordered = sorted(quarantined)
    cur.execute("""
        INSERT INTO quarantine (drop_id, line_no, raw_line, reason)
        SELECT %(drop)s, * FROM unnest(%(lines)s::integer[], %(raws)s::text[], %(reasons)s::text[]);
        INSERT INTO drop_location_quality (drop_id, method, rows, mean_confidence)
        SELECT %(drop)s, * FROM unnest(%(methods)s::text[], %(method_rows)s::integer[], %(confidences)s::real[])""",
                {"drop": drop_id, "lines": [q[0] for q in ordered],
                 # PostgreSQL text cannot hold NUL; the raw line keeps a visible marker instead.
                 "raws": [q[1].replace("\x00", "\\x00") for q in ordered], "reasons": [q[2] for q in ordered],
                 "methods": list(quality), "method_rows": [q[0] for q in quality.values()],
                 "confidences": [round(float(q[1]), 2) for q in quality.values()]})


def _write_drop(cur, prepared: PreparedDrop, result: DropResult, stager: MonthStager,
                partitions_known: set | None, began: Callable[[], None] | None) -> None:
    fmt, parsed, located, quarantined = prepared.fmt, prepared.parsed, prepared.located, prepared.quarantined
    path, digest = prepared.path, prepared.digest
    fresh_candidate = fresh_month_candidate(located, fmt)
    if located.first_at is not None:
        years, months = _partition_keys(located.first_at, located.last_at)
        # A candidate for a fresh month table needs only its year's partition; the month's is its own to make.
        needed = years if fresh_candidate else years | months
        if partitions_known is None or not needed <= partitions_known:
            # Partitions are made in their own statement, committed at once (autocommit): creating one locks
            # its parent, and an empty partition left behind by a killed load is harmless.
            cur.execute("SELECT safestats_ensure_incident_partitions(%s, %s, %s)",
                        (located.first_at, located.last_at, not fresh_candidate))
            if partitions_known is not None:
                partitions_known |= needed
    _pause_for_tests("partitions")

    replace_key = fmt.replace_key()
    params = {"supplier": fmt.supplier, "sha": digest, "key": replace_key or "", "file": path.name,
              "size": prepared.size, "received": prepared.received_at, "encoding": prepared.encoding,
              "fresh": fresh_candidate, "first": located.first_at}
    # One round trip: serialise loads of the same content and of the same replace key (two schedulers, two
    # shells), then, unless that content is already loaded, insert the drop row and lock the drops it replaces.
    # A drop that may open its month takes the month's lock here, before ``began`` lets the next drop of the
    # batch make partitions: that drop's safestats_ensure_incident_partitions then waits for this one instead
    # of making the month's partition first (and sending this drop through the indexes).
    cur.execute("""
        BEGIN;
        SELECT pg_advisory_xact_lock(hashtext('safestats-drop-sha:' || %(sha)s));
        SELECT pg_advisory_xact_lock(hashtext('safestats-drop-key:' || %(supplier)s || ':' || %(key)s))
        WHERE %(key)s <> '';
        SELECT pg_advisory_xact_lock(hashtext('safestats-incident-month:'
                                              || safestats_incident_month_partition(%(first)s)))
        WHERE %(fresh)s;
        WITH previous AS (
            SELECT id FROM drops WHERE supplier = %(supplier)s AND sha256 = %(sha)s
              AND status IN ('loaded', 'superseded') ORDER BY id LIMIT 1),
        new_drop AS (
            INSERT INTO drops (supplier, file_name, sha256, size_bytes, received_at, status, encoding)
            SELECT %(supplier)s, %(file)s, %(sha)s, %(size)s, %(received)s, 'loaded', %(encoding)s
            WHERE NOT EXISTS (SELECT 1 FROM previous)
            RETURNING id),
        replaced AS (
            SELECT id, period_start, period_end FROM drops
            WHERE supplier = %(supplier)s AND replace_key = %(key)s AND %(key)s <> '' AND status = 'loaded'
            ORDER BY id FOR UPDATE)
        SELECT (SELECT id FROM new_drop), (SELECT id FROM previous),
               (SELECT array_agg(id ORDER BY id) FROM replaced),
               (SELECT array_agg(period_start::text ORDER BY id) FROM replaced),
               (SELECT array_agg(period_end::text ORDER BY id) FROM replaced)""", params)
    drop_id, previous, old_ids, old_starts, old_ends = cur.fetchone()
    if began is not None:
        began()
    if previous is not None:
        for stream in located.copy_streams:
            stream.cancel()
        cur.execute("ROLLBACK")
        result.status, result.drop_id = "skipped", previous
        result.message = f"already loaded as drop {previous} by a concurrent loader; nothing changed"
        return
    _pause_for_tests("drop_row")

    replaced = list(old_ids or [])
    for old_id, old_start, old_end in zip(replaced, old_starts or [], old_ends or []):
        # Found through the time index by the old drop's period (there is no drop_id index).
        cur.execute("""DELETE FROM incidents WHERE drop_id = %(old)s
                         AND occurred_at >= %(start)s::date - 1 AND occurred_at < %(end)s::date + 2;
                       UPDATE drops SET status = 'superseded', superseded_by = %(new)s WHERE id = %(old)s""",
                    {"old": old_id, "new": drop_id, "start": old_start or "-infinity", "end": old_end or "infinity"})
    _pause_for_tests("replaced")

    # Update drops add no incidents, so they have no location quality of their own.
    quality = {} if is_update_format(fmt) else located.quality
    rows_unmatched, staged_rows = 0, None
    if is_update_format(fmt):
        # An update drop (police.uk outcomes) changes records already loaded; the format writes its rows.
        kept = pa.array(located.placed)
        columns = {name: (v.filter(kept) if isinstance(v, pa.Array) else
                          pa.array([v] * parsed.n_rows, HARMONISED_TYPES[name]).filter(kept))
                   for name, v in parsed.columns.items()}
        rows_unmatched = fmt.apply_update(cur, drop_id, columns, replaced)
        rows_loaded = located.staged_rows - rows_unmatched
    else:
        # Binary COPY, encoded while the previous drop was written; only the drop id is filled in now. A large
        # drop that opens its month is staged by the helper connections and attached here (None: the month
        # has its partition already, and its rows go through incidents).
        streams = [stream.for_drop(drop_id) for stream in located.copy_streams]
        # A staged drop's quarantine is written on this connection while the helpers COPY.
        staged_rows = stager.stage(located.first_at, streams, meanwhile=lambda: _write_quarantine(
            cur, drop_id, quarantined, quality)) if fresh_candidate else None
        if staged_rows is not None:
            rows_loaded = staged_rows
            _pause_for_tests("copied")
            cur.execute("SELECT safestats_attach_staged_incident_month(%s)", (located.first_at,))
        else:
            rows_loaded = sum(copy_incident_rows(cur, "incidents", stream) for stream in streams)
            _pause_for_tests("copied")
    _pause_for_tests("inserted")

    # Checked before the drop row is completed, so a drop whose rows do not add up rolls back instead of landing.
    if rows_loaded + len(quarantined) + rows_unmatched != parsed.rows_read:
        raise AssertionError(f"row accounting broke for {path}: {rows_loaded} + {len(quarantined)} + "
                             f"{rows_unmatched} != {parsed.rows_read}")
    if staged_rows is None:
        _write_quarantine(cur, drop_id, quarantined, quality)
    cur.execute("""
        UPDATE drops SET replace_key = %(replace_key)s, loaded_at = clock_timestamp(), rows_read = %(read)s,
                         rows_loaded = %(loaded)s, rows_quarantined = %(quarantined)s,
                         rows_unmatched = %(unmatched)s,
                         period_start = (%(first)s::timestamptz AT TIME ZONE 'Europe/London')::date,
                         period_end = (%(last)s::timestamptz AT TIME ZONE 'Europe/London')::date
        WHERE id = %(drop)s""",
                {"drop": drop_id, "replace_key": replace_key, "read": parsed.rows_read, "loaded": rows_loaded,
                 "quarantined": len(quarantined), "unmatched": rows_unmatched, "first": located.first_at, "last": located.last_at})
    _pause_for_tests("before_commit")
    cur.execute("COMMIT")
    stager.landed()
    # Everything above landed together or not at all.
    if fresh_candidate and partitions_known is not None:
        partitions_known |= _partition_keys(located.first_at, located.last_at)[1]   # the month has its partition
    result.status, result.drop_id = "loaded", drop_id
    result.rows_read, result.rows_loaded, result.rows_quarantined = parsed.rows_read, rows_loaded, len(quarantined)
    result.rows_unmatched = rows_unmatched
    result.replaced_drop_ids = replaced
    result.location_quality = quality
    result.seconds = time.monotonic() - prepared.started


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


def police_uk_loaded(results: list[DropResult]) -> bool:
    return any(r.status == "loaded" and r.supplier == "police_uk" for r in results)


def _refresh_gazetteer(url: str, progress: bool) -> None:
    from loaders.locating import refresh_gazetteer

    refresh = refresh_gazetteer(url)
    if progress:
        print(refresh.summary())


def batch_quality(results: list[DropResult]) -> dict[str, tuple[int, float]]:
    """The location quality of every drop a batch loaded, together (method -> rows, mean confidence)."""
    total: dict[str, tuple[int, float]] = {}
    for r in results:
        for method, (rows, mean) in r.location_quality.items():
            n, m = total.get(method, (0, 0.0))
            total[method] = (n + rows, (m * n + mean * rows) / (n + rows))
    return total


# How many drops are written at once, each on its own connection. PostgreSQL's work on a drop (the COPY,
# above all: about 9 us a row into incidents and its indexes) is most of a load, and one backend uses one
# core; with two, a 2-core machine keeps both busy while the next files are prepared.
WRITER_CONNECTIONS = 2
PREPARE_AHEAD = 2           # files read and parsed ahead of the writers


def load_paths(url: str, paths: Iterable[Path], progress: bool = True,
               refresh_rollups: bool = True) -> list[DropResult]:
    """Load files (or folders of files), a drop per transaction; print a line per drop and a summary line.

    When anything was loaded, the rollup views the new drops touch are refreshed afterwards (once for the
    whole batch, concurrently, so analysts keep querying), and the street gazetteer too when police.uk drops
    were loaded (loaders/locating.py); ``refresh_rollups=False`` leaves both to the caller. Drops that locate
    rows through the gazetteer always see it rebuilt from the police.uk drops loaded before them in the batch.

    Files are prepared (read, parsed, located, encoded) in a worker thread a little ahead, on a read-only
    connection, and written by WRITER_CONNECTIONS writer threads, each on its own connection: psycopg2
    releases the GIL while PostgreSQL works through a COPY, so preparing and writing overlap. Drops still
    start in file order: a drop begins (takes its advisory locks and inserts its drops row) only once the
    drop before it has done so, so drop ids follow the files, and a re-issue of a month later in the batch
    waits on the key lock of the earlier one and replaces it, as when loading one file after another. (File
    order: as given, but update drops last, gazetteer-located ones before them and large files first; see below.)
    """
    from collections import deque

    from tqdm import tqdm

    from loaders.areas import area_index_for

    # Update drops (police.uk outcomes) change records that other drops load, so they come last in a batch
    # (stable: otherwise the given order) and each waits until every drop before it has committed. Drops
    # whose rows are located through the gazetteer (ambulance, ED) come just before them: once the drops
    # before them have committed, the gazetteer is refreshed from any police.uk drops the batch loaded.
    # Among the rest, files large enough to open a month in a fresh table (fresh_month_candidate) go first,
    # so a small file of the same month (a City of London month beside the Met's) does not make the month's
    # partition before them; a file never moves ahead of an earlier one of the same name (a re-issue).
    files = sorted(expand_paths(paths), key=lambda p: (claims_update(p), claims_locator(p)))
    files = sorted(files, key=lambda p: (claims_update(p), claims_locator(p), not likely_fresh_month(p, files)))
    started = time.monotonic()
    results: list[DropResult] = []
    writers = [psycopg2.connect(libpq_dsn(url)) for _ in range(max(1, min(WRITER_CONNECTIONS, len(files))))]
    stagers = {id(conn): MonthStager(libpq_dsn(url)) for conn in writers}   # helpers, opened when first needed
    read_conn = psycopg2.connect(libpq_dsn(url))
    read_conn.set_session(readonly=True, autocommit=True)
    try:
        for conn in writers:
            _prepare_session(conn)
        with read_conn.cursor() as cur:
            area_index = area_index_for(cur, read_conn.dsn)
        mappings: dict[str, dict[str, CategoryMapping]] = {}
        free_writers: queue.Queue = queue.Queue()
        for conn in writers:
            free_writers.put(conn)
        partitions_known: set[int] = set()
        may_begin = [threading.Event() for _ in range(len(files) + 1)]
        may_begin[0].set()
        gazetteer_ready = threading.Event()     # set once the drops that need the gazetteer may be prepared
        gazetteer_refreshed = False

        def prepare(path: Path):
            if claims_locator(path):
                gazetteer_ready.wait()
            if not path.exists():
                return DropResult(path=path, status="failed", message="no such file")
            return prepare_drop(read_conn, path, progress, area_index, mappings)

        def write(n: int, prepared) -> DropResult:
            may_begin[n].wait()
            if isinstance(prepared, DropResult):
                may_begin[n + 1].set()
                return prepared
            conn = free_writers.get()
            try:
                return commit_drop(conn, prepared, stagers[id(conn)], partitions_known, began=may_begin[n + 1].set)
            except Exception as exc:  # report and go on with the next file; the transaction rolled back
                return DropResult(path=prepared.path, status="failed", message=f"{type(exc).__name__}: {exc}")
            finally:
                may_begin[n + 1].set()
                free_writers.put(conn)

        bar = tqdm(total=len(files), unit="file", disable=None if progress else True, file=sys.stderr,
                   dynamic_ncols=True)

        def report(result: DropResult) -> None:
            results.append(result)
            bar.update(1)
            if progress:
                tqdm.write(result.summary_line(), file=sys.stderr)

        with ThreadPoolExecutor(max_workers=1) as preparer, \
                ThreadPoolExecutor(max_workers=len(writers)) as writer_pool:
            preparing: deque = deque()
            writing: deque = deque()
            try:
                for n, path in enumerate(files):
                    while len(preparing) < PREPARE_AHEAD and n + len(preparing) < len(files):
                        preparing.append(preparer.submit(prepare, files[n + len(preparing)]))
                    bar.set_description(path.name[:40])
                    first_locator = claims_locator(path) and not gazetteer_ready.is_set()
                    if claims_update(path) or first_locator:
                        while writing:
                            report(writing.popleft().result())
                    if first_locator:
                        # Every police.uk drop of the batch sorts before this one and has committed.
                        if police_uk_loaded(results):
                            _refresh_gazetteer(url, progress)
                            gazetteer_refreshed = True
                        gazetteer_ready.set()
                    try:
                        prepared = preparing.popleft().result()
                    except Exception as exc:
                        prepared = DropResult(path=path, status="failed", message=f"{type(exc).__name__}: {exc}")
                    writing.append(writer_pool.submit(write, n, prepared))
                    while writing and (writing[0].done() or len(writing) > len(writers)):
                        report(writing.popleft().result())
                while writing:
                    report(writing.popleft().result())
            finally:
                gazetteer_ready.set()       # never leave the preparer waiting on an early exit
        bar.close()
    finally:
        for conn in writers:
            conn.close()
        for stager in stagers.values():
            stager.close()
        read_conn.close()
    elapsed = time.monotonic() - started
    loaded = sum(r.rows_loaded for r in results)
    counts = {s: sum(1 for r in results if r.status == s) for s in ("loaded", "skipped", "rejected", "failed")}
    rate = f" ({loaded / elapsed:,.0f} rows/s)" if elapsed > 0 and loaded else ""
    print(f"{len(files)} file(s): {counts['loaded']} loaded, {counts['skipped']} skipped (already loaded), "
          f"{counts['rejected']} rejected, {counts['failed']} failed; {loaded:,} rows loaded, "
          f"{sum(r.rows_quarantined for r in results):,} quarantined in {elapsed:.2f} s{rate}.")
    quality = batch_quality(results)
    if quality:
        print(f"Located: {quality_text(quality)}.")
    for r in results:
        if r.status in ("rejected", "failed"):
            print(f"  {r.summary_line()}")
    if refresh_rollups and not gazetteer_refreshed and police_uk_loaded(results):
        _refresh_gazetteer(url, progress)
    if refresh_rollups and counts["loaded"]:
        from safestats.rollups import refresh_after_load

        # Only the views the new drops touch: their years, and none for update drops.
        refresh_after_load(url, [r.drop_id for r in results if r.status == "loaded"],
                           trigger=f"load of {counts['loaded']} drop(s)", log=print if progress else None)
    return results
