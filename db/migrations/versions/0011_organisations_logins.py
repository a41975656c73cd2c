"""Organisations as data, organisation admins, and hardened log-in: server-side sessions, a shared throttle, TOTP.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29

``organisations`` lists the bodies whose staff log in (seeded from ``db/sql/organisations_v1.sql``: GLA,
MOPAC, the 33 boroughs, the Met, City of London Police, BTP, LFB, TfL, LAS and London's acute NHS trusts),
each with the highest tier its members may hold (``max_tier``). ``users.organisation`` (free text) becomes
``users.organisation_id``; existing texts are matched to a seeded organisation by code or name, and any other
text becomes an organisation of kind 'other' so no user is lost. ``users.org_admin`` marks organisation
admins (they manage their own organisation's users); ``users.totp_*`` hold the second factor.

``user_sessions`` makes sessions revocable: the session cookie carries a random token whose sha256 is a row
here, so logging out, disabling the user or the organisation, or the idle timeout ends the session on the
server and a replayed cookie is refused. ``login_throttle`` counts failed sign-ins per account in the
database, so the limit holds across every gunicorn worker and host.
"""
from alembic import op

from db import read_sql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TIERS = "'viewer', 'borough_analyst', 'partner_analyst', 'istv_analyst', 'admin'"


def upgrade() -> None:
    op.execute(f"""
    CREATE TABLE organisations (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        code        text NOT NULL CHECK (code ~ '^[A-Za-z0-9_.-]{{1,40}}$'),
        name        text NOT NULL CHECK (length(trim(name)) > 0),
        kind        text NOT NULL DEFAULT 'other'
                    CHECK (kind IN ('authority', 'borough', 'police', 'fire', 'transport', 'ambulance',
                                    'nhs_trust', 'other')),
        max_tier    text NOT NULL DEFAULT 'partner_analyst' CHECK (max_tier IN ({TIERS})),
        active      boolean NOT NULL DEFAULT true,
        created_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE UNIQUE INDEX organisations_code_unique ON organisations (upper(code));
    COMMENT ON TABLE organisations IS 'Bodies whose staff log in; max_tier caps the tier of their members';
    """)
    op.execute(read_sql("organisations_v1.sql"))
    op.execute("""
    -- Free-text organisations that match no seeded one by code or name are kept as organisations of their own.
    INSERT INTO organisations (code, name, kind, max_tier)
    SELECT DISTINCT ON (upper(left(regexp_replace(u.organisation, '[^A-Za-z0-9_.-]+', '_', 'g'), 40)))
           left(regexp_replace(u.organisation, '[^A-Za-z0-9_.-]+', '_', 'g'), 40), u.organisation, 'other', 'admin'
    FROM users u
    WHERE NOT EXISTS (SELECT 1 FROM organisations o
                      WHERE upper(o.code) = upper(u.organisation) OR lower(o.name) = lower(u.organisation))
      AND NOT EXISTS (SELECT 1 FROM organisations o WHERE upper(o.code) =
                      upper(left(regexp_replace(u.organisation, '[^A-Za-z0-9_.-]+', '_', 'g'), 40)));

    ALTER TABLE users ADD COLUMN organisation_id bigint REFERENCES organisations (id);
    UPDATE users u SET organisation_id = o.id FROM organisations o
    WHERE upper(o.code) = upper(u.organisation) OR lower(o.name) = lower(u.organisation)
       OR upper(o.code) = upper(left(regexp_replace(u.organisation, '[^A-Za-z0-9_.-]+', '_', 'g'), 40));
    ALTER TABLE users ALTER COLUMN organisation_id SET NOT NULL;
    ALTER TABLE users DROP COLUMN organisation;
    CREATE INDEX users_organisation_idx ON users (organisation_id);

    ALTER TABLE users
        ADD COLUMN org_admin          boolean NOT NULL DEFAULT false,
        ADD COLUMN totp_secret        text,
        ADD COLUMN totp_confirmed_at  timestamptz,
        ADD COLUMN totp_last_step     bigint,
        ADD COLUMN disabled_at        timestamptz;
    COMMENT ON COLUMN users.totp_secret IS 'base32 TOTP secret (RFC 6238); confirmed once the user has entered a code from it';
    COMMENT ON COLUMN users.totp_last_step IS 'the last accepted TOTP time step: a code is accepted once';

    CREATE TABLE user_sessions (
        token_hash      char(64) PRIMARY KEY,
        user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        created_at      timestamptz NOT NULL DEFAULT now(),
        last_seen_at    timestamptz NOT NULL DEFAULT now(),
        revoked_at      timestamptz,
        revoked_reason  text
    );
    CREATE INDEX user_sessions_live_idx ON user_sessions (user_id) WHERE revoked_at IS NULL;
    COMMENT ON TABLE user_sessions IS 'Live and ended log-in sessions; token_hash = sha256 hex of the token in the session cookie';

    CREATE TABLE login_throttle (
        account          text PRIMARY KEY,
        failures         integer NOT NULL DEFAULT 0,
        last_failure_at  timestamptz NOT NULL DEFAULT now()
    );
    COMMENT ON TABLE login_throttle IS 'Sign-in attempts in a row per account (lower-case email) without a success';
    """)
    # The web app may connect as the unprivileged role safestats_web (made by the access-tier or audit
    # migration, whichever runs first): it signs users in and runs the admin pages, so it needs these tables.
    op.execute("""
    DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'safestats_web') THEN
            GRANT SELECT, INSERT, UPDATE ON organisations, users, user_sessions TO safestats_web;
            GRANT SELECT, INSERT, UPDATE, DELETE ON login_throttle TO safestats_web;
            -- The account pages assign a borough analyst's boroughs (safestats.accounts.save_account).
            IF to_regclass('user_boroughs') IS NOT NULL THEN
                GRANT INSERT, DELETE ON user_boroughs TO safestats_web;
            END IF;
            EXECUTE format('GRANT USAGE ON SEQUENCE %s TO safestats_web', pg_get_serial_sequence('organisations', 'id'));
            EXECUTE format('GRANT USAGE ON SEQUENCE %s TO safestats_web', pg_get_serial_sequence('users', 'id'));
        END IF;
    END
    $$;
    """)


def downgrade() -> None:
    op.execute("""
    DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'safestats_web') AND to_regclass('user_boroughs') IS NOT NULL THEN
            REVOKE INSERT, DELETE ON user_boroughs FROM safestats_web;
        END IF;
    END
    $$;
    """)
    op.execute("""
    DROP TABLE IF EXISTS login_throttle;
    DROP TABLE IF EXISTS user_sessions;
    ALTER TABLE users ADD COLUMN organisation text;
    -- Back to text: the code of a seeded organisation (as the app wrote it), the original text of any other.
    UPDATE users u SET organisation = CASE WHEN o.kind = 'other' THEN o.name ELSE o.code END
    FROM organisations o WHERE o.id = u.organisation_id;
    ALTER TABLE users ALTER COLUMN organisation SET NOT NULL;
    ALTER TABLE users DROP COLUMN organisation_id, DROP COLUMN org_admin, DROP COLUMN totp_secret,
        DROP COLUMN totp_confirmed_at, DROP COLUMN totp_last_step, DROP COLUMN disabled_at;
    DROP TABLE IF EXISTS organisations;
    """)
