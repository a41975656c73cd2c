"""Saved views against the real PostGIS: sharing rules, owner-only changes, row-level security for the web
role, the reduction of a view to what its opener may see, and "as at" views keeping their numbers.

Everything runs through the web engine (the role ``safestats_web`` the portal connects as), so the
database's policies apply as in production; the RLS tests also go around the module, writing SQL as the web
role with another user's scope, to show the second lock holds on its own. The "as at" test loads demo drops
through the real loader (``loaders.pipeline.load_paths``) and takes its expected numbers from SQL on the
raw ``incidents`` table.
"""
from __future__ import annotations

from datetime import date, datetime, timezone
from types import SimpleNamespace

import psycopg2
import pytest
from sqlalchemy import text

from dashapp.auth import load_user_by_id
from db import get_engine, get_web_engine, libpq_dsn
from safestats import db_scope, queries, saved_views
from safestats.accounts import save_account
from safestats.filters import FilterState
from safestats.saved_views import NotOwner, ViewError, ViewNotFound
from tests.conftest import query
from tests.test_database_access import set_scope, web_connect

CAMDEN, WESTMINSTER = "E09000007", "E09000033"
PASSWORD = "saved views test passphrase"


def _account(url: str, name: str, organisation: str, tier: str, boroughs=()):
    engine = get_engine(url)
    account = save_account(engine, email=f"{name}@saved-views.test", display_name=name.title(),
                           organisation=organisation, tier=tier, password=PASSWORD, active=True,
                           boroughs=list(boroughs) if boroughs else None)
    return load_user_by_id(engine, account.id)


@pytest.fixture(scope="module")
def people(areas_loaded):
    """An owner (GLA partner analyst), a GLA viewer and ISTV analyst, a Camden borough analyst (Camden's
    records only) and a Met partner analyst (another organisation)."""
    made = {
        "owner": _account(areas_loaded, "owner", "GLA", "partner_analyst"),
        "viewer": _account(areas_loaded, "viewer", "GLA", "viewer"),
        "istv": _account(areas_loaded, "istv", "GLA", "istv_analyst"),
        "camden": _account(areas_loaded, "camden", CAMDEN, "borough_analyst", [CAMDEN]),
        "met": _account(areas_loaded, "met", "MPS", "partner_analyst"),
    }
    yield SimpleNamespace(**made)
    conn = psycopg2.connect(libpq_dsn(areas_loaded))
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM users WHERE email LIKE '%%@saved-views.test'")
    conn.close()


@pytest.fixture
def web(areas_loaded, people):
    # Reference data (areas, taxonomy) is cached per process: start from this database's own, whatever
    # earlier test modules loaded and cached.
    queries.clear_caches()
    engine = get_web_engine(areas_loaded)
    yield engine
    conn = psycopg2.connect(libpq_dsn(areas_loaded))
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM saved_views")
    conn.close()


def _names(views) -> list[str]:
    return [v.name for v in views]


# ---- sharing and owner-only changes ------------------------------------------------------------------------

