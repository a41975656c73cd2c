-- Access control in PostgreSQL, version 1 (migration 0009): the database's own copy of the tier policy and
-- the row-level security that applies it, so that a bug or a forged request in the web app cannot read more
-- than the logged-in user's tier allows.
--
-- The web app connects as safestats_web (owns nothing, not superuser, not BYPASSRLS). Per transaction it
-- calls safestats_set_scope(...), which SETs LOCAL the user's settings (safestats.user_id, .tier,
-- .aggregate_level, .record_level, .record_boroughs) and stamps them with the transaction's start time
-- (safestats.transaction). Every check below reads a setting through safestats_setting(), which ignores
-- settings whose stamp is not this transaction's: a value set with set_config(..., false), SET (session),
-- ALTER ROLE ... SET or connection options therefore never counts, in this transaction or the next one on
-- a pooled connection. No (valid) setting means level 0 and no boroughs: no rows.
-- The settings are also capped by the tier's row in access_tiers (mirrored from safestats/access.py), and
-- a borough list only counts for boroughs the user is assigned in user_boroughs (unless the tier sees
-- every borough), so a forged level or borough cannot exceed what the database itself records.
-- Functions pin search_path (pg_temp last) and qualify tables: a temporary table named access_tiers made
-- by the web role cannot stand in for the real one.

-- The tier set as data (seeded by the migration from safestats.access.TIER_POLICIES).
CREATE TABLE access_tiers (
    tier             text PRIMARY KEY,
    health           text NOT NULL CHECK (health IN ('none', 'suppressed', 'full')),
    aggregate_level  smallint NOT NULL,   -- highest suppliers.access_level reaching this tier in aggregates
    record_level     smallint NOT NULL,   -- highest incidents.access_level seen record by record (0: none)
    all_boroughs     boolean NOT NULL,    -- records in every borough; false: only the user's user_boroughs
    min_area_level   text NOT NULL CHECK (min_area_level IN ('borough', 'msoa', 'lsoa')),
    admin            boolean NOT NULL
);
COMMENT ON TABLE access_tiers IS 'What each tier may see (mirror of safestats/access.py TIER_POLICIES; read by the RLS policies)';

-- Boroughs a borough analyst may see record by record. No foreign key to areas: boundaries are reloaded.
CREATE TABLE user_boroughs (
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    borough_code  text NOT NULL,
    PRIMARY KEY (user_id, borough_code)
);
COMMENT ON TABLE user_boroughs IS 'Boroughs (ONS codes) whose records a borough analyst may see; loaded into User.boroughs';

-- The stamp of the current transaction: its start time in microseconds (constant within a transaction,
-- different in the next one on the same backend, the only place a session setting could survive).
CREATE FUNCTION safestats_transaction_stamp() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (extract(epoch FROM now()) * 1000000)::bigint::text
$$;

-- Set the user's scope for this transaction only (the function form of SET LOCAL).
CREATE FUNCTION safestats_set_scope(user_id text, tier text, aggregate_level text, record_level text,
                                    record_boroughs text) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM set_config('safestats.user_id', coalesce(user_id, ''), true),
            set_config('safestats.tier', coalesce(tier, ''), true),
            set_config('safestats.aggregate_level', coalesce(aggregate_level, ''), true),
            set_config('safestats.record_level', coalesce(record_level, ''), true),
            set_config('safestats.record_boroughs', coalesce(record_boroughs, ''), true),
            set_config('safestats.transaction', public.safestats_transaction_stamp(), true);
END;
$$;

-- A setting of this transaction's scope, or NULL (unset, empty, or left over from another transaction).
CREATE FUNCTION safestats_setting(name text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN current_setting('safestats.transaction', true) = public.safestats_transaction_stamp()
                THEN nullif(current_setting('safestats.' || name, true), '') END
$$;

-- A level setting capped by the tier's own level; 0 when either is missing or malformed.
CREATE FUNCTION safestats_capped_level(setting text, tier_level smallint) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(CASE WHEN setting ~ '^[0-9]{1,4}$' THEN least(setting::integer, tier_level) END, 0)
$$;

CREATE FUNCTION safestats_record_level() RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT public.safestats_capped_level(public.safestats_setting('record_level'), t.record_level)
                     FROM public.access_tiers t WHERE t.tier = public.safestats_setting('tier')), 0)
$$;

CREATE FUNCTION safestats_aggregate_level() RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT public.safestats_capped_level(public.safestats_setting('aggregate_level'), t.aggregate_level)
                     FROM public.access_tiers t WHERE t.tier = public.safestats_setting('tier')), 0)
$$;

-- Records in every borough: the tier allows it and the setting asks for it ('*').
CREATE FUNCTION safestats_all_boroughs() RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT t.all_boroughs FROM public.access_tiers t
                     WHERE t.tier = public.safestats_setting('tier')), false)
           AND public.safestats_setting('record_boroughs') IS NOT DISTINCT FROM '*'
$$;

-- The boroughs of the setting that the user may see records in: every listed one for a tier with
-- all_boroughs, otherwise only those assigned to the user in user_boroughs.
CREATE FUNCTION safestats_record_boroughs() RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(code ORDER BY code), '{}')
    FROM unnest(string_to_array(public.safestats_setting('record_boroughs'), ',')) AS code
    WHERE EXISTS (SELECT 1 FROM public.access_tiers t
                  WHERE t.tier = public.safestats_setting('tier')
                    AND (t.all_boroughs OR EXISTS (
                        SELECT 1 FROM public.user_boroughs b
                        WHERE b.user_id::text = public.safestats_setting('user_id') AND b.borough_code = code)))
