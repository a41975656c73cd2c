"""The query layer and the filter state: numbers checked against direct SQL on incidents we insert ourselves.

Incidents are plain INSERTs into the real partitioned table (after ``safestats_ensure_incident_partitions``)
over the real London boroughs loaded by the ``areas_loaded`` fixture. The seed includes the edge cases the
layer must get right: an incident at 00:30 BST on 1 April (23:30 UTC on 31 March) belongs to April, and a
borough with no incidents in a month gets a 0, not a gap. ``seed_incidents`` is reused by the web tests.
"""
from __future__ import annotations

from datetime import date

import psycopg2
import pytest

from db import get_engine, libpq_dsn
from safestats import queries
from safestats.filters import FilterState
from tests.conftest import query

CAMDEN, WESTMINSTER, CROYDON = "E09000007", "E09000033", "E09000008"

# (borough code or None, occurred_at as an instant). Months below are London months.
SEED = (
    [(WESTMINSTER, f"2024-01-{d:02d} 12:00+00") for d in range(1, 21)]      # Jan: 20
    + [(WESTMINSTER, f"2024-02-{d:02d} 12:00+00") for d in range(1, 16)]    # Feb: 15
    + [(WESTMINSTER, f"2024-04-{d:02d} 12:00+01") for d in range(1, 26)]    # Apr: 25
    + [(CAMDEN, "2024-01-15 09:00+00"), (CAMDEN, "2024-01-16 09:00+00"),    # Jan: 2
       (CAMDEN, "2024-03-31 23:30+00"),                                     # 00:30 BST 1 Apr -> Apr
       (CAMDEN, "2024-03-31 22:30+00"),                                     # 23:30 BST 31 Mar -> Mar
       (CAMDEN, "2024-05-02 10:00+01")]                                     # May: 1 (none in Feb)
    + [(CROYDON, "2023-12-31 23:30+00"),                                    # GMT: still Dec 2023
       (CROYDON, "2024-06-30 23:30+00")]                                    # 00:30 BST 1 Jul -> Jul
    + [(None, "2024-02-10 12:00+00")]                                       # outside any borough
)


def seed_incidents(url: str, rows=SEED) -> None:
    """Insert minimal police.uk-like incidents (committed); the ``clean_data`` fixture empties them after."""
    conn = psycopg2.connect(libpq_dsn(url))
    with conn, conn.cursor() as cur:
        cur.execute("SELECT safestats_ensure_incident_partitions(%s, %s)",
                    (min(t for _, t in rows), max(t for _, t in rows)))
        cur.executemany(
            """INSERT INTO incidents (supplier, drop_id, occurred_at, time_precision, category_id,
                                      supplier_category, location_precision, borough_code, access_level)
               VALUES ('police_uk', 1, %s, 'minute', 1, 'Violence and sexual offences', 'exact', %s, 10)""",
            [(t, b) for b, t in rows])
    conn.close()


@pytest.fixture
def seeded(clean_data) -> str:
    seed_incidents(clean_data)
    queries.clear_caches()
    return clean_data


# --- FilterState ---------------------------------------------------------------------------------------

def test_filter_state_round_trips_through_the_query_string():
    state = FilterState(borough_code=CAMDEN, date_from=date(2024, 1, 1), date_to=date(2024, 6, 30))
    qs = state.to_query_string()
    assert qs == "borough=E09000007&from=2024-01-01&to=2024-06-30"
    assert FilterState.from_query_string(qs) == state
    assert FilterState.from_query_string("?" + qs) == state
    assert FilterState.from_query_string("") == FilterState() == FilterState.from_query_string(None)
    assert FilterState().to_query_string() == ""


@pytest.mark.parametrize("bad", [
    "borogh=E09000007",                      # misspelt key must not silently mean "all London"
    "borough=",                              # empty value
    "borough=E09000007&borough=E09000033",   # repeated key
    "borough=E09000007%27%20OR%201%3D1",     # injection attempt: not a code
    "borough=" + "E" * 41,                   # too long
    "from=2024-13-01",                       # not a date
    "from=20240101",                         # not the URL's date format
    "from=2024-06-01&to=2024-01-01",         # backwards range
    "borough",                               # no '='
    "&&",
])
def test_filter_state_refuses_malformed_or_tampered_query_strings(bad):
    with pytest.raises(ValueError):
        FilterState.from_query_string(bad)


def test_filter_state_is_frozen_and_validates_on_construction():
    with pytest.raises(ValueError):
        FilterState(borough_code="x; DROP TABLE incidents")
    state = FilterState(borough_code=CAMDEN)
    with pytest.raises(AttributeError):
        state.borough_code = WESTMINSTER  # type: ignore[misc]
    assert state.with_borough(None) == FilterState()


# --- Borough boundaries --------------------------------------------------------------------------------

