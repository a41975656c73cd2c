"""Admin rollup-views page: the table ``safestats views status`` prints, with a refresh button per view.

A plain server-rendered Flask page like the data-status pages: ``GET /admin/views`` lists every rollup
(``safestats.rollups.ROLLUPS``) with its rows, size on disk, last refresh (when, how long, what triggered
it), staleness against the newest drop, the years it holds and what it reads; ``POST
/admin/views/<name>/refresh`` refreshes that view and its dependants CONCURRENTLY (analysts keep querying
meanwhile) and comes back to the list. Admins only (``safestats.access.policy_for(user).admin``), checked
by every route itself; the refresh form carries the session's CSRF token.
"""
from __future__ import annotations

from urllib.parse import quote
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, current_app, redirect, render_template_string, request, url_for
from flask_login import current_user

from dashapp.auth import _csrf_ok, csrf_token
from safestats import access, rollups

bp = Blueprint("admin_views", __name__, url_prefix="/admin/views")
LONDON = ZoneInfo("Europe/London")


def require_admin() -> None:
    """Every route calls this first: the login guard only knows "logged in", not the tier."""
    if not current_user.is_authenticated:
        abort(401)
    if not access.policy_for(current_user).admin:
        abort(403)


def _database_url() -> str:
    return current_app.extensions["safestats_engine"].url.render_as_string(hide_password=False)


PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Rollup views · SafeStats</title>
  <link rel="stylesheet" href="{{ url_for('public_asset', filename='bootstrap.min.css') }}">
  <link rel="stylesheet" href="{{ url_for('public_asset', filename='safestats.css') }}">
</head>
<body>
  <header class="ss-navbar navbar navbar-dark">
    <div class="container-fluid">
      <a class="navbar-brand" href="/"><span class="ss-brand-mark">SafeStats</span>
        <span class="ss-brand-sub">Rollup views</span></a>
      <span class="navbar-text small">{{ current_user.email }} · <a class="link-light" href="{{ url_for('auth.logout') }}">Sign out</a></span>
    </div>
  </header>
  <main class="container-fluid py-3">
    {% macro when(t) %}{{ t.astimezone(london).strftime('%Y-%m-%d %H:%M:%S') if t else 'never' }}{% endmacro %}
    <h1 class="h4">Rollup views</h1>
    {% if message %}<div class="alert alert-success" id="views-message">{{ message }}</div>{% endif %}
    <p class="text-muted small">Newest drop loaded {{ when(newest_drop) }}. Each view is one materialised view per year
      under a UNION ALL view; a load refreshes only the years its drops touch. Refreshing runs CONCURRENTLY: dashboards
      keep answering meanwhile. Times are London time.</p>
    <table class="table table-sm align-middle" id="views-status">
      <thead><tr><th>View</th><th class="text-end">Rows</th><th class="text-end">Size</th><th>Last refresh</th>
        <th class="text-end">Took</th><th>Triggered by</th><th>State</th><th>Years</th><th>Reads</th><th></th></tr></thead>
      <tbody>
      {% for v in views %}
        <tr data-view="{{ v.view }}" class="{{ 'table-warning' if v.stale else '' }}">
          <td><code>{{ v.view }}</code></td>
          <td class="text-end">{{ '{:,}'.format(v.rows) }}</td>
          <td class="text-end">{{ '%.1f'|format(v.size_bytes / 1048576) }} MB</td>
          <td>{{ when(v.refreshed_at) }}</td>
          <td class="text-end">{{ '%.2f s'|format(v.duration_ms / 1000) if v.duration_ms is not none else '—' }}</td>
          <td class="small">{{ v.trigger or '—' }}</td>
          <td>{% if v.stale %}<span class="badge bg-warning text-dark">STALE {{ v.stale_years|join(', ') }}</span>
              {% else %}<span class="badge bg-success">fresh</span>{% endif %}</td>
          <td class="small">{% for y in v.years %}{{ y.year }}: {{ '{:,}'.format(y.rows) }}{{ '' if loop.last else ', ' }}{% endfor %}</td>
          <td class="small">{{ v.depends_on|join(', ') }}</td>
          <td><form method="post" action="{{ url_for('admin_views.refresh', name=v.view) }}" class="m-0">
            <input type="hidden" name="csrf_token" value="{{ csrf }}">
            <button type="submit" class="btn btn-sm btn-outline-primary">Refresh</button></form></td>
        </tr>
      {% endfor %}
      </tbody>
    </table>
  </main>
</body>
</html>"""


@bp.get("")
def index():
    require_admin()
    views = rollups.views_status(_database_url())
    return render_template_string(PAGE, views=views, newest_drop=views[0]["newest_drop_at"] if views else None,
                                  london=LONDON, csrf=csrf_token(), message=request.args.get("message"))


@bp.post("/<name>/refresh")
def refresh(name: str):
    require_admin()
    if not _csrf_ok():
        abort(400, "the form's CSRF token is missing or stale: reload the page and press Refresh again")
    if name not in rollups.ROLLUP_VIEWS:
        abort(404)
    timings = rollups.refresh_rollups(_database_url(), trigger=f"admin page ({current_user.email})", views=(name,))
    from safestats import queries

    queries.clear_caches()  # this worker's panels; others see the new refresh id within a second
    message = (f"Refreshed {name} and its dependants: {len(timings)} year view(s) in "
               f"{sum(timings.values()):.1f} s.")
    return redirect(url_for("admin_views.index") + "?message=" + quote(message))
