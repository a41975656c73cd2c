"""The dashboard in a real headless Chromium: issue 4's acceptance bar, checked against SQL.

One werkzeug server per module runs the app in-process on a free loopback port, against the test database
seeded with a deterministic year (2024) of incidents: every London borough, five categories in two domains
(crime and ASB), weapon / domestic-abuse themes on some rows, times of day, and a point, LSOA and MSOA for
each row; the rollups are refreshed after seeding. Each test gets a fresh browser context and logs in
through the form. Every request that does not go to the app is aborted: no internet, and the proof that the
area polygons render with no tile server at all.

Panels are read from the page: the headline total from ``#headline-total``, the time series and category
bars from the Plotly figures in the DOM, the map's values from the hideout the browser-side style function
last drew with (``window.safestats.map.lastHideout``, cross-checked against each polygon's fill colour and
the legend), and the top-areas table from its cells. Every expected number comes from direct SQL on the raw
``incidents`` table, never from the query layer under test. Screenshots go to test-artifacts/ (git-ignored).
"""
from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg2
import pytest
from werkzeug.serving import make_server

from dashapp import create_app, ids
from dashapp.auth import upsert_user
from db import get_engine, libpq_dsn
from safestats import queries
from safestats.rollups import refresh_rollups
from tests.conftest import IN_CI, query, truncate_data

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
EMAIL, PASSWORD = "dashboard.analyst@browser-test.example", "dashboard browser test passphrase"
TIMEOUT_MS = 30_000
CAMDEN, CROYDON = "E09000007", "E09000008"
WEAPONS = 11  # "Possession of weapons"
WEAPON_THEME_LABEL = "Weapon or knife involved"
TOP_ROWS = 10  # the table's page size
BOROUGHS = 33

# Per borough x month x category, 1..scale incidents (a hash, so uneven but deterministic). Category 11 always
# carries the weapon theme, every 4th violence row too; every 3rd violence row is domestic abuse. Rows are
# spread over three LSOAs of their borough (with that LSOA's MSOA and a point inside it) and over the hours.
SEED_SQL = """
WITH b AS (
    SELECT code, row_number() OVER (ORDER BY code) AS bn FROM areas WHERE level = 'borough' AND region = 'london'
), l AS (
    SELECT code, msoa_code, borough_code, geom, row_number() OVER (PARTITION BY borough_code ORDER BY code) AS rn
    FROM areas WHERE level = 'lsoa' AND region = 'london'
), cats(cid, scale) AS (VALUES (1, 30), (3, 14), (5, 5), (11, 6), (20, 20)
), r AS (
    SELECT b.code AS borough, b.bn, m, cats.cid, i
    FROM b CROSS JOIN generate_series(1, 12) AS m CROSS JOIN cats
    CROSS JOIN LATERAL generate_series(1, 1 + abs(hashtext(b.code || '/' || m || '/' || cats.cid)) % cats.scale) AS i
)
INSERT INTO incidents (supplier, drop_id, occurred_at, time_precision, category_id, supplier_category,
                       theme_weapon, theme_dava, geom, longitude, latitude, location_precision,
                       lsoa_code, msoa_code, borough_code, access_level)
SELECT 'police_uk', 1,
       make_timestamptz(2024, r.m, 1 + (r.i * 7 + r.bn)::int % 28, (r.i * 5 + r.m + r.cid)::int % 24,
                        (r.i * 13)::int % 60, 0, 'Europe/London'),
       'minute', r.cid, c.name,
       CASE WHEN r.cid = 11 THEN TRUE WHEN r.cid = 1 AND r.i % 4 = 0 THEN TRUE END,
       CASE WHEN r.cid = 1 AND r.i % 3 = 0 THEN TRUE END,
       ST_PointOnSurface(l.geom), ST_X(ST_Transform(ST_PointOnSurface(l.geom), 4326)),
       ST_Y(ST_Transform(ST_PointOnSurface(l.geom), 4326)), 'exact',
       l.code, l.msoa_code, r.borough, 10
FROM r JOIN categories c ON c.id = r.cid
JOIN l ON l.borough_code = r.borough AND l.rn = 1 + r.i % 3
"""


