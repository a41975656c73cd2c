"""The web portal's app factory: a Flask server with Flask-Login, and the Dash app mounted on it behind login.

``create_app()`` returns the Flask server (what ``wsgi:app``, ``safestats serve`` and the tests run). Every
route and callback is declared in one registry (``dashapp.guard``) with what it needs, and checked against
it on every request: nothing reaches Dash without a logged-in user (pages redirect to /login; Dash's JSON
and asset routes — ``/_dash-layout``, ``/_dash-dependencies``, ``/_dash-update-component``,
``/_dash-component-suites/…``, ``/assets/…`` — answer 401), a route missing from the registry is refused,
and each data view is audited. The only public routes are the login and logout pages and the two
stylesheets the login page needs; the supplier feed API (``dashapp.feeds``) authenticates every request by
its own bearer token instead, and the read API (``dashapp.api``) by the personal API token of the user it
acts for. The dashboard's exports (``dashapp.exports``) and the user's account page with their tokens
(``dashapp.account``) are plain Flask routes behind login. The admin pages (``dashapp.admin_status``, ``dashapp.admin_audit``) are plain
Flask pages declared as needing the admin policy. Each page module registers its own callbacks on this app
instance through ``dashapp.guard.callback`` (never the global ``dash.callback``).

The app reads the database as the web role ``safestats_web`` (``db.web_role``), never as its owner, and each
request runs ``acting_as`` the logged-in user (``safestats.db_scope``): every transaction it starts carries
that user's settings, which PostgreSQL's row-level security applies. Only the feed API, which loads drops
(writes incidents and refreshes rollups), uses the owner's engine (``safestats_loader_engine``).

Log-in (``dashapp.auth``) is hardened: revocable server-side sessions, a throttle shared through PostgreSQL,
TOTP for the tiers that need it, and a second-factor page that is public like the login page. The user and
organisation admin pages (``dashapp.admin_users``) serve admins and organisation admins. Every response
carries security headers, among them a Content-Security-Policy that Dash works under
(``build_content_security_policy``).
"""
from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from urllib.parse import urlsplit

import dash
from flask import Flask, abort, g, request, send_from_directory
from flask_login import current_user

from dashapp import (account, admin_audit, admin_status, admin_users, admin_views, api, auth, boundaries, exports, feeds,
                     guard, tiles)
from dashapp.callbacks import dashboard as dashboard_callbacks
from dashapp.callbacks import saved_views as saved_views_callbacks
from dashapp.callbacks import exports as exports_callbacks
from dashapp.layouts import dashboard as dashboard_layout
from db import database_url as configured_database_url
from db import get_engine, get_web_engine
from safestats import db_scope, queries
from safestats.config import get_settings

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
# Served without login, for the login page only: styling, nothing about the data or the app's structure.
PUBLIC_ASSETS = frozenset({"bootstrap.min.css", "safestats.css"})


