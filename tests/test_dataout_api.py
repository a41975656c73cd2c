"""Exports and the read API (issue 8): the files of every tier equal the dashboard's numbers, suppression applied
where due; records only to the tiers that see them; personal API tokens (missing, wrong, revoked, expired, a
disabled account: 401), the per-token rate limit (429 with Retry-After), tier limits (403) and the audit.

The seed is ``tests/test_forged_inputs``'s: March 2024, police in Camden (211) and Westminster (137), A&E in
Camden (3: suppressed as "*" for tiers under disclosure control) and ambulance call-outs in Westminster
(53: shown as 55). Borough analysts are assigned Camden.
"""
from __future__ import annotations

import csv
import io
import psycopg2
import pytest

from dashapp import create_app
from dashapp.auth import load_user_by_id
from db import get_engine, libpq_dsn
from safestats import api_tokens, dataout, disclosure, queries
from safestats.access import TIERS, AccessRefused
from safestats.accounts import save_account
from safestats.filters import FilterState
from tests.conftest import query
from tests.login_helpers import sign_in
from tests.test_forged_inputs import GROUPS, POINTS_ALLOWED, _seed
from tests.test_queries import CAMDEN, WESTMINSTER

PASSWORD = "a long test passphrase"
MARCH = "from=2024-03-01&to=2024-03-31"
HEALTH = f"{MARCH}&supplier=istv_ed,las"
CONTROLLED = {"borough_analyst", "partner_analyst"}
RECORD_COUNTS = {"partner_analyst": 211 + 137, "istv_analyst": 211 + 137 + 3 + 53, "admin": 211 + 137 + 3 + 53}


def _email(tier: str) -> str:
    return f"dataout.{tier}@dataout-test.example"


@pytest.fixture(scope="module")
def seeded(areas_loaded):
    from tests.conftest import truncate_data

    truncate_data(areas_loaded)
    engine = get_engine(areas_loaded)
    for tier in TIERS:
        save_account(engine, email=_email(tier), display_name=f"Dataout {tier}", organisation="GLA", tier=tier,
                     active=True, password=PASSWORD, boroughs=[CAMDEN] if tier == "borough_analyst" else None)
    _seed(areas_loaded)
    queries.clear_caches()
    yield areas_loaded
    truncate_data(areas_loaded)


@pytest.fixture(scope="module")
def app(seeded):
    server = create_app(seeded)
    server.config["TESTING"] = True
    return server


def _user(app, tier):
    engine = app.extensions["safestats_engine"]
    uid = query(app.extensions["safestats_loader_engine"].url.render_as_string(hide_password=False),
                "SELECT id FROM users WHERE email = %s", (_email(tier),))[0][0]
    return load_user_by_id(engine, uid)


def _read_csv(text: str) -> tuple[list[str], list[dict]]:
    lines = text.splitlines()
    comments = [line for line in lines if line.startswith("# ")]
    declared = int(comments[0].split("SafeStats export: ")[1].split(" ")[0])
    assert declared == len(comments) and all(lines[i].startswith("# ") for i in range(declared))
    return comments, list(csv.DictReader(io.StringIO("\n".join(lines[declared:]))))


# ---- dataout against the dashboard's own functions -------------------------------------------------------------

@pytest.mark.parametrize("qs", [MARCH, HEALTH, f"{MARCH}&borough={CAMDEN}", f"{MARCH}&domain=health"])
def test_aggregates_equal_the_dashboard_for_every_tier(app, qs):
    engine = app.extensions["safestats_engine"]
    state = FilterState.from_query_string(qs)
    for tier in TIERS:
        user = _user(app, tier)
        aggs = dataout.aggregates(engine, state, user)
        head = queries.headline(engine, state, user)
        assert aggs.total == head.total, (tier, qs)
        by_category: dict[int, int | None] = {}
        for row in aggs.rows:
            by_category[row.category_id] = row.count
        dashboard = {c.category_id: c.incidents for c in queries.category_counts(engine, state, user)}
        if not aggs.controlled:
            assert sum(r.count for r in aggs.rows) == head.total, (tier, qs)
            assert sum(t.count for t in aggs.areas) == head.total
        # One area and one month here: each category cell is the dashboard's category bar.
        if aggs.level == "borough" and len({r.area_code for r in aggs.rows}) == 1:
            assert by_category == {k: v for k, v in dashboard.items() if v != 0}, (tier, qs)
        borough_values = queries.area_values(engine, state, "borough", user)
        for area in aggs.areas:
            if aggs.level == "borough" and area.code:
                assert area.count == borough_values.current.get(area.code), (tier, qs, area)


