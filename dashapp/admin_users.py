"""Admin pages for user accounts and organisations: list, add, change, disable, reset a second factor.

Plain server-rendered Flask pages (like ``dashapp.admin_status``), every form carrying the session's CSRF
token (checked before anything is read from it). ``/admin/users`` is open to portal admins (every account)
and organisation admins (their own organisation's accounts only); ``/admin/organisations`` to portal admins
only. Each route checks the logged-in user itself, and every change goes through ``safestats.accounts``,
which decides again who may do what (a forged form field cannot widen it): anything refused there answers
403, a change that is merely invalid shows the form again with the reason.
"""
from __future__ import annotations

from flask import (Blueprint, abort, current_app, flash, get_flashed_messages, redirect, render_template_string,
                   request, url_for)
from flask_login import current_user

from dashapp import guard
from dashapp.auth import PAGE_HEAD, csrf_ok, csrf_token
from safestats.access import TIERS
from safestats.accounts import (ORGANISATION_KINDS, AccountError, NotPermitted, get_account, get_organisation,
                                is_portal_admin, list_accounts, list_organisations, may_administer_users,
                                may_manage_account, reset_second_factor, save_account, save_organisation)

bp = Blueprint("admin_users", __name__, url_prefix="/admin")


def _engine():
    return current_app.extensions["safestats_engine"]


def _require(allowed: bool) -> None:
    """Every route calls this first: the login guard in create_app only knows "logged in"."""
    if not current_user.is_authenticated:
        abort(401)
    if not allowed:
        abort(403)


def _check_csrf() -> None:
    if not csrf_ok():
        abort(400, "The form has expired (missing or wrong CSRF token); reload the page and try again.")


PAGE = PAGE_HEAD + """<body>
  <header class="ss-navbar navbar navbar-dark">
    <div class="container-fluid">
      <a class="navbar-brand" href="/"><span class="ss-brand-mark">SafeStats</span>
        <span class="ss-brand-sub">Administration</span></a>
      <span class="navbar-text small">{{ current_user.email }} · <a class="link-light" href="{{ url_for('auth.logout') }}">Sign out</a></span>
    </div>
  </header>
  <main class="container-fluid py-3">
    <ul class="nav nav-tabs mb-3">
      <li class="nav-item"><a class="nav-link" href="{{ url_for('admin_users.users') }}">Users</a></li>
      {% if portal_admin %}<li class="nav-item"><a class="nav-link" href="{{ url_for('admin_users.organisations') }}">Organisations</a></li>{% endif %}
    </ul>
    {% if error %}<div class="alert alert-danger" role="alert" id="admin-error">{{ error }}</div>{% endif %}
    {% if message %}<div class="alert alert-success" role="status" id="admin-message">{{ message }}</div>{% endif %}
    {{ body }}
  </main>
</body>
</html>"""

USERS = """
<h1 class="h4">Users{% if not portal_admin %} of {{ current_user.organisation }}{% endif %}</h1>
<p><a class="btn btn-sm btn-primary" id="add-user" href="{{ url_for('admin_users.user_new') }}">Add a user</a></p>
<table class="table table-sm table-hover align-middle" id="users">
  <thead><tr><th>Email</th><th>Name</th><th>Organisation</th><th>Tier</th><th>Org admin</th><th>Second factor</th>
    <th>Status</th><th>Last sign-in</th></tr></thead>
  <tbody>{% for a in accounts %}
    <tr data-user="{{ a.email }}" class="{{ '' if a.active else 'text-muted' }}">
      <td><a href="{{ url_for('admin_users.user_edit', user_id=a.id) }}">{{ a.email }}</a></td>
      <td>{{ a.display_name }}</td><td>{{ a.organisation_name }} <span class="text-muted small">{{ a.organisation }}</span></td>
      <td>{{ a.tier }}</td><td>{{ 'yes' if a.org_admin else '' }}</td>
      <td>{{ 'enrolled' if a.second_factor_enrolled else '—' }}</td>
      <td>{{ 'active' if a.active else 'disabled' }}</td>
      <td>{{ a.last_login_at.strftime('%Y-%m-%d %H:%M') if a.last_login_at else '—' }}</td>
    </tr>{% endfor %}
  </tbody>
</table>
"""

