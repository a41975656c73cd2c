"""The analyst dashboard's layout and presentation: filter panel, headline cards, map, charts and table.

This module arranges components and turns query results into presentation (figures, legend, chips, cards,
table rows); it never touches the database. Data arrives through callbacks (``dashapp.callbacks.dashboard``):
area boundaries once per level into each GeoJSON's ``data``, and after that only values, class breaks and
the selection travel, in ``hideout``, which the browser-side style function (assets/safestats_map.js)
turns into fill colours. The boundaries are vector layers over the base-map tiles, so the map still reads
where the configured tile server cannot be reached. Figures are built as plain dicts: several times faster
than plotly express, and what Dash sends anyway.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import date

import dash_bootstrap_components as dbc
import dash_leaflet as dl
from dash import dash_table, dcc, html
from flask import has_request_context
from flask_login import current_user

from dashapp import ids
from dashapp.layouts import saved_views
from dashapp.layouts.exports import chart_config, export_bar
from safestats import disclosure
from safestats.classify import class_breaks
from safestats import queries
from safestats.dataout import filter_labels
from safestats.filters import (DAY_NAMES, HOTSPOT_CONFIDENCES, HOTSPOT_STEP_MONTHS, LOCATED_CHOICES, QUICK_PICKS,
                               THEMES, FilterState)
from safestats.location_levels import METHOD_LABELS
from safestats.tilerender import DENSITY_CLASS_STARTS, DENSITY_COLOURS
from safestats.config import get_settings

# ColorBrewer YlOrRd (sequential) and PuOr (diverging, for change): colour-blind safe, print in greyscale.
SEQUENTIAL = ("#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026")
DIVERGING = ("#5e3c99", "#b2abd2", "#f7f7f7", "#fdb863", "#e66101")
# Okabe-Ito: distinguishable with every common colour-vision deficiency, for the stacked series.
SERIES_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
                  "#999999", "#882255", "#44AA99", "#117733", "#332288", "#AA4499")
NO_DATA_COLOUR = "#d9d9d9"
SELECTED_OUTLINE = "#1d2b3a"
LONDON_CENTRE = (51.4893, -0.1441)
DEFAULT_ZOOM = 10
ALL_LONDON = "All London"
FONT = {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, Arial, sans-serif", "size": 12}
MEASURE_LABELS = {"count": "Incidents", "change": "Change vs previous period (%)",
                  "rate_area": "Incidents per km²", "rate_population": "Incidents per 1,000 residents"}
LEVEL_LABELS = {"borough": "Borough", "msoa": "MSOA", "lsoa": "LSOA"}

# Functions defined in assets/safestats_map.js; dash-leaflet resolves {"variable": ...} in the browser.
AREA_STYLE = {"variable": "safestats.map.areaStyle"}
AREA_ON_EACH_FEATURE = {"variable": "safestats.map.areaOnEachFeature"}
POINT_TO_LAYER = {"variable": "safestats.map.clusterToLayer"}
HOTSPOT_STYLE = {"variable": "safestats.map.hotspotStyle"}
HOTSPOT_ON_EACH_FEATURE = {"variable": "safestats.map.hotspotOnEachFeature"}
BLANK_TILE_URL = "/tiles/blank.png"


def level_for_zoom(zoom: float | None) -> str:
    """The choropleth level that reads well at a zoom: boroughs for London, MSOAs for a borough, then LSOAs."""
    zoom = DEFAULT_ZOOM if zoom is None else zoom
    return "borough" if zoom < 11.5 else "msoa" if zoom < 13.5 else "lsoa"


# ---- map presentation ------------------------------------------------------------------------------------

def area_hideout(values: dict[str, float], measure: str, breaks: str, selected: str | None,
                 suppressed: frozenset[str] = frozenset()) -> dict:
    """What the browser-side style function needs: value per area, class bounds, colours, the selection, and
    the areas whose count is suppressed by disclosure control (their tooltip says "*")."""
    if measure == "change":
        classes = _change_classes(values)
        colours = list(DIVERGING[:len(classes)]) if len(classes) == 5 else list(DIVERGING)[:len(classes)]
    else:
        classes = class_breaks(values.values(), len(SEQUENTIAL), breaks)
        colours = list(SEQUENTIAL[:len(classes)])
    # Values rounded to what the legend and tooltip show: a third of the bytes for 4,835 LSOAs.
    values = {code: round(v, 2) for code, v in values.items()}
    return {"values": values, "classes": classes, "colours": colours, "suppressed": sorted(suppressed),
            "noDataColour": NO_DATA_COLOUR, "selected": selected, "selectedOutline": SELECTED_OUTLINE}


def _change_classes(values: dict[str, float]) -> list[float]:
    # Symmetric around no change, so "up" and "down" read at a glance: < -25, -25..-5, -5..5, 5..25, > 25 %.
    return [-1e9, -25.0, -5.0, 5.0, 25.0] if values else []


def legend(hideout: dict, measure: str, level: str, note: str | None = None) -> list:
    classes, colours = hideout["classes"], hideout["colours"]
    title = html.Div(f"{MEASURE_LABELS[measure]} · {LEVEL_LABELS[level]}", className="ss-legend-title")
    if not classes:
        return [title, _legend_row(NO_DATA_COLOUR, note or "No data for this selection")]
    rows = [title]
    for i, (lower, colour) in enumerate(zip(classes, colours)):
        upper = classes[i + 1] if i + 1 < len(classes) else None
        if measure == "change":
            label = (f"below {upper:+g}%" if lower <= -1e8 else
                     f"{lower:+g}% to {upper:+g}%" if upper is not None else f"{lower:+g}% or more")
        elif upper is None:
            label = f"{_fmt(lower)} or more"
        else:
            label = f"{_fmt(lower)} – {_fmt(upper)}"
        rows.append(_legend_row(colour, label))
    rows.append(_legend_row(NO_DATA_COLOUR, "none / no data"))
    if note:
        rows.append(html.Div(note, className="ss-legend-note"))
    return rows


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:,.2g}"


def _legend_row(colour: str, label: str):
    return html.Div([html.Span(className="ss-legend-swatch", style={"backgroundColor": colour}),
                     html.Span(label)], className="ss-legend-row")


# ---- hotspot layers ----------------------------------------------------------------------------------------

HOTSPOT_LABELS = {"gi_grid": "Hot spots (Gi*) on 500 m cells", "gi_lsoa": "Hot spots (Gi*) on LSOAs",
                  "kde": "Kernel density (heat)", "emerging": "Emerging hot spots",
                  "compare": "Hot spots: period comparison"}
# ColorBrewer RdBu for Gi* (hot red, cold blue, stronger with confidence), as ArcGIS draws Gi* classes.
HOTSPOT_COLOURS = {
    "gi": {99: "#b2182b", 95: "#ef8a62", 90: "#fddbc7", -90: "#d1e5f0", -95: "#67a9cf", -99: "#2166ac"},
    "emerging": {"new": "#fee391", "consecutive": "#fec44f", "intensifying": "#99000d", "persistent": "#ef3b2c",
                 "diminishing": "#fc9272", "sporadic": "#fdae6b", "historical": "#bdbdbd"},
    "compare": {"new_hot": "#d7301f", "still_hot": "#fc8d59", "no_longer_hot": "#fdd49e",
                "cold_to_hot": "#7a0177", "new_cold": "#0570b0", "still_cold": "#74a9cf",
                "no_longer_cold": "#d0d1e6", "hot_to_cold": "#542788"},
}


def hotspot_colours(kind: str) -> dict:
    """Fill colour per class of a vector hotspot layer (the density layer is tiles: none)."""
    return HOTSPOT_COLOURS.get("gi" if kind in ("gi_grid", "gi_lsoa") else kind, {})


def hotspot_hideout(state: FilterState) -> dict:
    """Colours per class and the picked hotspot (a cell's id, or the selected LSOA) for the outline."""
    cell = state.hotspot_cell
    selected = f"{cell[0]}:{cell[1]}:{cell[2]}" if cell else state.lsoa_code
    return {"colours": {str(k): v for k, v in hotspot_colours(state.hotspot).items()}, "selected": selected}


def hotspot_legend(layer, state: FilterState) -> list:
    """The legend of the hotspot layer: what is drawn, its settings, a swatch per class drawn."""
    kind = state.hotspot
    title = html.Div(HOTSPOT_LABELS[kind], className="ss-legend-title")
    if isinstance(layer, queries.KdeSurface):
        if not layer.incidents:
            return [title, _legend_row(NO_DATA_COLOUR, "No incidents in this selection")]
        rule = "standard rule" if state.kde_bandwidth_m is None else f"standard rule: {layer.rule_bandwidth_m:,.0f} m"
        rows = [title, html.Div(f"Quartic kernel, bandwidth {layer.bandwidth_m:,.0f} m ({rule})",
                                className="ss-legend-note")]
        for i, (start, colour) in enumerate(zip(DENSITY_CLASS_STARTS, DENSITY_COLOURS)):
            upper = DENSITY_CLASS_STARTS[i + 1] * layer.scale_max if i + 1 < len(DENSITY_CLASS_STARTS) else None
            lower = start * layer.scale_max
            label = f"{_fmt(lower)} – {_fmt(upper)}" if upper is not None else f"{_fmt(lower)} or more"
            rows.append(_legend_row("#%02x%02x%02x" % colour[:3], label + " per km²"))
        return rows
    colours = hotspot_colours(kind)
    labels = {"emerging": queries.EMERGING_LABELS, "compare": queries.COMPARE_LABELS}.get(kind, queries.HOT_LABELS)
    settings = [f"{layer.confidence}% confidence or more"]
    if layer.fdr:
        settings.append("FDR-corrected")
    band = f"band {layer.band_m:,.0f} m" + (f" on {layer.cell_m} m cells" if layer.cell_m else " between centroids")
    rows = [title, html.Div("; ".join(settings) + f"; {band}", className="ss-legend-note")]
    if layer.note:
        rows.append(html.Div(layer.note, className="ss-legend-note"))
    drawn = layer.classes_drawn
    if not drawn:
        rows.append(_legend_row(NO_DATA_COLOUR, "No significant hot or cold spots" if layer.incidents
                                else "No incidents in this selection"))
    for cls in drawn:
        count = sum(1 for f in layer.geojson["features"] if f["properties"]["class"] == cls)
        rows.append(_legend_row(colours[cls], f"{labels[cls]} ({count:,})"))
    rows.append(html.Div("Click a cell to filter the charts to it" if layer.cell_m else
                         "Click an LSOA to filter the charts to it", className="ss-legend-note"))
    return rows


def kde_tile_url(state: FilterState) -> str:
    """The density tiles' URL: the data filters (no spatial selection) and the bandwidth."""
    qs = replace(state.data_filters().without_spatial_selection(), kde_bandwidth_m=state.kde_bandwidth_m)
    return "/tiles/kde/{z}/{x}/{y}.png?" + qs.to_query_string()


def hotspot_controls() -> html.Div:
    """The hotspot layer choice and its settings (each setting shown for the layers it affects)."""
    return html.Div([
        dbc.Select(id=ids.MAP_HOTSPOT, size="sm", value="none", className="ss-select",
                   options=[{"label": "Hotspots: off", "value": "none"}]
                   + [{"label": v, "value": k} for k, v in HOTSPOT_LABELS.items()]),
        html.Div([
            html.Div(dbc.Select(id=ids.MAP_HOTSPOT_CONFIDENCE, size="sm", value="90", className="ss-select",
                                options=[{"label": f"{c}% confidence or more", "value": str(c)}
                                         for c in HOTSPOT_CONFIDENCES]), className="ss-hot-gi"),
            html.Div(dcc.Checklist(id=ids.MAP_HOTSPOT_FDR, value=[], inline=True, className="ss-checklist",
                                   options=[{"label": "FDR correction", "value": "fdr"}]), className="ss-hot-fdr"),
            html.Div([html.Label("Bandwidth (m)", htmlFor=ids.MAP_KDE_BANDWIDTH, className="ss-inline-label"),
                      dcc.Input(id=ids.MAP_KDE_BANDWIDTH, type="number", min=100, max=10000, step=50,
                                debounce=True, placeholder="standard rule", className="ss-bandwidth")],
                     className="ss-hot-kde"),
            html.Div(dbc.Select(id=ids.MAP_HOTSPOT_STEP, size="sm", value="1", className="ss-select",
                                options=[{"label": f"Steps of {m} month{'s' if m > 1 else ''}", "value": str(m)}
                                         for m in HOTSPOT_STEP_MONTHS]), className="ss-hot-emerging"),
            html.Div([html.Span("Compare with", className="ss-inline-label"),
                      dcc.DatePickerRange(id=ids.MAP_COMPARE_DATES, display_format="D MMM YYYY",
                                          first_day_of_week=1, clearable=True,
                                          start_date_placeholder_text="previous",
                                          end_date_placeholder_text="period", className="ss-dates")],
                     className="ss-hot-compare"),
        ], id=ids.MAP_HOTSPOT_OPTIONS, className="ss-hotspot-options"),
    ], className="ss-map-options ss-hotspot-controls", **{"aria-label": "Hotspot layer"})


# ---- figures ---------------------------------------------------------------------------------------------

def _base_layout(**extra) -> dict:
    layout = {"template": "plotly_white", "margin": {"l": 52, "r": 12, "t": 8, "b": 36}, "font": FONT,
              "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)"}
    layout.update(extra)
    return layout


def empty_figure(message: str) -> dict:
    return {"data": [], "layout": _base_layout(
        xaxis={"visible": False}, yaxis={"visible": False},
        annotations=[{"text": message, "showarrow": False, "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5,
                      "font": {"color": "#5f6b76", "size": 13}}])}


def timeseries_figure(series, period, state: FilterState) -> dict:
    """Monthly counts stacked by group, last year's totals as a line, and the chosen period shaded.

    Drag across the chart (select mode, horizontal) to set the date range."""
    if not series.months:
        return empty_figure("No incidents match these filters")
    x = [m.isoformat() for m in series.months]
    data = []
    for i, (label, counts) in enumerate(series.groups.items()):
        # Tooltips show the text (a suppressed count, None, is "*": no bar, but the hover says so).
        data.append({"type": "bar", "x": x, "y": counts, "name": label, "text": [count_label(n) for n in counts],
                     "textposition": "none", "marker": {"color": SERIES_COLOURS[i % len(SERIES_COLOURS)]},
                     "hovertemplate": f"{label}<br>%{{x|%b %Y}}: %{{text}}<extra></extra>"})
    data.append({"type": "scatter", "mode": "lines", "x": x, "y": series.year_earlier,
                 # The first 12 months have no year before them ("–"); after that None is a suppressed count.
                 "text": ["–" if i < 12 else count_label(n) for i, n in enumerate(series.year_earlier)],
                 "name": "Same month a year earlier", "line": {"color": "#1d2b3a", "dash": "dot", "width": 2},
                 "hovertemplate": "A year earlier: %{text}<extra></extra>"})
    shapes = []
    if period is not None:
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "y0": 0, "y1": 1, "layer": "below",
                       "x0": _month_edge(period.start), "x1": _month_edge(period.end, end=True),
                       "fillcolor": "rgba(158,0,89,0.08)", "line": {"width": 0}})
    return {"data": data, "layout": _base_layout(
        barmode="stack", dragmode="select", selectdirection="h", hovermode="x unified", shapes=shapes,
        legend={"orientation": "h", "y": -0.18, "font": {"size": 11}},
        xaxis={"type": "date", "tickformat": "%b %Y", "showgrid": False, "fixedrange": True},
        yaxis={"title": {"text": "Incidents per month"}, "rangemode": "tozero", "tickformat": ",",
               "fixedrange": True},
        uirevision="timeseries")}


