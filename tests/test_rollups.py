"""The rollups (db/sql/rollups_v3.sql, safestats/rollups.py) against the raw incidents table.

Generated incidents (bench/generate.py: every supplier, two years, London's LSOAs) are refreshed into the
rollup tables; then, for random filters drawn by hypothesis, every rollup's counts must equal a direct count
on ``incidents`` (the grids and H3 cell by cell, H3 computed from the raw points with the h3 package). A
load refreshes only the months its drops touch, an update drop none; a dashboard query running in a loop
never waits on a refresh (and does wait on one that locks the table: the test can tell the difference); the
Python list of rollups agrees with the SQL that builds them; and the migrations go down to version 2's year
views, to version 1's views, and up again with data in place, counts unchanged.
"""
from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from datetime import date, timedelta
from types import SimpleNamespace

import numpy as np
import psycopg2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bench.generate import generate_incidents
from db import get_engine, get_web_engine, libpq_dsn, migrate
from safestats import db_scope, queries, rollups
from safestats.access import TIER_POLICIES
from safestats.filters import THEMES, FilterState
from tests.conftest import TEST_DB_NAME, make_database, query, truncate_data
from tests.test_database_access import make_user, remove_users

YEARS = (2022, 2023)
# The query layer answers only as a user (no user, no rows): a partner analyst sees every non-health supplier.
ANALYST = SimpleNamespace(id=None, tier="partner_analyst", is_authenticated=True, is_active=True)
ROWS = 30_000


@pytest.fixture(scope="module")
def generated(areas_loaded):
    """About 30,000 generated incidents over 2022-2023 (a few with no LSOA, some of those with no borough),
    views refreshed; emptied afterwards."""
    url = areas_loaded
    truncate_data(url)
    generate_incidents(url, ROWS, first_year=YEARS[0], years=len(YEARS), seed=11, log=lambda *a: None)
    # As in real drops, some incidents have no LSOA (no location, or one outside the boundaries loaded):
    # some keep their borough, some have none.
    conn = psycopg2.connect(libpq_dsn(url))
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE incidents SET lsoa_code = NULL, msoa_code = NULL WHERE id % 97 = 0")
        cur.execute("UPDATE incidents SET lsoa_code = NULL, msoa_code = NULL, borough_code = NULL WHERE id % 89 = 0")
    conn.close()
    rollups.refresh_rollups(url, trigger="test generated")
    queries.clear_caches()
    yield url
    truncate_data(url)


def _values(url: str, sql: str) -> list:
    return [r[0] for r in query(url, sql)]


# ---- the registry and the SQL agree -------------------------------------------------------------------------

def test_python_list_of_rollups_matches_the_sql(generated):
    rows = query(generated, "SELECT name, reads, key_columns FROM rollup_tables ORDER BY refresh_order")
    assert [(r.name, list(r.reads)) for r in rollups.ROLLUPS] == [(n, list(reads)) for n, reads, _ in rows]
    for rollup, (_, _, key) in zip(rollups.ROLLUPS, rows):
        columns = _values(generated, f"""SELECT column_name FROM information_schema.columns
                                         WHERE table_name = '{rollup.name}' ORDER BY ordinal_position""")
        assert columns == list(rollup.dimensions) + [rollups.COUNT_COLUMN]
        assert key.split(", ") == list(rollup.dimensions)
        # A table with one unique key over every dimension (the refresh relies on it: no duplicate group).
        assert query(generated, """SELECT count(*) FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid
                                   WHERE c.relname = %s AND x.indisunique AND x.indnatts = %s""",
                     (rollup.name, len(rollup.dimensions))) == [(1,)]
        assert query(generated, "SELECT relkind FROM pg_class WHERE relname = %s", (rollup.name,)) == [("r",)]
        # Every month of the data has its refresh on record.
        months = set(_values(generated, f"SELECT month FROM rollup_months WHERE family = '{rollup.name}'"))
        assert {date(y, m, 1) for y in YEARS for m in range(1, 13)} <= months
    # A dependant comes after what it reads, and refreshing a view brings its dependants along.
    assert rollups.dependants_of(["rollup_area_month"]) == (
        "rollup_area_month", "rollup_msoa_month", "rollup_borough_month")
    assert rollups.dependants_of(["rollup_grid_month"]) == ("rollup_grid_month", "rollup_grid500_month")


# ---- counts equal direct counts for random filters ------------------------------------------------------

SUPPLIERS = ("police_uk", "police_uk_stop_search", "lfb", "tfl_bus", "las", "istv_ed")
THEME_COLUMNS = (("theme_weapon", 1), ("theme_dava", 2), ("theme_young_victim", 4),
                 ("theme_night_time_economy", 8), ("theme_arson", 16))


