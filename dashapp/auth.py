"""Logins: argon2id passwords, the Flask-Login user, server-side sessions, the throttle, TOTP, and the routes.

Passwords are hashed with argon2id at OWASP's recommended minimum (19 MiB, 2 passes, 1 lane); a stored
hash made with older parameters is upgraded on the next successful login. ``authenticate`` answers
"who is this?" and nothing else: unknown email, wrong password and deactivated account (or organisation)
all come back as ``None`` (and cost the same argon2 work), so the login page shows one generic message.

Signing in (``/login``): every attempt first claims a slot in the account's failed-sign-in count in
PostgreSQL (``safestats.login_security``), so the eleventh attempt in a row is refused unchecked on whichever
worker it lands; then the password; then, for tiers whose policy asks for it (ISTV analysts, admins) and for
organisation admins, a TOTP code (``/login/second-factor``; a user without one enrols there, shown a QR code
and the secret). A completed sign-in starts a fresh Flask session (no fixation) holding only a random
session token: the session is live while its ``user_sessions`` row is, so log-out, disabling the user or
organisation, and the idle timeout end it on the server and a replayed cookie is refused. Forms carry a
per-session CSRF token and ``next`` only ever redirects to a path on this site. The routes are plain
Flask; the Dash app behind them is guarded in ``dashapp.create_app``.
"""
from __future__ import annotations

import contextlib
import hmac
import secrets
import time
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask import (Blueprint, current_app, redirect, render_template_string, request, session,
                   url_for)
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from markupsafe import Markup
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from dashapp import guard
from safestats import login_security
from safestats.access import TIERS, needs_second_factor  # noqa: F401  (TIERS re-exported)
from safestats.passwords import MIN_PASSWORD_LENGTH, password_problem  # noqa: F401  (re-exported)

# OWASP Password Storage Cheat Sheet, argon2id minimum: m=19 MiB, t=2, p=1. argon2id is the default type.
password_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
GENERIC_LOGIN_ERROR = "Email or password not recognised."
THROTTLED_ERROR = ("Too many sign-in attempts in a row for this account. Wait {minutes:g} minutes and try "
                   "again, or ask your SafeStats administrator to unlock it.")
BAD_CODE_ERROR = "That code is not right (or was already used). Enter the current 6-digit code from your app."
# How long the step between a right password and its TOTP code may take.
SECOND_FACTOR_WINDOW_SECONDS = 300
# Verified against when the email is unknown, so a miss costs the same time as a wrong password.
_DUMMY_HASH = password_hasher.hash(secrets.token_hex(16))

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
login_manager.login_view = "auth.login"


@dataclass(frozen=True)
class User(UserMixin):
    """A logged-in portal user (a row of ``users`` and its organisation, without the password hash)."""

    id: int
    email: str
    display_name: str
    organisation: str          # the organisation's code (organisations.code)
    tier: str
    active: bool = True
    # Boroughs (ONS codes) a borough analyst is assigned to; what they may see record by record (access.py).
    boroughs: frozenset[str] = frozenset()
    organisation_id: int | None = None
    org_admin: bool = False
    second_factor_enrolled: bool = False
    # The token of this request's live session (user_sessions); what Flask-Login keeps in the cookie.
    session_token: str | None = None

    @property
    def is_active(self) -> bool:
        return self.active

    def get_id(self) -> str | None:
        # Flask-Login stores this in the session cookie: the session token, never the guessable user id,
        # so a session exists only while its row in user_sessions is live.
        return self.session_token


# A user is active only while their organisation is too.
_USER_SELECT = """
    SELECT u.id, u.email, u.display_name, o.code AS organisation, u.tier, u.active AND o.active AS active,
           u.organisation_id, u.org_admin, u.totp_confirmed_at IS NOT NULL AS second_factor_enrolled,
           ARRAY(SELECT b.borough_code FROM user_boroughs b WHERE b.user_id = u.id ORDER BY 1) AS boroughs
    FROM users u JOIN organisations o ON o.id = u.organisation_id
"""


def _user(row) -> User:
    return User(id=row.id, email=row.email, display_name=row.display_name, organisation=row.organisation,
                tier=row.tier, active=row.active, organisation_id=row.organisation_id, org_admin=row.org_admin,
                second_factor_enrolled=row.second_factor_enrolled,
                boroughs=frozenset(getattr(row, "boroughs", None) or ()))


def hash_password(password: str) -> str:
    problem = password_problem(password)
    if problem:
        raise ValueError(problem)
    return password_hasher.hash(password)