def _month_edge(d: date, end: bool = False) -> str:
    # Bars are centred on the 1st; the shading runs from the middle of the previous month's gap.
    return f"{d.isoformat()}T00:00:00" if not end else f"{d.isoformat()}T23:59:59"


def categories_figure(rows, state: FilterState, selected_ids: tuple[int, ...]) -> dict:
    """Horizontal bars, largest at the top; click one to filter everything to it."""
    if not rows:
        return empty_figure("No incidents match these filters")
    rows = list(reversed(rows))
    highlight = set(selected_ids)
    colours = ["#9e0059" if (not highlight or r.category_id in highlight) else "#c8ccd1" for r in rows]
    return {"data": [{"type": "bar", "orientation": "h", "x": [r.incidents for r in rows],
                      "y": [r.name for r in rows], "customdata": [r.category_id for r in rows],
                      "text": [count_label(r.incidents) for r in rows], "textposition": "none",
                      "marker": {"color": colours}, "hovertemplate": "%{y}: %{text}<extra></extra>"}],
            "layout": _base_layout(margin={"l": 190, "r": 12, "t": 8, "b": 30}, bargap=0.25,
                                   xaxis={"tickformat": ",", "fixedrange": True},
                                   yaxis={"automargin": True, "fixedrange": True}, clickmode="event")}