def _require_chromium() -> None:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (install Debian's chromium package; the tests never download a browser)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def _seed(url: str) -> None:
    conn = psycopg2.connect(libpq_dsn(url))
    with conn, conn.cursor() as cur:
        cur.execute("SELECT safestats_ensure_incident_partitions('2024-01-01', '2024-12-31')")
        cur.execute(SEED_SQL)
    conn.close()
    refresh_rollups(url, trigger="test")
    queries.clear_caches()


@pytest.fixture(scope="module")
def server(areas_loaded):
    """The app on a loopback port, over the seeded data; emptied (and rollups refreshed) afterwards."""
    _require_chromium()
    url = areas_loaded
    truncate_data(url)
    _seed(url)
    upsert_user(get_engine(url), EMAIL, PASSWORD, "Dashboard Analyst", "GLA", "partner_analyst")
    srv = make_server("127.0.0.1", 0, create_app(url), threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}", url
    finally:
        srv.shutdown()
        thread.join(timeout=10)
        truncate_data(url)
        refresh_rollups(url, trigger="test")
        queries.clear_caches()


@contextmanager
def launched_chromium():
    """Debian's Chromium driven by Playwright (never a downloaded browser), closed afterwards."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def browser(server):
    with launched_chromium() as chromium:
        yield chromium


class Session:
    """One browser context (its own cookies and history) with one page."""

    def __init__(self, browser, base_url: str):
        self.base_url = base_url
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        # No internet: anything not served by the app under test (e.g. the base-map tiles) fails to load.
        self.context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base_url)
                           else route.abort())
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.js_errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.js_errors.append(str(exc)))

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def sessions(browser, server):
    """A factory of fresh browser contexts, all closed after the test."""
    base_url, _ = server
    opened: list[Session] = []

    def new() -> Session:
        opened.append(Session(browser, base_url))
        return opened[-1]
    yield new
    for s in opened:
        s.close()


def _shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def _log_in(session: Session, path: str = "/") -> None:
    """Open ``path`` logged out (sent to the form), sign in, and land back on ``path``."""
    page = session.page
    page.goto(session.base_url + path)
    assert "/login" in urlsplit(page.url).path, "an anonymous visitor is sent to the login form"
    page.fill("#email", EMAIL)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(lambda u: urlsplit(u).path == "/")


def _wait_ready(page) -> None:
    # The first page of a fresh server also builds its caches (boundaries, areas): allow a cold start.
    drawn = f"() => document.querySelectorAll('path[data-area]').length === {BOROUGHS}"
    page.wait_for_function(drawn, timeout=90_000)
    page.wait_for_selector(f"#{ids.HEADLINE_TOTAL}")


def _assert_no_js_errors(session: Session) -> None:
    assert session.js_errors == [], f"JavaScript errors on the page: {session.js_errors}"


# ---- expected numbers, from SQL on the raw incidents table ------------------------------------------------

def sql_panels(url: str, *, theme: bool = False, borough: str | None = None, msoa: str | None = None,
               category: int | None = None,
               dates: tuple[date, date] = (date(2024, 1, 1), date(2024, 12, 31))) -> dict:
    """What each panel must show. Like the page: the time series ignores the dates (it shades them), the
    category bars ignore the category filter (they are where it is chosen) and the map ignores the selected
    area (it shows every area, so the user can pick another). Without dates the period is all of 2024."""
    params = {"borough": borough, "msoa": msoa, "category": category, "d0": dates[0], "d1": dates[1]}
    theme_c = "i.theme_weapon IS TRUE" if theme else "TRUE"
    borough_c = ("i.msoa_code = %(msoa)s" if msoa else  # the finest area selected is the filter
                 "i.borough_code = %(borough)s" if borough else "TRUE")
    category_c = "i.category_id = %(category)s" if category else "TRUE"
    dates_c = "(i.occurred_at AT TIME ZONE 'Europe/London')::date BETWEEN %(d0)s AND %(d1)s"

    def where(*conditions):
        return " AND ".join(conditions)

    total = query(url, f"SELECT count(*) FROM incidents i WHERE {where(theme_c, borough_c, category_c, dates_c)}",
                  params)[0][0]
    by_month = dict(query(url, f"""
        SELECT extract(month FROM occurred_at AT TIME ZONE 'Europe/London')::int, count(*) FROM incidents i
        WHERE {where(theme_c, borough_c, category_c)} GROUP BY 1""", params))
    categories = query(url, f"""SELECT category_id, count(*) FROM incidents i
                                WHERE {where(theme_c, borough_c, dates_c)} GROUP BY 1 ORDER BY 1""", params)
    by_borough = query(url, f"""SELECT borough_code, count(*) FROM incidents i
                                WHERE {where(theme_c, category_c, dates_c)} GROUP BY 1 ORDER BY 1""", params)
    level = "lsoa" if msoa else "msoa" if borough else "borough"  # one level below the selection
    top = query(url, f"""
        SELECT a.name, count(*) FROM incidents i JOIN areas a ON a.code = i.{level}_code
        WHERE {where(theme_c, borough_c, category_c, dates_c)}
        GROUP BY a.code, a.name ORDER BY count(*) DESC, a.code LIMIT {TOP_ROWS}""", params)
    return {"headline": f"{total:,}",
            "monthly": [int(by_month.get(m, 0)) for m in range(1, 13)],
            "categories": [[int(c), int(n)] for c, n in categories],
            "map": [[code, int(n)] for code, n in by_borough],
            "top": [[name, int(n)] for name, n in top]}


# ---- what the page shows -----------------------------------------------------------------------------------

READ_PANELS = f"""() => {{
    const plot = (id) => document.querySelector('#' + id + ' .js-plotly-plot');
    const ts = plot('{ids.TIMESERIES}'), cats = plot('{ids.CATEGORIES}');
    let monthly = null, categories = null;
    if (ts && ts.data) {{
        const bars = ts.data.filter(t => t.type === 'bar');
        monthly = bars.length ? Array.from(bars[0].y, (_, i) => bars.reduce((s, t) => s + (t.y[i] || 0), 0)) : [];
    }}
    if (cats && cats.data) {{
        const t = cats.data.find(t => t.type === 'bar');
        categories = t ? Array.from(t.customdata, (c, i) => [c, t.x[i]]).sort((a, b) => a[0] - b[0]) : [];
    }}
    const h = window.safestats && window.safestats.map && window.safestats.map.lastHideout;
    const map = h && h.values ? Object.keys(h.values).sort().map(k => [k, h.values[k]]) : null;
    const cells = (col) => Array.from(
        document.querySelectorAll('#{ids.TOP_AREAS} td[data-dash-column="' + col + '"]'), td => td.textContent);
    const counts = cells('incidents');
    const total = document.getElementById('{ids.HEADLINE_TOTAL}');
    return {{
        headline: total ? total.textContent : null, monthly, categories, map,
        top: cells('name').map((name, i) => [name, Number(counts[i].replace(/,/g, ''))]),
        selected: h ? (h.selected || null) : null,
        legend: document.getElementById('{ids.MAP_LEGEND}').innerText,
        search: window.location.search,
    }};
}}"""


def read_panels(page) -> dict:
    return page.evaluate(READ_PANELS)


def wait_for_panels(page, expected: dict) -> dict:
    """Wait until every panel in ``expected`` shows its value; then assert it (a readable diff on failure)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(f"""(expected) => {{
            const shown = ({READ_PANELS})();
            return Object.keys(expected).every(k => JSON.stringify(shown[k]) === JSON.stringify(expected[k]));
        }}""", arg=expected)
    except PlaywrightTimeout:
        pass  # the assertion below says what differs
    shown = read_panels(page)
    assert {k: shown[k] for k in expected} == expected
    return shown


READ_CONTROLS = f"""() => ({{
    dates: Array.from(document.querySelectorAll('.ss-filter-panel input.dash-datepicker-input'), i => i.value),
    themes: Array.from(document.querySelectorAll('#{ids.FILTER_THEMES} input:checked'), i => i.value),
    borough: document.getElementById('{ids.FILTER_BOROUGH}').innerText.trim(),
    categories: document.getElementById('{ids.FILTER_CATEGORIES}').innerText.trim(),
    selection: document.getElementById('{ids.SELECTION_NAME}').innerText.trim(),
    chips: document.getElementById('{ids.FILTER_CHIPS}').innerText.replace(/\\s*×\\s*/g, ' | ').trim(),
}})"""


def read_controls(page) -> dict:
    return page.evaluate(READ_CONTROLS)


def wait_for_controls(page, expected: dict) -> dict:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(f"""(expected) => {{
            const shown = ({READ_CONTROLS})();
            return Object.keys(expected).every(k => JSON.stringify(shown[k]) === JSON.stringify(expected[k]));
        }}""", arg=expected)
    except PlaywrightTimeout:
        pass
    shown = read_controls(page)
    assert {k: shown[k] for k in expected} == expected
    return shown


def url_filters(url_or_search: str) -> dict:
    """The URL's filter keys (the map's z and c left out: a pan is not a filter)."""
    search = urlsplit(url_or_search).query if "://" in url_or_search else url_or_search.lstrip("?")
    return {k: v for k, v in parse_qs(search).items() if k not in ("z", "c")}


def assert_fills_follow_the_values(page) -> None:
    """Each polygon's fill is its value's class colour (no data: grey), and the legend has a row per class."""
    drawn = page.evaluate("""() => {
        const h = window.safestats.map.lastHideout;
        return {values: h.values, classes: h.classes, colours: h.colours, noData: h.noDataColour,
                legendRows: document.querySelectorAll('#%s .ss-legend-row').length,
                paths: Array.from(document.querySelectorAll('path[data-area]'),
                                  p => [p.getAttribute('data-area'), p.getAttribute('fill')])};
    }""" % ids.MAP_LEGEND)
    wrong = []
    for code, fill in drawn["paths"]:
        value, expected = drawn["values"].get(code), drawn["noData"]
        for lower, colour in zip(drawn["classes"], drawn["colours"]):
            if value is not None and value >= lower:
                expected = colour
        if fill.lower() != expected.lower():
            wrong.append((code, value, fill, expected))
    assert not wrong, f"polygons filled against their value's class: {wrong}"
    assert len({fill for _, fill in drawn["paths"]}) >= 3, "the choropleth is shaded, not one colour"
    assert drawn["legendRows"] == len(drawn["classes"]) + 1  # the classes and "none / no data"


# ---- interactions ------------------------------------------------------------------------------------------

def click_area(page, code: str) -> None:
    """Click a point really inside the area's polygon (a bounding box's centre may not be)."""
    point = page.evaluate("""(code) => {
        const path = document.querySelector(`path[data-area="${code}"]`);
        const box = path.getBoundingClientRect();
        for (let step = 0; step < 400; step++) {
            const fx = step === 0 ? 0.5 : (step * 0.618) % 1;
            const fy = step === 0 ? 0.5 : (step * 0.382 + 0.5) % 1;
            const x = box.left + box.width * (0.1 + 0.8 * fx);
            const y = box.top + box.height * (0.1 + 0.8 * fy);
            if (document.elementFromPoint(x, y) === path) return [x, y];
        }
        return null;
    }""", code)
    assert point, f"no clickable point found inside area {code}"
    page.mouse.click(*point)


def move_pointer_off_the_map(page) -> None:
    # Hovering restyles an area; move away (in steps, so Leaflet sees a mouseout) before reading outlines.
    title = page.locator(f"#{ids.TOP_AREAS_TITLE}")
    title.scroll_into_view_if_needed()  # mouse coordinates are the viewport's: the target must be on screen
    box = title.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=12)


