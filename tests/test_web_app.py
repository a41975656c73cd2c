"""The portal's HTTP surface through Flask's test client: the login guard, the login form, callbacks, tiles.

Anonymous requests must get nothing from Dash: pages redirect to /login, and the JSON routes that describe
the app or run its callbacks answer 401, as do the density tiles. Logging in needs the form's CSRF token
and the right password, starts a new session, and honours ``next`` only for local paths. Callbacks are
called as the browser calls them (``/_dash-update-component``), built from the app's own callback map: a
panel returns the same numbers as SQL; forged state, forged clicks and tampered links are refused with a
message and no data, never answered with all of London.
"""
from __future__ import annotations

import gzip
import json
import re

import pytest

from dashapp import create_app, ids
from dashapp.auth import GENERIC_LOGIN_ERROR, upsert_user
from tests.login_helpers import sign_in
from db import get_engine
from safestats import queries
from tests.conftest import query
from tests.test_queries import CAMDEN, seed_incidents

EMAIL, PASSWORD = "web.viewer@web-test.example", "a long test passphrase"


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
    """Sign in (with the second factor when the tier asks for one); the last response."""
    return sign_in(client, email, password, next_path)


def _callback(app, client, output_id: str, values: dict, changed: str):
    """POST one callback (the one whose outputs include ``output_id``) as the browser would.

    ``values`` maps "id.property" to a value for its inputs and states; anything not given is None (or []
    for pattern-matching inputs). ``changed`` is the "id.property" that triggered it."""
    dash_app = app.extensions["safestats_dash"]
    key = next(k for k in dash_app.callback_map if f"{output_id}." in k)
    return _callback_by_key(app, client, key, values, changed)


def _callback_by_key(app, client, key: str, values: dict, changed: str):
    """POST the callback whose ``callback_map`` key is ``key`` (see ``_callback``)."""
    spec = app.extensions["safestats_dash"].callback_map[key]
    outputs = [dict(zip(("id", "property"), part.rsplit(".", 1))) for part in key.strip(".").split("...")]

    def item(dep):
        if isinstance(dep["id"], str) and dep["id"].startswith("{"):
            return []  # pattern-matching (chips): none rendered
        return {"id": dep["id"], "property": dep["property"], "value": values.get(f"{dep['id']}.{dep['property']}")}
    body = {"output": key, "outputs": outputs if len(outputs) > 1 else outputs[0],
            "inputs": [item(d) for d in spec["inputs"]], "state": [item(d) for d in spec["state"]],
            "changedPropIds": [changed]}
    return client.post("/_dash-update-component", data=json.dumps(body), content_type="application/json")


def _headline(app, client, qs):
    return _callback(app, client, ids.HEADLINE, {f"{ids.DATA_STATE}.data": {"qs": qs, "error": None}},
                     f"{ids.DATA_STATE}.data")


def _sync(app, client, changed: str, **values):
    return _callback(app, client, ids.STATE_ERROR, values, changed)


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
    assert b"chart" not in response.data and b"filter" not in response.data


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
    assert ids.MAP_AREAS["borough"] in layout.get_data(as_text=True)
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


def test_a_panel_callback_returns_the_numbers_sql_gives(app, client, clean_data):
    seed_incidents(clean_data)
    _login(client)
    response = _headline(app, client, f"borough={CAMDEN}&from=2024-01-01&to=2024-12-31")
    assert response.status_code == 200
    body = json.dumps(response.get_json()["response"])
    (camden,) = query(clean_data, """SELECT count(*) FROM incidents WHERE borough_code = %s
                                     AND occurred_at >= '2024-01-01 00:00 Europe/London'""", (CAMDEN,))[0]
    assert f'"children": "{camden:,}"' in body and f"{camden:,}" != "0"


@pytest.mark.parametrize("tampered", ["borough=E09999999", "borough=E09000007' OR 1=1", "borogh=E09000007",
                                      "cat=999", "supplier=no_such_supplier"])
def test_panels_refuse_tampered_state(app, client, clean_data, tampered):
    seed_incidents(clean_data)
    _login(client)
    assert _headline(app, client, tampered).status_code == 204, "refused: no update, never all of London"


def test_map_click_selects_and_deselects_only_known_areas(app, client):
    _login(client)
    clicked = f"{ids.MAP_AREAS['borough']}.n_clicks"
    response = _sync(app, client, clicked, **{clicked: 1, f"{ids.MAP_AREAS['borough']}.clickData":
                                              {"type": "Feature", "properties": {"code": CAMDEN}}})
    assert response.status_code == 200
    result = response.get_json()["response"]
    assert result[ids.URL]["search"] == f"?borough={CAMDEN}"
    assert result[ids.DATA_STATE]["data"] == {"qs": f"borough={CAMDEN}", "error": None}
    assert result[ids.FILTER_BOROUGH]["value"] == CAMDEN
    again = _sync(app, client, clicked, **{clicked: 2, f"{ids.URL}.search": f"?borough={CAMDEN}",
                                           f"{ids.MAP_AREAS['borough']}.clickData": {"properties": {"code": CAMDEN}}})
    assert again.get_json()["response"][ids.URL]["search"] == ""
    for forged in ({"properties": {"code": "E09999999"}}, {"properties": {"code": "E01000001"}}):
        refused = _sync(app, client, clicked, **{clicked: 3, f"{ids.MAP_AREAS['borough']}.clickData": forged})
        result = refused.get_json()["response"]
        assert result[ids.STATE_ERROR]["is_open"] is True and ids.URL not in result, forged
    for forged in ({"properties": {"code": ["E09000007"]}}, {"properties": {}}, None, "E09000007"):
        assert _sync(app, client, clicked, **{clicked: 4, f"{ids.MAP_AREAS['borough']}.clickData": forged}
                     ).status_code in (200, 204), forged


