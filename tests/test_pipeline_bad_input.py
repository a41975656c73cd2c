"""Messy and corrupted supplier files: each gives a clear rejection or a quarantined row, and nothing is lost.

Every case starts from a good drop already loaded (a real City of London month), feeds a corrupted copy
of another month, and checks (a) what the pipeline said, (b) loaded + quarantined = rows in the file, and
(c) the good drop's rows are all still there.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from loaders.pipeline import decode_supplier_bytes, load_paths
from tests.conftest import query

pytestmark = pytest.mark.shared_data

HEADER = ("Crime ID,Month,Reported by,Falls within,Longitude,Latitude,Location,LSOA code,LSOA name,Crime type,"
          "Last outcome category,Context\n")


def good_row(crime_id="a" * 64, month="2022-12", lon="-0.092000", lat="51.515000", location="On or near Cheapside",
             crime_type="Burglary"):
    return (f"{crime_id},{month},City of London Police,City of London Police,{lon},{lat},{location},E01032739,"
            f"City of London 001F,{crime_type},Under investigation,\n")


@pytest.fixture
def baseline(clean_data, shared_data):
    """A good drop already loaded; returns (url, its incident count, a fingerprint of its rows)."""
    [result] = load_paths(clean_data, [shared_data / "police_uk" / "2022-10-city-of-london-street.csv"],
                          progress=False)
    assert result.status == "loaded"
    return clean_data, fingerprint(clean_data)


def fingerprint(url):
    return query(url, """SELECT count(*), sum(hashtext(coalesce(supplier_record_id, '') || ST_AsText(geom)))
                         FROM incidents WHERE occurred_at < '2022-11-01'""")


def write(tmp_path: Path, name: str, content: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def load_one(url, path):
    [result] = load_paths(url, [path], progress=False)
    return result


def assert_accounted(url, result, rows_in_file):
    assert result.rows_read == rows_in_file
    assert result.rows_loaded + result.rows_quarantined == rows_in_file
    assert query(url, "SELECT count(*) FROM incidents WHERE drop_id = %s", (result.drop_id,))[0][0] == result.rows_loaded
    assert query(url, "SELECT count(*) FROM quarantine WHERE drop_id = %s", (result.drop_id,))[0][0] == \
        result.rows_quarantined


def reasons(url, drop_id):
    return query(url, "SELECT line_no, reason, raw_line FROM quarantine WHERE drop_id = %s ORDER BY line_no", (drop_id,))


@pytest.mark.parametrize("header, named", [
    (HEADER.replace("Crime type", "Offence type"), ["missing column(s) 'Crime type'", "unexpected column(s) 'Offence type'"]),
    (HEADER.replace(",Context", ""), ["missing column(s) 'Context'"]),
    (HEADER.replace("\n", ",Outcome type\n"), ["unexpected column(s) 'Outcome type'"]),
])
def test_wrong_header_rejects_the_whole_drop_and_changes_nothing(baseline, tmp_path, header, named):
    url, before = baseline
    path = write(tmp_path, "2022-12-city-of-london-street.csv", header + good_row())
    result = load_one(url, path)
    assert result.status == "rejected"
    for phrase in named:
        assert phrase in result.message
    assert fingerprint(url) == before
    assert query(url, "SELECT count(*) FROM incidents WHERE occurred_at >= '2022-11-01'") == [(0,)]
    assert query(url, "SELECT status, error FROM drops WHERE id = %s", (result.drop_id,)) == [("rejected", result.message)]


def test_columns_in_another_order_are_accepted(baseline, tmp_path):
    url, before = baseline
    names = HEADER.strip().split(",")
    order = [9] + list(range(9)) + [10, 11]  # Crime type moved to the front
    values = good_row().strip().split(",")
    body = ",".join(names[i] for i in order) + "\n" + ",".join(values[i] for i in order) + "\n"
    result = load_one(url, write(tmp_path, "2022-12-city-of-london-street.csv", body))
    assert result.status == "loaded" and result.rows_loaded == 1
    assert query(url, "SELECT supplier_category FROM incidents WHERE drop_id = %s", (result.drop_id,)) == [("Burglary",)]


def test_utf8_bom_and_crlf_are_read(baseline, tmp_path):
    url, _ = baseline
    body = (HEADER + good_row()).replace("\n", "\r\n").encode("utf-8-sig")
    result = load_one(url, write(tmp_path, "2022-12-city-of-london-street.csv", body))
    assert (result.status, result.encoding, result.rows_loaded) == ("loaded", "utf-8-sig", 1)


def test_cp1252_file_is_decoded_as_cp1252(baseline, tmp_path):
    url, before = baseline
    body = (HEADER + good_row(location="On or near Caf\u00e9 Court \u2013 \u00a3 Lane")).encode("cp1252")
    result = load_one(url, write(tmp_path, "2022-12-city-of-london-street.csv", body))
    assert (result.status, result.encoding, result.rows_loaded) == ("loaded", "cp1252", 1)
    assert query(url, "SELECT attributes->>'location' FROM incidents WHERE drop_id = %s", (result.drop_id,)) == [
        ("On or near Caf\u00e9 Court \u2013 \u00a3 Lane",)]
    assert fingerprint(url) == before


def test_stray_non_utf8_bytes_in_a_utf8_file_quarantine_that_line_only(baseline, tmp_path):
    url, before = baseline
    lines = [HEADER, good_row("b" * 64, location="On or near Caf\u00e9 Street")]
    corrupt = good_row("c" * 64).encode("utf-8").replace(b"Cheapside", b"Cheap\xff\xfeside")
    body = "".join(lines).encode("utf-8") + corrupt + good_row("d" * 64).encode("utf-8")
    result = load_one(url, write(tmp_path, "2022-12-city-of-london-street.csv", body))
    assert result.status == "loaded"
    assert_accounted(url, result, 3)
    [(line_no, reason, raw)] = reasons(url, result.drop_id)
    assert line_no == 3 and reason.startswith("not valid UTF-8 (byte 0xff")
    assert "\\xff\\xfe" in raw  # the raw line is kept, undecodable bytes shown escaped
    assert fingerprint(url) == before


def test_undecodable_file_is_rejected_with_advice(baseline, tmp_path):
    url, before = baseline
    body = HEADER.encode() + good_row().encode().replace(b"Cheapside", b"Cheap\x81\x8dside")
    result = load_one(url, write(tmp_path, "2022-12-city-of-london-street.csv", body))
    assert result.status == "rejected" and "neither UTF-8 nor cp1252" in result.message
    assert "re-export it as UTF-8" in result.message
    assert fingerprint(url) == before


def test_truncated_last_line_is_quarantined(baseline, shared_data, tmp_path):
    url, before = baseline
    original = (shared_data / "police_uk" / "2022-12-city-of-london-street.csv").read_text()
    truncated = original.rstrip("\n")[:-60]  # cut mid-record, no final newline
    rows = truncated.count("\n")  # data rows = lines after the header, the last one partial
    result = load_one(url, write(tmp_path, "2022-12-city-of-london-street.csv", truncated))
    assert result.status == "loaded"
    assert_accounted(url, result, rows)
    last = reasons(url, result.drop_id)[-1]
    assert last[0] == rows + 1 and "truncated or malformed row" in last[1]
    assert fingerprint(url) == before


def test_unterminated_quote_quarantines_the_rest(baseline, tmp_path):
    url, before = baseline
    body = HEADER + good_row("e" * 64) + good_row("f" * 64).replace("On or near", '"On or near')
    result = load_one(url, write(tmp_path, "2022-12-city-of-london-street.csv", body))
    assert result.status == "loaded"
    assert_accounted(url, result, 2)
    [(line_no, reason, raw)] = reasons(url, result.drop_id)
    # The open quote swallows the rest of the file into one short record, quarantined whole.
    assert line_no == 3 and "truncated or malformed row" in reason and "f" * 64 in raw


@pytest.mark.parametrize("row, reason", [
    (good_row(lon="abc"), "unparseable coordinates Longitude='abc'"),
    (good_row(lon="51.515000", lat="-0.092000"), "coordinates look swapped"),
    (good_row(lon="2.352200", lat="48.856600"), "coordinates outside Great Britain"),
    (good_row(lon="-0.973000", lat="51.454000"), "outside the configured area"),  # Reading
    (good_row(lon="", lat="", location="No Location"), "no coordinates (Location: 'No Location')"),
    (good_row(month="2022-13"), "unparseable month '2022-13'"),
    (good_row(month="2099-01"), "month 2099-01 is in the future"),
    (good_row(month="2022-11"), "month 2022-11 differs from the drop's month 2022-12"),
    (good_row(crime_type="Jaywalking"), "crime type 'Jaywalking' has no mapping"),
])
def test_bad_rows_are_quarantined_with_a_reason(baseline, tmp_path, row, reason):
    url, before = baseline
    body = HEADER + good_row("1" * 64) + row + good_row("2" * 64)
    result = load_one(url, write(tmp_path, "2022-12-city-of-london-street.csv", body))
    assert result.status == "loaded"
    assert_accounted(url, result, 3)
    [(line_no, got_reason, raw)] = reasons(url, result.drop_id)
    assert line_no == 3 and got_reason.startswith(reason) and raw == row
    assert fingerprint(url) == before


def test_point_on_a_thames_bridge_is_assigned_to_the_nearest_lsoa(baseline, tmp_path):
    url, _ = baseline
    # London Bridge, mid-river: in no (coastline-clipped) LSOA, but within the snap tolerance of one.
    result = load_one(url, write(tmp_path, "2022-12-city-of-london-street.csv",
                                 HEADER + good_row(lon="-0.087700", lat="51.508300")))
    assert result.rows_loaded == 1
    [(borough,)] = query(url, "SELECT borough_code FROM incidents WHERE drop_id = %s", (result.drop_id,))
    assert borough in ("E09000001", "E09000028")  # the City or Southwark


def test_empty_file_unknown_name_and_gzip(baseline, tmp_path):
    url, before = baseline
    empty = load_one(url, write(tmp_path, "2022-12-city-of-london-street.csv", ""))
    assert empty.status == "rejected" and "empty" in empty.message
    unknown = load_one(url, write(tmp_path, "crimes-december.csv", HEADER + good_row()))
    assert unknown.status == "rejected" and "no supplier format claims the file name" in unknown.message
    gz = load_one(url, write(tmp_path, "2022-12-city-of-london-street.csv.gz",
                             gzip.compress((HEADER + good_row()).encode())))
    assert gz.status == "loaded" and gz.rows_loaded == 1
    missing = load_paths(url, [tmp_path / "2022-09-city-of-london-street.csv"], progress=False)[0]
    assert missing.status == "failed" and "no such file" in missing.message
    assert fingerprint(url) == before


def test_decode_supplier_bytes_prefers_utf8():
    assert decode_supplier_bytes("a,\u00e9\n".encode("utf-8")).encoding == "utf-8"
    assert decode_supplier_bytes("a,\u00e9\n".encode("cp1252")).encoding == "cp1252"
    assert decode_supplier_bytes(b"\xef\xbb\xbfa,b\n").lines == ["a,b\n"]
