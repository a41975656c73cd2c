"""The hotspot layers through the portal's HTTP surface: the callbacks called as the browser calls them.

Choosing a layer and its settings writes them into the URL (FilterState); the hotspot callback answers the
view state with the layer the query layer computes (cells with their numbers, a legend, or density tiles);
clicking a hot cell filters the panels to exactly that cell's incidents, clicking an LSOA selects it; forged
clicks, settings and tiles are refused, never answered with all of London.
"""
from __future__ import annotations

import json
from datetime import date

import pytest

from dashapp import ids
from db import get_engine
from safestats import queries
from safestats.filters import FilterState
from tests.conftest import query
from tests.test_queries import ANALYST, police  # noqa: F401 (the real police.uk files, loaded once per module)
from tests.test_web_app import _callback, _headline, _login, _sync, app, client  # noqa: F401

SPRING = "from=2023-01-01&to=2023-05-31"
# Hotspot cells are finer than a borough: a viewer may not see them (access.py), a partner analyst may.
ANALYST_EMAIL = "hotspot-analyst@example.org"
PASSWORD = "hotspot-analyst-password"


@pytest.fixture
def analyst(police):  # noqa: F811
    """A partner analyst who may log in; the query layer's user object for the same tier."""
    from dashapp.auth import upsert_user

    upsert_user(get_engine(police), ANALYST_EMAIL, PASSWORD, "Hotspot Analyst", "GLA", "partner_analyst")
    return ANALYST


def _hotspots(app, client, qs):  # noqa: F811
    return _callback(app, client, ids.HOTSPOT_LEGEND, {f"{ids.VIEW_STATE}.data": {"qs": qs, "error": None}},
                     f"{ids.VIEW_STATE}.data")


@pytest.mark.shared_data
def test_hotspot_controls_go_into_the_link(app, client, police, analyst):  # noqa: F811
    _login(client, ANALYST_EMAIL, PASSWORD)
    changed = f"{ids.MAP_HOTSPOT}.value"
    response = _sync(app, client, changed, **{
        f"{ids.URL}.search": "?" + SPRING, changed: "gi_grid", f"{ids.MAP_HOTSPOT_CONFIDENCE}.value": "95",
        f"{ids.MAP_HOTSPOT_FDR}.value": ["fdr"], f"{ids.MAP_KDE_BANDWIDTH}.value": 1200.0,
        f"{ids.MAP_HOTSPOT_STEP}.value": "3", f"{ids.FILTER_DATES}.start_date": "2023-01-01",
        f"{ids.FILTER_DATES}.end_date": "2023-05-31", f"{ids.MAP_COMPARE_DATES}.start_date": "2022-09-01"})
    result = response.get_json()["response"]
    # The comparison's end is not picked yet: its start alone is not taken (and not refused).
    assert result[ids.URL]["search"] == f"?{SPRING}&hot=gi_grid&conf=95&fdr=1&bw=1200&step=3"
    assert result[ids.DATA_STATE]["data"]["qs"] == SPRING, "hotspot settings are not data filters"
    assert result[ids.MAP_HOTSPOT_CONFIDENCE]["value"] == "95" and result[ids.MAP_HOTSPOT_FDR]["value"] == ["fdr"]
    opened = _sync(app, client, f"{ids.URL}.search", **{f"{ids.URL}.search": "?hot=kde&bw=800"})
    controls = opened.get_json()["response"]
    assert controls[ids.MAP_HOTSPOT]["value"] == "kde" and controls[ids.MAP_KDE_BANDWIDTH]["value"] == 800
    bad = _sync(app, client, changed, **{changed: "gi_grid", f"{ids.MAP_KDE_BANDWIDTH}.value": 5})
    assert bad.get_json()["response"][ids.STATE_ERROR]["is_open"] is True


@pytest.mark.shared_data
def test_the_gi_layer_callback_sends_the_query_layers_cells_and_a_legend(app, client, police, analyst):  # noqa: F811
    _login(client, ANALYST_EMAIL, PASSWORD)
    qs = SPRING + "&hot=gi_grid&conf=95"
    result = _hotspots(app, client, qs).get_json()["response"]
    layer = queries.hotspot_map_layer(get_engine(police), FilterState.from_query_string(qs), user=analyst)
    assert result[ids.MAP_HOTSPOTS]["data"] == layer.geojson and layer.geojson["features"]
    assert all(abs(f["properties"]["class"]) >= 95 for f in layer.geojson["features"])
    legend = json.dumps(result[ids.HOTSPOT_LEGEND]["children"])
    assert "Hot spot, 99% confidence" in legend and "band 750 m on 500 m cells" in legend
    assert result[ids.HOTSPOT_LEGEND]["style"] == {} and result[ids.MAP_LEGEND]["style"] == {"display": "none"}
    assert result[ids.MAP_HOTSPOTS]["hideout"]["colours"]["99"] == "#b2182b"
    off = _hotspots(app, client, SPRING).get_json()["response"]
    assert off[ids.MAP_HOTSPOTS]["data"]["features"] == [] and off[ids.MAP_LEGEND]["style"] == {}
    assert _hotspots(app, client, "hot=heat").status_code == 204  # a tampered store: no update


