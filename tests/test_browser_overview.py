"""The overview page in a real headless Chromium: log in through the form, see the boroughs, click one.

The app runs in-process on a free loopback port (werkzeug) against the test database, seeded with a year
of incidents in every borough. Every request that does not go to that server is aborted, which is both
"no internet on the test machine" made explicit and the check that the base-map tiles are optional: the
borough polygons must render with no tile server at all. The chart's numbers are read from the Plotly
figure in the DOM and compared with SQL, before and after a borough is clicked. Screenshots are saved
under test-artifacts/ (git-ignored) for a human to look at.
"""
from __future__ import annotations

import threading
from pathlib import Path

import psycopg2
import pytest
from werkzeug.serving import make_server

from dashapp import create_app, ids
from dashapp.auth import upsert_user
from db import get_engine, libpq_dsn
from safestats import queries
from tests.conftest import IN_CI, query

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
EMAIL, PASSWORD = "browser.analyst@browser-test.example", "browser test passphrase"
CAMDEN, CROYDON = "E09000007", "E09000008"
TIMEOUT_MS = 20_000


def _require_chromium() -> None:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (install Debian's chromium package; the tests never download a browser)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def seed_year_of_incidents(url: str) -> None:
    """Jan-Dec 2024, every London borough, a deterministic and uneven number of incidents per month."""
    conn = psycopg2.connect(libpq_dsn(url))
    with conn, conn.cursor() as cur:
        cur.execute("SELECT safestats_ensure_incident_partitions('2024-01-01', '2024-12-31')")
        cur.execute("""
            INSERT INTO incidents (supplier, drop_id, occurred_at, time_precision, category_id, supplier_category,
                                   location_precision, borough_code, access_level)
            SELECT 'police_uk', 1,
                   make_timestamptz(2024, m, 1 + (i % 27), 12, 0, 0, 'Europe/London'),
                   'minute', 1, 'Violence and sexual offences', 'exact', a.code, 10
            FROM areas a
            CROSS JOIN generate_series(1, 12) AS m
            CROSS JOIN LATERAL generate_series(
                1, 5 + (abs(hashtext(a.code)) % 60) + (abs(hashtext(a.code || m::text)) % 25)) AS i
            WHERE a.level = 'borough' AND a.region = 'london'
        """)
    conn.close()


def _monthly_sql(url: str, borough: str | None) -> list[int]:
    rows = query(url, """SELECT date_trunc('month', occurred_at AT TIME ZONE 'Europe/London')::date, count(*)
                         FROM incidents WHERE %(b)s::text IS NULL OR borough_code = %(b)s GROUP BY 1 ORDER BY 1""",
                 {"b": borough})
    return [int(n) for _, n in rows]


@pytest.fixture
def live_server(clean_data):
    _require_chromium()
    seed_year_of_incidents(clean_data)
    queries.clear_caches()
    upsert_user(get_engine(clean_data), EMAIL, PASSWORD, "Browser Analyst", "GLA", "partner_analyst")
    server = make_server("127.0.0.1", 0, create_app(clean_data), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", clean_data
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def page(live_server):
    from playwright.sync_api import sync_playwright

    base_url, _ = live_server
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        # No internet: anything not served by the app under test (e.g. the base-map tiles) fails to load.
        context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base_url)
                      else route.abort())
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.js_errors = []
        page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
        try:
            yield page
        finally:
            context.close()
            browser.close()


def _log_in(page, base_url):
    page.goto(base_url + "/")
    assert "/login" in page.url, "an anonymous visitor is sent to the login form"
    page.screenshot(path=str(ARTIFACTS / "overview-0-login.png"))
    page.fill("#email", EMAIL)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(base_url + "/")


def _chart_values(page) -> list[int]:
    return page.evaluate(f"""() => {{
        const plot = document.querySelector('#{ids.OVERVIEW_CHART} .js-plotly-plot');
        return plot && plot.data && plot.data.length ? Array.from(plot.data[0].y) : null;
    }}""")


def _wait_for_chart_title(page, title: str) -> None:
    page.wait_for_function(f"""(t) => document.getElementById('{ids.OVERVIEW_CHART_TITLE}').textContent === t""",
                           arg=title)


