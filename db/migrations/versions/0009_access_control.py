"""Access control in the database: the tier policy as data, the web role, row-level security, guarded rollups.

Revision ID: 0009
Revises: 0007_feeds
Create Date: 2026-11-29

Mirrors ``safestats.access.TIER_POLICIES`` into ``access_tiers`` (``users.tier`` now references it), adds
``user_boroughs`` (a borough analyst's boroughs), creates the role ``safestats_web`` the web app connects
as (NOLOGIN here; ``db.web_role`` gives it LOGIN and a generated password), and turns on row-level security
(ENABLE and FORCE) on the tables holding incidents and raw supplier lines, reading the user's scope from
per-transaction settings (``db/sql/access_control_v1.sql``). The materialised rollups stay closed to the web
role; it reads each through a security-barrier ``<rollup>_visible`` view generated for every rollup in
``safestats.rollups.ROLLUP_VIEWS`` (``db/sql/rollup_visible_view.sql``).

It also adds retention of record-level rows (``db/sql/retention_v1.sql``): ``suppliers.record_retention``,
the ``retained_*`` tables that removed records are folded into, ``retention_runs``, and the rollups
re-created (version 2, ``db/sql/rollups_v2.sql``) to add the folded counts to the live ones.

The downgrade removes all of it (the folded counts go with the ``retained_*`` tables: records removed by
retention are gone for good) and revokes the web role's privileges in this database, but leaves the role
itself: roles belong to the whole cluster, and other databases on it may use it.
"""
from alembic import op
from sqlalchemy import text

from db import read_sql

revision = "0009"
down_revision = "0007_feeds"
branch_labels = None
depends_on = None

WEB_ROLE = "safestats_web"
PROTECTED_TABLES = ("incidents", "quarantine", "police_uk_outcome_history")
# Dependants first (rollup_borough_month reads rollup_area_month).
ROLLUPS_DROP_ORDER = ("rollup_grid_month", "rollup_borough_day_hour", "rollup_borough_month", "rollup_area_month")
ROLLUPS_REFRESH_ORDER = tuple(reversed(ROLLUPS_DROP_ORDER))


def _replace_rollups(sql: str) -> None:
    """Drop the four rollups, create them from ``sql`` and populate them (nothing may read them unpopulated)."""
    for view in ROLLUPS_DROP_ORDER:
        op.execute(f"DROP MATERIALIZED VIEW IF EXISTS {view}")
    op.execute(sql)
    for view in ROLLUPS_REFRESH_ORDER:
        op.execute(f"REFRESH MATERIALIZED VIEW {view}")


def _rollups_present() -> list[str]:
    from safestats.rollups import ROLLUP_VIEWS

    bind = op.get_bind()
    return [v for v in ROLLUP_VIEWS if bind.execute(text("SELECT to_regclass(:v)"), {"v": v}).scalar()]


def upgrade() -> None:
    from safestats.access import TIER_POLICIES
    from safestats.rollups import visible_view_sql

    # The web role: created when missing; an existing one must not be able to skip row-level security.
    op.execute(f"""
    DO $$
    DECLARE r pg_roles;
    BEGIN
        SELECT * INTO r FROM pg_roles WHERE rolname = '{WEB_ROLE}';
        IF NOT FOUND THEN
            CREATE ROLE {WEB_ROLE} NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT;
        ELSIF r.rolsuper OR r.rolbypassrls THEN
            RAISE EXCEPTION 'role {WEB_ROLE} is superuser or BYPASSRLS: run ALTER ROLE {WEB_ROLE} NOSUPERUSER NOBYPASSRLS as a superuser, then migrate again';
        END IF;
    END;
    $$""")
    op.execute(read_sql("incident_partitions_v2.sql"))
    op.execute(read_sql("retention_v1.sql"))
    _replace_rollups(read_sql("rollups_v2.sql"))
    op.execute(read_sql("access_control_v1.sql"))

    bind = op.get_bind()
    for policy in TIER_POLICIES.values():
        bind.execute(text("""
            INSERT INTO access_tiers (tier, health, aggregate_level, record_level, all_boroughs, min_area_level, admin)
            VALUES (:tier, :health, :aggregate_level, :record_level, :all_boroughs, :min_area_level, :admin)"""),
                     {"tier": policy.tier, "health": policy.health, "aggregate_level": policy.aggregate_level,
                      "record_level": policy.record_level, "all_boroughs": policy.record_boroughs is None,
                      "min_area_level": policy.min_area_level, "admin": policy.admin})
    # The tier set is data now: the foreign key replaces 0002's fixed list.
    op.execute("ALTER TABLE users DROP CONSTRAINT IF EXISTS users_tier_check")
    op.execute("ALTER TABLE users ADD CONSTRAINT users_tier_fkey FOREIGN KEY (tier) REFERENCES access_tiers (tier)")

    for view in _rollups_present():
        op.execute(visible_view_sql(view))


