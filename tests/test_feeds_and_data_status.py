"""The supplier feed API and the admin data-status pages through Flask's test client, on a real database.

Feed API: a missing, malformed, wrong or revoked token is 401 and another supplier's token is 403 (JSON
errors); a logged-in session without a token gets nothing; a good upload is loaded through the pipeline,
answers with the drop id and is filed under processed/, and the status endpoint reports that drop's rows
and quarantine reasons; a badly named file is refused, a bad header is a rejected drop. The `safestats
tokens` commands create (printing the token once), list and revoke. Data status: admins only (403 for every
other tier), late suppliers shown as late, and the quarantine CSV carries the reasons.
"""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from dashapp import create_app
from dashapp.auth import upsert_user
from db import get_engine
from safestats.feed_tokens import create_token, revoke_token
from safestats.supplier_status import supplier_status
from tests.conftest import REPO_ROOT, query
from tests.login_helpers import sign_in

pytestmark = pytest.mark.shared_data

OTHER_SUPPLIER = "feedtest_other"
PASSWORD = "a long test passphrase"
FILE = "2023-01-city-of-london-street.csv"
UPLOAD_URL = "/api/feeds/v1/police_uk/drops"


@pytest.fixture(scope="module")
def app(areas_loaded, tmp_path_factory):
    engine = get_engine(areas_loaded)
    for tier in ("viewer", "borough_analyst", "partner_analyst", "istv_analyst", "admin"):
        upsert_user(engine, f"{tier}@status-test.example", PASSWORD, tier, "GLA", tier)
    server = create_app(areas_loaded)
    server.config.update(TESTING=True, SAFESTATS_INCOMING=tmp_path_factory.mktemp("incoming"))
    return server


@pytest.fixture(scope="module")
def other_supplier(areas_loaded):
    """A second supplier, so a token can belong to someone else."""
    conn_sql = [f"""INSERT INTO suppliers VALUES ('{OTHER_SUPPLIER}', 'Feed test supplier', 10, 'day', '7 days',
                                                  'test', 'test') ON CONFLICT DO NOTHING"""]
    _execute(areas_loaded, *conn_sql)
    yield OTHER_SUPPLIER
    _execute(areas_loaded, f"DELETE FROM supplier_tokens WHERE supplier = '{OTHER_SUPPLIER}'",
             f"DELETE FROM drops WHERE supplier = '{OTHER_SUPPLIER}'",
             f"DELETE FROM suppliers WHERE code = '{OTHER_SUPPLIER}'")


def _execute(url: str, *statements: str) -> None:
    import psycopg2

    from db import libpq_dsn

    conn = psycopg2.connect(libpq_dsn(url))
    with conn, conn.cursor() as cur:
        for sql in statements:
            cur.execute(sql)
    conn.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def police_token(areas_loaded):
    row, token = create_token(get_engine(areas_loaded), "police_uk", "test upload")
    yield token
    revoke_token(get_engine(areas_loaded), row.id)


def _upload(client, token: str | None, content: bytes, name: str = FILE, url: str = UPLOAD_URL):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post(url, data={"file": (io.BytesIO(content), name)}, headers=headers,
                       content_type="multipart/form-data")


def _login(client, tier: str):
    response = sign_in(client, f"{tier}@status-test.example", PASSWORD)   # (with a TOTP code for istv and admin)
    assert response.status_code == 302


# -- the feed API ---------------------------------------------------------------------------------------------

