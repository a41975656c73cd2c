"""Access control inside PostgreSQL: the catalog, the web role, per-transaction settings, and the subset property.

The web app connects as ``safestats_web`` and PostgreSQL itself keeps rows above the user's tier out of
every answer (``db/sql/access_control_v1.sql``). These tests check it where a mistake would hide: the
catalog (row-level security enabled and forced on every table holding incidents or raw supplier lines,
views security_invoker or security barriers over rollups, no rollup table granted to the web role,
a web role that owns nothing and cannot become anyone else), the settings (none means no rows; settings
made for the session, before the app's, through connection options or by shadowing a table never count;
a pooled connection never carries one user's settings into the next user's request), and, with
Hypothesis generating records and users, that what a user gets is always what their tier allows, checked
directly in SQL as the web role and through the query layer.
"""
from __future__ import annotations

import re

from datetime import date
from types import SimpleNamespace

import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from db import get_engine, get_web_engine, libpq_dsn, sqlalchemy_url
from db.web_role import WEB_ROLE, web_database_url
from safestats import db_scope, queries
from safestats.access import HEALTH_RECORD_LEVEL, RECORD_LEVEL, TIER_POLICIES, TIERS, policy_for
from safestats.filters import FilterState
from safestats.rollups import ROLLUP_VIEWS, visible_view
from tests.conftest import query, refresh_after_seeding, truncate_data

CAMDEN, WESTMINSTER, CROYDON = "E09000007", "E09000033", "E09000008"
BOROUGHS = (CAMDEN, WESTMINSTER, CROYDON)
SUPPLIER_LEVELS = {"police_uk": RECORD_LEVEL, "lfb": RECORD_LEVEL, "tfl_bus": RECORD_LEVEL,
                   "las": HEALTH_RECORD_LEVEL, "istv_ed": HEALTH_RECORD_LEVEL}
CATEGORY = {RECORD_LEVEL: 1, HEALTH_RECORD_LEVEL: 70}
SENSITIVE_TABLES = ("incidents", "quarantine", "police_uk_outcome_history")


def web_connect(url: str, **options):
    """A psycopg2 connection as the web role (autocommit off: each test transaction is explicit)."""
    return psycopg2.connect(libpq_dsn(web_database_url(url)), **options)


def set_scope(cur, user) -> None:
    """What the app does at the start of each transaction: the user's settings, SET LOCAL."""
    scope = db_scope.scope_for(user)
    assert scope is not None
    cur.execute(db_scope.APPLY_SQL, scope.as_params())


def make_user(url: str, tier: str, boroughs=(), email: str | None = None) -> SimpleNamespace:
    """A row in users (and user_boroughs) and the logged-in user object the app would build from it."""
    conn = psycopg2.connect(libpq_dsn(url))
    with conn, conn.cursor() as cur:
        cur.execute("""INSERT INTO users (email, display_name, organisation_id, tier, password_hash)
                       VALUES (%s, 'Test', (SELECT id FROM organisations WHERE code = 'GLA'), %s, 'not a hash')
                       RETURNING id""",
                    (email or f"{tier}-{'-'.join(sorted(boroughs))}@test.invalid", tier))
        user_id = cur.fetchone()[0]
        cur.executemany("INSERT INTO user_boroughs VALUES (%s, %s)", [(user_id, b) for b in boroughs])
    conn.close()
    return SimpleNamespace(id=user_id, tier=tier, boroughs=frozenset(boroughs), is_authenticated=True,
                           is_active=True)


def remove_users(url: str) -> None:
    conn = psycopg2.connect(libpq_dsn(url))
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM users WHERE email LIKE '%%@test.invalid'")
    conn.close()


def seed(url: str, records) -> list[int]:
    """Insert (supplier, borough or None, month index) records of 2024 at a point in their borough; refresh
    the rollups. Returns the ids in order."""
    conn = psycopg2.connect(libpq_dsn(url))
    ids = []
    with conn, conn.cursor() as cur:
        cur.execute("SELECT safestats_ensure_incident_partitions('2024-01-01', '2024-12-31')")
        for supplier, borough, month in records:
            level = SUPPLIER_LEVELS[supplier]
            cur.execute("""
                INSERT INTO incidents (supplier, drop_id, occurred_at, time_precision, category_id, supplier_category,
                                       location_precision, borough_code, access_level, geom)
                VALUES (%s, 1, make_timestamptz(2024, %s, 15, 12, 0, 0, 'Europe/London'), 'minute', %s, 'test',
                        'exact', %s, %s, (SELECT ST_PointOnSurface(geom) FROM areas WHERE code = %s))
                RETURNING id""", (supplier, month + 1, CATEGORY[level], borough, level, borough))
            ids.append(cur.fetchone()[0])
    conn.close()
    refresh_after_seeding(url)
    return ids


