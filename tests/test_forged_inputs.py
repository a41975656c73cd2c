"""Forged inputs against every callback and every HTTP endpoint, for every tier (issue 7's "done when").

Dash callbacks are plain POST endpoints: a logged-in user can send any input to any of them, whatever the
page shows. This test walks ``app.callback_map`` x every tier x a set of forged filter states (another
borough, the A&E source, record-level layers, the finest area level, huge date ranges) through the same
harness as ``tests/test_web_app.py`` (requests built from the callback map), then every rule of the Flask
url_map x every tier, and checks that nothing above the tier comes back and that each call is audited.

The seed makes "above the tier" visible: counts that only exist when health records are added exactly
(Camden police + A&E = 214, ...), and incident points at coordinates that belong to one supplier and
borough each. Each check has its positive control: the tiers allowed to see a thing do get it, so the
test could fail.
"""
from __future__ import annotations

import json

import psycopg2
import pytest

from dashapp import create_app, guard
from dashapp.auth import upsert_user
from db import get_engine, libpq_dsn
from safestats import queries
from safestats.access import TIERS
from tests.conftest import query, refresh_after_seeding
from tests.test_queries import CAMDEN, WESTMINSTER
from tests.test_web_app import PASSWORD, _callback_by_key, _login

MONTH = "2024-03-{day:02d} 12:00+00"
# (supplier, access level, category, borough, count, lon, lat): one distinctive point per group.
GROUPS = {
    "police_camden": ("police_uk", 10, 1, CAMDEN, 211, -0.14301, 51.53901),
    "police_westminster": ("police_uk", 10, 1, WESTMINSTER, 137, -0.13501, 51.51201),
    "istv_camden": ("istv_ed", 20, 71, CAMDEN, 3, -0.15001, 51.54501),
    "las_westminster": ("las", 20, 70, WESTMINSTER, 53, -0.14001, 51.50501),
}
# Exact figures that exist only with health records added in: never shown to a tier without full health.
# (Chosen apart from the police-only counts the panels show, e.g. about 30 and 50 a weekday in the grid.)
EXACT_HEALTH_FIGURES = {211 + 3, 137 + 53, 211 + 137 + 3 + 53, 3 + 53, 53}
# Which groups' points each tier may receive (borough analysts are assigned Camden).
POINTS_ALLOWED = {"viewer": set(), "borough_analyst": {"police_camden"},
                  "partner_analyst": {"police_camden", "police_westminster"},
                  "istv_analyst": set(GROUPS), "admin": set(GROUPS)}
FULL_HEALTH = {"istv_analyst", "admin"}


def _email(tier: str) -> str:
    return f"forged.{tier}@forged-test.example"


def _seed(url: str) -> str:
    """Insert the groups (committed) and refresh the rollups; returns an LSOA code in Camden."""
    lsoa, msoa = query(url, "SELECT code, parent_code FROM areas WHERE level = 'lsoa' AND borough_code = %s "
                            "ORDER BY code LIMIT 1", (CAMDEN,))[0]
    wlsoa, wmsoa = query(url, "SELECT code, parent_code FROM areas WHERE level = 'lsoa' AND borough_code = %s "
                              "ORDER BY code LIMIT 1", (WESTMINSTER,))[0]
    rows = []
    for supplier, level, category, borough, n, lon, lat in GROUPS.values():
        l, m = (lsoa, msoa) if borough == CAMDEN else (wlsoa, wmsoa)
        rows += [(supplier, MONTH.format(day=1 + i % 28), category, lon, lat, lon, lat, l, m, borough, level)
                 for i in range(n)]
    conn = psycopg2.connect(libpq_dsn(url))
    with conn, conn.cursor() as cur:
        cur.execute("SELECT safestats_ensure_incident_partitions('2024-01-01', '2024-12-31')")
        cur.executemany("""
            INSERT INTO incidents (supplier, drop_id, occurred_at, time_precision, category_id, supplier_category,
                                   geom, longitude, latitude, location_precision, lsoa_code, msoa_code,
                                   borough_code, access_level)
            VALUES (%s, 1, %s, 'minute', %s, 'forged test',
                    ST_Transform(ST_SetSRID(ST_MakePoint(%s, %s), 4326), 27700), %s, %s, 'snap_point', %s, %s, %s, %s)
        """, rows)
    conn.close()
    refresh_after_seeding(url)
    return lsoa


