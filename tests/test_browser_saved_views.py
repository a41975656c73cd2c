"""Saved views in a real headless Chromium: issue 8's first "done when".

A GLA partner analyst saves the dashboard's view (police and ambulance data for Camden, with the incident
points layer) pinned "as at" the newest drop, and shares it with a colleague who is a viewer. The viewer
signs in, opens it from "Shared with me", and sees the reduced view (no ambulance data, no points) with a
note naming what was left out, and the headline count of Camden's police incidents in the pinned data.
Then a later month's demo drop is loaded through the real loader while the portal runs: the pinned view
keeps its headline, while the same filters following the latest data count the new month too.

The data are the demo generator's police.uk street files (January and February 2025) loaded through
``loaders.pipeline.load_paths``, so drops, watermarks and rollups are what production has; expected numbers
come from SQL on the raw ``incidents`` table. Shares the helpers (the browser, ``_wait_ready``) of
``tests/test_browser_dashboard.py``.
"""
from __future__ import annotations

import threading
from urllib.parse import parse_qs, urlsplit

import psycopg2
import pytest
from werkzeug.serving import make_server

from dashapp import create_app, ids
from dashapp.auth import upsert_user
from db import get_engine, libpq_dsn
from safestats import queries
from tests.conftest import query, truncate_data
from tests.test_browser_dashboard import (ARTIFACTS, Session, _require_chromium,
                                          _wait_ready, launched_chromium)

pytestmark = pytest.mark.browser

OWNER, COLLEAGUE = "view.owner@views-browser.test", "vera.viewer@views-browser.test"
PASSWORD = "saved views browser passphrase"
CAMDEN = "E09000007"
VIEW_QS = f"supplier=police_uk,las&borough={CAMDEN}&layer=points"


@pytest.fixture(scope="module")
def views_portal(areas_loaded, tmp_path_factory):
    """The app on a loopback port over January 2025's demo police drops (February's are kept for later)."""
    from loaders.demo import generate_demo_drops
    from loaders.pipeline import load_paths

    _require_chromium()
    url = areas_loaded
    truncate_data(url)
    files = generate_demo_drops(tmp_path_factory.mktemp("views-demo"), months=2, end_month="2025-02",
                                rows_per_month=900, fire_and_transport=False)
    street = sorted(p for p in files if p.name.endswith("-street.csv"))
    load_paths(url, [p for p in street if p.name.startswith("2025-01")], progress=False)
    queries.clear_caches()
    engine = get_engine(url)
    upsert_user(engine, OWNER, PASSWORD, "View Owner", "GLA", "partner_analyst")
    upsert_user(engine, COLLEAGUE, PASSWORD, "Vera Viewer", "GLA", "viewer")
    srv = make_server("127.0.0.1", 0, create_app(url), threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}", url, [p for p in street if p.name.startswith("2025-02")]
    finally:
        srv.shutdown()
        thread.join(timeout=10)
        conn = psycopg2.connect(libpq_dsn(url))
        with conn, conn.cursor() as cur:
            cur.execute("DELETE FROM users WHERE email LIKE '%%@views-browser.test'")
        conn.close()
        truncate_data(url)


@pytest.fixture(scope="module")
def views_browser(views_portal):
    with launched_chromium() as chromium:
        yield chromium


def _sign_in(session: Session, email: str, path: str) -> None:
    page = session.page
    page.goto(session.base_url + path)
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(lambda u: urlsplit(u).path == "/")


def _headline(page, expected: str) -> str:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(f"(want) => (document.getElementById('{ids.HEADLINE_TOTAL}') || {{}}).textContent "
                               "=== want", arg=expected)
    except PlaywrightTimeout:
        pass  # the assertion at the caller says what differs
    return page.locator(f"#{ids.HEADLINE_TOTAL}").inner_text()


def _camden_police(url: str) -> int:
    return query(url, "SELECT count(*) FROM incidents WHERE supplier = 'police_uk' AND borough_code = %s",
                 (CAMDEN,))[0][0]


