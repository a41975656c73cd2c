"""The portal's HTTP surface through Flask's test client: the login guard, the login form, and one callback.

Anonymous requests must get nothing from Dash: pages redirect to /login, and the JSON routes that describe
the app or run its callbacks answer 401. Logging in needs the form's CSRF token and the right password,
starts a new session, and honours ``next`` only for local paths. A logged-in callback call returns the
same numbers as SQL, and a tampered borough code is refused rather than answered with all of London.
"""
from __future__ import annotations

import json
import re

import pytest

from dashapp import create_app, ids
from dashapp.auth import GENERIC_LOGIN_ERROR, upsert_user
from db import get_engine
from safestats import queries
from tests.conftest import query
from tests.test_queries import CAMDEN, seed_incidents

EMAIL, PASSWORD = "web.viewer@web-test.example", "a long test passphrase"
CHART_OUTPUTS = [(ids.OVERVIEW_CHART, "figure"), (ids.OVERVIEW_CHART_TITLE, "children"),
                 (ids.OVERVIEW_SELECTION_NAME, "children"), (ids.OVERVIEW_CLEAR_SELECTION, "style"),
                 (ids.OVERVIEW_TOTAL, "children")]


@pytest.fixture(scope="module")
def app(areas_loaded):
    queries.clear_caches()
    upsert_user(get_engine(areas_loaded), EMAIL, PASSWORD, "Web Viewer", "GLA", "viewer")
    server = create_app(areas_loaded)
    server.config["TESTING"] = True
    return server


@pytest.fixture
def client(app):
    return app.test_client()


def _csrf(client, path="/login") -> str:
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _login(client, email=EMAIL, password=PASSWORD, next_path=None):
    token = _csrf(client)
    url = "/login" + (f"?next={next_path}" if next_path else "")
    return client.post(url, data={"email": email, "password": password, "csrf_token": token})


def _chart_callback(client, filter_query_string):
    body = {
        "output": ".." + "...".join(f"{i}.{p}" for i, p in CHART_OUTPUTS) + "..",  # Dash's multi-output id
        "outputs": [{"id": i, "property": p} for i, p in CHART_OUTPUTS],
        "inputs": [{"id": ids.OVERVIEW_FILTER_STATE, "property": "data", "value": filter_query_string}],
        "changedPropIds": [f"{ids.OVERVIEW_FILTER_STATE}.data"],
        "state": [],
    }
    return client.post("/_dash-update-component", data=json.dumps(body), content_type="application/json")


def _click_callback(client, clicked_feature, filter_query_string=""):
    """The map-click callback as the browser calls it after a click on a borough polygon."""
    body = {
        "output": f"{ids.OVERVIEW_FILTER_STATE}.data",
        "outputs": {"id": ids.OVERVIEW_FILTER_STATE, "property": "data"},
        "inputs": [{"id": ids.OVERVIEW_BOROUGHS, "property": "n_clicks", "value": 1},
                   {"id": ids.OVERVIEW_CLEAR_SELECTION, "property": "n_clicks", "value": 0}],
        "state": [{"id": ids.OVERVIEW_BOROUGHS, "property": "clickData", "value": clicked_feature},
                  {"id": ids.OVERVIEW_FILTER_STATE, "property": "data", "value": filter_query_string}],
        "changedPropIds": [f"{ids.OVERVIEW_BOROUGHS}.n_clicks"],
    }
    return client.post("/_dash-update-component", data=json.dumps(body), content_type="application/json")


