"""Column-at-a-time building blocks of the ingest pipeline: reading a CSV drop into arrays, JSON and COPY.

The row-at-a-time path (``csv`` module, ``SupplierFormat.harmonise_row``) defines what every drop means;
this module lets the pipeline reach the same result without running Python bytecode for each good row.
``scan_csv`` maps every physical line of a decoded file and decides whether the file is plain enough for
pyarrow's CSV reader to give exactly the fields the ``csv`` module would (no quoted line breaks, no exotic
line separators, no NUL bytes, no over-long fields); lines that are not plain (quotes, a wrong number of
fields, blank or whitespace-only lines) are listed for the row-wise code, one line at a time, and a file
where even that would not be exact is left to the row path whole. ``json_object_column`` builds the
attributes JSON for a whole column as ``json_object`` would for each row. ``binary_copy`` encodes rows for
``COPY ... (FORMAT binary)`` from arrays: binary COPY costs PostgreSQL about 1.3 us a row less than text
(measured on the incidents table), and building it from arrays costs Python well under 1 us a row.
"""
from __future__ import annotations

import csv
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

# Characters str.splitlines() breaks lines at besides "\n" and "\r\n" (and NUL, which PostgreSQL text refuses):
# files holding any of them keep the row path, whose "physical lines" are splitlines()'s.
_ROW_PATH_ONLY_CONTROLS = np.array([0x00, 0x0b, 0x0c, 0x1c, 0x1d, 0x1e], dtype=np.uint8)
_ROW_PATH_ONLY_BREAKS = (b"\xc2\x85", b"\xe2\x80\xa8", b"\xe2\x80\xa9")     # U+0085, U+2028, U+2029
# The csv module refuses fields longer than this (csv.field_size_limit()); pyarrow would not.
_CSV_FIELD_LIMIT = csv.field_size_limit()


@dataclass
class CsvScan:
    """A decoded CSV file (as UTF-8 bytes) mapped line by line, ready for pyarrow plus a few row-wise lines."""

    buf: bytes
    bounds: np.ndarray          # line k is buf[bounds[k]:bounds[k + 1]], line ending included
    table: pa.Table             # the plain data lines' fields (all strings), in file order
    table_lines: np.ndarray     # 0-based line index of each table row
    other_lines: list[tuple[int, list[str]]]    # (0-based line index, csv-module fields) of every other data line
    rows_read: int              # data records in the file (blank lines are not records)

    def line_text(self, first: int, end: int | None = None) -> str:
        """The raw text of lines first .. end-1 (0-based), as the row path would quarantine it."""
        end = first + 1 if end is None else end
        return self.buf[self.bounds[first]:self.bounds[end]].decode("utf-8")


