"""The query layer: every panel's numbers checked against direct SQL on the raw ``incidents`` table.

Two data sets. A small seed of hand-placed incidents checks the edge cases (an incident at 00:30 BST on
1 April belongs to April; the default period is the latest 12 months of data; change against the previous
equal period). The real police.uk files in ../shared/data, loaded through the pipeline, check every panel
— headline, time series, categories, hour x weekday, areas at each level, top areas, density cells — under
a spread of filter states that send the query layer to each of its sources (borough rollup, LSOA rollup,
day x hour rollup, raw table): whichever source answers, the numbers must equal a plain count.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import date
from types import SimpleNamespace

import psycopg2
import pytest

from db import get_web_engine, libpq_dsn
from loaders.pipeline import load_paths
from safestats import queries
from safestats.filters import FilterState
from tests.conftest import query, refresh_after_seeding, truncate_data

CAMDEN, WESTMINSTER, CROYDON, CITY = "E09000007", "E09000033", "E09000008", "E09000001"
# The query layer answers a user; this one sees every police record in every borough (not health data).
# The tests read through the web role, as the app does, so row-level security is part of every answer.
ANALYST = SimpleNamespace(id=None, tier="partner_analyst", is_authenticated=True, is_active=True)

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
    """Insert minimal police.uk-like incidents (committed) and refresh the rollups."""
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
    refresh_after_seeding(url)


@pytest.fixture
def seeded(clean_data) -> str:
    seed_incidents(clean_data)
    return clean_data


# --- the small seed: London months, default period, change -----------------------------------------

def test_months_are_london_months_and_continuous(seeded):
    engine = get_web_engine(seeded)
    counts = dict(queries.monthly_counts(engine, FilterState(), user=ANALYST))
    assert counts[date(2024, 4, 1)] == 25 + 1 and counts[date(2024, 3, 1)] == 1
    assert counts[date(2023, 12, 1)] == 1 and counts[date(2024, 7, 1)] == 1
    assert list(counts) == [date(2023, 12, 1)] + [date(2024, m, 1) for m in range(1, 8)]
    camden = dict(queries.monthly_counts(engine, FilterState(borough_code=CAMDEN), user=ANALYST))
    assert camden[date(2024, 2, 1)] == 0, "a quiet month is a 0, not a gap"
    assert sum(camden.values()) == 5


def test_default_period_is_the_latest_12_months_of_data_and_change_is_against_the_one_before(seeded):
    engine = get_web_engine(seeded)
    head = queries.headline(engine, FilterState(), user=ANALYST)
    assert (head.period.start, head.period.end) == (date(2023, 12, 1), date(2024, 7, 31))  # all the data (<12 m)
    assert head.total == len(SEED)
    spring = FilterState(date_from=date(2024, 3, 1), date_to=date(2024, 4, 30))
    head = queries.headline(engine, spring, user=ANALYST)
    assert head.total == 1 + 26 and head.previous == 22 + 15 + 1  # Jan-Feb 2024 (one Feb row has no borough)
    assert head.year_earlier == 0
    # A day-level range in London time: 1 April 00:30 BST is in, 31 March 23:30 BST is out.
    april_first = FilterState(date_from=date(2024, 4, 1), date_to=date(2024, 4, 1))
    assert queries.headline(engine, april_first, user=ANALYST).total == 1 + 1
    assert queries.borough_counts(engine, april_first, user=ANALYST) == {WESTMINSTER: 1, CAMDEN: 1}


def test_no_incidents_means_empty_answers(clean_data):
    engine = get_web_engine(clean_data)
    assert queries.headline(engine, FilterState(), user=ANALYST).period is None
    assert queries.monthly_counts(engine, FilterState(), user=ANALYST) == []
    assert queries.category_counts(engine, FilterState(), user=ANALYST) == []
    assert queries.top_areas(engine, FilterState(), ANALYST) == []


def test_analysts_with_the_same_scope_share_cached_panels_and_no_one_else_does(clean_data):
    """A panel one analyst asked for is served from the cache to another of the same tier (no query), not to
    a borough analyst whose boroughs differ, nor to a lower tier."""
    from types import SimpleNamespace

    seed_incidents(clean_data, SEED)
    refresh_after_seeding(clean_data)
    engine = get_web_engine(clean_data)
    queries.clear_caches()
    state = FilterState(date_from=date(2024, 1, 1), date_to=date(2024, 1, 31))

    def analyst(user_id, tier="partner_analyst", boroughs=()):
        return SimpleNamespace(id=user_id, tier=tier, boroughs=boroughs, is_authenticated=True, is_active=True)
    first = queries.headline(engine, state, analyst(1))
    assert first.total > 0
    assert queries.headline(engine, state, analyst(2)) is first, "the cached answer itself"
    for other in (analyst(3, "borough_analyst", (CITY,)), analyst(4, "viewer"), analyst(5, "admin")):
        answer = queries.headline(engine, state, other)
        assert answer is not first and answer == first, other.tier  # (computed again: the same public data)


def test_boundaries_are_the_london_areas_in_wgs84_simplified(areas_loaded):
    queries.clear_caches()
    engine = get_web_engine(areas_loaded)
    for level, expected_count in (("borough", 33), ("msoa", None), ("lsoa", 4835)):
        features = queries.boundaries_geojson(engine, level)["features"]
        (n,) = query(areas_loaded, "SELECT count(*) FROM areas WHERE level = %s AND region = 'london'", (level,))[0]
        assert len(features) == n and (expected_count is None or n == expected_count)
        lon, lat = features[0]["geometry"]["coordinates"][0][0][0] if features[0]["geometry"]["type"] == \
            "MultiPolygon" else features[0]["geometry"]["coordinates"][0][0]
        assert -0.6 < lon < 0.4 and 51.2 < lat < 51.8
    assert queries.boundaries_geojson(engine, "borough") is queries.boundaries_geojson(engine, "borough")


# --- the real police.uk files: every panel against direct SQL ---------------------------------------

@pytest.fixture(scope="module")
def police(areas_loaded, shared_data):
    files = sorted((shared_data / "police_uk").glob("*-street.csv")) + sorted(
        (shared_data / "police_uk" / "metropolitan_burglary_only").glob("*-street.csv*"))
    truncate_data(areas_loaded)
    results = load_paths(areas_loaded, files, progress=False)
    assert all(r.status == "loaded" for r in results), [r.summary_line() for r in results]
    queries.clear_caches()
    yield areas_loaded
    truncate_data(areas_loaded)


def _lsoa_in(url, borough):
    return query(url, "SELECT code, parent_code FROM areas WHERE level = 'lsoa' AND borough_code = %s "
                      "ORDER BY code LIMIT 1", (borough,))[0]


def _states(url):
    """Filter states that exercise each source the planner can pick."""
    lsoa, msoa = _lsoa_in(url, CITY)
    return {
        "default": FilterState(),
        "whole months": FilterState(date_from=date(2023, 1, 1), date_to=date(2023, 3, 31)),
        "burglary in Camden": FilterState(categories=(3,), borough_code=CAMDEN),
        "crime domain, weapons theme": FilterState(domains=("crime",), themes=("weapon",)),
        "MSOA": FilterState(borough_code=CITY, msoa_code=msoa),
        "LSOA, day range": FilterState(borough_code=CITY, msoa_code=msoa, lsoa_code=lsoa,
                                       date_from=date(2022, 7, 1), date_to=date(2023, 2, 14)),
        "day range": FilterState(date_from=date(2022, 8, 15), date_to=date(2023, 1, 10)),
        "polygon": FilterState(polygon=((-0.115, 51.505), (-0.07, 51.505), (-0.07, 51.525), (-0.115, 51.525))),
        "supplier": FilterState(suppliers=("police_uk",), categories=(20, 1)),
        "hours": FilterState(hours=(22, 4)),  # police.uk has no times: nothing matches
    }


def _sql_conditions(state: FilterState, period: queries.Period | None, spatial: bool = True,
                    categories: bool = True) -> tuple[str, dict]:
    """The state as plain SQL on incidents, written independently of the query layer."""
    where, params = ["TRUE"], {}
    if period:
        where.append("(occurred_at AT TIME ZONE 'Europe/London')::date BETWEEN %(start)s AND %(end)s")
        params.update(start=period.start, end=period.end)
    if state.suppliers:
        where.append("supplier = ANY(%(suppliers)s)")
        params["suppliers"] = list(state.suppliers)
    if categories and (state.categories or state.domains):
        where.append("(category_id = ANY(%(cats)s) OR category_id IN "
                     "(SELECT id FROM categories WHERE domain = ANY(%(domains)s)))")
        params.update(cats=list(state.categories), domains=list(state.domains))
    if state.themes:
        where.append("(" + " OR ".join(f"theme_{t} IS TRUE" for t in state.themes) + ")")
    if spatial:
        for level, code in (("borough", state.borough_code), ("msoa", state.msoa_code), ("lsoa", state.lsoa_code)):
            if code:
                where.append(f"{level}_code = %({level})s")
                params[level] = code
        if state.polygon:
            ring = list(state.polygon) + [state.polygon[0]]
            where.append("ST_Intersects(geom, ST_Transform(ST_GeomFromText(%(wkt)s, 4326), 27700))")
            params["wkt"] = "POLYGON((" + ", ".join(f"{x} {y}" for x, y in ring) + "))"
    if state.hours:
        where.append("FALSE")  # police.uk records no time of day
    return " AND ".join(where), params


@pytest.mark.shared_data
def test_every_panel_equals_direct_sql_on_the_real_files(police):
    engine = get_web_engine(police)
    total_checked = 0
    for name, state in _states(police).items():
        period = queries.current_period(engine, state)
        where, params = _sql_conditions(state, period)

        head = queries.headline(engine, state, user=ANALYST)
        (expected,) = query(police, f"SELECT count(*) FROM incidents WHERE {where}", params)[0]
        assert head.total == expected, name
        prev_where, prev_params = _sql_conditions(state, period.previous())
        (expected_prev,) = query(police, f"SELECT count(*) FROM incidents WHERE {prev_where}", prev_params)[0]
        assert head.previous == expected_prev, name
        total_checked += expected

        cat_where, cat_params = _sql_conditions(state, period, categories=False)
        direct = dict(query(police, f"SELECT category_id, count(*) FROM incidents WHERE {cat_where} GROUP BY 1",
                            cat_params))
        assert {c.category_id: c.incidents for c in queries.category_counts(engine, state, user=ANALYST)} == direct, name

        # The grid shows every hour (its own filter is not applied); police.uk has no times at all.
        grid = queries.hour_day_grid(engine, state, user=ANALYST)
        any_hour_where, any_hour_params = _sql_conditions(replace(state, hours=None), period)
        (any_hour,) = query(police, f"SELECT count(*) FROM incidents WHERE {any_hour_where}", any_hour_params)[0]
        assert grid.timed == 0 and grid.untimed == any_hour, name

        series_where, series_params = _sql_conditions(state, None)
        direct_months = dict(query(police, f"""SELECT date_trunc('month', occurred_at AT TIME ZONE 'Europe/London')::date,
                                               count(*) FROM incidents WHERE {series_where} GROUP BY 1""", series_params))
        got_months = {m: n for m, n in queries.monthly_counts(engine, state, user=ANALYST) if n}
        assert got_months == direct_months, name

        map_where, map_params = _sql_conditions(state, period, spatial=False)
        for level in ("borough", "msoa", "lsoa"):
            direct_areas = dict(query(police, f"SELECT {level}_code, count(*) FROM incidents WHERE {map_where} "
                                              f"AND {level}_code IS NOT NULL GROUP BY 1", map_params))
            assert queries.area_values(engine, state, level, ANALYST).current == direct_areas, (name, level)

        selected = state.selected_area
        child = {None: "borough", "borough": "msoa", "msoa": "lsoa", "lsoa": "lsoa"}[selected and selected[0]]
        top = queries.top_areas(engine, state, ANALYST, limit=5)
        direct_top = query(police, f"SELECT {child}_code, count(*) FROM incidents WHERE {where} AND {child}_code "
                                   f"IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5", params)
        assert [(r.code, r.incidents) for r in top] == [(c, n) for c, n in direct_top], name
    assert total_checked > 10_000, "the states should cover a real share of the data"


@pytest.mark.shared_data
def test_the_planner_uses_each_source(police):
    engine = get_web_engine(police)
    states = _states(police)
    sources = {name: queries.headline(engine, state, user=ANALYST).source for name, state in states.items()}
    assert sources["default"] == "rollup_borough_month"
    assert sources["MSOA"] == "rollup_area_month"
    assert sources["day range"] == "rollup_borough_day_hour"
    assert sources["polygon"] == "incidents" and sources["LSOA, day range"] == "incidents"


@pytest.mark.shared_data
def test_density_cells_equal_a_direct_grid_count(police):
    engine = get_web_engine(police)
    state = FilterState(date_from=date(2023, 1, 1), date_to=date(2023, 5, 31))
    cells = queries.density_cells(engine, state, queries.LONDON_BBOX_3857, 500, ANALYST)
    assert sum(n for *_, n in cells) == query(police, """
        SELECT count(*) FROM incidents WHERE geom IS NOT NULL
          AND (occurred_at AT TIME ZONE 'Europe/London')::date BETWEEN '2023-01-01' AND '2023-05-31'""")[0][0]
    direct = query(police, """
        SELECT floor(ST_X(geom) / 500), floor(ST_Y(geom) / 500), count(*) FROM incidents
        WHERE geom IS NOT NULL AND (occurred_at AT TIME ZONE 'Europe/London')::date BETWEEN '2023-01-01' AND '2023-05-31'
        GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 1""")[0]
    assert max(n for *_, n in cells) == direct[2]
    # Web Mercator boxes of 500 m BNG cells in London are ~800 m across (scale factor 1/cos 51.5).
    xmin, ymin, xmax, ymax, _ = cells[0]
    assert 700 < xmax - xmin < 900 and 700 < ymax - ymin < 900


@pytest.mark.shared_data
def test_point_clusters_are_bounded_and_add_up(police):
    engine = get_web_engine(police)
    state = FilterState(borough_code=CITY, date_from=date(2023, 1, 1), date_to=date(2023, 1, 31))
    box = (-0.115, 51.505, -0.07, 51.525)
    clusters = queries.point_clusters(engine, state.without_spatial_selection(), box, 15, ANALYST)
    (expected,) = query(police, """SELECT count(*) FROM incidents WHERE geom && ST_Transform(
        ST_MakeEnvelope(-0.115, 51.505, -0.07, 51.525, 4326), 27700)
        AND (occurred_at AT TIME ZONE 'Europe/London')::date BETWEEN '2023-01-01' AND '2023-01-31'""")[0]
    assert sum(f["properties"]["count"] for f in clusters["features"]) == expected > 0
    assert len(clusters["features"]) <= queries.MAX_POINT_FEATURES and not clusters["truncated"]
    coarse = queries.point_clusters(engine, state.without_spatial_selection(), box, 11, ANALYST)
    assert len(coarse["features"]) < len(clusters["features"]), "lower zoom, bigger clusters"


@pytest.mark.shared_data
def test_check_state_refuses_codes_that_do_not_exist(police):
    engine = get_web_engine(police)
    lsoa, msoa = _lsoa_in(police, CITY)
    queries.check_state(engine, FilterState(borough_code=CITY, msoa_code=msoa, lsoa_code=lsoa))
    for bad in (FilterState(borough_code="E09999999"), FilterState(suppliers=("no_such_supplier",)),
                FilterState(categories=(999,)), FilterState(domains=("nope",)),
                FilterState(borough_code=CAMDEN, msoa_code=msoa),  # an MSOA of another borough
                FilterState(msoa_code=CITY)):  # a borough code given as an MSOA
        with pytest.raises(ValueError):
            queries.check_state(engine, bad)


@pytest.mark.shared_data
def test_hotspot_layer_is_esda_gi_star_on_directly_counted_cells(police):
    import esda
    from libpysal.weights import DistanceBand

    engine = get_web_engine(police)
    state = FilterState(date_from=date(2023, 1, 1), date_to=date(2023, 5, 31))
    layer = queries.hotspot_layer(engine, state, cell_m=500, user=ANALYST)
    xs, ys = queries.study_area_cells(engine, 500)
    direct = dict(((int(i), int(j)), int(n)) for i, j, n in query(police, """
        SELECT floor(ST_X(geom) / 500), floor(ST_Y(geom) / 500), count(*) FROM incidents
        WHERE geom IS NOT NULL AND (occurred_at AT TIME ZONE 'Europe/London')::date BETWEEN '2023-01-01' AND '2023-05-31'
        GROUP BY 1, 2"""))
    counts = [direct.get((i, j), 0) for i, j in zip(xs, ys)]
    points = [((i + 0.5) * 500, (j + 0.5) * 500) for i, j in zip(xs, ys)]
    w = DistanceBand(points, threshold=layer.band_m, binary=True, silence_warnings=True)
    z = dict(zip((f"{i}:{j}" for i, j in zip(xs, ys)),
                 esda.G_Local(counts, w, transform="B", star=True, permutations=0).Zs))
    features = layer.geojson["features"]
    assert len(features) > 10 and layer.incidents == sum(counts)
    for f in features:
        assert abs(f["properties"]["z"] - z[f["properties"]["cell"]]) < 0.006  # rounded to 2 places
        assert abs(z[f["properties"]["cell"]]) >= 1.644
    hot = [f for f in features if f["properties"]["class"] > 0]
    assert hot and max(f["properties"]["count"] for f in hot) == max(counts)


def test_health_data_reaches_only_istv_analysts_and_admins_and_the_cache_never_leaks_it(clean_data):
    from types import SimpleNamespace

    seed_incidents(clean_data, SEED[:5])  # police.uk, level 10
    conn = psycopg2.connect(libpq_dsn(clean_data))
    with conn, conn.cursor() as cur:  # three ambulance call-outs (health, level 20) in Westminster
        cur.executemany("""INSERT INTO incidents (supplier, drop_id, occurred_at, time_precision, category_id,
                                                  supplier_category, location_precision, borough_code, access_level)
                           VALUES ('las', 2, %s, 'minute', 70, 'Assault', 'exact', %s, 20)""",
                        [("2024-01-05 22:00+00", WESTMINSTER)] * 3)
    conn.close()
    refresh_after_seeding(clean_data)
    engine = get_web_engine(clean_data)
    state = FilterState(date_from=date(2024, 1, 1), date_to=date(2024, 1, 31))

    def user(tier):
        return SimpleNamespace(is_authenticated=True, tier=tier)
    # The admin's answer is computed (and cached) first: a lower tier must still not get it.
    assert queries.headline(engine, state, user("admin")).total == 5 + 3
    assert queries.headline(engine, state, user("istv_analyst")).total == 5 + 3
    for tier in ("viewer", "borough_analyst", "partner_analyst"):
        assert queries.headline(engine, state, user(tier)).total == 5, tier
        assert 70 not in {c.category_id for c in queries.category_counts(engine, state, user(tier))}
        assert queries.area_values(engine, state, "borough", user(tier)).current[WESTMINSTER] == 5
    assert queries.headline(engine, state, None).total == 0, "no user: nothing at all (no settings, no rows)"
    # Asking for the health supplier by name gives nothing rather than everything.
    only_las = FilterState(suppliers=("las",), date_from=date(2024, 1, 1), date_to=date(2024, 1, 31))
    assert queries.headline(engine, only_las, user("viewer")).total == 0
    assert queries.headline(engine, only_las, user("admin")).total == 3


def test_single_flight_computes_a_key_once_for_threads_asking_together():
    """queries._SingleFlight: threads asking for a key another thread is computing get that thread's result;
    after a failure each waiting thread computes for itself (and meets the error itself)."""
    import threading
    import time

    flight = queries._SingleFlight()
    calls, results, start = [], [], threading.Barrier(4)

    def compute():
        calls.append(1)
        time.sleep(0.2)
        return object()

    def ask():
        start.wait()
        results.append(flight.run(("k",), compute))
    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len({id(r) for r in results}) == 1 and len(results) == 4
    assert flight.run(("k",), lambda: "again") == "again", "nothing is kept once the computation is done"

    failures, start = [], threading.Barrier(3)

    def failing():
        calls.append(1)
        time.sleep(0.2)
        raise RuntimeError("the database went away")

    def ask_failing():
        start.wait()
        try:
            flight.run(("bad",), failing)
        except RuntimeError as error:
            failures.append(error)
    calls.clear()
    threads = [threading.Thread(target=ask_failing) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(failures) == 3 and len(calls) == 3
    # A computation that asks for its own key again (in its own thread) computes it instead of waiting for itself.
    assert flight.run(("outer",), lambda: flight.run(("outer",), lambda: "inner")) == "inner"
