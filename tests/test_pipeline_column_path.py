"""The pipeline's column path gives exactly what the row path gives, and the batch loader keeps file order.

The row path (csv module + SupplierFormat.harmonise_row) defines what a drop means; the column path
(pyarrow + harmonise_columns) must reproduce it row for row: the same harmonised values, the same
quarantine (line number, raw text, reason), the same replace key, or decline the file. Checked on the real
police.uk files, on files full of anomalies, and on randomly corrupted files, each also cut into parts
(parse_columns_in_parts, how large files are parsed); then end to end (the rows in the database are the same
either way), the binary COPY encoder on every kind of value, and a batch holding a month, its re-issue and a
duplicate (written by two connections, still in file order).
"""
from __future__ import annotations

import codecs
import random
from datetime import datetime, timezone
from pathlib import Path

import psycopg2
import pyarrow as pa
import pytest

from db import libpq_dsn
from loaders import pipeline
from loaders.columnar import binary_copy, json_text
from loaders.pipeline import (HARMONISED_COLUMNS, HARMONISED_TYPES, decode_supplier_bytes, format_for,
                              load_category_mapping, load_paths, parse_columns, parse_columns_in_parts,
                              parse_rows, read_drop_bytes, utf8_for_column_path)
from tests.conftest import query, truncate_data

HEADER = ("Crime ID,Month,Reported by,Falls within,Longitude,Latitude,Location,LSOA code,LSOA name,Crime type,"
          "Last outcome category,Context\n")
NAME = "2022-12-city-of-london-street.csv"


def row(n=0, month="2022-12", lon="-0.092000", lat="51.515000", location="On or near Cheapside",
        crime_type="Burglary", force="City of London Police", context="", crime_id=None, outcome="Under investigation"):
    crime_id = f"{n:064x}" if crime_id is None else crime_id
    return (f"{crime_id},{month},{force},City of London Police,{lon},{lat},{location},E01032739,"
            f"City of London 001F,{crime_type},{outcome},{context}\n")


@pytest.fixture(scope="module")
def mapping(db_url):
    conn = psycopg2.connect(libpq_dsn(db_url))
    try:
        with conn.cursor() as cur:
            return load_category_mapping(cur, "police_uk")
    finally:
        conn.close()


def both_paths(name: str, data: bytes, mapping):
    """(row path result, column path result or None when it declined), each with its format instance."""
    fmt_class = format_for(Path(name))
    by_rows, by_columns = fmt_class(name, mapping), fmt_class(name, mapping)
    rows = parse_rows(by_rows, decode_supplier_bytes(data))
    column_input = utf8_for_column_path(data)
    columns = parse_columns(by_columns, column_input[0], None) if column_input else None
    return (rows, by_rows), (columns, by_columns)


def parsed_in_parts(name: str, data: bytes, mapping, parts: int = 3):
    """The column path with the file cut into ``parts`` parts, however small (with its format instance)."""
    fmt = format_for(Path(name))(name, mapping)
    column_input = utf8_for_column_path(data)
    return parse_columns_in_parts(fmt, column_input[0], None, parts, min_part_bytes=1) if column_input else None, fmt


def assert_same(row_result, column_result):
    (rows, by_rows), (columns, by_columns) = row_result, column_result
    assert columns.rows_read == rows.rows_read
    assert columns.quarantined == rows.quarantined
    assert columns.n_rows == rows.n_rows
    for name in HARMONISED_COLUMNS:
        expected, got = rows.columns[name], json_text(columns.columns[name])
        if not isinstance(got, pa.Array):
            got = pa.array([got] * columns.n_rows, HARMONISED_TYPES[name])
        assert got.cast(HARMONISED_TYPES[name]).to_pylist() == expected.cast(HARMONISED_TYPES[name]).to_pylist(), name
    assert list(columns.line_ends) == list(rows.line_ends)
    assert by_columns.replace_key() == by_rows.replace_key()