def test_share_a_pinned_view_with_a_viewer_who_sees_it_reduced_and_its_numbers_hold(views_portal, views_browser):
    from loaders.pipeline import load_paths

    base_url, url, february = views_portal
    january = _camden_police(url)
    assert january > 0

    # The owner saves the view, pinned "as at" the newest drop, and shares it with the viewer.
    owner = Session(views_browser, base_url)
    try:
        _sign_in(owner, OWNER, "/?" + VIEW_QS)
        page = owner.page
        _wait_ready(page)
        assert _headline(page, f"{january:,}") == f"{january:,}"
        assert page.locator(f"#{ids.VIEWS_DATA_AGE}").inner_text().startswith("Following the latest data")
        page.click(f"#{ids.VIEWS_OPEN}")
        page.fill(f"#{ids.VIEWS_NAME}", "Camden police and ambulance")
        page.fill(f"#{ids.VIEWS_DESCRIPTION}", "January, with incident points")
        page.locator(f"#{ids.VIEWS_PIN}").check()
        page.click(f"#{ids.VIEWS_SAVE}")
        item = page.locator(f"#{ids.VIEWS_MINE} .ss-views-item", has_text="Camden police and ambulance")
        item.wait_for()
        assert "as at a fixed drop" in item.inner_text()
        item.get_by_role("button", name="Share").click()
        page.locator(f"#{ids.VIEWS_SHARE_VIEW}", has_text="Camden police and ambulance").wait_for()
        # Choosing the view loads its current shares into the form: let that answer land before ticking.
        page.wait_for_load_state("networkidle")
        colleague = page.get_by_label("Vera Viewer (viewer)")
        colleague.check()
        assert colleague.is_checked()
        page.click(f"#{ids.VIEWS_SHARE_SAVE}")
        page.locator(f"#{ids.VIEWS_MESSAGE}", has_text="is shared with").wait_for()
        assert "is shared with Vera Viewer" in page.locator(f"#{ids.VIEWS_MESSAGE}").inner_text()
        view_path = item.locator("a.ss-views-name").get_attribute("href")
        page.screenshot(path=str(ARTIFACTS / "saved-views-owner.png"), full_page=True)
        assert owner.js_errors == []
    finally:
        owner.close()
    saved = query(url, "SELECT state FROM saved_views WHERE name = 'Camden police and ambulance'")[0][0]
    assert parse_qs(saved)["asat"] == [str(query(url, "SELECT max(id) FROM drops")[0][0])]

    # The viewer opens it from "Shared with me": reduced, with the note, January's count.
    viewer = Session(views_browser, base_url)
    try:
        _sign_in(viewer, COLLEAGUE, "/")
        page = viewer.page
        _wait_ready(page)
        page.click(f"#{ids.VIEWS_OPEN}")
        link = page.locator(f"#{ids.VIEWS_SHARED} a.ss-views-name", has_text="Camden police and ambulance")
        link.wait_for()
        assert link.get_attribute("href") == view_path
        assert "by View Owner" in page.locator(f"#{ids.VIEWS_SHARED}").inner_text()
        link.click()
        page.wait_for_url(lambda u: urlsplit(u).path == "/" and "asat=" in u)
        _wait_ready(page)
        shown = parse_qs(urlsplit(page.url).query)
        assert shown["supplier"] == ["police_uk"] and shown["borough"] == [CAMDEN]
        assert "layer" not in shown, "the points layer is not for a viewer"
        note = page.locator(f"#{ids.VIEWS_NOTE}")
        note.wait_for()
        text = note.inner_text()
        assert "Camden police and ambulance" in text and "View Owner" in text
        assert "London Ambulance Service" in text and "Incident points" in text
        assert _headline(page, f"{january:,}") == f"{january:,}"
        age = page.locator(f"#{ids.VIEWS_DATA_AGE}").inner_text()
        assert age.startswith("As at ") and "days old" in age
        page.screenshot(path=str(ARTIFACTS / "saved-views-viewer-reduced.png"), full_page=True)

        # A later month arrives through the real loader while the portal runs.
        load_paths(url, february, progress=False)
        both = _camden_police(url)
        assert both > january
        page.goto(base_url + view_path)
        page.wait_for_url(lambda u: urlsplit(u).path == "/" and "asat=" in u)
        _wait_ready(page)
        assert _headline(page, f"{january:,}") == f"{january:,}", "the pinned view keeps its numbers"
        page.goto(f"{base_url}/?supplier=police_uk&borough={CAMDEN}")
        _wait_ready(page)
        assert _headline(page, f"{both:,}") == f"{both:,}", "following the latest data counts February too"
        assert page.locator(f"#{ids.VIEWS_DATA_AGE}").inner_text().startswith("Following the latest data")
        assert not page.locator(f"#{ids.VIEWS_NOTE}").is_visible(), "the note belongs to the opened view only"
        assert viewer.js_errors == []
    finally:
        viewer.close()
