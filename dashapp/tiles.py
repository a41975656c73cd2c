"""HTTP endpoints for the map's tiles: density (``/tiles/density/<z>/<x>/<y>.png?<filters>``), the hotspot
kernel density surface (``/tiles/kde/...?<filters>&bw=<bandwidth>``) and a blank tile.

A tile request carries the dashboard's data filters in its query string (the same ``FilterState`` the URL
holds); it is parsed strictly and checked against the database like any callback input, behind the app's
login guard and with its own login check. Tiles are cached by the browser for a short while only: the same
URL returns new counts after a load.
"""
from __future__ import annotations

import logging

from dataclasses import replace

from flask import Blueprint, Response, abort, current_app, request
from flask_login import current_user

from dashapp import guard
from safestats import queries
from safestats.filters import FilterState
from safestats.tilerender import BLANK_TILE, cell_size_for_zoom, render_density_tile, tile_bounds_3857

log = logging.getLogger(__name__)
bp = Blueprint("tiles", __name__, url_prefix="/tiles")
MIN_TILE_ZOOM, MAX_TILE_ZOOM = 8, 18


def _png(data: bytes, max_age: int) -> Response:
    response = Response(data, mimetype="image/png")
    response.headers["Cache-Control"] = f"private, max-age={max_age}"
    return response


@bp.get("/blank.png")
@guard.endpoint(guard.LOGIN, audit=False)
def blank_tile():
    return _png(BLANK_TILE, 86400)


def _tile_request(kind: str, z: int, x: int, y: int) -> tuple[FilterState, tuple]:
    """The tile's filter state (parsed strictly, checked against the database) and its bounds; 400 if refused."""
    engine = current_app.extensions["safestats_engine"]
    try:
        state = FilterState.from_query_string(request.query_string.decode("ascii", "strict"))
        queries.check_state(engine, state)
        return state, tile_bounds_3857(z, x, y)
    except (ValueError, UnicodeDecodeError) as exc:
        log.warning("refused %s tile %s/%s/%s for user %s: %s", kind, z, x, y, getattr(current_user, "id", None), exc)
        abort(400, description=str(exc))


@bp.get("/density/<int:z>/<int:x>/<int:y>.png")
@guard.endpoint(guard.LOGIN)
def density_tile(z: int, x: int, y: int):
    if not MIN_TILE_ZOOM <= z <= MAX_TILE_ZOOM:
        return _png(BLANK_TILE, 3600)
    engine = current_app.extensions["safestats_engine"]
    state, bounds = _tile_request("density", z, x, y)
    state = state.data_filters()
    cell_m = cell_size_for_zoom(z)
    try:
        cells = queries.density_cells(engine, state, bounds, cell_m, current_user)
        scale = queries.density_scale(engine, state, cell_m, current_user)
    except queries.AccessRefused as exc:  # the user's tier may not see data this finely (safestats.access)
        abort(403, description=str(exc))
    guard.note(rows=len(cells), state=state.to_query_string())
    return _png(render_density_tile(bounds, cells, scale), 60)


@bp.get("/kde/<int:z>/<int:x>/<int:y>.png")
@guard.endpoint(guard.LOGIN)
def kde_tile(z: int, x: int, y: int):
    """The quartic kernel density surface of the filtered selection (the hotspot layer "kde")."""
    if not MIN_TILE_ZOOM <= z <= MAX_TILE_ZOOM:
        return _png(BLANK_TILE, 3600)
    engine = current_app.extensions["safestats_engine"]
    state, bounds = _tile_request("kde", z, x, y)
    try:
        surface = queries.hotspot_map_layer(engine, replace(state, hotspot="kde"), current_user)
    except queries.AccessRefused as exc:  # finer than this tier may see: refused, and audited as such
        abort(403, description=str(exc))
    guard.note(state=state.to_query_string())
    return _png(render_density_tile(bounds, queries.kde_tile_cells(engine, surface, bounds), surface.scale_max), 60)