USER_FORM = """
<h1 class="h4">{{ account.email if account else 'Add a user' }}</h1>
<form method="post" class="col-md-6" id="user-form">
  <input type="hidden" name="csrf_token" value="{{ csrf }}">
  {% if not account %}<div class="mb-2"><label class="form-label" for="email">Email</label>
    <input class="form-control" id="email" name="email" type="email" value="{{ form.email }}" required></div>{% endif %}
  <div class="mb-2"><label class="form-label" for="display_name">Name</label>
    <input class="form-control" id="display_name" name="display_name" value="{{ form.display_name }}"></div>
  <div class="mb-2"><label class="form-label" for="organisation">Organisation</label>
    <select class="form-select" id="organisation" name="organisation" {{ '' if portal_admin else 'disabled' }}>
      {% for o in organisations %}<option value="{{ o.code }}" {{ 'selected' if o.code == form.organisation }}>{{ o.name }} ({{ o.code }}; up to {{ o.max_tier }})</option>{% endfor %}
    </select></div>
  <div class="mb-2"><label class="form-label" for="tier">Tier</label>
    <select class="form-select" id="tier" name="tier">
      {% for t in tiers %}<option value="{{ t }}" {{ 'selected' if t == form.tier }}>{{ t }}</option>{% endfor %}
    </select></div>
  <div class="mb-2"><label class="form-label" for="boroughs">Boroughs seen record by record (borough analysts)</label>
    <input class="form-control" id="boroughs" name="boroughs" value="{{ form.boroughs }}" placeholder="E09000007, E09000033">
    <div class="form-text">ONS codes, comma-separated. Other tiers ignore this.</div></div>
  {% if portal_admin %}<div class="form-check mb-2"><input class="form-check-input" type="checkbox" id="org_admin" name="org_admin" value="1" {{ 'checked' if form.org_admin }}>
    <label class="form-check-label" for="org_admin">Organisation admin (manages this organisation's users)</label></div>{% endif %}
  <div class="form-check mb-2"><input class="form-check-input" type="checkbox" id="active" name="active" value="1" {{ 'checked' if form.active }}>
    <label class="form-check-label" for="active">Active (unticking it ends the user's sessions at once)</label></div>
  <div class="mb-3"><label class="form-label" for="password">{{ 'New password (leave empty to keep it)' if account else 'Password' }}</label>
    <input class="form-control" id="password" name="password" type="password" autocomplete="new-password">
    <div class="form-text">At least 8 characters and not a common password; a few words together make a good one.</div></div>
  <button class="btn btn-primary" type="submit" id="save-user">Save</button>
  <a class="btn btn-link" href="{{ url_for('admin_users.users') }}">Back</a>
</form>
{% if account %}
<form method="post" action="{{ url_for('admin_users.user_reset_second_factor', user_id=account.id) }}" class="mt-4">
  <input type="hidden" name="csrf_token" value="{{ csrf }}">
  <p class="small">Second factor: {{ 'enrolled' if account.second_factor_enrolled else 'not set up' }}.
    Resetting it (a lost phone) makes the user enrol again at their next sign-in.</p>
  <button class="btn btn-sm btn-outline-danger" type="submit" id="reset-second-factor">Reset second factor</button>
</form>{% endif %}
"""