@pytest.mark.shared_data
def test_the_density_layer_is_served_as_tiles_of_the_kde_surface(app, client, police, analyst):  # noqa: F811
    _login(client, ANALYST_EMAIL, PASSWORD)
    result = _hotspots(app, client, SPRING + "&hot=kde&bw=1500&borough=E09000007").get_json()["response"]
    url = result[ids.MAP_KDE]["url"]
    assert url == "/tiles/kde/{z}/{x}/{y}.png?" + SPRING + "&bw=1500", "no spatial selection, the bandwidth kept"
    assert "bandwidth 1,500 m" in json.dumps(result[ids.HOTSPOT_LEGEND]["children"])
    tile = client.get("/tiles/kde/12/2046/1362.png?" + SPRING + "&bw=1500")  # central London
    assert tile.status_code == 200 and tile.data.startswith(b"\x89PNG") and len(tile.data) > 1000
    assert client.get("/tiles/kde/12/2046/1362.png?bw=5").status_code == 400
    client.get("/logout")
    assert client.get("/tiles/kde/12/2046/1362.png").status_code == 401


@pytest.mark.shared_data
def test_clicking_a_hot_cell_filters_the_panels_to_it(app, client, police, analyst):  # noqa: F811
    _login(client, ANALYST_EMAIL, PASSWORD)
    qs = SPRING + "&hot=gi_grid"
    layer = queries.hotspot_map_layer(get_engine(police), FilterState.from_query_string(qs), user=analyst)
    hot = max((f for f in layer.geojson["features"] if f["properties"]["class"] > 0),
              key=lambda f: f["properties"]["count"])
    clicked = f"{ids.MAP_HOTSPOTS}.n_clicks"
    response = _sync(app, client, clicked, **{f"{ids.URL}.search": "?" + qs, clicked: 1,
                                              f"{ids.MAP_HOTSPOTS}.clickData": hot})
    result = response.get_json()["response"]
    cell = f"cell=500:{hot['properties']['cell']}"
    assert result[ids.DATA_STATE]["data"]["qs"] == f"{SPRING}&{cell}"
    assert f"&{cell}&hot=gi_grid" in result[ids.URL]["search"]
    ix, iy = (int(v) for v in hot["properties"]["cell"].split(":"))
    (expected,) = query(police, f"""SELECT count(*) FROM incidents WHERE occurred_at >= '2023-01-01 00:00 Europe/London'
        AND occurred_at < '2023-06-01 00:00 Europe/London' AND ST_X(geom) >= {ix * 500} AND ST_X(geom) < {ix * 500 + 500}
        AND ST_Y(geom) >= {iy * 500} AND ST_Y(geom) < {iy * 500 + 500}""")[0]
    assert expected == hot["properties"]["count"] > 0
    body = json.dumps(_headline(app, client, f"{SPRING}&{cell}").get_json()["response"])
    assert f'"children": "{expected:,}"' in body
    again = _sync(app, client, clicked, **{f"{ids.URL}.search": result[ids.URL]["search"], clicked: 2,
                                           f"{ids.MAP_HOTSPOTS}.clickData": hot})
    assert cell not in again.get_json()["response"][ids.URL]["search"], "a second click clears the cell"
    for forged in ({"properties": {"cell": "1:2:3", "cell_m": 500}}, {"properties": {"cell": "10:20", "cell_m": 300}},
                   {"properties": {"cell": "x"}}, {"properties": {"code": "E09999999"}}):
        refused = _sync(app, client, clicked, **{clicked: 3, f"{ids.MAP_HOTSPOTS}.clickData": forged})
        assert refused.get_json()["response"][ids.STATE_ERROR]["is_open"] is True, forged
    assert _sync(app, client, clicked, **{clicked: 4, f"{ids.MAP_HOTSPOTS}.clickData": None}).status_code == 204


@pytest.mark.shared_data
def test_clicking_a_hot_lsoa_selects_it(app, client, police, analyst):  # noqa: F811
    _login(client, ANALYST_EMAIL, PASSWORD)
    qs = SPRING + "&hot=gi_lsoa"
    result = _hotspots(app, client, qs).get_json()["response"]
    feature = next(f for f in result[ids.MAP_HOTSPOTS]["data"]["features"] if f["properties"]["class"] > 0)
    clicked = f"{ids.MAP_HOTSPOTS}.n_clicks"
    response = _sync(app, client, clicked, **{f"{ids.URL}.search": "?" + qs, clicked: 1,
                                              f"{ids.MAP_HOTSPOTS}.clickData": feature})
    state = FilterState.from_query_string(response.get_json()["response"][ids.DATA_STATE]["data"]["qs"])
    assert state.lsoa_code == feature["properties"]["code"] and state.borough_code and state.msoa_code
    assert state.date_from == date(2023, 1, 1)


@pytest.mark.shared_data
def test_a_viewer_gets_no_hotspot_cells_only_the_reason(app, client, police):  # noqa: F811
    _login(client)  # tests.test_web_app's viewer: aggregates at borough level and above only
    result = _hotspots(app, client, SPRING + "&hot=gi_grid").get_json()["response"]
    assert result[ids.MAP_HOTSPOTS]["data"]["features"] == []
    assert "borough level" in json.dumps(result[ids.HOTSPOT_LEGEND]["children"])
