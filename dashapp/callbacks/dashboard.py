"""The dashboard's callbacks: one state edge (URL <-> controls <-> clicks) and one edge per panel.

The URL's query string is the single source of truth. ``sync_state`` is the only callback that changes it:
every control change, chart click, map click, drawn shape, chip removal or reset arrives there, becomes a
new ``FilterState`` (``safestats.filters``), is checked against the database, and is written back to the
URL (a history entry, so back/forward step through filter changes), to every control, and to two stores:
the whole state (what the map draws) and its data filters (what the panels count). Opening a link or
pressing back runs the same callback from the URL side. Panel callbacks hang off the stores, so a map pan
recomputes nothing. Callbacks are thin: parse and check what the browser sent, ask ``safestats.queries``,
hand the result to ``dashapp.layouts.dashboard`` for presentation. Nothing from the browser is trusted:
each callback is registered through ``dashapp.guard`` (which checks the user's policy and writes the audit
row on every call; panels tell it how many rows they sent with ``guard.note``), stores are re-parsed
strictly, and a refused value shows a message and no data — never an unfiltered answer. Errors are logged with a reference and shown without SQL.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from datetime import date, timedelta
from urllib.parse import urlsplit, urlunsplit

from dash import ALL, Dash, Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate
from flask import current_app
from flask_login import current_user

from dashapp import boundaries, guard, ids
from dashapp.layouts import dashboard as view
from safestats import queries
from safestats.access import may_see_points
from safestats.dataout import filter_names
from safestats.filters import DAY_NAMES, FilterState, quick_pick_range

log = logging.getLogger(__name__)

POINTS_MIN_ZOOM = 14
AREA_ZOOM = {"borough": 12, "msoa": 14, "lsoa": 15}
LEVELS = ("borough", "msoa", "lsoa")


def _engine():
    return current_app.extensions["safestats_engine"]


def _today() -> date:
    return date.today()


LINK_REFUSED_MESSAGE = "No data: this link's filters could not be read"


def _link_refused(stored) -> bool:
    """Whether a store holds a refused link (sync_state wrote its error there): panels then show no data."""
    return isinstance(stored, dict) and bool(stored.get("error"))


def _stored_state(stored) -> FilterState:
    """The state a store holds, re-parsed and re-checked (a store is browser memory, so untrusted)."""
    if not isinstance(stored, dict) or stored.get("error") or not isinstance(stored.get("qs"), str):
        raise PreventUpdate
    try:
        state = FilterState.from_query_string(stored["qs"])
        queries.check_state(_engine(), state)
    except ValueError as exc:
        log.warning("refused stored state %r from user %s: %s", stored, getattr(current_user, "id", None), exc)
        raise PreventUpdate from exc
    return state


def _error_reference(exc: Exception, what: str) -> str:
    if isinstance(exc, queries.AccessRefused):  # the user's tier does not allow this view: say why
        log.info("panel %s refused for user %s: %s", what, getattr(current_user, "id", None), exc)
        return f"Not shown: {str(exc).rstrip('.')}."
    ref = uuid.uuid4().hex[:8]
    log.error("panel %s failed (ref %s) for user %s", what, ref, getattr(current_user, "id", None), exc_info=exc)
    return f"This panel could not be loaded (reference {ref}; the error has been logged)."


# ---- turning browser events into a new state -----------------------------------------------------------

def _select_area(state: FilterState, level: str, code: str) -> FilterState:
    """Select an area (and its parents), or deselect it when it is already the selection."""
    info = queries.areas(_engine())
    if code not in info or info[code].level != level:
        raise ValueError(f"unknown {level} {code!r}")
    if state.selected_area == (level, code):
        return state.without_spatial_selection()
    borough = msoa = lsoa = None
    if level == "borough":
        borough = code
    elif level == "msoa":
        borough, msoa = info[code].parent_code, code
    else:
        lsoa, msoa = code, info[code].parent_code
        borough = info[msoa].parent_code if msoa in info else info[code].borough_code
    return replace(state.without_spatial_selection(), borough_code=borough, msoa_code=msoa, lsoa_code=lsoa)


def _polygon_from_drawing(geojson) -> tuple | None:
    features = (geojson or {}).get("features") or []
    polygons = [f for f in features if isinstance(f, dict) and (f.get("geometry") or {}).get("type") == "Polygon"]
    if not polygons:
        return None
    ring = polygons[-1]["geometry"]["coordinates"][0]
    if len(ring) > 1 and ring[0] == ring[-1]:
        ring = ring[:-1]
    return tuple((round(float(lon), 5), round(float(lat), 5)) for lon, lat in ring)


def _dates_from_brush(selected) -> tuple[date, date] | None:
    """The whole months whose bars a horizontal drag across the time series covers."""
    points = (selected or {}).get("points") or []
    months = sorted({str(p.get("x"))[:10] for p in points if p.get("x")})
    if not months:
        x_range = ((selected or {}).get("range") or {}).get("x")
        if not x_range:
            return None
        start, end = (date.fromisoformat(str(v)[:10]) for v in x_range)
        first = start if start.day == 1 else (start.replace(day=28) + timedelta(days=4)).replace(day=1)
        last = end.replace(day=1)
        if first > last:
            return None
        months = [first.isoformat(), last.isoformat()]
    first, last = date.fromisoformat(months[0]), date.fromisoformat(months[-1])
    return first, (last.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


def _without(state: FilterState, key: str) -> FilterState:
    """The state with one chip's filter removed (key: the chip's URL key)."""
    cleared = {"dates": {"date_from": None, "date_to": None}, "supplier": {"suppliers": ()},
               "domain": {"domains": ()}, "cat": {"categories": ()}, "theme": {"themes": ()},
               "area": {"borough_code": None, "msoa_code": None, "lsoa_code": None}, "poly": {"polygon": None},
               "cell": {"hotspot_cell": None},
               "hours": {"hours": None}, "dow": {"days": ()}, "located": {"located_at_least": None},
               "asat": {"as_at": None}}
    if key not in cleared:
        raise ValueError(f"unknown filter chip {key!r}")
    return replace(state, **cleared[key])


def _state_from_controls(base: FilterState, start, end, suppliers, domains, categories, themes, borough, msoa,
                         lsoa, hours, days, located, level, measure, breaks, layers, hotspot=None, confidence=None,
                         fdr=None, bandwidth=None, step=None, compare_start=None, compare_end=None) -> FilterState:
    """The state the filter controls show (controls own their fields; the rest comes from ``base``)."""
    hours_tuple = None
    if hours and list(hours) != [0, 23]:
        hours_tuple = (int(hours[0]), int(hours[1]))
    # An MSOA that is not in the chosen borough (the borough just changed) is dropped, and so on down.
    info = queries.areas(_engine())
    if msoa and (msoa not in info or info[msoa].parent_code != borough):
        msoa = None
    if lsoa and (lsoa not in info or info[lsoa].parent_code != msoa):
        lsoa = None
    # A comparison period is taken once both ends are picked (the picker sends the start on its own first).
    if bool(compare_start) == bool(compare_end):
        compare = (date.fromisoformat(compare_start[:10]) if compare_start else None,
                   date.fromisoformat(compare_end[:10]) if compare_end else None)
    else:
        compare = (base.compare_from, base.compare_to)
    return replace(
        base,
        date_from=date.fromisoformat(start[:10]) if start else None,
        date_to=date.fromisoformat(end[:10]) if end else None,
        suppliers=tuple(suppliers or ()), domains=tuple(domains or ()),
        categories=tuple(int(c) for c in categories or ()), themes=tuple(themes or ()),
        borough_code=borough or None, msoa_code=msoa or None, lsoa_code=lsoa or None,
        hours=hours_tuple, days=tuple(sorted(int(d) for d in days or ())),
        located_at_least=None if located in (None, "", "any") else located,
        map_level=None if level in (None, "auto") else level, map_measure=measure or "count",
        map_breaks=breaks or "quantile", map_layers=tuple(layers or ()),
        hotspot=None if hotspot in (None, "", "none") else hotspot,
        hotspot_confidence=int(confidence) if confidence else 90, hotspot_fdr=bool(fdr),
        kde_bandwidth_m=None if bandwidth in (None, "") else int(round(float(bandwidth))),
        hotspot_step_months=int(step) if step else 1, compare_from=compare[0], compare_to=compare[1],
    )


CONTROL_IDS = (ids.FILTER_DATES, ids.FILTER_SUPPLIERS, ids.FILTER_DOMAINS, ids.FILTER_CATEGORIES,
               ids.FILTER_THEMES, ids.FILTER_BOROUGH, ids.FILTER_MSOA, ids.FILTER_LSOA, ids.FILTER_HOURS,
               ids.FILTER_DAYS, ids.FILTER_LOCATED, ids.MAP_LEVEL, ids.MAP_MEASURE, ids.MAP_BREAKS, ids.MAP_LAYERS, ids.MAP_HOTSPOT,
               ids.MAP_HOTSPOT_CONFIDENCE, ids.MAP_HOTSPOT_FDR, ids.MAP_KDE_BANDWIDTH, ids.MAP_HOTSPOT_STEP,
               ids.MAP_COMPARE_DATES)


def _control_values(state: FilterState) -> list:
    return [
        state.date_from.isoformat() if state.date_from else None,
        state.date_to.isoformat() if state.date_to else None,
        list(state.suppliers), list(state.domains), list(state.categories), list(state.themes),
        state.borough_code, state.msoa_code, state.lsoa_code,
        list(state.hours) if state.hours else [0, 23], list(state.days), state.located_at_least or "any",
        state.map_level or "auto", state.map_measure, state.map_breaks, list(state.map_layers),
        state.hotspot or "none", str(state.hotspot_confidence), ["fdr"] if state.hotspot_fdr else [],
        state.kde_bandwidth_m, str(state.hotspot_step_months),
        state.compare_from.isoformat() if state.compare_from else None,
        state.compare_to.isoformat() if state.compare_to else None,
    ]


def _pick_hotspot(state: FilterState, feature) -> FilterState:
    """Filter to a clicked hotspot: its grid cell (a second click on it clears it) or its LSOA."""
    properties = feature.get("properties") if isinstance(feature, dict) else None
    if not isinstance(properties, dict):
        raise PreventUpdate
    if isinstance(properties.get("code"), str):
        return _select_area(state, "lsoa", properties["code"])
    cell_m, (ix, iy) = int(properties["cell_m"]), (int(v) for v in str(properties["cell"]).split(":"))
    cell = (cell_m, ix, iy)
    if state.hotspot_cell == cell:
        return state.without_spatial_selection()
    return replace(state.without_spatial_selection(), hotspot_cell=cell)


def register_callbacks(app: Dash) -> None:
    """Attach the dashboard's callbacks to ``app`` (this instance only, never the global registry)."""

    # page load -> the checklists' options (a checklist keeps a value it has no option for yet)
    @guard.callback(app, Output(ids.FILTER_SUPPLIERS, "options"), Output(ids.FILTER_DOMAINS, "options"),
                    Input(ids.URL, "pathname"), audit=False)  # reference lists, no data
    def load_options(_pathname):
        tax = queries.taxonomy(_engine())
        return ([{"label": name.split("(")[0].strip(), "value": code} for code, name in tax.suppliers.items()],
                [{"label": name, "value": code} for code, name in tax.domains.items()])

    # The dropdowns' options are sent by sync_state, in the same response as their values: a dropdown clears
    # a value that is not among its options when it gets it, so a link's borough, MSOA or category that
    # arrived before its options (always, for an MSOA) was dropped, and the page fell back to a wider view
    # than the link's. The fixed lists go on page load and back/forward; an area's children when it changes.
    def _fixed_options(engine) -> list:
        tax = queries.taxonomy(engine)
        return [[{"label": f"{tax.domains[domain]} › {name}", "value": cid}
                 for cid, (domain, name) in tax.categories.items()],
                [{"label": name, "value": code} for code, name in
                 sorted(queries.borough_names(engine).items(), key=lambda kv: kv[1])]]

    def _child_options(engine, parent: str | None) -> list:
        return [{"label": a.name, "value": a.code} for a in queries.child_areas(engine, parent)] if parent else []

    # URL, controls, map and chart clicks -> the filter state (URL, controls, stores)
    @guard.callback(app, 
        Output(ids.URL, "search"), Output(ids.VIEW_STATE, "data"), Output(ids.DATA_STATE, "data"),
        Output(ids.STATE_ERROR, "children"), Output(ids.STATE_ERROR, "is_open"),
        Output(ids.FILTER_DATES, "start_date"), Output(ids.FILTER_DATES, "end_date"),
        Output(ids.FILTER_SUPPLIERS, "value"), Output(ids.FILTER_DOMAINS, "value"),
        Output(ids.FILTER_CATEGORIES, "value"), Output(ids.FILTER_THEMES, "value"),
        Output(ids.FILTER_BOROUGH, "value"), Output(ids.FILTER_MSOA, "value"), Output(ids.FILTER_LSOA, "value"),
        Output(ids.FILTER_HOURS, "value"), Output(ids.FILTER_DAYS, "value"), Output(ids.FILTER_LOCATED, "value"),
        Output(ids.MAP_LEVEL, "value"), Output(ids.MAP_MEASURE, "value"), Output(ids.MAP_BREAKS, "value"),
        Output(ids.MAP_LAYERS, "value"), Output(ids.MAP_HOTSPOT, "value"),
        Output(ids.MAP_HOTSPOT_CONFIDENCE, "value"), Output(ids.MAP_HOTSPOT_FDR, "value"),
        Output(ids.MAP_KDE_BANDWIDTH, "value"), Output(ids.MAP_HOTSPOT_STEP, "value"),
        Output(ids.MAP_COMPARE_DATES, "start_date"), Output(ids.MAP_COMPARE_DATES, "end_date"),
        Output(ids.FILTER_QUICK_PICK, "value"),
        Output(ids.MAP, "viewport"), Output(ids.MAP_DRAW, "editToolbar"), Output(ids.URL, "href"),
        # The table's cell selection is cleared here (so the same row can be clicked again), not by the table's
        # own callback: that made a loop between two callbacks (state -> table -> active_cell -> state), and
        # the renderer then sometimes held both back for good, leaving the page without data after loading.
        Output(ids.TOP_AREAS, "active_cell"),
        Output(ids.FILTER_CATEGORIES, "options"), Output(ids.FILTER_BOROUGH, "options"),
        Output(ids.FILTER_MSOA, "options"), Output(ids.FILTER_LSOA, "options"),
        Input(ids.URL, "search"),
        Input(ids.FILTER_DATES, "start_date"), Input(ids.FILTER_DATES, "end_date"),
        Input(ids.FILTER_QUICK_PICK, "value"),
        Input(ids.FILTER_SUPPLIERS, "value"), Input(ids.FILTER_DOMAINS, "value"),
        Input(ids.FILTER_CATEGORIES, "value"), Input(ids.FILTER_THEMES, "value"),
        Input(ids.FILTER_BOROUGH, "value"), Input(ids.FILTER_MSOA, "value"), Input(ids.FILTER_LSOA, "value"),
        Input(ids.FILTER_HOURS, "value"), Input(ids.FILTER_DAYS, "value"), Input(ids.FILTER_LOCATED, "value"),
        Input(ids.MAP_LEVEL, "value"), Input(ids.MAP_MEASURE, "value"), Input(ids.MAP_BREAKS, "value"),
        Input(ids.MAP_LAYERS, "value"), Input(ids.MAP_HOTSPOT, "value"),
        Input(ids.MAP_HOTSPOT_CONFIDENCE, "value"), Input(ids.MAP_HOTSPOT_FDR, "value"),
        Input(ids.MAP_KDE_BANDWIDTH, "value"), Input(ids.MAP_HOTSPOT_STEP, "value"),
        Input(ids.MAP_COMPARE_DATES, "start_date"), Input(ids.MAP_COMPARE_DATES, "end_date"),
        Input(ids.FILTER_RESET, "n_clicks"), Input({"type": ids.CHIP_REMOVE, "key": ALL}, "n_clicks"),
        *[Input(ids.MAP_AREAS[level], "n_clicks") for level in LEVELS],
        # The drawing through MAP_DRAWN (see drawing_changed below), not the EditControl's geojson itself.
        Input(ids.MAP_DRAWN, "data"), Input(ids.CLEAR_SELECTION, "n_clicks"), Input(ids.MAP_HOTSPOTS, "n_clicks"),
        Input(ids.TIMESERIES, "selectedData"), Input(ids.CATEGORIES, "clickData"),
        Input(ids.HOUR_DAY, "clickData"), Input(ids.TOP_AREAS, "active_cell"),
        *[State(ids.MAP_AREAS[level], "clickData") for level in LEVELS], State(ids.MAP_HOTSPOTS, "clickData"),
        State(ids.TOP_AREAS, "derived_viewport_data"), State(ids.MAP, "zoom"), State(ids.MAP, "center"),
        State(ids.DATA_STATE, "data"), State(ids.URL, "href"),
    )
    def sync_state(search, start, end, quick_pick, suppliers, domains, categories, themes, borough, msoa, lsoa,
                   hours, days, located, level, measure, breaks, layers, hotspot, confidence, fdr, bandwidth, step,
                   compare_start, compare_end, _reset, _chips, _c1, _c2, _c3, drawing, _clear, _hot_clicks,
                   brushed, category_click, hour_click, active_cell, borough_click, msoa_click, lsoa_click,
                   hotspot_click, table_rows, zoom, centre, old_data, href):
        engine = _engine()
        # The URL wins when it is among the triggers: the page's first call can arrive merged with another
        # input's (seen: the drawing store), and must still read the link, or the page stays without data.
        triggered = ctx.triggered_prop_ids
        from_url = not triggered or f"{ids.URL}.search" in triggered
        trigger = ids.URL if from_url else ctx.triggered_id
        viewport = toolbar = no_update
        try:
            base = FilterState.from_query_string(search or "")
        except ValueError as exc:
            if from_url:
                return _refused_link(str(exc))
            base = FilterState()
        try:
            if not from_url:
                base = _with_map_view(base, zoom, centre)
            state = base
            if from_url:
                queries.check_state(engine, state)
                if state.zoom is not None or state.centre is not None:
                    viewport = {"center": list(state.centre or view.LONDON_CENTRE),
                                "zoom": state.zoom or view.DEFAULT_ZOOM}
            elif trigger == ids.FILTER_QUICK_PICK:
                if not quick_pick:
                    raise PreventUpdate
                first, last = quick_pick_range(quick_pick, _today())
                state = replace(base, date_from=first, date_to=last)
            elif trigger in CONTROL_IDS:
                state = _state_from_controls(base, start, end, suppliers, domains, categories, themes, borough,
                                             msoa, lsoa, hours, days, located, level, measure, breaks, layers, hotspot,
                                             confidence, fdr, bandwidth, step, compare_start, compare_end)
            elif trigger == ids.FILTER_RESET:
                state = base.map_view()
                toolbar = {"mode": "remove", "action": "clear all", "n_clicks": (_reset or 0)}
            elif isinstance(trigger, dict) and trigger.get("type") == ids.CHIP_REMOVE:
                if not ctx.triggered[0]["value"]:
                    raise PreventUpdate  # chips are re-rendered with n_clicks=0: not a click
                state = _without(base, str(trigger.get("key")))
                if trigger.get("key") == "poly":
                    toolbar = {"mode": "remove", "action": "clear all", "n_clicks": int(ctx.triggered[0]["value"])}
            elif trigger in ids.MAP_AREAS.values():
                level_clicked = next(lv for lv, i in ids.MAP_AREAS.items() if i == trigger)
                feature = {"borough": borough_click, "msoa": msoa_click, "lsoa": lsoa_click}[level_clicked]
                properties = feature.get("properties") if isinstance(feature, dict) else None
                code = properties.get("code") if isinstance(properties, dict) else None
                if not isinstance(code, str):
                    raise PreventUpdate
                state = _select_area(base, level_clicked, code)
            elif trigger == ids.MAP_HOTSPOTS:
                state = _pick_hotspot(base, hotspot_click)
            elif trigger == ids.MAP_DRAWN:
                polygon = _polygon_from_drawing(drawing)
                if polygon == base.polygon:
                    raise PreventUpdate
                state = replace(base.without_spatial_selection(), polygon=polygon)
            elif trigger == ids.CLEAR_SELECTION:
                state = base.without_spatial_selection()
                toolbar = {"mode": "remove", "action": "clear all", "n_clicks": _clear or 0}
            elif trigger == ids.TIMESERIES:
                dates = _dates_from_brush(brushed)
                if dates is None:
                    raise PreventUpdate
                state = replace(base, date_from=dates[0], date_to=dates[1])
            elif trigger == ids.CATEGORIES:
                cid = int(((category_click or {}).get("points") or [{}])[0].get("customdata"))
                chosen = () if base.categories == (cid,) and not base.domains else (cid,)
                state = replace(base, categories=chosen, domains=())
            elif trigger == ids.HOUR_DAY:
                point = ((hour_click or {}).get("points") or [{}])[0]
                hour, day = int(point.get("x")), DAY_NAMES.index(point.get("y")) + 1
                same = base.hours == (hour, hour) and base.days == (day,)
                state = replace(base, hours=None if same else (hour, hour),
                                       days=() if same else (day,))
            elif trigger == ids.TOP_AREAS:
                if not active_cell or not table_rows:
                    raise PreventUpdate
                row = table_rows[int(active_cell["row"])]
                area = queries.areas(engine).get(row.get("code"))
                if area is None:
                    raise ValueError(f"unknown area {row.get('code')!r}")
                state = _select_area(base, area.level, area.code)
                if state.selected_area:
                    viewport = {"center": [area.lat, area.lon], "zoom": AREA_ZOOM[area.level],
                                "transition": "flyTo"}
            else:
                raise PreventUpdate
            queries.check_state(engine, state)
        except PreventUpdate:
            raise
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            if from_url:  # a well-formed link naming something that does not exist: no data, not old data
                return _refused_link(str(exc))
            log.warning("refused filter change %r from user %s: %s", trigger, getattr(current_user, "id", None), exc)
            return [no_update] * 3 + [f"That change was refused: {exc}", True] + [no_update] * 32

        qs = state.to_query_string()
        data = {"qs": state.data_filters().to_query_string(), "error": None}
        return [
            no_update if from_url else ("?" + qs if qs else ""),
            {"qs": qs, "error": None},
            no_update if data == old_data else data,
            no_update, False,
            *_control_values(state), None, viewport, toolbar,
            no_update if from_url else _href_with_query(href, qs),
            None if trigger == ids.TOP_AREAS else no_update,
            *(_fixed_options(engine) if from_url else [no_update] * 2),
            _child_options(engine, state.borough_code)
            if from_url or state.borough_code != base.borough_code else no_update,
            _child_options(engine, state.msoa_code) if from_url or state.msoa_code != base.msoa_code else no_update,
        ]

    def _refused_link(message: str):
        log.warning("refused link filters from user %s: %s", getattr(current_user, "id", None), message)
        text = f"This link's filters could not be read ({message}). No data is shown; reset the filters to start again."
        error = {"qs": None, "error": message}
        # The controls stay usable (to pick again, or reset) but show nothing from the refused link.
        return [no_update, error, error, text, True] + [no_update] * 28 + _fixed_options(_engine()) + [[], []]

    def _href_with_query(href, qs: str):
        # dcc.Location (refresh=False) pushes its ``href`` prop instead of ``search`` when that prop differs
        # from the one it last rendered, which happens on the first change after the page loaded (the viewport
        # callback has meanwhile rewritten the URL with replaceState): the history entry then lost the filters.
        # Sending the matching href with the search makes either push the same, right URL.
        if not isinstance(href, str) or not href:
            return no_update
        parts = urlsplit(href)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, qs, ""))

    def _with_map_view(state: FilterState, zoom, centre) -> FilterState:
        try:
            z = float(zoom) if zoom is not None else None
            c = (float(centre["lat"]), float(centre["lng"])) if isinstance(centre, dict) else \
                (float(centre[0]), float(centre[1])) if centre else None
            return replace(state, zoom=z, centre=c)
        except (TypeError, ValueError, KeyError, IndexError):
            return state  # an odd viewport from the browser is ignored, not fatal

    # Every callback fed by the state stores waits for sync_state to fill them (prevent_initial_call): an
    # initial call, sent with empty stores, could answer after sync_state did, and the renderer then never
    # fired that panel again for the real state (seen as a page stuck without data, more often once each
    # call writes its audit row).

    # view state -> chips, selection label, share link
    @guard.callback(app, 
        Output(ids.FILTER_CHIPS, "children"), Output(ids.SELECTION_NAME, "children"),
        Output(ids.CLEAR_SELECTION, "style"),
        Input(ids.VIEW_STATE, "data"), audit=False,  # names of the chosen filters, no data
        prevent_initial_call=True)
    def show_chips(stored):
        state = _stored_state(stored)
        names = filter_names(_engine())
        if state.selected_area:
            selection = names["areas"].get(state.selected_area[1], state.selected_area[1])
        elif state.polygon:
            selection = "drawn area"
        elif state.hotspot_cell:
            selection = f"hotspot cell ({state.hotspot_cell[0]} m)"
        else:
            selection = view.ALL_LONDON
        chips = view.filter_chips(state, names)
        hidden = {"display": "none"} if selection == view.ALL_LONDON else {}
        return chips or [view.no_filters_chip()], selection, hidden

    # data filters -> headline cards
    @guard.callback(app, Output(ids.HEADLINE, "children"), Input(ids.DATA_STATE, "data"),
                    prevent_initial_call=True)
    def update_headline(stored):
        if _link_refused(stored):
            return [view.html_message(LINK_REFUSED_MESSAGE + ".")]
        state = _stored_state(stored)
        try:
            engine = _engine()
            head = queries.headline(engine, state, current_user)
            guard.note(rows=1)
            fresh = queries.freshness(engine, state.as_at)
            return view.headline_cards(head, fresh, _empty_reason(engine, state, head), pinned=state.as_at is not None)
        except Exception as exc:  # shown without detail; logged with a reference
            return [view.html_message(_error_reference(exc, "headline"))]

    # data filters -> monthly time series
    @guard.callback(app, Output(ids.TIMESERIES, "figure"), Input(ids.DATA_STATE, "data"),
                    prevent_initial_call=True)
    def update_timeseries(stored):
        if _link_refused(stored):
            return view.empty_figure(LINK_REFUSED_MESSAGE)
        state = _stored_state(stored)
        try:
            engine = _engine()
            series = queries.monthly_series(engine, state, current_user)
            guard.note(rows=len(series.months) * len(series.groups))
            return view.timeseries_figure(series, queries.current_period(engine, state), state)
        except Exception as exc:
            return view.empty_figure(_error_reference(exc, "timeseries"))

    # data filters -> category bars
    @guard.callback(app, Output(ids.CATEGORIES, "figure"), Input(ids.DATA_STATE, "data"),
                    prevent_initial_call=True)
    def update_categories(stored):
        if _link_refused(stored):
            return view.empty_figure(LINK_REFUSED_MESSAGE)
        state = _stored_state(stored)
        try:
            engine = _engine()
            rows = queries.category_counts(engine, state, current_user)
            guard.note(rows=len(rows))
            return view.categories_figure(rows, state, queries.taxonomy(engine).category_ids(state) or ())
        except Exception as exc:
            return view.empty_figure(_error_reference(exc, "categories"))

    # data filters -> hour x weekday grid
    @guard.callback(app, Output(ids.HOUR_DAY, "figure"), Output(ids.HOUR_DAY_NOTE, "children"),
                  Input(ids.DATA_STATE, "data"), prevent_initial_call=True)
    def update_hour_day(stored):
        if _link_refused(stored):
            return view.empty_figure(LINK_REFUSED_MESSAGE), ""
        state = _stored_state(stored)
        try:
            grid = queries.hour_day_grid(_engine(), state, current_user)
            guard.note(rows=sum(1 for day in grid.counts for n in day if n))
            return view.hour_day_figure(grid, state), view.hour_day_note(grid)
        except Exception as exc:
            return view.empty_figure(_error_reference(exc, "hour_day")), ""

    # data filters -> top areas table
    @guard.callback(app, Output(ids.TOP_AREAS, "data"), Output(ids.TOP_AREAS_TITLE, "children"),
                  Input(ids.DATA_STATE, "data"), prevent_initial_call=True)
    def update_top_areas(stored):
        if _link_refused(stored):
            return [], "Top areas"
        state = _stored_state(stored)
        try:
            rows = queries.top_areas(_engine(), state, current_user)
            guard.note(rows=len(rows))
        except Exception as exc:
            # The reason goes in the title: the tier's limit (a viewer's borough has no areas it may list) or
            # the logged error's reference.
            return [], f"Top areas. {_error_reference(exc, 'top_areas')}"
        level = rows[0].level if rows else "borough"
        title = f"Top {view.LEVEL_LABELS[level]}s" + (" in the selection" if state.selected_area else "")
        # A count suppressed by disclosure control (None) is shown as "*" in the table.
        return [dict(r.__dict__, incidents=view.count_label(r.incidents) if r.incidents is None else r.incidents)
                for r in rows], title

    # view state + zoom -> choropleth (the boundaries' URL once per level, then only hideout) and legend
    @guard.callback(app,
        *[Output(ids.MAP_AREAS[level], "url") for level in LEVELS],
        *[Output(ids.MAP_AREAS[level], "hideout") for level in LEVELS],
        Output(ids.MAP_LEGEND, "children"), Output(ids.MAP_NOTE, "children"),
        Input(ids.VIEW_STATE, "data"), Input(ids.MAP, "zoom"),
        State(ids.MAP_AREAS["borough"], "hideout"), State(ids.MAP_AREAS["msoa"], "hideout"),
        State(ids.MAP_AREAS["lsoa"], "hideout"), prevent_initial_call=True)
    def update_map(stored, zoom, *hideouts):
        if _link_refused(stored):
            raise PreventUpdate
        state = _stored_state(stored)
        engine = _engine()
        if state.hotspot:  # the hotspot layer replaces the choropleth (and its legend) while it is on
            hidden = [{"hidden": True, "loaded": isinstance(old, dict) and bool(old.get("loaded"))} for old in hideouts]
            return (*[no_update] * len(LEVELS), *hidden, no_update, _points_note(state, zoom) or "")
        level = state.map_level or view.level_for_zoom(zoom if isinstance(zoom, (int, float)) else None)
        measure, note, suppressed = state.map_measure, None, frozenset()
        try:
            values = queries.area_values(engine, state, level, current_user)
            suppressed = values.suppressed
            if measure == "rate_population" and not values.population:
                measure, note = "count", ("No population loaded: showing counts. Load an ONS mid-year "
                                          "estimate with `safestats population FILE`.")
            shown = values.measure(measure)
            guard.note(rows=len(shown))
        except Exception as exc:
            shown, note = {}, _error_reference(exc, "map")
        selected = state.selected_area[1] if state.selected_area else None
        hideout = view.area_hideout(shown, measure, state.map_breaks, selected, suppressed)
        url_out, hideout_out = [], []
        for lv, old in zip(LEVELS, hideouts):
            loaded = isinstance(old, dict) and old.get("loaded")
            # The layer fetches its shapes from the URL once; the browser's cache keeps them (dashapp.boundaries).
            url_out.append(boundaries.boundaries_url(engine, lv) if lv == level and not loaded else no_update)
            hideout_out.append(dict(hideout, loaded=True) if lv == level
                               else {"hidden": True, "loaded": bool(loaded)})
        notes = [n for n in (note, _points_note(state, zoom)) if n]
        return (*url_out, *hideout_out, view.legend(hideout, measure, level), " ".join(notes))

    def _points_note(state: FilterState, zoom) -> str | None:
        if "points" not in state.map_layers:
            return None
        if not may_see_points(current_user):
            return "Incident points are not available at your access level; the map shows aggregates."
        if not isinstance(zoom, (int, float)) or zoom < POINTS_MIN_ZOOM:
            return "Zoom in to street level to see incident points."
        return None

    # view state -> hotspot layer (cells or LSOAs with their numbers, or density tiles) and its legend
    @guard.callback(
        app, Output(ids.MAP_HOTSPOTS, "data"), Output(ids.MAP_HOTSPOTS, "hideout"), Output(ids.MAP_KDE, "url"),
        Output(ids.HOTSPOT_LEGEND, "children"), Output(ids.HOTSPOT_LEGEND, "style"),
        Output(ids.MAP_LEGEND, "style"),
        Input(ids.VIEW_STATE, "data"), prevent_initial_call=True)
    def update_hotspots(stored):
        empty = {"type": "FeatureCollection", "features": []}
        off = (empty, {"colours": {}, "selected": None}, view.BLANK_TILE_URL, [], {"display": "none"}, {})
        if _link_refused(stored):
            return off
        state = _stored_state(stored)
        if not state.hotspot:
            return off
        try:
            layer = queries.hotspot_map_layer(_engine(), state, current_user)
        except Exception as exc:
            return (empty, no_update, view.BLANK_TILE_URL, [view.html_message(_error_reference(exc, "hotspots"))],
                    {}, {"display": "none"})
        is_kde = isinstance(layer, queries.KdeSurface)
        guard.note(rows=0 if is_kde else len(layer.geojson["features"]), state=state.to_query_string())
        return (empty if is_kde else layer.geojson, view.hotspot_hideout(state),
                view.kde_tile_url(state) if is_kde else view.BLANK_TILE_URL,
                view.hotspot_legend(layer, state), {}, {"display": "none"})

    # hotspot layer choice -> which of its settings show (browser-side: a class on the settings row)
    guard.clientside_callback(
        app, """function (layer) { return "ss-hotspot-options ss-show-" + (layer || "none"); }""",
        Output(ids.MAP_HOTSPOT_OPTIONS, "className"), Input(ids.MAP_HOTSPOT, "value"), name="hotspot_options_shown")

    # view state + viewport -> clustered incident points (street zoom only, bounded payload)
    @guard.callback(app, Output(ids.MAP_POINTS, "data"),
                  Input(ids.VIEW_STATE, "data"), Input(ids.MAP, "bounds"), Input(ids.MAP, "zoom"),
                  prevent_initial_call=True)
    def update_points(stored, bounds, zoom):
        empty = {"type": "FeatureCollection", "features": []}
        if _link_refused(stored):
            return empty
        state = _stored_state(stored)
        if ("points" not in state.map_layers or not may_see_points(current_user)
                or not isinstance(zoom, (int, float)) or zoom < POINTS_MIN_ZOOM):
            return empty
        try:
            (south, west), (north, east) = bounds
            box = tuple(float(v) for v in (west, south, east, north))
        except (TypeError, ValueError):
            return empty
        try:
            points = queries.point_clusters(_engine(), state, box, float(zoom), current_user)
        except queries.AccessRefused as exc:
            log.info("points refused for user %s: %s", getattr(current_user, "id", None), exc)
            return empty
        guard.note(rows=len(points["features"]))
        return points

    # view state -> density tile URL (browser-side: the tile layer just gets a new URL, no Python round trip)
    guard.clientside_callback(
        app, """function (stored) {
            if (!stored || stored.error || !stored.qs) { return "%s"; }
            const params = new URLSearchParams(stored.qs);
            if (!(params.get("layer") || "").split(",").includes("density")) { return "%s"; }
            for (const key of ["level", "measure", "breaks", "layer", "hot", "conf", "fdr", "bw", "step",
                               "cmpfrom", "cmpto", "z", "c"]) { params.delete(key); }
            return "/tiles/density/{z}/{x}/{y}.png?" + params.toString();
        }""" % (view.BLANK_TILE_URL, view.BLANK_TILE_URL),
        Output(ids.MAP_DENSITY, "url"), Input(ids.VIEW_STATE, "data"), name="density_tile_url")

    # map viewport -> the URL's z and c, replaced in place (a pan is not a history step), and the share box
    guard.clientside_callback(
        app, """function (zoom, centre, search) {
            const params = new URLSearchParams(window.location.search);
            if (typeof zoom === "number" && centre) {
                const lat = Array.isArray(centre) ? centre[0] : centre.lat;
                const lng = Array.isArray(centre) ? centre[1] : centre.lng;
                params.set("z", String(Math.round(zoom * 2) / 2));
                params.set("c", lat.toFixed(5) + "," + lng.toFixed(5));
                const qs = params.toString().replace(/%2C/g, ",").replace(/%3B/g, ";").replace(/%3A/g, ":");
                window.history.replaceState(window.history.state, "", window.location.pathname + "?" + qs);
            }
            return window.location.href;
        }""",
        Output(ids.SHARE_URL, "value"),
        Input(ids.MAP, "zoom"), Input(ids.MAP, "center"), Input(ids.URL, "search"), name="viewport_to_url")

    # drawing -> MAP_DRAWN, skipping the EditControl's own first report: it sets its geojson (empty) by itself
    # when its lazily loaded code mounts, often while the page's first sync_state answer is being applied; a
    # second sync_state call then made the renderer drop that answer's stores, so the panels ran with empty
    # stores (204) and were never fired again (the browser tests' page stuck without data). Only drawings
    # after that reach the server.
    guard.clientside_callback(
        app, """function (geojson) {
            const ss = window.safestats = window.safestats || {};
            const features = (geojson && geojson.features) || [];
            if (!ss.drawingMounted) {
                ss.drawingMounted = true;
                if (!features.length) { return window.dash_clientside.no_update; }
            }
            return geojson;
        }""",
        Output(ids.MAP_DRAWN, "data"), Input(ids.MAP_DRAW, "geojson"), name="drawing_changed",
        prevent_initial_call=True)

    # "Copy link" -> clipboard
    guard.clientside_callback(
        app, """function (n, url) {
            if (!n) { return window.dash_clientside.no_update; }
            if (navigator.clipboard && window.isSecureContext) { navigator.clipboard.writeText(url); }
            const box = document.getElementById("%s");
            if (box) { box.select(); }
            return "Copied";
        }""" % ids.SHARE_URL,
        Output(ids.COPY_LINK, "children"), Input(ids.COPY_LINK, "n_clicks"), State(ids.SHARE_URL, "value"),
        name="copy_link")


def _empty_reason(engine, state: FilterState, head) -> str | None:
    """Why a selection is empty, when it is: outside the loaded data's dates, or nothing matches."""
    if head.total != 0:  # a count, or None: suppressed by disclosure control (1-7), so not empty
        return None
    span = queries.data_span(engine)
    if span is None:
        return "No incidents have been loaded yet."
    if head.period and (head.period.end < span[0] or head.period.start > span[1]):
        return (f"No incidents in {head.period.label()}: the loaded data runs from {span[0]:%b %Y} to "
                f"{span[1]:%b %Y}.")
    return "No incidents match these filters in this period. Remove a filter (the chips above) to widen it."