def scan_csv(buf: bytes, n_columns: int) -> CsvScan | None:
    """Map ``buf`` (UTF-8, no BOM, header on line 0) for the column path, or None: use the row path.

    A data line is plain when it is not empty, holds no quote and has exactly n_columns - 1 commas: the csv
    module's fields for it are then simply its text split at the commas, which is what pyarrow returns
    (with quoting off). Every other non-empty line is parsed here with the csv module on its own; if one of
    them does not end its record on its own line (a quoted line break, an unterminated quote), records and
    lines no longer correspond and the whole file goes to the row path.
    """
    if n_columns < 2 or not buf:
        return None
    data = np.frombuffer(buf, dtype=np.uint8)
    # One pass finds every control byte: line ends, and the ones only the row path handles exactly.
    control_at = np.flatnonzero(data < 32)
    control = data[control_at]
    if np.isin(control, _ROW_PATH_ONLY_CONTROLS).any():
        return None
    carriage_returns = control_at[control == 13]
    if len(carriage_returns) and (carriage_returns[-1] + 1 == len(buf)
                                  or (data[carriage_returns + 1] != 10).any()):
        return None     # a lone "\r" is a line break to str.splitlines, not to pyarrow
    if not buf.isascii() and any(b in buf for b in _ROW_PATH_ONLY_BREAKS):
        return None
    newlines = control_at[control == 10]
    bounds = np.concatenate(([0], newlines + 1))
    if bounds[-1] != len(buf):
        bounds = np.append(bounds, len(buf))
    n_lines = len(bounds) - 1
    lengths = np.diff(bounds)
    if lengths.max() > _CSV_FIELD_LIMIT:
        return None
    # Content length without the line ending ("\n" or "\r\n"; a lone "\r" was ruled out above).
    ends_nl = data[bounds[1:] - 1] == 10
    ends_crnl = ends_nl & (lengths >= 2) & (data[np.maximum(bounds[1:] - 2, 0)] == 13)
    content = lengths - ends_nl - ends_crnl
    quotes = (np.diff(np.searchsorted(np.flatnonzero(data == 34), bounds)) if b'"' in buf
              else np.zeros(n_lines, dtype=np.int64))
    data_line = np.arange(n_lines) >= 1
    non_empty = data_line & (content > 0)

    # pyarrow with quoting off returns a row for every non-empty line with the right number of commas
    # (quoted ones included, dropped below), skips empty lines, and is told to skip the rest.
    names = [f"c{i}" for i in range(n_columns)]
    table = pa_csv.read_csv(
        pa.py_buffer(buf),
        read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1),
        parse_options=pa_csv.ParseOptions(quote_char=False, double_quote=False, escape_char=False,
                                          newlines_in_values=False, ignore_empty_lines=True,
                                          invalid_row_handler=lambda row: "skip"),
        convert_options=pa_csv.ConvertOptions(column_types={n: pa.string() for n in names},
                                              strings_can_be_null=False, quoted_strings_can_be_null=False))
    if table.num_rows == int(non_empty.sum()):
        # A row for every non-empty line: each split into n_columns fields at its commas, so each has the
        # right number of commas, and counting them (a pass over the whole file) would tell nothing new.
        right_commas = non_empty
    else:
        commas = np.diff(np.searchsorted(np.flatnonzero(data == 44), bounds))
        right_commas = non_empty & (commas == n_columns - 1)
    plain = right_commas & (quotes == 0)
    other = np.flatnonzero(non_empty & ~plain)

    other_lines: list[tuple[int, list[str]]] = []
    rows_read = int(plain.sum())
    for k in other.tolist():
        text = buf[bounds[k]:bounds[k + 1]].decode("utf-8")
        reader = csv.reader(iter((text, "sentinel\n")))
        try:
            fields = next(reader)
        except csv.Error:
            return None
        if reader.line_num != 1:
            return None     # the record runs on past its line: only the row path reads that exactly
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue        # a blank line, as the row path skips it
        other_lines.append((k, fields))
        rows_read += 1

    arrow_lines = np.flatnonzero(right_commas)
    if table.num_rows != len(arrow_lines):
        return None         # pyarrow saw the lines differently from this scan: do not guess
    if len(arrow_lines) != rows_read - len(other_lines):
        table = table.filter(pa.array(plain[arrow_lines]))
    table_lines = np.flatnonzero(plain)
    return CsvScan(buf, bounds, table, table_lines, other_lines, rows_read)


# -- values for harmonised columns ---------------------------------------------------------------------------

def distinct_codes(values: pa.Array) -> tuple[list, np.ndarray]:
    """The distinct values of an array (as Python objects) and each row's index into them.

    Suppliers repeat a handful of values in long columns (months, forces, crime types): checking or mapping
    the distinct values in Python and spreading the answers with numpy keeps the row-wise rules exact.
    """
    encoded = pc.dictionary_encode(values)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    return encoded.dictionary.to_pylist(), encoded.indices.to_numpy(zero_copy_only=False)


_NEEDS_JSON_ESCAPE = r'["\\\x00-\x1f]'


def _may_need_json_escape(values: pa.Array) -> bool:
    """Whether any byte of the column is one encode_basestring escapes ('"', '\\', controls), read off its
    data buffer at once: a regular expression per value is 15 times slower."""
    data = np.frombuffer(values.buffers()[2] or b"", dtype=np.uint8)
    return bool((data < 0x20).any() or (data == 0x22).any() or (data == 0x5c).any())


def json_string_column(values: pa.Array) -> pa.Array:
    """Each string as a JSON string literal, exactly as json.encoder.encode_basestring writes it."""
    import json

    quoted = pc.binary_join_element_wise('"', values, '"', "")
    # Only when some value may need escaping are those found and escaped, in Python.
    if not _may_need_json_escape(values):
        return quoted
    needs = pc.match_substring_regex(values, _NEEDS_JSON_ESCAPE)
    rows = np.flatnonzero(needs.fill_null(False).to_numpy(zero_copy_only=False))
    if len(rows):
        escaped = [json.encoder.encode_basestring(values[int(i)].as_py()) for i in rows]
        quoted = pc.replace_with_mask(quoted, needs.fill_null(False), pa.array(escaped, pa.string()))
    return quoted


