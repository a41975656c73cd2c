"""The dashboard's exports as HTTP endpoints: the current view as CSV or GeoJSON, and a printable one-page summary.

Each takes the view's filter state as its query string (the dashboard link's own keys, parsed strictly; a
bad one is a 400 saying which) and is declared in ``dashapp.guard`` as an export, so the guard checks the
user and writes the audit row with the filters and the rows exported. The files come from
``safestats.dataout`` (the module behind the read API too): aggregates by area x month x category for
everyone (``/export/aggregates.csv|.geojson``), records for tiers that see every record of the view
(``/export/records.csv|.geojson``; a refusal says what to do instead). ``/export/summary`` is one HTML page
that prints cleanly to A4 PDF: the filters, the headline figures, a static choropleth of the areas (inline
SVG drawn from the boundaries, no tile server), the monthly and category charts as inline SVG, freshness
and licences. Every number on it comes from the query layer for this user, disclosure control included.
"""
from __future__ import annotations

import json
import math
from html import escape

from flask import Blueprint, Response, current_app, render_template_string, request
from flask_login import current_user

from dashapp import guard
from safestats import dataout, disclosure, queries
from safestats.access import AccessRefused
from safestats.filters import FilterState

bp = Blueprint("exports", __name__, url_prefix="/export")
# ColorBrewer YlOrRd, 5 classes (colour-blind safe), as the dashboard's map.
MAP_COLOURS = ("#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026")
SUPPRESSED_FILL = "#d9d9d9"


def _engine():
    return current_app.extensions["safestats_engine"]


def _state() -> FilterState:
    state = FilterState.from_query_string(request.query_string.decode("ascii", "replace"))
    queries.check_state(_engine(), state)
    return state


def _refusal(status: int, message: str) -> Response:
    return Response(message + "\n", status=status, mimetype="text/plain")


def _export(make):
    try:
        return make(_state())
    except AccessRefused as exc:
        return _refusal(403, str(exc))
    except ValueError as exc:
        return _refusal(400, f"This view's filters could not be read: {exc}. Open the dashboard and export again.")


def _file(body, fmt: str, name: str, rows: int, state: FilterState) -> Response:
    guard.note(rows=rows, state=state.data_filters().to_query_string() or None, exported=True)
    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False, default=str)
    response = Response(text, mimetype="text/csv" if fmt == "csv" else "application/geo+json")
    response.headers["Content-Disposition"] = f'attachment; filename="safestats-{name}.{fmt}"'
    return response


@bp.get("/aggregates.csv", defaults={"fmt": "csv"}, endpoint="aggregates")
@bp.get("/aggregates.geojson", defaults={"fmt": "geojson"}, endpoint="aggregates")
@guard.endpoint(guard.LOGIN, exported=True)
def aggregates(fmt: str):
    def make(state):
        aggs = dataout.aggregates(_engine(), state, current_user)
        meta = dataout.metadata(_engine(), state, current_user, "SafeStats dashboard export: aggregates",
                                aggs.controlled, with_boundaries=True, level=aggs.level, grain=aggs.grain,
                                total=disclosure.label(aggs.total), rows=len(aggs.rows))
        if fmt == "csv":
            return _file(dataout.aggregates_csv(aggs, meta), fmt, "aggregates", len(aggs.rows), state)
        body = dataout.aggregates_geojson(_engine(), aggs, meta)
        return _file(body, fmt, "aggregates", len(body["features"]), state)
    return _export(make)


@bp.get("/records.csv", defaults={"fmt": "csv"}, endpoint="records")
@bp.get("/records.geojson", defaults={"fmt": "geojson"}, endpoint="records")
@guard.endpoint(guard.RECORDS, exported=True)
def records(fmt: str):
    def make(state):
        page = dataout.records(_engine(), state, current_user, limit=dataout.MAX_EXPORT_RECORDS)
        if page.next_cursor:
            raise AccessRefused(f"This view holds more than {dataout.MAX_EXPORT_RECORDS:,} records: narrow the "
                                "dates or the area, or page through them with the API (/api/v1/docs).")
        meta = dataout.metadata(_engine(), state, current_user, "SafeStats dashboard export: records",
                                records=len(page.records))
        body = dataout.records_csv(page, meta) if fmt == "csv" else dataout.records_geojson(page, meta)
        return _file(body, fmt, "records", len(page.records), state)
    return _export(make)


