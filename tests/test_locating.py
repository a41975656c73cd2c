"""Locating records without coordinates (issue 5): each method on generated files, the report per drop, the filter.

A small police.uk street file puts known street names in known boroughs (the gazetteer's source), a small
ONS Postcode Directory file gives known postcodes, and LAS and ISTV files use them. Every row is accounted
for and gets the method and confidence loaders/locating.py documents: the supplier's point (exact, 100),
a postcode centroid (90 live, 75 terminated, 60 when the record's borough disagrees), a gazetteer match within
the borough or the hospital's catchment (85 whole name, 75 name in the text, about 57 fuzzy, 70 when the name
is also in another catchment borough), the borough (100 given, 40 the hospital's), unlocated (0).
"""
from __future__ import annotations

import csv
import io
from types import SimpleNamespace

import pytest

from db import get_engine
from loaders.demo_police_health import ONSPD_HEADER
from loaders.istv import CSV_COLUMNS as ISTV_COLUMNS
from loaders.las import LasAssaultsFormat
from loaders.locating import normalise_name
from loaders.pipeline import load_paths
from loaders.postcodes import PostcodeFileRejected, load_postcodes
from safestats import queries
from safestats.filters import FilterState
from safestats.supplier_status import drop_location_report, location_quality
from tests.conftest import query

LAMBETH, SOUTHWARK, BARNET, EALING = "E09000022", "E09000028", "E09000003", "E09000009"
STREET_HEADER = ("Crime ID,Month,Reported by,Falls within,Longitude,Latitude,Location,LSOA code,LSOA name,"
                 "Crime type,Last outcome category,Context")
MET = "Metropolitan Police Service"
# (longitude, latitude, location): two snap points on Coldharbour Lane (Brixton, Lambeth); Rye Lane (Peckham,
# Southwark) only; Quinton Mews only in Barnet (far outside a Lambeth hospital's catchment); Shared Name Road
# in Lambeth and in Southwark; a generic police.uk place type, which the gazetteer leaves out.
STREET_POINTS = [
    ("-0.110500", "51.462500", "On or near Coldharbour Lane"),
    ("-0.106000", "51.463500", "On or near Coldharbour Lane"),
    ("-0.068900", "51.469000", "On or near Rye Lane"),
    ("-0.200000", "51.650000", "On or near Quinton Mews"),
    ("-0.115000", "51.470000", "On or near Shared Name Road"),
    ("-0.075000", "51.472000", "On or near Shared Name Road"),
    ("-0.112000", "51.461000", "On or near Supermarket"),
]


def write_lines(path, lines):
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    return path


def street_file(tmp_path):
    lines = [STREET_HEADER] + [f"{n:064x},2023-01,{MET},{MET},{lon},{lat},{location},E01000001,City of London 001A,"
                               "Burglary,Under investigation," for n, (lon, lat, location) in enumerate(STREET_POINTS, 1)]
    return write_lines(tmp_path / "2023-01-metropolitan-street.csv", lines)


def onspd_file(tmp_path, rows, name="ONSPD_TEST_UK.csv"):
    path = tmp_path / name
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(ONSPD_HEADER)
        for values in rows:
            full = dict.fromkeys(ONSPD_HEADER, "")
            full.update(values)
            writer.writerow([full[c] for c in ONSPD_HEADER])
    return path


POSTCODES = [
    dict(pcds="SW9 8AB", oslaua=LAMBETH, oseast1m="531200", osnrth1m="175600", osgrdind="1", lat="51.4640",
         long="-0.1100", lsoa11="E01003029"),
    dict(pcds="SW9 0AA", oslaua=LAMBETH, oseast1m="531000", osnrth1m="175900", osgrdind="1", lat="51.4670",
         long="-0.1130", doterm="201512"),
    dict(pcds="SE15 5AA", oslaua=SOUTHWARK, oseast1m="534500", osnrth1m="176500", osgrdind="1", lat="51.4710",
         long="-0.0620"),
    dict(pcds="SL1 1AA", oslaua="E06000039", oseast1m="497400", osnrth1m="179700", osgrdind="1", lat="51.51",
         long="-0.596"),
    dict(pcds="SW1A 0ZZ", oslaua="E09000033", oseast1m="", osnrth1m="", osgrdind="9", lat="99.999999",
         long="0.000000"),
]


