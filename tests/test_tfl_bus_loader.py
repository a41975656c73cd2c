"""The TfL bus safety loader on the real extract (2015-01 .. 2018-06), against a real PostGIS.

Expected numbers come straight from the CSV and from the documented rules written out here: borough names
to ONS codes (a table of its own below, not the loader's), which rows have no place in London, and the
young-victim rule from the age band. Bad-input cases build small files from real rows and check that nothing
is lost.
"""
from __future__ import annotations

import csv
import gzip
import io
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from loaders.pipeline import load_paths
from tests.conftest import query

pytestmark = pytest.mark.shared_data

EXTRACT = "tfl/tfl_bus_safety_2015-01_to_2018-06.csv.gz"
ROWS_IN_EXTRACT = 21623
# TfL's borough spellings -> ONS codes, as the data writes them.
BOROUGH_CODES = {
    "City of London": "E09000001", "Barking & Dagenham": "E09000002", "Barnet": "E09000003",
    "Bexley": "E09000004", "Brent": "E09000005", "Bromley": "E09000006", "Camden": "E09000007",
    "Croydon": "E09000008", "Ealing": "E09000009", "Enfield": "E09000010", "Greenwich": "E09000011",
    "Hackney": "E09000012", "Hammersmith & Fulham": "E09000013", "Haringey": "E09000014", "Harrow": "E09000015",
    "Havering": "E09000016", "Hillingdon": "E09000017", "Hounslow": "E09000018", "Islington": "E09000019",
    "Kensington & Chelsea": "E09000020", "Kingston upon Thames": "E09000021", "Lambeth": "E09000022",
    "Lewisham": "E09000023", "Merton": "E09000024", "Newham": "E09000025", "Redbridge": "E09000026",
    "Richmond Upon Thames": "E09000027", "Southwark": "E09000028", "Sutton": "E09000029",
    "Tower Hamlets": "E09000030", "Waltham Forest": "E09000031", "Wandsworth": "E09000032",
    "Westminster": "E09000033",
}
EVENT_TYPE_CATEGORY = {
    "Assault": "transport_assault", "Robbery": "transport_robbery", "Vandalism Hooliganism": "transport_vandalism",
    "Slip Trip Fall": "transport_slip_trip_fall", "Onboard Injuries": "transport_onboard_injury",
    "Personal Injury": "transport_personal_injury", "Collision Incident": "transport_collision",
    "Activity Incident Event": "transport_activity_incident",
    "Safety Critical Failure": "transport_safety_critical_failure", "Fire": "transport_fire",
}
YOUNG = {"Child": True, "Youth": True, "Adult": False, "Elderly": False, "Unknown": None}


def read_text(path: Path) -> str:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return raw.decode("utf-8-sig")


def read_rows(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(read_text(path))))


def write(tmp_path: Path, name: str, content: str | bytes, folder: str = "drop") -> Path:
    path = tmp_path / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def load_one(url: str, path: Path):
    [result] = load_paths(url, [path], progress=False)
    return result


def assert_accounted(url, result, rows_in_file):
    assert result.status == "loaded", result.summary_line()
    assert result.rows_read == rows_in_file
    assert result.rows_loaded + result.rows_quarantined == rows_in_file
    assert query(url, "SELECT count(*) FROM incidents WHERE drop_id = %s", (result.drop_id,))[0][0] == result.rows_loaded
    assert query(url, "SELECT count(*) FROM quarantine WHERE drop_id = %s", (result.drop_id,))[0][0] == \
        result.rows_quarantined


