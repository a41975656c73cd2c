"""Server-side log-in state kept in PostgreSQL: revocable sessions, the failed-sign-in throttle, and TOTP codes.

Everything here lives in the database rather than in a worker's memory, so it holds however many gunicorn
workers or hosts serve the portal:

* **Sessions** (``user_sessions``). Logging in makes a random token; the signed session cookie carries it
  and the table keeps only its sha256. A request is someone's only while that row is live: not revoked
  (log-out, the user or their organisation disabled, an admin ending it), seen within the idle timeout, and
  younger than the absolute lifetime. So a cookie replayed after any of those is refused, which a
  cookie-only session could never do.
* **Throttle** (``login_throttle``). Each sign-in attempt for an account (its lower-case email, known or
  not, so the answer reveals nothing) is counted *before* the password is checked, in one atomic upsert, so
  parallel attempts on several workers cannot slip past the limit; a success clears the count, and a quiet
  spell as long as the lock-out clears it too.
* **TOTP** (RFC 6238, 30 s steps, one step of clock drift either way). A code is accepted once: the step it
  matched is stored and a code from that step or an earlier one is refused (replay).
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import time

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

TOTP_ISSUER = "SafeStats"
TOTP_STEP_SECONDS = 30
TOTP_DRIFT_STEPS = 1


# --- sessions ---------------------------------------------------------------------------------------------

def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(engine: Engine, user_id: int) -> str:
    """A new live session for ``user_id``; returns the token to put in the session cookie."""
    token = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO user_sessions (token_hash, user_id) VALUES (:h, :u)"),
                     {"h": _token_hash(token), "u": user_id})
    return token


def live_session_user_id(engine: Engine | Connection, token: str, idle_minutes: float,
                         max_hours: float) -> int | None:
    """The user id of the live session ``token`` names, or None (unknown, revoked, idle too long, too old).

    Marks the session seen; a session found idle or too old is revoked on the spot, with the reason. Given a
    connection, runs on it (in its transaction, or statement by statement in autocommit), so a request's
    session and user are read in one checkout of the pool."""
    if not token or not isinstance(token, str):
        return None
    with (engine.begin() if isinstance(engine, Engine) else contextlib.nullcontext(engine)) as conn:
        # No row lock: a Dash page fires several requests at once, and two of them both marking the session
        # seen, or both revoking an idle one, is harmless.
        row = conn.execute(text("""
            SELECT user_id,
                   last_seen_at < now() - make_interval(secs => :idle * 60) AS idle,
                   created_at < now() - make_interval(secs => :max * 3600) AS expired,
                   last_seen_at < now() - interval '1 minute' AS stale
            FROM user_sessions WHERE token_hash = :h AND revoked_at IS NULL
        """), {"h": _token_hash(token), "idle": idle_minutes, "max": max_hours}).one_or_none()
        if row is None:
            return None
        if row.idle or row.expired:
            conn.execute(text("UPDATE user_sessions SET revoked_at = now(), revoked_reason = :why "
                              "WHERE token_hash = :h AND revoked_at IS NULL"),
                         {"h": _token_hash(token), "why": "idle timeout" if row.idle else "session lifetime"})
            return None
        if row.stale:   # written at most once a minute per session: every Dash update is a request
            conn.execute(text("UPDATE user_sessions SET last_seen_at = now() WHERE token_hash = :h"),
                         {"h": _token_hash(token)})
        return row.user_id


def end_session(engine: Engine, token: str, reason: str = "logged out") -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE user_sessions SET revoked_at = now(), revoked_reason = :why "
                          "WHERE token_hash = :h AND revoked_at IS NULL"), {"h": _token_hash(token), "why": reason})


def revoke_user_sessions(conn: Connection, user_ids, reason: str) -> int:
    """End every live session of these users (inside the caller's transaction); how many were ended."""
    return conn.execute(text("UPDATE user_sessions SET revoked_at = now(), revoked_reason = :why "
                             "WHERE user_id = ANY(:ids) AND revoked_at IS NULL"),
                        {"ids": list(user_ids), "why": reason}).rowcount


# --- throttle ---------------------------------------------------------------------------------------------

def throttle_account(email: str) -> str:
    return (email or "").strip().lower()


def claim_attempt(engine: Engine, email: str, max_failures: int, lockout_minutes: float) -> bool:
    """Count one sign-in attempt for this account; False when it is over the limit (refuse it unchecked).

    The count goes up before the password or code is checked and comes down only on success
    (``clear_attempts``), so "attempts in a row without a success" is exact across workers."""
    with engine.begin() as conn:
        failures = conn.execute(text("""
            INSERT INTO login_throttle AS t (account, failures, last_failure_at) VALUES (:a, 1, now())
            ON CONFLICT (account) DO UPDATE SET
                failures = CASE WHEN t.last_failure_at < now() - make_interval(secs => :lockout * 60) THEN 1
                                ELSE t.failures + 1 END,
                last_failure_at = now()
            RETURNING failures
        """), {"a": throttle_account(email), "lockout": lockout_minutes}).scalar_one()
    return failures <= max_failures


def clear_attempts(engine_or_conn, email: str) -> None:
    """A success (or an admin unlocking the account): the count starts again from nothing."""
    statement = text("DELETE FROM login_throttle WHERE account = :a")
    if isinstance(engine_or_conn, Engine):
        with engine_or_conn.begin() as conn:
            conn.execute(statement, {"a": throttle_account(email)})
    else:
        engine_or_conn.execute(statement, {"a": throttle_account(email)})


# --- TOTP -------------------------------------------------------------------------------------------------

def new_totp_secret() -> str:
    import pyotp

    return pyotp.random_base32()


def totp_uri(secret: str, email: str) -> str:
    """The otpauth:// URI authenticator apps read from the enrolment QR code."""
    import pyotp

    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=TOTP_ISSUER)