def las_file(tmp_path):
    lines = [",".join(LasAssaultsFormat.columns),
             "LAS1,2023-01-06,23:15,Stabbing,530000,180500,,,18-24,Male",            # point: exact
             "LAS2,2023-01-07,02:05,Assault,,,SW9 8AB,Lambeth,35-44,Female",          # postcode: 90
             "LAS3,2023-01-07,03:05,Assault,,,sw9 0aa,,35-44,Female",                 # terminated postcode: 75
             "LAS4,2023-01-07,04:05,Assault,,,SE15 5AA,Lambeth,35-44,Female",         # borough disagrees: 60
             "LAS5,2023-01-07,05:05,Assault,,,SW9 0ZZ,Lambeth,35-44,Female",          # unknown postcode: borough
             "LAS6,2023-01-07,06:05,Assault,,,SW9 0ZZ,,35-44,Female",                 # unknown, no borough: none
             "LAS7,2023-01-07,07:05,Assault,,,,,35-44,Female",                        # nothing: none
             "LAS8,2023-01-07,08:05,Assault,,,SW9 8AB,Narnia,35-44,Female"]           # bad borough: quarantined
    return write_lines(tmp_path / "2023-01-las-assaults.csv", lines)


# (free-text location, expected precision, borough, confidence): a DEM01 (Lambeth) submission.
ISTV_CASES = [
    ("Coldharbour Lane", "street", LAMBETH, 85),                       # the whole text is the name
    ("outside the pub on Coldharbour Ln", "street", LAMBETH, 75),      # abbreviated, inside a sentence
    ("Coldharbor Lane", "street", LAMBETH, None),                      # misspelt: fuzzy, lower
    ("Rye Lane by the shops", "street", SOUTHWARK, 75),                # a neighbouring borough in the catchment
    ("Quinton Mews", "borough", LAMBETH, 40),                          # only in Barnet: not matched
    ("Shared Name Rd", "street", LAMBETH, 70),                         # in two catchment boroughs: the site's own
    ("at home", "borough", LAMBETH, 40),                               # nothing to match: the site's borough
    ("near SE15 5AA", "postcode", SOUTHWARK, 85),                      # a postcode in the text
    ("", "borough", LAMBETH, 40),
]


def istv_file(tmp_path, site, descriptions):
    path = tmp_path / f"istv-{site}-2023-01.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(ISTV_COLUMNS)
        for k, text in enumerate(descriptions):
            writer.writerow([site, "2023-01-01", "2023-01-31", "", f"2023-01-{k + 1:02d}T22:{k:02d}:00", "01", "",
                             "01", text])
    return path


def test_names_are_normalised_for_matching():
    assert normalise_name("On or near Gray'S Inn Road") == "grays inn road"
    assert normalise_name("St John's Rd") == "saint johns road"
    assert normalise_name("outside no. 4, High St.") == "outside no 4 high street"
    assert normalise_name("Elephant & Castle") == "elephant and castle"


def test_postcode_directory_loads_london_postcodes_with_a_grid_reference(clean_data, tmp_path):
    report = load_postcodes(clean_data, onspd_file(tmp_path, POSTCODES))
    assert (report.rows_read, report.loaded, report.terminated, report.outside_region, report.no_grid_reference) \
        == (5, 3, 1, 1, 1)
    assert query(clean_data, "SELECT postcode, easting, northing, laua_code, terminated FROM postcodes "
                             "ORDER BY postcode") == [("SE15 5AA", 534500, 176500, SOUTHWARK, None),
                                                      ("SW9 0AA", 531000, 175900, LAMBETH, "201512"),
                                                      ("SW9 8AB", 531200, 175600, LAMBETH, None)]
    # A file without the columns, or with a malformed row, is refused and changes nothing.
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("postcode,lat,long\nSW9 8AB,51.4,-0.1\n")
    with pytest.raises(PostcodeFileRejected, match="missing column"):
        load_postcodes(clean_data, wrong)
    bad = onspd_file(tmp_path, [POSTCODES[0], dict(POSTCODES[2], oseast1m="5345OO")], "ONSPD_BAD_UK.csv")
    with pytest.raises(PostcodeFileRejected, match="not a number"):
        load_postcodes(clean_data, bad)
    assert query(clean_data, "SELECT count(*) FROM postcodes") == [(3,)]