def hour_day_figure(grid, state: FilterState) -> dict:
    if grid.timed == 0:
        return empty_figure("")
    z = grid.counts
    return {"data": [{"type": "heatmap", "z": z, "x": list(range(24)), "y": list(DAY_NAMES),
                      "colorscale": [[0, "#ffffb2"], [0.25, "#fecc5c"], [0.5, "#fd8d3c"], [0.75, "#f03b20"],
                                     [1, "#bd0026"]], "xgap": 1, "ygap": 1,
                      "hovertemplate": "%{y} %{x}:00–%{x}:59: %{z:,}<extra></extra>",
                      "colorbar": {"thickness": 10}}],
            "layout": _base_layout(xaxis={"title": {"text": "Hour of day"}, "dtick": 3, "fixedrange": True},
                                   yaxis={"autorange": "reversed", "fixedrange": True}, clickmode="event")}


def hour_day_note(grid) -> str:
    if grid.timed == 0 and grid.untimed:
        return ("No times of day to show: " + ", ".join(grid.untimed_suppliers)
                + " records the month only, so an hour-by-weekday grid would mislead.")
    if grid.untimed:
        return (f"{grid.untimed:,} incidents without a time of day are not in the grid "
                f"({', '.join(grid.untimed_suppliers)} record the month only).")
    return ""


