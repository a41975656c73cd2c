"""The fire and transport demo drops are in LFB's and TfL's own layouts and load through the real pipeline.

Checked on generated files: file names, headers, BOM (TfL) or none (LFB), line ends, the LFB point rule
(dwellings: rounded point only; others: exact point whose OSTN15 twin is the printed latitude/longitude),
determinism per seed, that ``generate_demo_drops`` writes them, and that every row is loaded or, for TfL's
"None London Borough" / "Not specified" rows only, quarantined.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from loaders.demo import generate_demo_drops
from loaders.demo_fire_transport import generate_fire_transport_drops
from loaders.lfb import LfbIncidentFormat
from loaders.tfl_bus import TflBusSafetyFormat

MONTHS = ["2024-02", "2024-03", "2024-04"]


def read_rows(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_bytes().decode("utf-8-sig"))))


@pytest.fixture(scope="module")
def drops(tmp_path_factory) -> list[Path]:
    return generate_fire_transport_drops(tmp_path_factory.mktemp("fire"), MONTHS, seed=11)


def test_file_names_headers_and_encodings(drops):
    assert [p.name for p in drops] == ["lfb_incidents_2024-02.csv", "lfb_incidents_2024-03.csv",
                                       "lfb_incidents_2024-04.csv", "tfl_bus_safety_2024-02_to_2024-03.csv",
                                       "tfl_bus_safety_2024-04_to_2024-04.csv"]
    for path in drops[:3]:
        data = path.read_bytes()
        assert data.startswith((",".join(LfbIncidentFormat.columns) + "\n").encode())   # no BOM; "£" as UTF-8
        assert b"\r\n" not in data
    for path in drops[3:]:
        data = path.read_bytes()
        assert data.startswith(b"\xef\xbb\xbf" + (",".join(TflBusSafetyFormat.columns) + "\n").encode())


def test_lfb_rows_follow_lfb_s_point_rules(drops):
    from loaders.areas import bng_to_wgs84

    rows = [r for p in drops[:3] for r in read_rows(p)]
    assert 0.8 * 900 * 3 < len(rows) < 1.2 * 900 * 3
    assert len({r["IncidentNumber"] for r in rows}) == len(rows)
    dwellings = [r for r in rows if r["PropertyCategory"] == "Dwelling"]
    others = [r for r in rows if r["PropertyCategory"] != "Dwelling"]
    assert 0.45 < len(dwellings) / len(rows) < 0.7
    assert all(not r["Easting_m"] and not r["Latitude"] and r["UPRN"] == "0" and r["Easting_rounded"] for r in dwellings)
    for r in others[:200]:
        east, north = float(r["Easting_m"]), float(r["Northing_m"])
        assert int(r["Easting_rounded"]) == east // 50 * 50 and r["Easting_m"].endswith(".0")
        lon, lat = bng_to_wgs84([east], [north])
        assert abs(lon[0] - float(r["Longitude"])) < 1e-9 and abs(lat[0] - float(r["Latitude"])) < 1e-9
    assert {r["DateOfCall"][:7] for r in rows} == set(MONTHS)


def test_same_seed_same_bytes(drops, tmp_path):
    again = generate_fire_transport_drops(tmp_path, MONTHS, seed=11)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in drops]


def test_generate_demo_drops_writes_them_after_police_uk(tmp_path):
    paths = generate_demo_drops(tmp_path, months=2, end_month="2024-03", rows_per_month=200)
    # The police.uk outcomes, stop-and-search and health drops come between (tests/test_police_health_loaders.py).
    paths = [p for p in paths if p.name.endswith("-street.csv") or p.name.startswith(("lfb_", "tfl_"))]
    assert [p.name for p in paths] == [
        "2024-02-metropolitan-street.csv", "2024-02-city-of-london-street.csv", "2024-03-metropolitan-street.csv",
        "2024-03-city-of-london-street.csv", "lfb_incidents_2024-02.csv", "lfb_incidents_2024-03.csv",
        "tfl_bus_safety_2024-02_to_2024-03.csv"]


def test_demo_drops_load_through_the_ingest_pipeline(clean_data, drops):
    from loaders.pipeline import load_paths
    from tests.conftest import query

    results = load_paths(clean_data, drops, progress=False)
    assert [r.status for r in results] == ["loaded"] * len(drops), [r.summary_line() for r in results]
    for path, result in zip(drops, results):
        rows = read_rows(path)
        assert result.rows_read == len(rows)
        expected_quarantine = sum(r.get("Borough") in ("None London Borough", "Not specified") for r in rows)
        assert result.rows_quarantined == expected_quarantine, result.summary_line()
    assert dict(query(clean_data, "SELECT supplier, count(DISTINCT category_id) FROM incidents GROUP BY 1"))["lfb"] >= 14
    # Generated points lie in the LSOA's borough that the row names.
    assert query(clean_data, """SELECT count(*) FROM incidents WHERE supplier = 'lfb'
                                AND location_precision = 'exact'
                                AND borough_code IS DISTINCT FROM attributes->>'borough_code'""") == [(0,)]