def test_upload_refuses_missing_malformed_wrong_and_revoked_tokens(clean_data, client, shared_data):
    content = (shared_data / "police_uk" / FILE).read_bytes()
    row, revoked = create_token(get_engine(clean_data), "police_uk", "to revoke")
    revoke_token(get_engine(clean_data), row.id)
    _, good = create_token(get_engine(clean_data), "police_uk", "good")
    wrong_secret = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for token in (None, "", "not-a-token", wrong_secret, revoked, f"ssf_999999_{'x' * 43}"):
        response = _upload(client, token, content)
        assert response.status_code == 401, token
        assert response.is_json and "error" in response.get_json()
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # Basic credentials are not a bearer token.
    response = client.post(UPLOAD_URL, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401
    assert query(clean_data, "SELECT count(*) FROM drops") == [(0,)]


def test_upload_refuses_another_suppliers_token(clean_data, client, shared_data, other_supplier):
    _, token = create_token(get_engine(clean_data), other_supplier, "someone else")
    response = _upload(client, token, (shared_data / "police_uk" / FILE).read_bytes())
    assert response.status_code == 403
    assert other_supplier in response.get_json()["error"]
    assert client.get("/api/feeds/v1/police_uk/drops/1", headers={"Authorization": f"Bearer {token}"}).status_code == 403
    assert query(clean_data, "SELECT count(*) FROM drops") == [(0,)]


def test_a_logged_in_session_is_not_a_token(clean_data, client, shared_data):
    _login(client, "admin")
    response = _upload(client, None, (shared_data / "police_uk" / FILE).read_bytes())
    assert response.status_code == 401
    assert client.get("/api/feeds/v1/police_uk/drops/1").status_code == 401


def test_a_good_upload_returns_a_drop_id_and_the_status_endpoint_reports_it(clean_data, client, shared_data,
                                                                            police_token, app):
    content = (shared_data / "police_uk" / FILE).read_bytes()
    response = _upload(client, police_token, content, name=FILE)
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    drop_id = body["drop_id"]
    [(status, rows_read, rows_loaded, rows_quarantined)] = query(
        clean_data, "SELECT status, rows_read, rows_loaded, rows_quarantined FROM drops WHERE id = %s", (drop_id,))
    assert status == "loaded" and body["status"] == "loaded"
    assert response.headers["Location"] == f"{UPLOAD_URL}/{drop_id}"
    assert "Set-Cookie" not in response.headers

    report = client.get(f"{UPLOAD_URL}/{drop_id}", headers={"Authorization": f"Bearer {police_token}"})
    assert report.status_code == 200
    outcome = report.get_json()
    assert outcome["status"] == "loaded" and outcome["drop_id"] == drop_id
    assert outcome["rows"] == {"read": rows_read, "loaded": rows_loaded, "quarantined": rows_quarantined}
    assert rows_quarantined > 0 and outcome["rejection_reason"] is None
    reasons = {r["reason"]: r["rows"] for r in outcome["quarantine"]["reasons"]}
    assert sum(reasons.values()) == rows_quarantined
    assert reasons == dict(query(clean_data, "SELECT reason, count(*) FROM quarantine GROUP BY reason"))
    assert 0 < len(outcome["quarantine"]["first_lines"]) <= 5
    assert outcome["quarantine"]["first_lines"][0]["line_no"] == query(
        clean_data, "SELECT min(line_no) FROM quarantine")[0][0]

    # Filed away like a scheduled drop; the same content again is "skipped", pointing at the same drop.
    incoming = app.config["SAFESTATS_INCOMING"] / "police_uk"
    assert (incoming / "processed" / FILE).exists()
    again = _upload(client, police_token, content)
    assert again.status_code == 200 and again.get_json()["status"] == "skipped"
    assert again.get_json()["drop_id"] == drop_id
    assert query(clean_data, "SELECT count(*) FROM drops") == [(1,)]
    # The token's use is recorded.
    assert query(clean_data, "SELECT count(*) FROM supplier_tokens WHERE last_used_at IS NOT NULL "
                             "AND revoked_at IS NULL") >= [(1,)]


def test_a_rejected_upload_reports_the_reason(clean_data, client, shared_data, police_token):
    lines = (shared_data / "police_uk" / FILE).read_text().splitlines(keepends=True)
    content = (lines[0].replace("Crime type", "Offence") + "".join(lines[1:])).encode()
    response = _upload(client, police_token, content)
    assert response.status_code == 422
    body = response.get_json()
    assert body["status"] == "rejected" and "missing column(s) 'Crime type'" in body["rejection_reason"]
    report = client.get(body["status_url"], headers={"Authorization": f"Bearer {police_token}"}).get_json()
    assert report["status"] == "rejected" and report["rejection_reason"] == body["rejection_reason"]


def test_uploads_with_a_bad_name_or_no_file_are_refused(clean_data, client, police_token):
    response = _upload(client, police_token, b"Crime ID,Month\n", name="../../etc/passwd")
    assert response.status_code == 400 and "police_uk drops are named like" in response.get_json()["error"]
    response = client.post(UPLOAD_URL, headers={"Authorization": f"Bearer {police_token}"})
    assert response.status_code == 400 and "field named 'file'" in response.get_json()["error"]
    assert client.get(f"{UPLOAD_URL}/424242", headers={"Authorization": f"Bearer {police_token}"}).status_code == 404
    assert query(clean_data, "SELECT count(*) FROM drops") == [(0,)]


def test_an_oversized_upload_is_refused(clean_data, client, police_token, monkeypatch):
    from dashapp import feeds

    monkeypatch.setattr(feeds, "MAX_UPLOAD_BYTES", 1000)
    response = _upload(client, police_token, b"x" * 5000)
    assert response.status_code == 413 and response.is_json


def test_tokens_cli_creates_lists_and_revokes(clean_data, app, client, shared_data):
    env = dict(os.environ, DATABASE_URL=clean_data)

    def safestats(*args):
        result = subprocess.run([sys.executable, "-m", "safestats.cli", "tokens", *args], cwd=REPO_ROOT, env=env,
                                capture_output=True, text=True, timeout=120)
        return result

    created = safestats("create", "police_uk", "--label", "cli test")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    token_id = int(re.search(r"Token (\d+) for police_uk", created.stdout).group(1))
    assert token.startswith(f"ssf_{token_id}_")
    # Stored hashed only.
    assert query(clean_data, "SELECT count(*) FROM supplier_tokens WHERE token_hash = %s", (token,)) == [(0,)]
    listed = safestats("list")
    assert listed.returncode == 0 and "cli test" in listed.stdout and token not in listed.stdout

    content = (shared_data / "police_uk" / FILE).read_bytes()
    assert _upload(client, token, content, name="2023-02-city-of-london-street.csv").status_code != 401
    revoked = safestats("revoke", str(token_id))
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert _upload(client, token, content).status_code == 401
    assert "revoked" in safestats("list").stdout
    missing = safestats("create", "no_such_supplier")
    assert missing.returncode == 1 and "known suppliers: " in missing.stderr


# -- admin data status ------------------------------------------------------------------------------------------

STATUS_PAGES = ("/admin/data-status", "/admin/data-status/police_uk", "/admin/data-status/police_uk/drops/1/quarantine.csv")


@pytest.mark.parametrize("tier", ["viewer", "borough_analyst", "partner_analyst", "istv_analyst"])
def test_data_status_is_403_for_non_admins(client, tier):
    _login(client, tier)
    for path in STATUS_PAGES:
        assert client.get(path).status_code == 403, path


def test_data_status_needs_a_login(client):
    for path in STATUS_PAGES:
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].startswith("/login?next=")