def _forged_states(lsoa: str) -> list[str]:
    return [
        "layer=points&from=2024-03-01&to=2024-03-31",                       # record-level layer, all suppliers
        f"borough={WESTMINSTER}&layer=points,density&level=lsoa",           # another borough, finest level
        "supplier=istv_ed&layer=points",                                    # the A&E source
        f"supplier=istv_ed,las&borough={CAMDEN}&level=borough",             # health only, one borough
        "domain=health&layer=points&level=msoa",                            # the health domain, finer level
        f"lsoa={lsoa}&layer=points",                                        # an LSOA (below a viewer's level)
        "from=1900-01-01&to=2999-12-31&layer=points,density",               # a huge range
        "hours=0-23&dow=1,2,3,4,5,6,7&supplier=istv_ed&from=2024-03-02&to=2024-03-30",  # health by day and hour
    ]


@pytest.fixture(scope="module")
def forged_app(areas_loaded):
    engine = get_engine(areas_loaded)
    for tier in TIERS:
        upsert_user(engine, _email(tier), PASSWORD, f"Forged {tier}", "GLA", tier)
    server = create_app(areas_loaded)
    server.config["TESTING"] = True
    return server


@pytest.fixture
def camden_assigned(forged_app, areas_loaded):
    """Borough analysts are assigned Camden: a row of user_boroughs, which both the user loader and the
    database's row-level security read (a borough list the table does not hold counts for nothing)."""
    conn = psycopg2.connect(libpq_dsn(areas_loaded))
    with conn, conn.cursor() as cur:
        cur.execute("""INSERT INTO user_boroughs (user_id, borough_code)
                       SELECT id, %s FROM users WHERE lower(email) = lower(%s) ON CONFLICT DO NOTHING""",
                    (CAMDEN, _email("borough_analyst")))
    conn.close()


