"""Admin data-status pages: each supplier's last drop, rows loaded and quarantined, location quality, freshness.

Plain server-rendered Flask pages (outside the Dash app, styled with the same Bootstrap CSS as the login
page): ``/admin/data-status`` lists every supplier, ``/admin/data-status/<supplier>`` shows one with its
recent drops, and ``/admin/data-status/<supplier>/drops/<id>/quarantine.csv`` downloads a drop's
quarantined rows with their reasons. Admins only: every route is declared ``guard.ADMIN`` (anonymous visitors
are sent to the login page, any other tier gets 403, and each view is audited; the quarantine CSV as an
export). The numbers come from ``safestats.supplier_status``.
"""
from __future__ import annotations

import csv
import io
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, abort, current_app, render_template_string, stream_with_context
from flask_login import current_user

from dashapp import guard
from dashapp.auth import PAGE_HEAD
from safestats.location_levels import METHOD_LABELS, confidence_band
from safestats.supplier_status import LocationQuality, location_quality, recent_drops, supplier_status, supplier_statuses

bp = Blueprint("admin_status", __name__, url_prefix="/admin/data-status")
LONDON = ZoneInfo("Europe/London")
# Spreadsheet programs run a cell that starts with one of these as a formula; raw supplier lines are data.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _engine():
    return current_app.extensions["safestats_engine"]


# The admin pages' shell (this page and dashapp.admin_audit): head, navbar with the section, and the body.
ADMIN_PAGE = PAGE_HEAD + """<body>
  <header class="ss-navbar navbar navbar-dark">
    <div class="container-fluid">
      <a class="navbar-brand" href="/"><span class="ss-brand-mark">SafeStats</span>
        <span class="ss-brand-sub">{{ section }}</span></a>
      <span class="navbar-text small">{{ current_user.email }} · <a class="link-light" href="{{ url_for('auth.logout') }}">Sign out</a></span>
    </div>
  </header>
  <main class="container-fluid py-3">
    {{ body }}
  </main>
</body>
</html>"""

# What every data-status page starts with: the breadcrumb and the macros its bodies use.
DATA_STATUS_HEADER = """
    <nav aria-label="breadcrumb"><ol class="breadcrumb">
      <li class="breadcrumb-item"><a href="{{ url_for('admin_status.index') }}">Data status</a></li>
      {% if status %}<li class="breadcrumb-item active" aria-current="page">{{ status.name }}</li>{% endif %}
    </ol></nav>
    {% macro when(t) %}{{ t.astimezone(london).strftime('%Y-%m-%d %H:%M') if t else '—' }}{% endmacro %}
    {% macro freshness(s) -%}
      {% if s.freshness == 'late' %}<span class="badge bg-danger freshness-late">LATE</span>
        <span class="text-danger small">due by {{ when(s.due_by) }}</span>
      {%- elif s.freshness == 'on time' %}<span class="badge bg-success">on time</span>
        <span class="text-muted small">next due by {{ when(s.due_by) }}</span>
      {%- elif s.freshness == 'never loaded' %}<span class="badge bg-warning text-dark">never loaded</span>
      {%- else %}<span class="badge bg-secondary">no cadence set</span>{% endif %}
    {%- endmacro %}
"""

