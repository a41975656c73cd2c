"""The hotspot layers in a real headless Chromium (issue 6), on the browser tests' seeded year of incidents.

Enabling the Gi* layer draws exactly the significant 500 m cells (computed here from incidents counted with
direct SQL) with a legend; a cell's tooltip shows its count, z, p and class; clicking the hottest cell
filters the charts to its incidents (the headline and category bars equal SQL on the cell); a copied link
restores the whole hotspot view (layer, settings, picked cell, charts) in a fresh browser; the density layer
draws tiles with its bandwidth in the legend.
"""
from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from dashapp import ids
from db import get_engine
from safestats import hotspots, queries
from tests.conftest import query
from tests.test_browser_dashboard import (  # noqa: F401 (fixtures: the seeded server, Chromium, contexts)
    _assert_no_js_errors, _log_in, _shot, browser, server, sessions, wait_for_panels)

pytestmark = pytest.mark.browser
YEAR = "(occurred_at AT TIME ZONE 'Europe/London')::date BETWEEN '2024-01-01' AND '2024-12-31'"


def _expected_gi(url, confidence: int = 90, fdr: bool = False) -> dict[str, tuple[int, float, int]]:
    """Cell id -> (count, z, class) of every cell significant at ``confidence``, from direct SQL counts."""
    counted = {(int(i), int(j)): int(n) for i, j, n in query(url, f"""
        SELECT floor(ST_X(geom) / 500), floor(ST_Y(geom) / 500), count(*) FROM incidents
        WHERE geom IS NOT NULL AND {YEAR} GROUP BY 1, 2""")}
    xs, ys = queries.study_area_cells(get_engine(url), 500)
    counts = np.array([counted.get(c, 0) for c in zip(xs, ys)], dtype=float)
    result = hotspots.grid_gi_star(np.array(xs), np.array(ys), counts, 500)
    classes = hotspots.classify(result.z, fdr)
    return {f"500:{i}:{j}": (int(n), float(z), int(c)) for i, j, n, z, c in
            zip(xs, ys, counts, result.z, classes) if abs(c) >= confidence}


def _cell_sql(url, cell_id: str) -> dict:
    _, ix, iy = (int(v) for v in cell_id.split(":"))
    inside = (f"ST_X(geom) >= {ix * 500} AND ST_X(geom) < {ix * 500 + 500} "
              f"AND ST_Y(geom) >= {iy * 500} AND ST_Y(geom) < {iy * 500 + 500} AND {YEAR}")
    total = query(url, f"SELECT count(*) FROM incidents WHERE {inside}")[0][0]
    categories = query(url, f"SELECT category_id, count(*) FROM incidents WHERE {inside} GROUP BY 1 ORDER BY 1")
    (lat, lon), = query(url, f"""SELECT ST_Y(c), ST_X(c) FROM (SELECT ST_Transform(ST_SetSRID(ST_MakePoint(
        {ix * 500 + 250}, {iy * 500 + 250}), 27700), 4326) AS c) t""")
    return {"headline": f"{total:,}", "categories": [[int(c), int(n)] for c, n in categories],
            "centre": (lat, lon)}


def _wait_for_hotspots(page, count: int) -> None:
    page.wait_for_function(f"() => document.querySelectorAll('path[data-hotspot]').length === {count}",
                           timeout=90_000)  # a fresh server builds its caches first


def _hover_and_read_tooltip(page, cell_id: str) -> str:
    path = page.locator(f'path[data-hotspot="{cell_id}"]')
    path.scroll_into_view_if_needed()
    box = path.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
    tooltip = page.locator(".leaflet-tooltip")
    tooltip.wait_for()
    return tooltip.inner_text()


def test_the_gi_layer_draws_the_significant_cells_with_a_legend_and_numbers_in_tooltips(sessions, server):
    _, url = server
    expected = _expected_gi(url)
    assert any(c > 0 for _, _, c in expected.values()), "the seed has hot cells"
    session = sessions()
    page = session.page
    _log_in(session)
    page.wait_for_selector(f"#{ids.HEADLINE_TOTAL}", timeout=90_000)
    page.select_option(f"#{ids.MAP_HOTSPOT}", "gi_grid")
    _wait_for_hotspots(page, len(expected))
    drawn = dict(page.evaluate("""() => Array.from(document.querySelectorAll('path[data-hotspot]'),
        p => [p.getAttribute('data-hotspot'), Number(p.getAttribute('data-class'))])"""))
    assert drawn == {cell: c for cell, (_, _, c) in expected.items()}
    assert "hot=gi_grid" in page.url
    legend = page.locator(f"#{ids.HOTSPOT_LEGEND}")
    assert legend.is_visible() and not page.locator(f"#{ids.MAP_LEGEND}").is_visible()
    text = legend.inner_text()
    assert "Hot spots (Gi*) on 500 m cells" in text and "90% confidence or more" in text
    hot = sum(1 for _, _, c in expected.values() if c == 99)
    assert f"Hot spot, 99% confidence ({hot:,})" in text
    # The hottest cell's tooltip: its count, z, p and class.
    cell_id = max((k for k, v in expected.items() if v[2] > 0), key=lambda k: expected[k][0])
    count, z, cls = expected[cell_id]
    tip = _hover_and_read_tooltip(page, cell_id)
    p = float(hotspots.normal_two_sided_p(np.array([z]))[0])
    assert f"Incidents: {count:,}" in tip and f"Gi* z: {z:,.2f}" in tip, tip
    assert re.search(r"p = [0-9.]+", tip) and abs(float(re.search(r"p = ([0-9.]+)", tip).group(1)) - p) < 1e-4
    assert f"Hot spot, {cls}% confidence" in tip
    _shot(page, "hotspots-1-gi-layer")
    # FDR and 99% only: fewer cells, the settings in the link.
    page.select_option(f"#{ids.MAP_HOTSPOT_CONFIDENCE}", "99")
    page.locator(f"#{ids.MAP_HOTSPOT_FDR}").get_by_label("FDR correction").check()
    strict = _expected_gi(url, 99, fdr=True)
    page.wait_for_function("() => window.location.search.includes('fdr=1')")
    params = parse_qs(urlsplit(page.url).query)
    assert params["conf"] == ["99"] and params["fdr"] == ["1"]
    _wait_for_hotspots(page, len(strict))
    drawn = dict(page.evaluate("""() => Array.from(document.querySelectorAll('path[data-hotspot]'),
        p => [p.getAttribute('data-hotspot'), Number(p.getAttribute('data-class'))])"""))
    assert drawn == {cell: c for cell, (_, _, c) in strict.items()} and len(strict) < len(expected)
    assert "FDR-corrected" in legend.inner_text()
    _assert_no_js_errors(session)