# ---- headline cards, chips, selection --------------------------------------------------------------------

def count_label(n: int | None) -> str:
    """A count as shown: None is a count suppressed by disclosure control ("*")."""
    return disclosure.label(n)


def _change_text(now: int | None, before: int | None) -> tuple[str, str]:
    if now is None or before is None:
        return ("not shown for small numbers", "ss-change-flat")
    if not before:
        return ("no earlier data" if not now else "new", "ss-change-flat")
    pct = 100.0 * (now - before) / before
    css = "ss-change-up" if pct > 0.5 else "ss-change-down" if pct < -0.5 else "ss-change-flat"
    return f"{pct:+.1f}% ({now - before:+,})", css


def headline_cards(head, fresh, empty_reason: str | None, pinned: bool = False) -> list:
    if head.period is None:
        return [html.Div("No incidents have been loaded yet.", className="ss-empty")]
    vs_prev, prev_css = _change_text(head.total, head.previous)
    vs_year, year_css = _change_text(head.total, head.year_earlier)
    cards = [
        _card("Incidents", count_label(head.total), head.period.label(), ids.HEADLINE_TOTAL),
        _card("vs previous period", vs_prev, head.period.previous().label(), css=prev_css),
        _card("vs a year earlier", vs_year, head.period.year_earlier().label(), css=year_css),
        html.Div([html.Div("Data up to, as pinned" if pinned else "Data up to", className="ss-card-label"),
                  html.Ul([html.Li(_freshness_text(f)) for f in fresh if f.data_to], className="ss-freshness"),
                  *([html.Div("No data loaded yet: " + ", ".join(_short_name(f.name) for f in fresh if not f.data_to),
                              className="ss-card-subtle")] if any(not f.data_to for f in fresh) else [])],
                 id=ids.FRESHNESS, className="ss-headline-card ss-freshness-card"),
    ]
    if empty_reason:
        cards.append(html.Div(empty_reason, className="ss-empty w-100"))
    return cards