def test_anonymous_page_requests_redirect_to_login(client):
    for path in ("/", "/some/page?borough=E09000007"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("method,path", [
    ("GET", "/_dash-layout"),
    ("GET", "/_dash-dependencies"),
    ("POST", "/_dash-update-component"),
    ("GET", "/_reload-hash"),
    ("GET", "/assets/safestats_map.js"),
])
def test_anonymous_dash_routes_are_refused(client, method, path):
    response = client.open(path, method=method, json={} if method == "POST" else None)
    assert response.status_code == 401
    assert b"overview" not in response.data


def test_anonymous_component_suites_are_refused(client):
    # The real fingerprinted path does not matter: the guard answers before Dash looks it up.
    response = client.get("/_dash-component-suites/dash/dash-renderer/build/dash_renderer.v1_0_0m1.min.js")
    assert response.status_code == 401


def test_login_page_is_public_and_styled_without_login(client):
    page = client.get("/login")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'name="password"' in html and 'name="csrf_token"' in html
    assert client.get("/static/bootstrap.min.css").status_code == 200
    assert client.get("/static/safestats_map.js").status_code == 404, "only the login page's CSS is public"


def test_login_with_the_right_password_opens_the_dash_app(client, areas_loaded):
    response = _login(client)
    assert response.status_code == 302 and response.headers["Location"] == "/"
    cookie = response.headers.get("Set-Cookie", "")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    layout = client.get("/_dash-layout")
    assert layout.status_code == 200
    assert ids.OVERVIEW_BOROUGHS in layout.get_data(as_text=True)
    assert "Web Viewer" in layout.get_data(as_text=True), "navbar shows who is logged in"
    assert client.get("/_dash-dependencies").status_code == 200
    assert client.get("/").status_code == 200
    assert query(areas_loaded, "SELECT last_login_at IS NOT NULL FROM users WHERE email = %s", (EMAIL,))[0][0]


def test_bad_password_unknown_user_and_missing_csrf_are_refused_alike(client):
    for email, password in ((EMAIL, PASSWORD + "x"), ("nobody@web-test.example", PASSWORD)):
        response = _login(client, email, password)
        assert response.status_code == 401
        assert GENERIC_LOGIN_ERROR in response.get_data(as_text=True)
        assert client.get("/_dash-layout").status_code == 401
    no_token = client.post("/login", data={"email": EMAIL, "password": PASSWORD})
    assert no_token.status_code == 401
    assert client.get("/_dash-layout").status_code == 401


def test_login_starts_a_fresh_session_and_next_stays_local(client):
    with client.session_transaction() as session:
        session["planted"] = "by an attacker"
    response = _login(client, next_path="https://evil.example/")
    assert response.headers["Location"] == "/"
    with client.session_transaction() as session:
        assert "planted" not in session
    client.get("/logout")
    response = _login(client, next_path="/%3Fborough%3DE09000007")
    assert response.headers["Location"] == "/?borough=E09000007"


def test_logout_ends_the_session(client):
    _login(client)
    assert client.get("/_dash-layout").status_code == 200
    response = client.get("/logout")
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")
    assert client.get("/_dash-layout").status_code == 401


def test_chart_callback_returns_the_boroughs_numbers(client, clean_data):
    seed_incidents(clean_data)
    _login(client)
    response = _chart_callback(client, f"borough={CAMDEN}")
    assert response.status_code == 200
    result = response.get_json()["response"]
    figure = result[ids.OVERVIEW_CHART]["figure"]
    direct = dict(query(clean_data, """SELECT date_trunc('month', occurred_at AT TIME ZONE 'Europe/London')::date::text,
                                              count(*) FROM incidents WHERE borough_code = %s GROUP BY 1""", (CAMDEN,)))
    chart = dict(zip(figure["data"][0]["x"], figure["data"][0]["y"]))
    assert {m: n for m, n in chart.items() if n} == {m: int(n) for m, n in direct.items()}
    assert result[ids.OVERVIEW_CHART_TITLE]["children"] == "Camden"


@pytest.mark.parametrize("tampered", ["borough=E09999999", "borough=E09000007' OR 1=1", "borogh=E09000007"])
def test_chart_callback_refuses_tampered_state(client, clean_data, tampered):
    seed_incidents(clean_data)
    _login(client)
    response = _chart_callback(client, tampered)
    assert response.status_code == 204, "refused: no update, and certainly not all of London"


def test_map_click_selects_and_deselects_only_known_boroughs(client):
    _login(client)
    response = _click_callback(client, {"type": "Feature", "properties": {"code": CAMDEN, "name": "Camden"}})
    assert response.status_code == 200
    assert response.get_json()["response"][ids.OVERVIEW_FILTER_STATE]["data"] == f"borough={CAMDEN}"
    again = _click_callback(client, {"properties": {"code": CAMDEN}}, f"borough={CAMDEN}")
    assert again.get_json()["response"][ids.OVERVIEW_FILTER_STATE]["data"] == ""
    for forged in ({"properties": {"code": "E09999999"}}, {"properties": {"code": ["E09000007"]}},
                   {"properties": {}}, None, "E09000007"):
        assert _click_callback(client, forged).status_code == 204, forged


def test_callbacks_check_the_login_themselves(app):
    # Bypass the request guard and call the registered callback directly, as if the guard were missing.
    dash_app = app.extensions["safestats_dash"]
    callback = next(cb for key, cb in dash_app.callback_map.items() if ids.OVERVIEW_CHART in key)
    with app.test_request_context("/_dash-update-component", method="POST"):
        from werkzeug.exceptions import Unauthorized

        with pytest.raises(Unauthorized):
            callback["callback"].__wrapped__("borough=" + CAMDEN)