def totp_qr_svg(uri: str) -> str:
    """The URI as an inline SVG QR code (no image files, nothing fetched)."""
    import segno

    return segno.make(uri, error="m").svg_inline(scale=5, border=2)


def matching_totp_step(secret: str, code: str, now: float | None = None) -> int | None:
    """The time step whose code is ``code`` (allowing one step of drift), or None."""
    import pyotp

    code = "".join((code or "").split())
    if not secret or len(code) != 6 or not code.isdigit():
        return None
    otp = pyotp.TOTP(secret)
    step = int((time.time() if now is None else now) // TOTP_STEP_SECONDS)
    for candidate in range(step - TOTP_DRIFT_STEPS, step + TOTP_DRIFT_STEPS + 1):
        if hmac.compare_digest(otp.generate_otp(candidate), code):
            return candidate
    return None


def accept_totp_code(engine: Engine, user_id: int, code: str) -> bool:
    """Whether ``code`` is a valid, not yet used code of the user's TOTP secret; confirms an enrolment.

    The step is recorded in the same UPDATE that checks it is newer than the last one, so the same code
    sent twice (even to two workers at once) is accepted once."""
    with engine.connect() as conn:
        secret = conn.execute(text("SELECT totp_secret FROM users WHERE id = :id"), {"id": user_id}).scalar()
    step = matching_totp_step(secret, code)
    if step is None:
        return False
    with engine.begin() as conn:
        accepted = conn.execute(text("""
            UPDATE users SET totp_last_step = :step, totp_confirmed_at = coalesce(totp_confirmed_at, now())
            WHERE id = :id AND totp_secret = :secret AND (totp_last_step IS NULL OR totp_last_step < :step)
            RETURNING id
        """), {"id": user_id, "step": step, "secret": secret}).one_or_none()
    return accepted is not None


def pending_totp_secret(engine: Engine, user_id: int) -> str:
    """The secret a user who has not confirmed a second factor is enrolling with (made on first ask)."""
    with engine.begin() as conn:
        row = conn.execute(text("SELECT totp_secret, totp_confirmed_at FROM users WHERE id = :id FOR UPDATE"),
                           {"id": user_id}).one()
        if row.totp_confirmed_at is not None:
            raise ValueError("this user's second factor is already set up")
        if row.totp_secret:
            return row.totp_secret
        secret = new_totp_secret()
        conn.execute(text("UPDATE users SET totp_secret = :s, totp_last_step = NULL WHERE id = :id"),
                     {"s": secret, "id": user_id})
        return secret


def reset_totp(conn: Connection, user_id: int) -> None:
    """Forget the user's second factor (lost phone): they enrol again at their next sign-in."""
    conn.execute(text("UPDATE users SET totp_secret = NULL, totp_confirmed_at = NULL, totp_last_step = NULL "
                      "WHERE id = :id"), {"id": user_id})
