"""Signing in with a second factor in a real headless Chromium, and the dashboard working under the CSP.

An admin (a tier whose policy needs TOTP) opens the portal, is sent to the login form, gives the password,
is shown the enrolment QR code and secret, enters the current code (pyotp, from the secret on the page) and
lands on the dashboard. The dashboard must render fully under the portal's Content-Security-Policy (no
'unsafe-inline' or 'unsafe-eval' scripts): no CSP violation and no JavaScript error may be reported. The
session cookie the portal set is Secure and HttpOnly (Chromium keeps Secure cookies on http://127.0.0.1),
and once the user logs out, the same cookies put into a fresh browser open nothing.
"""
from __future__ import annotations

import threading
from urllib.parse import urlsplit

import pyotp
import pytest
from sqlalchemy import text
from werkzeug.serving import make_server

from dashapp import create_app
from dashapp.auth import upsert_user
from db import get_engine
from tests.test_browser_dashboard import TIMEOUT_MS, _require_chromium, browser  # noqa: F401  (fixture)

pytestmark = pytest.mark.browser

EMAIL, PASSWORD = "totp.admin@browser-login-test.example", "browser login test passphrase"


@pytest.fixture(scope="module")
def server(areas_loaded):
    _require_chromium()
    engine = get_engine(areas_loaded)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM users WHERE email = :e"), {"e": EMAIL})
    upsert_user(engine, EMAIL, PASSWORD, "TOTP Admin", "GLA", "admin")
    srv = make_server("127.0.0.1", 0, create_app(areas_loaded), threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}"
    finally:
        srv.shutdown()
        thread.join(timeout=10)


def _context(browser, base_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base_url) else route.abort())
    return context


def test_an_admin_enrols_a_second_factor_and_the_dashboard_works_under_the_csp(browser, server):
    context = _context(browser, server)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    # (Base-map tiles fail to load by design: the context aborts every request off this server.)
    page.on("console", lambda msg: problems.append(f"console: {msg.text}")
            if "Content Security Policy" in msg.text or "Refused to" in msg.text else None)

    page.goto(server + "/")
    assert urlsplit(page.url).path == "/login"
    page.fill("#email", EMAIL)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(lambda u: urlsplit(u).path == "/login/second-factor")
    assert page.locator("#totp-qr svg").count() == 1, "the enrolment QR code is shown"
    secret = page.locator("#totp-secret").inner_text().strip()
    page.fill("#totp-code", pyotp.TOTP(secret).now())
    page.click("#totp-submit")
    page.wait_for_url(lambda u: urlsplit(u).path == "/")
    # The 33 borough polygons and the headline (data or "none loaded yet"): Dash's callbacks ran under the CSP.
    page.wait_for_function("() => document.querySelectorAll('path[data-area]').length === 33", timeout=90_000)
    page.wait_for_selector("#headline-total, .ss-empty")
    assert page.locator("#navbar-admin").get_attribute("href") == "/admin/users"
    page.wait_for_timeout(1000)  # let late callbacks (clientside ones included) run and report

    assert problems == [], problems
    response = page.request.get(server + "/")
    assert "script-src 'self' 'sha256-" in response.headers["content-security-policy"]
    cookies = context.cookies()
    session_cookie = next(c for c in cookies if c["name"] == "session")
    assert session_cookie["secure"] and session_cookie["httpOnly"] and session_cookie["sameSite"] == "Lax"

    page.goto(server + "/logout")
    assert urlsplit(page.url).path == "/login"
    replay = _context(browser, server)
    replay.add_cookies(cookies)   # the cookies as they were while signed in
    replayed = replay.new_page()
    replayed.goto(server + "/")
    assert urlsplit(replayed.url).path == "/login", "a cookie replayed after log-out opens nothing"
    replay.close()
    context.close()