def test_las_rows_by_point_postcode_borough_or_nothing(clean_data, tmp_path):
    load_postcodes(clean_data, onspd_file(tmp_path, POSTCODES))
    [result] = load_paths(clean_data, [las_file(tmp_path)], progress=False)
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (8, 7, 1)
    rows = query(clean_data, """SELECT supplier_record_id, location_precision, location_confidence, borough_code,
                                       lsoa_code IS NOT NULL, round(ST_X(geom)), round(ST_Y(geom))
                                FROM incidents ORDER BY supplier_record_id""")
    assert [r[:4] for r in rows] == [
        ("LAS1", "exact", 100, rows[0][3]),
        ("LAS2", "postcode", 90, LAMBETH),
        ("LAS3", "postcode", 75, LAMBETH),
        ("LAS4", "postcode", 60, SOUTHWARK),
        ("LAS5", "borough", 100, LAMBETH),
        ("LAS6", "none", 0, None),
        ("LAS7", "none", 0, None),
    ]
    # A postcode row sits on the postcode's centroid, with its LSOA.
    assert rows[1][4:] == (True, 531200, 175600)
    notes = dict(query(clean_data, "SELECT supplier_record_id, attributes->>'location_method' FROM incidents"))
    assert notes["LAS4"] == f"postcode SE15 5AA (in {SOUTHWARK}, the record says {LAMBETH})"
    assert notes["LAS5"] == "borough given (postcode SW9 0ZZ not in the postcode directory)"
    # The report per drop: stored with the drop, in the result and its summary line.
    assert sorted(query(clean_data, "SELECT method, rows, round(mean_confidence) FROM drop_location_quality "
                                    "WHERE drop_id = %s", (result.drop_id,))) == [
        ("borough", 1, 100), ("exact", 1, 100), ("postcode", 3, 75), ("unlocated", 2, 0)]
    assert {m: r for m, (r, _) in result.location_quality.items()} == \
        {"exact": 1, "postcode": 3, "borough": 1, "unlocated": 2}
    assert ("located: exact 14.3%, postcode 42.9% (conf. 75), borough 14.3% (conf. 100), unlocated 28.6% "
            "(conf. 0)") in result.summary_line()
    quality = location_quality(get_engine(clean_data), "las")
    assert quality.overall == {"exact": 1, "postcode": 3, "borough": 1, "unlocated": 2}
    assert round(quality.confidence["postcode"]) == 75
    [report] = drop_location_report(get_engine(clean_data), "las")
    assert report["drop_id"] == result.drop_id and report["quality"]["postcode"][0] == 3