def click_category_bar(page, category_id: int) -> None:
    index = page.evaluate(f"""(cid) => Array.from(
        document.querySelector('#{ids.CATEGORIES} .js-plotly-plot').data[0].customdata).indexOf(cid)""",
                          category_id)
    assert index >= 0, f"no bar for category {category_id}"
    bar = page.locator(f"#{ids.CATEGORIES} g.trace.bars g.point").nth(index)
    bar.scroll_into_view_if_needed()  # mouse coordinates are the viewport's: the bar must be on screen
    box = bar.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def brush_months(page, first: int, last: int) -> None:
    """Drag horizontally across the time series from the middle of month ``first``'s bar to ``last``'s."""
    bars = page.locator(f"#{ids.TIMESERIES} g.trace.bars").first.locator("g.point")
    page.locator(f"#{ids.TIMESERIES}").scroll_into_view_if_needed()
    start, end = bars.nth(first - 1).bounding_box(), bars.nth(last - 1).bounding_box()
    plot_area = page.locator(f"#{ids.TIMESERIES} .nsewdrag").first.bounding_box()
    y = plot_area["y"] + plot_area["height"] / 2
    page.mouse.move(start["x"] + start["width"] * 0.3, y)
    page.mouse.down()
    page.mouse.move(end["x"] + end["width"] * 0.7, y, steps=12)
    page.mouse.up()