def downgrade() -> None:
    from safestats.rollups import ROLLUP_VIEWS, visible_view

    for view in ROLLUP_VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {visible_view(view)}")
    op.execute("DROP VIEW IF EXISTS incident_months_span")
    op.execute(f"""
    DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{WEB_ROLE}') THEN
            REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {WEB_ROLE};
        END IF;
    END;
    $$""")
    op.execute("ALTER TABLE users DROP CONSTRAINT IF EXISTS users_tier_fkey")
    op.execute("""ALTER TABLE users ADD CONSTRAINT users_tier_check
                  CHECK (tier IN ('viewer', 'borough_analyst', 'partner_analyst', 'istv_analyst', 'admin'))""")
    op.execute("""
    DO $$
    DECLARE
        pol record;
        part regclass;
    BEGIN
        FOR pol IN SELECT polname, polrelid::regclass AS rel FROM pg_policy
                   WHERE polrelid IN ('incidents'::regclass, 'quarantine'::regclass,
                                      'police_uk_outcome_history'::regclass)
                      OR polrelid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'incidents'::regclass) LOOP
            EXECUTE format('DROP POLICY %I ON %s', pol.polname, pol.rel);
        END LOOP;
        FOR part IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'incidents'::regclass LOOP
            EXECUTE format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', part);
            EXECUTE format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', part);
        END LOOP;
    END;
    $$""")
    for table in PROTECTED_TABLES:
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.execute(read_sql("incident_partitions.sql"))  # version 1 of the partition function again
    op.execute("""
    DO $$
    DECLARE
        bbox_overlap regprocedure := (SELECT oprcode::regprocedure FROM pg_operator WHERE oprname = '&&'
                                  AND oprleft = 'geometry'::regtype AND oprright = 'geometry'::regtype);
    BEGIN
        IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            EXECUTE format('ALTER FUNCTION %s NOT LEAKPROOF', bbox_overlap);
        END IF;
    END;
    $$""")
    for function in ("safestats_protect_incident_partition(regclass)", "safestats_aggregate_suppliers()",
                     "safestats_may_break_down_to(text)", "safestats_is_admin()", "safestats_record_boroughs()",
                     "safestats_all_boroughs()", "safestats_aggregate_level()", "safestats_record_level()",
                     "safestats_capped_level(text, smallint)", "safestats_setting(text)",
                     "safestats_set_scope(text, text, text, text, text)", "safestats_transaction_stamp()"):
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    op.execute("DROP TABLE IF EXISTS user_boroughs")
    op.execute("DROP TABLE IF EXISTS access_tiers")

    # Rollups version 1 again (its file also creates rollup_refreshes, which stays: only the views are taken).
    _replace_rollups(read_sql("rollups_v1.sql").split("-- Which rollups exist")[0])
    op.execute("DROP FUNCTION IF EXISTS safestats_theme_mask(boolean, boolean, boolean, boolean, boolean)")
    op.execute("DROP FUNCTION IF EXISTS safestats_fold_and_remove_records(text, timestamptz)")
    for table in ("retention_runs", "retained_grid_month", "retained_borough_day_hour", "retained_area_month"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
    op.execute("ALTER TABLE suppliers DROP COLUMN IF EXISTS record_retention")