def test_health_aggregates_are_suppressed_for_controlled_tiers(app):
    engine = app.extensions["safestats_engine"]
    state = FilterState.from_query_string(HEALTH)
    for tier in TIERS:
        aggs = dataout.aggregates(engine, state, _user(app, tier))
        counts = {(r.area_code, r.category_id): r.count for r in aggs.rows}
        if tier == "viewer":
            assert counts == {} and aggs.total == 0      # no health at all
        elif tier in CONTROLLED:
            assert aggs.controlled
            assert counts == {(CAMDEN, 71): None, (WESTMINSTER, 70): 55}
            assert aggs.total == disclosure.count(56) == 55   # rounded after summing
            assert {t.code: t.count for t in aggs.areas} == {CAMDEN: None, WESTMINSTER: 55}
        else:
            assert counts == {(CAMDEN, 71): 3, (WESTMINSTER, 70): 53} and aggs.total == 56
    # Finer than a borough is refused for the controlled tiers, as on the dashboard.
    with pytest.raises(AccessRefused):
        dataout.aggregates(engine, state, _user(app, "partner_analyst"), level="msoa")
    with pytest.raises(AccessRefused):
        dataout.aggregates(engine, FilterState.from_query_string(MARCH), _user(app, "viewer"), level="lsoa")


def test_records_keyset_pages_and_refusals(app):
    engine = app.extensions["safestats_engine"]
    state = FilterState.from_query_string(f"{MARCH}&borough={CAMDEN}")
    seen, cursor = [], None
    while True:
        page = dataout.records(engine, state, _user(app, "borough_analyst"), cursor, limit=50)
        seen += [r["id"] for r in page.records]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == 211      # police in Camden, never the A&E records
    with pytest.raises(AccessRefused):             # a borough analyst outside their borough
        dataout.records(engine, FilterState.from_query_string(f"{MARCH}&borough={WESTMINSTER}"),
                        _user(app, "borough_analyst"))
    with pytest.raises(AccessRefused):             # no records at all for viewers
        dataout.records(engine, FilterState.from_query_string(MARCH), _user(app, "viewer"))
    with pytest.raises(AccessRefused):             # health records are above a partner analyst
        dataout.records(engine, FilterState.from_query_string(HEALTH), _user(app, "partner_analyst"))
    with pytest.raises(ValueError):
        dataout.decode_cursor("not-a-cursor")


# ---- the dashboard's export files ------------------------------------------------------------------------------

def _client(app, tier):
    client = app.test_client()
    assert sign_in(client, _email(tier), PASSWORD).status_code == 302
    return client


def test_export_files_of_every_tier(app, seeded):
    engine = app.extensions["safestats_engine"]
    for tier in TIERS:
        client = _client(app, tier)
        user = _user(app, tier)
        for qs in (MARCH, HEALTH):
            state = FilterState.from_query_string(qs)
            head = queries.headline(engine, state, user)
            response = client.get(f"/export/aggregates.csv?{qs}")
            assert response.status_code == 200 and response.mimetype == "text/csv", (tier, qs)
            comments, rows = _read_csv(response.get_data(as_text=True))
            text = "\n".join(comments)
            assert f"# tier: {tier}" in text, text
            assert "licence: " in text and ("freshness: " in text or (tier, qs) == ("viewer", HEALTH)), text
            assert f"filters: {state.to_query_string()}" in text
            assert f"total: {disclosure.label(head.total)}" in text
            counts = [r["count"] for r in rows]
            if tier in CONTROLLED and qs == HEALTH:
                assert sorted(counts) == ["*", "55"] and "disclosure: NHS HES/ECDS rule" in text
            elif qs == MARCH or tier not in ("viewer",):
                assert sum(float(c) for c in counts) == head.total, (tier, qs)
            geo = client.get(f"/export/aggregates.geojson?{qs}").get_json()
            assert geo["metadata"]["tier"] == tier
            by_code = {f["properties"]["code"]: f["properties"]["count"] for f in geo["features"]}
            assert len(by_code) == 33                          # every borough, for a map layer
            expected = queries.area_values(engine, state, "borough", user).current
            assert {k: v for k, v in by_code.items() if v} == {k: v for k, v in expected.items() if v}, (tier, qs)
        # Records: the tiers that see every record of the view; the rest get 403 with what to do.
        response = client.get(f"/export/records.csv?{MARCH}")
        if tier in RECORD_COUNTS:
            _, rows = _read_csv(response.get_data(as_text=True))
            assert len(rows) == RECORD_COUNTS[tier], tier
        else:
            assert response.status_code == 403, tier
        if tier == "borough_analyst":
            geo = client.get(f"/export/records.geojson?{MARCH}&borough={CAMDEN}").get_json()
            assert len(geo["features"]) == 211
            assert {f["properties"]["supplier"] for f in geo["features"]} == {"police_uk"}
    audited = query(seeded, "SELECT target, tier, exported, rows_returned FROM audit_log "
                            "WHERE target = 'exports.aggregates' AND allowed ORDER BY seq DESC LIMIT 1")
    assert audited and audited[0][2] is True and audited[0][3] == 33