def check_weapon_theme(page) -> None:
    page.locator(f"#{ids.FILTER_THEMES}").get_by_label(WEAPON_THEME_LABEL).check()


# ---- the tests ---------------------------------------------------------------------------------------------

def test_wrong_password_stays_on_the_login_form_and_dash_needs_a_login(sessions, server):
    base_url, _ = server
    session = sessions()
    page = session.page
    assert page.request.get(base_url + "/_dash-layout").status == 401
    assert page.request.get(base_url + "/_dash-dependencies").status == 401
    page.goto(base_url + "/login")
    page.fill("#email", EMAIL)
    page.fill("#password", "not the password")
    page.click("#login-submit")
    page.wait_for_selector("#login-error")
    assert "not recognised" in page.locator("#login-error").inner_text()
    assert "/login" in page.url
    assert page.request.get(base_url + "/_dash-layout").status == 401
    _shot(page, "0-bad-password")


def test_login_then_all_london_matches_sql_without_a_tile_server(sessions, server):
    _, url = server
    session = sessions()
    page = session.page
    _log_in(session)
    # The 33 boundaries render as vector polygons although no base-map tile could load.
    _wait_ready(page)
    assert page.locator(f"#{ids.NAVBAR_USER}").inner_text() == "Dashboard Analyst"
    expected = sql_panels(url)
    assert len(expected["map"]) == BOROUGHS and len(expected["categories"]) == 5
    wait_for_panels(page, expected)
    assert_fills_follow_the_values(page)
    assert read_controls(page)["chips"] == "No filters: all incidents in London"
    assert url_filters(page.url) == {}
    _shot(page, "1-all-london")
    _assert_no_js_errors(session)


