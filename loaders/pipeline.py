"""The one ingest pipeline every supplier's drops go through.

A supplier format (one short class per file format, see ``loaders/police_uk.py``) says which files it
claims, which columns it expects and how to harmonise one row. The pipeline does everything else, the
same way for every supplier: sha256 the file and skip it if that content was already loaded; detect the
encoding (UTF-8 with or without BOM, cp1252; a mostly-UTF-8 file's undecodable lines are quarantined);
check the header (missing or unexpected columns reject the whole drop, naming them, and change nothing);
parse and validate rows, quarantining bad ones with a reason; COPY good rows into a staging table; assign
LSOA / MSOA / borough by spatial join; then, in one transaction, replace any earlier drop with the same
replace key (a re-issued police.uk month), insert the rows, record the quarantine and the drop. A killed
loader leaves the database exactly as it was, and running it again completes.
"""
from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import os
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar, Iterable

import psycopg2

from db import libpq_dsn, read_sql

# The harmonised columns every format's harmonise_row returns, in this order. x, y are the supplier's point
# in the format's coordinate_srid (or None); the pipeline adds the projected point and the areas.
HARMONISED_COLUMNS = (
    "line_no", "supplier_record_id", "occurred_at", "time_precision", "category_id", "supplier_category",
    "theme_weapon", "theme_dava", "theme_young_victim", "theme_night_time_economy", "theme_arson",
    "x", "y", "location_precision", "borough_hint", "access_level", "attributes",
)
X_POS, Y_POS, OCCURRED_POS, BOROUGH_HINT_POS = 11, 12, 2, 14
LOCATED_COLUMNS = ("easting", "northing", "longitude", "latitude", "lsoa_code", "msoa_code", "borough_code")
STAGING_COLUMNS = HARMONISED_COLUMNS + LOCATED_COLUMNS
_STAGING_DDL = """
CREATE TEMP TABLE staging_incidents (
    line_no integer, supplier_record_id text, occurred_at timestamptz, time_precision text,
    category_id smallint, supplier_category text, theme_weapon boolean, theme_dava boolean,
    theme_young_victim boolean, theme_night_time_economy boolean, theme_arson boolean,
    x double precision, y double precision, location_precision text, borough_hint text,
    access_level smallint, attributes jsonb,
    easting double precision, northing double precision, longitude double precision, latitude double precision,
    lsoa_code text, msoa_code text, borough_code text
) ON COMMIT DROP
"""


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
        """Return the row's harmonised values in STAGING_COLUMNS order, or raise Quarantine(reason)."""
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
        if bad_lines and any(i in bad_lines for i in range(start + 1, consumed + 1)):
            reason = next(bad_lines[i] for i in range(start + 1, consumed + 1) if i in bad_lines)
            quarantined.append((line_no, "".join(lines[1 + start:1 + consumed]), reason))
            continue
        if len(fields) != n_columns:
            quarantined.append((line_no, "".join(lines[1 + start:1 + consumed]),
                                f"expected {n_columns} fields, found {len(fields)} (truncated or malformed row)"))
            continue
        if reorder:
            fields = [fields[p] for p in positions]
        try:
            keep(harmonise(fields, line_no))
        except Quarantine as q:
            quarantined.append((line_no, "".join(lines[1 + start:1 + consumed]), str(q)))
            continue
        if progress is not None:
            tick += 1
            if tick == 5000:
                progress(tick)
                tick = 0
    if progress is not None and tick:
        progress(tick)
    return ParsedDrop(rows, quarantined, rows_read)


@dataclass
class LocatedDrop:
    staged: io.StringIO                           # CSV for COPY into staging_incidents
    staged_rows: int
    outside: list[tuple[int, str]]                # (line number, reason) of rows outside the configured area
    first_at: str | None
    last_at: str | None


def locate_rows(rows: list[tuple], fmt: SupplierFormat, area_index, tolerance_m: float) -> LocatedDrop:
    """Project every point, assign its areas, and write the located rows as CSV for COPY."""
    import numpy as np

    with_point = [r for r in rows if r[X_POS] is not None]
    assigned = area_index.assign(np.fromiter((r[X_POS] for r in with_point), float, len(with_point)),
                                 np.fromiter((r[Y_POS] for r in with_point), float, len(with_point)),
                                 fmt.coordinate_srid, tolerance_m)
    lsoa, msoa, borough = area_index.lsoa_codes, area_index.msoa_codes, area_index.borough_codes
    east, north = assigned.easting.round(2).tolist(), assigned.northing.round(2).tolist()
    lon, lat = assigned.longitude.round(7).tolist(), assigned.latitude.round(7).tolist()
    found = assigned.area_index.tolist()

    staged = io.StringIO()
    write = csv.writer(staged, lineterminator="\n").writerow
    outside: list[tuple[int, str]] = []
    first_at = last_at = None
    i = 0
    staged_rows = 0
    no_point = (None,) * len(LOCATED_COLUMNS)
    for row in rows:
        if row[X_POS] is None:
            if row[BOROUGH_HINT_POS] is None:
                outside.append((row[0], "no location: neither a point nor a borough"))
                continue
            write(row + no_point)
        else:
            a = found[i]
            if a < 0:
                outside.append((row[0], f"outside the configured area: no LSOA within {tolerance_m:g} m of the "
                                        f"point ({row[X_POS]}, {row[Y_POS]})"))
                i += 1
                continue
            write(row + (east[i], north[i], lon[i], lat[i], lsoa[a], msoa[a], borough[a]))
            i += 1
        staged_rows += 1
        occurred = row[OCCURRED_POS]
        if first_at is None or occurred < first_at:
            first_at = occurred
        if last_at is None or occurred > last_at:
            last_at = occurred
    staged.seek(0)
    return LocatedDrop(staged, staged_rows, outside, first_at, last_at)


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