@pytest.fixture
def mixed(clean_data):
    """Every supplier in every borough (and one without a borough), two of each."""
    records = [(s, b, m) for s in SUPPLIER_LEVELS for b in BOROUGHS + (None,) for m in (0, 1)]
    seed(clean_data, records)
    yield clean_data
    remove_users(clean_data)


# ---- the catalog ---------------------------------------------------------------------------------------

def test_access_tiers_mirror_the_policy_module(db_url):
    rows = {r[0]: r[1:] for r in query(db_url, """SELECT tier, health, aggregate_level, record_level, all_boroughs,
                                                     min_area_level, admin FROM access_tiers""")}
    assert set(rows) == set(TIERS)
    for tier, p in TIER_POLICIES.items():
        assert rows[tier] == (p.health, p.aggregate_level, p.record_level, p.record_boroughs is None,
                              p.min_area_level, p.admin), tier
    # users.tier can only name a tier of the table.
    with pytest.raises(psycopg2.errors.ForeignKeyViolation):
        query(db_url, "INSERT INTO users (email, display_name, organisation_id, tier, password_hash) "
                      "VALUES ('x@test.invalid', 'x', (SELECT id FROM organisations WHERE code = 'GLA'), "
                      "'superviewer', 'h')")


def test_web_role_owns_nothing_is_not_privileged_and_belongs_to_no_role(db_url):
    web_database_url(db_url)  # gives the role LOGIN and its password
    [(superuser, bypass, createrole, createdb, login)] = query(db_url, """
        SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolcanlogin FROM pg_roles WHERE rolname = %s""",
                                                             (WEB_ROLE,))
    assert (superuser, bypass, createrole, createdb, login) == (False, False, False, False, True)
    assert query(db_url, """SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member
                            WHERE r.rolname = %s""", (WEB_ROLE,)) == [(0,)], "member of no role: nothing to SET ROLE to"
    for catalog, owner in (("pg_class", "relowner"), ("pg_proc", "proowner"), ("pg_namespace", "nspowner"),
                           ("pg_type", "typowner"), ("pg_database", "datdba")):
        assert query(db_url, f"SELECT count(*) FROM {catalog} WHERE {owner} = (SELECT oid FROM pg_roles "
                             f"WHERE rolname = %s)", (WEB_ROLE,)) == [(0,)], catalog


def test_the_web_app_connects_as_the_web_role(db_url):
    from dashapp import create_app

    server = create_app(db_url)
    with server.extensions["safestats_engine"].connect() as conn:
        assert conn.execute(text("SELECT current_user")).scalar() == WEB_ROLE


def _incident_partitions(url):
    """Every partition of incidents at every level: the years and, under them, the months (migration 0017)."""
    return [r[0] for r in query(url, """SELECT relid::regclass::text FROM pg_partition_tree('incidents')
                                        WHERE level > 0""")]


def test_row_level_security_is_enabled_and_forced_on_every_sensitive_table(mixed):
    # Every table with incident rows or raw supplier lines: the named ones, every incident partition, and any
    # other table later given an occurred_at or raw_line column.
    holding_records = {r[0] for r in query(mixed, """
        SELECT DISTINCT c.relname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND a.attname IN ('occurred_at', 'raw_line')
          AND NOT a.attisdropped""")}
    tables = set(SENSITIVE_TABLES) | set(_incident_partitions(mixed)) | holding_records
    assert any(t.startswith("incidents_y") for t in tables), "the seed made a partition"
    # Which years are split by month depends on what earlier tests created first (a year that already existed
    # stays whole), so any month partition will do.
    assert any(re.fullmatch(r"incidents_y\d{4}m\d{2}", t) for t in tables), "month partitions are checked too"
    flags = dict((r[0], r[1:]) for r in query(mixed, """SELECT relname, relrowsecurity, relforcerowsecurity
                                                        FROM pg_class WHERE relname = ANY(%s)""", (list(tables),)))
    assert {t: flags[t] for t in tables} == {t: (True, True) for t in tables}
    # The web role reads partitions only through the parent (whose policies apply), and never the history.
    for table in _incident_partitions(mixed) + ["police_uk_outcome_history", "supplier_tokens", "apscheduler_jobs"]:
        assert query(mixed, "SELECT has_table_privilege(%s, %s, 'SELECT')", (WEB_ROLE, table)) == [(False,)], table
    # The web role may not write any table holding records.
    for table in SENSITIVE_TABLES:
        for privilege in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
            assert query(mixed, "SELECT has_table_privilege(%s, %s, %s)", (WEB_ROLE, table, privilege)) == [(False,)]