def test_real_extract_loads_with_exact_row_accounting(clean_data, shared_data):
    path = shared_data / EXTRACT
    rows = read_rows(path)
    assert len(rows) == ROWS_IN_EXTRACT
    result = load_one(clean_data, path)
    assert_accounted(clean_data, result, len(rows))
    placed = [r for r in rows if r["Borough"] in BOROUGH_CODES]
    assert result.rows_loaded == len(placed)
    assert dict(query(clean_data, "SELECT reason, count(*) FROM quarantine GROUP BY 1")) == {
        "no location in London: outside London ('None London Borough')":
            sum(r["Borough"] == "None London Borough" for r in rows),
        "no location in London: no borough given ('Not specified')": sum(r["Borough"] == "Not specified" for r in rows),
    }

    by_category = dict(query(clean_data, """SELECT c.code, count(*) FROM incidents i
                                            JOIN categories c ON c.id = i.category_id AND c.domain = 'transport'
                                            GROUP BY 1"""))
    assert by_category == dict(Counter(EVENT_TYPE_CATEGORY[r["Incident Event Type"]] for r in placed))
    assert by_category["transport_assault"] > 500

    # Borough precision, from the borough name; no point, no LSOA.
    assert dict(query(clean_data, "SELECT borough_code, count(*) FROM incidents GROUP BY 1")) == \
        dict(Counter(BOROUGH_CODES[r["Borough"]] for r in placed))
    assert query(clean_data, """SELECT DISTINCT location_precision, geom IS NULL, lsoa_code, msoa_code, time_precision,
                                       access_level FROM incidents""") == [("borough", True, None, None, "month", 10)]
    # Identical rows are genuine repeats (several people hurt): all of them are loaded.
    assert max(Counter(tuple(r.values()) for r in placed).values()) > 1


def test_real_extract_months_themes_and_attributes(clean_data, shared_data):
    path = shared_data / EXTRACT
    placed = [r for r in read_rows(path) if r["Borough"] in BOROUGH_CODES]
    assert load_one(clean_data, path).status == "loaded"

    def month(r):
        day, mon, year = r["Date Of Incident"].split("-")
        return f"{year}-{mon}"

    assert dict(query(clean_data, """SELECT to_char(occurred_at AT TIME ZONE 'Europe/London', 'YYYY-MM-DD HH24:MI'),
                                            count(*) FROM incidents GROUP BY 1""")) == \
        {f"{m}-01 00:00": n for m, n in Counter(month(r) for r in placed).items()}

    # Young victim from the age band; night-time economy unknowable at month precision.
    themes = dict(query(clean_data, """SELECT coalesce(theme_young_victim::text, 'null'), count(*) FROM incidents
                                       GROUP BY 1"""))
    expected = Counter(str(YOUNG[r["Victims Age"]]).lower().replace("none", "null") for r in placed)
    assert themes == dict(expected)
    assert query(clean_data, "SELECT count(theme_night_time_economy) FROM incidents") == [(0,)]
    assert query(clean_data, "SELECT count(*) FROM incidents WHERE theme_weapon OR theme_arson") == [(0,)]

    # Route, operator, garage, injury, victim kept as given (trimmed: "Cyclist " is "Cyclist").
    victims = dict(query(clean_data, "SELECT attributes->>'victim_category', count(*) FROM incidents GROUP BY 1"))
    assert victims == dict(Counter(r["Victim Category"].strip() for r in placed))
    assert dict(query(clean_data, "SELECT attributes->>'route', count(*) FROM incidents GROUP BY 1")) == \
        dict(Counter(r["Route"] for r in placed))
    assert query(clean_data, """SELECT count(*) FROM incidents WHERE attributes->>'injury_result'
                                = 'Taken to Hospital – Reported Serious Injury or Severity Unknown'""")[0][0] == \
        sum(r["Injury Result Description"].startswith("Taken to Hospital") for r in placed)


def test_wrong_header_rejects_the_drop(clean_data, shared_data, tmp_path):
    lines = read_text(shared_data / EXTRACT).splitlines(keepends=True)
    bad = lines[0].replace("Victims Age", "Age") + "".join(lines[1:11])
    result = load_one(clean_data, write(tmp_path, "tfl_bus_safety_bad.csv", bad))
    assert result.status == "rejected"
    assert "missing column(s) 'Victims Age'" in result.message and "unexpected column(s) 'Age'" in result.message
    assert query(clean_data, "SELECT count(*) FROM incidents") == [(0,)]


