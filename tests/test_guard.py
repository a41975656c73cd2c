"""The registry of callbacks and endpoints, and the audit log it writes (dashapp.guard, safestats.audit).

Every rule in the Flask url_map and every callback in Dash's callback_map must be declared in the registry
(a route or callback added the plain way fails here, and is refused at run time). The audit log is checked
against the real database: the web role may only INSERT and SELECT, the chain verifies, and an edit made as
superuser behind the triggers' back is found by ``safestats audit verify``.
"""
from __future__ import annotations

import json

import psycopg2
import pytest
from dash import Input, Output

from dashapp import create_app, guard
from dashapp.auth import upsert_user
from db import get_engine, libpq_dsn, migrate
from safestats import audit
from safestats.cli import main as cli_main
from tests.conftest import TEST_DB_NAME, drop_database, make_database, query
from tests.test_web_app import PASSWORD, _callback, _login

ADMIN_EMAIL, VIEWER_EMAIL = "guard.admin@guard-test.example", "guard.viewer@guard-test.example"


@pytest.fixture(scope="module")
def app(areas_loaded):
    engine = get_engine(areas_loaded)
    upsert_user(engine, ADMIN_EMAIL, PASSWORD, "Guard Admin", "GLA", "admin")
    upsert_user(engine, VIEWER_EMAIL, PASSWORD, "Guard Viewer", "E09000007", "viewer")
    server = create_app(areas_loaded)
    server.config["TESTING"] = True
    return server


def _audit_rows(url, where="true", params=()):
    return query(url, f"""SELECT email, tier, kind, target, filter_state, rows_returned, exported, allowed, outcome
                          FROM audit_log WHERE {where} ORDER BY seq""", params)


def test_every_route_and_callback_is_in_the_registry(app):
    dash_app = app.extensions["safestats_dash"]
    assert guard.unregistered(app, dash_app) == []
    # The checks are real: Dash's JSON routes and the admin pages are declared as needing a login / admin.
    assert guard.rule_for_endpoint(app, "/_dash-layout").needs is guard.LOGIN
    assert guard.rule_for_endpoint(app, "/_dash-dependencies").needs is guard.LOGIN
    assert guard.rule_for_endpoint(app, "admin_status.index").needs is guard.ADMIN
    assert guard.rule_for_endpoint(app, "admin_audit.index").needs is guard.ADMIN
    server_side = [key for key, cb in dash_app.callback_map.items() if "callback" in cb]
    assert all(guard.callback_rules(dash_app)[key].needs is guard.LOGIN for key in server_side)