def _short_name(name: str) -> str:
    return name.split("(")[0].strip()


def _freshness_text(f) -> str:
    return f"{_short_name(f.name)}: to end of {f.data_to:%b %Y}"


def _card(label: str, value: str, sub: str, id_: str | None = None, css: str = "") -> html.Div:
    value_div = html.Div(value, className=f"ss-card-value {css}", **({"id": id_} if id_ else {}))
    return html.Div([html.Div(label, className="ss-card-label"), value_div,
                     html.Div(sub, className="ss-card-subtle")], className="ss-headline-card")


def no_filters_chip() -> html.Span:
    return html.Span("No filters: all incidents in London", className="ss-chip-none")


def html_message(text: str) -> html.Div:
    return html.Div(text, className="ss-empty w-100")


def filter_chips(state: FilterState, names: dict) -> list:
    """One removable chip per active filter (key = the URL key it clears)."""
    chips = []

    def chip(key: str, label: str):
        chips.append(html.Span([label, html.Button("×", id={"type": ids.CHIP_REMOVE, "key": key}, n_clicks=0,
                                                   className="ss-chip-x", title=f"Remove: {label}",
                                                   **{"aria-label": f"Remove filter {label}"})],
                               className="ss-chip"))
    for key, label in filter_labels(state, names):
        chip(key, label)
    return chips


# ---- the page ----------------------------------------------------------------------------------------------

def _user_name() -> str:
    # Dash also calls the layout once at start-up, outside any request, to validate callback ids.
    if has_request_context() and current_user.is_authenticated:
        return current_user.display_name
    return ""


def _admin_link() -> list:
    """A link to the user admin pages for portal and organisation admins (the pages check again)."""
    from safestats.accounts import may_administer_users

    if has_request_context() and current_user.is_authenticated and may_administer_users(current_user):
        return [html.A("Users", href="/admin/users", id=ids.NAVBAR_ADMIN, className="btn btn-sm btn-outline-light ms-3")]
    return []


