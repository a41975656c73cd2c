"""The overview page's callbacks: map click -> selected borough -> chart and map highlight.

The page's state is one ``FilterState``, kept in the browser as its query string (``dcc.Store``), and
each callback below is one edge of the data flow. They are thin: parse and check what the browser sent,
ask ``safestats.queries``, hand the numbers to the layout's presentation helpers. Nothing from the browser
is trusted: every callback checks the login itself (the app's request guard is the first line, not the
only one), the state is re-parsed strictly, and a borough code must be one of the boroughs on the map,
otherwise the update is refused rather than falling back to an unfiltered (all-London) answer.
"""
from __future__ import annotations

import logging

from dash import Dash, Input, Output, State, ctx
from dash.exceptions import PreventUpdate
from flask import abort, current_app
from flask_login import current_user

from dashapp import ids
from dashapp.layouts import overview as view
from safestats import queries
from safestats.filters import FilterState

log = logging.getLogger(__name__)


def _engine():
    return current_app.extensions["safestats_engine"]


def _require_login() -> None:
    if not current_user.is_authenticated:
        abort(401)


def _checked_state(raw) -> FilterState:
    """The FilterState the browser holds, refusing (no update) anything malformed or unknown."""
    try:
        state = FilterState.from_query_string(raw or "")
    except ValueError as exc:
        log.warning("refused filter state %r from user %s: %s", raw, current_user.get_id(), exc)
        raise PreventUpdate from exc
    if state.borough_code is not None and state.borough_code not in queries.known_borough_codes(_engine()):
        log.warning("refused unknown borough %r from user %s", state.borough_code, current_user.get_id())
        raise PreventUpdate
    return state


def register_callbacks(app: Dash) -> None:
    """Attach the overview page's callbacks to ``app`` (this instance only, never the global registry)."""

    # page load -> borough boundaries (the GeoJSON is sent once; later updates only restyle it)
    @app.callback(Output(ids.OVERVIEW_BOROUGHS, "data"), Input(ids.OVERVIEW_URL, "pathname"))
    def load_boundaries(_pathname):
        _require_login()
        return queries.borough_boundaries_geojson(_engine())

    # map click or "clear" -> selected borough (the filter state)
    @app.callback(
        Output(ids.OVERVIEW_FILTER_STATE, "data"),
        Input(ids.OVERVIEW_BOROUGHS, "n_clicks"),
        Input(ids.OVERVIEW_CLEAR_SELECTION, "n_clicks"),
        State(ids.OVERVIEW_BOROUGHS, "clickData"),
        State(ids.OVERVIEW_FILTER_STATE, "data"),
        prevent_initial_call=True,
    )
    def select_borough(_map_clicks, _clear_clicks, clicked_feature, raw_state):
        _require_login()
        state = _checked_state(raw_state)
        if ctx.triggered_id == ids.OVERVIEW_CLEAR_SELECTION:
            return state.with_borough(None).to_query_string()
        try:
            code = clicked_feature["properties"]["code"]
        except (TypeError, KeyError):
            raise PreventUpdate
        if not isinstance(code, str) or code not in queries.known_borough_codes(_engine()):
            log.warning("refused click on unknown borough %r from user %s", code, current_user.get_id())
            raise PreventUpdate
        # Clicking the selected borough again deselects it.
        new_code = None if code == state.borough_code else code
        return state.with_borough(new_code).to_query_string()

    # filter state -> map shading and highlight (hideout) and the legend
    @app.callback(
        Output(ids.OVERVIEW_BOROUGHS, "hideout"),
        Output(ids.OVERVIEW_LEGEND, "children"),
        Input(ids.OVERVIEW_FILTER_STATE, "data"),
    )
    def shade_map(raw_state):
        _require_login()
        state = _checked_state(raw_state)
        hideout = view.borough_hideout(queries.borough_counts(_engine(), state), state.borough_code)
        return hideout, view.legend(hideout)

    # filter state -> chart, its title, the selection indicator and the total
    @app.callback(
        Output(ids.OVERVIEW_CHART, "figure"),
        Output(ids.OVERVIEW_CHART_TITLE, "children"),
        Output(ids.OVERVIEW_SELECTION_NAME, "children"),
        Output(ids.OVERVIEW_CLEAR_SELECTION, "style"),
        Output(ids.OVERVIEW_TOTAL, "children"),
        Input(ids.OVERVIEW_FILTER_STATE, "data"),
    )
    def update_chart(raw_state):
        _require_login()
        state = _checked_state(raw_state)
        engine = _engine()
        months = queries.monthly_counts(engine, state)
        if state.borough_code is None:
            area_name, selection, clear_style = view.ALL_LONDON, "none", {"display": "none"}
        else:
            area_name = queries.borough_names(engine)[state.borough_code]
            selection, clear_style = area_name, {}
        return (view.monthly_figure(months, area_name), area_name, selection, clear_style,
                view.monthly_summary(months))