def _load_one(url, shared_data):
    from loaders.pipeline import load_paths

    [result] = load_paths(url, [shared_data / "police_uk" / FILE], progress=False)
    return result


def test_admin_sees_last_drop_rows_location_quality_and_lateness(clean_data, client, shared_data):
    result = _load_one(clean_data, shared_data)
    _login(client, "admin")
    page = client.get("/admin/data-status").get_data(as_text=True)
    assert 'data-supplier="police_uk"' in page and FILE in page
    assert f"{result.rows_loaded:,}" in page and f"{result.rows_quarantined:,}" in page
    assert "on time" in page and "LATE" not in page

    detail = client.get("/admin/data-status/police_uk")
    assert detail.status_code == 200
    html = detail.get_data(as_text=True)
    assert 'id="location-quality"' in html and 'data-method="exact"' in html and "exact point" in html
    assert "100.0%" in html and "100 (high)" in html
    assert f"/admin/data-status/police_uk/drops/{result.drop_id}/quarantine.csv" in html

    # Two months and more after the last load, a monthly supplier is late.
    _execute(clean_data, "UPDATE drops SET loaded_at = now() - interval '2 months 1 day'")
    html = client.get("/admin/data-status/police_uk").get_data(as_text=True)
    assert "LATE" in html and "freshness-late" in html
    assert client.get("/admin/data-status/no_such_supplier").status_code == 404


def test_supplier_status_freshness_against_cadence(clean_data, shared_data):
    result = _load_one(clean_data, shared_data)
    engine = get_engine(clean_data)
    [(loaded_at,)] = query(clean_data, "SELECT loaded_at FROM drops WHERE id = %s", (result.drop_id,))
    status = supplier_status(engine, "police_uk", now=loaded_at + timedelta(days=20), grace=timedelta(days=7))
    assert status.freshness == "on time" and status.last_drop_id == result.drop_id
    assert (status.rows_loaded, status.rows_quarantined) == (result.rows_loaded, result.rows_quarantined)
    assert (status.last_drop_rows_loaded, status.live_drops, status.rejected_drops) == (result.rows_loaded, 1, 0)
    # A calendar month plus the grace, not 30 days: late only after that.
    due = status.due_by
    assert supplier_status(engine, "police_uk", now=due - timedelta(minutes=1), grace=timedelta(days=7)).late is False
    assert supplier_status(engine, "police_uk", now=due + timedelta(minutes=1), grace=timedelta(days=7)).late is True
    assert supplier_status(engine, "police_uk", now=due + timedelta(minutes=1),
                           grace=timedelta(days=7)).freshness == "late"


def test_supplier_without_drops_is_never_loaded(clean_data):
    status = supplier_status(get_engine(clean_data), "police_uk", now=datetime.now(timezone.utc))
    assert status.freshness == "never loaded" and status.last_drop_id is None and not status.late


def test_quarantine_csv_has_the_reasons(clean_data, client, shared_data):
    import csv

    result = _load_one(clean_data, shared_data)
    _login(client, "admin")
    response = client.get(f"/admin/data-status/police_uk/drops/{result.drop_id}/quarantine.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == result.rows_quarantined > 0
    expected = query(clean_data, "SELECT line_no, reason FROM quarantine WHERE drop_id = %s ORDER BY line_no",
                     (result.drop_id,))
    assert [(int(r["line_no"]), r["reason"]) for r in rows] == expected
    assert all(r["raw_line"] for r in rows)
    assert client.get(f"/admin/data-status/police_uk/drops/{result.drop_id + 99}/quarantine.csv").status_code == 404