def test_encodings_and_bad_rows(clean_data, shared_data, tmp_path):
    lines = read_text(shared_data / EXTRACT).splitlines(keepends=True)
    header = lines[0]
    # Without the BOM, and in cp1252 (the en dash in "Taken to Hospital – ..." is byte 0x96 there).
    dashed = [l for l in lines[1:] if "–" in l][:30]
    result = load_one(clean_data, write(tmp_path, "tfl_bus_safety_cp1252.csv", (header + "".join(dashed)).encode("cp1252")))
    assert_accounted(clean_data, result, 30)
    assert result.encoding == "cp1252"
    assert query(clean_data, "SELECT count(*) FROM incidents WHERE attributes->>'injury_result' LIKE '%%–%%'") == [
        (result.rows_loaded,)]

    names = next(csv.reader([header]))

    def changed(line: str, **changes) -> str:
        fields = dict(zip(names, next(csv.reader([line]))))
        fields.update({k.replace("_", " "): v for k, v in changes.items()})
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow([fields[n] for n in names])
        return out.getvalue()

    good = [l for l in lines[1:] if next(csv.reader([l]))[6] in BOROUGH_CODES][:10]
    future = date.today().year + 1
    bad = [
        changed(good[0], Year=str(future), Date_Of_Incident=f"01-01-{future}"),   # line 12: future
        changed(good[1], Date_Of_Incident="2016-01-01"),                            # 13: wrong format
        changed(good[2], Year="2014"),                                              # 14: year disagrees
        changed(good[3], Borough="Gotham"),                                         # 15: unknown borough
        changed(good[4], Incident_Event_Type="Alien abduction"),                    # 16: unmapped
        changed(good[5], Victims_Age="Teen"),                                       # 17: unknown age band
        good[6],                                                                    # 18: identical repeat: kept
    ]
    result = load_one(clean_data, write(tmp_path, "tfl_bus_safety_bad_rows.csv", "\ufeff" + header + "".join(good + bad)))
    assert_accounted(clean_data, result, 17)
    assert result.rows_loaded == 11
    reasons = dict(query(clean_data, "SELECT line_no, reason FROM quarantine WHERE drop_id = %s", (result.drop_id,)))
    assert sorted(reasons) == [12, 13, 14, 15, 16, 17]
    assert "in the future" in reasons[12]
    assert "unparseable Date Of Incident '2016-01-01' (expected dd-mm-yyyy)" in reasons[13]
    assert "Year '2014' disagrees" in reasons[14]
    assert "unrecognised Borough 'Gotham'" in reasons[15]
    assert "'Alien abduction' has no mapping" in reasons[16]
    assert "unrecognised Victims Age 'Teen'" in reasons[17]


def test_same_file_twice_and_reissue(clean_data, shared_data, tmp_path):
    path = shared_data / EXTRACT
    first = load_one(clean_data, path)
    before = query(clean_data, "SELECT count(*), sum(hashtext(attributes::text)) FROM incidents")
    again = load_one(clean_data, path)
    assert again.status == "skipped" and again.drop_id == first.drop_id
    assert query(clean_data, "SELECT count(*), sum(hashtext(attributes::text)) FROM incidents") == before

    # A file named for another period is added, replacing nothing (rows of June 2018 stand in for it).
    lines = read_text(path).splitlines(keepends=True)
    later = [l for l in lines[1:] if ",01-06-2018," in l][:40]
    quarter = load_one(clean_data, write(tmp_path, "tfl_bus_safety_2018-07_to_2018-09.csv",
                                         lines[0] + "".join(later)))
    assert quarter.status == "loaded" and quarter.replaced_drop_ids == []

    # TfL re-issues the same period with corrections: it replaces the earlier drop of that period.
    corrected = lines[0] + "".join(lines[1:1001])
    reissue = load_one(clean_data, write(tmp_path, "tfl_bus_safety_2015-01_to_2018-06.csv", corrected, "reissue"))
    assert reissue.status == "loaded" and reissue.replaced_drop_ids == [first.drop_id]
    assert query(clean_data, "SELECT drop_id, count(*) FROM incidents GROUP BY 1 ORDER BY 1") == [
        (quarter.drop_id, quarter.rows_loaded), (reissue.drop_id, reissue.rows_loaded)]
    assert reissue.rows_loaded == sum(1 for r in csv.DictReader(io.StringIO(corrected)) if r["Borough"] in BOROUGH_CODES)