def test_a_theme_filter_updates_every_panel(sessions, server):
    _, url = server
    session = sessions()
    page = session.page
    _log_in(session)
    _wait_ready(page)
    before = wait_for_panels(page, sql_panels(url))

    check_weapon_theme(page)
    expected = sql_panels(url, theme=True)
    for panel in ("headline", "monthly", "categories", "map", "top"):
        assert expected[panel] != before[panel], f"the seed must make the theme change the {panel} panel"
    after = wait_for_panels(page, expected)
    # Only violence (some rows) and possession of weapons (all rows) carry the weapon theme.
    assert [cid for cid, _ in after["categories"]] == [1, WEAPONS]
    assert after["legend"] != before["legend"], "the legend's classes follow the new values"
    assert_fills_follow_the_values(page)
    assert url_filters(page.url) == {"theme": ["weapon"]}
    wait_for_controls(page, {"themes": ["weapon"], "chips": f"Theme: {WEAPON_THEME_LABEL} |"})
    _shot(page, "2-theme-weapon")
    _assert_no_js_errors(session)


def test_clicking_a_borough_filters_the_charts(sessions, server):
    _, url = server
    session = sessions()
    page = session.page
    _log_in(session)
    _wait_ready(page)
    all_london = wait_for_panels(page, sql_panels(url))

    click_area(page, CAMDEN)
    expected = sql_panels(url, borough=CAMDEN)
    assert expected["headline"] != all_london["headline"]
    shown = wait_for_panels(page, expected)
    # The map still shows every borough (to compare and pick another), with Camden selected.
    assert shown["map"] == all_london["map"] and shown["selected"] == CAMDEN
    assert page.locator(f"#{ids.TOP_AREAS_TITLE}").inner_text() == "Top MSOAs in the selection"
    wait_for_controls(page, {"borough": "Camden", "selection": "Camden"})
    assert url_filters(page.url) == {"borough": [CAMDEN]}
    move_pointer_off_the_map(page)
    page.wait_for_function(f"""() => document.querySelector('path[data-area="{CAMDEN}"]')
                                   .getAttribute('stroke-width') === '4'""")
    _shot(page, "3-borough-camden")

    # Another borough replaces the selection; clicking the selected one again returns to all of London.
    click_area(page, CROYDON)
    wait_for_panels(page, sql_panels(url, borough=CROYDON))
    wait_for_controls(page, {"borough": "Croydon", "selection": "Croydon"})
    click_area(page, CROYDON)
    wait_for_panels(page, {k: all_london[k] for k in ("headline", "monthly", "categories", "map", "top")})
    wait_for_controls(page, {"borough": "All London", "selection": "All London"})
    assert url_filters(page.url) == {}
    _assert_no_js_errors(session)


def test_clicking_a_category_bar_filters_the_map(sessions, server):
    _, url = server
    session = sessions()
    page = session.page
    _log_in(session)
    _wait_ready(page)
    before = wait_for_panels(page, sql_panels(url))

    click_category_bar(page, WEAPONS)
    expected = sql_panels(url, category=WEAPONS)
    assert expected["map"] != before["map"]
    shown = wait_for_panels(page, expected)
    assert shown["categories"] == before["categories"], "the bars still offer every category"
    assert shown["legend"] != before["legend"]
    assert_fills_follow_the_values(page)
    assert url_filters(page.url) == {"cat": [str(WEAPONS)]}
    wait_for_controls(page, {"categories": "Police recorded crime › Possession of weapons"})
    # The chosen bar is highlighted, the others greyed.
    colours = page.evaluate(f"""() => {{
        const t = document.querySelector('#{ids.CATEGORIES} .js-plotly-plot').data[0];
        return Array.from(t.customdata, (c, i) => [c, t.marker.color[i]]); }}""")
    assert {c: colour for c, colour in colours} == {c: "#9e0059" if c == WEAPONS else "#c8ccd1"
                                                    for c, _ in colours}
    _shot(page, "4-category-weapons")

    # Clicking the chosen bar again clears the category.
    click_category_bar(page, WEAPONS)
    wait_for_panels(page, {k: before[k] for k in ("headline", "map", "top")})
    assert url_filters(page.url) == {}
    _assert_no_js_errors(session)