def test_views_are_security_invoker_or_barriers_over_rollups_and_no_rollup_is_granted(mixed):
    import re

    url = mixed  # a year of incidents, so its rollups hold rows
    assert query(url, "SELECT matviewname FROM pg_matviews WHERE schemaname = 'public'") == []
    # Each rollup is a table (version 3), closed to the web role, and so are the folded counts retention adds
    # to the grid rollup (no view of them since 0025) and a drawn polygon's packed points.
    for view in ROLLUP_VIEWS + ("retained_grid_month", "incident_cell_points"):
        assert query(url, "SELECT relkind FROM pg_class WHERE relname = %s", (view,)) == [("r",)], view
        # (autovacuum's truncation of a table's empty end would lock the dashboard's readers out: 0023)
        assert query(url, "SELECT 'vacuum_truncate=false' = ANY(reloptions) FROM pg_class WHERE relname = %s",
                     (view,)) == [(True,)], view
        assert query(url, "SELECT has_table_privilege(%s, %s, 'SELECT')", (WEB_ROLE, view)) == [(False,)], view
    views = query(url, """
        SELECT c.relname, coalesce(c.reloptions, '{}') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind = 'v'
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')""")  # not PostGIS's
    assert views, "there are views to check"
    for name, options in views:
        if "security_invoker=true" in options:
            continue
        read = {r[0]: r[1] for r in query(url, """
            SELECT DISTINCT d.refobjid::regclass::text, c.relkind FROM pg_rewrite w
            JOIN pg_depend d ON d.objid = w.oid JOIN pg_class c ON c.oid = d.refobjid
            WHERE w.ev_class = %s::regclass AND d.refobjid <> %s::regclass""", (name, name))}
        assert "incidents" not in read and "quarantine" not in read, name
        # Any other view with its owner's rights must be a security barrier reading rollups, or a drawn
        # polygon's packed points, records which the view keeps as incidents' policy does.
        assert "security_barrier=true" in options, name
        if name == "incident_cell_points_visible":
            assert set(read) == {"incident_cell_points"}
            definition = query(url, "SELECT pg_get_viewdef(%s::regclass)", (name,))[0][0]
            assert "safestats_record_level()" in definition and "safestats_record_boroughs()" in definition
            continue
        assert read and set(read) <= set(ROLLUP_VIEWS) | {"public.safestats_aggregate_suppliers"}, (name, read)
    # Every rollup has its visible view, granted to the web role.
    for view in ROLLUP_VIEWS:
        assert query(url, "SELECT has_table_privilege(%s, %s, 'SELECT')",
                     (WEB_ROLE, visible_view(view))) == [(True,)], view


def test_the_web_roles_spatial_conditions_can_use_the_gist_index(mixed):
    """Under row-level security only leakproof conditions may be index conditions: && is marked leakproof
    (0009), so map points and drawn areas read the GiST index instead of scanning every partition."""
    conn = web_connect(mixed)
    try:
        with conn.cursor() as cur:
            set_scope(cur, SimpleNamespace(id=None, tier="admin", is_authenticated=True, is_active=True))
            cur.execute("SET LOCAL enable_seqscan = off")  # a tiny table: ask whether the index *can* be used
            cur.execute("""EXPLAIN SELECT count(*) FROM incidents
                           WHERE geom && ST_Transform(ST_MakeEnvelope(-0.2, 51.45, -0.1, 51.55, 4326), 27700)""")
            plan = "\n".join(r[0] for r in cur.fetchall())
        conn.rollback()
    finally:
        conn.close()
    assert "Index Cond: (geom &&" in plan, plan


# ---- settings: none means no rows; leftovers and forgeries never count ---------------------------------------

def _counts(cur) -> dict[str, int]:
    out = {}
    for relation in ("incidents", "quarantine") + tuple(visible_view(v) for v in ROLLUP_VIEWS):
        cur.execute(f"SELECT count(*) FROM {relation}")
        out[relation] = cur.fetchone()[0]
    return out