def _numbers(value, key=None, out=None) -> set:
    """Every count a response carries: figure x/y/z/text, table cells, map values, headline text."""
    out = set() if out is None else out
    if isinstance(value, dict):
        for k, v in value.items():
            _numbers(v, key if key == "values" else k, out)  # a map's values: {area code: value}
    elif isinstance(value, list):
        for v in value:
            _numbers(v, key, out)
    elif key in ("x", "y", "z", "text", "incidents", "count", "values", "children", "previous"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.add(value)
        elif isinstance(value, str) and value.replace(",", "").isdigit():
            out.add(int(value.replace(",", "")))
    return out


def _points(body) -> set:
    """The groups whose distinctive coordinates appear in a response (as point features or anywhere)."""
    text = json.dumps(body)
    return {name for name, (*_, lon, lat) in GROUPS.items() if f"{lon}, {lat}" in text or f"{lon},{lat}" in text}


def _inputs(spec: dict, qs: str) -> tuple[dict, str]:
    values = {}
    for dep in spec["inputs"] + spec["state"]:
        key = f"{dep['id']}.{dep['property']}"
        if dep["property"] == "data" and "state" in str(dep["id"]):
            values[key] = {"qs": qs, "error": None}
        elif key.endswith(".search"):
            values[key] = "?" + qs
        elif dep["property"] == "zoom":
            values[key] = 17
        elif dep["property"] == "bounds":
            values[key] = [[51.40, -0.40], [51.65, 0.10]]
    first = spec["inputs"][0]
    return values, f"{first['id']}.{first['property']}"


def test_every_callback_x_every_tier_x_forged_inputs(forged_app, clean_data, camden_assigned):
    lsoa = _seed(clean_data)
    queries.clear_caches()
    dash_app = forged_app.extensions["safestats_dash"]
    rules = guard.callback_rules(dash_app)
    server_side = {key: spec for key, spec in dash_app.callback_map.items() if "callback" in spec}
    seen_numbers: dict[str, set] = {tier: set() for tier in TIERS}
    seen_points: dict[str, set] = {tier: set() for tier in TIERS}
    calls = 0
    for tier in TIERS:
        client = forged_app.test_client()
        assert _login(client, _email(tier)).status_code == 302
        for key, spec in server_side.items():
            rule = rules[key]
            for qs in _forged_states(lsoa):
                values, changed = _inputs(spec, qs)
                before = query(clean_data, "SELECT coalesce(max(seq), 0) FROM audit_log")[0][0]
                response = _callback_by_key(forged_app, client, key, values, changed)
                calls += 1
                assert response.status_code in (200, 204), (tier, rule.target, qs, response.status_code)
                body = response.get_json() if response.status_code == 200 else {}
                seen_numbers[tier] |= _numbers(body)
                seen_points[tier] |= _points(body)
                audited = query(clean_data, "SELECT target, tier, filter_state, allowed FROM audit_log WHERE seq > %s",
                                (before,))
                if rule.audit:
                    assert audited == [(rule.target, tier, qs, True)], (tier, rule.target, qs, audited)
                else:
                    assert audited == [], (rule.target, audited)
    assert calls >= len(TIERS) * 10 * 8
    for tier in TIERS:
        assert seen_points[tier] <= POINTS_ALLOWED[tier], (tier, seen_points[tier] - POINTS_ALLOWED[tier])
        if tier not in FULL_HEALTH:
            assert not seen_numbers[tier] & EXACT_HEALTH_FIGURES, (tier, seen_numbers[tier] & EXACT_HEALTH_FIGURES)
    # Positive controls: the figures and points are there for the tiers that may see them.
    for tier in FULL_HEALTH:
        assert EXACT_HEALTH_FIGURES <= seen_numbers[tier], (tier, EXACT_HEALTH_FIGURES - seen_numbers[tier])
        assert seen_points[tier] == set(GROUPS)
    assert seen_points["borough_analyst"] == {"police_camden"}
    assert seen_points["partner_analyst"] == {"police_camden", "police_westminster"}
    assert {211, 137, 211 + 137} <= seen_numbers["viewer"], "police aggregates reach every tier"


def _endpoint_url(server, rule, qs: str) -> str:
    forged = {"supplier": "istv_ed", "drop_id": 1, "z": 14, "x": 8185, "y": 5447, "filename": "bootstrap.min.css",
              "path": "forged", "level": "lsoa", "package_name": "dash", "user_id": 1, "view_id": 1, "org_id": 1, "fingerprinted_path": "dash-renderer/build/dash_renderer.min.js"}
    adapter = server.url_map.bind("localhost")
    defaults = rule.defaults or {}   # e.g. an export's format, fixed by its URL
    url = adapter.build(rule.endpoint, {name: defaults[name] if name in defaults else forged[name]
                                        for name in rule.arguments}, method=next(iter(rule.methods - {"HEAD", "OPTIONS"})))
    return url + ("?" + qs if qs else "")


def test_every_http_endpoint_x_every_tier(forged_app, clean_data, camden_assigned):
    lsoa = _seed(clean_data)
    queries.clear_caches()
    admin_only = {rule.endpoint for rule in forged_app.url_map.iter_rules()
                  if guard.rule_for_endpoint(forged_app, rule.endpoint).needs is guard.ADMIN}
    assert {"admin_status.index", "admin_audit.index", "admin_status.quarantine_csv"} <= admin_only
    for tier in TIERS:
        client = forged_app.test_client()
        _login(client, _email(tier))
        for rule in forged_app.url_map.iter_rules():
            if "GET" not in rule.methods or rule.endpoint in ("auth.logout",):
                continue
            registered = guard.rule_for_endpoint(forged_app, rule.endpoint)
            for qs in ("", *_forged_states(lsoa)[:3]):
                before = query(clean_data, "SELECT coalesce(max(seq), 0) FROM audit_log")[0][0]
                response = client.get(_endpoint_url(forged_app, rule, qs))
                assert response.status_code < 500, (tier, rule.endpoint, qs, response.status_code)
                if rule.endpoint in admin_only and tier != "admin":
                    assert response.status_code == 403, (tier, rule.endpoint)
                if rule.endpoint in ("tiles.density_tile", "boundaries.level_geojson"):
                    # Grid cells and LSOA shapes are finer than a viewer's maps go.
                    assert (response.status_code == 403) == (tier == "viewer"), (tier, qs, response.status_code)
                text = response.get_data().decode("utf-8", "replace")
                # Only the record exports may carry points, and only those the tier may see.
                shown = {name for name, (*_, lon, _lat) in GROUPS.items() if f"{lon}" in text}
                allowed_points = POINTS_ALLOWED[tier] if rule.endpoint == "exports.records" else set()
                assert shown <= allowed_points, (tier, rule.endpoint, qs, shown)
                audited = query(clean_data, "SELECT target, tier, allowed FROM audit_log WHERE seq > %s", (before,))
                if registered.needs.bearer:
                    # The read API: a session cookie never authorises it (its own tests use tokens).
                    assert response.status_code == 401, (tier, rule.endpoint)
                    assert audited == [(rule.endpoint, "none", False)], (tier, rule.endpoint, audited)
                elif registered.audit and registered.needs.login:
                    assert [(t, ti) for t, ti, _ in audited] == [(rule.endpoint, tier)], (tier, rule.endpoint, audited)
                    assert audited[0][2] is (response.status_code < 400)
