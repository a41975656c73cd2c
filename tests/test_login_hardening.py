"""Issue 7's log-in and sessions, through the HTTP surface against the real database.

A replayed session cookie is refused after log-out, after the user or their organisation is disabled, and
after the idle timeout; the eleventh sign-in attempt in a row is refused even with the right password when
the first ten were spread over two separately started processes (the count lives in PostgreSQL, not in a
worker); tiers whose policy asks for it sign in with a TOTP code (enrolling on first sign-in; a code is
accepted once); common passwords are refused; cookies are Secure, HttpOnly and SameSite; every response
carries a CSP with no 'unsafe-inline' or 'unsafe-eval' scripts; plain forms need their CSRF token.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pyotp
import pytest
from sqlalchemy import text

from dashapp import create_app
from dashapp.auth import upsert_user
from db import get_engine
from safestats.accounts import AccountError, get_account, save_account, save_organisation
from safestats.passwords import password_problem
from tests.conftest import query
from tests.login_helpers import csrf_from

DOMAIN = "login-test.example"
PASSWORD = "a long login test passphrase"


@pytest.fixture(scope="module")
def engine(db_url):
    return get_engine(db_url)


@pytest.fixture(scope="module")
def app(db_url):
    server = create_app(db_url)
    server.config["TESTING"] = True
    return server


@pytest.fixture(autouse=True)
def forget_test_users(engine):
    def forget():
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM users WHERE email ILIKE :p"), {"p": f"%@{DOMAIN}"})
            conn.execute(text("DELETE FROM login_throttle WHERE account ILIKE :p"), {"p": f"%@{DOMAIN}"})
            conn.execute(text("DELETE FROM organisations WHERE code LIKE 'LOGINTEST%'"))
    forget()
    yield
    forget()


_csrf = csrf_from


def _post_login(client, email, password=PASSWORD):
    return client.post("/login", data={"email": email, "password": password, "csrf_token": _csrf(client)})


def _post_code(client, code):
    return client.post("/login/second-factor", data={"code": code, "csrf_token": _csrf(client, "/login/second-factor")})


def _user(engine, name, tier="viewer", organisation="GLA"):
    email = f"{name}@{DOMAIN}"
    upsert_user(engine, email, PASSWORD, name.title(), organisation, tier)
    return email


def _session_cookie(client) -> str:
    return client.get_cookie("session").value


def _replay(app, cookie: str):
    """A fresh client (another browser, an attacker) presenting a captured session cookie."""
    other = app.test_client()
    other.set_cookie("session", cookie)
    return other


def test_a_cookie_replayed_after_logout_is_refused(app, engine):
    email = _user(engine, "replay")
    client = app.test_client()
    assert _post_login(client, email).status_code == 302
    cookie = _session_cookie(client)
    assert _replay(app, cookie).get("/_dash-layout").status_code == 200, "the cookie works while the session lives"

    client.get("/logout")

    replayed = _replay(app, cookie)
    assert replayed.get("/_dash-layout").status_code == 401
    assert replayed.get("/").status_code == 302
    assert query(app.extensions["safestats_engine"].url.render_as_string(hide_password=False),
                 "SELECT revoked_reason FROM user_sessions s JOIN users u ON u.id = s.user_id WHERE u.email = %s",
                 (email,)) == [("logged out",)]


def test_disabling_a_user_or_their_organisation_ends_live_sessions(app, engine):
    save_organisation(engine, code="LOGINTEST1", name="Login test borough team", kind="borough", max_tier="partner_analyst")
    first, second = _user(engine, "first", organisation="LOGINTEST1"), _user(engine, "second", organisation="LOGINTEST1")
    clients = {email: app.test_client() for email in (first, second)}
    for email, client in clients.items():
        assert _post_login(client, email).status_code == 302
    cookies = {email: _session_cookie(client) for email, client in clients.items()}

    save_account(engine, email=first, active=False)
    assert _replay(app, cookies[first]).get("/_dash-layout").status_code == 401
    assert clients[first].get("/_dash-layout").status_code == 401
    assert _replay(app, cookies[second]).get("/_dash-layout").status_code == 200

    save_organisation(engine, code="LOGINTEST1", name="Login test borough team", kind="borough",
                      max_tier="partner_analyst", active=False,
                      org_id=get_account(engine, email=second).organisation_id)
    assert _replay(app, cookies[second]).get("/_dash-layout").status_code == 401
    assert _post_login(app.test_client(), second).status_code == 401, "a disabled organisation's users cannot sign in"
    with pytest.raises(AccountError, match="disabled"):
        save_account(engine, email=first, active=True)

    # Re-enabling gives no old session back: a new sign-in is needed.
    save_organisation(engine, code="LOGINTEST1", name="Login test borough team", kind="borough",
                      max_tier="partner_analyst", active=True, org_id=get_account(engine, email=second).organisation_id)
    save_account(engine, email=first, active=True)
    assert _replay(app, cookies[first]).get("/_dash-layout").status_code == 401
    assert _post_login(app.test_client(), first).status_code == 302


def test_an_idle_session_times_out(app, engine, db_url):
    email = _user(engine, "idle")
    client = app.test_client()
    _post_login(client, email)
    assert client.get("/_dash-layout").status_code == 200
    with engine.begin() as conn:
        conn.execute(text("UPDATE user_sessions SET last_seen_at = now() - make_interval(secs => (:m + 1) * 60) "
                          "FROM users WHERE users.id = user_sessions.user_id AND users.email = :e"),
                     {"m": app.config["SAFESTATS_SESSION_IDLE_MINUTES"], "e": email})
    assert client.get("/_dash-layout").status_code == 401
    assert query(db_url, "SELECT revoked_reason FROM user_sessions s JOIN users u ON u.id = s.user_id "
                         "WHERE u.email = %s", (email,)) == [("idle timeout",)]


OTHER_WORKER = textwrap.dedent("""
    import json, re, sys
    from dashapp import create_app
    app = create_app(sys.argv[1])
    statuses = []
    for _ in range(int(sys.argv[3])):
        client = app.test_client()
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
        statuses.append(client.post("/login", data={"email": sys.argv[2], "password": "wrong password, worker two",
                                                    "csrf_token": token}).status_code)
    print(json.dumps(statuses))