def test_printable_summary(app):
    client = _client(app, "partner_analyst")
    page = client.get(f"/export/summary?{HEALTH}").get_data(as_text=True)
    assert "<svg" in page and "@page" in page and "<script" not in page
    assert 'id="summary-total">55<' in page and "Disclosure control" in page and "Open Government Licence" in page
    page = _client(app, "istv_analyst").get(f"/export/summary?{HEALTH}").get_data(as_text=True)
    assert 'id="summary-total">56<' in page
    assert client.get("/export/summary?borough=nowhere!").status_code == 400


# ---- personal API tokens and the read API ----------------------------------------------------------------------

def _token(app, tier, **kwargs) -> str:
    user = _user(app, tier)
    return api_tokens.create_token(app.extensions["safestats_engine"], user.id, f"test {tier}", **kwargs)[1]


def _api(app, path, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return app.test_client().get(path, headers=headers)


def test_api_refuses_missing_wrong_revoked_expired_and_disabled_tokens(app, seeded):
    engine = app.extensions["safestats_engine"]
    assert _api(app, "/api/v1/suppliers").status_code == 401
    assert _api(app, "/api/v1/suppliers").headers["WWW-Authenticate"].startswith("Bearer")
    assert _api(app, "/api/v1/suppliers", "ssa_1_" + "x" * 43).status_code == 401
    assert _api(app, "/api/v1/suppliers", "not a token").status_code == 401
    token = _token(app, "partner_analyst")
    assert _api(app, "/api/v1/suppliers", token).status_code == 200
    # A browser session never authorises the API.
    assert _client(app, "admin").get("/api/v1/suppliers").status_code == 401
    token_id = int(token.split("_")[1])
    api_tokens.revoke_token(engine, _user(app, "partner_analyst").id, token_id)
    assert _api(app, "/api/v1/suppliers", token).status_code == 401
    expired = _token(app, "partner_analyst")
    conn = psycopg2.connect(libpq_dsn(seeded))
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = %s",
                    (int(expired.split("_")[1]),))
    conn.close()
    assert _api(app, "/api/v1/suppliers", expired).status_code == 401
    # A disabled user's tokens stop at once; enabled again, they work again.
    token = _token(app, "viewer")
    loader = get_engine(seeded)
    save_account(loader, email=_email("viewer"), active=False)
    assert _api(app, "/api/v1/suppliers", token).status_code == 401
    save_account(loader, email=_email("viewer"), active=True)
    assert _api(app, "/api/v1/suppliers", token).status_code == 200
    # The token carries the user's tier at call time, not at the time it was made.
    assert _api(app, f"/api/v1/incidents?{MARCH}", token).status_code == 403
    save_account(loader, email=_email("viewer"), tier="partner_analyst")
    try:
        assert _api(app, f"/api/v1/incidents?{MARCH}", token).status_code == 200
    finally:
        save_account(loader, email=_email("viewer"), tier="viewer")
    assert _api(app, f"/api/v1/incidents?{MARCH}", token).status_code == 403
    denied = query(seeded, "SELECT target, tier, allowed, outcome FROM audit_log WHERE target = 'api_v1.suppliers' "
                           "ORDER BY seq")
    assert ("api_v1.suppliers", "none", False, "http 401") in denied
    assert ("api_v1.suppliers", "partner_analyst", True, "ok") in denied


