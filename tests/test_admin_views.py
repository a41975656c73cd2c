"""The admin rollup-views page through Flask's test client, on a real database: admins see every rollup with
its rows, size, last refresh and staleness, and can refresh one (with the form's CSRF token); every other
tier gets 403 on the page and on the refresh, an anonymous visitor never reaches it."""
from __future__ import annotations

import re
from datetime import date

import pytest

from bench.generate import generate_incidents
from dashapp import create_app
from dashapp.auth import upsert_user
from tests.login_helpers import sign_in
from db import get_engine
from safestats import rollups
from tests.conftest import query, truncate_data

PASSWORD = "a long test passphrase"
TIERS = ("viewer", "borough_analyst", "partner_analyst", "istv_analyst", "admin")


@pytest.fixture(scope="module")
def app(areas_loaded):
    engine = get_engine(areas_loaded)
    for tier in TIERS:
        upsert_user(engine, f"{tier}@views-test.example", PASSWORD, tier, "GLA", tier)
    server = create_app(areas_loaded)
    server.config.update(TESTING=True)
    return server


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def some_data(clean_data):
    generate_incidents(clean_data, 3_000, months=[date(2024, 1, 1), date(2024, 2, 1)], seed=3, log=lambda *a: None)
    rollups.refresh_rollups(clean_data, trigger="test")
    return clean_data


def _login(client, tier: str):
    response = sign_in(client, f"{tier}@views-test.example", PASSWORD)
    assert response.status_code == 302


@pytest.mark.parametrize("tier", [t for t in TIERS if t != "admin"])
def test_views_page_and_refresh_are_403_for_non_admins(client, tier):
    _login(client, tier)
    assert client.get("/admin/views").status_code == 403
    assert client.post("/admin/views/rollup_area_month/refresh").status_code == 403


def test_views_page_needs_a_login(client):
    response = client.get("/admin/views")
    assert response.status_code in (302, 401)
    assert client.post("/admin/views/rollup_area_month/refresh").status_code in (302, 401)


def test_admin_sees_every_view_and_refreshes_one(some_data, client):
    url = some_data
    _login(client, "admin")
    html = client.get("/admin/views").get_data(as_text=True)
    for view in rollups.ROLLUP_VIEWS:
        assert f'data-view="{view}"' in html
    rows = query(url, "SELECT count(*) FROM rollup_grid_month")[0][0]
    row = re.search(r'data-view="rollup_grid_month".*?</tr>', html, re.S).group(0)
    assert f"{rows:,}" in row and "fresh" in row and "2024: " in row

    # Without the form's CSRF token nothing is refreshed.
    [(last_id,)] = query(url, "SELECT max(id) FROM rollup_refreshes")
    assert client.post("/admin/views/rollup_grid_month/refresh").status_code == 400
    assert query(url, "SELECT count(*) FROM rollup_refreshes WHERE id > %s", (last_id,)) == [(0,)]

    csrf = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    response = client.post("/admin/views/rollup_grid_month/refresh", data={"csrf_token": csrf})
    assert response.status_code == 302
    refreshed = query(url, "SELECT family, trigger FROM rollup_refreshes WHERE id > %s ORDER BY id", (last_id,))
    # The view and its dependant (the 500 m grid), and the polygons' cell points rewritten with it, nothing
    # else, triggered by the admin. (every year with a partition: other tests may have left more than this one's)
    assert {f for f, _ in refreshed} == {"rollup_grid_month", "rollup_grid500_month", "incident_cell_points"}
    assert all("admin@views-test.example" in t for _, t in refreshed)
    assert "Refreshed rollup_grid_month" in client.get(response.headers["Location"]).get_data(as_text=True)

    assert client.post("/admin/views/no_such_view/refresh", data={"csrf_token": csrf}).status_code == 404
    truncate_data(url)