def navbar() -> dbc.Navbar:
    return dbc.Navbar(
        dbc.Container([
            html.A([html.Span("SafeStats", className="ss-brand-mark"),
                    html.Span("London crime and community safety data", className="ss-brand-sub")],
                   href="/", className="navbar-brand"),
            html.Div([
                html.Span(_user_name(), id=ids.NAVBAR_USER, className="ss-user"),
                *_admin_link(),
                html.A("Sign out", href="/logout", id=ids.NAVBAR_LOGOUT,
                       className="btn btn-sm btn-outline-light ms-3"),
            ], className="d-flex align-items-center"),
        ], fluid=True),
        dark=True, className="ss-navbar", expand=True,
    )


def _labelled(label: str, control, control_id: str) -> html.Div:
    return html.Div([html.Label(label, htmlFor=control_id, className="ss-filter-label"), control],
                    className="ss-filter")


def filter_panel() -> html.Div:
    return html.Div([
        html.Div([html.H2("Filters", className="ss-panel-title"),
                  html.Button("Reset all", id=ids.FILTER_RESET, n_clicks=0, type="button",
                              className="btn btn-sm btn-outline-secondary")],
                 className="d-flex justify-content-between align-items-center mb-2"),
        _labelled("Dates", dcc.DatePickerRange(id=ids.FILTER_DATES, display_format="D MMM YYYY",
                                               first_day_of_week=1, clearable=True, start_date_placeholder_text="From",
                                               end_date_placeholder_text="To", className="ss-dates"),
                  ids.FILTER_DATES),
        dcc.Dropdown(id=ids.FILTER_QUICK_PICK, placeholder="Quick pick…", searchable=False,
                     options=[{"label": v, "value": k} for k, v in QUICK_PICKS.items()], className="mt-1"),
        _labelled("Supplier", dcc.Checklist(id=ids.FILTER_SUPPLIERS, options=[], value=[],
                                            className="ss-checklist"), ids.FILTER_SUPPLIERS),
        _labelled("Domain", dcc.Checklist(id=ids.FILTER_DOMAINS, options=[], value=[],
                                          className="ss-checklist"), ids.FILTER_DOMAINS),
        _labelled("Category", dcc.Dropdown(id=ids.FILTER_CATEGORIES, options=[], value=[], multi=True,
                                           placeholder="All categories"), ids.FILTER_CATEGORIES),
        _labelled("Themes (any of)", dcc.Checklist(
            id=ids.FILTER_THEMES, value=[], className="ss-checklist",
            options=[{"label": label, "value": key} for key, (_, _, label) in THEMES.items()]), ids.FILTER_THEMES),
        _labelled("Borough", dcc.Dropdown(id=ids.FILTER_BOROUGH, options=[], placeholder=ALL_LONDON),
                  ids.FILTER_BOROUGH),
        _labelled("MSOA", dcc.Dropdown(id=ids.FILTER_MSOA, options=[], placeholder="All MSOAs in the borough"),
                  ids.FILTER_MSOA),
        _labelled("LSOA", dcc.Dropdown(id=ids.FILTER_LSOA, options=[], placeholder="All LSOAs in the MSOA"),
                  ids.FILTER_LSOA),
        _labelled("Time of day", dcc.RangeSlider(id=ids.FILTER_HOURS, min=0, max=23, step=1, value=[0, 23],
                                                 marks={h: f"{h:02d}" for h in (0, 6, 12, 18, 23)},
                                                 allowCross=False), ids.FILTER_HOURS),
        html.Div("Hours apply to suppliers that record a time; others drop out while set.",
                 className="ss-hint"),
        _labelled("Day of week", dcc.Checklist(id=ids.FILTER_DAYS, value=[], inline=True,
                                               className="ss-checklist ss-days",
                                               options=[{"label": n, "value": i + 1} for i, n in enumerate(DAY_NAMES)]),
                  ids.FILTER_DAYS),
        _labelled("Location quality", dbc.Select(
            id=ids.FILTER_LOCATED, value="any", size="sm",
            options=[{"label": "Any (all records)", "value": "any"}]
            + [{"label": f"{METHOD_LABELS[m].capitalize()} or better" if i else METHOD_LABELS[m].capitalize(),
                "value": m} for i, m in enumerate(LOCATED_CHOICES)]), ids.FILTER_LOCATED),
        html.Div("Records located less well than this (e.g. A&E records placed at a borough) drop out.",
                 className="ss-hint"),
    ], className="ss-filter-panel", role="search", **{"aria-label": "Filters"})