def test_istv_free_text_matched_in_the_hospital_catchment_only(clean_data, tmp_path):
    load_postcodes(clean_data, onspd_file(tmp_path, POSTCODES))
    istv = istv_file(tmp_path, "DEM01", [case[0] for case in ISTV_CASES])
    # Given first, loaded after the street file: the gazetteer is rebuilt from it before the ISTV drop.
    results = load_paths(clean_data, [istv, street_file(tmp_path)], progress=False)
    assert [r.supplier for r in results] == ["police_uk", "istv_ed"]
    assert all(r.status == "loaded" for r in results), [r.summary_line() for r in results]
    gazetteer = query(clean_data, "SELECT borough_code, name, points FROM gazetteer_streets ORDER BY 2, 1")
    assert (LAMBETH, "Coldharbour Lane", 2) in gazetteer and (SOUTHWARK, "Rye Lane", 1) in gazetteer
    assert (BARNET, "Quinton Mews", 1) in gazetteer
    assert [g[0] for g in gazetteer if g[1] == "Shared Name Road"] == [LAMBETH, SOUTHWARK]
    assert not [g for g in gazetteer if g[1] == "Supermarket"]     # a generic place type, not a street

    istv_result = results[1]
    assert (istv_result.rows_read, istv_result.rows_loaded, istv_result.rows_quarantined) == (len(ISTV_CASES),) * 2 + (0,)
    rows = query(clean_data, """SELECT attributes->>'assault_location_description', location_precision, borough_code,
                                       location_confidence, attributes->>'location_method'
                                FROM incidents WHERE supplier = 'istv_ed' ORDER BY occurred_at""")
    for (text, precision, borough, confidence), row in zip(ISTV_CASES, rows):
        assert (row[0] or "", row[1], row[2]) == (text, precision, borough), row
        if confidence is not None:
            assert row[3] == confidence, row
    fuzzy = rows[2]
    assert 45 <= fuzzy[3] < 60 and "fuzzy" in fuzzy[4] and "Coldharbour Lane" in fuzzy[4]
    assert "not matched" in rows[4][4]
    # Matched points are the centre of the name's snap points in that borough.
    [(east, north)] = query(clean_data, """SELECT round(easting), round(northing) FROM gazetteer_streets
                                           WHERE name = 'Coldharbour Lane'""")
    assert query(clean_data, """SELECT DISTINCT round(ST_X(geom)), round(ST_Y(geom)) FROM incidents
                                WHERE supplier = 'istv_ed' AND attributes->>'assault_location_description'
                                      = 'Coldharbour Lane'""") == [(east, north)]


def test_a_street_outside_the_catchment_is_not_matched(clean_data, tmp_path):
    load_paths(clean_data, [street_file(tmp_path)], progress=False)
    # DEM05 is in Ealing: Rye Lane (Southwark) and Coldharbour Lane (Lambeth) are far outside its catchment.
    [result] = load_paths(clean_data, [istv_file(tmp_path, "DEM05", ["Rye Lane", "Coldharbour Lane"])],
                          progress=False)
    assert result.rows_loaded == 2
    assert query(clean_data, "SELECT DISTINCT location_precision, borough_code, location_confidence "
                             "FROM incidents WHERE supplier = 'istv_ed'") == [("borough", EALING, 40)]
    assert result.location_quality == {"borough": (2, 40.0)}


ADMIN = SimpleNamespace(is_authenticated=True, tier="admin", boroughs=())


def test_filter_located_at_least_round_trips_and_restricts_the_counts(clean_data, tmp_path):
    state = FilterState.from_query_string("supplier=las&located=postcode")
    assert state.located_at_least == "postcode"
    assert FilterState.from_query_string(state.to_query_string()) == state
    assert "located=postcode" in state.to_query_string()
    for bad in ("located=street", "located=unlocated", "located="):
        with pytest.raises(ValueError):
            FilterState.from_query_string(bad)

    load_postcodes(clean_data, onspd_file(tmp_path, POSTCODES))
    load_paths(clean_data, [las_file(tmp_path)], progress=False)
    engine = get_engine(clean_data)
    queries.clear_caches()
    counts = {}
    for located in (None, "exact", "postcode", "gazetteer", "borough"):
        s = FilterState(suppliers=("las",), located_at_least=located)
        counts[located] = sum(c.incidents for c in queries.category_counts(engine, s, ADMIN))
    # 1 exact, 3 postcode, 1 borough, 2 unlocated (test_las_rows_by_point_postcode_borough_or_nothing).
    assert counts == {None: 7, "exact": 1, "postcode": 4, "gazetteer": 4, "borough": 5}
    assert queries.headline(engine, FilterState(suppliers=("las",), located_at_least="postcode"), ADMIN).total == 4


def test_a_link_with_the_located_filter_shows_a_removable_chip():
    from dashapp.callbacks.dashboard import _without
    from dashapp.layouts.dashboard import filter_chips

    state = FilterState.from_query_string("located=gazetteer")
    [chip] = filter_chips(state, {"suppliers": {}, "domains": {}, "categories": {}, "areas": {}})
    assert "Located at least: street (gazetteer)" in str(chip)
    assert _without(state, "located") == FilterState()
