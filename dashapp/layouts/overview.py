"""The overview page's layout: navbar, a borough choropleth map of London, and the monthly incidents chart.

This module only arranges components and turns numbers into presentation (colour classes, the legend,
the figure); it never touches the database. Data arrives through callbacks: the borough boundaries once
per page load into the GeoJSON's ``data``, and after that only counts, class breaks and the selection
travel, in the GeoJSON's ``hideout``, which the browser-side style function (assets/safestats_map.js)
turns into fill colours. The boundaries are a vector layer drawn over the base-map tiles, so the map is
still readable where the configured tile server cannot be reached.
"""
from __future__ import annotations

from datetime import date

import dash_bootstrap_components as dbc
import dash_leaflet as dl
import plotly.graph_objects as go
from dash import dcc, html
from flask import has_request_context
from flask_login import current_user

from dashapp import ids
from safestats.config import get_settings

# ColorBrewer YlOrRd, 5 classes: sequential, colour-blind safe, prints in greyscale.
CHOROPLETH_COLOURS = ("#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026")
NO_DATA_COLOUR = "#d9d9d9"
SELECTED_OUTLINE = "#1d2b3a"
LINE_COLOUR = "#0b5394"
LONDON_CENTRE = (51.4893, -0.1441)
ALL_LONDON = "All London"

# Functions defined in assets/safestats_map.js; dash-leaflet resolves {"variable": ...} in the browser.
BOROUGH_STYLE = {"variable": "safestats.map.boroughStyle"}
BOROUGH_ON_EACH_FEATURE = {"variable": "safestats.map.boroughOnEachFeature"}


def choropleth_classes(counts: dict[str, int], n_classes: int = len(CHOROPLETH_COLOURS)) -> list[int]:
    """Lower bounds of the colour classes (quantiles of the counts, rounded to 2 significant figures).

    Quantile classes spread 33 boroughs evenly over the palette, where equal intervals would paint
    Westminster dark and everything else pale. The first bound is always 0; duplicates are dropped, so
    fewer classes come back when the counts are few or equal. No counts at all gives no classes.
    """
    values = sorted(v for v in counts.values() if v > 0)
    if not values:
        return []
    bounds = [0]
    for i in range(1, n_classes):
        q = values[min(len(values) - 1, round(i * len(values) / n_classes))]
        bound = _round_2sf(q)
        if bound > bounds[-1]:
            bounds.append(bound)
    return bounds


def _round_2sf(value: int) -> int:
    if value < 100:
        return int(value)
    magnitude = 10 ** (len(str(int(value))) - 2)
    return int(round(value / magnitude) * magnitude)


def borough_hideout(counts: dict[str, int], selected: str | None) -> dict:
    """What the browser-side style function needs to shade the boroughs: counts, classes, selection."""
    classes = choropleth_classes(counts)
    return {"counts": counts, "classes": classes, "colours": list(CHOROPLETH_COLOURS[:len(classes)]),
            "noDataColour": NO_DATA_COLOUR, "selected": selected, "selectedOutline": SELECTED_OUTLINE}


def legend(hideout: dict) -> list:
    """The legend's rows: one swatch per class, labelled with its count range."""
    classes, colours = hideout["classes"], hideout["colours"]
    title = html.Div("Incidents", className="ss-legend-title")
    if not classes:
        return [title, _legend_row(NO_DATA_COLOUR, "No incidents loaded")]
    rows = [title]
    for i, (lower, colour) in enumerate(zip(classes, colours)):
        if i + 1 < len(classes):
            label = f"{lower:,} – {classes[i + 1] - 1:,}"
        else:
            label = f"{lower:,} or more"
        rows.append(_legend_row(colour, label))
    return rows


def _legend_row(colour: str, label: str):
    return html.Div([html.Span(className="ss-legend-swatch", style={"backgroundColor": colour}),
                     html.Span(label)], className="ss-legend-row")


