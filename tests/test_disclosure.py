"""Disclosure control for health aggregates (safestats/disclosure.py) through the query layer, on real PostGIS.

The NHS HES/ECDS rule itself; then the differencing test: random health records in three boroughs, three
months and three categories, and every pair of filter states that differ by one area, one month or one
category, as a partner analyst (health "suppressed"). From the two answers an analyst sees, the count of
the difference cell must never be pinned to one value when it is 1-7. Views finer than a borough x month
(an LSOA, a drawn area, a day-level period, hours) are refused, and health never mixes into other
suppliers' totals (which would let an exact police count be subtracted from a police + health total).
"""
from __future__ import annotations

import itertools
import random
from dataclasses import replace
from datetime import date
from types import SimpleNamespace

import psycopg2
import pytest

from db import get_engine, libpq_dsn
from safestats import disclosure, queries
from safestats.filters import FilterState
from tests.conftest import query, refresh_after_seeding
from tests.test_queries import CAMDEN, CROYDON, WESTMINSTER

BOROUGHS = (CAMDEN, WESTMINSTER, CROYDON)
MONTHS = (date(2024, 1, 1), date(2024, 2, 1), date(2024, 3, 1))
CATEGORIES = (70, 71, 73)          # health categories (ambulance / A&E)
PARTNER = SimpleNamespace(is_authenticated=True, is_active=True, tier="partner_analyst", boroughs=frozenset(),
                          get_id=lambda: "1")
ISTV = SimpleNamespace(is_authenticated=True, is_active=True, tier="istv_analyst", boroughs=frozenset(),
                       get_id=lambda: "2")


def test_the_hes_rule():
    assert [disclosure.count(n) for n in (0, 1, 5, 7, 8, 10, 12, 13, 17, 18, 102, 103)] == \
        [0, None, None, None, 10, 10, 10, 15, 15, 20, 100, 105]
    assert disclosure.label(None) == "*" and disclosure.label(1235) == "1,235"


_month_end = queries._month_end


@pytest.fixture
def health_cells(clean_data):
    """Random counts (0-12) per borough x month x category of A&E records, and police records beside them."""
    rng = random.Random(20261129)
    cells = {(b, m, c): rng.choice((0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12))
             for b in BOROUGHS for m in MONTHS for c in CATEGORIES}
    rows = []
    for (borough, month, category), n in cells.items():
        rows += [("istv_ed", f"{month.isoformat()} 12:00+00", category, borough, 20)] * n
    rows += [("police_uk", f"{m.isoformat()} 12:00+00", 1, b, 10) for b in BOROUGHS for m in MONTHS] * 9
    conn = psycopg2.connect(libpq_dsn(clean_data))
    with conn, conn.cursor() as cur:
        cur.execute("SELECT safestats_ensure_incident_partitions('2024-01-01', '2024-12-31')")
        cur.executemany("""INSERT INTO incidents (supplier, drop_id, occurred_at, time_precision, category_id,
                                                  supplier_category, location_precision, borough_code, access_level)
                           VALUES (%s, 1, %s, 'minute', %s, 'seed', 'borough', %s, %s)""", rows)
    conn.close()
    refresh_after_seeding(clean_data)
    return clean_data, cells


def _true(cells, state: FilterState) -> int:
    months = [m for m in MONTHS if state.date_from <= m <= state.date_to]
    boroughs = [state.borough_code] if state.borough_code else BOROUGHS
    categories = state.categories or CATEGORIES
    return sum(cells[b, m, c] for b in boroughs for m in months for c in categories)


def _possible(shown: int | None) -> set[int]:
    """The true counts an analyst can infer from one shown count."""
    if shown == 0:
        return {0}
    if shown is None:
        return set(range(1, disclosure.SUPPRESSED_MAX + 1))
    return set(range(shown - 2, shown + 3))


def _states():
    for borough in (None, *BOROUGHS):
        for first, last in ((0, 0), (0, 1), (1, 2), (0, 2), (2, 2)):
            for k in range(len(CATEGORIES) + 1):
                for categories in itertools.combinations(CATEGORIES, k):
                    yield FilterState(suppliers=("istv_ed",), borough_code=borough, categories=categories,
                                      date_from=MONTHS[first], date_to=_month_end(MONTHS[last]))


