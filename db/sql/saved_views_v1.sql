-- Saved and shared dashboard views, version 1 (migration 0014; safestats/saved_views.py).
--
-- A saved view is a name, a description, its owner and the dashboard's FilterState query string (filters,
-- map layers, zoom and centre; with `asat=<drop id>` when it is pinned to the data as it stood). Shares give
-- it to named users, to everyone of an organisation, or to everyone of a tier.
--
-- The web role reads and writes these tables itself, under row-level security that reads the transaction's
-- scope (safestats_set_scope, db/sql/access_control_v1.sql): a user reads only the views they own or that
-- are shared with them (by user, their organisation or their tier, as the users table records them), and
-- creates, changes, deletes and shares only their own. The module checks the same in Python first; this is
-- the second lock, for a bug or a forged request.

CREATE TABLE saved_views (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 120),
    description  text NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    state        text NOT NULL CHECK (length(state) <= 4000),   -- FilterState.to_query_string()
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX saved_views_owner_idx ON saved_views (owner_id);
COMMENT ON TABLE saved_views IS 'Named dashboard views (a FilterState query string; asat=<drop> when pinned "as at")';

-- One row per recipient: exactly one of a user, an organisation or a tier.
CREATE TABLE saved_view_shares (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    view_id          bigint NOT NULL REFERENCES saved_views (id) ON DELETE CASCADE,
    user_id          bigint REFERENCES users (id) ON DELETE CASCADE,
    organisation_id  bigint REFERENCES organisations (id) ON DELETE CASCADE,
    tier             text REFERENCES access_tiers (tier),
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(user_id, organisation_id, tier) = 1)
);
CREATE UNIQUE INDEX saved_view_shares_user ON saved_view_shares (view_id, user_id) WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX saved_view_shares_org ON saved_view_shares (view_id, organisation_id) WHERE organisation_id IS NOT NULL;
CREATE UNIQUE INDEX saved_view_shares_tier ON saved_view_shares (view_id, tier) WHERE tier IS NOT NULL;
CREATE INDEX saved_view_shares_user_idx ON saved_view_shares (user_id) WHERE user_id IS NOT NULL;
COMMENT ON TABLE saved_view_shares IS 'Who a saved view is shared with: a user, an organisation or a tier';

-- The acting user's id from this transaction's scope, or NULL (no scope, or not a number).
CREATE FUNCTION safestats_acting_user_id() RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN s ~ '^[0-9]{1,18}$' THEN s::bigint END FROM (SELECT public.safestats_setting('user_id') AS s) t
$$;

-- Whether a view is shared with the acting user (by user, their organisation or their tier, as recorded in
-- users for an active account). SECURITY DEFINER so the saved_views policy can read the shares without
-- the shares' own policy reading saved_views back (PostgreSQL refuses such a cycle of policies).
CREATE FUNCTION safestats_view_shared_with_me(view bigint) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (
        SELECT 1 FROM public.saved_view_shares s
        JOIN public.users u ON u.id = public.safestats_acting_user_id() AND u.active
        WHERE s.view_id = view
          AND (s.user_id = u.id OR s.organisation_id = u.organisation_id OR s.tier = u.tier))
$$;
REVOKE ALL ON FUNCTION safestats_view_shared_with_me(bigint) FROM PUBLIC;

ALTER TABLE saved_views ENABLE ROW LEVEL SECURITY;
ALTER TABLE saved_views FORCE ROW LEVEL SECURITY;
CREATE POLICY saved_views_web_read ON saved_views FOR SELECT TO safestats_web
    USING (owner_id = (SELECT public.safestats_acting_user_id()) OR public.safestats_view_shared_with_me(id));
CREATE POLICY saved_views_web_insert ON saved_views FOR INSERT TO safestats_web
    WITH CHECK (owner_id = (SELECT public.safestats_acting_user_id()));
CREATE POLICY saved_views_web_update ON saved_views FOR UPDATE TO safestats_web
    USING (owner_id = (SELECT public.safestats_acting_user_id()))
    WITH CHECK (owner_id = (SELECT public.safestats_acting_user_id()));
CREATE POLICY saved_views_web_delete ON saved_views FOR DELETE TO safestats_web
    USING (owner_id = (SELECT public.safestats_acting_user_id()));

ALTER TABLE saved_view_shares ENABLE ROW LEVEL SECURITY;
ALTER TABLE saved_view_shares FORCE ROW LEVEL SECURITY;
-- The owner sees and changes a view's shares; a recipient sees only the rows that name them.
CREATE POLICY saved_view_shares_web_read ON saved_view_shares FOR SELECT TO safestats_web
    USING (EXISTS (SELECT 1 FROM public.saved_views v
                   WHERE v.id = view_id AND v.owner_id = (SELECT public.safestats_acting_user_id()))
           OR user_id = (SELECT public.safestats_acting_user_id())
           OR organisation_id = (SELECT u.organisation_id FROM public.users u
                                 WHERE u.id = (SELECT public.safestats_acting_user_id()))
           OR tier = (SELECT u.tier FROM public.users u WHERE u.id = (SELECT public.safestats_acting_user_id())));
CREATE POLICY saved_view_shares_web_insert ON saved_view_shares FOR INSERT TO safestats_web
    WITH CHECK (EXISTS (SELECT 1 FROM public.saved_views v
                        WHERE v.id = view_id AND v.owner_id = (SELECT public.safestats_acting_user_id())));
CREATE POLICY saved_view_shares_web_delete ON saved_view_shares FOR DELETE TO safestats_web
    USING (EXISTS (SELECT 1 FROM public.saved_views v
                   WHERE v.id = view_id AND v.owner_id = (SELECT public.safestats_acting_user_id())));

DO $$
DECLARE
    owner_role text := current_user;
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['saved_views', 'saved_view_shares'] LOOP
        EXECUTE format('CREATE POLICY %I ON %I TO %I USING (true) WITH CHECK (true)', t || '_owner', t, owner_role);
    END LOOP;
END;
$$;

-- What the web role may do: read, add and delete views and shares; change a view's name, description,
-- state and time stamp (never its owner or id). The policies above decide which rows.
GRANT SELECT, INSERT, DELETE ON saved_views, saved_view_shares TO safestats_web;
GRANT UPDATE (name, description, state, updated_at) ON saved_views TO safestats_web;
DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SEQUENCE %s TO safestats_web', pg_get_serial_sequence('saved_views', 'id'));
    EXECUTE format('GRANT USAGE ON SEQUENCE %s TO safestats_web', pg_get_serial_sequence('saved_view_shares', 'id'));
END;
$$;
GRANT EXECUTE ON FUNCTION safestats_view_shared_with_me(bigint) TO safestats_web;
