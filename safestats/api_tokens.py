"""Personal API tokens for the read API (``/api/v1/``): a user's own, named, shown once, stored hashed, revocable.

A token reads ``ssa_<id>_<secret>`` (``safestats.bearer_tokens``, the scheme the supplier feed tokens use
too). It is the user's: it carries no tier of its own, and the API loads the user afresh on every call
(``dashapp.api``), so a changed tier applies at once and a disabled user's (or organisation's) tokens stop
working. A token may expire (``expires_at``); revoking it ends it at once and keeps the row for the
owner's list. Users create, list and revoke their own tokens on their account page
(``dashapp.account``); every function here that changes a token takes the owner's id and touches only
their rows.

``claim_call`` is the rate limit: calls per token in a fixed one-minute window, counted in PostgreSQL with
one atomic upsert (as ``login_security.claim_attempt`` counts sign-ins), so it holds across every worker.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.engine import Engine

from safestats import bearer_tokens

TOKEN_PREFIX = "ssa"
MAX_NAME_LENGTH = 100
MAX_TOKENS_PER_USER = 20  # live ones: enough for every tool a person uses, not a way to multiply the rate limit


class ApiTokenError(ValueError):
    """A token request that cannot be done; the message says what to change."""


@dataclass(frozen=True)
class ApiToken:
    """A row of ``api_tokens`` (never the token itself)."""

    id: int
    user_id: int
    name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    expired: bool = False

    @property
    def active(self) -> bool:
        return self.revoked_at is None and not self.expired


_COLUMNS = ("id, user_id, name, created_at, expires_at, revoked_at, last_used_at, "
            "coalesce(expires_at <= now(), false) AS expired")


def _token(row) -> ApiToken:
    return ApiToken(id=row.id, user_id=row.user_id, name=row.name, created_at=row.created_at,
                    expires_at=row.expires_at, revoked_at=row.revoked_at, last_used_at=row.last_used_at,
                    expired=row.expired)


def create_token(engine: Engine, user_id: int, name: str, expires_at: datetime | None = None
                 ) -> tuple[ApiToken, str]:
    """A new token for ``user_id`` named ``name``: its row and the token (shown once, stored only hashed)."""
    name = " ".join((name or "").split())
    if not name:
        raise ApiTokenError("give the token a name (what it is for, e.g. 'R on my laptop')")
    if len(name) > MAX_NAME_LENGTH:
        raise ApiTokenError(f"a token name may be at most {MAX_NAME_LENGTH} characters")
    secret = bearer_tokens.new_secret()
    with engine.begin() as conn:
        if expires_at is not None and conn.execute(text("SELECT CAST(:e AS timestamptz) <= now()"),
                                                   {"e": expires_at}).scalar():
            raise ApiTokenError("the expiry date is in the past: choose a later date, or none")
        live = conn.execute(text("""SELECT count(*) FROM api_tokens WHERE user_id = :u AND revoked_at IS NULL
                                    AND (expires_at IS NULL OR expires_at > now())"""), {"u": user_id}).scalar()
        if live >= MAX_TOKENS_PER_USER:
            raise ApiTokenError(f"you already have {live} live tokens: revoke one you no longer use first")
        # The id is part of the token, so the row is made with a placeholder hash and given the real one in
        # the same transaction.
        row = conn.execute(text("""INSERT INTO api_tokens (user_id, name, token_hash, expires_at)
                                   VALUES (:u, :name, :placeholder, :expires) RETURNING id"""),
                           {"u": user_id, "name": name, "placeholder": bearer_tokens.placeholder_hash(),
                            "expires": expires_at}).one()
        token = bearer_tokens.compose(TOKEN_PREFIX, row.id, secret)
        saved = conn.execute(text(f"UPDATE api_tokens SET token_hash = :h WHERE id = :id RETURNING {_COLUMNS}"),
                             {"h": bearer_tokens.token_hash(token), "id": row.id}).one()
    return _token(saved), token


def list_tokens(engine: Engine, user_id: int) -> list[ApiToken]:
    """The user's tokens, newest first (revoked and expired ones included, marked)."""
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT {_COLUMNS} FROM api_tokens WHERE user_id = :u ORDER BY id DESC"),
                            {"u": user_id})
        return [_token(r) for r in rows]


def revoke_token(engine: Engine, user_id: int, token_id: int) -> ApiToken:
    """Revoke one of the user's own tokens (at once); revoking it again changes nothing."""
    with engine.begin() as conn:
        row = conn.execute(text(f"""UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now())
                                    WHERE id = :id AND user_id = :u RETURNING {_COLUMNS}"""),
                           {"id": token_id, "u": user_id}).one_or_none()
    if row is None:
        raise ApiTokenError(f"you have no token {token_id}")
    return _token(row)


def verify_token(engine: Engine, presented: str) -> ApiToken | None:
    """The live token ``presented`` matches, or None (malformed, unknown, wrong, revoked or expired).

    Marks it used. Whether its user may still act (active, in an active organisation) is the caller's check."""
    token_id = bearer_tokens.token_id(TOKEN_PREFIX, presented)
    if token_id is None:
        return None
    with engine.begin() as conn:
        row = conn.execute(text(f"SELECT {_COLUMNS}, token_hash FROM api_tokens WHERE id = :id"),
                           {"id": token_id}).one_or_none()
        if not bearer_tokens.matches(presented, row.token_hash if row is not None else None):
            return None
        if row.revoked_at is not None or row.expired:
            return None
        conn.execute(text("UPDATE api_tokens SET last_used_at = now() WHERE id = :id"), {"id": row.id})
    return _token(row)


def claim_call(engine: Engine, token_id: int, calls_per_minute: int) -> int | None:
    """Count one call of the token in the current minute: None when it is within the limit, otherwise the
    seconds until the window ends (the 429 response's Retry-After)."""
    with engine.begin() as conn:
        row = conn.execute(text("""
            INSERT INTO api_rate_limit AS r (token_id, window_start, calls)
            VALUES (:id, date_trunc('minute', now()), 1)
            ON CONFLICT (token_id) DO UPDATE SET
                calls = CASE WHEN r.window_start < date_trunc('minute', now()) THEN 1 ELSE r.calls + 1 END,
                window_start = date_trunc('minute', now())
            RETURNING calls,
                      greatest(1, ceil(extract(epoch FROM window_start + interval '1 minute' - now())))::int
                          AS retry_after
        """), {"id": token_id}).one()
    return None if row.calls <= calls_per_minute else row.retry_after