@st.composite
def filters(draw):
    """A random filter: suppliers, categories, themes, a month range and one area (or none)."""
    first = draw(st.integers(0, 23))
    last = draw(st.integers(first, 23))
    return {
        "suppliers": draw(st.lists(st.sampled_from(SUPPLIERS), max_size=3, unique=True)),
        "categories": draw(st.lists(st.integers(1, 60), max_size=6, unique=True)),
        "theme_mask": draw(st.sampled_from([0, 0, 1, 2, 4, 8, 16, 3, 24])),
        "months": (date(2022 + first // 12, first % 12 + 1, 1), date(2022 + last // 12, last % 12 + 1, 1)),
        "area": draw(st.sampled_from([None, "borough", "msoa", "lsoa"])),
        "area_pick": draw(st.integers(0, 10_000)),
    }


def _conditions(f: dict, url: str, raw: bool) -> tuple[str, dict]:
    """The same filter as SQL on a rollup (raw=False) or on incidents (raw=True)."""
    c, p = [], {}
    month = "date_trunc('month', occurred_at AT TIME ZONE 'Europe/London')::date" if raw else "month"
    c.append(f"{month} BETWEEN %(m0)s AND %(m1)s")
    p["m0"], p["m1"] = f["months"]
    if f["suppliers"]:
        c.append("supplier = ANY(%(suppliers)s)")
        p["suppliers"] = f["suppliers"]
    if f["categories"]:
        c.append("category_id = ANY(%(categories)s)")
        p["categories"] = f["categories"]
    if f["theme_mask"]:
        if raw:
            c.append("(" + " OR ".join(f"{col} IS TRUE" for col, bit in THEME_COLUMNS if f["theme_mask"] & bit) + ")")
        else:
            c.append("(theme_mask & %(mask)s) <> 0")
            p["mask"] = f["theme_mask"]
    if f["area"]:
        codes = _values(url, f"SELECT DISTINCT {f['area']}_code FROM incidents WHERE {f['area']}_code IS NOT NULL "
                             f"ORDER BY 1")
        p["area"] = codes[f["area_pick"] % len(codes)]
        c.append(f"{f['area']}_code = %(area)s")
    return " AND ".join(c), p


AREA_VIEWS = {None: "rollup_borough_month", "borough": "rollup_borough_month", "msoa": "rollup_msoa_month",
              "lsoa": "rollup_area_month"}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(f=filters())
def test_view_counts_equal_direct_counts(generated, f):
    url = generated
    raw_where, raw_params = _conditions(f, url, raw=True)
    view_where, view_params = _conditions(f, url, raw=False)
    [(direct,)] = query(url, f"SELECT count(*) FROM incidents WHERE {raw_where}", raw_params)
    # Every area view at least as fine as the filter's area, and the area-level views at every level.
    for level, view in AREA_VIEWS.items():
        if f["area"] in ("msoa", "lsoa") and level in (None, "borough") or f["area"] == "lsoa" and level == "msoa":
            continue
        [(from_view,)] = query(url, f"SELECT coalesce(sum(incidents), 0) FROM {view} WHERE {view_where}", view_params)
        assert from_view == direct, (view, f)
    if f["area"] in (None, "borough"):
        # Day x hour: the same months, as days.
        day_where = view_where.replace("month BETWEEN %(m0)s AND %(m1)s",
                                       "date_trunc('month', day)::date BETWEEN %(m0)s AND %(m1)s")
        [(from_days,)] = query(url, f"SELECT coalesce(sum(incidents), 0) FROM rollup_borough_day_hour "
                                    f"WHERE {day_where}", view_params)
        assert from_days == direct, f
        # The grids, cell by cell, against the raw points.
        for view, cell in (("rollup_grid_month", 250), ("rollup_grid500_month", 500)):
            if view == "rollup_grid500_month" and f["area"]:
                continue  # the 500 m grid has no borough (the hotspot layers never filter it by area)
            expected = dict(((x, y), n) for x, y, n in query(url, f"""
                SELECT floor(ST_X(geom) / {cell})::int, floor(ST_Y(geom) / {cell})::int, count(*) FROM incidents
                WHERE geom IS NOT NULL AND {raw_where} GROUP BY 1, 2""", raw_params))
            got = dict(((x, y), n) for x, y, n in query(url, f"""
                SELECT cell_x, cell_y, sum(incidents) FROM {view} WHERE {view_where} GROUP BY 1, 2""", view_params))
            assert got == expected, (view, f)
        # H3 resolution 8, from the raw points with the h3 package.
        from h3.api import basic_int as h3

        expected_h3: dict[int, int] = {}
        for lon, lat, n in query(url, f"""SELECT longitude, latitude, count(*) FROM incidents
                                          WHERE longitude IS NOT NULL AND {raw_where} GROUP BY 1, 2""", raw_params):
            cell = h3.latlng_to_cell(lat, lon, rollups.H3_RESOLUTION)
            expected_h3[cell] = expected_h3.get(cell, 0) + n
        got_h3 = dict(query(url, f"SELECT h3_r8, sum(incidents) FROM rollup_h3_month WHERE {view_where} GROUP BY 1",
                            view_params))
        assert got_h3 == expected_h3, f


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(f=filters(), cell_m=st.sampled_from([500, 250, 1000]))
def test_hotspot_counts_from_grid_months_in_memory_equal_direct_counts(generated, f, cell_m):
    """The hotspot layers' counts per month and study cell (numpy over the grid months a worker keeps)
    equal a direct count of the raw points, for random suppliers, categories, themes and months."""
    url = generated
    engine = get_engine(url)
    themes = tuple(name for name, (_, bit, _) in THEMES.items() if f["theme_mask"] & bit)
    first, last = f["months"]
    state = FilterState(date_from=first, date_to=date(last.year + last.month // 12, last.month % 12 + 1, 1)
                        - timedelta(days=1), suppliers=tuple(f["suppliers"]), categories=tuple(f["categories"]),
                        themes=themes)
    queries.clear_caches(keep_reference=True)  # the grid months stay: some are read, some come from memory
    months, counts = queries.study_counts_by_month(engine, state, cell_m, user=rollups.OPERATOR)
    assert months[0] == first and months[-1] == last
    raw_where, raw_params = _conditions(dict(f, area=None), url, raw=True)
    xs, ys = queries.study_area_cells(engine, cell_m)
    index = {cell: k for k, cell in enumerate(zip(xs, ys))}
    expected = np.zeros(counts.shape)
    for month, x, y, n in query(url, f"""
            SELECT date_trunc('month', occurred_at AT TIME ZONE 'Europe/London')::date,
                   floor(ST_X(geom) / {cell_m})::int, floor(ST_Y(geom) / {cell_m})::int, count(*)
            FROM incidents WHERE geom IS NOT NULL AND {raw_where} GROUP BY 1, 2, 3""", raw_params):
        if (x, y) in index:
            expected[months.index(month), index[(x, y)]] += n
    assert np.array_equal(counts, expected), f


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(f=filters())
def test_lsoa_counts_from_months_in_memory_equal_direct_counts(generated, f):
    """The LSOA map's and LSOA Gi* layer's counts (numpy over the LSOA months a worker keeps) equal a direct
    count on the raw table, for random suppliers, categories, themes, months and selected areas (which the
    LSOA map does not apply: it shows every area)."""
    url = generated
    engine = get_engine(url)
    themes = tuple(name for name, (_, bit, _) in THEMES.items() if f["theme_mask"] & bit)
    first, last = f["months"]
    selected = {}
    if f["area"]:
        codes_at = sorted(c for c, a in queries.areas(engine).items() if a.level == f["area"])
        selected = {f"{f['area']}_code": codes_at[f["area_pick"] % len(codes_at)]}
    state = FilterState(date_from=first, date_to=date(last.year + last.month // 12, last.month % 12 + 1, 1)
                        - timedelta(days=1), suppliers=tuple(f["suppliers"]), categories=tuple(f["categories"]),
                        themes=themes, **selected)
    queries.clear_caches(keep_reference=True)
    period = queries.current_period(engine, state)
    with db_scope.acting_as(rollups.OPERATOR):
        counts = queries._lsoa_counts_in_memory(engine, state, [period])
    assert counts is not None, "whole months, no time of day: the months in memory answer"
    codes = queries._lsoa_codes(engine)
    raw_where, raw_params = _conditions(dict(f, area=None), url, raw=True)
    expected = dict(query(url, f"""SELECT lsoa_code, count(*)::int FROM incidents
                                   WHERE coalesce(lsoa_code, '') <> '' AND {raw_where} GROUP BY 1""", raw_params))
    assert {codes[k]: int(counts[0][k]) for k in np.nonzero(counts[0])[0]} == expected, f
    assert queries.area_values(engine, state, "lsoa", user=rollups.OPERATOR).current == expected, f


@st.composite
def panel_states(draw):
    """A random dashboard state: ``filters()``, then whole months or a day-level range, hours of the day,
    weekdays and a map level."""
    f = draw(filters())
    first, last = f["months"]
    start, end = first, _add_month(last) - timedelta(days=1)
    if draw(st.booleans()):  # a day-level range inside those months
        start = start + timedelta(days=draw(st.integers(0, 27)))
        end = max(start, end - timedelta(days=draw(st.integers(0, 27))))
    themes = tuple(name for name, (_, bit, _) in THEMES.items() if f["theme_mask"] & bit)
    hours = draw(st.one_of(st.none(), st.tuples(st.integers(0, 23), st.integers(0, 23))))
    days = tuple(sorted(draw(st.sets(st.integers(1, 7), max_size=3))))
    return f, dict(date_from=start, date_to=end, suppliers=tuple(f["suppliers"]), categories=tuple(f["categories"]),
                   themes=themes, hours=hours, days=days,
                   map_level=draw(st.sampled_from(["borough", "msoa", "lsoa"])))


def _add_month(d: date) -> date:
    return date(d.year + d.month // 12, d.month % 12 + 1, 1)


def _selected_area(engine, f: dict) -> dict:
    """The FilterState fields of ``filters()``'s area pick (an LSOA with its MSOA)."""
    if not f["area"]:
        return {}
    codes_at = sorted(c for c, a in queries.areas(engine).items() if a.level == f["area"])
    selected = {f"{f['area']}_code": codes_at[f["area_pick"] % len(codes_at)]}
    if f["area"] == "lsoa":
        selected["msoa_code"] = queries.areas(engine)[selected["lsoa_code"]].parent_code
    return selected


def _panels(engine, state: FilterState, user) -> dict:
    """Every dashboard panel's answer (or the refusal it raises) for ``state``, cold."""
    out = {}
    for name, panel in (("headline", queries.headline), ("series", queries.monthly_series),
                        ("categories", queries.category_counts), ("hour x weekday", queries.hour_day_grid),
                        ("top areas", queries.top_areas),
                        ("map", lambda e, s, user: queries.area_values(e, s, s.map_level, user=user))):
        queries.clear_caches(keep_reference=True)  # a cold panel cache; the months in memory stay
        try:
            out[name] = panel(engine, state, user=user)
        except (queries.AccessRefused, ValueError) as exc:
            out[name] = (type(exc).__name__, str(exc))
    return out


def _drawn(area=None, hours=None, days=(), start=date(2022, 3, 1), end=date(2022, 8, 31), level="borough",
           categories=(), suppliers=(), theme_mask=0):
    """A ``panel_states()`` value written out (the examples every run tries)."""
    f = {"suppliers": list(suppliers), "categories": list(categories), "theme_mask": theme_mask,
         "months": (start.replace(day=1), end.replace(day=1)), "area": area, "area_pick": 7}
    themes = tuple(name for name, (_, bit, _) in THEMES.items() if theme_mask & bit)
    return f, dict(date_from=start, date_to=end, suppliers=tuple(suppliers), categories=tuple(categories),
                   themes=themes, hours=hours, days=days, map_level=level)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=panel_states())
@example(drawn=_drawn(hours=(22, 4)))  # past midnight: incidents with no time of day pass no hour filter
@example(drawn=_drawn(area="borough", hours=(8, 17), days=(1, 2), start=date(2023, 1, 9), end=date(2023, 2, 5)))
@example(drawn=_drawn(area="msoa", level="lsoa", categories=(1, 3), theme_mask=3))
@example(drawn=_drawn(start=date(2023, 10, 3), end=date(2023, 10, 30), suppliers=("lfb", "las")))
@example(drawn=_drawn(start=date(1900, 1, 1), end=date(2999, 12, 31)))  # centuries: only the data's months
def test_panels_from_months_in_memory_equal_the_sql(generated, monkeypatch, drawn):
    """Every panel answered from the rollup months a worker holds (borough, LSOA, day x hour) equals the same
    panel answered by its SQL, for random suppliers, categories, themes, whole months or day-level ranges,
    hours, weekdays, selected areas and map levels, as tiers that see different suppliers (a partner
    analyst, with health data only on its own and under disclosure control, and an admin)."""
    f, fields = drawn
    engine = get_engine(generated)
    selected = _selected_area(engine, f)
    state = FilterState(**fields, **selected)
    monkeypatch.setattr(queries, "_READ_AT_ONCE", frozenset({"borough", "lsoa", "day_hour"}))
    answered = []
    counts_in_memory = queries._counts_in_memory

    def recording(*args, **kwargs):
        result = counts_in_memory(*args, **kwargs)
        answered.append(result is not None)
        return result
    monkeypatch.setattr(queries, "_counts_in_memory", recording)
    for user in (ANALYST, rollups.OPERATOR):
        answered.clear()
        monkeypatch.setattr(queries, "PANELS_FROM_MEMORY", True)
        from_memory = _panels(engine, state, user)
        head = from_memory["headline"]
        if isinstance(head, queries.Headline) and head.source in queries._MEMORY_FAMILY_OF:
            assert answered and answered[0], "a rollup plan is answered from the months in memory"
        span = queries.data_span(engine)
        assert all(span[0] <= key[4] <= span[1] for key in queries._grid_months), "no month beyond the data"
        monkeypatch.setattr(queries, "PANELS_FROM_MEMORY", False)
        from_sql = _panels(engine, state, user)
        assert from_memory == from_sql, (user.tier, state)


POLYGONS = {
    "central rectangle": ((-0.14, 51.50), (-0.08, 51.50), (-0.08, 51.53), (-0.14, 51.53)),
    "a slanted quadrilateral": ((-0.25, 51.45), (-0.05, 51.40), (0.02, 51.52), (-0.20, 51.58)),
    "across London's edge": ((-0.60, 51.30), (-0.40, 51.30), (-0.40, 51.45), (-0.60, 51.45)),
}


# How a polygon may be read: the cell points' groups of the cells inside it plus the packed points of its edge
# cells (and the packed points of every cell it touches for days and hours), or every point raw.
POLYGON_READS = {"inside cells and the edge cells' points": {},
                 "raw points only": {"POLYGON_CELLS_MAX": 0}}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=panel_states(), polygon=st.sampled_from(sorted(POLYGONS)), read=st.sampled_from(sorted(POLYGON_READS)))
@example(drawn=_drawn(hours=(22, 4)), polygon="central rectangle", read="inside cells and the edge cells' points")
@example(drawn=_drawn(area="borough", days=(6, 7), start=date(2023, 1, 9), end=date(2023, 2, 5)),
         polygon="a slanted quadrilateral", read="inside cells and the edge cells' points")
@example(drawn=_drawn(), polygon="across London's edge", read="inside cells and the edge cells' points")
@example(drawn=_drawn(hours=(0, 2), start=date(2023, 10, 20), end=date(2023, 11, 5)),  # the clocks go back
         polygon="a slanted quadrilateral", read="inside cells and the edge cells' points")
def test_a_drawn_polygons_points_read_once_answer_every_panel_as_the_sql(generated, monkeypatch, drawn, polygon,
                                                                         read):
    """A drawn polygon's incidents, read into memory by month x borough (the cell points' groups of the cells
    wholly inside it, and the packed points of the cells on its edge) and by day x hour x weekday x borough (the packed
    points of every cell it touches, the months asked for), answer every panel as the raw-table SQL does, for random filters, dates, hours,
    weekdays and selected areas; the panels of one polygon read each form once, and no month twice."""
    f, fields = drawn
    engine = get_engine(generated)
    selected = _selected_area(engine, f)
    state = FilterState(**fields, **selected, polygon=POLYGONS[polygon])
    for name, value in POLYGON_READS[read].items():
        monkeypatch.setattr(queries, name, value)
    by_month_reads, day_hour_months = [], []
    read_by_month, read_day_hour = queries._read_polygon_by_month, queries._read_polygon_day_hour
    monkeypatch.setattr(queries, "_read_polygon_by_month",
                        lambda *a: by_month_reads.append(1) or read_by_month(*a))
    monkeypatch.setattr(queries, "_read_polygon_day_hour",
                        lambda engine, ring, months: day_hour_months.extend(months) or read_day_hour(engine, ring, months))
    for user in (ANALYST, rollups.OPERATOR):
        monkeypatch.setattr(queries, "PANELS_FROM_MEMORY", True)
        from_memory = _panels(engine, state, user)
        queries.clear_caches(keep_reference=True)
        by_month_reads.clear(), day_hour_months.clear()
        with queries.capture_sql() as statements:  # every panel of the change, as the dashboard asks them
            for panel in (queries.headline, queries.monthly_series, queries.category_counts,
                          queries.hour_day_grid, queries.top_areas):
                try:
                    panel(engine, state, user=user)
                except (queries.AccessRefused, ValueError):
                    pass
        reads = [sql for sql, _ in statements if "FROM incidents" in sql]
        if queries._polygon_only(state) and not isinstance(from_memory["headline"], tuple):
            assert len(by_month_reads) <= 1, "one read of the polygon's whole months"
            assert day_hour_months, "the hour x weekday grid reads the polygon's days and hours"
            assert len(day_hour_months) == len(set(day_hour_months)), "no month of days and hours read twice"
            # (with a borough selected, the top areas are its MSOAs: those still come from the raw points)
            polygon_reads = len(reads) - (0 if state.selected_area is None else 1)
            assert polygon_reads <= 4, reads  # (whole months; days and hours of the periods, the series, the grid)
        monkeypatch.setattr(queries, "PANELS_FROM_MEMORY", False)
        from_sql = _panels(engine, state, user)
        assert from_memory == from_sql, (user.tier, polygon, read, state)


def test_a_small_polygon_within_a_few_cells_counts_its_edge_points_as_the_sql(generated, monkeypatch):
    """A polygon smaller than a cell has no cell inside it: everything comes from its edge cells' packed points,
    tested against it one by one, and every panel still equals the raw-table SQL (some points in, some out)."""
    engine = get_engine(generated)
    lon, lat = query(generated, "SELECT longitude, latitude FROM incidents WHERE geom IS NOT NULL "
                                "AND occurred_at >= '2023-01-01' ORDER BY id LIMIT 1")[0]
    ring = ((lon - 0.0004, lat - 0.0003), (lon + 0.0004, lat - 0.0003), (lon + 0.0004, lat + 0.0003),
            (lon - 0.0004, lat + 0.0003))
    with db_scope.acting_as(ANALYST):
        inside, edge = queries._polygon_cells(engine, ring)
    assert inside == [] and edge
    state = FilterState(polygon=ring, date_from=date(2022, 1, 1), date_to=date(2023, 12, 31))
    for user in (ANALYST, rollups.OPERATOR):
        monkeypatch.setattr(queries, "PANELS_FROM_MEMORY", True)
        queries.clear_caches(keep_reference=True)
        from_memory = _panels(engine, state, user)
        monkeypatch.setattr(queries, "PANELS_FROM_MEMORY", False)
        from_sql = _panels(engine, state, user)
        assert from_memory == from_sql and from_memory["headline"].total > 0, user.tier
    with db_scope.acting_as(ANALYST):
        points = queries._cell_points(engine, ring, [], edge)
        in_cells = queries._cell_points(engine, ((lon - 1, lat - 1), (lon + 1, lat - 1), (lon + 1, lat + 1),
                                                 (lon - 1, lat + 1)), [], edge)
    assert 0 < len(points) < len(in_cells), "the edge cells hold points outside the polygon, left out"


def test_a_borough_analysts_polygon_counts_only_their_boroughs_records(generated, monkeypatch, request):
    """A borough analyst sees records only in their boroughs: a polygon across Westminster and its
    neighbours, with Westminster selected, counts from memory as row-level security lets the raw SQL count,
    inside cells included (their cell points hold every borough's); without the borough it is refused."""
    engine = get_web_engine(generated)  # (as the portal connects: the owner's own policy sees every row)
    analyst = make_user(generated, "borough_analyst", boroughs=("E09000033",))  # (user_boroughs: the database's say)
    request.addfinalizer(lambda: remove_users(generated))
    ring = POLYGONS["central rectangle"]
    state = FilterState(polygon=ring, borough_code="E09000033")
    with db_scope.acting_as(analyst):
        inside, _ = queries._polygon_cells(engine, ring)
    boroughs = {b for (b,) in query(generated, "SELECT DISTINCT borough_code FROM rollup_grid_month WHERE "
                                               "(cell_x, cell_y) IN (SELECT * FROM unnest(%s::int[], %s::int[]))",
                                    ([x for x, _ in inside], [y for _, y in inside]))}
    assert "E09000033" in boroughs and len(boroughs) > 1, "the polygon's inside cells reach other boroughs"
    queries.clear_caches(keep_reference=True)
    from_memory = _panels(engine, state, analyst)
    assert isinstance(from_memory["headline"], queries.Headline) and from_memory["headline"].total > 0
    queries.monthly_series(engine, state, user=analyst)  # (_panels leaves nothing in memory)
    (held,) = queries._polygon_months_held.values()
    westminster = queries._area_cells(engine).boroughs.index("E09000033")
    assert {int(c) for g in held.by_month.values() for c in g.cell} == {westminster}, "no other borough held"
    monkeypatch.setattr(queries, "PANELS_FROM_MEMORY", False)
    queries.clear_caches(keep_reference=True)
    assert from_memory == _panels(engine, state, analyst)
    with pytest.raises(queries.AccessRefused):
        queries.headline(engine, FilterState(polygon=ring), user=analyst)


def test_a_polygons_inside_cells_leave_out_the_counts_retention_folded(generated, monkeypatch):
    """The grid rollup adds retention's folded counts to a cell's live ones, while a polygon's raw SQL counts
    the records still held: the cells inside a polygon are counted from the cell points (records), so its panels
    from memory still equal that SQL (they would not if the inside came from the rollup with the folded counts
    in)."""
    engine = get_engine(generated)
    state = FilterState(polygon=POLYGONS["central rectangle"])
    with db_scope.acting_as(ANALYST):
        inside, _ = queries._polygon_cells(engine, state.polygon)
    (x, y), month = inside[len(inside) // 2], date(2023, 6, 1)
    conn = psycopg2.connect(libpq_dsn(generated))
    try:
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO retained_grid_month VALUES (%s, 'police_uk', 1, 0, 'E09000033', %s, %s, 40)",
                        (month, x, y))
            cur.execute("SELECT safestats_refresh_rollup('rollup_grid_month', %s, %s)",
                        (month, date(2023, 7, 1)))
        assert query(generated, "SELECT sum(incidents) FROM rollup_grid_month WHERE month = %s AND cell_x = %s "
                                "AND cell_y = %s AND supplier = 'police_uk' AND category_id = 1 AND theme_mask = 0 "
                                "AND borough_code = 'E09000033'", (month, x, y))[0][0] >= 40, "folded counts in the rollup"
        queries.clear_caches(keep_reference=True)
        monkeypatch.setattr(queries, "PANELS_FROM_MEMORY", True)
        from_memory = queries.monthly_series(engine, state, user=ANALYST)
        monkeypatch.setattr(queries, "PANELS_FROM_MEMORY", False)
        queries.clear_caches(keep_reference=True)
        assert from_memory == queries.monthly_series(engine, state, user=ANALYST)
    finally:
        with conn, conn.cursor() as cur:
            cur.execute("DELETE FROM retained_grid_month")
            cur.execute("SELECT safestats_refresh_rollup('rollup_grid_month', %s, %s)", (month, date(2023, 7, 1)))
        conn.close()
        queries.clear_caches(keep_reference=True)


def test_a_polygons_inside_cells_are_read_one_index_scan_a_cell(generated):
    """The inside cells' groups are read by one scan of the cell points' primary key per cell (as a plain join
    the planner may read the whole table; the edge cells' points are read through the same FROM clause). The
    plan is asked with sequential scans off, as "can it"."""
    import re

    engine = get_web_engine(generated)
    ring = POLYGONS["central rectangle"]
    with db_scope.acting_as(ANALYST):
        with queries.capture_sql() as statements:
            queries._read_polygon_by_month(engine, ring)
        # (the edge cells' read runs on another thread, unrecorded; it shares the inside read's FROM clause)
        reads = [(sql, params) for sql, params in statements if "incident_cell_points_visible" in sql]
        assert len(reads) == 1 and "r.groups" in reads[0][0], reads
        for sql, params in reads:
            with engine.connect() as conn, conn.begin():
                cursor = conn.connection.dbapi_connection.cursor()
                cursor.execute("SET LOCAL enable_seqscan = off")
                cursor.execute("EXPLAIN " + re.sub(r"(?<![:\w]):([a-z_]+)", r"%(\1)s", sql), params)
                plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "incident_cell_points_pkey" in plan and "Hash Join" not in plan, plan


def test_a_polygons_edge_months_by_binary_search_are_london_months(generated):
    """The edge's month of each point is found among the London months' first instants (width_bucket), not by
    converting each point's time zone: the same month for instants on either side of every month's start
    (a microsecond before, at, after), through both clock changes, and beyond the bounds' range."""
    bucket, month = queries._london_month_bucket("t"), queries._london_month_of_bucket("m", "t")
    rows = query(generated, f"""
        WITH starts AS (SELECT (d::timestamp AT TIME ZONE 'Europe/London') AS s
                        FROM generate_series(DATE '2019-01-01', DATE '2027-01-01', interval '1 month') d),
             instants AS (SELECT s + k * interval '1 microsecond' AS t FROM starts, (VALUES (-1), (0), (1)) v(k)
                          UNION ALL SELECT generate_series(TIMESTAMPTZ '2023-03-25', '2023-04-02', interval '17 minutes')
                          UNION ALL SELECT generate_series(TIMESTAMPTZ '2023-10-28', '2023-11-02', interval '13 minutes')
                          UNION ALL VALUES (TIMESTAMPTZ '1850-06-30 23:30Z'), (TIMESTAMPTZ '2150-06-30 23:30Z'))
        SELECT count(*), count(*) FILTER (WHERE {month} IS DISTINCT FROM
                                          date_trunc('month', t AT TIME ZONE 'Europe/London')::date)
        FROM (SELECT t, {bucket} AS m FROM instants) AS b""")
    assert rows[0][0] > 300 and rows[0][1] == 0


def _cell_points_as_rows(url: str, where: str = "true") -> list[tuple]:
    """incident_cell_points unpacked: one (month, cell_x, cell_y, supplier, borough, access level, UTC hour,
    category, theme mask * 4 + precision, x, y) per point, sorted; each row's groups checked against its points."""
    out = []
    for month, cx, cy, supplier, borough, level, points, groups_packed, counts_packed, *packed in query(url, f"""
            SELECT month, cell_x, cell_y, supplier, borough_code, access_level, points, groups, group_counts, hours,
                   categories, codes, xs, ys FROM incident_cell_points WHERE {where}"""):
        columns = [np.frombuffer(bytes(b), dtype=t) for b, t in zip(packed, (">i4", ">i2", ">i2", ">f8", ">f8"))]
        assert all(len(c) == points for c in columns), "every packed column holds one value per point"
        groups = dict(zip(np.frombuffer(bytes(groups_packed), dtype=">i4").tolist(),
                          np.frombuffer(bytes(counts_packed), dtype=">i4").tolist()))
        assert groups == Counter((columns[1] * 64 + columns[2] // 4).tolist()), \
            "the groups count the row's points by category and themes"
        out += [(month, cx, cy, supplier, borough, level) + tuple(v.item() for v in values)
                for values in zip(*columns)]
    return sorted(out)


def _incidents_as_cell_points(url: str, where: str = "true") -> list[tuple]:
    return sorted(query(url, f"""
        SELECT date_trunc('month', occurred_at AT TIME ZONE 'Europe/London')::date, floor(ST_X(geom) / 250)::int,
               floor(ST_Y(geom) / 250)::int, supplier, coalesce(borough_code, ''), access_level,
               floor(date_part('epoch', occurred_at) / 3600)::int, category_id,
               safestats_theme_mask(theme_weapon, theme_dava, theme_young_victim, theme_night_time_economy,
                                    theme_arson) * 4
               + CASE time_precision WHEN 'minute' THEN 0 WHEN 'day' THEN 1 ELSE 2 END,
               ST_X(geom), ST_Y(geom)
        FROM incidents WHERE geom IS NOT NULL AND {where}"""))


def test_the_packed_cell_points_are_every_located_incident_and_follow_a_refresh(generated):
    """incident_cell_points holds every incident with a point once, in its London month's 250 m cell (the
    grid rollup's), with its UTC hour, category, themes, time precision and coordinates at the same place in
    every packed column; a refresh of a month rewrites that month (incidents taken out, moved or added) and
    leaves the others as they were."""
    stored = _cell_points_as_rows(generated)
    assert len(stored) > 0.9 * ROWS and stored == _incidents_as_cell_points(generated)
    month, until = date(2023, 5, 1), date(2023, 6, 1)
    in_month = ("occurred_at >= '2023-05-01'::timestamp AT TIME ZONE 'Europe/London' "
                "AND occurred_at < '2023-06-01'::timestamp AT TIME ZONE 'Europe/London'")
    others = _cell_points_as_rows(generated, f"month <> DATE '{month}'")
    conn = psycopg2.connect(libpq_dsn(generated))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(f"CREATE TEMP TABLE kept AS SELECT * FROM incidents WHERE {in_month}")
            cur.execute(f"DELETE FROM incidents WHERE {in_month} AND id % 3 = 0")
            cur.execute(f"UPDATE incidents SET geom = ST_Translate(geom, 400, -300), category_id = 1 "
                        f"WHERE {in_month} AND id % 3 = 1")
        rollups.refresh_rollups(generated, trigger="test cell points", months=[month])
        assert _cell_points_as_rows(generated, f"month = DATE '{month}'") == \
            _incidents_as_cell_points(generated, in_month) != []
        assert _cell_points_as_rows(generated, f"month <> DATE '{month}'") == others
    finally:
        with conn, conn.cursor() as cur:
            cur.execute(f"DELETE FROM incidents WHERE {in_month}")
            cur.execute("INSERT INTO incidents SELECT * FROM kept")
        conn.close()
        rollups.refresh_rollups(generated, trigger="test cell points restore", months=[month])
        queries.clear_caches(keep_reference=True)
    assert _cell_points_as_rows(generated) == stored


def test_a_full_refresh_leaves_fresh_statistics_on_every_table_it_rewrote(generated):
    """A full refresh rewrites every rollup and the cell points, then ANALYZEs each: planned on the statistics
    of the empty table a first build starts from, a polygon's one index scan per cell became a sequential scan
    per cell (18.5 s for the central polygon at 10M, bench/README.md)."""
    tables = list(rollups.ROLLUP_VIEWS) + [rollups.CELL_POINTS]
    counts = "SELECT relname, analyze_count FROM pg_stat_user_tables WHERE relname = ANY(%s)"
    before = dict(query(generated, counts, (tables,)))
    rollups.refresh_rollups(generated, trigger="test statistics")
    queries.clear_caches(keep_reference=True)
    after = dict(query(generated, counts, (tables,)))
    assert [t for t in tables if after.get(t, 0) <= before.get(t, 0)] == [], "every table rewritten is analysed"


def test_the_web_role_reads_the_cell_points_as_it_may_read_incidents(generated, request):
    """The packed points are records: the web role cannot read the table, and through its view each tier sees
    exactly the located incidents row-level security lets it see (a borough analyst their borough's; a viewer,
    whose maps stop above LSOAs, and a transaction with no user, nothing)."""
    engine = get_web_engine(generated)
    request.addfinalizer(lambda: remove_users(generated))
    users = {"partner analyst": ANALYST, "admin": rollups.OPERATOR,
             "borough analyst": make_user(generated, "borough_analyst", boroughs=("E09000033",)),
             "viewer": SimpleNamespace(id=None, tier="viewer", is_authenticated=True, is_active=True)}
    seen = {}
    for name, user in users.items():
        with db_scope.acting_as(user), engine.connect() as conn:
            packed = conn.exec_driver_sql("SELECT coalesce(sum(points), 0), count(DISTINCT borough_code) "
                                          "FROM incident_cell_points_visible").one()
            raw = conn.exec_driver_sql("SELECT count(*), count(DISTINCT coalesce(borough_code, '')) "
                                       "FROM incidents WHERE geom IS NOT NULL").one()
        seen[name] = tuple(packed)
        if name == "viewer":
            assert packed[0] == 0, "no records for a tier whose maps stop at boroughs"
        else:
            assert tuple(packed) == tuple(raw) and packed[0] > 0, name
    assert seen["borough analyst"][1] == 1 and seen["partner analyst"][1] > 1
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM incident_cell_points_visible").scalar() == 0
        with pytest.raises(Exception, match="permission denied"):
            conn.exec_driver_sql("SELECT count(*) FROM incident_cell_points")


def test_londons_offset_by_day_equals_the_time_zone_hour_by_hour():
    """A polygon's days and hours find London's offset once per UTC day (twice, at its first and last hour),
    and hour by hour only on the days the clocks change: the same offset as the time zone gives for every
    hour of 2015-2030, and for hours scattered over a century, both ways round."""
    every_hour = np.arange(24 * 16436, 24 * 22281, dtype=np.int64)  # 2015-01-01 .. 2030-12-31
    scattered = np.unique(np.random.default_rng(7).integers(0, 24 * 36525, 5000))
    for hours in (every_hour, scattered):
        expected = np.array([queries._london_offset(int(h)) for h in hours])
        assert (queries._london_offsets(hours) == expected).all()
    assert set(queries._london_offsets(every_hour)) == {0, 1}


def test_a_new_polygons_panels_asked_at_once_read_its_points_once(generated, monkeypatch):
    """A filter change's panel callbacks arrive together (the browser sends them at once, and gunicorn serves
    them on as many threads): for a newly drawn polygon one of them reads its whole months, and the hour x
    weekday grid its days and hours, while the others wait for those reads, instead of each reading them
    (six reads at once of a central polygon took 7 s at 30M)."""
    engine = get_engine(generated)
    state = FilterState(polygon=POLYGONS["central rectangle"])
    queries.clear_caches(keep_reference=True)
    reads, real_reads = [], (queries._read_polygon_by_month, queries._read_polygon_day_hour)

    def slowly(read):
        def slow_read(*args, **kwargs):
            reads.append(read.__name__)
            time.sleep(0.3)     # long enough for every panel thread to ask while the read is under way
            return read(*args, **kwargs)
        return slow_read
    for read in real_reads:
        monkeypatch.setattr(queries, read.__name__, slowly(read))
    panels = (queries.headline, queries.monthly_series, queries.category_counts, queries.hour_day_grid,
              queries.top_areas)
    answers, start = {}, threading.Barrier(len(panels))

    def ask(panel):
        start.wait()
        answers[panel.__name__] = panel(engine, state, user=ANALYST)
    threads = [threading.Thread(target=ask, args=(panel,)) for panel in panels]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(reads) == ["_read_polygon_by_month", "_read_polygon_day_hour"]  # (once each)
    assert len(answers) == len(panels)
    for read in real_reads:
        monkeypatch.setattr(queries, read.__name__, read)
    queries.clear_caches(keep_reference=True)
    assert answers["headline"] == queries.headline(engine, state, user=ANALYST)


def test_another_worker_loads_a_new_polygons_months_instead_of_reading_them(generated, monkeypatch):
    """The panels of a filter change reach every web worker of the host at once: the polygon's months one
    worker read are loaded by another (safestats.shared_reads) instead of read again, and answer as the SQL.
    Another worker is this process with its own memory emptied; a new data version reads again."""
    engine = get_engine(generated)
    state = FilterState(polygon=POLYGONS["a slanted quadrilateral"])
    panels = (queries.headline, queries.monthly_series, queries.hour_day_grid, queries.top_areas)
    queries.clear_caches(keep_reference=True)
    first = [panel(engine, state, user=ANALYST) for panel in panels]
    reads, by_month, day_hour = [], queries._read_polygon_by_month, queries._read_polygon_day_hour
    monkeypatch.setattr(queries, "_read_polygon_by_month", lambda *a: reads.append("months") or by_month(*a))
    monkeypatch.setattr(queries, "_read_polygon_day_hour", lambda *a: reads.append("days") or day_hour(*a))

    def as_another_worker():
        with queries._cache_lock:
            queries._cache.clear()
        with queries._grid_months_lock:
            queries._polygon_months_held.clear()
        return [panel(engine, state, user=ANALYST) for panel in panels]
    assert as_another_worker() == first and reads == [], "loaded, not read"
    monkeypatch.setattr(queries, "data_version", lambda engine: -1)     # (what a new drop's refresh does)
    assert as_another_worker() == first and sorted(reads) == ["days", "months"], "a new data version reads again"
    monkeypatch.setattr(queries, "PANELS_FROM_MEMORY", False)
    queries.clear_caches(keep_reference=True)
    assert [panel(engine, state, user=ANALYST) for panel in panels] == first


def test_the_area_months_keep_incidents_with_no_lsoa(generated):
    """The LSOA months in memory hold the incidents with no LSOA too (by borough, or none), so London's and
    a borough's totals from them equal the borough rollup's."""
    engine = get_engine(generated)
    [(no_lsoa,)] = query(generated, "SELECT count(*) FROM incidents WHERE coalesce(lsoa_code, '') = ''")
    assert no_lsoa > 0, "the generated data has incidents outside every LSOA"
    months = [date(2022, m, 1) for m in range(1, 13)]
    [(total,)] = query(generated, "SELECT sum(incidents) FROM rollup_borough_month "
                                  "WHERE month BETWEEN '2022-01-01' AND '2022-12-01'")
    cells = queries._area_cells(engine)
    with db_scope.acting_as(rollups.OPERATOR):
        for family in ("lsoa", "borough", "day_hour"):
            held = queries._grid_months_in_memory(engine, family, months)
            assert sum(int(held[m].incidents.sum()) for m in months) == total, family
        lsoa_months = queries._grid_months_in_memory(engine, "lsoa", months)
    outside = sum(int(g.incidents[g.cell >= len(cells.lsoas)].sum()) for g in lsoa_months.values())
    assert outside == query(generated, "SELECT sum(incidents) FROM rollup_area_month WHERE lsoa_code = '' "
                                       "AND month BETWEEN '2022-01-01' AND '2022-12-01'")[0][0] > 0
    queries.clear_caches()


def test_a_load_rereads_only_the_grid_months_it_refreshed(generated):
    """A worker's grid months outlive a load that does not touch them; the month a load refreshes is read
    again, so the layer counts the new incidents."""
    url = generated
    engine = get_engine(url)
    state = FilterState(date_from=date(2023, 2, 1), date_to=date(2024, 1, 31))
    new_month = date(2024, 1, 1)  # after the generated data: nothing there yet
    queries.clear_caches()
    months, before = queries.study_counts_by_month(engine, state, 500, user=rollups.OPERATOR)
    kept = {key[4]: arrays for key, arrays in queries._grid_months.items()}
    assert len(kept) == 12 and months[-1] == new_month and before[-1].sum() == 0

    [(last_drop,)] = query(url, "SELECT max(id) FROM drops")
    generate_incidents(url, 1_200, months=[new_month], seed=13, log=lambda *a: None)
    drop_ids = _values(url, f"SELECT id FROM drops WHERE id > {last_drop} ORDER BY id")
    try:
        rollups.refresh_after_load(url, drop_ids, trigger="test grid months")
        queries.clear_caches(keep_reference=True)  # what a new data version does to the panel cache
        _, after = queries.study_counts_by_month(engine, state, 500, user=rollups.OPERATOR)
        newest = {}
        for key, arrays in queries._grid_months.items():  # oldest first: the newest read of a month wins
            newest[key[4]] = arrays
        assert all(newest[m] is kept[m] for m in kept if m != new_month), "untouched months are not read again"
        assert newest[new_month] is not kept[new_month]
        study = set(zip(*queries.study_area_cells(engine, 500)))
        added_in_study = sum(n for x, y, n in query(url, """
            SELECT floor(ST_X(geom) / 500)::int, floor(ST_Y(geom) / 500)::int, count(*) FROM incidents
            WHERE drop_id = ANY(%s) AND geom IS NOT NULL GROUP BY 1, 2""", (drop_ids,)) if (x, y) in study)
        assert after[-1].sum() == added_in_study > 0
        assert np.array_equal(after[:-1], before[:-1])
    finally:
        conn = psycopg2.connect(libpq_dsn(url))
        with conn, conn.cursor() as cur:
            cur.execute("DELETE FROM incidents WHERE drop_id = ANY(%s)", (drop_ids,))
            cur.execute("DELETE FROM drops WHERE id = ANY(%s)", (drop_ids,))
        conn.close()
        rollups.refresh_rollups(url, trigger="test grid months restore", months=[new_month])


def test_a_worker_warms_the_grid_months_of_the_opening_hotspot_layers(generated):
    """safestats serve's workers read the opening view's months at start (queries.warm_hotspot_months), as
    the analysts' tiers see them: their first hotspot layers and LSOA map then read no month from the
    database, and tiers that see the rollups alike share the same arrays (one copy per worker)."""
    engine = get_engine(generated)
    queries.clear_caches()
    assert queries.warm_hotspot_months(engine) > 0
    held = dict(queries._grid_months)
    first = next(p for p in TIER_POLICIES.values() if p.may_break_down_to("lsoa"))
    assert {key[3] for key in held} == {(first.min_area_level, first.aggregate_level)}
    queries.clear_caches(keep_reference=True)  # a cold panel cache, as after a new drop
    borough_analyst = SimpleNamespace(id=None, tier="borough_analyst", boroughs=("E09000033",),
                                      is_authenticated=True, is_active=True)
    for user in (ANALYST, borough_analyst, rollups.OPERATOR):  # (today every such tier sees them alike)
        for layer in (queries.hotspot_layer, queries.comparison_layer, queries.emerging_hotspot_layer,
                      queries.lsoa_hotspot_layer):
            layer(engine, FilterState(), user=user)
        assert queries._grid_months == held, f"{user.tier}: the opening layers read no month again"
        # The LSOA map's two periods are held: it answers from memory (a period not held is left to SQL).
        with db_scope.acting_as(user):
            period = queries.current_period(engine, FilterState())
            assert queries._lsoa_counts_in_memory(engine, FilterState(), [period, period.previous()],
                                                  read_missing=False) is not None
    assert all(held[key] is queries._grid_months[key] for key in held)
    queries.clear_caches()
    with db_scope.acting_as(ANALYST):
        period = queries.current_period(engine, FilterState())
        assert queries._lsoa_counts_in_memory(engine, FilterState(), [period], read_missing=False) is None


def test_a_served_worker_reads_a_periods_lsoa_months_after_its_first_lsoa_map(generated, monkeypatch):
    """A period no worker holds is answered by SQL, and (in served workers) its LSOA months are then read on
    a thread: the next LSOA map over those months answers from memory, with the same counts."""
    engine = get_engine(generated)
    monkeypatch.setattr(queries, "READ_MONTHS_IN_BACKGROUND", True)
    queries.clear_caches()
    state = FilterState(date_from=date(2022, 3, 1), date_to=date(2022, 8, 31), categories=(1, 3))
    period = queries.current_period(engine, state)
    first = queries.area_values(engine, state, "lsoa", user=ANALYST)  # SQL: nothing held yet
    queries.wait_for_background_reads()
    with db_scope.acting_as(ANALYST):
        held = queries._lsoa_counts_in_memory(engine, state, [period, period.previous()], read_missing=False)
    assert held is not None, "the months were read after the first map"
    codes = queries._lsoa_codes(engine)
    assert {codes[k]: int(held[0][k]) for k in np.nonzero(held[0])[0]} == first.current
    queries.clear_caches(keep_reference=True)  # a new panel cache; the months stay
    assert queries.area_values(engine, state, "lsoa", user=ANALYST).current == first.current


def test_a_period_a_few_months_short_of_those_held_reads_just_those(generated, monkeypatch):
    """A worker holding a period's LSOA months answers a slightly longer period from memory too, reading only
    the few months it lacks (READ_NOW_MONTHS) instead of leaving the whole period to SQL; a period mostly
    not held is still left to SQL."""
    engine = get_engine(generated)
    queries.clear_caches()
    held_period = queries.Period(date(2022, 3, 1), date(2022, 8, 31))
    longer = queries.Period(date(2022, 1, 1), date(2022, 8, 31))
    reads, real_read = [], queries._read_grid_months
    monkeypatch.setattr(queries, "_read_grid_months", lambda *args: reads.append(args[-1]) or real_read(*args))
    with db_scope.acting_as(ANALYST):
        assert queries._lsoa_counts_in_memory(engine, FilterState(), [held_period], read_missing=True) is not None
        reads.clear()
        topped_up = queries._lsoa_counts_in_memory(engine, FilterState(), [longer], read_missing=False)
        assert reads == [[date(2022, 1, 1), date(2022, 2, 1)]], "only the two months not held were read"
        much_longer = queries.Period(date(2022, 1, 1), date(2023, 6, 30))   # ten months more: left to SQL
        assert queries._lsoa_counts_in_memory(engine, FilterState(), [much_longer], read_missing=False) is None
        queries.clear_caches()
        from_scratch = queries._lsoa_counts_in_memory(engine, FilterState(), [longer], read_missing=True)
    assert topped_up is not None and (topped_up[0] == from_scratch[0]).all() and topped_up[0].sum() > 0
    queries.clear_caches()


def test_theme_mask_is_one_function_used_by_every_rollup(generated):
    assert query(generated, "SELECT safestats_theme_mask(true, NULL, true, false, true)") == [(21,)]
    templates = _values(generated, "SELECT select_sql FROM rollup_tables WHERE 'incidents' = ANY(reads)")
    assert templates and all("safestats_theme_mask(" in t and "CASE WHEN theme" not in t for t in templates)


# ---- only the months a drop touches are refreshed ------------------------------------------------------

def _refreshes_since(url: str, last_id: int) -> list[tuple]:
    return query(url, """SELECT view_name, family, month_from, month_to, drop_ids FROM rollup_refreshes
                         WHERE id > %s ORDER BY id""", (last_id,))


def test_a_load_refreshes_only_the_months_its_drops_touch(generated):
    url = generated
    assert rollups.stale_views(url) == []
    [(last_id,)] = query(url, "SELECT max(id) FROM rollup_refreshes")
    before_2022 = query(url, "SELECT sum(incidents) FROM rollup_borough_month WHERE month < '2023-01-01'")

    # One month's drops for December 2023 (one per supplier): only that month is stale and refreshed.
    [(last_drop,)] = query(url, "SELECT max(id) FROM drops")
    added = generate_incidents(url, 2_400, months=[date(2023, 12, 1)], seed=12, log=lambda *a: None)
    drop_ids = _values(url, f"SELECT id FROM drops WHERE id > {last_drop} ORDER BY id")
    assert len(drop_ids) == len(SUPPLIERS)
    december = date(2023, 12, 1)
    assert rollups.stale_views(url) == sorted((r.name, december) for r in rollups.ROLLUPS)
    [(november_refreshed,)] = query(url, """SELECT refreshed_at FROM rollup_months
                                            WHERE family = 'rollup_area_month' AND month = '2023-11-01'""")
    rollups.refresh_after_load(url, drop_ids, trigger="test drop")
    refreshed = _refreshes_since(url, last_id)
    assert {(family, first, last) for _, family, first, last, _ in refreshed} == {
        (name, december, december) for name in rollups.ROLLUP_VIEWS + (rollups.CELL_POINTS,)}
    assert all(ids == drop_ids for *_, ids in refreshed)  # each refresh names the drops that caused it
    assert query(url, """SELECT refreshed_at FROM rollup_months
                         WHERE family = 'rollup_area_month' AND month = '2023-11-01'""") == [(november_refreshed,)]
    # In dependency order: each family after the ones it reads.
    order = [family for _, family, _, _, _ in refreshed]
    assert order == list(rollups.ROLLUP_VIEWS) + [rollups.CELL_POINTS]  # (the points with the grid, last)
    assert rollups.stale_views(url) == []
    assert query(url, "SELECT sum(incidents) FROM rollup_borough_month WHERE month < '2023-01-01'") == before_2022
    assert query(url, "SELECT sum(incidents) FROM rollup_borough_month") == query(url, "SELECT count(*) FROM incidents")
    assert added == query(url, "SELECT count(*) FROM incidents WHERE drop_id = ANY(%s)", (drop_ids,))[0][0]

    # An update drop (police.uk outcomes) changes no count: it touches no view.
    [(outcomes_drop,)] = query(url, """INSERT INTO drops (supplier, file_name, sha256, size_bytes, received_at,
                                                          loaded_at, status, period_start, period_end)
                                       VALUES ('police_uk_outcomes', '2023-12-metropolitan-outcomes.csv',
                                               repeat('a', 64), 1, now(), now(), 'loaded', '2023-12-01', '2023-12-31')
                                       RETURNING id""")
    assert rollups.months_touched(url, [outcomes_drop]) == []
    assert rollups.stale_views(url) == []
    [(last_id,)] = query(url, "SELECT max(id) FROM rollup_refreshes")
    assert rollups.refresh_after_load(url, [outcomes_drop], trigger="test outcomes") == {}
    assert _refreshes_since(url, last_id) == []


def _month_of_family(url: str, family: str, month: date, rebuilt: bool = False) -> list[tuple]:
    """A family's rows for ``month``: as the table holds them, or (``rebuilt``) straight from its source SQL."""
    [(select_sql, key_columns, time_column)] = query(
        url, "SELECT select_sql, key_columns, time_column FROM rollup_tables WHERE name = %s", (family,))
    if rebuilt:
        until = date(month.year + month.month // 12, month.month % 12 + 1, 1)
        sql = select_sql.replace("{since}", f"'{month}'").replace("{until}", f"'{until}'")
    else:
        sql = f"SELECT {key_columns}, incidents FROM {family} WHERE date_trunc('month', {time_column}) = '{month}'"
    return sorted(query(url, sql), key=repr)


def test_a_refresh_writes_exactly_the_changes_of_a_month(generated):
    """Refreshing a month that already has rows: keys no longer there are deleted, changed counts updated and
    new keys inserted (the hash full join of rollup_refresh_v2.sql), so every family reads as built afresh."""
    url = generated
    month = date(2023, 6, 1)
    conn = psycopg2.connect(libpq_dsn(url))
    try:
        with conn, conn.cursor() as cur:
            cur.execute("""CREATE TABLE test_kept_incidents AS SELECT * FROM incidents
                           WHERE occurred_at >= '2023-06-01 00:00+01' AND occurred_at < '2023-07-01 00:00+01'""")
            # A third deleted, a third moved to another category (changed counts, and keys that are new).
            cur.execute("""DELETE FROM incidents i USING test_kept_incidents k WHERE i.id = k.id AND k.id % 3 = 0""")
            cur.execute("""UPDATE incidents i SET category_id = (SELECT min(category_id) FROM test_kept_incidents)
                           FROM test_kept_incidents k WHERE i.id = k.id AND k.id % 3 = 1
                             AND k.category_id <> (SELECT min(category_id) FROM test_kept_incidents)""")
            assert cur.rowcount > 0
        before = {f: _month_of_family(url, f, month) for f in rollups.ROLLUP_VIEWS}
        rollups.refresh_rollups(url, trigger="test month changed", months=[month])
        for family in rollups.ROLLUP_VIEWS:
            after = _month_of_family(url, family, month)
            assert after == _month_of_family(url, family, month, rebuilt=True), family
            assert after != before[family], f"{family}: the change must show"
            assert query(url, "SELECT rows FROM rollup_months WHERE family = %s AND month = %s",
                         (family, month)) == [(len(after),)]
    finally:
        with conn, conn.cursor() as cur:
            cur.execute("DELETE FROM incidents i USING test_kept_incidents k WHERE i.id = k.id")
            cur.execute("INSERT INTO incidents SELECT * FROM test_kept_incidents")
            cur.execute("DROP TABLE test_kept_incidents")
        conn.close()
        rollups.refresh_rollups(url, trigger="test month restored", months=[month])
    for family in rollups.ROLLUP_VIEWS:
        assert _month_of_family(url, family, month) == before[family], f"{family}: back as it was"


def _plans_as_notices(cur) -> None:
    """Every statement's plan from here on, functions' statements too, with the settings it was planned under,
    sent to the client as a NOTICE (auto_explain); the test is skipped where this user may not load it."""
    try:
        cur.execute("LOAD 'auto_explain'")
    except psycopg2.Error as exc:
        pytest.skip(f"auto_explain cannot be loaded by this database user ({exc.pgerror.strip()})")
    cur.execute("SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on; "
                "SET auto_explain.log_settings = on; SET auto_explain.log_level = notice")


@pytest.mark.parametrize("callers_setting", ["on", "off"])
def test_a_refresh_plans_its_grouping_without_sorts_and_gives_back_the_callers_setting(generated, callers_setting):
    """safestats_refresh_rollup plans its statements with sorting off (rollup_refresh_v3.sql: the planner had
    sorted millions of rows on disk to group them), and the caller's transaction gets its own setting back.
    auto_explain shows the plans of the function's statements with the settings they were planned under."""
    conn = psycopg2.connect(libpq_dsn(generated))
    try:
        with conn.cursor() as cur:
            _plans_as_notices(cur)
            cur.execute("SET LOCAL enable_sort = " + callers_setting)
            del conn.notices[:]
            cur.execute("SELECT safestats_refresh_rollup('rollup_area_month', '2023-06-01', '2023-07-01')")
            assert cur.fetchone()[0] > 0
            fresh_plans = [n for n in conn.notices if "CREATE TEMP TABLE rollup_fresh" in n]
            assert fresh_plans and all("enable_sort = 'off'" in n for n in fresh_plans)
            cur.execute("SHOW enable_sort")
            assert cur.fetchone()[0] == callers_setting
    finally:
        conn.rollback()
        conn.close()


def test_the_source_span_reads_london_months_from_the_time_index(generated):
    """safestats_rollup_source_span (rollup_source_span_v2.sql) gives London's months of the first and last
    incident, an instant late on 30 June in UTC being July in London, and finds them through the time index:
    version 1 read every incident, 28 s at 30 million, before every refresh after a load."""
    conn = psycopg2.connect(libpq_dsn(generated))
    try:
        with conn.cursor() as cur:
            # Version 1's span, over the same sources (incidents, retained counts, refreshed months).
            version_1 = """
                SELECT date_trunc('month', min(m))::date, (date_trunc('month', max(m)) + interval '1 month')::date
                FROM (SELECT min(occurred_at AT TIME ZONE 'Europe/London') AS m FROM incidents
                      UNION ALL SELECT max(occurred_at AT TIME ZONE 'Europe/London') FROM incidents
                      UNION ALL SELECT min(month) FROM retained_area_month
                      UNION ALL SELECT max(month) FROM retained_area_month
                      UNION ALL SELECT min(month) FROM rollup_months
                      UNION ALL SELECT max(month) FROM rollup_months) s"""
            cur.execute("SELECT since, until FROM safestats_rollup_source_span()")
            since, until = cur.fetchone()
            cur.execute(version_1)
            assert (since, until) == cur.fetchone()
            # The first incident at 23:30 UTC on 30 June 1990, before anything else: 00:30 on 1 July in London.
            cur.execute("SELECT safestats_ensure_incident_partitions('1990-06-30 23:30+00', '1990-06-30 23:30+00')")
            cur.execute("""CREATE TEMP TABLE first_incident AS SELECT * FROM incidents LIMIT 1;
                           UPDATE first_incident SET id = -1, occurred_at = '1990-06-30 23:30+00';
                           INSERT INTO incidents SELECT * FROM first_incident""")
            _plans_as_notices(cur)
            del conn.notices[:]
            cur.execute("SELECT since, until FROM safestats_rollup_source_span()")
            assert cur.fetchone() == (date(1990, 7, 1), until)
            plans = "".join(conn.notices)
            assert "Index" in plans and "Seq Scan on incidents" not in plans, plans
            cur.execute(version_1)
            assert cur.fetchone() == (date(1990, 7, 1), until)
    finally:
        conn.rollback()
        conn.close()


def test_status_reports_rows_size_staleness_and_dependencies(generated):
    status = {v["view"]: v for v in rollups.views_status(generated)}
    assert list(status) == list(rollups.ROLLUP_VIEWS)
    area = status["rollup_area_month"]
    assert area["rows"] == query(generated, "SELECT count(*) FROM rollup_area_month")[0][0] > 0
    assert area["size_bytes"] > 0 and area["refreshed_at"] is not None and area["duration_ms"] is not None
    assert set(YEARS) <= {y["year"] for y in area["years"]}
    assert status["rollup_borough_month"]["depends_on"] == ("rollup_msoa_month",)
    assert not any(v["stale"] for v in status.values())


# ---- a concurrent refresh never blocks a dashboard query -----------------------------------------------

def test_dashboard_query_never_waits_on_a_concurrent_refresh(generated):
    """While rollups refresh, the dashboard's queries of them never wait for a table lock. Watched in
    pg_stat_activity (a query of a rollup waiting on a relation lock), not inferred from timings, which on a
    slow 2-core machine shared with the refresh's two connections vary by more than a short wait; the control
    (the same refresh behind an ACCESS EXCLUSIVE lock) shows the watch sees such a wait."""
    url = generated
    engine = get_engine(url)
    state = FilterState(map_level="lsoa", date_from=date(2022, 1, 1), date_to=date(2023, 12, 31))

    def panel_once() -> float:
        queries.clear_caches()
        started = time.perf_counter()
        values = queries.area_values(engine, state, "lsoa", user=ANALYST)
        assert sum(values.current.values()) > 0
        return time.perf_counter() - started

    def loop_while(work) -> tuple[list[float], list[BaseException], int]:
        """Panels asked again and again while ``work`` runs: their times, any errors, and how many samples
        of pg_stat_activity (every 10 ms) found a dashboard query waiting on a table lock."""
        errors: list[BaseException] = []
        done = threading.Event()
        waits = [0]

        def run():
            try:
                work()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
            finally:
                done.set()

        def watch():
            conn = psycopg2.connect(libpq_dsn(url))
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    while not done.is_set():
                        cur.execute("""SELECT count(*) FROM pg_stat_activity
                                       WHERE datname = current_database() AND wait_event_type = 'Lock'
                                         AND wait_event = 'relation' AND query ILIKE '%%rollup_area_month%%'
                                         AND query NOT ILIKE '%%safestats_refresh_rollup%%'""")
                        waits[0] += cur.fetchone()[0]
                        time.sleep(0.01)
            finally:
                conn.close()
        times = []
        worker, watcher = threading.Thread(target=run), threading.Thread(target=watch)
        worker.start()
        watcher.start()
        while not done.is_set():
            try:
                times.append(panel_once())
            except Exception as exc:  # noqa: BLE001 - any error fails the test
                errors.append(exc)
        worker.join()
        watcher.join()
        return times, errors, waits[0]

    def slow_refresh(locking: bool):
        # Held open for a second after the refresh so the commit happens while queries are running.
        conn = psycopg2.connect(libpq_dsn(url))
        try:
            with conn.cursor() as cur:
                cur.execute("SET jit = off")
                if locking:
                    cur.execute("LOCK TABLE rollup_area_month IN ACCESS EXCLUSIVE MODE")
                cur.execute("SELECT safestats_refresh_rollup('rollup_area_month', %s, %s)",
                            (date(YEARS[0], 1, 1), date(YEARS[-1] + 1, 1, 1)))
                cur.execute("SELECT pg_sleep(1)")
            conn.commit()
        finally:
            conn.close()

    times, errors, waits = loop_while(lambda: rollups.refresh_rollups(url, trigger="test concurrent"))
    assert not errors and len(times) >= 3 and waits == 0, (errors, times, waits)

    times, errors, waits = loop_while(lambda: slow_refresh(locking=False))
    assert not errors and times and waits == 0, (errors, times, waits)

    # The control: the same refresh behind a table lock (what a TRUNCATE and reload would take) held open
    # makes a query wait the refresh and a second more, and the watch sees it waiting.
    times, errors, waits = loop_while(lambda: slow_refresh(locking=True))
    assert not errors and max(times) > 0.9 and waits > 0, (errors, times, waits)


# ---- the migrations go down to versions 2 and 1 and up again, data in place ----------------------------

def test_rollup_migrations_down_and_up_with_the_views_in_place(areas_loaded):
    url = make_database(TEST_DB_NAME + "_rollups_migration")
    migrate.upgrade(url)
    from loaders.boundaries import load_boundaries

    load_boundaries(url, regions=("Camden", "Islington"), log=lambda *a: None)
    generate_incidents(url, 3_000, first_year=2023, years=1, seed=5, log=lambda *a: None)
    rollups.refresh_rollups(url, trigger="test")
    [(total,)] = query(url, "SELECT count(*) FROM incidents")

    # Version 2 (0013): one materialised view per rollup and year under UNION ALL views, same counts.
    migrate.downgrade(url, "0013")
    assert set(_values(url, "SELECT matviewname FROM pg_matviews")) == {f"{v}_y2023" for v in rollups.ROLLUP_VIEWS}
    for view in rollups.ROLLUP_VIEWS:
        assert query(url, f"SELECT sum(incidents) FROM {view}") == [(total,)], view
        assert query(url, f"SELECT to_regclass('{view}_visible') IS NOT NULL") == [(True,)], view

    migrate.downgrade(url, "0007_feeds")
    assert _values(url, "SELECT matviewname FROM pg_matviews ORDER BY 1") == [
        "rollup_area_month", "rollup_borough_day_hour", "rollup_borough_month", "rollup_grid_month"]
    for view in ("rollup_area_month", "rollup_borough_month", "rollup_borough_day_hour", "rollup_grid_month"):
        assert query(url, f"SELECT sum(incidents) FROM {view}") == [(total,)], view

    migrate.upgrade(url)
    assert migrate.current_revision(url) == migrate.head_revision()
    assert _values(url, "SELECT matviewname FROM pg_matviews") == []  # version 3: tables
    for view in rollups.ROLLUP_VIEWS:
        assert query(url, f"SELECT sum(incidents) FROM {view}") == [(total,)], view
    assert rollups.stale_views(url) == []


# ---- the command line ---------------------------------------------------------------------------------

def test_views_command_status_refresh_and_explain(generated, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name("safestats")
    env = dict(os.environ, DATABASE_URL=generated, SAFESTATS_HOME=str(tmp_path))

    def safestats(*args):
        return subprocess.run([str(script), "views", *args], env=env, capture_output=True, text=True, timeout=300)

    status = safestats("status")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].startswith("newest drop loaded: 20")
    for rollup in rollups.ROLLUPS:
        line = next(l for l in lines if l.startswith(rollup.name + " "))
        assert "fresh" in line and ", ".join(rollup.reads) in line
    assert sum(1 for l in lines if l.startswith("  2022 ")) == len(rollups.ROLLUPS)

    [(last_id,)] = query(generated, "SELECT max(id) FROM rollup_refreshes")
    refreshed = safestats("refresh", "rollup_msoa_month")
    assert refreshed.returncode == 0, refreshed.stderr
    assert query(generated, "SELECT DISTINCT family FROM rollup_refreshes WHERE id > %s ORDER BY 1", (last_id,)) == [
        ("rollup_borough_month",), ("rollup_msoa_month",)]
    unknown = safestats("refresh", "no_such_view")
    assert unknown.returncode == 2 and "unknown rollup view(s): no_such_view" in unknown.stderr

    explained = safestats("explain", "headline", "borough=E09000007")
    assert explained.returncode == 0, explained.stderr
    assert "rollup_borough_month" in explained.stdout and "Execution Time" in explained.stdout