NOTHING = {r: 0 for r in ("incidents", "quarantine") + tuple(visible_view(v) for v in ROLLUP_VIEWS)}


def test_no_setting_means_no_rows(mixed):
    conn = web_connect(mixed)
    try:
        with conn.cursor() as cur:
            assert _counts(cur) == NOTHING
            # Settings that name no known tier, or a malformed level, are no settings either.
            cur.execute("SELECT safestats_set_scope('', 'superadmin', '99', '99', '*')")
            assert _counts(cur) == NOTHING
            cur.execute("SELECT safestats_set_scope('', 'admin', 'lots', 'lots', '*')")
            assert _counts(cur)["incidents"] == 0
        conn.rollback()
    finally:
        conn.close()


def test_the_web_role_cannot_bypass_row_level_security(mixed):
    admin = SimpleNamespace(id=None, tier="admin", is_authenticated=True, is_active=True)
    viewer = SimpleNamespace(id=None, tier="viewer", is_authenticated=True, is_active=True)
    total = query(mixed, "SELECT count(*) FROM incidents")[0][0]
    conn = web_connect(mixed)
    try:
        with conn.cursor() as cur:
            set_scope(cur, admin)
            assert _counts(cur)["incidents"] == total, "the admin scope sees every record"
            conn.rollback()

            # SET ROLE to the owner, to a superuser, or by SESSION AUTHORIZATION: refused.
            for statement in ("SET ROLE safestats", "SET ROLE postgres", "SET SESSION AUTHORIZATION safestats",
                              "SET ROLE pg_read_all_data"):
                with pytest.raises(psycopg2.Error):
                    cur.execute(statement)
                conn.rollback()
            cur.execute("RESET ROLE")
            cur.execute("SELECT current_user")
            assert cur.fetchone()[0] == WEB_ROLE
            conn.rollback()

            # Settings made for the session (set_config(..., false), SET), stamp and all, in one transaction...
            cur.execute("""SELECT set_config('safestats.tier', 'admin', false),
                                  set_config('safestats.aggregate_level', '20', false),
                                  set_config('safestats.record_level', '20', false),
                                  set_config('safestats.record_boroughs', '*', false),
                                  set_config('safestats.transaction', safestats_transaction_stamp(), false)""")
            conn.commit()
            # ...count in no later transaction (the next request on this pooled connection).
            assert _counts(cur) == NOTHING
            cur.execute("SET safestats.tier = 'admin'")
            cur.execute("SET safestats.record_level = '20'")
            conn.commit()
            assert _counts(cur) == NOTHING
            conn.rollback()

            # RESET inside a scoped transaction takes the settings away, and with them the rows.
            set_scope(cur, admin)
            cur.execute("RESET safestats.tier")
            assert _counts(cur)["incidents"] == 0
            conn.rollback()
            set_scope(cur, admin)
            cur.execute("RESET ALL")
            assert _counts(cur) == NOTHING
            conn.rollback()

            # A level raised within the viewer's own transaction is capped by the viewer's tier.
            set_scope(cur, viewer)
            cur.execute("SELECT set_config('safestats.record_level', '20', true), "
                        "set_config('safestats.record_boroughs', '*', true)")
            assert _counts(cur)["incidents"] == 0
            conn.rollback()

            # A temporary table cannot stand in for access_tiers: the functions read public.access_tiers.
            cur.execute("CREATE TEMP TABLE access_tiers AS SELECT * FROM public.access_tiers")
            cur.execute("UPDATE access_tiers SET record_level = 20, all_boroughs = true WHERE tier = 'viewer'")
            set_scope(cur, viewer)
            cur.execute("SELECT safestats_record_level(), safestats_all_boroughs()")
            assert cur.fetchone() == (0, False)
            cur.execute("SELECT count(*) FROM incidents")
            assert cur.fetchone()[0] == 0
            conn.rollback()

            # The materialised rollups and the partitions themselves are closed.
            for relation in ROLLUP_VIEWS + tuple(_incident_partitions(mixed)):
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cur.execute(f"SELECT count(*) FROM {relation}")
                conn.rollback()
    finally:
        conn.close()

    # Settings forged before the app sets its own (connection options) are ignored...
    forged = web_connect(mixed, options="-c safestats.tier=admin -c safestats.aggregate_level=20 "
                                        "-c safestats.record_level=20 -c safestats.record_boroughs=*")
    try:
        with forged.cursor() as cur:
            cur.execute("SHOW safestats.tier")
            assert cur.fetchone()[0] == "admin", "the forged setting is in place"
            assert _counts(cur) == NOTHING
            forged.rollback()
            # ...and replaced by the app's SET LOCAL once it sets them.
            set_scope(cur, viewer)
            assert _counts(cur)["incidents"] == 0
            cur.execute("SELECT DISTINCT supplier FROM rollup_borough_month_visible")
            assert {r[0] for r in cur.fetchall()} <= {s for s, lv in SUPPLIER_LEVELS.items() if lv == RECORD_LEVEL}
            forged.rollback()
    finally:
        forged.close()