def upsert_user(engine: Engine, email: str, password: str, display_name: str, organisation: str = "GLA",
                tier: str = "viewer") -> User:
    """Create the user, or update the one with this email (case-insensitive): new password, name, tier.

    ``organisation`` is an organisation's code or name. Re-running it also re-activates a deactivated
    account, as an admin re-adding someone would expect. Raises ValueError (``AccountError``) saying what
    to change."""
    from safestats.accounts import save_account

    account = save_account(engine, email=email, display_name=display_name, organisation=organisation, tier=tier,
                           active=True, password=password)
    return load_user_by_id(engine, account.id)


def authenticate(engine: Engine, email: str, password: str) -> User | None:
    """The active user with this email and password, or None. Records the login and upgrades old hashes."""
    if not email or not password:
        return None
    with engine.connect() as conn:
        row = conn.execute(text(_USER_SELECT.replace("SELECT", "SELECT u.password_hash,", 1)
                                + " WHERE lower(u.email) = lower(:email)"),
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


def load_user_by_id(engine: Engine | Connection, user_id) -> User | None:
    """The active user with this id (in an active organisation), or None, which logs the session out. Given a
    connection, reads on it."""
    try:
        user_id_int = int(user_id)
    except (TypeError, ValueError):
        return None
    with (engine.connect() if isinstance(engine, Engine) else contextlib.nullcontext(engine)) as conn:
        row = conn.execute(text(f"{_USER_SELECT} WHERE u.id = :id AND u.active AND o.active"),
                           {"id": user_id_int}).one_or_none()
    return _user(row) if row else None


def _engine() -> Engine:
    return current_app.extensions["safestats_engine"]


@login_manager.user_loader
def _load_user(session_token: str) -> User | None:
    """The user of the live session this cookie's token names; None (logged out) for anything else."""
    config = current_app.config
    # One checkout, and each statement its own transaction (autocommit): every Dash callback is a request that
    # comes here, and under load each round trip (a BEGIN and a COMMIT are one each) queues behind the others.
    # The two reads need no common snapshot, and each write the session check may make is one statement.
    with _engine().connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        user_id = login_security.live_session_user_id(conn, session_token, config["SAFESTATS_SESSION_IDLE_MINUTES"],
                                                      config["SAFESTATS_SESSION_MAX_HOURS"])
        user = load_user_by_id(conn, user_id) if user_id is not None else None
    return replace(user, session_token=session_token) if user else None


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


def csrf_ok() -> bool:
    """Whether the submitted form carries this session's CSRF token (every plain form POST checks it)."""
    sent = request.form.get("csrf_token", "")
    expected = session.get("csrf_token", "")
    return bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())


# The <head> of every plain server-rendered page (login, admin pages): the title and the two public stylesheets.
PAGE_HEAD = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{{ title }} · SafeStats</title>
  <link rel="stylesheet" href="{{ url_for('public_asset', filename='bootstrap.min.css') }}">
  <link rel="stylesheet" href="{{ url_for('public_asset', filename='safestats.css') }}">
</head>
"""

PAGE = PAGE_HEAD + """<body class="login-page">
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
            {% if error %}<div class="alert alert-danger py-2" role="alert" id="login-error">{{ error }}</div>{% endif %}
            {{ body }}
          </div>
        </div>
        <p class="text-muted small text-center mt-3">Contact your SafeStats administrator if you need an
          account.</p>
      </div>
    </div>
  </main>
</body>
</html>"""

LOGIN_FORM = """
<h1 class="h4 mb-1">Sign in</h1>
<p class="text-muted small mb-4">For authorised users of the Greater London Authority's
  community safety data portal.</p>
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
"""

SECOND_FACTOR_FORM = """
<h1 class="h4 mb-1">{{ 'Set up your second factor' if enrol_secret else 'Second factor' }}</h1>
{% if enrol_secret %}
<p class="small">Your account needs a code from an authenticator app (Google Authenticator, Microsoft
  Authenticator, FreeOTP, 1Password ...) as well as your password. Scan this QR code with the app, or type
  in the secret, then enter the 6-digit code it shows.</p>
<div class="text-center mb-2" id="totp-qr">{{ qr_svg }}</div>
<p class="small text-center">Secret: <code id="totp-secret">{{ enrol_secret }}</code></p>
{% else %}
<p class="text-muted small mb-4">Enter the 6-digit code your authenticator app shows for SafeStats.</p>
{% endif %}
<form method="post" action="{{ url_for('auth.second_factor') }}" novalidate>
  <input type="hidden" name="csrf_token" value="{{ csrf }}">
  <div class="mb-4">
    <label for="totp-code" class="form-label">Code</label>
    <input type="text" class="form-control" id="totp-code" name="code" inputmode="numeric" pattern="[0-9]*"
           maxlength="6" autocomplete="one-time-code" required autofocus>
  </div>
  <button type="submit" class="btn btn-primary w-100" id="totp-submit">Verify</button>