def json_object_column(pairs: list[tuple[str, pa.Array]]) -> pa.Array:
    """The JSON object of each row's non-empty values, the column-wise twin of pipeline.json_object.

    One pyarrow call a member and two for the object (empty values are made NULL through the validity
    bitmap, from the lengths numpy reads off the offsets): on a 700-row file the per-call overhead, not the
    bytes, is what costs. Each member carries its leading comma and the "{," this leaves is mended once:
    joining with null_handling="skip" would be simpler, but pyarrow 26 drops the rows where every input is
    NULL from its output (a shorter array), so NULLs are replaced by "" instead.
    """
    members = []
    for key, values in pairs:
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if _may_need_json_escape(values):
            member = pc.binary_join_element_wise(f',"{key}":', json_string_column(values), "")
        else:
            member = pc.binary_join_element_wise(f',"{key}":"', values, '"', "")
        empty = string_lengths(values) == 0
        if values.null_count:
            empty |= ~values.is_valid().to_numpy(zero_copy_only=False)
            member = member.fill_null("")
        if empty.any():
            member = with_nulls(member, empty)
        members.append(member)
    joined = pc.binary_join_element_wise("{", *members, "}", "", null_handling="replace", null_replacement="")
    return pc.replace_substring(joined, "{,", "{", max_replacements=1)


def json_text(values):
    """``values`` as JSON text: a struct column (a format's attributes, their JSON deferred) becomes the JSON
    object of each row's non-empty members (``json_object_column``); anything else is returned as it is.

    Why deferred: building the JSON of a 300,000-row police.uk month is 0.4 s, and done while the file is
    parsed it held up the drop's COPY; as a struct it is built chunk by chunk by the COPY's encoder thread.
    """
    if isinstance(values, pa.ChunkedArray) and pa.types.is_struct(values.type):
        values = values.combine_chunks()
    if not (isinstance(values, pa.Array) and pa.types.is_struct(values.type)):
        return values
    return json_object_column([(f.name, child) for f, child in zip(values.type, values.flatten())])


def string_lengths(values: pa.Array) -> np.ndarray:
    """Byte length of each value of a string or binary array, read off its offsets (NULLs: 0, normally)."""
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32, count=len(values) + 1, offset=values.offset * 4)
    return np.diff(offsets)


def with_nulls(values: pa.Array, null: np.ndarray) -> pa.Array:
    """``values`` (with no NULLs of its own) with NULL where ``null`` is true, sharing its buffers."""
    validity = pa.py_buffer(np.packbits(~null, bitorder="little"))
    return pa.Array.from_buffers(values.type, len(values), [validity, *values.buffers()[1:]], offset=values.offset)


def fixed_width_binary(raw: bytes, width: int, n: int) -> pa.Array:
    """A binary array of n values of ``width`` bytes each, cut from ``raw`` without copying it."""
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(raw)])


def timestamps_utc(values: list) -> pa.Array:
    """ISO 8601 strings with an offset (or aware datetimes) as a timestamp[us, UTC] array, per distinct value."""
    converted: dict = {}
    out = []
    for v in values:
        ts = converted.get(v)
        if ts is None and v not in converted:
            ts = converted[v] = None if v is None else (
                datetime.fromisoformat(v) if isinstance(v, str) else v).astimezone(timezone.utc)
        out.append(ts)
    return pa.array(out, pa.timestamp("us", tz="UTC"))


# -- binary COPY ------------------------------------------------------------------------------------------------

BINARY_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
BINARY_COPY_TRAILER = struct.pack("!h", -1)
_NULL_FIELD = struct.pack("!i", -1)
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)      # PostgreSQL's timestamp epoch
_PG_EPOCH_US = 946_684_800_000_000                           # the same, in Unix microseconds
_FIXED = {"int2": ">i2", "int8": ">i8", "float8": ">f8", "bool": "u1", "timestamptz": ">i8"}


def _encode_scalar(kind: str, value) -> bytes:
    if value is None:
        return _NULL_FIELD
    if kind in ("text", "jsonb"):
        body = (b"\x01" if kind == "jsonb" else b"") + value.encode("utf-8")
    elif kind == "bytea":
        body = bytes(value)
    elif kind == "timestamptz":
        body = struct.pack("!q", (value - _PG_EPOCH) // timedelta(microseconds=1))
    else:
        body = np.array([value], dtype=_FIXED[kind]).tobytes()
    return struct.pack("!i", len(body)) + body


def _fixed_pieces(kind: str, values: pa.Array) -> pa.Array:
    """Length word and big-endian value of a fixed-width column, one binary value a row (NULLs as -1)."""
    width = np.dtype(_FIXED[kind]).itemsize
    if kind == "timestamptz":
        numbers = values.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False) - _PG_EPOCH_US
    elif kind == "bool":
        numbers = values.cast(pa.uint8()).fill_null(0).to_numpy(zero_copy_only=False)
    else:
        numbers = values.fill_null(0).to_numpy(zero_copy_only=False)
    packed = np.empty(len(values), dtype=[("len", ">i4"), ("value", _FIXED[kind])])
    packed["len"], packed["value"] = width, numbers
    pieces = fixed_width_binary(packed.tobytes(), 4 + width, len(values))
    if values.null_count:
        pieces = pc.if_else(pc.is_valid(values), pieces, pa.scalar(_NULL_FIELD, pa.binary()))
    return pieces


