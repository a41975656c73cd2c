"""Admin rollup-views page: the table ``safestats views status`` prints, with a refresh button per view.

A plain server-rendered Flask page in the admin shell (``dashapp.admin_status.render_admin_page``):
``GET /admin/views`` lists every rollup (``safestats.rollups.ROLLUPS``) with its rows, size on disk, last
refresh (when, how long, what triggered it), staleness against the newest drop, the years it holds and what
it reads; ``POST /admin/views/<name>/refresh`` refreshes that view and its dependants over every month (analysts
keep querying meanwhile) and comes back to the list. Both are declared ``guard.ADMIN`` (checked and audited
by the registry); the refresh form carries the session's CSRF token. The rollups belong to the database
owner and are closed to the web role, so this page reads and refreshes them through the owner's engine
(``safestats_loader_engine``, as the feed API loads drops), only ever for an admin.
"""
from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, get_flashed_messages, redirect, url_for
from flask_login import current_user

from dashapp import guard
from dashapp.admin_status import render_admin_page
from dashapp.auth import csrf_ok, csrf_token
from safestats import rollups

bp = Blueprint("admin_views", __name__, url_prefix="/admin/views")


def _owner_database_url() -> str:
    return current_app.extensions["safestats_loader_engine"].url.render_as_string(hide_password=False)


BODY = """
    {% macro when(t) %}{{ t.astimezone(london).strftime('%Y-%m-%d %H:%M:%S') if t else 'never' }}{% endmacro %}
    <h1 class="h4">Rollup views</h1>
    {% if message %}<div class="alert alert-success" id="views-message">{{ message }}</div>{% endif %}
    <p class="text-muted small">Newest drop loaded {{ when(newest_drop) }}. Each view is a table refreshed by month; a load
      refreshes only the months its drops touch, in one transaction: dashboards keep answering meanwhile and see the new
      counts at its commit. Times are London time.</p>
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
"""


@bp.get("", endpoint="index")
@guard.endpoint(guard.ADMIN)
def index():
    views = rollups.views_status(_owner_database_url())
    guard.note(rows=len(views))
    return render_admin_page("Rollup views", "Rollup views", BODY, views=views,
                             newest_drop=views[0]["newest_drop_at"] if views else None, csrf=csrf_token(),
                             message=" ".join(get_flashed_messages()))


@bp.post("/<name>/refresh", endpoint="refresh")
@guard.endpoint(guard.ADMIN)
def refresh(name: str):
    if not csrf_ok():
        abort(400, "the form's CSRF token is missing or stale: reload the page and press Refresh again")
    if name not in rollups.ROLLUP_VIEWS:
        abort(404)
    timings = rollups.refresh_rollups(_owner_database_url(), trigger=f"admin page ({current_user.email})", views=(name,))
    from safestats import queries

    queries.clear_caches()  # this worker's panels; others see the new refresh id within a second
    # In the session, not the link: a link cannot put words on an admin page.
    flash(f"Refreshed {name} and its dependants: {len(timings)} refresh(es) of a run of months in "
          f"{sum(timings.values()):.1f} s.")
    return redirect(url_for("admin_views.index"))
