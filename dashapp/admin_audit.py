"""The admins' audit search page: ``/admin/audit`` lists the newest audit rows matching a search.

A plain server-rendered Flask page (GET form, so a search is a link an admin can share), declared
``guard.ADMIN``: anonymous visitors are sent to log in, other tiers get 403, and the search itself is audited
like any data view. Rows come from ``safestats.audit.search``; the page says whether the hash chain verified
only when asked (``?verify=1``), because verifying reads the whole log.
"""
from __future__ import annotations

from datetime import date

from flask import Blueprint, current_app, request

from dashapp import guard
from dashapp.admin_status import render_admin_page
from safestats import audit

bp = Blueprint("admin_audit", __name__, url_prefix="/admin/audit")

BODY = """
    <h1 class="h4">Audit log</h1>
    {% if error %}<div class="alert alert-warning py-2" id="audit-error">{{ error }}</div>{% endif %}
    {% if verification %}
      <div class="alert {{ 'alert-success' if verification.ok else 'alert-danger' }} py-2" id="audit-verify">
        {% if verification.ok %}Hash chain verified: {{ '{:,}'.format(verification.rows) }} rows intact.
        {% else %}Hash chain BROKEN: {{ verification.problems|length }} problem(s); first: {{ verification.problems[0] }}
        {% endif %}</div>
    {% endif %}
    <form class="row g-2 mb-3" method="get" id="audit-search">
      <div class="col-md-2"><input class="form-control form-control-sm" name="email" placeholder="user email contains" value="{{ args.email }}"></div>
      <div class="col-md-2"><input class="form-control form-control-sm" name="target" placeholder="callback or page contains" value="{{ args.target }}"></div>
      <div class="col-md-2"><input class="form-control form-control-sm" type="date" name="from" value="{{ args['from'] }}" aria-label="from"></div>
      <div class="col-md-2"><input class="form-control form-control-sm" type="date" name="to" value="{{ args.to }}" aria-label="to"></div>
      <div class="col-md-2"><select class="form-select form-select-sm" name="allowed" aria-label="allowed or denied">
        <option value="">allowed and denied</option>
        <option value="no" {{ 'selected' if args.allowed == 'no' }}>denied only</option>
        <option value="yes" {{ 'selected' if args.allowed == 'yes' }}>allowed only</option></select></div>
      <div class="col-md-2"><button class="btn btn-primary btn-sm" type="submit">Search</button>
        <button class="btn btn-outline-secondary btn-sm" type="submit" name="verify" value="1">Search and verify chain</button></div>
    </form>
    <table class="table table-sm align-middle small" id="audit-rows">
      <thead><tr><th>#</th><th>When (London)</th><th>User</th><th>Organisation</th><th>Tier</th><th>Call</th>
        <th>Filter state</th><th class="text-end">Rows</th><th>Export</th><th>Outcome</th></tr></thead>
      <tbody>{% for r in rows %}
        <tr class="{{ '' if r.allowed else 'table-danger' }}" data-seq="{{ r.seq }}">
          <td>{{ r.seq }}</td><td>{{ r.at.astimezone(london).strftime('%Y-%m-%d %H:%M:%S') }}</td>
          <td>{{ r.email or '(not logged in)' }}</td><td>{{ r.organisation or '' }}</td><td>{{ r.tier }}</td>
          <td>{{ r.kind }} {{ r.target }}</td><td class="text-break"><code>{{ r.filter_state or '' }}</code></td>
          <td class="text-end">{{ '' if r.rows_returned is none else '{:,}'.format(r.rows_returned) }}</td>
          <td>{{ 'export' if r.exported else '' }}</td><td>{{ r.outcome }}</td></tr>
      {% endfor %}</tbody>
    </table>
    <p class="text-muted small">The newest {{ limit }} matching rows. Verify the whole chain from a shell with
      <code>safestats audit verify</code>.</p>
"""


def _day(value: str) -> date | None:
    return date.fromisoformat(value) if value else None


@bp.get("", endpoint="index")
@guard.endpoint(guard.ADMIN)
def index():
    args = {key: request.args.get(key, "").strip() for key in ("email", "target", "from", "to", "allowed")}
    engine = current_app.extensions["safestats_engine"]
    error, rows = None, []
    try:
        rows = audit.search(engine, email=args["email"] or None, target=args["target"] or None,
                            day_from=_day(args["from"]), day_to=_day(args["to"]),
                            allowed={"yes": True, "no": False}.get(args["allowed"]))
    except ValueError:
        error = "Dates must be given as YYYY-MM-DD."
    guard.note(rows=len(rows))
    verification = audit.verify(engine) if request.args.get("verify") == "1" else None
    return render_admin_page("Audit log", "Audit log", BODY, rows=rows, args=args, error=error,
                             verification=verification, limit=audit.SEARCH_LIMIT)