def test_a_borough_list_counts_only_for_the_users_assigned_boroughs(mixed):
    analyst = make_user(mixed, "borough_analyst", [CAMDEN])
    forged = SimpleNamespace(**{**vars(analyst), "boroughs": frozenset(BOROUGHS)})
    expected = query(mixed, "SELECT count(*) FROM incidents WHERE borough_code = %s AND access_level <= 10",
                     (CAMDEN,))[0][0]
    conn = web_connect(mixed)
    try:
        with conn.cursor() as cur:
            for user in (analyst, forged):
                set_scope(cur, user)
                cur.execute("SELECT count(*), array_agg(DISTINCT borough_code) FROM incidents")
                assert cur.fetchone() == (expected, [CAMDEN])
                conn.rollback()
            # '*' is not a borough list a borough analyst's tier may use.
            set_scope(cur, analyst)
            cur.execute("SELECT set_config('safestats.record_boroughs', '*', true)")
            cur.execute("SELECT count(*) FROM incidents")
            assert cur.fetchone()[0] == 0
            conn.rollback()
    finally:
        conn.close()


def test_the_user_loader_gives_a_borough_analyst_their_boroughs(mixed):
    from dashapp.auth import load_user_by_id

    analyst = make_user(mixed, "borough_analyst", [CAMDEN, CROYDON])
    loaded = load_user_by_id(get_web_engine(mixed), str(analyst.id))
    assert loaded.boroughs == {CAMDEN, CROYDON}
    assert policy_for(loaded).record_boroughs == {CAMDEN, CROYDON}


def test_a_pooled_connection_never_carries_one_users_settings_into_the_next_request(mixed):
    admin = make_user(mixed, "admin", email="pool-admin@test.invalid")
    viewer = make_user(mixed, "viewer", email="pool-viewer@test.invalid")
    total = query(mixed, "SELECT count(*) FROM incidents")[0][0]
    # One pooled connection, so user B's request reuses user A's connection.
    engine = db_scope.install(create_engine(sqlalchemy_url(web_database_url(mixed)), pool_size=1, max_overflow=0))
    try:
        with db_scope.acting_as(admin), engine.connect() as conn:
            first_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
            assert conn.execute(text("SELECT count(*) FROM incidents")).scalar() == total
            # Something in A's request also leaves session-level settings behind.
            conn.execute(text("SELECT set_config('safestats.tier', 'admin', false), "
                              "set_config('safestats.record_level', '20', false), "
                              "set_config('safestats.record_boroughs', '*', false), "
                              "set_config('safestats.transaction', safestats_transaction_stamp(), false)"))
            conn.commit()
        with db_scope.acting_as(viewer), engine.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() == first_pid, "the same connection"
            assert conn.execute(text("SELECT current_setting('safestats.tier')")).scalar() == "viewer"
            assert conn.execute(text("SELECT count(*) FROM incidents")).scalar() == 0
        with engine.connect() as conn:  # a request with nobody logged in
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() == first_pid
            assert conn.execute(text("SELECT count(*) FROM incidents")).scalar() == 0
            assert conn.execute(text("SELECT count(*) FROM rollup_borough_month_visible")).scalar() == 0
    finally:
        engine.dispose()