$$;

CREATE FUNCTION safestats_is_admin() RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT t.admin FROM public.access_tiers t WHERE t.tier = public.safestats_setting('tier')), false)
$$;

-- Whether the tier may break data down to an area level (borough, msoa, lsoa).
CREATE FUNCTION safestats_may_break_down_to(level text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT array_position(ARRAY['borough', 'msoa', 'lsoa'], level)
                            <= array_position(ARRAY['borough', 'msoa', 'lsoa'], t.min_area_level)
                     FROM public.access_tiers t WHERE t.tier = public.safestats_setting('tier')), false)
$$;

-- The suppliers whose data reaches this transaction's user in aggregates.
CREATE FUNCTION safestats_aggregate_suppliers() RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(s.code ORDER BY s.code), '{}') FROM public.suppliers s
    WHERE s.access_level <= public.safestats_aggregate_level()
$$;

-- Row-level security. Each policy's functions sit in scalar subqueries, so PostgreSQL evaluates them once
-- per query (an InitPlan), not once per row. The owner role (the one running migrations and loaders)
-- keeps full access through its own policy: FORCE makes the policies apply to it as well, so nothing the
-- owner runs on behalf of someone else (a view, a SECURITY DEFINER function) can skip them silently.

ALTER TABLE incidents ENABLE ROW LEVEL SECURITY;
ALTER TABLE incidents FORCE ROW LEVEL SECURITY;
CREATE POLICY incidents_web_records ON incidents FOR SELECT TO safestats_web
    USING (access_level <= (SELECT public.safestats_record_level())
           AND ((SELECT public.safestats_all_boroughs())
                OR borough_code = ANY ((SELECT public.safestats_record_boroughs())::text[])));

ALTER TABLE quarantine ENABLE ROW LEVEL SECURITY;
ALTER TABLE quarantine FORCE ROW LEVEL SECURITY;
-- Quarantined lines are raw supplier records: admins only, and only for suppliers within their record level.
CREATE POLICY quarantine_web_admins ON quarantine FOR SELECT TO safestats_web
    USING ((SELECT public.safestats_is_admin())
           AND drop_id IN (SELECT d.id FROM public.drops d JOIN public.suppliers s ON s.code = d.supplier
                           WHERE s.access_level <= (SELECT public.safestats_record_level())));

-- Record-level police outcomes: not granted to the web role at all; RLS so the owner's policy is explicit.
ALTER TABLE police_uk_outcome_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE police_uk_outcome_history FORCE ROW LEVEL SECURITY;

DO $$
DECLARE
    owner_role text := current_user;
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['incidents', 'quarantine', 'police_uk_outcome_history'] LOOP
        EXECUTE format('CREATE POLICY %I ON %I TO %I USING (true) WITH CHECK (true)', t || '_owner', t, owner_role);
    END LOOP;
END;
$$;

-- The partitions hold the same rows; they are never granted to the web role, and RLS is forced on them
-- too (new partitions get it from safestats_ensure_incident_partitions, db/sql/incident_partitions_v2.sql).
DO $$
DECLARE
    part regclass;
BEGIN
    FOR part IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'public.incidents'::regclass LOOP
        PERFORM public.safestats_protect_incident_partition(part);
    END LOOP;
END;
$$;

-- What the web role may read or change. Tables not named here (supplier_tokens, apscheduler_jobs, the
-- materialised rollups, the incident partitions, police_uk_outcome_history) stay closed to it, and so does
-- every table made later unless its migration grants it.
GRANT SELECT ON access_levels, access_tiers, areas, domains, categories, suppliers, supplier_category_map,
                area_population, rollup_refreshes, drops, users, user_boroughs TO safestats_web;
GRANT UPDATE (password_hash, last_login_at) ON users TO safestats_web;
GRANT SELECT ON incidents, quarantine TO safestats_web;     -- rows filtered by the policies above

-- incident_months_span (the span of months with data): db/sql/incident_months_span.sql, made with the
-- rollups' visible views because it reads a rollup too.

-- The bounding-box operator && (PostGIS's geometry_overlaps) marked LEAKPROOF: under row-level security
-- PostgreSQL uses only leakproof conditions of a query as index conditions ahead of the policy, so without
-- it every map-point and drawn-area query of the web role scanned every incident partition instead of the
-- GiST index (measured: bench/README.md). It compares two boxes and raises no error that could reveal a
-- row. Only a superuser may mark a function leakproof: otherwise this says so and the app works, slower.
-- The query layer puts a && test before every ST_Intersects, which stays a filter after the policy.
DO $$
DECLARE
    bbox_overlap regprocedure := (SELECT oprcode::regprocedure FROM pg_operator
                              WHERE oprname = '&&' AND oprleft = 'geometry'::regtype AND oprright = 'geometry'::regtype);
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('ALTER FUNCTION %s LEAKPROOF', bbox_overlap);
    ELSE
        RAISE NOTICE 'not superuser: run ALTER FUNCTION % LEAKPROOF as a superuser so the web role''s spatial queries use the GiST index', bbox_overlap;
    END IF;
END;
$$;
