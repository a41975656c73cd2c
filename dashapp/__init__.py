"""The web portal's app factory: a Flask server with Flask-Login, and the Dash app mounted on it behind login.

``create_app()`` returns the Flask server (what ``wsgi:app``, ``safestats serve`` and the tests run). Every
route and callback is declared in one registry (``dashapp.guard``) with what it needs, and checked against
it on every request: nothing reaches Dash without a logged-in user (pages redirect to /login; Dash's JSON
and asset routes — ``/_dash-layout``, ``/_dash-dependencies``, ``/_dash-update-component``,
``/_dash-component-suites/…``, ``/assets/…`` — answer 401), a route missing from the registry is refused,
and each data view is audited. The only public routes are the login and logout pages and the two
stylesheets the login page needs; the supplier feed API (``dashapp.feeds``) authenticates every request by
its own bearer token instead. The admin pages (``dashapp.admin_status``, ``dashapp.admin_audit``) are plain
Flask pages declared as needing the admin policy. Each page module registers its own callbacks on this app
instance through ``dashapp.guard.callback`` (never the global ``dash.callback``).

The app reads the database as the web role ``safestats_web`` (``db.web_role``), never as its owner, and each
request runs ``acting_as`` the logged-in user (``safestats.db_scope``): every transaction it starts carries
that user's settings, which PostgreSQL's row-level security applies. Only the feed API, which loads drops
(writes incidents and refreshes rollups), uses the owner's engine (``safestats_loader_engine``).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import dash
from flask import Flask, abort, g, request, send_from_directory
from flask_login import current_user

from dashapp import admin_audit, admin_status, admin_views, auth, feeds, guard, tiles
from dashapp.callbacks import dashboard as dashboard_callbacks
from dashapp.layouts import dashboard as dashboard_layout
from db import database_url as configured_database_url
from db import get_engine, get_web_engine
from safestats import db_scope
from safestats.config import get_settings

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
# Served without login, for the login page only: styling, nothing about the data or the app's structure.
PUBLIC_ASSETS = frozenset({"bootstrap.min.css", "safestats.css"})


def create_app(database_url: str | None = None) -> Flask:
    """The portal as a Flask app: ``database_url`` or, when None, the configured database (see ``db``)."""
    settings = get_settings()
    server = Flask(__name__, static_folder=None)
    server.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
    )
    owner_url = database_url or configured_database_url()
    server.extensions["safestats_engine"] = get_web_engine(owner_url)
    server.extensions["safestats_loader_engine"] = get_engine(owner_url)  # the feed API's loads and the admin views page (rollups)
    server.config["SAFESTATS_INCOMING"] = settings.incoming    # where feed uploads are filed (dashapp.feeds)

    auth.login_manager.init_app(server)
    server.register_blueprint(auth.bp)
    server.register_blueprint(tiles.bp)
    server.register_blueprint(feeds.bp)
    server.register_blueprint(admin_status.bp)
    server.register_blueprint(admin_views.bp)
    server.register_blueprint(admin_audit.bp)

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

    @server.after_request
    def security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
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
    server.extensions["safestats_dash"] = app
    return server