def test_api_rate_limit_is_per_token_with_retry_after(app):
    token, other = _token(app, "viewer"), _token(app, "viewer")
    app.config["SAFESTATS_API_CALLS_PER_MINUTE"] = 3
    try:
        statuses = [_api(app, "/api/v1/suppliers", token).status_code for _ in range(5)]
        # (a minute boundary between the calls restarts the count: at most one extra window)
        assert statuses.count(429) >= 1 and statuses[:3] != [429] * 3
        limited = _api(app, "/api/v1/suppliers", token)
        if limited.status_code == 429:
            assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert _api(app, "/api/v1/suppliers", other).status_code == 200
    finally:
        app.config["SAFESTATS_API_CALLS_PER_MINUTE"] = 120


def test_api_tier_limits_and_numbers(app, seeded):
    viewer, borough, partner, istv = (_token(app, t) for t in
                                      ("viewer", "borough_analyst", "partner_analyst", "istv_analyst"))
    assert _api(app, f"/api/v1/incidents?{MARCH}", viewer).status_code == 403
    assert _api(app, f"/api/v1/aggregates?{MARCH}&level=msoa", viewer).status_code == 403
    assert _api(app, "/api/v1/areas?level=lsoa", viewer).status_code == 403
    assert len(_api(app, "/api/v1/areas", viewer).get_json()["features"]) == 33
    assert _api(app, f"/api/v1/aggregates?{MARCH}&borough=E09999999", viewer).status_code == 400
    assert _api(app, f"/api/v1/aggregates?{MARCH}&nonsense=1", viewer).status_code == 400
    assert _api(app, f"/api/v1/incidents?{MARCH}&cursor=bad", partner).status_code == 400
    body = _api(app, f"/api/v1/aggregates?{HEALTH}", partner).get_json()
    assert body["total"] == 55 and body["total_suppressed"] is False
    assert {(r["area_code"], r["count"], r["suppressed"]) for r in body["rows"]} == \
        {(CAMDEN, None, True), (WESTMINSTER, 55, False)}
    assert _api(app, f"/api/v1/aggregates?{HEALTH}", istv).get_json()["total"] == 56
    assert {s["code"] for s in _api(app, "/api/v1/suppliers", viewer).get_json()["suppliers"]}.isdisjoint(
        {"las", "istv_ed"})
    # Pages of records follow the cursor (and the Link header) to the end.
    seen, url = [], f"/api/v1/incidents?{MARCH}&borough={CAMDEN}&limit=100"
    while url:
        response = _api(app, url, borough)
        assert response.status_code == 200
        seen += [r["id"] for r in response.get_json()["records"]]
        link = response.headers.get("Link")
        url = link[link.index("/api/"):link.index(">")] if link else None
    assert len(set(seen)) == 211
    text = _api(app, f"/api/v1/incidents?{MARCH}&format=csv&limit=5000", partner).get_data(as_text=True)
    assert len(_read_csv(text)[1]) == 211 + 137
    seen_points = {name for name, (*_, lon, _lat) in GROUPS.items() if f"{lon}" in text}
    assert seen_points <= POINTS_ALLOWED["partner_analyst"] and seen_points
    audited = query(seeded, "SELECT tier, exported, rows_returned, filter_state FROM audit_log "
                            "WHERE target = 'api_v1.incidents' AND allowed ORDER BY seq DESC LIMIT 1")
    assert audited == [("partner_analyst", True, 211 + 137, MARCH)]


def test_account_page_makes_shows_once_and_revokes_tokens(app):
    client = _client(app, "borough_analyst")
    page = client.get("/account").get_data(as_text=True)
    csrf = page.split('name="csrf_token" value="')[1].split('"')[0]
    made = client.post("/account/tokens", data={"name": "R laptop", "expires": "", "csrf_token": csrf})
    assert made.status_code == 201
    token = made.get_data(as_text=True).split('id="token-value">')[1].split("<")[0]
    assert _api(app, "/api/v1/suppliers", token).status_code == 200
    listing = client.get("/account").get_data(as_text=True)
    assert "R laptop" in listing and token not in listing
    token_id = int(token.split("_")[1])
    assert client.post(f"/account/tokens/{token_id}/revoke", data={"csrf_token": csrf}).status_code == 302
    assert _api(app, "/api/v1/suppliers", token).status_code == 401
    assert client.post("/account/tokens", data={"name": "no csrf"}).status_code == 400
    # Someone else's token cannot be revoked from this account.
    other = _token(app, "viewer")
    assert client.post(f"/account/tokens/{int(other.split('_')[1])}/revoke",
                       data={"csrf_token": csrf}).status_code == 404
    assert _api(app, "/api/v1/suppliers", other).status_code == 200