def _length_words(lengths: np.ndarray, valid: np.ndarray | None) -> pa.Array:
    words = lengths.astype(">i4")
    if valid is not None:
        words[~valid] = -1
    return fixed_width_binary(words.tobytes(), 4, len(words))


def _variable_pieces(kind: str, values: pa.Array) -> list:
    """Length word and bytes of a text, jsonb or bytea column (the jsonb version byte included)."""
    if values.null_count:
        valid = values.is_valid().to_numpy(zero_copy_only=False)
        values = values.fill_null("" if pa.types.is_string(values.type) else b"")
    else:
        valid = None
    lengths = string_lengths(values)
    if kind == "jsonb":
        return [_length_words(lengths + 1, valid), b"\x01" if valid is None else
                pc.if_else(pa.array(valid), b"\x01", b""), values]
    return [_length_words(lengths, valid), values]


@dataclass
class BinaryCopyRows:
    """Rows encoded for COPY ... FROM STDIN (FORMAT binary): header, tuples, trailer; one column patchable."""

    payload: bytearray
    row_starts: np.ndarray      # byte offset of each tuple in payload

    def patch_int8(self, column_offset: int, value: int) -> None:
        """Overwrite an int8 column that every row carries at the same offset (the drop id, known last)."""
        if len(self.row_starts):
            view = np.frombuffer(self.payload, dtype=np.uint8)
            at = self.row_starts[:, None] + column_offset + np.arange(8)
            view[at] = np.frombuffer(struct.pack("!q", value), dtype=np.uint8)


def binary_copy(n_rows: int, columns: list[tuple[str, object]], header: bool = True,
                trailer: bool = True) -> BinaryCopyRows:
    """Encode ``n_rows`` rows of ``columns`` ((kind, arrow array or one value for every row), in COPY order).

    kinds: text, jsonb (JSON text), bytea (already the binary form, e.g. EWKB for geometry), int2, int8,
    float8, bool, timestamptz (arrow timestamp or an aware datetime). Each row becomes the concatenation of
    a few binary pieces (field-count word, length words, values; runs of constants merged), joined row-wise
    by pyarrow, so the payload is built without a Python loop over rows. A COPY sent in chunks has the
    header on its first chunk only and the trailer on its last (``header``, ``trailer``).
    """
    head = BINARY_COPY_HEADER if header else b""
    tail = BINARY_COPY_TRAILER if trailer else b""
    pieces: list = [struct.pack("!h", len(columns))]
    for kind, values in columns:
        if not isinstance(values, (pa.Array, pa.ChunkedArray)):
            encoded = _encode_scalar(kind, values)
            if isinstance(pieces[-1], bytes):
                pieces[-1] += encoded
            else:
                pieces.append(encoded)
            continue
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        for piece in [_fixed_pieces(kind, values)] if kind in _FIXED else _variable_pieces(kind, values):
            if isinstance(piece, bytes) and isinstance(pieces[-1], bytes):
                pieces[-1] += piece
            else:
                pieces.append(piece.view(pa.binary()) if isinstance(piece, pa.Array) else piece)
    if n_rows == 0:
        return BinaryCopyRows(bytearray(head + tail), np.zeros(0, dtype=np.int64))
    args = [pa.scalar(p, pa.binary()) if isinstance(p, bytes) else p for p in pieces]
    if all(isinstance(p, bytes) for p in pieces):
        args[0] = pa.array([pieces[0]] * n_rows, pa.binary())
    rows = pc.binary_join_element_wise(*args, b"")
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32, count=n_rows + 1, offset=rows.offset * 4)
    body = rows.buffers()[2]
    payload = bytearray(head)
    payload += memoryview(body)[offsets[0]:offsets[-1]]
    payload += tail
    return BinaryCopyRows(payload, offsets[:-1].astype(np.int64) - offsets[0] + len(head))