# ---- the printable summary -----------------------------------------------------------------------------------

@bp.get("/summary", endpoint="summary")
@guard.endpoint(guard.LOGIN, exported=True)
def summary():
    def make(state):
        engine = _engine()
        head = queries.headline(engine, state, current_user)
        aggs = dataout.aggregates(engine, state, current_user)
        categories = queries.category_counts(engine, state, current_user)
        meta = dataout.metadata(engine, state, current_user, "SafeStats summary", aggs.controlled,
                                with_boundaries=True, level=aggs.level)
        guard.note(rows=1 + len(aggs.areas) + len(aggs.periods) + len(categories),
                   state=state.data_filters().to_query_string() or None, exported=True)
        html = render_template_string(
            SUMMARY_PAGE, meta=meta, head=head, label=disclosure.label,
            change=_change, level=dataout.AREA_LEVEL_LABELS[aggs.level],
            map_svg=choropleth_svg(queries.boundaries_geojson(engine, aggs.level), aggs),
            months_svg=monthly_svg(aggs), categories_svg=categories_svg(categories[:12]),
            link="/?" + state.to_query_string())
        return Response(html, mimetype="text/html")
    return _export(make)


def _change(now: int | None, before: int | None) -> str:
    if now is None or before is None:
        return "*"
    if not before:
        return "–"
    return f"{100.0 * (now - before) / before:+.1f}%"


def _projector(features: list[dict], width: float, height: float):
    """Longitude/latitude to SVG x/y: equirectangular at London's latitude, fitted to the box."""
    xs, ys = [], []
    for feature in features:
        for ring in _rings(feature["geometry"]):
            xs += [p[0] for p in ring]
            ys += [p[1] for p in ring]
    if not xs:
        return lambda lon, lat: (0.0, 0.0)
    k = math.cos(math.radians((min(ys) + max(ys)) / 2))
    scale = min(width / (((max(xs) - min(xs)) * k) or 1), height / ((max(ys) - min(ys)) or 1))
    return lambda lon, lat: ((lon - min(xs)) * k * scale, (max(ys) - lat) * scale)


def _rings(geometry: dict) -> list:
    if geometry["type"] == "Polygon":
        return geometry["coordinates"]
    if geometry["type"] == "MultiPolygon":
        return [ring for polygon in geometry["coordinates"] for ring in polygon]
    return []


def choropleth_svg(shapes: dict, aggs: dataout.Aggregates, width: int = 520, height: int = 400) -> str:
    """The areas as an inline SVG map, filled by their count in quintiles; suppressed areas grey."""
    counts = {t.code: t.count for t in aggs.areas}
    shown = sorted(n for n in counts.values() if n)
    breaks = [shown[int(len(shown) * q / 5)] for q in range(1, 5)] if shown else []
    project = _projector(shapes["features"], width, height)
    paths = []
    for feature in shapes["features"]:
        code = feature["properties"]["code"]
        n = counts.get(code, 0)
        fill = SUPPRESSED_FILL if code in counts and n is None else (
            "#ffffff" if not n else MAP_COLOURS[sum(n >= b for b in breaks)])
        d = " ".join("M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in (project(*p) for p in ring)) + " Z"
                     for ring in _rings(feature["geometry"]))
        paths.append(f'<path d="{d}" fill="{fill}" stroke="#555" stroke-width="0.4">'
                     f'<title>{escape(feature["properties"]["name"])}: {disclosure.label(n)}</title></path>')
    legend = "".join(f'<rect x="{8 + 44 * i}" y="{height + 8}" width="40" height="10" fill="{c}" stroke="#555" '
                     f'stroke-width="0.4"/>' for i, c in enumerate(MAP_COLOURS))
    labels = "".join(f'<text x="{48 + 44 * i}" y="{height + 30}" font-size="9" text-anchor="middle">'
                     f'{b:,}</text>' for i, b in enumerate(breaks))
    return (f'<svg viewBox="0 0 {width} {height + 36}" width="100%" role="img" aria-label="Map of counts by area">'
            + "".join(paths) + legend + labels + "</svg>")