def test_a_route_or_callback_added_the_plain_way_is_caught_and_refused(areas_loaded):
    server = create_app(areas_loaded)
    server.config["TESTING"] = True
    dash_app = server.extensions["safestats_dash"]
    server.add_url_rule("/forgotten", "forgotten", lambda: "secret data")
    dash_app.callback(Output("forgotten-out", "children"), Input("forgotten-in", "value"))(lambda v: "secret data")
    missing = guard.unregistered(server, dash_app)
    assert any("/forgotten" in m for m in missing) and any("forgotten-out" in m for m in missing), missing

    client = server.test_client()
    upsert_user(get_engine(areas_loaded), ADMIN_EMAIL, PASSWORD, "Guard Admin", "GLA", "admin")
    _login(client, ADMIN_EMAIL)
    response = client.get("/forgotten")
    assert response.status_code == 403 and b"secret" not in response.data
    body = {"output": "forgotten-out.children", "outputs": {"id": "forgotten-out", "property": "children"},
            "inputs": [{"id": "forgotten-in", "property": "value", "value": 1}], "changedPropIds": ["forgotten-in.value"]}
    response = client.post("/_dash-update-component", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 403 and b"secret" not in response.data
    outcomes = _audit_rows(areas_loaded, "email = %s AND outcome = 'unregistered'", (ADMIN_EMAIL,))
    assert {r[3] for r in outcomes} >= {"forgotten", "forgotten-out.children"}
    assert all(r[7] is False for r in outcomes)


def test_a_panel_call_is_audited_with_user_tier_state_and_rows(app, clean_data):
    from tests.test_queries import seed_incidents
    from dashapp import ids

    seed_incidents(clean_data)
    client = app.test_client()
    _login(client, VIEWER_EMAIL)
    qs = "from=2024-01-01&to=2024-12-31"
    before = query(clean_data, "SELECT coalesce(max(seq), 0) FROM audit_log")[0][0]
    response = _callback(app, client, ids.CATEGORIES, {f"{ids.DATA_STATE}.data": {"qs": qs, "error": None}},
                         f"{ids.DATA_STATE}.data")
    assert response.status_code == 200
    rows = _audit_rows(clean_data, "seq > %s", (before,))
    assert rows == [(VIEWER_EMAIL, "viewer", "callback", "update_categories", qs, 1, False, True, "ok")]
    assert query(clean_data, "SELECT organisation FROM audit_log WHERE seq > %s", (before,)) == [("E09000007",)]


def test_a_cached_panel_call_reads_its_user_in_one_transaction_and_audits_in_one_statement(app, clean_data):
    """Every Dash callback is a request: under load each round trip queues for the CPU behind the others. A
    panel answered from the cache reads the session and its user in one transaction and writes its audit row
    in one more statement, with no scope settings (audit_log has no row-level security) and no ping."""
    from sqlalchemy import event

    from tests.test_queries import seed_incidents
    from dashapp import ids

    seed_incidents(clean_data)
    client = app.test_client()
    _login(client, VIEWER_EMAIL)
    inputs = {f"{ids.DATA_STATE}.data": {"qs": "from=2024-01-01&to=2024-12-31", "error": None}}
    assert _callback(app, client, ids.CATEGORIES, inputs, f"{ids.DATA_STATE}.data").status_code == 200
    engine = app.extensions["safestats_engine"]
    statements = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        statements.append(" ".join(statement.split())[:60])
    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert _callback(app, client, ids.CATEGORIES, inputs, f"{ids.DATA_STATE}.data").status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert [s.split()[0] for s in statements] == ["SELECT", "SELECT", "BEGIN;"], statements
    assert not any("safestats_set_scope" in s for s in statements), statements


def test_admin_pages_are_refused_to_other_tiers_and_the_refusal_is_audited(app, areas_loaded):
    client = app.test_client()
    _login(client, VIEWER_EMAIL)
    for path in ("/admin/audit", "/admin/data-status", "/admin/data-status/police_uk/drops/1/quarantine.csv"):
        assert client.get(path).status_code == 403, path
    denied = _audit_rows(areas_loaded, "email = %s AND NOT allowed", (VIEWER_EMAIL,))
    assert {r[3] for r in denied} >= {"admin_audit.index", "admin_status.index", "admin_status.quarantine_csv"}

    admin = app.test_client()
    _login(admin, ADMIN_EMAIL)
    page = admin.get(f"/admin/audit?email={VIEWER_EMAIL}&allowed=no&verify=1")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "admin_status.index" in html and "denied" in html
    assert "Hash chain verified" in html
    # The search itself is a data view: audited with how many rows it showed.
    [(_, tier, _, target, state, shown, *_)] = _audit_rows(areas_loaded, "target = 'admin_audit.index' AND allowed")[-1:]
    assert tier == "admin" and f"email={VIEWER_EMAIL}" in state and shown >= 3


@pytest.fixture
def own_database():
    """A database of its own: the tamper test breaks the chain for good."""
    url = make_database(TEST_DB_NAME + "_audit")
    migrate.upgrade(url)
    yield url
    drop_database(url)


def _verify_cli(url, monkeypatch) -> int:
    """``safestats audit verify`` against ``url`` (settings are cached per process: cleared around it)."""
    from safestats.config import get_settings

    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        return cli_main(["audit", "verify"])
    finally:
        monkeypatch.delenv("DATABASE_URL")
        get_settings.cache_clear()


def _as(url, sql, params=(), role=None, replica=False):
    conn = psycopg2.connect(libpq_dsn(url))
    try:
        with conn, conn.cursor() as cur:
            if role:
                cur.execute(f"SET ROLE {role}")
            if replica:  # what a superuser does to get past triggers
                cur.execute("SET session_replication_role = replica")
            cur.execute(sql, params)
    finally:
        conn.close()


def test_the_chain_verifies_and_the_web_role_can_only_append(own_database, capsys, monkeypatch):
    engine = get_engine(own_database)
    for i in range(5):
        audit.record(engine, user_id=i, email=f"u{i}@x.example", organisation="Ünïcode \"quoted\" org\n", tier="viewer",
                     kind="callback", target="update_map", filter_state=f"borough=E0900000{i}", rows_returned=i,
                     exported=i == 3, allowed=i != 4, outcome="ok")
    _as(own_database, "INSERT INTO audit_log (tier, kind, target, allowed, outcome) VALUES ('admin', 'job', "
                      "'retention', true, 'ok')", role="safestats_web")
    with pytest.raises(Exception, match="audit_log_kind_check"):   # a failed write raises (the caller fails)...
        audit.record(engine, user_id=None, email=None, organisation=None, tier="viewer", kind="bogus", target="x",
                     filter_state=None, rows_returned=None, exported=False, allowed=True, outcome="ok")
    for _ in range(engine.pool.size() + 1):   # ...and leaves no connection stuck in its failed transaction
        assert query(own_database, "SELECT count(*) FROM audit_log")[0][0] == 6
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    result = audit.verify(engine)
    assert result.ok and result.rows == 6, result.problems
    assert query(own_database, "SELECT array_agg(seq ORDER BY seq) FROM audit_log") == [([1, 2, 3, 4, 5, 6],)]

    for statement in ("UPDATE audit_log SET allowed = true", "DELETE FROM audit_log", "TRUNCATE audit_log"):
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            _as(own_database, statement, role="safestats_web")
        with pytest.raises(psycopg2.Error):   # the owner too, on the normal path
            _as(own_database, statement)
    assert query(own_database, "SELECT count(*) FROM audit_log") == [(6,)]

    assert _verify_cli(own_database, monkeypatch) == 0
    assert "Audit chain intact: 6 rows" in capsys.readouterr().out


def test_an_edit_made_as_superuser_is_detected(own_database, capsys, monkeypatch):
    engine = get_engine(own_database)
    for i in range(6):
        audit.record(engine, user_id=1, email="a@x.example", organisation="GLA", tier="partner_analyst",
                     kind="callback", target="update_points", filter_state="layer=points", rows_returned=10 + i,
                     exported=False, allowed=True, outcome="ok")
    assert audit.verify(engine).ok
    # Past the triggers, as superuser: hide what seq 3 returned, and remove seq 5.
    _as(own_database, "UPDATE audit_log SET rows_returned = 0 WHERE seq = 3", replica=True)
    _as(own_database, "DELETE FROM audit_log WHERE seq = 5", replica=True)
    result = audit.verify(engine)
    assert not result.ok
    assert any(p.startswith("seq 3: its content does not match") for p in result.problems), result.problems
    assert any(p.startswith("seq 6: expected seq 5") for p in result.problems), result.problems
    assert _verify_cli(own_database, monkeypatch) == 1
    assert "seq 3" in capsys.readouterr().err
