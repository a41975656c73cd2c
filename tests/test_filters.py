"""The filter state: its URL round trip, its refusal of tampered links, and the quick-pick date ranges."""
from __future__ import annotations

from dataclasses import FrozenInstanceError
from datetime import date

import pytest

from safestats.filters import FilterState, quick_pick_range

CAMDEN = "E09000007"

FULL = FilterState(
    date_from=date(2024, 1, 1), date_to=date(2024, 6, 30), suppliers=("police_uk",), domains=("crime",),
    categories=(3, 11), themes=("weapon", "night_time_economy"), borough_code=CAMDEN,
    msoa_code="E02000166", lsoa_code="E01000907", hours=(22, 4), days=(5, 6),
    map_level="msoa", map_measure="rate_area", map_breaks="jenks", map_layers=("density", "points"),
    zoom=13.5, centre=(51.54321, -0.14321))


def test_every_field_round_trips_through_the_query_string():
    qs = FULL.to_query_string()
    assert qs.startswith("from=2024-01-01&to=2024-06-30&supplier=police_uk&domain=crime&cat=3,11")
    assert FilterState.from_query_string(qs) == FULL
    assert FilterState.from_query_string("?" + qs) == FULL
    polygon = FilterState(polygon=((-0.1, 51.5), (-0.09, 51.5), (-0.09, 51.51)))
    assert FilterState.from_query_string(polygon.to_query_string()) == polygon
    assert FilterState.from_query_string("") == FilterState() == FilterState.from_query_string(None)
    assert FilterState().to_query_string() == ""


def test_data_filters_drop_only_the_map_drawing_fields():
    data = FULL.data_filters()
    assert data.map_level is None and data.map_measure == "count" and data.zoom is None and data.centre is None
    assert data.map_layers == () and data.map_breaks == "quantile"
    assert (data.date_from, data.categories, data.themes, data.hours) == (FULL.date_from, FULL.categories,
                                                                          FULL.themes, FULL.hours)
    assert FULL.selected_area == ("lsoa", "E01000907")
    assert FULL.theme_mask == 1 | 8
    assert FULL.without_spatial_selection().selected_area is None


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
    "supplier=Police UK",                    # not a code
    "cat=3,3",                               # repeated
    "cat=-1", "cat=abc", "cat=99999",
    "theme=knives",                          # unknown theme
    "hours=25-3", "hours=9", "dow=0", "dow=8",
    "level=street", "measure=sum", "breaks=equal", "layer=heat",
    "z=30", "z=nan", "c=0,0", "c=51.5", "c=1e9,1",
    "poly=-0.1,51.5;-0.09,51.5",             # two corners are not an area
    "poly=-0.1,51.5;-0.09,51.5;100,51.5",    # outside Great Britain
    "poly=" + ";".join(["-0.1,51.5"] * 101),  # too many corners
    "x" * 5000,
    "hot=heat", "conf=80", "conf=", "fdr=yes", "fdr=0", "bw=50", "bw=20000", "bw=1.5", "step=4",
    "cmpfrom=2024-01-01",                    # a comparison period needs both ends
    "cmpfrom=2024-03-01&cmpto=2024-01-01",   # backwards
    "cell=500:1059", "cell=300:1059:362", "cell=500:9999:362", "cell=500:-1:362", "cell=500:1059:362:1",
])
def test_tampered_links_are_refused_with_a_message(bad):
    with pytest.raises(ValueError) as raised:
        FilterState.from_query_string(bad)
    assert str(raised.value)  # a message to show, never an empty error


HOTSPOT_VIEW = FilterState(
    date_from=date(2023, 3, 1), date_to=date(2023, 5, 31), hotspot_cell=(500, 1059, 362), hotspot="compare",
    hotspot_confidence=95, hotspot_fdr=True, kde_bandwidth_m=1250, hotspot_step_months=3,
    compare_from=date(2022, 9, 1), compare_to=date(2022, 11, 30), zoom=12.0, centre=(51.51, -0.1))


def test_hotspot_fields_round_trip_and_only_the_picked_cell_is_a_data_filter():
    qs = HOTSPOT_VIEW.to_query_string()
    assert "cell=500:1059:362" in qs and "hot=compare&conf=95&fdr=1&bw=1250&step=3" in qs
    assert "cmpfrom=2022-09-01&cmpto=2022-11-30" in qs
    assert FilterState.from_query_string(qs) == HOTSPOT_VIEW
    assert FilterState.from_query_string("hot=kde").to_query_string() == "hot=kde"  # defaults stay out of links
    data = HOTSPOT_VIEW.data_filters()
    assert data.hotspot_cell == (500, 1059, 362) and data.hotspot is None and data.hotspot_fdr is False
    assert data.kde_bandwidth_m is None and data.compare_from is None and data.hotspot_confidence == 90
    assert HOTSPOT_VIEW.without_spatial_selection().hotspot_cell is None
    kept = HOTSPOT_VIEW.map_view()  # what a filter reset keeps
    assert kept.hotspot == "compare" and kept.kde_bandwidth_m == 1250 and kept.zoom == 12.0
    assert kept.data_filters() == FilterState()


def test_the_state_is_frozen_and_validates_on_construction():
    with pytest.raises(ValueError):
        FilterState(borough_code="x; DROP TABLE incidents")
    with pytest.raises(ValueError):
        FilterState(categories=(True,))
    with pytest.raises(ValueError):
        FilterState(date_from=date(2024, 2, 1), date_to=date(2024, 1, 1))
    state = FilterState(borough_code=CAMDEN)
    with pytest.raises(FrozenInstanceError):
        state.borough_code = "E09000033"  # type: ignore[misc]


@pytest.mark.parametrize("pick, today, expected", [
    ("last_28_days", date(2026, 11, 23), (date(2026, 10, 27), date(2026, 11, 23))),
    ("last_12_months", date(2026, 11, 23), (date(2025, 12, 1), date(2026, 11, 23))),
    ("year_to_date", date(2026, 11, 23), (date(2026, 1, 1), date(2026, 11, 23))),
    ("financial_year", date(2026, 11, 23), (date(2026, 4, 1), date(2026, 11, 23))),
    ("financial_year", date(2027, 2, 10), (date(2026, 4, 1), date(2027, 2, 10))),
    ("financial_year", date(2026, 4, 1), (date(2026, 4, 1), date(2026, 4, 1))),
])
def test_quick_picks(pick, today, expected):
    assert quick_pick_range(pick, today) == expected
    first, last = expected
    if pick == "last_28_days":
        assert (last - first).days + 1 == 28


def test_as_at_round_trips_is_a_data_filter_and_is_parsed_strictly():
    pinned = FilterState(borough_code=CAMDEN, as_at=1234, zoom=12.0)
    qs = pinned.to_query_string()
    assert qs == f"borough={CAMDEN}&asat=1234&z=12"
    assert FilterState.from_query_string(qs) == pinned
    assert pinned.data_filters() == FilterState(borough_code=CAMDEN, as_at=1234), "it changes the numbers"
    assert pinned.map_view().as_at is None
    for bad in ("asat=", "asat=-1", "asat=0", "asat=1.5", "asat=abc", "asat=1234567890123", "asat=1&asat=2"):
        with pytest.raises(ValueError):
            FilterState.from_query_string(bad)
    for bad_value in (True, "12", 0, 10 ** 12):
        with pytest.raises(ValueError):
            FilterState(as_at=bad_value)
