"""Logins: argon2id password hashes, the Flask-Login user, and the /login and /logout routes.

Passwords are hashed with argon2id at OWASP's recommended minimum (19 MiB, 2 passes, 1 lane); a stored
hash made with older parameters is upgraded on the next successful login. ``authenticate`` answers
"who is this?" and nothing else: unknown email, wrong password and deactivated account all come back as
``None`` (and cost the same argon2 work), so the login page shows one generic message and reveals nothing.
The login form carries a per-session CSRF token, a successful login starts a fresh session (no fixation),
and ``next`` only ever redirects to a path on this site. The routes are plain Flask; the Dash app behind
them is guarded in ``dashapp.create_app``.
"""
from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask import (Blueprint, current_app, redirect, render_template_string, request, session,
                   url_for)
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from sqlalchemy import text
from sqlalchemy.engine import Engine

from dashapp import guard
from safestats.access import TIERS

# OWASP Password Storage Cheat Sheet, argon2id minimum: m=19 MiB, t=2, p=1. argon2id is the default type.
password_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
MIN_PASSWORD_LENGTH = 8
GENERIC_LOGIN_ERROR = "Email or password not recognised."
# Verified against when the email is unknown, so a miss costs the same time as a wrong password.
_DUMMY_HASH = password_hasher.hash(secrets.token_hex(16))

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
login_manager.login_view = "auth.login"


@dataclass(frozen=True)
class User(UserMixin):
    """A logged-in portal user (a row of ``users`` without its password hash)."""

    id: int
    email: str
    display_name: str
    organisation: str
    tier: str
    active: bool = True
    # Boroughs (ONS codes) a borough analyst is assigned to; what they may see record by record (access.py).
    boroughs: frozenset[str] = frozenset()

    @property
    def is_active(self) -> bool:
        return self.active

    def get_id(self) -> str:
        return str(self.id)


_USER_COLUMNS = "id, email, display_name, organisation, tier, active"
# The columns plus the user's assigned boroughs (user_boroughs), for the users who log in and are loaded.
_USER_COLUMNS_AND_BOROUGHS = (_USER_COLUMNS + ", ARRAY(SELECT b.borough_code FROM user_boroughs b "
                              "WHERE b.user_id = users.id ORDER BY 1) AS boroughs")


def _user(row) -> User:
    return User(id=row.id, email=row.email, display_name=row.display_name, organisation=row.organisation,
                tier=row.tier, active=row.active, boroughs=frozenset(getattr(row, "boroughs", None) or ()))


def hash_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    return password_hasher.hash(password)


def upsert_user(engine: Engine, email: str, password: str, display_name: str, organisation: str = "GLA",
                tier: str = "viewer") -> User:
    """Create the user, or update the one with this email (case-insensitive): new password, name, tier.

    Re-running it also re-activates a deactivated account, as an admin re-adding someone would expect.
    """
    email = (email or "").strip()
    if "@" not in email:
        raise ValueError(f"not an email address: {email!r}")
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r} (one of {', '.join(TIERS)})")
    sql = text(f"""
        INSERT INTO users (email, display_name, organisation, tier, password_hash)
        VALUES (:email, :display_name, :organisation, :tier, :password_hash)
        ON CONFLICT ((lower(email))) DO UPDATE
           SET display_name = EXCLUDED.display_name, organisation = EXCLUDED.organisation,
               tier = EXCLUDED.tier, password_hash = EXCLUDED.password_hash, active = true
        RETURNING {_USER_COLUMNS}
    """)
    with engine.begin() as conn:
        row = conn.execute(sql, {"email": email, "display_name": display_name or email,
                                 "organisation": organisation, "tier": tier,
                                 "password_hash": hash_password(password)}).one()
    return _user(row)