def monthly_figure(months: list[tuple[date, int]], area_name: str) -> go.Figure:
    """The monthly incidents line chart (x: first day of each month, y: incidents)."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=[m.isoformat() for m, _ in months], y=[n for _, n in months], name=area_name,
        mode="lines+markers", line={"color": LINE_COLOUR, "width": 2}, marker={"size": 5},
        hovertemplate="%{x|%B %Y}<br>%{y:,} incidents<extra></extra>"))
    fig.update_layout(
        template="plotly_white", margin={"l": 56, "r": 16, "t": 12, "b": 40}, showlegend=False,
        font={"family": "system-ui, -apple-system, 'Segoe UI', Roboto, Arial, sans-serif", "size": 12},
        xaxis={"title": None, "tickformat": "%b %Y", "showgrid": False},
        yaxis={"title": "Incidents per month", "rangemode": "tozero", "tickformat": ","},
        hovermode="x", uirevision=area_name)
    if not months:
        fig.add_annotation(text="No incidents recorded for this selection", showarrow=False,
                           xref="paper", yref="paper", x=0.5, y=0.5, font={"color": "#6c757d"})
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
    return fig


def monthly_summary(months: list[tuple[date, int]]) -> str:
    """The line above the chart: total incidents and the period they span."""
    if not months:
        return ""
    total = sum(n for _, n in months)
    first, last = months[0][0], months[-1][0]
    return f"{total:,} incidents, {first:%b %Y} to {last:%b %Y}"


def _user_name() -> str:
    # Dash also calls the layout once at start-up, outside any request, to validate callback ids.
    if has_request_context() and current_user.is_authenticated:
        return current_user.display_name
    return ""


def navbar() -> dbc.Navbar:
    return dbc.Navbar(
        dbc.Container([
            html.A([html.Span("SafeStats", className="ss-brand-mark"),
                    html.Span("London crime and community safety data", className="ss-brand-sub")],
                   href="/", className="navbar-brand"),
            html.Div([
                html.Span(_user_name(), id=ids.NAVBAR_USER, className="ss-user"),
                html.A("Sign out", href="/logout", id=ids.NAVBAR_LOGOUT,
                       className="btn btn-sm btn-outline-light ms-3"),
            ], className="d-flex align-items-center"),
        ], fluid=True),
        dark=True, className="ss-navbar", expand=True,
    )


def map_card() -> dbc.Card:
    settings = get_settings()
    return dbc.Card([
        dbc.CardHeader([
            html.H2("Incidents by borough", className="ss-card-title"),
            html.Div("All recorded incidents · click a borough to chart it", className="ss-card-sub"),
        ]),
        html.Div([
            dl.Map(
                [
                    dl.TileLayer(id=ids.OVERVIEW_TILES, url=settings.tile_url,
                                 attribution=settings.tile_attribution),
                    dl.GeoJSON(id=ids.OVERVIEW_BOROUGHS,
                               data={"type": "FeatureCollection", "features": []},
                               style=BOROUGH_STYLE, onEachFeature=BOROUGH_ON_EACH_FEATURE,
                               hideout=borough_hideout({}, None), zoomToBounds=True,
                               hoverStyle={"arrow": {"weight": 3, "color": "#333333", "fillOpacity": 0.85}}),
                ],
                id=ids.OVERVIEW_MAP, center=LONDON_CENTRE, zoom=10, minZoom=8, maxZoom=17,
                zoomSnap=0.25, className="ss-map",
            ),
            html.Div(legend(borough_hideout({}, None)), id=ids.OVERVIEW_LEGEND, className="ss-legend"),
        ], className="ss-map-wrap"),
    ], className="ss-card h-100")


def chart_card() -> dbc.Card:
    return dbc.Card([
        dbc.CardHeader([
            html.H2(["Monthly incidents · ", html.Span(ALL_LONDON, id=ids.OVERVIEW_CHART_TITLE)],
                    className="ss-card-title"),
            html.Div([
                html.Span("Selected borough: "),
                html.Strong("none", id=ids.OVERVIEW_SELECTION_NAME),
                html.Button("clear", id=ids.OVERVIEW_CLEAR_SELECTION, n_clicks=0, type="button",
                            className="btn btn-link btn-sm ss-clear", style={"display": "none"}),
            ], id=ids.OVERVIEW_SELECTION, className="ss-card-sub"),
        ]),
        dbc.CardBody([
            html.Div(id=ids.OVERVIEW_TOTAL, className="ss-total"),
            dcc.Graph(id=ids.OVERVIEW_CHART, figure=monthly_figure([], ALL_LONDON), className="ss-chart",
                      config={"displaylogo": False, "responsive": True,
                              "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d"]}),
        ], className="ss-chart-body"),
    ], className="ss-card h-100")


def layout() -> html.Div:
    """The whole page, built per request (the navbar shows who is logged in)."""
    return html.Div([
        dcc.Location(id=ids.OVERVIEW_URL, refresh=False),
        dcc.Store(id=ids.OVERVIEW_FILTER_STATE, data=""),
        navbar(),
        dbc.Container(
            dbc.Row([
                dbc.Col(map_card(), lg=7, className="ss-col"),
                dbc.Col(chart_card(), lg=5, className="ss-col"),
            ], className="g-3 ss-row"),
            fluid=True, className="ss-main",
        ),
        html.Footer("Contains National Statistics and Ordnance Survey data © Crown copyright and database "
                    "right. Police data: Open Government Licence v3.0.", className="ss-footer"),
    ], className="ss-page")