INDEX = """
<h1 class="h4">Data status by supplier</h1>
<table class="table table-sm table-hover align-middle" id="supplier-status">
  <thead><tr><th>Supplier</th><th>Cadence</th><th>Freshness</th><th>Last drop</th><th>Last loaded</th>
    <th class="text-end">Rows loaded</th><th class="text-end">Rows quarantined</th><th class="text-end">Live drops</th>
    <th class="text-end">Rejected drops</th></tr></thead>
  <tbody>
  {% for s in statuses %}
    <tr class="{{ 'table-danger' if s.late else '' }}" data-supplier="{{ s.code }}">
      <td><a href="{{ url_for('admin_status.supplier', supplier=s.code) }}">{{ s.name }}</a>
        <div class="text-muted small">{{ s.code }}</div></td>
      <td>{{ s.cadence_label }}</td>
      <td>{{ freshness(s) }}</td>
      <td>{% if s.last_drop_id %}#{{ s.last_drop_id }} {{ s.last_drop_file }} ({{ s.last_drop_status }},
        received {{ when(s.last_drop_received_at) }}){% else %}—{% endif %}</td>
      <td>{{ when(s.last_loaded_at) }}</td>
      <td class="text-end">{{ '{:,}'.format(s.rows_loaded) }}</td>
      <td class="text-end">{{ '{:,}'.format(s.rows_quarantined) }}</td>
      <td class="text-end">{{ s.live_drops }}</td>
      <td class="text-end">{{ s.rejected_drops }}</td>
    </tr>
  {% endfor %}
  </tbody>
</table>
<p class="text-muted small">Times are London time. Late: the last loaded drop is older than the supplier's cadence plus {{ grace_days }} days'
  grace (SAFESTATS_CADENCE_GRACE_DAYS). Rows are over live drops (loaded and not replaced by a re-issue).</p>
"""

SUPPLIER = """
<h1 class="h4">{{ status.name }} <small class="text-muted">{{ status.code }}</small></h1>
<div class="row g-3 mb-3">
  <div class="col-md-3"><div class="card"><div class="card-body">
    <div class="text-muted small">Freshness (cadence {{ status.cadence_label }})</div>
    <div id="freshness">{{ freshness(status) }}</div>
    <div class="small">last loaded {{ when(status.last_loaded_at) }}</div></div></div></div>
  <div class="col-md-3"><div class="card"><div class="card-body">
    <div class="text-muted small">Last drop</div>
    {% if status.last_drop_id %}<div>#{{ status.last_drop_id }} · {{ status.last_drop_status }}</div>
      <div class="small text-break">{{ status.last_drop_file }}, received {{ when(status.last_drop_received_at) }}</div>
      <div class="small">{{ '{:,}'.format(status.last_drop_rows_loaded) }} loaded,
        {{ '{:,}'.format(status.last_drop_rows_quarantined) }} quarantined</div>
    {% else %}<div>none yet</div>{% endif %}</div></div></div>
  <div class="col-md-3"><div class="card"><div class="card-body">
    <div class="text-muted small">Live drops</div>
    <div>{{ status.live_drops }} ({{ status.rejected_drops }} rejected)</div>
    <div class="small">{{ '{:,}'.format(status.rows_loaded) }} rows loaded,
      {{ '{:,}'.format(status.rows_quarantined) }} quarantined</div></div></div></div>
</div>

<h2 class="h5">Location quality</h2>
{% if quality.overall %}
<table class="table table-sm w-auto" id="location-quality">
  <thead><tr><th>Located by</th><th class="text-end">Incidents</th><th class="text-end">Share</th>
    <th class="text-end">Mean confidence</th></tr></thead>
  <tbody>{% for method, rows in quality.overall.items() %}
    <tr data-method="{{ method }}"><td>{{ labels[method] }}</td><td class="text-end">{{ '{:,}'.format(rows) }}</td>
      <td class="text-end">{{ '{:.1%}'.format(overall_shares[method]) }}</td>
      <td class="text-end">{{ '{:.0f}'.format(quality.confidence[method]) }} ({{ band(quality.confidence[method]) }})</td></tr>{% endfor %}
  </tbody>
</table>
<p class="text-muted small">Live drops. Exact point: the supplier's own point (police.uk's anonymised snap point included);
  postcode centroid: ONS Postcode Directory; street: a free-text location matched in the gazetteer of police.uk street
  names; confidence 0-100, how sure the location is at that level (100: as the supplier states it).</p>
{% else %}<p class="text-muted">No incidents loaded for this supplier.</p>{% endif %}

<h2 class="h5">Recent drops</h2>
<table class="table table-sm align-middle" id="drops">
  <thead><tr><th>Drop</th><th>File</th><th>Status</th><th>Received</th><th>Loaded</th><th>Period</th>
    <th class="text-end">Read</th><th class="text-end">Loaded</th><th class="text-end">Quarantined</th>
    <th>Located by</th><th></th></tr></thead>
  <tbody>{% for d in drops %}
    <tr class="{{ 'table-warning' if d.status == 'rejected' else '' }}" data-drop="{{ d.id }}">
      <td>#{{ d.id }}</td><td class="text-break">{{ d.file_name }}</td>
      <td>{{ d.status }}{% if d.superseded_by %} by #{{ d.superseded_by }}{% endif %}</td>
      <td>{{ when(d.received_at) }}</td><td>{{ when(d.loaded_at) }}</td>
      <td>{{ d.period_start or '' }}{% if d.period_end and d.period_end != d.period_start %} – {{ d.period_end }}{% endif %}</td>
      <td class="text-end">{{ '{:,}'.format(d.rows_read) }}</td><td class="text-end">{{ '{:,}'.format(d.rows_loaded) }}</td>
      <td class="text-end">{{ '{:,}'.format(d.rows_quarantined) }}</td>
      <td class="small drop-location">{% for method, share in drop_shares.get(d.id, {}).items() %}{{ method }} {{ '{:.0%}'.format(share) }}{{ ', ' if not loop.last }}{% endfor %}</td>
      <td>{% if d.rows_quarantined %}<a href="{{ url_for('admin_status.quarantine_csv', supplier=status.code, drop_id=d.id) }}">quarantine CSV</a>{% endif %}</td>
    </tr>
    {% if d.error %}<tr class="table-warning"><td></td><td colspan="10" class="small">Rejected: {{ d.error }}</td></tr>{% endif %}
  {% endfor %}</tbody>
</table>
"""