def _bars_svg(values: list[tuple[str, int | None]], width: int, height: int, horizontal: bool) -> str:
    peak = max([v for _, v in values if v] or [1])
    parts = []
    if horizontal:
        row = height / max(len(values), 1)
        for i, (name, v) in enumerate(values):
            w = (width - 230) * (v or 0) / peak
            parts.append(f'<text x="0" y="{i * row + row * 0.7:.1f}" font-size="10">{escape(name[:34])}</text>'
                         f'<rect x="190" y="{i * row + 2:.1f}" width="{w:.1f}" height="{row - 4:.1f}" fill="#2c7fb8"/>'
                         f'<text x="{194 + w:.1f}" y="{i * row + row * 0.7:.1f}" font-size="10">'
                         f'{disclosure.label(v)}</text>')
    else:
        step = width / max(len(values), 1)
        for i, (name, v) in enumerate(values):
            h = (height - 20) * (v or 0) / peak
            parts.append(f'<rect x="{i * step + 1:.1f}" y="{height - 14 - h:.1f}" width="{max(step - 2, 1):.1f}" '
                         f'height="{h:.1f}" fill="#2c7fb8"><title>{escape(name)}: {disclosure.label(v)}</title></rect>')
            if i % max(1, len(values) // 8) == 0:
                parts.append(f'<text x="{i * step:.1f}" y="{height - 2}" font-size="9">{escape(name)}</text>')
    return f'<svg viewBox="0 0 {width} {height}" width="100%" role="img">' + "".join(parts) + "</svg>"


def monthly_svg(aggs: dataout.Aggregates) -> str:
    # The period's months over every area and category, each summed exactly and then controlled (aggregates).
    return _bars_svg(list(aggs.periods.items()), 520, 160, horizontal=False)


def categories_svg(rows: list) -> str:
    return _bars_svg([(r.name, r.incidents) for r in rows], 520, max(16 * len(rows), 40), horizontal=True)


SUMMARY_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ meta.title }}</title>
<style>
  @page { size: A4 portrait; margin: 12mm; }
  body { font: 11px/1.35 "Helvetica Neue", Arial, sans-serif; color: #222; margin: 0 auto; max-width: 190mm; }
  h1 { font-size: 18px; margin: 0 0 2px; } h2 { font-size: 12px; margin: 8px 0 3px; }
  .muted { color: #666; } .cards { display: flex; gap: 8px; margin: 6px 0; }
  .card { border: 1px solid #ccc; border-radius: 4px; padding: 4px 8px; flex: 1; }
  .card b { display: block; font-size: 18px; } .grid { display: flex; gap: 10px; }
  .grid > div { flex: 1; } svg { display: block; } table { border-collapse: collapse; }
  td { padding: 0 6px 0 0; vertical-align: top; } footer { font-size: 9px; color: #555; margin-top: 6px; }
  section, svg, .cards { break-inside: avoid; }
  @media print { a { color: inherit; text-decoration: none; } }
</style></head>
<body>
<h1>{{ meta.title }}</h1>
<div class="muted">{{ meta.filters_summary }} · {{ meta.period_start or '–' }} to {{ meta.period_end or '–' }} ·
  made {{ meta.generated_at }} for tier {{ meta.tier }}</div>
<div class="cards" id="summary-headline">
  <div class="card">Incidents<b id="summary-total">{{ label(head.total) }}</b></div>
  <div class="card">Previous period<b>{{ label(head.previous) }}</b>{{ change(head.total, head.previous) }}</div>
  <div class="card">A year earlier<b>{{ label(head.year_earlier) }}</b>{{ change(head.total, head.year_earlier) }}</div>
</div>
<div class="grid">
  <section><h2>By {{ level }}</h2>{{ map_svg|safe }}</section>
  <section><h2>Incidents by month</h2>{{ months_svg|safe }}<h2>By category</h2>{{ categories_svg|safe }}</section>
</div>
{% if meta.disclosure %}<p><b>Disclosure control:</b> {{ meta.disclosure }}.</p>{% endif %}
<section><h2>Data freshness</h2><table>
{% for f in meta.freshness %}<tr><td>{{ f.name }}</td><td>data to {{ f.data_to or '–' }}</td>
  <td>loaded {{ f.last_loaded or '–' }}</td></tr>{% endfor %}</table></section>
<footer>Filters: <code>{{ meta.filters or '(none)' }}</code> · view: {{ link }}<br>
{% for a in meta.attribution %}{{ a }}<br>{% endfor %}{{ meta.licence }}</footer>
</body></html>"""