def test_brushing_the_time_series_sets_the_dates(sessions, server):
    _, url = server
    session = sessions()
    page = session.page
    _log_in(session)
    _wait_ready(page)
    before = wait_for_panels(page, sql_panels(url))

    brush_months(page, 3, 6)
    page.wait_for_function("() => new URLSearchParams(location.search).has('from')")
    assert url_filters(page.url) == {"from": ["2024-03-01"], "to": ["2024-06-30"]}
    wait_for_controls(page, {"dates": ["1 Mar 2024", "30 Jun 2024"], "chips": "2024-03-01 to 2024-06-30 |"})
    expected = sql_panels(url, dates=(date(2024, 3, 1), date(2024, 6, 30)))
    shown = wait_for_panels(page, expected)
    assert shown["headline"] != before["headline"]
    assert shown["monthly"] == before["monthly"], "the series keeps every month (the range is shaded)"
    _shot(page, "5-brushed-mar-jun")
    _assert_no_js_errors(session)


def test_the_location_quality_control_filters_every_panel_and_the_link(sessions, server):
    """Issue 5: "maps and filters can use" how well a record is located: the control sets ``located=``."""
    _, url = server
    # Some rows located to their borough only (as an A&E record with a vague location would be); put back after.
    demoted = "category_id = 20 AND borough_code IN (%(a)s, %(b)s)"
    conn = psycopg2.connect(libpq_dsn(url))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f"UPDATE incidents SET location_precision = 'borough' WHERE {demoted}",
                        {"a": CAMDEN, "b": CROYDON})
            assert cur.rowcount > 0
        queries.clear_caches()
        session = sessions()
        page = session.page
        _log_in(session)
        _wait_ready(page)
        total = sql_panels(url)["headline"]
        wait_for_panels(page, {"headline": total})

        page.select_option(f"#{ids.FILTER_LOCATED}", "postcode")
        located = query(url, """SELECT count(*) FROM incidents WHERE location_precision
                                IN ('exact', 'snap_point', 'rounded_50m', 'postcode')""")[0][0]
        assert f"{located:,}" != total, "the demoted rows must change the headline"
        wait_for_panels(page, {"headline": f"{located:,}"})
        page.wait_for_function("() => window.location.search.includes('located=postcode')")
        assert url_filters(page.url) == {"located": ["postcode"]}
        wait_for_controls(page, {"chips": "Located at least: postcode centroid |"})
        _shot(page, "5b-located-postcode")

        page.select_option(f"#{ids.FILTER_LOCATED}", "any")
        wait_for_panels(page, {"headline": total})
        page.wait_for_function("() => !window.location.search.includes('located=')")
        _assert_no_js_errors(session)
    finally:
        with conn.cursor() as cur:
            cur.execute(f"UPDATE incidents SET location_precision = 'exact' WHERE {demoted}",
                        {"a": CAMDEN, "b": CROYDON})
        conn.close()
        queries.clear_caches()


def _map_box_when_still(page) -> dict:
    """The map's box once it has stopped moving: panels and cards filling in above it shift it down or up
    the page, and a click aimed from a box read just before such a shift lands beside its vertex."""
    previous = None
    for _ in range(40):
        box = page.locator(f"#{ids.MAP}").bounding_box()
        if box == previous:
            return box
        previous = box
        page.wait_for_timeout(250)
    raise AssertionError(f"the map kept moving on the page: last box {box}")


def draw_square(page, half_px: int = 60) -> None:
    """Draw a square polygon in the middle of the map with the draw toolbar, finishing it with the toolbar's
    Finish button. Each click waits for the map to be still and for its vertex to appear, so a layout shift
    cannot turn the square into some other shape."""
    page.click(".leaflet-draw-draw-polygon")
    for n, (dx, dy) in enumerate(((-1, -1), (1, -1), (1, 1), (-1, 1)), start=1):
        box = _map_box_when_still(page)
        page.mouse.click(box["x"] + box["width"] / 2 + dx * half_px, box["y"] + box["height"] / 2 + dy * half_px)
        page.wait_for_function(f"() => document.querySelectorAll('.leaflet-editing-icon').length === {n}")
    page.click(".leaflet-draw-actions a[title='Finish drawing']")