def map_card() -> dbc.Card:
    settings = get_settings()
    area_layers = [
        # No data: the map callback sets ``url`` to the level's boundaries once it is shown (dashapp.boundaries).
        dl.GeoJSON(id=ids.MAP_AREAS[level], style=AREA_STYLE, onEachFeature=AREA_ON_EACH_FEATURE,
                   hideout=area_hideout({}, "count", "quantile", None),
                   hoverStyle={"arrow": {"weight": 3, "color": "#333333", "fillOpacity": 0.85}})
        for level in ("borough", "msoa", "lsoa")]
    return dbc.Card([
        dbc.CardHeader([
            html.Div([
                html.H2("Map", className="ss-card-title"),
                html.Div([html.Span("Selected: "), html.Strong(ALL_LONDON, id=ids.SELECTION_NAME),
                          html.Button("clear", id=ids.CLEAR_SELECTION, n_clicks=0, type="button",
                                      className="btn btn-link btn-sm ss-clear", style={"display": "none"})],
                         id=ids.SELECTION, className="ss-card-sub"),
            ]),
            html.Div([
                dbc.Select(id=ids.MAP_LEVEL, size="sm", value="auto", className="ss-select",
                           options=[{"label": "Level: follows zoom", "value": "auto"}]
                           + [{"label": f"Level: {v}", "value": k} for k, v in LEVEL_LABELS.items()]),
                dbc.Select(id=ids.MAP_MEASURE, size="sm", value="count", className="ss-select",
                           options=[{"label": v, "value": k} for k, v in MEASURE_LABELS.items()]),
                dbc.Select(id=ids.MAP_BREAKS, size="sm", value="quantile", className="ss-select",
                           options=[{"label": "Quantiles", "value": "quantile"},
                                    {"label": "Natural breaks", "value": "jenks"}]),
                dcc.Checklist(id=ids.MAP_LAYERS, value=[], inline=True, className="ss-checklist ss-layers",
                              options=[{"label": "Density", "value": "density"},
                                       {"label": "Points (street zoom)", "value": "points"}]),
            ], className="ss-map-options", **{"aria-label": "Map options"}),
            hotspot_controls(),
        ], className="ss-map-header"),
        html.Div([
            dl.Map([
                dl.TileLayer(id=ids.MAP_TILES, url=settings.tile_url, attribution=settings.tile_attribution),
                dl.TileLayer(id=ids.MAP_DENSITY, url=BLANK_TILE_URL, opacity=0.75, zIndex=5, maxZoom=18),
                *area_layers,
                dl.TileLayer(id=ids.MAP_KDE, url=BLANK_TILE_URL, opacity=0.8, zIndex=6, maxZoom=18),
                dl.GeoJSON(id=ids.MAP_HOTSPOTS, data={"type": "FeatureCollection", "features": []},
                           style=HOTSPOT_STYLE, onEachFeature=HOTSPOT_ON_EACH_FEATURE,
                           hideout={"colours": {}, "selected": None},
                           hoverStyle={"arrow": {"weight": 3, "color": "#333333"}}),
                dl.GeoJSON(id=ids.MAP_POINTS, data={"type": "FeatureCollection", "features": []},
                           pointToLayer=POINT_TO_LAYER),
                dl.FeatureGroup([dl.EditControl(
                    id=ids.MAP_DRAW, position="topleft",
                    draw={"polyline": False, "circle": False, "marker": False, "circlemarker": False,
                          "polygon": {"allowIntersection": False}, "rectangle": True},
                    edit={"edit": False})]),
            ], id=ids.MAP, center=LONDON_CENTRE, zoom=DEFAULT_ZOOM, minZoom=8, maxZoom=18, zoomSnap=0.5,
               className="ss-map", keyboard=True),
            html.Div(legend(area_hideout({}, "count", "quantile", None), "count", "borough"),
                     id=ids.MAP_LEGEND, className="ss-legend"),
            html.Div(id=ids.HOTSPOT_LEGEND, className="ss-legend ss-hotspot-legend", style={"display": "none"}),
            html.Div(id=ids.MAP_NOTE, className="ss-map-note"),
        ], className="ss-map-wrap"),
    ], className="ss-card h-100")


