"""HTTP endpoint for the map's area boundaries: ``/boundaries/<level>.geojson?v=<version>``.

The choropleth's GeoJSON layers fetch their shapes from here once (dash-leaflet's ``url`` property) instead of
receiving them as callback output; every later filter change sends only the colours (``hideout``). The
version in the URL is a hash of the content, so the response may be kept by the browser for a year: a reload
of the boundaries changes the URL. Boundaries are public ONS geography, but the route is still behind the
login guard and answers only the levels the user's tier may break a map down to.
"""
from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, request, url_for
from flask_login import current_user

from dashapp import guard
from safestats import queries

bp = Blueprint("boundaries", __name__, url_prefix="/boundaries")
LEVELS = tuple(queries.DISPLAY_SIMPLIFY_TOLERANCE_M)
A_YEAR_S = 365 * 24 * 3600


def boundaries_url(engine, level: str) -> str:
    """The versioned URL of ``level``'s boundaries (what a map layer's ``url`` is set to)."""
    return url_for("boundaries.level_geojson", level=level, v=queries.boundaries_document(engine, level).version)


@bp.get("/<level>.geojson")
@guard.endpoint(guard.LOGIN, audit=False)  # reference geography, no incident data: not an audited data view
def level_geojson(level: str):
    if level not in LEVELS:
        abort(404)
    try:
        queries.check_level(level, current_user)
    except queries.AccessRefused as exc:
        abort(403, description=str(exc))
    document = queries.boundaries_document(current_app.extensions["safestats_engine"], level)
    current = request.args.get("v") == document.version
    headers = {"ETag": f'"{document.version}"', "Vary": "Accept-Encoding",
               # An old version's URL (boundaries reloaded since) gets today's shapes, checked again each time.
               "Cache-Control": f"private, max-age={A_YEAR_S}, immutable" if current else "private, no-cache"}
    if document.version in request.if_none_match:
        return Response(status=304, headers=headers)
    zipped = "gzip" in request.accept_encodings
    if zipped:
        headers["Content-Encoding"] = "gzip"
    return Response(document.gzipped if zipped else document.body, mimetype="application/geo+json", headers=headers)