def authenticate(engine: Engine, email: str, password: str) -> User | None:
    """The active user with this email and password, or None. Records the login and upgrades old hashes."""
    if not email or not password:
        return None
    with engine.connect() as conn:
        row = conn.execute(text(f"SELECT {_USER_COLUMNS_AND_BOROUGHS}, password_hash FROM users "
                                f"WHERE lower(email) = lower(:email)"),
                           {"email": email.strip()}).one_or_none()
    try:
        password_hasher.verify(row.password_hash if row else _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if row is None or not row.active:
        return None
    with engine.begin() as conn:
        if password_hasher.check_needs_rehash(row.password_hash):
            conn.execute(text("UPDATE users SET password_hash = :h WHERE id = :id"),
                         {"h": password_hasher.hash(password), "id": row.id})
        conn.execute(text("UPDATE users SET last_login_at = now() WHERE id = :id"), {"id": row.id})
    return _user(row)


def load_user_by_id(engine: Engine, user_id: str) -> User | None:
    """The active user with this id (from the session cookie), or None, which logs the session out."""
    try:
        user_id_int = int(user_id)
    except (TypeError, ValueError):
        return None
    with engine.connect() as conn:
        row = conn.execute(text(f"SELECT {_USER_COLUMNS_AND_BOROUGHS} FROM users WHERE id = :id AND active"),
                           {"id": user_id_int}).one_or_none()
    return _user(row) if row else None


@login_manager.user_loader
def _load_user(user_id: str) -> User | None:
    return load_user_by_id(current_app.extensions["safestats_engine"], user_id)


def safe_next_path(target: str | None) -> str:
    """``target`` if it is a path on this site, else "/": never an open redirect to another host."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def csrf_token() -> str:
    """This session's CSRF token for plain HTML forms (created on first use)."""
    if "csrf_token" not in session:
        session["csrf_token"] = secrets.token_urlsafe(32)
    return session["csrf_token"]


def _csrf_ok() -> bool:
    sent = request.form.get("csrf_token", "")
    expected = session.get("csrf_token", "")
    return bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())


LOGIN_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Sign in · SafeStats</title>
  <link rel="stylesheet" href="{{ url_for('public_asset', filename='bootstrap.min.css') }}">
  <link rel="stylesheet" href="{{ url_for('public_asset', filename='safestats.css') }}">
</head>
<body class="login-page">
  <header class="ss-navbar navbar navbar-dark">
    <div class="container-fluid">
      <span class="navbar-brand"><span class="ss-brand-mark">SafeStats</span>
        <span class="ss-brand-sub">London crime and community safety data</span></span>
    </div>
  </header>
  <main class="container">
    <div class="row justify-content-center">
      <div class="col-sm-10 col-md-7 col-lg-5">
        <div class="card login-card shadow-sm">
          <div class="card-body p-4">
            <h1 class="h4 mb-1">Sign in</h1>
            <p class="text-muted small mb-4">For authorised users of the Greater London Authority's
              community safety data portal.</p>
            {% if error %}<div class="alert alert-danger py-2" role="alert" id="login-error">{{ error }}</div>{% endif %}
            <form method="post" action="{{ url_for('auth.login', next=next_path) }}" novalidate>
              <input type="hidden" name="csrf_token" value="{{ csrf }}">
              <div class="mb-3">
                <label for="email" class="form-label">Email</label>
                <input type="email" class="form-control" id="email" name="email" value="{{ email }}"
                       autocomplete="username" required autofocus>
              </div>
              <div class="mb-4">
                <label for="password" class="form-label">Password</label>
                <input type="password" class="form-control" id="password" name="password"
                       autocomplete="current-password" required>
              </div>
              <button type="submit" class="btn btn-primary w-100" id="login-submit">Sign in</button>
            </form>
          </div>
        </div>
        <p class="text-muted small text-center mt-3">Contact your SafeStats administrator if you need an
          account.</p>
      </div>
    </div>
  </main>
</body>
</html>"""


@bp.route("/login", methods=["GET", "POST"])
@guard.endpoint(guard.PUBLIC, audit=False)
def login():
    next_path = safe_next_path(request.args.get("next"))
    if request.method == "GET":
        if current_user.is_authenticated:
            return redirect(next_path)
        return render_template_string(LOGIN_PAGE, error=None, email="", next_path=next_path, csrf=csrf_token())
    email = request.form.get("email", "").strip()
    user = None
    if _csrf_ok():
        user = authenticate(current_app.extensions["safestats_engine"], email, request.form.get("password", ""))
    if user is None:
        return render_template_string(LOGIN_PAGE, error=GENERIC_LOGIN_ERROR, email=email, next_path=next_path,
                                      csrf=csrf_token()), 401
    session.clear()  # a fresh session: nothing an attacker planted before login survives it
    login_user(user)
    return redirect(next_path)


@bp.route("/logout", methods=["GET", "POST"])
@guard.endpoint(guard.PUBLIC, audit=False)
def logout():
    # No CSRF token here: the worst a forged logout can do is sign someone out, and the navbar's plain link
    # (GET) then works without a form inside the Dash layout.
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))