def test_clicking_a_hot_cell_filters_the_charts_and_a_copied_link_restores_the_view(sessions, server):
    _, url = server
    expected = _expected_gi(url)
    cell_id = max((k for k, v in expected.items() if v[2] > 0), key=lambda k: expected[k][0])
    sql = _cell_sql(url, cell_id)
    lat, lon = sql["centre"]
    session = sessions()
    page = session.page
    _log_in(session, f"/?hot=gi_grid&z=13&c={lat:.5f},{lon:.5f}")  # a link zoomed to the cell
    _wait_for_hotspots(page, len(expected))
    path = page.locator(f'path[data-hotspot="{cell_id}"]')
    path.scroll_into_view_if_needed()
    box = path.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    shown = wait_for_panels(page, {"headline": sql["headline"], "categories": sql["categories"]})
    assert sql["headline"] == f"{expected[cell_id][0]:,}", "the cell's count in its tooltip is what the charts show"
    assert f"cell={cell_id}" in page.url
    page.wait_for_function(f"""() => document.getElementById('{ids.FILTER_CHIPS}').innerText.includes('Hotspot cell')""")
    assert "hotspot cell" in page.locator(f"#{ids.SELECTION_NAME}").inner_text()
    # The picked cell is outlined, and every hot spot still drawn (the layer ignores the selection).
    _wait_for_hotspots(page, len(expected))
    _shot(page, "hotspots-2-cell-picked")
    page.wait_for_function(f"() => document.getElementById('{ids.SHARE_URL}').value === window.location.href")
    link = page.input_value(f"#{ids.SHARE_URL}")

    second = sessions()
    _log_in(second, link[len(second.base_url):])
    other = second.page
    _wait_for_hotspots(other, len(expected))
    reopened = wait_for_panels(other, {"headline": sql["headline"], "categories": sql["categories"]})
    assert reopened["headline"] == shown["headline"]
    assert other.locator(f"#{ids.MAP_HOTSPOT}").input_value() == "gi_grid"
    assert other.locator(f"#{ids.HOTSPOT_LEGEND}").is_visible()
    assert other.evaluate(f"""() => document.querySelector('path[data-hotspot="{cell_id}"]')
                                        .getAttribute('stroke-width')""") == "3"
    _shot(other, "hotspots-3-link-reopened")
    _assert_no_js_errors(session)
    _assert_no_js_errors(second)


def test_the_density_layer_draws_tiles_with_its_bandwidth_in_the_legend(sessions, server):
    session = sessions()
    page = session.page
    _log_in(session, "/?hot=kde&bw=2000")
    page.wait_for_function(f"""() => (document.getElementById('{ids.HOTSPOT_LEGEND}') || {{innerText: ''}}).innerText
                                        .includes('bandwidth 2,000 m')""", timeout=90_000)
    page.wait_for_function("() => Array.from(document.querySelectorAll('img.leaflet-tile'))"
                           ".some(i => i.src.includes('/tiles/kde/') && i.complete && i.naturalWidth === 256)")
    assert page.locator(f"#{ids.MAP_KDE_BANDWIDTH}").input_value() == "2000"
    page.fill(f"#{ids.MAP_KDE_BANDWIDTH}", "1500")
    page.press(f"#{ids.MAP_KDE_BANDWIDTH}", "Enter")
    page.wait_for_function("() => window.location.search.includes('bw=1500')")
    page.wait_for_function(f"""() => document.getElementById('{ids.HOTSPOT_LEGEND}').innerText
                                        .includes('bandwidth 1,500 m (standard rule: ')""")
    page.fill(f"#{ids.MAP_KDE_BANDWIDTH}", "")  # empty: back to the standard rule
    page.press(f"#{ids.MAP_KDE_BANDWIDTH}", "Enter")
    page.wait_for_function(f"""() => (document.getElementById('{ids.HOTSPOT_LEGEND}') || {{innerText: ''}}).innerText
                                        .includes('(standard rule)')""")
    assert "bw=" not in page.url
    _shot(page, "hotspots-4-kde")
    _assert_no_js_errors(session)