</form>
<p class="small mt-3 mb-0"><a href="{{ url_for('auth.login') }}">Start again</a></p>
"""


def _page(title: str, body: str, status: int = 200, error: str | None = None, **context):
    html = render_template_string(PAGE.replace("{{ body }}", body), title=title, error=error,
                                  csrf=csrf_token(), **context)
    return html, status


def _login_form(status: int = 200, error: str | None = None, email: str = "", next_path: str = "/"):
    return _page("Sign in", LOGIN_FORM, status, error, email=email, next_path=next_path)


def _throttled(status_page):
    minutes = current_app.config["SAFESTATS_LOGIN_LOCKOUT_MINUTES"]
    return status_page(429, THROTTLED_ERROR.format(minutes=minutes))


def _claim_attempt(email: str) -> bool:
    config = current_app.config
    return login_security.claim_attempt(_engine(), email, config["SAFESTATS_LOGIN_MAX_FAILURES"],
                                        config["SAFESTATS_LOGIN_LOCKOUT_MINUTES"])


def _complete_login(user: User, next_path: str):
    """Password (and code, when needed) accepted: a fresh session whose token is a live user_sessions row."""
    login_security.clear_attempts(_engine(), user.email)
    session.clear()  # a fresh session: nothing an attacker planted before login survives it
    login_user(replace(user, session_token=login_security.start_session(_engine(), user.id)))
    return redirect(next_path)


@bp.route("/login", methods=["GET", "POST"])
@guard.endpoint(guard.PUBLIC, audit=False)
def login():
    next_path = safe_next_path(request.args.get("next"))
    if request.method == "GET":
        if current_user.is_authenticated:
            return redirect(next_path)
        return _login_form(next_path=next_path)
    email = request.form.get("email", "").strip()
    if not csrf_ok():
        return _login_form(401, GENERIC_LOGIN_ERROR, email, next_path)
    if not _claim_attempt(email):
        return _throttled(lambda status, error: _login_form(status, error, email, next_path))
    user = authenticate(_engine(), email, request.form.get("password", ""))
    if user is None:
        return _login_form(401, GENERIC_LOGIN_ERROR, email, next_path)
    if not needs_second_factor(user.tier, user.org_admin):
        return _complete_login(user, next_path)
    session.clear()
    session["pending_login"] = {"user_id": user.id, "at": time.time(), "next": next_path}
    return redirect(url_for("auth.second_factor"))


@bp.route("/login/second-factor", methods=["GET", "POST"])
@guard.endpoint(guard.PUBLIC, audit=False)
def second_factor():
    """The TOTP step after a right password (enrolling first when the user has no second factor yet)."""
    pending = session.get("pending_login") or {}
    user = None
    if time.time() - pending.get("at", 0) <= SECOND_FACTOR_WINDOW_SECONDS:
        user = load_user_by_id(_engine(), pending.get("user_id"))
    if user is None:
        session.pop("pending_login", None)
        return redirect(url_for("auth.login"))
    enrol_secret = None if user.second_factor_enrolled else login_security.pending_totp_secret(_engine(), user.id)

    def form(status: int = 200, error: str | None = None):
        qr = Markup(login_security.totp_qr_svg(login_security.totp_uri(enrol_secret, user.email))) if enrol_secret else ""
        return _page("Second factor", SECOND_FACTOR_FORM, status, error, enrol_secret=enrol_secret, qr_svg=qr)

    if request.method == "GET":
        return form()
    if not csrf_ok():
        return form(401, BAD_CODE_ERROR)
    if not _claim_attempt(user.email):
        session.pop("pending_login", None)
        return _throttled(form)
    if not login_security.accept_totp_code(_engine(), user.id, request.form.get("code", "")):
        return form(401, BAD_CODE_ERROR)
    return _complete_login(replace(user, second_factor_enrolled=True), safe_next_path(pending.get("next")))


@bp.route("/logout", methods=["GET", "POST"])
@guard.endpoint(guard.PUBLIC, audit=False)
def logout():
    # No CSRF token here: the worst a forged logout can do is sign someone out, and the navbar's plain link
    # (GET) then works without a form inside the Dash layout.
    token = getattr(current_user, "session_token", None)
    if token:
        login_security.end_session(_engine(), token, "logged out")
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))