def build_content_security_policy(app: dash.Dash, tile_url: str) -> str:
    """The CSP every response carries: scripts only from this server plus Dash's own inline scripts.

    Dash renders a few inline scripts (its config and renderer start-up) and each clientside callback as an
    inline function; ``app.csp_hashes()`` gives their sha256 hashes, so no other inline script and no
    ``eval`` can run. Styles allow 'unsafe-inline' because Plotly and Leaflet set element styles from
    JavaScript (style attributes cannot be hashed); images may come from the base-map tile server.
    """
    tiles = urlsplit(tile_url)
    tile_origin = f"{tiles.scheme}://{tiles.netloc}" if tiles.scheme in ("http", "https") and tiles.netloc else ""
    directives = {
        "default-src": ["'self'"],
        "script-src": ["'self'"] + list(app.csp_hashes()),   # each already quoted: 'sha256-...'
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"] + ([tile_origin] if tile_origin else []),
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "worker-src": ["'self'", "blob:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())


def _warm_hotspots_in_background(engine) -> None:
    """The hotspot layers' grid months into this process's memory, on a daemon thread: the worker serves
    meanwhile, and a failure (no data yet, database away) only costs the first layer its wait."""
    log = logging.getLogger("safestats.warm")

    def warm():
        try:
            months = queries.warm_hotspot_months(engine, log=log.info)
            log.info("hotspot grid months in memory: %d", months)
        except Exception:  # noqa: BLE001 - a warm-up never stops the worker
            log.warning("hotspot warm-up failed; layers read their months on first use", exc_info=True)

    threading.Thread(target=warm, name="safestats-warm-hotspots", daemon=True).start()


def create_app(database_url: str | None = None) -> Flask:
    """The portal as a Flask app: ``database_url`` or, when None, the configured database (see ``db``)."""
    settings = get_settings()
    server = Flask(__name__, static_folder=None)
    server.config.update(
        SECRET_KEY=settings.secret_key,
        # Secure: sent over HTTPS only (browsers count http://127.0.0.1 and localhost as secure, so the demo
        # works); SAFESTATS_SECURE_COOKIES=false only for plain-HTTP access from another host while testing.
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=settings.secure_cookies,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        # Read by dashapp.auth on every request (a test may change them on its own app).
        SAFESTATS_SESSION_IDLE_MINUTES=settings.session_idle_minutes,
        SAFESTATS_SESSION_MAX_HOURS=settings.session_max_hours,
        SAFESTATS_LOGIN_MAX_FAILURES=settings.login_max_failures,
        SAFESTATS_LOGIN_LOCKOUT_MINUTES=settings.login_lockout_minutes,
        SAFESTATS_API_CALLS_PER_MINUTE=settings.api_calls_per_minute,
    )
    owner_url = database_url or configured_database_url()
    server.extensions["safestats_engine"] = get_web_engine(owner_url)
    server.extensions["safestats_loader_engine"] = get_engine(owner_url)  # the feed API's loads and the admin views page (rollups)
    server.config["SAFESTATS_INCOMING"] = settings.incoming    # where feed uploads are filed (dashapp.feeds)
    if settings.warm_hotspots:
        queries.READ_MONTHS_IN_BACKGROUND = True  # months a panel found missing are read on a thread
        _warm_hotspots_in_background(server.extensions["safestats_engine"])

    auth.login_manager.init_app(server)
    server.register_blueprint(auth.bp)
    server.register_blueprint(tiles.bp)
    server.register_blueprint(boundaries.bp)
    server.register_blueprint(feeds.bp)
    server.register_blueprint(admin_status.bp)
    server.register_blueprint(admin_views.bp)
    server.register_blueprint(admin_audit.bp)
    server.register_blueprint(admin_users.bp)
    server.register_blueprint(saved_views_callbacks.bp)   # /views/<id>: open a saved view
    server.register_blueprint(exports.bp)
    server.register_blueprint(account.bp)
    api.install(server)   # /api/v1/, its callers identified by their personal API tokens

    @server.get("/static/<path:filename>", endpoint="public_asset")
    @guard.endpoint(guard.PUBLIC, audit=False)
    def public_asset(filename: str):
        if filename not in PUBLIC_ASSETS:
            abort(404)
        return send_from_directory(ASSETS_DIR, filename)

    guard.install(server)

    @server.before_request
    def act_as_logged_in_user():
        # Every transaction of this request carries the user's settings (none for anonymous requests).
        g.safestats_scope = contextlib.ExitStack()
        g.safestats_scope.enter_context(db_scope.acting_as(current_user))

    @server.teardown_request
    def end_acting_as_user(_exc):
        scope = g.pop("safestats_scope", None)
        if scope is not None:
            scope.close()

    content_security_policy: list[str] = []   # filled in once every callback is registered (below)

    @server.after_request
    def security_headers(response):
        response.headers.setdefault("Content-Security-Policy", content_security_policy[0])
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
        if settings.secure_cookies:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        if request.endpoint != "public_asset" and not request.path.startswith(
                ("/assets/", "/_dash-component-suites/", "/tiles/")):
            # Pages and data are per-user: never let a shared proxy or the back button after logout show them.
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    app = dash.Dash(
        __name__,
        server=server,
        url_base_pathname="/",
        assets_folder=str(ASSETS_DIR),
        title="SafeStats · London",
        update_title=None,
        # Everything is served from this server: the portal must work on a network with no internet.
        serve_locally=True,
    )
    app.layout = dashboard_layout.layout  # a function: built per request, for the logged-in user
    dashboard_callbacks.register_callbacks(app)
    saved_views_callbacks.register_callbacks(app)
    exports_callbacks.register_callbacks(app)
    content_security_policy.append(build_content_security_policy(app, settings.tile_url))
    server.extensions["safestats_dash"] = app
    return server
