"""The one registry of the portal's surface: every Dash callback and HTTP endpoint, what it needs, checked per call.

Dash callbacks are plain POST endpoints that anyone logged in can call with forged inputs, and a route added
without a check is open to everyone; so nothing is served unless it was declared here with what it needs:

* a callback is registered with ``guard.callback(app, Output(...), Input(...), needs=guard.LOGIN)`` (instead
  of ``app.callback``), a browser-side one with ``guard.clientside_callback(app, js, ...)``;
* a Flask route gets one more decorator under its route, ``@guard.endpoint(guard.ADMIN)``; Dash's own routes
  (``/_dash-layout``, ``/_dash-dependencies`` ...) are declared in ``DASH_ROUTES`` below.
* a read-API route is ``@guard.endpoint(guard.API_TOKEN)``: its caller is the user of the request's personal
  API token (found by the app's ``safestats_bearer_auth`` hook, ``dashapp.api``), never the session cookie.

Each call is then checked server-side against the logged-in user's policy (``safestats.access.policy_for``;
a ``Need`` is a question asked of that policy, never a tier name), and the audit row is written in the same
place (``safestats.audit``): allowed or denied, the callback or endpoint, the filter state, rows returned,
exported or not. A callback or route missing from the registry is refused at run time (403, audited) and
fails ``tests/test_guard_registry.py``. Callbacks and endpoints report what they sent with
``guard.note(rows=..., state=..., exported=...)``; the audit row is written before the response leaves, so
no data goes out unaudited (if the row cannot be written the request fails).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Callable

from dash.exceptions import PreventUpdate
from flask import abort, current_app, g, has_request_context, jsonify, redirect, request, url_for
from flask_login import AnonymousUserMixin
from flask_login import current_user

from safestats import audit
from safestats.access import NO_ACCESS, TierPolicy, policy_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Need:
    """What a caller must be: ``allows(policy)`` answers for a logged-in user's policy. ``login`` False means
    the route authenticates another way (a supplier token) or is public, and the login guard lets it through.
    ``bearer`` True means the caller is the user of the request's personal API token, never the session
    cookie (the app's ``safestats_bearer_auth`` extension finds them; ``dashapp.api``)."""

    name: str
    allows: Callable[[TierPolicy], bool]
    login: bool = True
    bearer: bool = False


# Any identified user with a known tier (policy_for gives NO_ACCESS to everyone else: fail closed).
LOGIN = Need("login", lambda policy: policy is not NO_ACCESS)
# Record-level data (points, record lists, record exports): the policy's record level, not a tier name.
RECORDS = Need("records", lambda policy: policy.sees_records)
ADMIN = Need("admin", lambda policy: policy.admin)
# Account pages: portal admins, and organisation admins for their own organisation (the page checks which).
USER_ADMIN = Need("user admin", lambda policy: policy.admin or policy.org_admin)
# Public (the login page and its stylesheets) and supplier-token routes (which check the token themselves).
PUBLIC = Need("public", lambda policy: True, login=False)
SUPPLIER_TOKEN = Need("supplier token", lambda policy: True, login=False)
# The read API (/api/v1/): a user identified by their personal API token, with their tier at call time.
API_TOKEN = Need("personal API token", lambda policy: policy is not NO_ACCESS, bearer=True)
# A browser-side callback: runs in the browser on data it already has; no server code, nothing to check.
BROWSER = Need("browser only", lambda policy: True, login=False)


@dataclass(frozen=True)
class Rule:
    """One registered callback or endpoint: what it needs, and whether (and as what) its calls are audited."""

    target: str                 # the callback's function name or the endpoint name
    needs: Need
    audit: bool = True          # data views and exports: True; framework routes and static files: False
    exported: bool = False      # an export (a download): audited as such


# Dash's own routes, by endpoint name (Dash names most of them by their URL rule), declared here because Dash
# adds them itself. Every one needs a login: the layout and dependencies describe the app, the component
# suites and assets are its code. Page loads and the layout are audited as page views; each callback is
# checked and audited by its own rule (``callback`` below), so the dispatch route itself is not.
DASH_ROUTES: dict[str, Rule] = {name: Rule(name, LOGIN, audit=audited) for name, audited in (
    ("/", True),
    ("/<path:path>", True),
    ("/_dash-layout", True),
    ("/_dash-dependencies", False),
    ("/_dash-update-component", False),
    ("/_reload-hash", False),
    ("/_dash-component-suites/<string:package_name>/<path:fingerprinted_path>", False),
    ("_dash_assets.static", False),          # /assets/<path:filename>
    ("/_favicon.ico", False),
)}
_GUARD_ATTRIBUTE = "__safestats_guard__"  # where guard.endpoint keeps a view's rule


def endpoint(needs: Need, audit: bool = True, exported: bool = False):
    """Declare a Flask view: put ``@guard.endpoint(guard.ADMIN)`` directly under its ``@bp.get(...)``."""
    def mark(view):
        setattr(view, _GUARD_ATTRIBUTE, Rule(view.__name__, needs, audit, exported))
        return view
    return mark


def rule_for_endpoint(server, endpoint_name: str | None) -> Rule | None:
    """The rule of a Flask endpoint, or None when it was never declared (which refuses it)."""
    if endpoint_name is None:
        return None
    view = server.view_functions.get(endpoint_name)
    rule = getattr(view, _GUARD_ATTRIBUTE, None)
    if rule is not None:
        return Rule(endpoint_name, rule.needs, rule.audit, rule.exported)
    return DASH_ROUTES.get(endpoint_name)


def callback_rules(app) -> dict[str, Rule]:
    """The registered callbacks of a Dash app, by their ``callback_map`` key."""
    if not hasattr(app, "_safestats_guard"):
        app._safestats_guard = {}
    return app._safestats_guard


def _register(app, rule: Rule, add: Callable[[], None]) -> None:
    before = set(app.callback_map)
    add()
    added = set(app.callback_map) - before
    if len(added) != 1:
        raise RuntimeError(f"registering {rule.target} added {len(added)} callbacks to the map; expected one")
    callback_rules(app)[added.pop()] = rule


def callback(app, *dependencies, needs: Need = LOGIN, audit: bool = True, exported: bool = False, **kwargs):
    """``app.callback`` with the check and the audit row: the one way to add a server-side callback."""
    def decorate(function):
        rule = Rule(function.__name__, needs, audit, exported)

        @functools.wraps(function)
        def checked(*args):
            return _run_checked(rule, "callback", function, args)

        _register(app, rule, lambda: app.callback(*dependencies, **kwargs)(checked))
        return function
    return decorate


def clientside_callback(app, javascript: str, *dependencies, name: str, **kwargs) -> None:
    """``app.clientside_callback``, declared in the registry (it runs in the browser: no data of ours)."""
    _register(app, Rule(name, BROWSER, audit=False),
              lambda: app.clientside_callback(javascript, *dependencies, **kwargs))


# ---- what a callback or endpoint reports, and the audit row -----------------------------------------------

@dataclass
class _Note:
    rows: int | None = None
    state: str | None = None
    exported: bool = False


def note(rows: int | None = None, state: str | None = None, exported: bool | None = None) -> None:
    """Tell the audit row what this call sent: rows (data items) returned, the filter state, an export."""
    if not has_request_context():
        return
    current = g.get("safestats_audit_note")
    if current is None:
        current = g.safestats_audit_note = _Note()
    if rows is not None:
        current.rows = (current.rows or 0) + int(rows)
    if state is not None:
        current.state = state
    if exported is not None:
        current.exported = exported


def _state_from_args(args) -> str | None:
    """The filter state a callback was called with: a store's query string, else the URL's search."""
    for value in args:
        if isinstance(value, dict) and isinstance(value.get("qs"), str):
            return value["qs"]
    for value in args:
        if isinstance(value, str) and value.startswith("?"):
            return value[1:]
    return None


def _user_fields(policy: TierPolicy) -> dict:
    user = current_user
    identified = getattr(user, "is_authenticated", False)
    return {"user_id": getattr(user, "id", None) if identified else None,
            "email": getattr(user, "email", None) if identified else None,
            "organisation": getattr(user, "organisation", None) if identified else None,
            "tier": policy.tier}


def _write(rule: Rule, kind: str, policy: TierPolicy, allowed: bool, outcome: str, state: str | None,
           rows: int | None, exported: bool) -> None:
    audit.record(current_app.extensions["safestats_engine"], kind=kind, target=rule.target,
                 filter_state=state, rows_returned=rows, exported=exported, allowed=allowed, outcome=outcome,
                 **_user_fields(policy))


def _run_checked(rule: Rule, kind: str, function, args):
    policy = policy_for(current_user)
    if not rule.needs.allows(policy):
        _write(rule, kind, policy, False, "denied", _state_from_args(args), None, False)
        log.warning("refused %s %s to user %s (tier %s): needs %s", kind, rule.target, getattr(current_user, "id", None),
                    policy.tier, rule.needs.name)
        abort(401 if not getattr(current_user, "is_authenticated", False) else 403)
    g.safestats_audit_note = _Note(state=_state_from_args(args), exported=rule.exported)
    outcome = "ok"
    try:
        return_value = function(*args)
    except PreventUpdate:
        outcome = "no update"
        raise
    except Exception:
        outcome = "error"
        raise
    finally:
        if rule.audit:
            done = g.safestats_audit_note
            _write(rule, kind, policy, True, outcome, done.state, done.rows if outcome == "ok" else 0,
                   done.exported)
    return return_value


# ---- the Flask side: one before_request check and one after_request audit for every route -----------------

def install(server) -> None:
    """Check every request against the registry (before the view) and audit it (after)."""

    @server.before_request
    def check_registered():
        rule = rule_for_endpoint(server, request.endpoint)
        if request.endpoint is None:
            # No route matched: Flask answers 404; anonymous visitors are still sent to log in first.
            return None if current_user.is_authenticated else _login_required()
        policy = policy_for(current_user)
        if rule is None:
            _write(Rule(request.endpoint, LOGIN), "endpoint", policy, False, "unregistered", None, None, False)
            log.error("refused unregistered endpoint %s (declare it with guard.endpoint)", request.endpoint)
            abort(403)
        if rule.needs.bearer:
            refusal = _authenticate_bearer(server, rule)
            if refusal is not None:
                return refusal
            policy = policy_for(current_user)   # the token's user, not the session's
        if not rule.needs.login:
            return None
        if not current_user.is_authenticated:
            return _login_required()
        if not rule.needs.allows(policy):
            if rule.audit:
                _write(rule, "endpoint", policy, False, "denied", request.query_string.decode("ascii", "replace"),
                       None, False)
            abort(403)
        if request.endpoint == "/_dash-update-component":
            _refuse_unregistered_callback(server, policy)
        g.safestats_audit_note = _Note(state=request.query_string.decode("ascii", "replace") or None,
                                       exported=rule.exported)
        return None

    @server.after_request
    def audit_endpoint(response):
        rule = rule_for_endpoint(server, request.endpoint)
        done = g.get("safestats_audit_note")
        if rule is None or not rule.audit or not rule.needs.login or done is None:
            return response
        allowed = response.status_code < 400
        _write(rule, "endpoint", policy_for(current_user), allowed,
               "ok" if allowed else f"http {response.status_code}", done.state,
               done.rows if allowed else 0, done.exported and allowed)
        return response


def _authenticate_bearer(server, rule: Rule):
    """Make the request's user the owner of its bearer token (the session cookie is ignored: a browser's
    cookies never authorise an API call); a refusal (401, 429) is audited and returned."""
    user, refusal = server.extensions["safestats_bearer_auth"]()
    g._login_user = user if user is not None else AnonymousUserMixin()   # what Flask-Login's current_user reads
    if refusal is not None and rule.audit:
        _write(rule, "endpoint", policy_for(g._login_user), False, f"http {refusal.status_code}",
               request.query_string.decode("ascii", "replace") or None, None, False)
    return refusal


def json_error(status: int, message: str, realm: str | None = None, **extra):
    """A JSON error response ``{"error": message}`` (with the bearer challenge for a 401 when ``realm``)."""
    response = jsonify(error=message, **extra)
    response.status_code = status
    if status == 401 and realm:
        response.headers["WWW-Authenticate"] = f'Bearer realm="{realm}"'
    return response


def _refuse_unregistered_callback(server, policy: TierPolicy) -> None:
    """A callback added with ``app.callback`` (not ``guard.callback``) has no check of its own: never run it."""
    body = request.get_json(silent=True)
    output = body.get("output") if isinstance(body, dict) else None
    dash_app = server.extensions.get("safestats_dash")
    if dash_app is None or output not in callback_rules(dash_app):
        _write(Rule(str(output)[:200], LOGIN), "callback", policy, False, "unregistered", None, None, False)
        log.error("refused unregistered callback %r (register it with guard.callback)", output)
        abort(403)


def _login_required():
    # Dash's machinery (JSON, scripts, assets, shapes) gets a bare 401; only page loads are sent to the form.
    if request.path.startswith(("/_", "/assets/", "/tiles/", "/boundaries/", "/api/")) or request.method != "GET":
        return jsonify(error="login required"), 401
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def unregistered(server, dash_app) -> list[str]:
    """Every route and callback the registry does not know (what the registry test asserts is empty)."""
    missing = [f"route {rule.rule} (endpoint {rule.endpoint})" for rule in server.url_map.iter_rules()
               if rule_for_endpoint(server, rule.endpoint) is None]
    known = callback_rules(dash_app)
    missing += [f"callback {key}" for key in dash_app.callback_map if key not in known]
    return missing
