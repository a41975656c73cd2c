"""Access control in the database: the tier policy as data, the web role, row-level security, guarded rollups.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29

Mirrors ``safestats.access.TIER_POLICIES`` into ``access_tiers`` (``users.tier`` now references it), adds
``user_boroughs`` (a borough analyst's boroughs), creates the role ``safestats_web`` the web app connects
as (NOLOGIN here; ``db.web_role`` gives it LOGIN and a generated password), and turns on row-level security
(ENABLE and FORCE) on the tables holding incidents and raw supplier lines, reading the user's scope from
per-transaction settings (``db/sql/access_control_v1.sql``). The materialised rollups stay closed to the web
role; it reads each through a security-barrier ``<rollup>_visible`` view generated for every rollup in
``safestats.rollups.ROLLUPS`` (``db/sql/rollup_visible_view.sql``), and the span of months with data through
``incident_months_span``.

The downgrade removes all of it and revokes the web role's privileges in this database, but leaves the role
itself: roles belong to the whole cluster, and other databases on it may use it.
"""
from alembic import op
from sqlalchemy import text

from db import read_sql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

WEB_ROLE = "safestats_web"
PROTECTED_TABLES = ("incidents", "quarantine", "police_uk_outcome_history")
def upgrade() -> None:
    from safestats.access import TIER_POLICIES
    from safestats.rollups import create_web_doors

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

    create_web_doors(bind)


def downgrade() -> None:
    from safestats.rollups import drop_web_doors

    drop_web_doors(op.get_bind())
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