def test_a_tampered_link_shows_a_message_and_no_data(app, client):
    _login(client)
    response = _sync(app, client, f"{ids.URL}.search", **{f"{ids.URL}.search": "?borough=E09000007%27--&x=1"})
    result = response.get_json()["response"]
    assert result[ids.STATE_ERROR]["is_open"] is True
    assert "could not be read" in result[ids.STATE_ERROR]["children"]
    assert result[ids.DATA_STATE]["data"]["error"] and result[ids.DATA_STATE]["data"]["qs"] is None
    assert "SELECT" not in json.dumps(result) and "Traceback" not in json.dumps(result)


def test_density_tiles_need_login_and_refuse_tampered_filters(app, client, clean_data):
    seed_incidents(clean_data)
    assert client.get("/tiles/density/10/511/340.png").status_code == 401
    _login(client)
    # A viewer sees boroughs and above: the 250 m grid is finer than that (safestats.access).
    assert client.get("/tiles/density/10/511/340.png?from=2024-01-01&to=2024-12-31").status_code == 403
    client.get("/logout")
    upsert_user(get_engine(clean_data), "web.partner@web-test.example", PASSWORD, "Web Partner", "GLA",
                "partner_analyst")
    _login(client, "web.partner@web-test.example")
    tile = client.get("/tiles/density/10/511/340.png?from=2024-01-01&to=2024-12-31")
    assert tile.status_code == 200 and tile.data.startswith(b"\x89PNG") and tile.mimetype == "image/png"
    assert client.get("/tiles/density/10/511/340.png?borough=E09999999").status_code == 400
    assert client.get("/tiles/density/10/99999/340.png").status_code == 400
    assert client.get("/tiles/blank.png").status_code == 200


def test_the_map_sends_a_boundaries_url_once_and_the_url_serves_them(app, client, clean_data):
    seed_incidents(clean_data)
    assert client.get("/boundaries/borough.geojson").status_code == 401
    _login(client)
    state = {f"{ids.VIEW_STATE}.data": {"qs": "level=borough", "error": None}, f"{ids.MAP}.zoom": 10}
    fresh = _callback(app, client, ids.MAP_LEGEND, state, f"{ids.VIEW_STATE}.data").get_json()["response"]
    url = fresh[ids.MAP_AREAS["borough"]]["url"]
    assert url.startswith("/boundaries/borough.geojson?v=") and "data" not in fresh[ids.MAP_AREAS["borough"]]
    # Once the browser holds them (its hideout says so), only the colours travel.
    held = {**state, f"{ids.MAP_AREAS['borough']}.hideout": {"loaded": True}}
    again = _callback(app, client, ids.MAP_LEGEND, held, f"{ids.VIEW_STATE}.data").get_json()["response"]
    assert ids.MAP_AREAS["borough"] not in again or "url" not in again[ids.MAP_AREAS["borough"]]

    shapes = client.get(url, headers={"Accept-Encoding": "identity"})
    assert shapes.status_code == 200 and shapes.mimetype == "application/geo+json"
    assert json.loads(shapes.data) == queries.boundaries_geojson(get_engine(clean_data), "borough")
    assert "immutable" in shapes.headers["Cache-Control"] and "no-store" not in shapes.headers["Cache-Control"]
    zipped = client.get(url, headers={"Accept-Encoding": "gzip, deflate"})
    assert zipped.headers["Content-Encoding"] == "gzip" and gzip.decompress(zipped.data) == shapes.data
    assert client.get(url, headers={"If-None-Match": shapes.headers["ETag"]}).status_code == 304
    # An old version's URL gets today's shapes, revalidated each time rather than kept for a year.
    stale = client.get("/boundaries/borough.geojson?v=0000", headers={"Accept-Encoding": "identity"})
    assert stale.data == shapes.data and stale.headers["Cache-Control"] == "private, no-cache"
    assert client.get("/boundaries/ward.geojson").status_code == 404
    # A viewer's maps stop at boroughs (safestats.access): the finer shapes are refused them.
    assert client.get("/boundaries/lsoa.geojson").status_code == 403
    client.get("/logout")
    upsert_user(get_engine(clean_data), "web.partner@web-test.example", PASSWORD, "Web Partner", "GLA",
                "partner_analyst")
    _login(client, "web.partner@web-test.example")
    lsoas = json.loads(client.get("/boundaries/lsoa.geojson", headers={"Accept-Encoding": "identity"}).data)
    assert len(lsoas["features"]) == len(queries.boundaries_geojson(get_engine(clean_data), "lsoa")["features"]) > 0


def test_callbacks_check_the_login_themselves(app):
    # Bypass the request guard and call every registered server-side callback directly, logged out.
    from werkzeug.exceptions import Unauthorized

    dash_app = app.extensions["safestats_dash"]
    server_side = [cb for cb in dash_app.callback_map.values() if "callback" in cb]
    assert len(server_side) >= 10
    for cb in server_side:
        n_args = len(cb["inputs"]) + len(cb["state"])
        with app.test_request_context("/_dash-update-component", method="POST"):
            with pytest.raises(Unauthorized):
                cb["callback"].__wrapped__(*([None] * n_args))