def test_a_drawn_polygon_filters_the_panels_and_its_link_keeps_it(sessions, server):
    _, url = server
    session = sessions()
    page = session.page
    _log_in(session)
    _wait_ready(page)
    draw_square(page)
    page.wait_for_function("() => window.location.search.includes('poly=')")
    ring = url_filters(page.url)["poly"][0]
    wkt = "POLYGON((" + ", ".join(p.replace(",", " ") for p in ring.split(";") + [ring.split(";")[0]]) + "))"
    inside = query(url, """SELECT count(*) FROM incidents WHERE ST_Intersects(geom, ST_Transform(
                               ST_GeomFromText(%(wkt)s, 4326), 27700))""", {"wkt": wkt})[0][0]
    assert 0 < inside < int(sql_panels(url)["headline"].replace(",", "")), "the square must select some incidents"
    wait_for_panels(page, {"headline": f"{inside:,}"})
    wait_for_controls(page, {"selection": "drawn area"})

    # The link opens with the polygon kept: the drawing control's own report when it mounts must not clear it.
    second = sessions()
    _log_in(second, page.url[len(second.base_url):])
    other = second.page
    _wait_ready(other)
    wait_for_panels(other, {"headline": f"{inside:,}"})
    other.wait_for_timeout(1500)
    assert url_filters(other.url).get("poly") == [ring]
    _shot(other, "6b-drawn-polygon-link")
    _assert_no_js_errors(session)
    _assert_no_js_errors(second)


def test_a_copied_link_opens_the_same_view_in_a_fresh_browser(sessions, server):
    _, url = server
    first = sessions()
    page = first.page
    _log_in(first)
    _wait_ready(page)
    check_weapon_theme(page)
    wait_for_panels(page, sql_panels(url, theme=True))
    click_area(page, CAMDEN)
    wait_for_panels(page, sql_panels(url, theme=True, borough=CAMDEN))
    brush_months(page, 3, 6)
    expected = sql_panels(url, theme=True, borough=CAMDEN, dates=(date(2024, 3, 1), date(2024, 6, 30)))
    shown = wait_for_panels(page, expected)
    controls = wait_for_controls(page, {"dates": ["1 Mar 2024", "30 Jun 2024"], "themes": ["weapon"],
                                        "borough": "Camden", "selection": "Camden"})
    page.wait_for_function(f"() => document.getElementById('{ids.SHARE_URL}').value === window.location.href")
    link = page.input_value(f"#{ids.SHARE_URL}")
    assert url_filters(link) == {"from": ["2024-03-01"], "to": ["2024-06-30"], "theme": ["weapon"],
                                 "borough": [CAMDEN]}
    _shot(page, "6-link-source")

    second = sessions()  # no cookies: the link goes through the login form and back
    _log_in(second, link[len(second.base_url):])
    other = second.page
    assert url_filters(other.url) == url_filters(link)
    _wait_ready(other)
    reopened = wait_for_panels(other, expected)
    assert reopened["headline"] == shown["headline"] and reopened["selected"] == CAMDEN
    wait_for_controls(other, controls)
    _shot(other, "6-link-reopened")
    _assert_no_js_errors(first)
    _assert_no_js_errors(second)


def test_back_and_forward_step_through_filter_changes(sessions, server):
    _, url = server
    session = sessions()
    page = session.page
    _log_in(session)
    _wait_ready(page)
    states = [
        ({}, sql_panels(url), {"themes": [], "borough": "All London", "selection": "All London"}),
        ({"theme": ["weapon"]}, sql_panels(url, theme=True),
         {"themes": ["weapon"], "borough": "All London", "selection": "All London"}),
        ({"theme": ["weapon"], "borough": [CAMDEN]}, sql_panels(url, theme=True, borough=CAMDEN),
         {"themes": ["weapon"], "borough": "Camden", "selection": "Camden"}),
    ]

    def assert_state(i: int) -> None:
        filters, panels, controls = states[i]
        wait_for_panels(page, panels)
        wait_for_controls(page, controls)
        assert url_filters(page.url) == filters, f"state {i}"

    assert_state(0)
    check_weapon_theme(page)
    assert_state(1)
    click_area(page, CAMDEN)
    assert_state(2)
    page.go_back()
    assert_state(1)
    page.go_back()
    assert_state(0)
    page.go_forward()
    assert_state(1)
    page.go_forward()
    assert_state(2)
    _shot(page, "7-after-back-and-forward")
    _assert_no_js_errors(session)


def test_a_link_to_an_msoa_and_a_category_keeps_every_filter(sessions, server):
    """A link's area and category dropdown values arrive with their options, so none is dropped on load."""
    _, url = server
    msoa, msoa_name = query(url, """SELECT a.code, a.name FROM areas a WHERE a.level = 'msoa' AND a.parent_code = %s
                                    AND EXISTS (SELECT 1 FROM incidents i WHERE i.msoa_code = a.code
                                                AND i.category_id = %s) ORDER BY a.code LIMIT 1""",
                           (CAMDEN, WEAPONS))[0]
    session = sessions()
    page = session.page
    _log_in(session, f"/?cat={WEAPONS}&borough={CAMDEN}&msoa={msoa}")
    _wait_ready(page)
    expected = sql_panels(url, borough=CAMDEN, msoa=msoa, category=WEAPONS)
    wait_for_panels(page, expected)
    wait_for_controls(page, {"borough": "Camden", "selection": msoa_name,
                             "categories": "Police recorded crime › Possession of weapons"})
    assert page.locator(f"#{ids.FILTER_MSOA}").inner_text().strip() == msoa_name
    assert url_filters(page.url) == {"cat": [str(WEAPONS)], "borough": [CAMDEN], "msoa": [msoa]}
    assert page.locator(f"#{ids.TOP_AREAS_TITLE}").inner_text() == "Top LSOAs in the selection"
    _shot(page, "9-link-msoa-category")
    _assert_no_js_errors(session)