def _neighbours(state: FilterState):
    """States one area, one month or one category bigger than ``state``."""
    if state.borough_code:
        yield replace(state, borough_code=None)  # London = the borough + the others
    index = MONTHS.index(state.date_to.replace(day=1))
    if index + 1 < len(MONTHS):
        yield replace(state, date_to=_month_end(MONTHS[index + 1]))
    if state.categories:
        for category in CATEGORIES:
            if category not in state.categories:
                yield replace(state, categories=tuple(sorted(state.categories + (category,))))


def test_pairs_of_filter_states_never_reveal_a_suppressed_health_count(health_cells):
    url, cells = health_cells
    engine = get_engine(url)
    queries.clear_caches()
    shown = {}
    for state in _states():
        total = queries.headline(engine, state, PARTNER).total
        assert total is None or total % 5 == 0, (state, total)
        assert total == disclosure.count(_true(cells, state)), state
        shown[state] = total
    pairs = revealing = 0
    for state in shown:
        for bigger in _neighbours(state):
            difference = _true(cells, bigger) - _true(cells, state)
            pairs += 1
            if 1 <= difference <= disclosure.SUPPRESSED_MAX:
                revealing += 1
                candidates = {b - a for b in _possible(shown[bigger]) for a in _possible(shown[state])}
                assert len(candidates & set(range(1, disclosure.SUPPRESSED_MAX + 1))) > 1, \
                    (state.to_query_string(), bigger.to_query_string(), shown[state], shown[bigger], difference)
    assert pairs > 300 and revealing > 30, (pairs, revealing)  # the seed does contain small differences
    # The ISTV tier sees exact numbers (so the test above is about the control, not about the data).
    exact = FilterState(suppliers=("istv_ed",), borough_code=CAMDEN, date_from=MONTHS[0], date_to=_month_end(MONTHS[0]))
    assert queries.headline(engine, exact, ISTV).total == _true(cells, exact)


def test_every_panel_is_controlled_and_finer_views_are_refused(health_cells):
    url, cells = health_cells
    engine = get_engine(url)
    queries.clear_caches()
    state = FilterState(suppliers=("istv_ed",), date_from=MONTHS[0], date_to=_month_end(MONTHS[2]))

    def controlled(n):
        return n is None or n % 5 == 0
    assert all(controlled(r.incidents) for r in queries.category_counts(engine, state, PARTNER))
    series = queries.monthly_series(engine, state, PARTNER)
    assert all(controlled(n) for values in series.groups.values() for n in values)
    values = queries.area_values(engine, state, "borough", PARTNER)
    assert all(controlled(n) for n in values.current.values())
    assert values.suppressed == {b for b in BOROUGHS if 1 <= sum(cells[b, m, c] for m in MONTHS
                                                                  for c in CATEGORIES) <= 7}
    assert all(controlled(r.incidents) for r in queries.top_areas(engine, state, PARTNER))
    assert queries.hour_day_grid(engine, state, PARTNER).timed == 0
    assert queries.density_cells(engine, state, queries.LONDON_BBOX_3857, 500, PARTNER) == []

    lsoa = query(url, "SELECT code FROM areas WHERE level = 'lsoa' AND borough_code = %s LIMIT 1", (CAMDEN,))[0][0]
    for finer in (replace(state, date_from=date(2024, 1, 2)),            # one day off a month
                  replace(state, lsoa_code=lsoa),
                  replace(state, polygon=((-0.2, 51.5), (-0.1, 51.5), (-0.1, 51.6))),
                  replace(state, hours=(20, 23))):
        with pytest.raises(disclosure.DisclosureRefused):
            queries.headline(engine, finer, PARTNER)
    with pytest.raises(disclosure.DisclosureRefused):
        queries.area_values(engine, state, "msoa", PARTNER)


def test_health_never_mixes_with_other_suppliers_for_suppressed_tiers(health_cells):
    url, cells = health_cells
    engine = get_engine(url)
    queries.clear_caches()
    period = dict(date_from=MONTHS[0], date_to=_month_end(MONTHS[2]))
    police = queries.headline(engine, FilterState(suppliers=("police_uk",), **period), PARTNER).total
    assert police == 9 * len(BOROUGHS) * len(MONTHS)
    for mixed in (FilterState(**period), FilterState(suppliers=("police_uk", "istv_ed"), **period)):
        assert queries.headline(engine, mixed, PARTNER).total == police, mixed
    assert queries.headline(engine, FilterState(**period), ISTV).total == police + sum(cells.values())
