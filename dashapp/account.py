"""The user's own account page (``/account``): their personal API tokens for the read API, made and revoked here.

A token is shown once, on the page that made it, and stored only hashed (``safestats.api_tokens``); the list
shows each token's name, when it was made, its expiry, when it was last used and whether it is live. Any
logged-in user may hold tokens: a token acts as its owner with their tier at each call, so it reaches
nothing the dashboard would not show them. Every page and change is declared in ``dashapp.guard`` (audited)
and every form carries the session's CSRF token; a user only ever sees and revokes their own tokens.
"""
from __future__ import annotations

from datetime import datetime, time, timezone

from flask import Blueprint, current_app, redirect, render_template_string, request, url_for
from flask_login import current_user

from dashapp import guard
from dashapp.auth import PAGE_HEAD, csrf_ok, csrf_token
from safestats import api_tokens
from safestats.api_tokens import ApiTokenError

bp = Blueprint("account", __name__, url_prefix="/account")


def _engine():
    return current_app.extensions["safestats_engine"]


PAGE = PAGE_HEAD + """<body>
<header class="ss-navbar navbar navbar-dark"><div class="container-fluid">
  <a class="navbar-brand" href="/"><span class="ss-brand-mark">SafeStats</span></a>
  <span class="ss-user text-light">{{ user.display_name }} · {{ user.tier }}</span></div></header>
<main class="container py-3" style="max-width: 56rem">
  <h1 class="h4">Your account</h1>
  <p class="small">{{ user.email }} · {{ user.organisation }} · tier <b>{{ user.tier }}</b></p>
  <h2 class="h5 mt-4">Personal API tokens</h2>
  <p class="small">For the read API (<a href="/api/v1/docs">how to use it from R, Python, QGIS and Power BI</a>).
    A token acts as you, with what your tier shows at each call; keep it like a password.</p>
  {% if error %}<div class="alert alert-danger py-2" id="token-error">{{ error }}</div>{% endif %}
  {% if new_token %}<div class="alert alert-success" id="token-new">New token <b>{{ new_name }}</b>: copy it now,
    it will not be shown again.<br><code id="token-value">{{ new_token }}</code></div>{% endif %}
  <form method="post" action="{{ url_for('account.create_token') }}" class="row g-2 align-items-end mb-3">
    <input type="hidden" name="csrf_token" value="{{ csrf }}">
    <div class="col-sm-6"><label class="form-label small" for="token-name">Name (what it is for)</label>
      <input class="form-control form-control-sm" id="token-name" name="name" maxlength="100" required></div>
    <div class="col-sm-3"><label class="form-label small" for="token-expires">Expires (optional)</label>
      <input class="form-control form-control-sm" type="date" id="token-expires" name="expires"></div>
    <div class="col-sm-3"><button class="btn btn-sm btn-primary w-100" id="token-create">Make a token</button></div>
  </form>
  <table class="table table-sm small" id="token-list">
    <thead><tr><th>Name</th><th>Made</th><th>Expires</th><th>Last used</th><th>State</th><th></th></tr></thead>
    <tbody>{% for t in tokens %}<tr>
      <td>{{ t.name }}</td><td>{{ t.created_at.strftime('%Y-%m-%d %H:%M') }}</td>
      <td>{{ t.expires_at.strftime('%Y-%m-%d') if t.expires_at else 'never' }}</td>
      <td>{{ t.last_used_at.strftime('%Y-%m-%d %H:%M') if t.last_used_at else 'never' }}</td>
      <td>{{ 'revoked' if t.revoked_at else ('expired' if t.expired else 'live') }}</td>
      <td>{% if t.active %}<form method="post" action="{{ url_for('account.revoke_token', token_id=t.id) }}">
        <input type="hidden" name="csrf_token" value="{{ csrf }}">
        <button class="btn btn-sm btn-outline-danger py-0" id="token-revoke-{{ t.id }}">Revoke</button></form>{% endif %}</td>
    </tr>{% else %}<tr><td colspan="6" class="text-muted">No tokens yet.</td></tr>{% endfor %}</tbody>
  </table>
  <p class="small"><a href="/">Back to the dashboard</a></p>
</main></body></html>"""


def _page(status: int = 200, error: str | None = None, new_token: str | None = None, new_name: str | None = None):
    html = render_template_string(PAGE, title="Your account", user=current_user, csrf=csrf_token(),
                                  tokens=api_tokens.list_tokens(_engine(), current_user.id), error=error,
                                  new_token=new_token, new_name=new_name)
    return html, status


@bp.get("", endpoint="index")
@guard.endpoint(guard.LOGIN)
def index():
    return _page()


@bp.post("/tokens", endpoint="create_token")
@guard.endpoint(guard.LOGIN)
def create_token():
    if not csrf_ok():
        return _page(400, "The form had expired: try again.")
    expires = request.form.get("expires", "").strip()
    try:
        # Valid to the end of the chosen day (UTC).
        expires_at = datetime.combine(datetime.strptime(expires, "%Y-%m-%d").date(), time.max,
                                      tzinfo=timezone.utc) if expires else None
    except ValueError:
        return _page(400, "The expiry must be a date (YYYY-MM-DD), or left empty.")
    try:
        token, secret = api_tokens.create_token(_engine(), current_user.id, request.form.get("name", ""), expires_at)
    except ApiTokenError as exc:
        return _page(400, str(exc))
    guard.note(rows=1)
    return _page(201, new_token=secret, new_name=token.name)


@bp.post("/tokens/<int:token_id>/revoke", endpoint="revoke_token")
@guard.endpoint(guard.LOGIN)
def revoke_token(token_id: int):
    if not csrf_ok():
        return _page(400, "The form had expired: try again.")
    try:
        api_tokens.revoke_token(_engine(), current_user.id, token_id)
    except ApiTokenError as exc:
        return _page(404, str(exc))
    return redirect(url_for("account.index"))