def _click_borough(page, code: str) -> None:
    """Click a point that is really inside the borough's polygon (a bounding box centre may not be)."""
    point = page.evaluate("""(code) => {
        const path = document.querySelector(`path[data-borough="${code}"]`);
        const box = path.getBoundingClientRect();
        // The centre first, then a spread of points over the box (golden-ratio steps), until one hits the path.
        for (let step = 0; step < 400; step++) {
            const fx = step === 0 ? 0.5 : (step * 0.618) % 1;
            const fy = step === 0 ? 0.5 : (step * 0.382 + 0.5) % 1;
            const x = box.left + box.width * (0.1 + 0.8 * fx);
            const y = box.top + box.height * (0.1 + 0.8 * fy);
            if (document.elementFromPoint(x, y) === path) return [x, y];
        }
        return null;
    }""", code)
    assert point, f"no clickable point found inside borough {code}"
    page.mouse.click(*point)


def test_login_then_click_a_borough_filters_the_chart(page, live_server):
    base_url, url = live_server
    _log_in(page, base_url)

    # The 33 boundaries render as vector polygons even though no tile could load.
    page.wait_for_function("() => document.querySelectorAll('path[data-borough]').length === 33")
    assert page.locator(f"#{ids.NAVBAR_USER}").inner_text() == "Browser Analyst"
    page.wait_for_function(f"""() => {{
        const p = document.querySelector('#{ids.OVERVIEW_CHART} .js-plotly-plot');
        return p && p.data && p.data.length && p.data[0].y.length === 12; }}""")
    all_london = _chart_values(page)
    assert all_london == _monthly_sql(url, None)
    # The choropleth is shaded: boroughs do not all share one fill colour.
    fills = page.evaluate("() => new Set(Array.from(document.querySelectorAll('path[data-borough]'),"
                          " p => p.getAttribute('fill'))).size")
    assert fills >= 3
    page.screenshot(path=str(ARTIFACTS / "overview-1-all-london.png"))

    _click_borough(page, CAMDEN)
    _wait_for_chart_title(page, "Camden")
    page.wait_for_function(f"""(expected) => {{
        const p = document.querySelector('#{ids.OVERVIEW_CHART} .js-plotly-plot');
        return p && JSON.stringify(Array.from(p.data[0].y)) === JSON.stringify(expected); }}""",
                           arg=_monthly_sql(url, CAMDEN))
    camden = _chart_values(page)
    assert camden == _monthly_sql(url, CAMDEN) and camden != all_london
    assert page.locator(f"#{ids.OVERVIEW_SELECTION_NAME}").inner_text() == "Camden"
    # The map highlights the selection with a heavier outline (once the pointer has moved off the
    # map: hovering restyles a borough).
    title = page.locator(f"#{ids.OVERVIEW_CHART_TITLE}").bounding_box()
    page.mouse.move(title["x"] + title["width"] / 2, title["y"] + title["height"] / 2, steps=12)
    page.wait_for_function(f"""() => document.querySelector('path[data-borough="{CAMDEN}"]')
                                   .getAttribute('stroke-width') === '4'""")
    page.screenshot(path=str(ARTIFACTS / "overview-2-camden.png"))

    # Clicking the selected borough again returns to all of London.
    _click_borough(page, CAMDEN)
    _wait_for_chart_title(page, "All London")
    assert _chart_values(page) == all_london

    # Another borough, then the "clear" link.
    _click_borough(page, CROYDON)
    _wait_for_chart_title(page, "Croydon")
    assert _chart_values(page) == _monthly_sql(url, CROYDON)
    page.click(f"#{ids.OVERVIEW_CLEAR_SELECTION}")
    _wait_for_chart_title(page, "All London")
    assert page.locator(f"#{ids.OVERVIEW_SELECTION_NAME}").inner_text() == "none"
    assert _chart_values(page) == all_london

    assert page.js_errors == [], f"JavaScript errors on the page: {page.js_errors}"


def test_wrong_password_stays_on_the_login_form(page, live_server):
    base_url, _ = live_server
    page.goto(base_url + "/login")
    page.fill("#email", EMAIL)
    page.fill("#password", "not the password")
    page.click("#login-submit")
    page.wait_for_selector("#login-error")
    assert "not recognised" in page.locator("#login-error").inner_text()
    assert "/login" in page.url
    response = page.request.get(base_url + "/_dash-layout")
    assert response.status == 401
    page.screenshot(path=str(ARTIFACTS / "overview-3-bad-password.png"))

