"""The query layer: the one place that turns a ``FilterState`` into SQL and returns plain Python values.

Pages and callbacks never write SQL; they call these functions with an engine and a ``FilterState``. All
values reach PostgreSQL as bound parameters (SQLAlchemy ``text()``), and the WHERE clause for a state is
built in one function, ``_incident_conditions``, so every chart, map and table filters the same way.
Time is bucketed in Europe/London local time, which is how the police and the GLA report months. Borough
boundaries change only when the areas are reloaded, so their display GeoJSON is computed once per process
(``clear_caches()`` drops it, e.g. after ``safestats boundaries``). Access control on aggregates (which
tiers see which suppliers) arrives with the access-tier issue and will be applied here too.
"""
from __future__ import annotations

import json
import threading
from datetime import date

from sqlalchemy import text
from sqlalchemy.engine import Engine

from safestats.filters import FilterState

# Douglas-Peucker tolerance in British National Grid metres: invisible at borough zoom, ~10x fewer vertices.
DISPLAY_SIMPLIFY_TOLERANCE_M = 20.0
# 6 decimal places of a degree is ~0.1 m: far below the simplification error, and a much smaller payload.
DISPLAY_COORDINATE_DECIMALS = 6

_boundaries_cache: dict[tuple[str, str], dict] = {}
_boundaries_lock = threading.Lock()


def clear_caches() -> None:
    """Forget the cached boundary GeoJSON (after areas are reloaded, and between tests)."""
    with _boundaries_lock:
        _boundaries_cache.clear()


def borough_boundaries_geojson(engine: Engine, region: str = "london") -> dict:
    """A GeoJSON FeatureCollection of the region's boroughs in WGS84, simplified for display.

    Each feature has ``id`` and ``properties.code`` (the borough code incidents carry) and
    ``properties.name``. Cached per process and per database.
    """
    key = (engine.url.render_as_string(hide_password=True), region)
    with _boundaries_lock:
        cached = _boundaries_cache.get(key)
    if cached is not None:
        return cached
    sql = text("""
        SELECT code, name,
               ST_AsGeoJSON(
                   ST_Transform(ST_SimplifyPreserveTopology(geom, :tolerance), 4326),
                   :decimals) AS geometry
        FROM areas
        WHERE level = 'borough' AND region = :region
        ORDER BY code
    """)
    with engine.connect() as conn:
        rows = conn.execute(sql, {"tolerance": DISPLAY_SIMPLIFY_TOLERANCE_M,
                                  "decimals": DISPLAY_COORDINATE_DECIMALS, "region": region}).all()
    collection = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "id": code, "properties": {"code": code, "name": name},
             "geometry": json.loads(geometry)}
            for code, name, geometry in rows
        ],
    }
    with _boundaries_lock:
        _boundaries_cache[key] = collection
    return collection


def borough_names(engine: Engine, region: str = "london") -> dict[str, str]:
    """Borough code -> name, from the cached boundaries (no extra query)."""
    return {f["properties"]["code"]: f["properties"]["name"]
            for f in borough_boundaries_geojson(engine, region)["features"]}


def known_borough_codes(engine: Engine, region: str = "london") -> frozenset[str]:
    """The borough codes a browser may send back; anything else is refused by the caller."""
    return frozenset(borough_names(engine, region))


def _incident_conditions(state: FilterState, *, include_borough: bool = True) -> tuple[list[str], dict]:
    """SQL conditions on ``incidents`` and their bound parameters for ``state`` (AND them together)."""
    conditions: list[str] = []
    params: dict = {}
    if include_borough and state.borough_code is not None:
        conditions.append("borough_code = :borough_code")
        params["borough_code"] = state.borough_code
    if state.date_from is not None:
        # Midnight at the start of date_from in London, as an instant (BST-aware); keeps partition pruning.
        conditions.append("occurred_at >= (CAST(:date_from AS date)::timestamp AT TIME ZONE 'Europe/London')")
        params["date_from"] = state.date_from
    if state.date_to is not None:
        conditions.append(
            "occurred_at < ((CAST(:date_to AS date) + 1)::timestamp AT TIME ZONE 'Europe/London')")
        params["date_to"] = state.date_to
    return conditions, params


def _where(conditions: list[str]) -> str:
    return ("WHERE " + " AND ".join(conditions)) if conditions else ""


def borough_counts(engine: Engine, state: FilterState) -> dict[str, int]:
    """Incidents per borough code under the state's filters, for the choropleth.

    The state's own ``borough_code`` is deliberately not applied: the map shows every borough so the user
    can compare and pick one; the selection only highlights. Boroughs with no incidents are absent.
    """
    conditions, params = _incident_conditions(state, include_borough=False)
    conditions.append("borough_code IS NOT NULL")
    sql = text(f"""
        SELECT borough_code, count(*) AS incidents
        FROM incidents
        {_where(conditions)}
        GROUP BY borough_code
    """)
    with engine.connect() as conn:
        return {code: int(n) for code, n in conn.execute(sql, params)}


def monthly_counts(engine: Engine, state: FilterState) -> list[tuple[date, int]]:
    """(first day of month, incidents) under all the state's filters, months in Europe/London time.

    Months run continuously from the first to the last month holding any incident in the date range (over
    all boroughs), with 0 where the filtered set has none, so a quiet month in one borough is a visible
    dip rather than a gap the chart would draw straight across.
    """
    conditions, params = _incident_conditions(state)
    span_conditions, _ = _incident_conditions(state, include_borough=False)
    sql = text(f"""
        WITH counts AS (
            SELECT date_trunc('month', occurred_at AT TIME ZONE 'Europe/London') AS month, count(*) AS incidents
            FROM incidents
            {_where(conditions)}
            GROUP BY 1
        ), span AS (
            SELECT date_trunc('month', min(occurred_at) AT TIME ZONE 'Europe/London') AS first_month,
                   date_trunc('month', max(occurred_at) AT TIME ZONE 'Europe/London') AS last_month
            FROM incidents
            {_where(span_conditions)}
        )
        SELECT m::date AS month, coalesce(c.incidents, 0) AS incidents
        FROM span
        CROSS JOIN generate_series(span.first_month, span.last_month, interval '1 month') AS m
        LEFT JOIN counts c ON c.month = m
        ORDER BY 1
    """)
    with engine.connect() as conn:
        return [(month, int(n)) for month, n in conn.execute(sql, params)]