def check(data: bytes, mapping, expect_column_path: bool = True, name: str = NAME):
    """The row path and the column path, whole and in parts, agree (or the column path declines, both ways)."""
    row_result, column_result = both_paths(name, data, mapping)
    in_parts = parsed_in_parts(name, data, mapping)
    if column_result[0] is None:
        assert not expect_column_path, "the column path declined a file it should read"
        assert in_parts[0] is None, "in parts, the column path read a file it declines whole"
        return None
    assert in_parts[0] is not None, "in parts, the column path declined a file it reads whole"
    assert_same(row_result, column_result)
    assert_same(row_result, in_parts)
    # The raw lines of every row (what a row found outside the area is quarantined with) are the file's.
    rows, parts = row_result[0], in_parts[0]
    line_no = parts.columns["line_no"].to_pylist()
    for k in range(0, parts.n_rows, max(1, parts.n_rows // 200)):
        assert parts.raw_text(line_no[k] - 1, int(parts.line_ends[k])) == rows.raw_text(line_no[k] - 1, int(rows.line_ends[k]))
    return column_result[0]


@pytest.mark.shared_data
def test_column_path_matches_the_row_path_on_the_real_files(shared_data, mapping):
    files = sorted((shared_data / "police_uk").glob("*-street.csv"))
    files += sorted((shared_data / "police_uk" / "metropolitan_burglary_only").glob("*-street.csv.gz"))
    assert len(files) == 22
    for path in files:
        parsed = check(read_drop_bytes(path)[0], mapping, name=path.name)
        assert parsed.n_rows > 500


ANOMALIES = [
    row(1, lon="", lat="", location="No Location"),                 # no coordinates
    row(2, lon="abc"),                                               # unparseable
    row(3, lon=" -0.092000"),                                        # float() accepts it: kept, row-wise
    row(4, lon="-9.2e-2"),                                           # exponent: kept, row-wise
    row(5, lon="51.515000", lat="-0.092000"),                        # swapped
    row(6, lon="2.352200", lat="48.856600"),                         # Paris
    row(7, lon="-0.973000", lat="51.454000"),                        # Reading: outside the area
    row(8, month="2022-13"), row(9, month="2099-01"), row(10, month="2022-11"), row(11, month=" 2022-12"),
    row(12, crime_type="Jaywalking"), row(13, force="   "), row(14, force=" City of London Police "),
    row(15, location='"On or near Cheapside, Poultry"'),             # quoted comma
    row(16, location='"On or near ""The"" Cheapside"'),              # doubled quotes
    row(17, location="On or near Back\\slash"), row(18, location="On or near Caf\u00e9 \u2013 Lane"),
    row(19, context="tab\there"), row(20, location='Bad"quote'),     # tab in a value; stray quote
    row(21, crime_id=""),                                            # ASB-style blank id
    row(22).replace(",Under investigation,", ","),                   # a field short
    row(23).replace("\n", ",extra\n"),                               # a field too many
    "\n", "   \n", ",,,,,,,,,,,\n",                                  # blank, whitespace-only, all empty
    row(24, lon="-0.087700", lat="51.508300"),                       # a Thames bridge (snapped)
]


def test_column_path_matches_the_row_path_on_anomalies(mapping):
    body = HEADER + "".join(row(100 + i) for i in range(20)) + "".join(ANOMALIES) + row(200)
    parsed = check(body.encode("utf-8"), mapping)
    assert len(parsed.quarantined) >= 10
    # The same with CRLF line ends, a BOM, and as cp1252; and a last line with no line end.
    check(codecs.BOM_UTF8 + body.replace("\n", "\r\n").encode("utf-8"), mapping)
    check(body.replace("\u2013", "-").encode("cp1252"), mapping)
    check(body.rstrip("\n").encode("utf-8"), mapping)
    check(body[:-40].encode("utf-8"), mapping)       # truncated mid-row


@pytest.mark.parametrize("body", [
    HEADER + row(1) + row(2, location='"On or near\nCheapside"') + row(3),     # quoted line break
    HEADER + row(1) + row(2, location='"On or near Cheapside') + row(3),       # unterminated quote
    HEADER + row(1) + row(2, location="On or near\rCheapside") + row(3),       # lone carriage return
    HEADER + row(1) + row(2, location="On or near\x00Cheapside") + row(3),     # NUL
    HEADER + row(1) + row(2, location="On or near\u2028Cheapside") + row(3),   # a Unicode line separator
    HEADER + row(1) + row(2, location="x" * 140_000) + row(3),                 # over the csv field limit
])
def test_files_only_the_row_path_reads_exactly_are_left_to_it(mapping, body):
    assert check(body.encode("utf-8"), mapping, expect_column_path=False) is None


def test_stray_bytes_and_undecodable_files_are_left_to_the_row_path(mapping):
    mixed = HEADER.encode() + row(1, location="Caf\u00e9").encode() + row(2).encode().replace(b"Cheap", b"Ch\xffeap")
    assert utf8_for_column_path(mixed) is None
    assert utf8_for_column_path((HEADER + row(1)).encode("utf-8").replace(b"Cheap", b"Ch\x81eap")) is None
    assert utf8_for_column_path(codecs.BOM_UTF8 + b"a\n") == (b"a\n", "utf-8-sig")


MUTATIONS = [
    lambda r, rng: r,
    lambda r, rng: r.replace("\n", "\r\n"),
    lambda r, rng: "\n" + r,
    lambda r, rng: " \t \n" + r,
    lambda r, rng: r.replace(",", ",,", 1),
    lambda r, rng: r.replace(",", "", 1),
    lambda r, rng: r.replace("2022-12", rng.choice(["2022-1", "2023-12", "", "2022-12 ", "x"])),
    lambda r, rng: r.replace("-0.", rng.choice(["", "+0.", "-.", "--0.", "-0,", "-00."]), 1),
    lambda r, rng: r.replace("51.", rng.choice(["5.", "151.", "", "51,"]), 1),
    lambda r, rng: r.replace("Burglary", rng.choice(["burglary", "Robbery", "", "Other crime"])),
    lambda r, rng: r.replace("On or near", rng.choice(['"On, or near"', 'On "or" near', "On\\or", "\u00e9", '"x""y"'])),
    lambda r, rng: r.replace("City of London Police,City", rng.choice([" ,City", ",City", "Met,City"]), 1),
    lambda r, rng: r.replace("Under investigation", rng.choice(["", "\t", "Status update unavailable"])),
]


def test_column_path_matches_the_row_path_on_random_corruptions(mapping):
    rng = random.Random(20261123)
    for _ in range(60):
        lines = [rng.choice(MUTATIONS)(row(i, lon=f"-0.{rng.randint(80000, 99999):06d}",
                                           lat=f"51.{rng.randint(505000, 520000):06d}"), rng) for i in range(40)]
        data = (HEADER + "".join(lines)).encode("utf-8")
        check(data, mapping, expect_column_path=None)   # declining is allowed; a different answer is not


def test_binary_copy_round_trips_every_kind(db_conn):
    cur = db_conn.cursor()
    cur.execute("""CREATE TEMP TABLE kinds (i8 bigint, t text, ts timestamptz, i2 smallint, b boolean,
                                            g geometry(Point, 27700), f float8, j jsonb)""")
    ewkb = bytes.fromhex("0101000020346c0000000000000088c340000000000088c340")  # POINT(10000 10000), SRID 27700
    when = datetime(2022, 6, 30, 23, 0, tzinfo=timezone.utc)
    encoded = binary_copy(3, [
        ("int8", 0),
        ("text", pa.array(["plain", None, "caf\u00e9 \t tab \\ \n"])),
        ("timestamptz", pa.array([when, None, datetime(1999, 12, 31, tzinfo=timezone.utc)],
                                 pa.timestamp("us", tz="UTC"))),
        ("int2", pa.array([1, None, -32768], pa.int16())),
        ("bool", pa.array([True, None, False])),
        ("bytea", pa.array([ewkb, None, ewkb], pa.binary())),
        ("float8", pa.array([-0.1164151, None, 51.5247973])),
        ("jsonb", "{\"k\":\"v\u00e9\"}"),
    ])
    encoded.patch_int8(6, 42)
    cur.copy_expert("COPY kinds FROM STDIN WITH (FORMAT binary)", pipeline.BytesChunkReader(encoded.payload))
    cur.execute("SELECT i8, t, ts, i2, b, ST_AsText(g), f, j->>'k' FROM kinds")
    assert cur.fetchall() == [
        (42, "plain", when, 1, True, "POINT(10000 10000)", -0.1164151, "v\u00e9"),
        (42, None, None, None, None, None, None, "v\u00e9"),
        (42, "caf\u00e9 \t tab \\ \n", datetime(1999, 12, 31, tzinfo=timezone.utc), -32768, False,
         "POINT(10000 10000)", 51.5247973, "v\u00e9"),
    ]


INCIDENT_FIELDS = """i.supplier, i.supplier_record_id, i.occurred_at, i.time_precision, i.category_id,
    i.supplier_category, i.theme_weapon, i.theme_dava, i.theme_young_victim, i.theme_night_time_economy,
    i.theme_arson, ST_AsEWKT(i.geom), i.longitude, i.latitude, i.location_precision, i.lsoa_code, i.msoa_code,
    i.borough_code, i.access_level, i.attributes::text"""


def loaded_state(url):
    """Everything a load wrote, in an order that does not depend on ids (two writers interleave incident ids)."""
    return (sorted(query(url, f"SELECT d.file_name, {INCIDENT_FIELDS} FROM incidents i JOIN drops d ON d.id = i.drop_id"),
                   key=repr),
            query(url, "SELECT d.file_name, line_no, raw_line, reason FROM quarantine q JOIN drops d ON d.id = q.drop_id "
                       "ORDER BY d.id, line_no"),
            query(url, """SELECT file_name, status, encoding, rows_read, rows_loaded, rows_quarantined, replace_key,
                                 period_start, period_end FROM drops ORDER BY id"""))


@pytest.mark.shared_data
def test_both_paths_load_the_same_rows(clean_data, shared_data, tmp_path, monkeypatch):
    files = sorted((shared_data / "police_uk").glob("*-street.csv"))[:3]
    files += sorted((shared_data / "police_uk" / "metropolitan_burglary_only").glob("*-street.csv.gz"))[:2]
    messy = tmp_path / NAME
    messy.write_text(HEADER + "".join(row(100 + i) for i in range(20)) + "".join(ANOMALIES))
    files.append(messy)
    assert [r.status for r in load_paths(clean_data, files, progress=False)] == ["loaded"] * len(files)
    by_columns = loaded_state(clean_data)

    truncate_data(clean_data)
    monkeypatch.setattr(pipeline, "PARSE_PART_MIN_BYTES", 1)    # every file parsed in parts
    assert [r.status for r in load_paths(clean_data, files, progress=False)] == ["loaded"] * len(files)
    assert loaded_state(clean_data) == by_columns

    truncate_data(clean_data)
    monkeypatch.setattr(pipeline, "has_column_path", lambda fmt: False)
    assert [r.status for r in load_paths(clean_data, files, progress=False)] == ["loaded"] * len(files)
    assert loaded_state(clean_data) == by_columns
    assert len(by_columns[0]) > 9_000 and len(by_columns[1]) > 100


@pytest.mark.shared_data
def test_a_batch_with_a_reissue_and_a_duplicate_is_written_in_file_order(clean_data, shared_data, tmp_path):
    october = shared_data / "police_uk" / "2022-10-city-of-london-street.csv"
    november = shared_data / "police_uk" / "2022-11-city-of-london-street.csv"
    lines = october.read_text().splitlines(keepends=True)
    reissue = tmp_path / october.name
    reissue.write_text("".join([lines[0]] + [l.replace("Under investigation", "Local resolution") for l in lines[1:-5]]))
    results = load_paths(clean_data, [october, november, reissue, october, november], progress=False)
    assert [r.status for r in results] == ["loaded", "loaded", "loaded", "skipped", "skipped"]
    assert [r.drop_id for r in results[:3]] == sorted(r.drop_id for r in results[:3])
    assert results[2].replaced_drop_ids == [results[0].drop_id]
    assert query(clean_data, "SELECT id, status FROM drops ORDER BY id") == [
        (results[0].drop_id, "superseded"), (results[1].drop_id, "loaded"), (results[2].drop_id, "loaded")]
    assert query(clean_data, "SELECT DISTINCT drop_id FROM incidents WHERE occurred_at < '2022-11-01'") == [
        (results[2].drop_id,)]


def test_a_drop_is_written_by_borough_then_along_a_z_order_curve(clean_data, tmp_path):
    """A drop's rows reach disk grouped by borough and, within a borough, in Z-order of 100 m squares (rows
    without a point last), so an area's incidents share few pages: consecutive rows on disk lie far closer
    together (median step) than the same rows in the order of a file that has no spatial order."""
    from loaders.demo import generate_demo_drops

    files = generate_demo_drops(tmp_path, months=1, end_month="2023-03", rows_per_month=6_000,
                                fire_and_transport=False)
    met = [f for f in files if f.name.endswith("metropolitan-street.csv")]
    header, *lines = met[0].read_text().splitlines(keepends=True)
    random.Random(5).shuffle(lines)  # a supplier's file in no spatial order
    met[0].write_text(header + "".join(lines))
    load_paths(clean_data, met, progress=False, refresh_rollups=False)
    # In the order the COPY wrote them (ids come from a sequence as rows arrive; pages fill in that order).
    on_disk = query(clean_data, "SELECT borough_code, ST_X(geom), ST_Y(geom), supplier_record_id FROM incidents "
                                "ORDER BY id")
    assert len(on_disk) > 5_000
    boroughs = [b for b, *_ in on_disk if b is not None]
    assert boroughs == sorted(boroughs), "grouped by borough, in code order"
    assert len(set(boroughs)) > 20

    def median_step(points) -> float:
        steps = sorted(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5 for (x0, y0), (x1, y1) in zip(points, points[1:]))
        return steps[len(steps) // 2]
    file_order = {line.split(",")[0]: k for k, line in enumerate(met[0].read_text().splitlines())}
    by_file = sorted((r for r in on_disk if r[1] is not None), key=lambda r: file_order.get(r[3], 0))
    disk_step = median_step([(x, y) for _, x, y, _ in on_disk if x is not None])
    file_step = median_step([(x, y) for _, x, y, _ in by_file])
    assert disk_step < file_step / 4, (disk_step, file_step)
