"""Organisations and user administration: the seeded organisations, the CLI, and the admin pages' permissions.

The migration seeds GLA, MOPAC, the 33 boroughs, the Met, City of London Police, BTP, LFB, TfL, LAS and
London's NHS trusts. The CLI adds, changes, disables and re-enables users and organisations. The admin
pages are checked as the browser would post them, forged fields included: an organisation admin sees and
changes only their own organisation's users, cannot grant an admin tier or move anyone out, and a tier above
the organisation's ceiling is refused for everyone; every form needs its CSRF token.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from db import get_engine
from safestats.accounts import AccountError, get_account, save_account
from tests.conftest import query
from tests.login_helpers import csrf_from as _csrf, sign_in
from tests.test_login_hardening import app, engine  # noqa: F401  (shared fixtures)

DOMAIN = "admin-test.example"
PASSWORD = "an admin test passphrase"


@pytest.fixture(autouse=True)
def forget(engine):
    def clean():
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM users WHERE email ILIKE :p"), {"p": f"%@{DOMAIN}"})
            conn.execute(text("DELETE FROM organisations WHERE code LIKE 'ADMINTEST%'"))
    clean()
    yield
    clean()


def _account(engine, name, organisation="GLA", tier="viewer", org_admin=False):
    return save_account(engine, email=f"{name}@{DOMAIN}", display_name=name, organisation=organisation, tier=tier,
                        org_admin=org_admin, password=PASSWORD)


def _signed_in(app, engine, account):
    """A test client signed in as ``account`` (with its TOTP code when the tier or org-admin role needs one)."""
    client = app.test_client()
    assert sign_in(client, account.email, PASSWORD).status_code == 302
    assert client.get("/_dash-layout").status_code == 200
    return client


def test_the_seeded_organisations(db_url):
    kinds = dict(query(db_url, "SELECT kind, count(*) FROM organisations WHERE kind <> 'other' GROUP BY kind"))
    assert kinds["borough"] == 33 and kinds["police"] == 3 and kinds["nhs_trust"] >= 15
    codes = {code for (code,) in query(db_url, "SELECT code FROM organisations")}
    assert {"GLA", "MOPAC", "MPS", "COLP", "BTP", "LFB", "TFL", "LAS", "E09000007", "RJ1"} <= codes
    assert query(db_url, "SELECT max_tier FROM organisations WHERE code = 'E09000007'") == [("borough_analyst",)]


def test_a_tier_above_the_organisations_ceiling_is_refused(engine):
    with pytest.raises(AccountError, match="at most the borough_analyst tier"):
        _account(engine, "camden-istv", organisation="E09000007", tier="istv_analyst")
    with pytest.raises(AccountError, match="Unknown organisation"):
        _account(engine, "nowhere", organisation="Ministry of Nowhere")
    assert _account(engine, "camden", organisation="London Borough of Camden", tier="borough_analyst").organisation == "E09000007"


def _safestats(*args):
    script = Path(sys.executable).with_name("safestats")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "safestats.cli"]
    return subprocess.run(command + list(args), capture_output=True, text=True, timeout=300)


def test_the_cli_adds_changes_disables_and_enables_users_and_organisations(engine, db_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", db_url)
    email = f"cli@{DOMAIN}"
    steps = [
        ("orgs", "add", "ADMINTEST1", "--name", "Admin test trust", "--kind", "nhs_trust", "--max-tier", "istv_analyst"),
        ("users", "add", email, "--organisation", "ADMINTEST1", "--tier", "partner_analyst", "--password", PASSWORD),
        ("users", "set", email, "--tier", "istv_analyst", "--org-admin"),
        ("users", "disable", email),
    ]
    for step in steps:
        result = _safestats(*step)
        assert result.returncode == 0, (step, result.stdout, result.stderr)
    account = get_account(engine, email=email)
    assert (account.organisation, account.tier, account.org_admin, account.active) == (
        "ADMINTEST1", "istv_analyst", True, False)
    assert _safestats("users", "enable", email).returncode == 0
    assert get_account(engine, email=email).active
    listing = _safestats("users", "list", "--organisation", "ADMINTEST1")
    assert email in listing.stdout and "org admin" in listing.stdout
    refused = _safestats("users", "set", email, "--tier", "admin")
    assert refused.returncode == 2 and "at most the istv_analyst tier" in refused.stderr
    common = _safestats("users", "set", email, "--password", "password1")
    assert common.returncode == 2 and "common passwords" in common.stderr
    assert _safestats("orgs", "disable", "ADMINTEST1").returncode == 0
    assert query(db_url, "SELECT active FROM organisations WHERE code = 'ADMINTEST1'") == [(False,)]
    assert "ADMINTEST1" in _safestats("orgs", "list").stdout


def test_an_organisation_admin_manages_only_their_own_organisations_users(app, engine):
    org_admin = _account(engine, "camden-admin", organisation="E09000007", tier="borough_analyst", org_admin=True)
    colleague = _account(engine, "camden-analyst", organisation="E09000007", tier="viewer")
    outsider = _account(engine, "croydon-analyst", organisation="E09000008", tier="viewer")
    client = _signed_in(app, engine, org_admin)

    listing = client.get("/admin/users").get_data(as_text=True)
    assert colleague.email in listing and outsider.email not in listing
    assert client.get(f"/admin/users/{outsider.id}").status_code == 403
    assert client.get("/admin/organisations").status_code == 403
    assert client.get("/admin/data-status").status_code == 403

    token = _csrf(client, f"/admin/users/{colleague.id}")
    form = {"csrf_token": token, "display_name": "Renamed", "tier": "borough_analyst", "active": "1"}
    assert client.post(f"/admin/users/{colleague.id}", data=form).status_code == 302
    assert get_account(engine, user_id=colleague.id).tier == "borough_analyst"
    # Forged fields: another organisation's user, an admin tier, org-admin rights, another organisation.
    assert client.post(f"/admin/users/{outsider.id}", data=form).status_code == 403
    assert client.post(f"/admin/users/{colleague.id}", data=dict(form, tier="admin")).status_code in (403, 422)
    client.post(f"/admin/users/{colleague.id}", data=dict(form, org_admin="1", organisation="GLA"))
    after = get_account(engine, user_id=colleague.id)
    assert (after.tier, after.org_admin, after.organisation) == ("borough_analyst", False, "E09000007")
    # New users land in the admin's own organisation whatever the form says.
    new = {"csrf_token": token, "email": f"new-camden@{DOMAIN}", "display_name": "New", "tier": "viewer",
           "active": "1", "password": "a brand new passphrase", "organisation": "GLA"}
    assert client.post("/admin/users/new", data=new).status_code == 302
    assert get_account(engine, email=f"new-camden@{DOMAIN}").organisation == "E09000007"
    # Disabling a colleague through the page ends their live session.
    colleague_client = _signed_in(app, engine, colleague)
    assert client.post(f"/admin/users/{colleague.id}", data=dict(form, active="")).status_code == 302
    assert colleague_client.get("/_dash-layout").status_code == 401


def test_forms_need_their_csrf_token_and_lower_tiers_get_403(app, engine):
    admin = _account(engine, "portal-admin", organisation="GLA", tier="admin")
    viewer = _account(engine, "plain-viewer", organisation="GLA", tier="viewer")
    client = _signed_in(app, engine, admin)
    no_token = client.post(f"/admin/users/{viewer.id}", data={"display_name": "x", "tier": "viewer", "active": ""})
    assert no_token.status_code == 400
    assert get_account(engine, user_id=viewer.id).active
    no_token = client.post("/admin/organisations/new", data={"code": "ADMINTEST9", "name": "x", "kind": "other",
                                                             "max_tier": "viewer", "active": "1"})
    assert no_token.status_code == 400
    viewer_client = _signed_in(app, engine, viewer)
    assert "navbar-admin" not in viewer_client.get("/_dash-layout").get_data(as_text=True)
    assert "navbar-admin" in client.get("/_dash-layout").get_data(as_text=True)
    for path in ("/admin/users", "/admin/users/new", f"/admin/users/{admin.id}", "/admin/organisations"):
        assert viewer_client.get(path).status_code == 403, path


def test_a_portal_admin_adds_an_organisation_and_a_user_and_resets_a_second_factor(app, engine):
    admin = _account(engine, "portal-admin2", organisation="GLA", tier="admin")
    client = _signed_in(app, engine, admin)
    token = _csrf(client, "/admin/organisations/new")
    response = client.post("/admin/organisations/new", data={"csrf_token": token, "code": "ADMINTEST2",
                                                             "name": "Admin test VRU", "kind": "authority",
                                                             "max_tier": "partner_analyst", "active": "1"})
    assert response.status_code == 302
    listing = client.get("/admin/organisations").get_data(as_text=True)
    assert "ADMINTEST2" in listing and "Saved Admin test VRU." in listing
    assert "Saved" not in client.get("/admin/organisations?saved=Saved+evil").get_data(as_text=True).split(
        "</header>", 1)[1].split("<table", 1)[0], "a link cannot put a message on the page"
    user = {"csrf_token": token, "email": f"vru@{DOMAIN}", "display_name": "VRU analyst", "tier": "istv_analyst",
            "organisation": "ADMINTEST2", "active": "1", "password": "a vru test passphrase"}
    refused = client.post("/admin/users/new", data=user)
    assert refused.status_code == 422 and "at most the partner_analyst tier" in refused.get_data(as_text=True)
    assert client.post("/admin/users/new", data=dict(user, tier="partner_analyst", org_admin="1")).status_code == 302
    vru = get_account(engine, email=f"vru@{DOMAIN}")
    assert (vru.organisation, vru.tier, vru.org_admin) == ("ADMINTEST2", "partner_analyst", True)

    assert get_account(engine, user_id=admin.id).second_factor_enrolled
    other_admin = _account(engine, "portal-admin3", organisation="GLA", tier="admin")
    other_client = _signed_in(app, engine, other_admin)
    assert client.post(f"/admin/users/{other_admin.id}/reset-second-factor", data={"csrf_token": token}).status_code == 302
    assert not get_account(engine, user_id=other_admin.id).second_factor_enrolled
    assert other_client.get("/_dash-layout").status_code == 401, "a reset ends the user's sessions"


def test_demo_totp_prints_the_demo_logins_current_code(engine, db_url, monkeypatch):
    from safestats.demo_run import DEMO_EMAIL
    from safestats.login_security import matching_totp_step, pending_totp_secret

    monkeypatch.setenv("DATABASE_URL", db_url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM users WHERE email = :e"), {"e": DEMO_EMAIL})
    try:
        demo = save_account(engine, email=DEMO_EMAIL, organisation="GLA", tier="admin", password=PASSWORD)
        before = _safestats("demo", "totp")
        assert before.returncode == 1 and "sign in with its password first" in before.stderr
        secret = pending_totp_secret(engine, demo.id)   # what the first sign-in's password step does
        after = _safestats("demo", "totp")
        assert after.returncode == 0, after.stderr
        assert matching_totp_step(secret, after.stdout.strip()) is not None
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM users WHERE email = :e"), {"e": DEMO_EMAIL})


def test_the_migration_keeps_every_users_organisation_both_ways():
    import uuid

    from db import migrate
    from tests.conftest import drop_database, make_database

    url = make_database(f"safestats_test_orgs_{uuid.uuid4().hex[:8]}")
    try:
        migrate.upgrade(url, "0007_feeds")
        conn = get_engine(url)
        with conn.begin() as c:
            for email, organisation in (("a@x.example", "mopac"), ("b@x.example", "London Borough of Camden"),
                                        ("c@x.example", "Camden Council community safety"),
                                        ("d@x.example", "Camden Council community safety")):
                c.execute(text("INSERT INTO users (email, display_name, organisation, password_hash) "
                               "VALUES (:e, :e, :o, 'x')"), {"e": email, "o": organisation})
        migrate.upgrade(url, "0011")
        rows = query(url, "SELECT u.email, o.code, o.kind FROM users u JOIN organisations o ON o.id = u.organisation_id "
                          "ORDER BY u.email")
        assert rows == [("a@x.example", "MOPAC", "authority"), ("b@x.example", "E09000007", "borough"),
                        ("c@x.example", "Camden_Council_community_safety", "other"),
                        ("d@x.example", "Camden_Council_community_safety", "other")]
        migrate.downgrade(url, "0007_feeds")
        assert query(url, "SELECT email, organisation FROM users ORDER BY email") == [
            ("a@x.example", "MOPAC"), ("b@x.example", "E09000007"), ("c@x.example", "Camden Council community safety"),
            ("d@x.example", "Camden Council community safety")]
    finally:
        get_engine(url).dispose()
        drop_database(url)


def test_an_admin_assigns_a_borough_analysts_boroughs(app, engine, areas_loaded):
    """The boroughs a borough analyst sees record by record: set on the account page (or the CLI), read by the
    user loader on the next request, which the policy and the database's row-level security both use."""
    from dashapp.auth import load_user_by_id
    from safestats.access import policy_for

    admin = _account(engine, "boroughs-admin", tier="admin")
    analyst = _account(engine, "camden-boroughs", organisation="E09000007", tier="borough_analyst")
    client = _signed_in(app, engine, admin)
    token = _csrf(client, f"/admin/users/{analyst.id}")
    form = {"csrf_token": token, "display_name": "Camden analyst", "tier": "borough_analyst", "active": "1",
            "organisation": "E09000007", "boroughs": "e09000007, E09000033"}
    assert client.post(f"/admin/users/{analyst.id}", data=form).status_code == 302
    assert get_account(engine, user_id=analyst.id).boroughs == ("E09000007", "E09000033")
    assert 'value="E09000007, E09000033"' in client.get(f"/admin/users/{analyst.id}").get_data(as_text=True)
    loaded = load_user_by_id(engine, analyst.id)
    assert policy_for(loaded).record_boroughs == frozenset({"E09000007", "E09000033"})
    # A form without the field keeps them; an unknown code is refused and changes nothing.
    del form["boroughs"]
    assert client.post(f"/admin/users/{analyst.id}", data=form).status_code == 302
    assert get_account(engine, user_id=analyst.id).boroughs == ("E09000007", "E09000033")
    assert client.post(f"/admin/users/{analyst.id}", data=dict(form, boroughs="E09999999")).status_code == 422
    with pytest.raises(AccountError, match="Unknown borough"):
        save_account(engine, email=analyst.email, boroughs=["E09999999"])
    assert get_account(engine, user_id=analyst.id).boroughs == ("E09000007", "E09000033")
    save_account(engine, email=analyst.email, boroughs=[])
    assert get_account(engine, user_id=analyst.id).boroughs == ()