def test_a_view_is_seen_by_its_owner_and_those_it_is_shared_with_only(web, people):
    state = FilterState(borough_code=CAMDEN, map_layers=("density",), zoom=12.0, centre=(51.54, -0.14))
    view = saved_views.save_view(web, people.owner, "  Camden   density ", "Knife crime watch", state)
    assert (view.name, view.description, view.state, view.as_at) == ("Camden density", "Knife crime watch", state, None)
    assert _names(saved_views.list_views(web, people.owner)[0]) == ["Camden density"]
    for other in (people.viewer, people.istv, people.camden, people.met):
        assert saved_views.list_views(web, other) == ([], []), "not shared with anyone yet"
        with pytest.raises(ViewNotFound):
            saved_views.get_view(web, other, view.id)

    # Named colleague, then the Met as an organisation, then every borough analyst.
    saved_views.set_shares(web, people.owner, view.id, user_ids=[people.viewer.id])
    assert _names(saved_views.list_views(web, people.viewer)[1]) == ["Camden density"]
    assert saved_views.list_views(web, people.met) == ([], [])
    view = saved_views.set_shares(web, people.owner, view.id, user_ids=[people.viewer.id],
                                  organisation_ids=[_org_id(web, "MPS")], tiers=["borough_analyst"])
    assert {(s.kind, s.label) for s in view.shares} == {
        ("user", "Viewer"), ("organisation", "Metropolitan Police Service"), ("tier", "borough_analyst")}
    for recipient in (people.viewer, people.met, people.camden):
        mine, shared = saved_views.list_views(web, recipient)
        assert (mine, _names(shared)) == ([], ["Camden density"]), recipient.email
        assert shared[0].owner_name == "Owner"
    assert saved_views.list_views(web, people.istv) == ([], []), "an ISTV analyst of GLA is none of them"
    # A recipient sees the shares naming them, not the owner's whole list.
    assert {s.kind for s in saved_views.get_view(web, people.met, view.id).shares} == {"organisation"}

    # Unsharing takes it away again.
    saved_views.set_shares(web, people.owner, view.id, tiers=["borough_analyst"])
    assert saved_views.list_views(web, people.viewer) == ([], [])
    assert saved_views.list_views(web, people.met) == ([], [])