ORGANISATIONS = """
<h1 class="h4">Organisations</h1>
<p><a class="btn btn-sm btn-primary" href="{{ url_for('admin_users.organisation_new') }}">Add an organisation</a></p>
<table class="table table-sm table-hover align-middle" id="organisations">
  <thead><tr><th>Code</th><th>Name</th><th>Kind</th><th>Highest tier</th><th class="text-end">Users</th><th>Status</th></tr></thead>
  <tbody>{% for o in organisations %}
    <tr data-organisation="{{ o.code }}" class="{{ '' if o.active else 'text-muted' }}">
      <td><a href="{{ url_for('admin_users.organisation_edit', org_id=o.id) }}">{{ o.code }}</a></td><td>{{ o.name }}</td>
      <td>{{ o.kind }}</td><td>{{ o.max_tier }}</td><td class="text-end">{{ o.members }}</td>
      <td>{{ 'active' if o.active else 'disabled' }}</td></tr>{% endfor %}
  </tbody>
</table>
"""

ORGANISATION_FORM = """
<h1 class="h4">{{ organisation.name if organisation else 'Add an organisation' }}</h1>
<form method="post" class="col-md-6" id="organisation-form">
  <input type="hidden" name="csrf_token" value="{{ csrf }}">
  <div class="mb-2"><label class="form-label" for="code">Code</label>
    <input class="form-control" id="code" name="code" value="{{ form.code }}" required></div>
  <div class="mb-2"><label class="form-label" for="name">Name</label>
    <input class="form-control" id="name" name="name" value="{{ form.name }}" required></div>
  <div class="mb-2"><label class="form-label" for="kind">Kind</label>
    <select class="form-select" id="kind" name="kind">{% for k in kinds %}<option {{ 'selected' if k == form.kind }}>{{ k }}</option>{% endfor %}</select></div>
  <div class="mb-2"><label class="form-label" for="max_tier">Highest tier a member may hold</label>
    <select class="form-select" id="max_tier" name="max_tier">{% for t in tiers %}<option {{ 'selected' if t == form.max_tier }}>{{ t }}</option>{% endfor %}</select></div>
  <div class="form-check mb-3"><input class="form-check-input" type="checkbox" id="active" name="active" value="1" {{ 'checked' if form.active }}>
    <label class="form-check-label" for="active">Active (unticking it signs every member out and keeps them out)</label></div>
  <button class="btn btn-primary" type="submit" id="save-organisation">Save</button>
  <a class="btn btn-link" href="{{ url_for('admin_users.organisations') }}">Back</a>
</form>
"""


def _render(title: str, body: str, status: int = 200, **context):
    html = render_template_string(PAGE.replace("{{ body }}", body), title=title, csrf=csrf_token(),
                                  portal_admin=is_portal_admin(current_user), tiers=TIERS,
                                  error=context.pop("error", None), message=" ".join(get_flashed_messages()), **context)
    return html, status


# --- users ------------------------------------------------------------------------------------------------

@bp.get("/users", endpoint="users")
@guard.endpoint(guard.USER_ADMIN)
def users():
    _require(may_administer_users(current_user))
    return _render("Users", USERS, accounts=list_accounts(_engine(), actor=current_user))


def _user_form_page(account, form: dict, status: int = 200, error: str | None = None):
    organisations = [o for o in list_organisations(_engine())
                     if o.active and (is_portal_admin(current_user) or o.id == current_user.organisation_id)]
    return _render(account.email if account else "Add a user", USER_FORM, status, account=account, form=form,
                   organisations=organisations, error=error)


def _save_user_from_form(account):
    """Apply the posted form through safestats.accounts (which re-checks every permission)."""
    _check_csrf()
    form = request.form
    fields = dict(display_name=form.get("display_name", ""), tier=form.get("tier"), active=form.get("active") == "1",
                  boroughs=form["boroughs"].split(",") if "boroughs" in form else None,
                  password=form.get("password") or None, actor=current_user)
    if is_portal_admin(current_user):
        fields.update(organisation=form.get("organisation"), org_admin=form.get("org_admin") == "1")
    redisplay = {"email": form.get("email", ""), "display_name": fields["display_name"], "tier": fields["tier"],
                 "boroughs": form.get("boroughs", ""),
                 "organisation": form.get("organisation") or current_user.organisation,
                 "org_admin": form.get("org_admin") == "1", "active": fields["active"]}
    try:
        if account is None:
            saved = save_account(_engine(), email=form.get("email", ""), **fields)
        else:
            saved = save_account(_engine(), email=account.email, user_id=account.id, **fields)
    except NotPermitted:
        abort(403)
    except AccountError as exc:
        return _user_form_page(account, redisplay, 422, str(exc))
    flash(f"Saved {saved.email}.")   # (in the session: a link cannot put words on an admin page)
    return redirect(url_for("admin_users.users"))


