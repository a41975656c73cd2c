"""The dashboard's export controls: download links for the current view, the printable summary, and chart PNGs.

The links are plain ``<a download>`` elements whose ``href`` follows the view state (``dashapp.callbacks.exports``):
the files are made by the ``/export/...`` endpoints (``dashapp.exports``), which check the user again. The
records links are shown only to tiers that see records (the endpoint refuses the others anyway). Each chart
downloads itself as PNG through Plotly's own modebar button, configured by ``chart_config``.
"""
from __future__ import annotations

from dash import html
from flask import has_request_context
from flask_login import current_user

from dashapp import ids
from safestats.access import may_see_points

# The PNG file name of each chart's modebar download.
CHART_FILE_NAMES = {ids.TIMESERIES: "safestats-incidents-by-month", ids.CATEGORIES: "safestats-by-category",
                    ids.HOUR_DAY: "safestats-hour-by-weekday"}


def chart_config(graph_id: str) -> dict:
    """A chart's Plotly config: no logo, the modebar's PNG download at twice the screen's resolution, named."""
    return {"displaylogo": False, "responsive": True,
            "modeBarButtonsToRemove": ["lasso2d", "autoScale2d", "zoom2d", "pan2d"],
            "toImageButtonOptions": {"format": "png", "scale": 2,
                                     "filename": CHART_FILE_NAMES.get(graph_id, "safestats-chart")}}


def _link(label: str, id_: str, title: str, visible: bool = True, file: bool = True) -> html.A:
    # Files download; the summary opens in a new tab, to print or save as PDF.
    return html.A(label, id=id_, href="#", title=title, target="_blank",
                  className="btn btn-sm btn-outline-secondary ss-export",
                  style={} if visible else {"display": "none"}, **({"download": ""} if file else {}))


def export_bar() -> html.Div:
    """The export links (their hrefs are set from the view state once the page has read its URL)."""
    records = has_request_context() and current_user.is_authenticated and may_see_points(current_user)
    return html.Div([
        html.Span("Export", className="ss-filter-label me-2"),
        _link("CSV", ids.EXPORT_AGGREGATES_CSV, "Counts by area, month and category for this view (CSV)"),
        _link("GeoJSON", ids.EXPORT_AGGREGATES_GEOJSON, "Counts by area for this view, with the boundaries"),
        _link("Records CSV", ids.EXPORT_RECORDS_CSV, "The incidents of this view, one row each", records),
        _link("Records GeoJSON", ids.EXPORT_RECORDS_GEOJSON, "The incidents of this view as points", records),
        _link("Printable summary", ids.EXPORT_SUMMARY, "One page to print or save as PDF", file=False),
        html.A("API tokens", id=ids.EXPORT_ACCOUNT, href="/account", className="btn btn-sm btn-link ss-export"),
    ], id=ids.EXPORT_BAR, className="ss-export-bar d-flex flex-wrap align-items-center gap-1 mb-2")