def load_drop(conn, path: Path, progress: bool = False) -> DropResult:
    """Load one supplier file through the pipeline on ``conn`` (a psycopg2 connection).

    With ``progress``, a row-level progress bar shows on a terminal (tqdm hides it elsewhere).
    """
    from tqdm import tqdm

    from safestats.config import get_settings

    started = time.monotonic()
    received_at = datetime.now(timezone.utc)
    result = DropResult(path=path)
    try:
        fmt_class = format_for(path)
    except DropRejected as exc:
        result.status, result.message = "rejected", str(exc)
        return result
    result.supplier = fmt_class.supplier
    data, digest, size = read_drop_bytes(path)

    with conn.cursor() as cur:
        # JIT compiling the ingest statements costs more than running them (measured: 430 of 630 ms).
        cur.execute("SET jit = off")
        previous = _already_loaded(cur, fmt_class.supplier, digest)
        mapping = load_category_mapping(cur, fmt_class.supplier)
    conn.commit()
    if previous:
        result.status, result.drop_id = "skipped", previous[0]
        result.message = f"already loaded as drop {previous[0]} ({previous[1]}); same sha256, nothing changed"
        return result

    fmt = fmt_class(path.name, mapping)
    try:
        decoded = decode_supplier_bytes(data)
        result.encoding = decoded.encoding
        _pause_for_tests("parse")
        with tqdm(total=max(len(decoded.lines) - 1, 0), unit="row", leave=False, file=sys.stderr,
                  disable=None if progress else True, desc=path.name[:40]) as bar:
            parsed = parse_rows(fmt, decoded, bar.update)
    except DropRejected as exc:
        result.drop_id = _record_rejection(conn, fmt.supplier, path, digest, size, received_at, result.encoding,
                                           str(exc))
        result.status, result.message = "rejected", str(exc)
        result.seconds = time.monotonic() - started
        return result

    from loaders.areas import area_index_for

    tolerance = get_settings().area_snap_tolerance_m
    with conn.cursor() as cur:
        area_index = area_index_for(cur, conn.dsn)
    conn.commit()
    located = locate_rows(parsed.rows, fmt, area_index, tolerance)
    quarantined = list(parsed.quarantined)
    if located.outside:
        raw_by_line = _raw_lines_for(decoded.lines, (line_no for line_no, _ in located.outside))
        quarantined.extend((line_no, raw_by_line[line_no], reason) for line_no, reason in located.outside)
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
                    (fmt.supplier, path.name, digest, size, received_at, decoded.encoding))
        drop_id = cur.fetchone()[0]
        _pause_for_tests("drop_row")

        cur.execute(_STAGING_DDL)
        cur.copy_expert(f"COPY staging_incidents ({', '.join(STAGING_COLUMNS)}) FROM STDIN WITH (FORMAT csv)",
                        located.staged)
        _pause_for_tests("staged")

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

        cur.execute(read_sql("ingest_insert_incidents.sql"), {"supplier": fmt.supplier, "drop_id": drop_id})
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
        _pause_for_tests("before_commit")
    # Leaving the `with conn` block committed the transaction: everything above lands together or not at all.
    if rows_loaded + len(quarantined) != parsed.rows_read:
        raise AssertionError(f"row accounting broke for {path}: {rows_loaded} + {len(quarantined)} != "
                             f"{parsed.rows_read}")
    result.status, result.drop_id = "loaded", drop_id
    result.rows_read, result.rows_loaded, result.rows_quarantined = parsed.rows_read, rows_loaded, len(quarantined)
    result.replaced_drop_ids = replaced
    result.seconds = time.monotonic() - started
    return result


def _raw_lines_for(lines: list[str], line_numbers: Iterable[int]) -> dict[int, str]:
    """The raw text of the given 1-based line numbers (records starting there, up to the next record)."""
    wanted = set(line_numbers)
    found: dict[int, str] = {}
    reader = csv.reader(lines[1:])
    consumed = 0
    for _ in reader:
        start, consumed = consumed, reader.line_num
        if start + 2 in wanted:
            found[start + 2] = "".join(lines[1 + start:1 + consumed])
            if len(found) == len(wanted):
                break
    return found


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


def load_paths(url: str, paths: Iterable[Path], progress: bool = True) -> list[DropResult]:
    """Load files (or folders of files) one drop at a time; print a line per drop and a summary line."""
    from tqdm import tqdm

    files = expand_paths(paths)
    started = time.monotonic()
    results: list[DropResult] = []
    conn = psycopg2.connect(libpq_dsn(url))
    missing = [f for f in files if not f.exists()]
    try:
        bar = tqdm(total=len(files), unit="file", disable=None if progress else True, file=sys.stderr,
                   dynamic_ncols=True)
        for path in files:
            bar.set_description(path.name[:40])
            if path in missing:
                result = DropResult(path=path, status="failed", message="no such file")
            else:
                try:
                    result = load_drop(conn, path, progress=progress)
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
    return results