def _org_id(engine, code: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT id FROM organisations WHERE code = :c"), {"c": code}).scalar_one()


def test_only_the_owner_renames_updates_deletes_or_shares_and_anyone_who_sees_it_duplicates(web, people):
    view = saved_views.save_view(web, people.owner, "Westminster", "", FilterState(borough_code=WESTMINSTER))
    saved_views.set_shares(web, people.owner, view.id, user_ids=[people.viewer.id])
    newer = FilterState(borough_code=WESTMINSTER, themes=("weapon",))
    for attempt in (lambda: saved_views.rename_view(web, people.viewer, view.id, "Mine now"),
                    lambda: saved_views.update_view(web, people.viewer, view.id, newer),
                    lambda: saved_views.delete_view(web, people.viewer, view.id),
                    lambda: saved_views.set_shares(web, people.viewer, view.id, tiers=["viewer"])):
        with pytest.raises(NotOwner):
            attempt()
    for attempt in (lambda: saved_views.rename_view(web, people.met, view.id, "Mine now"),
                    lambda: saved_views.delete_view(web, people.met, view.id),
                    lambda: saved_views.duplicate_view(web, people.met, view.id)):
        with pytest.raises(ViewNotFound):   # not even shared with them: as if it did not exist
            attempt()
    assert saved_views.get_view(web, people.owner, view.id).query == f"borough={WESTMINSTER}"

    copy = saved_views.duplicate_view(web, people.viewer, view.id)
    assert (copy.owner_id, copy.name, copy.state, copy.shares) == (people.viewer.id, "Copy of Westminster",
                                                                   view.state, ())
    saved_views.rename_view(web, people.viewer, copy.id, "My Westminster")
    assert _names(saved_views.list_views(web, people.viewer)[0]) == ["My Westminster"]

    renamed = saved_views.rename_view(web, people.owner, view.id, "Westminster knives", "with the weapon theme")
    updated = saved_views.update_view(web, people.owner, view.id, newer)
    assert (renamed.name, renamed.description, updated.state) == ("Westminster knives", "with the weapon theme", newer)
    assert updated.updated_at >= updated.created_at
    saved_views.delete_view(web, people.owner, view.id)
    assert _names(saved_views.list_views(web, people.viewer)[1]) == []
    assert _names(saved_views.list_views(web, people.viewer)[0]) == ["My Westminster"], "the copy is the viewer's"


def test_bad_names_and_share_targets_are_refused_with_a_reason(web, people):
    with pytest.raises(ViewError, match="name"):
        saved_views.save_view(web, people.owner, "   ", "", FilterState())
    with pytest.raises(ViewError, match="at most"):
        saved_views.save_view(web, people.owner, "x" * 121, "", FilterState())
    view = saved_views.save_view(web, people.owner, "London", "", FilterState())
    with pytest.raises(ViewError, match="own organisation"):   # the Met analyst is not a GLA colleague
        saved_views.set_shares(web, people.owner, view.id, user_ids=[people.met.id])
    with pytest.raises(ViewError, match="tier"):
        saved_views.set_shares(web, people.owner, view.id, tiers=["superuser"])
    assert saved_views.get_view(web, people.owner, view.id).shares == ()
    choices = saved_views.share_choices(web, people.owner)
    assert {label.split(" (")[0] for _, label in choices.users} >= {"Viewer", "Istv"}
    assert "Met" not in {label.split(" (")[0] for _, label in choices.users}


# ---- the database's own lock: row-level security for the web role -----------------------------------------

def test_row_level_security_lets_the_web_role_read_only_visible_views_and_change_only_its_own(web, people,
                                                                                            areas_loaded):
    view = saved_views.save_view(web, people.owner, "Owner's", "", FilterState())
    shared = saved_views.save_view(web, people.owner, "Shared", "", FilterState())
    saved_views.set_shares(web, people.owner, shared.id, user_ids=[people.viewer.id])

    conn = web_connect(areas_loaded)
    try:
        with conn.cursor() as cur:
            set_scope(cur, people.viewer)
            cur.execute("SELECT name FROM saved_views ORDER BY name")
            assert cur.fetchall() == [("Shared",)]
            cur.execute("SELECT count(*) FROM saved_view_shares")
            assert cur.fetchone() == (1,), "only the share naming the viewer"
            cur.execute("UPDATE saved_views SET name = 'taken' WHERE id IN (%s, %s)", (view.id, shared.id))
            assert cur.rowcount == 0
            cur.execute("DELETE FROM saved_views WHERE id IN (%s, %s)", (view.id, shared.id))
            assert cur.rowcount == 0
            cur.execute("DELETE FROM saved_view_shares")
            assert cur.rowcount == 0
        conn.commit()
        for sql, params in (
                ("INSERT INTO saved_views (owner_id, name, state) VALUES (%s, 'forged', '')", (people.owner.id,)),
                ("INSERT INTO saved_view_shares (view_id, user_id) VALUES (%s, %s)", (view.id, people.viewer.id)),
                ("UPDATE saved_views SET owner_id = %s WHERE id = %s", (people.viewer.id, shared.id))):
            with conn.cursor() as cur:
                set_scope(cur, people.viewer)
                with pytest.raises(psycopg2.Error, match="row-level security|permission denied"):
                    cur.execute(sql, params)
            conn.rollback()
        with conn.cursor() as cur:   # no scope at all: nothing
            cur.execute("SELECT count(*) FROM saved_views")
            assert cur.fetchone() == (0,)
        conn.rollback()
        with conn.cursor() as cur:   # the positive control: the owner's own scope changes its own view
            set_scope(cur, people.owner)
            cur.execute("UPDATE saved_views SET name = 'renamed in SQL' WHERE id = %s", (view.id,))
            assert cur.rowcount == 1
            cur.execute("SELECT count(*) FROM saved_views")
            assert cur.fetchone() == (2,)
        conn.rollback()
    finally:
        conn.close()
    assert query(areas_loaded, "SELECT name FROM saved_views WHERE id = %s", (shared.id,)) == [("Shared",)]


# ---- reducing a view to what its opener may see -------------------------------------------------------------

def _lsoa(url: str, borough: str) -> tuple[str, str]:
    return query(url, "SELECT code, parent_code FROM areas WHERE level = 'lsoa' AND borough_code = %s "
                      "ORDER BY code LIMIT 1", (borough,))[0]


POLYGON = ((-0.15, 51.53), (-0.13, 51.53), (-0.13, 51.545), (-0.15, 51.545))


def test_reduce_state_takes_out_what_a_viewer_may_not_see_and_says_what(web, people, areas_loaded):
    lsoa, msoa = _lsoa(areas_loaded, CAMDEN)
    state = FilterState(suppliers=("police_uk", "istv_ed"), borough_code=CAMDEN, msoa_code=msoa, lsoa_code=lsoa,
                        map_level="lsoa", map_layers=("density", "points"), hotspot="gi_grid", themes=("weapon",),
                        date_from=date(2024, 1, 1), date_to=date(2024, 6, 30))
    reduced = saved_views.reduce_state(web, state, people.viewer)
    assert reduced.state == FilterState(suppliers=("police_uk",), borough_code=CAMDEN, map_level="borough",
                                        themes=("weapon",), date_from=date(2024, 1, 1), date_to=date(2024, 6, 30))
    note = reduced.note
    for words in ("emergency department", "LSOA selection", "MSOA selection", "density layer", "hotspot layer",
                  "LSOA map level", "Incident points"):
        assert words in note, words
    # What is left is exactly what the dashboard shows a viewer without a refusal.
    assert queries.records_refusal(web, reduced.state, people.viewer) is None
    queries.headline(web, reduced.state, people.viewer)
    queries.area_values(web, reduced.state, "borough", people.viewer)


def test_reduce_state_leaves_a_view_the_opener_may_see_whole(web, people, areas_loaded):
    lsoa, msoa = _lsoa(areas_loaded, CAMDEN)
    state = FilterState(suppliers=("police_uk", "istv_ed"), borough_code=CAMDEN, msoa_code=msoa, lsoa_code=lsoa,
                        map_layers=("density", "points"), polygon=POLYGON, hours=(18, 23))
    reduced = saved_views.reduce_state(web, state, people.istv)
    assert (reduced.state, reduced.removed, reduced.note) == (state, (), None)


def test_reduce_state_keeps_health_alone_and_coarse_for_tiers_under_disclosure_control(web, people, areas_loaded):
    lsoa, msoa = _lsoa(areas_loaded, CAMDEN)
    mixed = FilterState(suppliers=("police_uk", "istv_ed"), borough_code=CAMDEN)
    reduced = saved_views.reduce_state(web, mixed, people.owner)
    assert reduced.state == FilterState(suppliers=("police_uk",), borough_code=CAMDEN)
    assert "only on its own" in reduced.note

    health = FilterState(suppliers=("istv_ed", "las"), borough_code=CAMDEN, msoa_code=msoa, hours=(18, 23),
                         days=(5, 6), map_level="msoa", date_from=date(2024, 1, 10), date_to=date(2024, 3, 20))
    reduced = saved_views.reduce_state(web, health, people.owner)
    assert reduced.state == FilterState(suppliers=("istv_ed", "las"), borough_code=CAMDEN, map_level="borough",
                                        date_from=date(2024, 1, 1), date_to=date(2024, 3, 31))
    assert "whole months" in reduced.note and "time of day" in reduced.note


def test_reduce_state_removes_the_health_domain_where_health_is_not_shown(web, people):
    state = FilterState(domains=("health", "crime"), borough_code=CAMDEN)
    for user, why in ((people.viewer, "not available"), (people.owner, "only on its own")):
        reduced = saved_views.reduce_state(web, state, user)
        assert reduced.state == FilterState(domains=("crime",), borough_code=CAMDEN)
        assert "health domain" in reduced.note and why in reduced.note
    health_only = FilterState(domains=("health",), borough_code=CAMDEN)
    assert saved_views.reduce_state(web, health_only, people.owner).removed == (), "health alone, by borough"
    assert saved_views.reduce_state(web, health_only, people.istv).removed == ()


def test_reduce_state_drops_record_level_filters_outside_a_borough_analysts_boroughs(web, people, areas_loaded):
    lsoa, msoa = _lsoa(areas_loaded, WESTMINSTER)
    state = FilterState(suppliers=("police_uk",), borough_code=WESTMINSTER, msoa_code=msoa, lsoa_code=lsoa,
                        located_at_least="exact", date_from=date(2024, 2, 3), date_to=date(2024, 2, 17),
                        map_layers=("points",))
    assert queries.records_refusal(web, state, people.camden) is not None
    reduced = saved_views.reduce_state(web, state, people.camden)
    assert reduced.state == FilterState(suppliers=("police_uk",), borough_code=WESTMINSTER, msoa_code=msoa,
                                        lsoa_code=lsoa, date_from=date(2024, 2, 1), date_to=date(2024, 2, 29),
                                        map_layers=("points",))
    assert "location quality" in reduced.note and "whole months" in reduced.note
    assert queries.records_refusal(web, reduced.state, people.camden) is None
    # In their own borough the same filters are records they may see: nothing is taken out.
    own_lsoa, own_msoa = _lsoa(areas_loaded, CAMDEN)
    own = FilterState(borough_code=CAMDEN, msoa_code=own_msoa, lsoa_code=own_lsoa, located_at_least="exact",
                      date_from=date(2024, 2, 3), date_to=date(2024, 2, 17), suppliers=("police_uk",))
    assert saved_views.reduce_state(web, own, people.camden).removed == ()


def test_reduce_state_of_a_view_pinned_to_a_drop_no_longer_held_follows_the_latest(web, people):
    reduced = saved_views.reduce_state(web, FilterState(borough_code=CAMDEN, as_at=987654), people.owner)
    assert reduced.state == FilterState(borough_code=CAMDEN)
    assert "no longer held" in reduced.note


# ---- "as at": the numbers hold after a new drop ---------------------------------------------------------------

def _street_files(tmp_path):
    from loaders.demo import generate_demo_drops

    files = generate_demo_drops(tmp_path, months=2, end_month="2025-02", rows_per_month=700,
                                fire_and_transport=False)
    return sorted(p for p in files if p.name.endswith("-street.csv"))


def test_a_pinned_view_keeps_its_numbers_after_a_later_month_is_loaded(clean_data, people, tmp_path):
    from loaders.pipeline import load_paths

    web = get_web_engine(clean_data)
    january = [p for p in _street_files(tmp_path) if p.name.startswith("2025-01")]
    february = [p for p in _street_files(tmp_path) if p.name.startswith("2025-02")]
    assert len(january) == len(february) == 2   # both forces
    load_paths(clean_data, january, progress=False)
    queries.clear_caches()
    view = saved_views.save_view(web, people.owner, "January pinned", "", FilterState(), pin=True)
    latest = saved_views.save_view(web, people.owner, "Following", "", FilterState(), pin=False)
    pinned_state = view.state
    assert pinned_state.as_at == query(clean_data, "SELECT max(id) FROM drops")[0][0]
    jan_count = query(clean_data, "SELECT count(*) FROM incidents")[0][0]
    head = queries.headline(web, pinned_state, people.owner)
    assert head.total == jan_count and head.period.label() == "Jan 2025"
    text_before = saved_views.data_age(web, pinned_state, date(2100, 1, 1))
    assert text_before.startswith("As at ") and "days old" in text_before

    load_paths(clean_data, february, progress=False)
    queries.clear_caches()
    both = query(clean_data, "SELECT count(*) FROM incidents")[0][0]
    assert both > jan_count
    assert queries.headline(web, latest.state, people.owner).total == both
    again = queries.headline(web, pinned_state, people.owner)
    assert (again.total, again.period.label()) == (jan_count, "Jan 2025")
    # Explicit dates over both months: the pinned view still counts January only; on the raw table as well
    # (a drawn area needs record-level rows), matching SQL on the incidents table.
    both_months = FilterState(date_from=date(2025, 1, 1), date_to=date(2025, 2, 28), as_at=pinned_state.as_at)
    assert queries.headline(web, both_months, people.owner).total == jan_count
    # The hotspot layers' counts too (their fast path keeps grid months in memory, which know no pin).
    months, pinned_cells = queries.study_counts_by_month(web, both_months, 500, user=people.owner)
    _, latest_cells = queries.study_counts_by_month(web, FilterState(date_from=date(2025, 1, 1),
                                                                     date_to=date(2025, 2, 28)), 500,
                                                    user=people.owner)
    assert months == [date(2025, 1, 1), date(2025, 2, 1)]
    assert pinned_cells[1].sum() == 0 < latest_cells[1].sum()
    assert (pinned_cells[0] == latest_cells[0]).all() and pinned_cells[0].sum() > 0
    ring = ((-0.2, 51.45), (0.0, 51.45), (0.0, 51.56), (-0.2, 51.56))
    raw = queries.headline(web, FilterState(polygon=ring, date_from=date(2025, 1, 1), date_to=date(2025, 2, 28),
                                            as_at=pinned_state.as_at), people.owner)
    expected = query(clean_data, """
        SELECT count(*) FROM incidents WHERE occurred_at < '2025-02-01 00:00 Europe/London'
          AND ST_Intersects(geom, ST_Transform(ST_GeomFromText(%s, 4326), 27700))""",
                     ("POLYGON((" + ", ".join(f"{x} {y}" for x, y in ring + ring[:1]) + "))",))[0][0]
    assert raw.source == "incidents" and raw.total == expected > 0
    monthly = queries.monthly_series(web, pinned_state, people.owner)
    assert monthly.months == [date(2025, 1, 1)]
    # "Data up to" (the headline card, exports' metadata) as the pin stood, not the newest drop's.
    newest = {f.supplier: f.data_to for f in queries.freshness(web) if f.data_to}
    pinned = {f.supplier: f.data_to for f in queries.freshness(web, pinned_state.as_at) if f.data_to}
    [(january_end,)] = query(clean_data, "SELECT max(period_end) FROM drops WHERE id <= %s", (pinned_state.as_at,))
    assert set(pinned) == set(newest) and max(pinned.values()) == january_end < max(newest.values())
    assert saved_views.data_age(web, pinned_state, date(2100, 1, 1)) == text_before
    assert saved_views.data_age(web, latest.state).startswith("Following the latest data (newest drop ")


def test_a_pinned_link_shows_a_chip_that_follows_the_latest_data_again():
    from dashapp.callbacks.dashboard import _without
    from dashapp.layouts.dashboard import filter_chips

    state = FilterState.from_query_string("borough=E09000007&asat=42")
    chips = filter_chips(state, {"suppliers": {}, "domains": {}, "categories": {}, "areas": {}})
    assert "Pinned: data as at drop 42" in str(chips[-1])
    assert _without(state, "asat") == FilterState(borough_code="E09000007")


def test_an_unknown_as_at_drop_is_refused_by_check_state(web):
    with pytest.raises(ValueError, match="data version"):
        queries.check_state(web, FilterState(as_at=987654))


def test_data_age_counts_days_in_london_time():
    moment = datetime(2025, 3, 1, 0, 30, tzinfo=timezone.utc)   # 00:30 GMT = 00:30 in London (winter)
    assert saved_views._london_date(moment) == date(2025, 3, 1)
    assert saved_views._london_date(datetime(2025, 6, 30, 23, 30, tzinfo=timezone.utc)) == date(2025, 7, 1)


def test_opening_writes_no_view_for_an_anonymous_user(web):
    with pytest.raises(ViewNotFound):
        saved_views.list_views(web, None)
    assert saved_views.reduce_state(web, FilterState(borough_code=CAMDEN), None).state == FilterState()


def test_scope_is_per_user(web, people):
    saved_views.save_view(web, people.owner, "Mine", "", FilterState())
    with db_scope.acting_as(people.viewer):
        # Whatever scope surrounds the call, the module acts as the user it is given.
        assert _names(saved_views.list_views(web, people.owner)[0]) == ["Mine"]


# ---- the route that opens a view ------------------------------------------------------------------------------

def test_opening_a_view_over_http_reduces_it_notes_it_and_is_audited(web, people, areas_loaded):
    from dashapp import create_app
    from dashapp.layouts.saved_views import OPENED_VIEW_SESSION_KEY
    from tests.login_helpers import sign_in

    state = FilterState(suppliers=("police_uk", "las"), borough_code=CAMDEN, map_layers=("points",))
    view = saved_views.save_view(web, people.owner, "Camden mixed", "", state)
    app = create_app(areas_loaded)
    app.config["TESTING"] = True

    stranger = app.test_client()
    assert sign_in(stranger, people.viewer.email, PASSWORD).status_code == 302
    response = stranger.get(f"/views/{view.id}")
    assert (response.status_code, response.headers["Location"]) == (302, "/"), "not shared: nothing to open"
    with stranger.session_transaction() as session:
        assert "not been shared with you" in session[OPENED_VIEW_SESSION_KEY]["error"]

    saved_views.set_shares(web, people.owner, view.id, user_ids=[people.viewer.id])
    before = query(areas_loaded, "SELECT coalesce(max(seq), 0) FROM audit_log")[0][0]
    response = stranger.get(f"/views/{view.id}")
    assert (response.status_code, response.headers["Location"]) == (302, f"/?supplier=police_uk&borough={CAMDEN}")
    with stranger.session_transaction() as session:
        note = session[OPENED_VIEW_SESSION_KEY]
    assert (note["name"], note["owner"], note["qs"]) == ("Camden mixed", "Owner", f"supplier=police_uk&borough={CAMDEN}")
    assert any("London Ambulance" in item for item in note["removed"])
    assert any("Incident points" in item for item in note["removed"])
    assert query(areas_loaded, "SELECT target, tier, filter_state, rows_returned, allowed FROM audit_log "
                               "WHERE seq > %s", (before,)) == \
        [("saved_views.open_view", "viewer", f"supplier=police_uk&borough={CAMDEN}", 1, True)]


def test_a_forged_action_on_someone_elses_view_is_refused_by_the_callback(web, people, areas_loaded):
    import json

    from dashapp import create_app, ids
    from tests.login_helpers import sign_in

    view = saved_views.save_view(web, people.owner, "Not yours", "", FilterState(borough_code=CAMDEN))
    saved_views.set_shares(web, people.owner, view.id, user_ids=[people.viewer.id])
    app = create_app(areas_loaded)
    app.config["TESTING"] = True
    client = app.test_client()
    assert sign_in(client, people.viewer.email, PASSWORD).status_code == 302
    dash_app = app.extensions["safestats_dash"]
    key = next(k for k in dash_app.callback_map if f"{ids.VIEWS_SHARE_VIEW}.value" in k)
    spec = dash_app.callback_map[key]

    def call(action: str):
        button = {"action": action, "type": ids.VIEWS_ACTION, "view": view.id}
        body = {"output": key, "outputs": [{"id": part.rsplit(".", 1)[0], "property": part.rsplit(".", 1)[1]}
                                           for part in key.strip(".").split("...")],
                "inputs": [[{"id": button, "property": "n_clicks", "value": 1}]],
                "state": [{"id": d["id"], "property": d["property"], "value": "Taken" if d["id"] == ids.VIEWS_NAME
                           else None} for d in spec["state"]],
                "changedPropIds": [json.dumps(button, separators=(",", ":"), sort_keys=True) + ".n_clicks"]}
        response = client.post("/_dash-update-component", data=json.dumps(body), content_type="application/json")
        assert response.status_code == 200, response.status_code
        return response.get_json()["response"]

    for action in ("delete", "rename", "update", "share"):
        answer = json.dumps(call(action))
        assert "Only" in answer and "owner" in answer, (action, answer)
    assert saved_views.get_view(web, people.owner, view.id).name == "Not yours", "nothing changed"
    copied = json.dumps(call("duplicate"))
    assert "Copied into your views" in copied
    assert _names(saved_views.list_views(web, people.viewer)[0]) == ["Copy of Not yours"]
