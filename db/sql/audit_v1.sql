-- The audit log: one row per data view, export and denied attempt; append-only for the web role and
-- hash-chained, so an edit made later (even as superuser) is found by `safestats audit verify`.
--
-- Each row's hash = sha256(previous row's hash || its canonical text) where the canonical text is the JSON
-- array built by audit_row_text (safestats/audit.py builds the same text independently to verify). Rows are
-- chained in `seq` order, assigned under a transaction-scoped advisory lock by the insert trigger, so
-- concurrent writers (several gunicorn workers) form one chain with no gaps and no forks.

DO $$
BEGIN
    -- The web app's login role (dbsec's migration creates it with LOGIN; here only so grants work without it).
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'safestats_web') THEN
        CREATE ROLE safestats_web NOLOGIN;
    END IF;
END $$;

CREATE TABLE audit_log (
    seq            bigint PRIMARY KEY,             -- position in the chain (set by the trigger)
    at             timestamptz NOT NULL,           -- set by the trigger: the server's clock, never the caller's
    user_id        bigint,                         -- NULL: not logged in
    email          text,
    organisation   text,
    tier           text NOT NULL,                  -- the policy's tier at the time ('none' when unidentified)
    kind           text NOT NULL CHECK (kind IN ('callback', 'endpoint', 'job')),
    target         text NOT NULL,                  -- callback function, endpoint or job name
    filter_state   text,                           -- the FilterState query string the call carried
    rows_returned  integer,                        -- data items sent (areas, bars, rows, points, cells)
    exported       boolean NOT NULL DEFAULT false,
    allowed        boolean NOT NULL,
    outcome        text NOT NULL,                  -- ok, no update, error, denied, unregistered, http NNN
    prev_hash      bytea NOT NULL,
    hash           bytea NOT NULL
);
COMMENT ON TABLE audit_log IS 'Append-only, hash-chained audit of every data view, export and denied call (safestats/audit.py)';
CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_user_idx ON audit_log (user_id, at);

-- The canonical text hashed for a row: a JSON array of its fields in a fixed order, the time in UTC.
CREATE FUNCTION audit_row_text(a audit_log) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_array(a.seq, to_char(a.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                             a.user_id, a.email, a.organisation, a.tier, a.kind, a.target, a.filter_state,
                             a.rows_returned, a.exported, a.allowed, a.outcome)::text
$$;

-- SECURITY DEFINER: the web role may only INSERT; reading the chain's head is done as the table's owner.
CREATE FUNCTION audit_log_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    last_seq  bigint;
    last_hash bytea;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('safestats.audit_log'));
    SELECT seq, hash INTO last_seq, last_hash FROM audit_log ORDER BY seq DESC LIMIT 1;
    NEW.seq := coalesce(last_seq, 0) + 1;
    NEW.at := clock_timestamp();
    NEW.prev_hash := coalesce(last_hash, decode(repeat('00', 32), 'hex'));
    NEW.hash := sha256(NEW.prev_hash || convert_to(audit_row_text(NEW), 'UTF8'));
    RETURN NEW;
END $$;
CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_chain();

-- No one edits the log through the normal path (the owner included); grants keep the web role out anyway.
CREATE FUNCTION audit_log_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();

REVOKE ALL ON audit_log FROM PUBLIC;
REVOKE ALL ON audit_log FROM safestats_web;
GRANT SELECT, INSERT ON audit_log TO safestats_web;
REVOKE ALL ON FUNCTION audit_log_chain() FROM PUBLIC;