""")


def test_the_eleventh_attempt_in_a_row_across_two_processes_is_refused(app, engine, db_url):
    email = _user(engine, "throttled")
    assert app.config["SAFESTATS_LOGIN_MAX_FAILURES"] == 10
    client = app.test_client()
    for _ in range(5):
        assert _post_login(client, email, "wrong password, worker one").status_code == 401
    other = subprocess.run([sys.executable, "-c", OTHER_WORKER, db_url, email, "5"], capture_output=True, text=True,
                           timeout=300)
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout.strip().splitlines()[-1]) == [401] * 5

    eleventh = _post_login(client, email)  # the right password, but the eleventh attempt in a row

    assert eleventh.status_code == 429
    assert "Too many sign-in attempts" in eleventh.get_data(as_text=True)
    assert client.get("/_dash-layout").status_code == 401
    # An unknown account is throttled the same way (the answer says nothing about who exists).
    for _ in range(10):
        _post_login(client, f"nobody@{DOMAIN}", "whatever it is")
    assert _post_login(client, f"nobody@{DOMAIN}", "whatever it is").status_code == 429
    # After the lock-out has passed, the right password works and clears the count.
    with engine.begin() as conn:
        conn.execute(text("UPDATE login_throttle SET last_failure_at = now() - make_interval(secs => (:m + 1) * 60) "
                          "WHERE account = :a"), {"m": app.config["SAFESTATS_LOGIN_LOCKOUT_MINUTES"], "a": email})
    assert _post_login(client, email).status_code == 302
    assert query(db_url, "SELECT count(*) FROM login_throttle WHERE account = %s", (email,)) == [(0,)]


def test_a_success_starts_the_count_again(app, engine):
    email = _user(engine, "forgetful")
    client = app.test_client()
    for _ in range(9):
        _post_login(client, email, "not quite my password")
    assert _post_login(client, email).status_code == 302
    client.get("/logout")
    for _ in range(9):
        _post_login(client, email, "not quite my password")
    assert _post_login(client, email).status_code == 302


@pytest.mark.parametrize("tier", ["istv_analyst", "admin"])
def test_istv_and_admin_tiers_need_a_totp_code_and_enrol_on_first_sign_in(app, engine, db_url, tier):
    email = _user(engine, f"second-{tier.replace('_', '-')}", tier=tier)
    client = app.test_client()

    response = _post_login(client, email)

    assert response.status_code == 302 and response.headers["Location"].endswith("/login/second-factor")
    assert client.get("/_dash-layout").status_code == 401, "a right password alone opens nothing"
    enrol = client.get("/login/second-factor").get_data(as_text=True)
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', enrol).group(1)
    assert "<svg" in enrol, "the enrolment page shows a QR code"
    assert _post_code(client, "000000").status_code == 401 or pyotp.TOTP(secret).now() == "000000"
    code = pyotp.TOTP(secret).now()
    assert _post_code(client, code).status_code == 302
    assert client.get("/_dash-layout").status_code == 200
    client.get("/logout")

    # Next time: no enrolment page, and the code just used is refused (replay).
    _post_login(client, email)
    page = client.get("/login/second-factor").get_data(as_text=True)
    assert "totp-secret" not in page
    assert _post_code(client, code).status_code == 401
    assert client.get("/_dash-layout").status_code == 401
    with engine.begin() as conn:  # the next time step: as if 30 s had passed
        conn.execute(text("UPDATE users SET totp_last_step = totp_last_step - 1 WHERE email = :e"), {"e": email})
    assert _post_code(client, code).status_code == 302
    assert client.get("/_dash-layout").status_code == 200


def test_lower_tiers_sign_in_with_a_password_alone_but_organisation_admins_need_a_code(app, engine):
    email = _user(engine, "partner", tier="partner_analyst")
    client = app.test_client()
    assert _post_login(client, email).headers["Location"] == "/"
    assert client.get("/_dash-layout").status_code == 200

    save_account(engine, email=email, org_admin=True)   # manages accounts now: a second factor is needed
    client = app.test_client()
    assert _post_login(client, email).headers["Location"].endswith("/login/second-factor")
    assert client.get("/_dash-layout").status_code == 401


def test_the_second_factor_step_needs_a_right_password_first_and_a_csrf_token(app, engine):
    client = app.test_client()
    assert client.get("/login/second-factor").headers["Location"].endswith("/login")
    email = _user(engine, "csrf", tier="istv_analyst")
    _post_login(client, email)
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', client.get("/login/second-factor").get_data(as_text=True)).group(1)
    no_token = client.post("/login/second-factor", data={"code": pyotp.TOTP(secret).now()})
    assert no_token.status_code == 401
    assert client.get("/_dash-layout").status_code == 401


@pytest.mark.parametrize("password", ["password", "Password123!", "monkey12345", "qwertyuiop", "iloveyou2"])
def test_common_passwords_are_refused(engine, password):
    assert password_problem(password) is not None
    with pytest.raises(ValueError, match="common passwords"):
        upsert_user(engine, f"common@{DOMAIN}", password, "Common", "GLA", "viewer")


def test_long_uncommon_passwords_are_fine_without_complexity_rules():
    assert password_problem("correct horse battery staple") is None
    assert password_problem("short") is not None
    assert password_problem("someone.else", "someone.else@example.org") is not None


def test_cookies_are_secure_httponly_samesite_and_responses_carry_a_csp(app, engine):
    email = _user(engine, "cookies")
    response = _post_login(app.test_client(), email)
    cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    csp = response.headers["Content-Security-Policy"]
    script_src = re.search(r"script-src ([^;]+)", csp).group(1)
    assert "'self'" in script_src and "'sha256-" in script_src
    assert "unsafe-inline" not in script_src and "unsafe-eval" not in script_src
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


def test_secure_cookies_can_be_turned_off_for_plain_http(db_url, monkeypatch, engine):
    from safestats.config import get_settings

    monkeypatch.setenv("SAFESTATS_SECURE_COOKIES", "false")
    get_settings.cache_clear()
    try:
        server = create_app(db_url)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    email = _user(engine, "plainhttp")
    cookie = _post_login(server.test_client(), email).headers["Set-Cookie"]
    assert "Secure" not in cookie and "HttpOnly" in cookie