def render_admin_page(title: str, section: str, body_template: str, **context):
    """An admin page: ``body_template`` rendered inside the shell (one template, so macros are shared; both
    are autoescaped)."""
    return render_template_string(ADMIN_PAGE.replace("{{ body }}", body_template), title=title, section=section,
                                  london=LONDON, **context)


def _render(title: str, body_template: str, **context):
    from safestats.config import get_settings

    return render_admin_page(title, "Data status", DATA_STATUS_HEADER + body_template,
                             grace_days=f"{get_settings().cadence_grace_days:g}", **context)


@bp.get("", endpoint="index")
@guard.endpoint(guard.ADMIN)
def index():
    return _render("Data status", INDEX, statuses=supplier_statuses(_engine()), status=None)


@bp.get("/<supplier>", endpoint="supplier")
@guard.endpoint(guard.ADMIN)
def supplier(supplier: str):
    status = supplier_status(_engine(), supplier)
    if status is None:
        abort(404)
    drops = recent_drops(_engine(), supplier)
    quality = location_quality(_engine(), supplier, [d.id for d in drops])
    return _render(status.name, SUPPLIER, status=status, quality=quality, labels=METHOD_LABELS,
                   band=confidence_band, overall_shares=LocationQuality.shares(quality.overall), drops=drops,
                   drop_shares={drop_id: LocationQuality.shares(counts) for drop_id, counts in quality.by_drop.items()})


def _cell(value) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


@bp.get("/<supplier>/drops/<int:drop_id>/quarantine.csv", endpoint="quarantine_csv")
@guard.endpoint(guard.ADMIN, exported=True)
def quarantine_csv(supplier: str, drop_id: int):
    from safestats.db_scope import acting_as
    from safestats.supplier_status import drop_outcome, quarantine_rows

    if drop_outcome(_engine(), supplier, drop_id, sample_lines=0, top_reasons=0) is None:
        abort(404)

    def generate():
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["drop_id", "line_no", "reason", "raw_line"])
        # A streamed body runs after the request's own scope has ended: act as the user again for its query.
        with acting_as(current_user):
            for line_no, reason, raw_line in quarantine_rows(_engine(), supplier, drop_id):
                writer.writerow([drop_id, line_no, _cell(reason), _cell(raw_line.rstrip("\r\n"))])
                if buffer.tell() > 64 * 1024:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
        yield buffer.getvalue()

    return Response(stream_with_context(generate()), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{supplier}-drop-{drop_id}-quarantine.csv"'})
