-- Personal API tokens for the read API /api/v1/ (safestats/api_tokens.py, dashapp/api.py), and the per-token
-- rate limit counted here so that it holds across every web worker.
--
-- A token belongs to one user and carries that user's tier as it is at each call (the API loads the user
-- afresh: a disabled user's or organisation's tokens stop working at once). Only the sha256 of the token is
-- kept (token_hash), as for the supplier feed tokens. Revoking sets revoked_at; the row stays for the
-- owner's list and the audit trail.
CREATE TABLE api_tokens (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    token_hash    char(64) NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
COMMENT ON TABLE api_tokens IS 'Personal bearer tokens for /api/v1/; token_hash = sha256 hex of the whole token';
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id);

-- One row per token: calls counted in the current fixed one-minute window (safestats.api_tokens.claim_call
-- upserts it atomically, like login_throttle).
CREATE TABLE api_rate_limit (
    token_id      bigint PRIMARY KEY REFERENCES api_tokens (id) ON DELETE CASCADE,
    window_start  timestamptz NOT NULL,
    calls         integer NOT NULL
);
COMMENT ON TABLE api_rate_limit IS 'Calls per personal API token in the current one-minute window (the API rate limit)';

-- The web app (role safestats_web) creates, lists and revokes tokens and counts calls.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'safestats_web') THEN
        GRANT SELECT, INSERT, UPDATE ON api_tokens, api_rate_limit TO safestats_web;
    END IF;
END;
$$;