def test_borough_boundaries_are_the_33_london_boroughs_in_wgs84_simplified(areas_loaded):
    queries.clear_caches()
    engine = get_engine(areas_loaded)
    collection = queries.borough_boundaries_geojson(engine)
    features = collection["features"]
    codes = {f["properties"]["code"] for f in features}
    expected = {c for (c,) in query(areas_loaded, "SELECT code FROM areas WHERE level = 'borough' AND region = 'london'")}
    assert len(features) == 33 and codes == expected
    assert {f["id"] for f in features} == codes
    camden = next(f for f in features if f["properties"]["code"] == CAMDEN)
    assert camden["properties"]["name"] == "Camden"

    vertices = 0
    for f in features:
        assert f["geometry"]["type"] in ("Polygon", "MultiPolygon")
        polygons = f["geometry"]["coordinates"] if f["geometry"]["type"] == "MultiPolygon" else [f["geometry"]["coordinates"]]
        for polygon in polygons:
            for ring in polygon:
                for lon, lat in ring:
                    vertices += 1
                    assert -0.6 < lon < 0.4 and 51.2 < lat < 51.8, (lon, lat)  # WGS84 London, not BNG metres
                    assert round(lon, 6) == lon and round(lat, 6) == lat
    (raw_vertices,) = query(areas_loaded, "SELECT sum(ST_NPoints(geom)) FROM areas WHERE level = 'borough' AND region = 'london'")[0]
    assert vertices < raw_vertices, "boundaries should be simplified for display"

    assert queries.borough_boundaries_geojson(engine) is collection, "cached per process"
    assert queries.known_borough_codes(engine) == frozenset(expected)


# --- Counts ----------------------------------------------------------------------------------------------

def test_borough_counts_match_direct_sql(seeded):
    engine = get_engine(seeded)
    direct = dict(query(seeded, "SELECT borough_code, count(*) FROM incidents WHERE borough_code IS NOT NULL GROUP BY 1"))
    counts = queries.borough_counts(engine, FilterState())
    assert counts == {code: int(n) for code, n in direct.items()}
    assert counts == {WESTMINSTER: 60, CAMDEN: 5, CROYDON: 2}
    # The map always shows every borough: a selected borough only highlights, it does not filter the map.
    assert queries.borough_counts(engine, FilterState(borough_code=CAMDEN)) == counts


def test_borough_counts_apply_the_date_range_in_london_time(seeded):
    engine = get_engine(seeded)
    april = FilterState(date_from=date(2024, 4, 1), date_to=date(2024, 4, 30))
    # Camden's 23:30 UTC 31 March incident is 00:30 BST on 1 April; its 22:30 UTC one is still March.
    assert queries.borough_counts(engine, april) == {WESTMINSTER: 25, CAMDEN: 1}
    direct = query(seeded, """SELECT borough_code, count(*) FROM incidents
                              WHERE (occurred_at AT TIME ZONE 'Europe/London')::date BETWEEN '2024-04-01' AND '2024-04-30'
                                AND borough_code IS NOT NULL GROUP BY 1""")
    assert queries.borough_counts(engine, april) == {c: int(n) for c, n in direct}


def test_monthly_counts_for_all_london_match_direct_sql(seeded):
    engine = get_engine(seeded)
    months = queries.monthly_counts(engine, FilterState())
    direct = query(seeded, """SELECT date_trunc('month', occurred_at AT TIME ZONE 'Europe/London')::date, count(*)
                              FROM incidents GROUP BY 1 ORDER BY 1""")
    assert [(m, n) for m, n in months if n] == [(m, int(n)) for m, n in direct]
    assert months[0] == (date(2023, 12, 1), 1)
    assert months[-1] == (date(2024, 7, 1), 1)
    assert [m for m, _ in months] == [date(2023, 12, 1)] + [date(2024, k, 1) for k in range(1, 8)]


def test_monthly_counts_for_one_borough_are_continuous_and_london_bucketed(seeded):
    engine = get_engine(seeded)
    camden = dict(queries.monthly_counts(engine, FilterState(borough_code=CAMDEN)))
    assert camden == {date(2023, 12, 1): 0, date(2024, 1, 1): 2, date(2024, 2, 1): 0, date(2024, 3, 1): 1,
                      date(2024, 4, 1): 1, date(2024, 5, 1): 1, date(2024, 6, 1): 0, date(2024, 7, 1): 0}
    westminster = queries.monthly_counts(engine, FilterState(borough_code=WESTMINSTER))
    direct = dict(query(seeded, """SELECT date_trunc('month', occurred_at AT TIME ZONE 'Europe/London')::date, count(*)
                                   FROM incidents WHERE borough_code = %s GROUP BY 1""", (WESTMINSTER,)))
    assert {m: n for m, n in westminster if n} == {m: int(n) for m, n in direct.items()}
    assert sum(n for _, n in westminster) == 60


def test_monthly_counts_with_a_date_range_and_no_data(seeded):
    engine = get_engine(seeded)
    q1 = queries.monthly_counts(engine, FilterState(borough_code=WESTMINSTER, date_from=date(2024, 1, 1),
                                                    date_to=date(2024, 3, 31)))
    assert q1 == [(date(2024, 1, 1), 20), (date(2024, 2, 1), 15), (date(2024, 3, 1), 0)]
    assert queries.monthly_counts(engine, FilterState(date_from=date(2030, 1, 1))) == []


def test_no_incidents_means_empty_answers(clean_data):
    engine = get_engine(clean_data)
    assert queries.borough_counts(engine, FilterState()) == {}
    assert queries.monthly_counts(engine, FilterState(borough_code=CAMDEN)) == []