def test_the_app_runs_each_request_as_its_user_on_a_shared_pool(mixed):
    """Through the web app: the admin's data-status page and a viewer's request share the pooled engine; the
    viewer's tile request never gets the admin's records."""
    from dashapp import auth, create_app, guard
    from tests.login_helpers import sign_in

    auth.upsert_user(get_engine(mixed), "app-admin@test.invalid", "correct horse battery", "A", "GLA", "admin")
    auth.upsert_user(get_engine(mixed), "app-viewer@test.invalid", "correct horse battery", "V", "GLA", "viewer")
    server = create_app(mixed)
    engine = server.extensions["safestats_engine"]
    seen = {}

    @server.get("/test-only/records")
    @guard.endpoint(guard.LOGIN)
    def records():
        with engine.connect() as conn:
            seen.setdefault("pids", set()).add(conn.execute(text("SELECT pg_backend_pid()")).scalar())
            return {"records": conn.execute(text("SELECT count(*) FROM incidents")).scalar()}

    total = query(mixed, "SELECT count(*) FROM incidents")[0][0]
    answers = {}
    for email in ("app-admin@test.invalid", "app-viewer@test.invalid", "app-admin@test.invalid"):
        client = server.test_client()
        assert sign_in(client, email, "correct horse battery").status_code == 302
        answers.setdefault(email, []).append(client.get("/test-only/records").get_json()["records"])
    assert answers == {"app-admin@test.invalid": [total, total], "app-viewer@test.invalid": [0]}
    assert server.test_client().get("/test-only/records").status_code == 302, "anonymous: sent to log in, no SQL"


# ---- Hypothesis: what a user gets is always what their tier allows ---------------------------------------------

records_strategy = st.lists(st.tuples(st.sampled_from(sorted(SUPPLIER_LEVELS)), st.sampled_from(BOROUGHS + (None,)),
                                      st.integers(0, 11)), max_size=25)
users_strategy = st.lists(st.tuples(st.sampled_from(TIERS), st.frozensets(st.sampled_from(BOROUGHS))),
                          min_size=1, max_size=4)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=records_strategy, users=users_strategy)
def test_a_user_gets_a_subset_of_what_their_tier_allows(areas_loaded, records, users):
    url = areas_loaded
    truncate_data(url)
    remove_users(url)
    ids = seed(url, records)
    made = [make_user(url, tier, boroughs if tier == "borough_analyst" else (), email=f"h{i}@test.invalid")
            for i, (tier, boroughs) in enumerate(users)]
    web = get_web_engine(url)
    everything = FilterState(date_from=date(2024, 1, 1), date_to=date(2024, 12, 31))
    conn = web_connect(url)
    try:
        for user in made:
            policy = policy_for(user)
            may_see = {i for i, (supplier, borough, _) in zip(ids, records)
                       if policy.may_see_record(SUPPLIER_LEVELS[supplier], borough)}
            in_aggregates = [r for r in records if SUPPLIER_LEVELS[r[0]] <= policy.aggregate_level]

            # Directly in SQL, as the web role: exactly the records the policy allows, and aggregates of no
            # supplier beyond the tier's aggregate level.
            with conn.cursor() as cur:
                set_scope(cur, user)
                cur.execute("SELECT id FROM incidents")
                assert {r[0] for r in cur.fetchall()} == may_see, (user.tier, user.boroughs)
                cur.execute(f"SELECT coalesce(sum(incidents), 0) FROM {visible_view('rollup_borough_month')}")
                assert cur.fetchone()[0] == len(in_aggregates)
                for view in ROLLUP_VIEWS:
                    cur.execute(f"SELECT DISTINCT supplier FROM {visible_view(view)}")
                    assert all(SUPPLIER_LEVELS[s] <= policy.aggregate_level for (s,) in cur.fetchall()), view
            conn.rollback()

            # Through the query layer: totals never include a supplier the tier may not see, and record
            # points are either refused or exactly the user's records.
            head = queries.headline(web, everything, user)
            assert head.total <= len(in_aggregates)
            allowed = queries.visible_suppliers(web, user)
            assert head.total == sum(1 for r in records if r[0] in allowed)
            box = (-0.6, 51.25, 0.35, 51.7)
            for borough in (None,) + BOROUGHS:
                state = FilterState(date_from=everything.date_from, date_to=everything.date_to, borough_code=borough)
                try:
                    points = queries.point_clusters(web, state, box, 15, user)
                except queries.AccessRefused:
                    assert not policy.sees_records or (policy.record_boroughs is not None
                                                       and borough not in policy.record_boroughs)
                    continue
                seen = sum(f["properties"]["count"] for f in points["features"])
                assert seen == sum(1 for i, (s, b, _) in zip(ids, records) if i in may_see and s in allowed
                                   and b is not None and (borough is None or b == borough))
    finally:
        conn.close()
        truncate_data(url)
        remove_users(url)