@pytest.mark.parametrize("link", ["/?borough=E09999999", "/?from=2024-13-01", "/?theme=weapon&cat=999",
                                  "/?theme=weapon&bogus=1"])
def test_a_tampered_link_shows_a_warning_and_no_data(sessions, server, link):
    _, url = server
    session = sessions()
    page = session.page
    _log_in(session, link)
    alert = page.locator(f"#{ids.STATE_ERROR}")
    alert.wait_for(state="visible")
    assert "This link's filters could not be read" in alert.inner_text()
    page.wait_for_function(f"""() => document.getElementById('{ids.HEADLINE}').innerText.includes(
        "No data: this link's filters could not be read")""")
    for chart in (ids.TIMESERIES, ids.CATEGORIES):
        page.wait_for_function(f"""() => {{
            const p = document.querySelector('#{chart} .js-plotly-plot');
            return p && p.data && p.data.length === 0
                && (p.layout.annotations || []).some(a => a.text.startsWith('No data')); }}""")
    # Never an unfiltered view: no total, no table rows, no shaded map, no chips claiming "all of London".
    assert page.locator(f"#{ids.HEADLINE_TOTAL}").count() == 0
    assert page.locator(f"#{ids.TOP_AREAS} td[data-dash-column='name']").count() == 0
    assert page.locator("path[data-area]").count() == 0
    assert page.evaluate("() => window.safestats.map.lastHideout === undefined")
    assert "No filters" not in read_controls(page)["chips"]
    body = page.locator("body").inner_text()
    assert "Traceback" not in body and "SELECT" not in body and "psycopg2" not in body
    _shot(page, "8-tampered-" + re.sub(r"[^a-z0-9]+", "-", link.lower()).strip("-"))
    _assert_no_js_errors(session)

    if link == "/?borough=E09999999":
        # "Reset the filters to start again": Reset all gives the whole, correct picture.
        page.click(f"#{ids.FILTER_RESET}")
        wait_for_panels(page, sql_panels(url))
        alert.wait_for(state="hidden")
        assert url_filters(page.url) == {}


def test_export_links_follow_the_view_and_the_files_match_the_page(sessions, server):
    """Issue 8's exports from the page: the export links carry the current view, the CSV and the printable
    summary hold the headline the page shows (and SQL gives), each chart's PNG download is named."""
    base_url, url = server
    session = sessions()
    page = session.page
    _log_in(session, f"/?borough={CAMDEN}")
    _wait_ready(page)
    expected = sql_panels(url, borough=CAMDEN)
    page.wait_for_function(f"""() => (document.getElementById('{ids.EXPORT_AGGREGATES_CSV}').getAttribute('href')
                                      || '').includes('borough={CAMDEN}')""", timeout=TIMEOUT_MS)
    href = page.locator(f"#{ids.EXPORT_AGGREGATES_CSV}").get_attribute("href")
    assert href.startswith("/export/aggregates.csv?")
    text = page.request.get(base_url + href).text()
    assert text.startswith("# SafeStats export: ") and "# tier: partner_analyst" in text
    assert f"# total: {expected['headline']}" in text
    summary = page.locator(f"#{ids.EXPORT_SUMMARY}").get_attribute("href")
    assert summary.startswith("/export/summary?") and f"borough={CAMDEN}" in summary
    page.goto(base_url + summary, timeout=120_000)   # (the MSOA map and charts are made on the spot)
    assert page.locator("#summary-total").inner_text() == expected["headline"]
    assert page.locator("svg").count() >= 3
    _shot(page, "8-summary")
    page.go_back()
    _wait_ready(page)
    names = page.evaluate(f"""() => ['{ids.TIMESERIES}', '{ids.CATEGORIES}'].map(id =>
        document.querySelector('#' + id + ' .js-plotly-plot')._context.toImageButtonOptions)""")
    assert [n["filename"] for n in names] == ["safestats-incidents-by-month", "safestats-by-category"]
    assert all(n["format"] == "png" and n["scale"] == 2 for n in names)
    records = page.locator(f"#{ids.EXPORT_RECORDS_CSV}")
    assert records.is_visible()     # a partner analyst sees records
    _assert_no_js_errors(session)