def _panel(title, body, title_id: str | None = None, sub=None) -> dbc.Card:
    header = [html.H2(title, className="ss-card-title", **({"id": title_id} if title_id else {}))]
    if sub is not None:
        header.append(sub)
    return dbc.Card([dbc.CardHeader(header), dbc.CardBody(body, className="ss-panel-body")], className="ss-card")


def _graph(id_: str, height: int) -> dcc.Loading:
    return dcc.Loading(dcc.Graph(id=id_, figure=empty_figure("Loading…"), style={"height": f"{height}px"},
                                 config=chart_config(id_)),
                       type="dot", delay_show=250)


def top_areas_table() -> dash_table.DataTable:
    return dash_table.DataTable(
        id=ids.TOP_AREAS, data=[], sort_action="native", page_size=10, cell_selectable=True,
        columns=[{"name": "Area", "id": "name"}, {"name": "Incidents", "id": "incidents", "type": "numeric",
                                                   "format": {"specifier": ","}},
                 {"name": "Change %", "id": "change_pct", "type": "numeric", "format": {"specifier": "+.1f"}},
                 {"name": "per km²", "id": "per_km2", "type": "numeric", "format": {"specifier": ",.1f"}},
                 {"name": "per 1,000", "id": "per_1000", "type": "numeric", "format": {"specifier": ",.1f"}}],
        style_as_list_view=True, style_cell={"fontFamily": FONT["family"], "fontSize": 13, "padding": "4px 8px"},
        style_header={"fontWeight": 600, "backgroundColor": "#f3f5f7"},
        style_cell_conditional=[{"if": {"column_id": "name"}, "textAlign": "left", "cursor": "pointer"}],
        tooltip_delay=0)


def layout() -> html.Div:
    """The whole page, built per request (the navbar shows who is logged in)."""
    return html.Div([
        dcc.Location(id=ids.URL, refresh=False),
        dcc.Store(id=ids.VIEW_STATE, data=None),
        dcc.Store(id=ids.DATA_STATE, data=None),
        dcc.Store(id=ids.MAP_DRAWN, data=None),
        navbar(),
        html.Div([
            html.Aside(filter_panel(), className="ss-aside"),
            html.Main([
                dbc.Alert(id=ids.STATE_ERROR, color="warning", is_open=False, dismissable=True, className="mb-2"),
                saved_views.opened_view_note(),
                html.Div([
                    html.Div(id=ids.FILTER_CHIPS, className="ss-chips", **{"aria-live": "polite"}),
                    saved_views.toolbar(),
                    html.Div([
                        html.Label("Link to this view", htmlFor=ids.SHARE_URL, className="visually-hidden"),
                        dcc.Input(id=ids.SHARE_URL, type="text", readOnly=True, value="", className="ss-share"),
                        html.Button("Copy link", id=ids.COPY_LINK, n_clicks=0, type="button",
                                    className="btn btn-sm btn-primary ss-copy"),
                    ], className="ss-share-wrap"),
                ], className="ss-toolbar"),
                export_bar(),
                dcc.Loading(html.Div(id=ids.HEADLINE, className="ss-headline"), type="dot", delay_show=250),
                dbc.Row([
                    dbc.Col(map_card(), xl=7, className="ss-col"),
                    dbc.Col([
                        _panel("Incidents by month", _graph(ids.TIMESERIES, 300),
                               sub=html.Div("Drag across the chart to set the dates", className="ss-card-sub")),
                        _panel("By category", _graph(ids.CATEGORIES, 300),
                               sub=html.Div("Click a bar to filter to it", className="ss-card-sub")),
                    ], xl=5, className="ss-col"),
                ], className="g-3"),
                dbc.Row([
                    dbc.Col(_panel("Hour of day × day of week", [
                        html.Div(id=ids.HOUR_DAY_NOTE, className="ss-note"), _graph(ids.HOUR_DAY, 260)]),
                        xl=6, className="ss-col"),
                    dbc.Col(_panel("Top areas", dcc.Loading(top_areas_table(), type="dot", delay_show=250),
                                   title_id=ids.TOP_AREAS_TITLE,
                                   sub=html.Div("Click a row to zoom to and filter by the area",
                                                className="ss-card-sub")), xl=6, className="ss-col"),
                ], className="g-3 mt-0"),
                html.Footer("Contains National Statistics and Ordnance Survey data © Crown copyright and database "
                            "right. Police data: Open Government Licence v3.0.", className="ss-footer"),
            ], className="ss-dashboard"),
        ], className="ss-body"),
        saved_views.panel(),
    ], className="ss-page")