@bp.route("/users/new", methods=["GET", "POST"], endpoint="user_new")
@guard.endpoint(guard.USER_ADMIN)
def user_new():
    _require(may_administer_users(current_user))
    if request.method == "POST":
        return _save_user_from_form(None)
    return _user_form_page(None, {"email": "", "display_name": "", "tier": TIERS[0], "active": True, "boroughs": "",
                                  "organisation": current_user.organisation, "org_admin": False})


def _manageable_account(user_id: int):
    _require(may_administer_users(current_user))
    account = get_account(_engine(), user_id=user_id)
    if account is None:
        abort(404)
    _require(may_manage_account(current_user, account))
    return account


@bp.route("/users/<int:user_id>", methods=["GET", "POST"], endpoint="user_edit")
@guard.endpoint(guard.USER_ADMIN)
def user_edit(user_id: int):
    account = _manageable_account(user_id)
    if request.method == "POST":
        return _save_user_from_form(account)
    return _user_form_page(account, {"display_name": account.display_name, "tier": account.tier,
                                     "organisation": account.organisation, "org_admin": account.org_admin,
                                     "active": account.active, "boroughs": ", ".join(account.boroughs)})


@bp.post("/users/<int:user_id>/reset-second-factor", endpoint="user_reset_second_factor")
@guard.endpoint(guard.USER_ADMIN)
def user_reset_second_factor(user_id: int):
    account = _manageable_account(user_id)
    _check_csrf()
    reset_second_factor(_engine(), account.id, actor=current_user)
    flash(f"{account.email} will set up a second factor at the next sign-in.")
    return redirect(url_for("admin_users.users"))


# --- organisations ----------------------------------------------------------------------------------------

@bp.get("/organisations", endpoint="organisations")
@guard.endpoint(guard.ADMIN)
def organisations():
    _require(is_portal_admin(current_user))
    return _render("Organisations", ORGANISATIONS, organisations=list_organisations(_engine()))


def _organisation_form(org_id: int | None):
    _require(is_portal_admin(current_user))
    organisation = get_organisation(_engine(), org_id) if org_id is not None else None
    if org_id is not None and organisation is None:
        abort(404)
    form = {"code": "", "name": "", "kind": "other", "max_tier": "viewer", "active": True}
    if organisation:
        form = {k: getattr(organisation, k) for k in form}
    error, status = None, 200
    if request.method == "POST":
        _check_csrf()
        form = {"code": request.form.get("code", ""), "name": request.form.get("name", ""),
                "kind": request.form.get("kind", ""), "max_tier": request.form.get("max_tier", ""),
                "active": request.form.get("active") == "1"}
        try:
            saved = save_organisation(_engine(), org_id=org_id, actor=current_user, **form)
        except NotPermitted:
            abort(403)
        except AccountError as exc:
            error, status = str(exc), 422
        else:
            flash(f"Saved {saved.name}.")
            return redirect(url_for("admin_users.organisations"))
    return _render(organisation.name if organisation else "Add an organisation", ORGANISATION_FORM, status,
                   organisation=organisation, form=form, kinds=ORGANISATION_KINDS, error=error)


@bp.route("/organisations/new", methods=["GET", "POST"], endpoint="organisation_new")
@guard.endpoint(guard.ADMIN)
def organisation_new():
    return _organisation_form(None)


@bp.route("/organisations/<int:org_id>", methods=["GET", "POST"], endpoint="organisation_edit")
@guard.endpoint(guard.ADMIN)
def organisation_edit(org_id: int):
    return _organisation_form(org_id)
