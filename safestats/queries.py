"""The query layer: the one place that turns a ``FilterState`` (and the user asking) into SQL.

Pages and callbacks never write SQL; they call the panel functions here with an engine, a ``FilterState``
and the user, and get plain Python values back. Each panel is answered from the smallest source that can
answer it exactly (``_plan``): the borough x month rollup, the LSOA x month rollup, the borough x day x hour
rollup, or — for a drawn polygon, or a day-level range at LSOA level — the raw ``incidents`` table. So the
same filter gives the same numbers whichever source serves it (tests compare them with direct SQL). A web
worker keeps recent months of the borough, LSOA and day x hour rollups in memory as numpy arrays; a panel
whose plan reads one of those answers from them when it holds the months (``_counts_in_memory``), with the
plan's conditions applied to the arrays as the SQL applies them.
All values reach PostgreSQL as bound parameters; every WHERE clause for a state is built in ``_plan``.
Time is bucketed in Europe/London local time, as the police and the GLA report months.

When the state sets no dates, the period is the latest 12 months of data ("current period"); changes are
against the previous equal period and the same period a year earlier. Panel results are cached per process,
keyed by the data version (the newest rollup refresh), the panel, its arguments and the state's data
filters, so repeated and shared views cost one query, and a new load is never hidden by the cache.

Every panel function takes the user asking and runs its queries ``acting_as`` them (``safestats.db_scope``):
each transaction carries the user's settings, PostgreSQL's row-level security keeps the incidents they may
not see as records out of the raw table, and the rollups are read through their ``<rollup>_visible``
views, which keep the suppliers beyond the user's aggregate level out. No user means no rows. The user's
scope is part of every cached result's key. A raw-table plan counts only records the user may see, so it is
refused (``AccessRefused``) when their records do not cover everything the panel would count.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import gzip
import hashlib
import inspect
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo
from typing import Any, Callable

import numpy as np
import shapely
from sqlalchemy import text
from sqlalchemy.engine import Engine

from safestats import access, db_scope, disclosure, shared_reads
from safestats.filters import THEMES, FilterState
from safestats.location_levels import precisions_at_least
from safestats.rollups import visible_view

# Douglas-Peucker tolerance in British National Grid metres, per level: invisible at that level's zoom.
DISPLAY_SIMPLIFY_TOLERANCE_M = {"borough": 20.0, "msoa": 10.0, "lsoa": 6.0}
# 5 decimal places of a degree is ~1 m: below the simplification error, and a much smaller payload.
DISPLAY_COORDINATE_DECIMALS = 5
CURRENT_PERIOD_MONTHS = 12  # the period when the state sets no dates
TOP_AREAS_LIMIT = 25
MAX_POINT_FEATURES = 2000  # the most point features one map update may send

_cache: "OrderedDict[tuple, Any]" = OrderedDict()
_cache_lock = threading.Lock()
_CACHE_SIZE = 1024
_data_version: dict[str, tuple[float, int]] = {}
_DATA_VERSION_TTL_S = 1.0
SINGLE_FLIGHT_WAIT_S = 120.0  # a thread waits this long for another's computation of the same key, then does its own


class _Flight:
    def __init__(self):
        self.done = threading.Event()
        self.value: Any = None
        self.failed = False
        self.leader = threading.get_ident()


class _SingleFlight:
    """One computation per key at a time in this process: a thread asking for a key that another thread is
    computing waits for that result instead of computing it again. A filter change's panel callbacks arrive
    at once (a drawn polygon's first read is a second of every core, and six of them at once took seven), and
    analysts of a team ask for the same cold view together."""

    def __init__(self):
        self._lock = threading.Lock()
        self._flights: dict[tuple, _Flight] = {}

    def run(self, key: tuple, compute: Callable[[], Any]) -> Any:
        with self._lock:
            flight = self._flights.get(key)
            leading = flight is None
            if leading:
                flight = self._flights[key] = _Flight()
        if not leading:
            if flight.leader == threading.get_ident():
                return compute()    # (asked again inside its own computation: never wait for oneself)
            # (Its failure is not ours to report: the caller computes, and meets any error itself.)
            if flight.done.wait(SINGLE_FLIGHT_WAIT_S) and not flight.failed:
                return flight.value
            return compute()
        try:
            flight.value = compute()
            return flight.value
        except BaseException:
            flight.failed = True
            raise
        finally:
            with self._lock:
                self._flights.pop(key, None)
            flight.done.set()


_single_flight = _SingleFlight()


def clear_caches(keep_reference: bool = False, keep_grid_months: bool | None = None) -> None:
    """Forget every cached result (after boundaries are reloaded, and between tests); ``keep_reference``
    keeps what does not depend on the loaded incidents (areas, study cells, neighbours: built once per
    process in a running portal) and, unless ``keep_grid_months`` is False, the grid months in memory (each
    keyed by its own month's refresh, so they outlive loads that do not touch them), as the benchmarks do
    to time cold filter changes."""
    keep_grid_months = keep_reference if keep_grid_months is None else keep_grid_months
    with _cache_lock:
        if keep_reference:
            for key in [k for k in _cache if k[1] != 0]:  # (engine, data version or 0 if unversioned, ...)
                del _cache[key]
        else:
            _cache.clear()
        _data_version.clear()
    with _grid_months_lock:
        _polygon_months_held.clear()  # (a filter's own data, like a panel: never kept)
        if not keep_grid_months:
            _grid_months.clear()
    shared_reads.clear()              # (the polygons' months shared with this host's other workers)


def _engine_key(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def data_version(engine: Engine) -> int:
    """The id of the newest rollup refresh: changes after every load. Looked up at most once a second."""
    key = _engine_key(engine)
    now = time.monotonic()
    with _cache_lock:
        seen = _data_version.get(key)
    if seen and now - seen[0] < _DATA_VERSION_TTL_S:
        return seen[1]
    with engine.connect() as conn:
        version = int(conn.execute(text("SELECT coalesce(max(id), 0) FROM rollup_refreshes")).scalar())
    with _cache_lock:
        _data_version[key] = (now, version)
    return version


def _cached(engine: Engine, name: str, key: tuple, compute: Callable[[], Any], versioned: bool = True):
    """``compute()``, cached. Data (``versioned``) is keyed by the data version and the user's scope too;
    reference data (areas, taxonomy) is the same for everyone."""
    scope = db_scope.current_scope() if versioned else None
    # Without the user id: what a query returns depends only on the rest of the scope (tier, levels,
    # boroughs; the database checks those boroughs are the user's, so an answer for a scope can only hold
    # less than that scope allows), and analysts of one tier then share each other's cached panels.
    scope = scope[1:] if scope else scope
    full_key = (_engine_key(engine), data_version(engine) if versioned else 0, scope, name) + key
    with _cache_lock:
        if full_key in _cache:
            _cache.move_to_end(full_key)
            return _cache[full_key]

    def compute_and_keep():
        value = compute()
        with _cache_lock:
            _cache[full_key] = value
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
        return value
    return _single_flight.run(full_key, compute_and_keep)


_capture = threading.local()


@contextlib.contextmanager
def capture_sql():
    """Record the (SQL, parameters) this thread's queries run, e.g. for ``safestats views explain``."""
    _capture.statements = []
    try:
        yield _capture.statements
    finally:
        _capture.statements = None


def _rows(engine: Engine, sql: str, params: dict | None = None) -> list:
    recording = getattr(_capture, "statements", None)
    if recording is not None:
        recording.append((sql, dict(params or {})))
    with engine.connect() as conn:
        return conn.execute(text(sql), params or {}).all()


AccessRefused = access.AccessRefused  # the tier does not allow this view: the message says why and what to do


def _for_user(panel: Callable) -> Callable:
    """Run ``panel`` acting as its ``user`` argument: its transactions carry that user's settings, its cache
    entries are keyed by them, and with no user it sees no rows."""
    signature = inspect.signature(panel)

    @functools.wraps(panel)
    def wrapper(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        with db_scope.acting_as(bound.arguments.get("user")):
            return panel(*args, **kwargs)
    return wrapper


# ---- reference data: areas, suppliers, taxonomy ---------------------------------------------------------

def boundaries_geojson(engine: Engine, level: str = "borough", region: str = "london") -> dict:
    """A GeoJSON FeatureCollection of the region's areas at ``level`` in WGS84, simplified for display.

    Each feature has ``id`` and ``properties.code`` (the code incidents carry), ``properties.name`` and
    ``properties.parent``. Sent to the browser once per level; later updates only restyle it.
    """
    if level not in DISPLAY_SIMPLIFY_TOLERANCE_M:
        raise ValueError(f"unknown area level {level!r}")

    def compute():
        rows = _rows(engine, """
            SELECT code, name, coalesce(parent_code, ''),
                   ST_AsGeoJSON(ST_Transform(ST_SimplifyPreserveTopology(geom, :tolerance), 4326), :decimals)
            FROM areas WHERE level = :level AND region = :region ORDER BY code""",
                     {"tolerance": DISPLAY_SIMPLIFY_TOLERANCE_M[level], "decimals": DISPLAY_COORDINATE_DECIMALS,
                      "level": level, "region": region})
        return {"type": "FeatureCollection", "features": [
            {"type": "Feature", "id": code, "properties": {"code": code, "name": name, "parent": parent},
             "geometry": json.loads(geometry)} for code, name, parent, geometry in rows]}
    return _cached(engine, "boundaries", (level, region), compute, versioned=False)


@dataclass(frozen=True)
class BoundariesDocument:
    """``boundaries_geojson`` serialised once per worker for the browser to fetch by URL and keep: the JSON,
    the same gzipped, and a version (a hash of the JSON) that names this content in the URL."""

    body: bytes
    gzipped: bytes
    version: str


def boundaries_document(engine: Engine, level: str = "borough", region: str = "london") -> BoundariesDocument:
    """The region's display boundaries at ``level`` as bytes ready to send (``dashapp.boundaries``).

    Why by URL: as callback output, the 4,835 LSOAs (1.6 MB of JSON) were serialised by Dash on every
    switch to that level, a third of a second of a worker; as a document with its version in the URL they are
    serialised once per worker and the browser's cache keeps them across pages and sessions."""
    def compute():
        body = json.dumps(boundaries_geojson(engine, level, region), separators=(",", ":")).encode()
        return BoundariesDocument(body, gzip.compress(body, compresslevel=6, mtime=0),
                                  hashlib.sha256(body).hexdigest()[:16])
    return _cached(engine, "boundaries document", (level, region), compute, versioned=False)


# Kept for the callers written before levels existed.
def borough_boundaries_geojson(engine: Engine, region: str = "london") -> dict:
    return boundaries_geojson(engine, "borough", region)


@dataclass(frozen=True)
class AreaInfo:
    code: str
    name: str
    level: str
    parent_code: str | None
    borough_code: str | None
    area_km2: float
    lat: float
    lon: float


def areas(engine: Engine) -> dict[str, AreaInfo]:
    """Every area by code (names, hierarchy, size and a label point), cached per process."""
    def compute():
        rows = _rows(engine, """
            SELECT code, name, level, parent_code, borough_code, area_km2,
                   ST_Y(ST_PointOnSurface(geom_wgs84)), ST_X(ST_PointOnSurface(geom_wgs84))
            FROM areas""")
        return {r[0]: AreaInfo(r[0], r[1], r[2], r[3], r[4] if r[2] != "borough" else r[0], float(r[5]),
                               float(r[6]), float(r[7])) for r in rows}
    return _cached(engine, "areas", (), compute, versioned=False)


def borough_names(engine: Engine) -> dict[str, str]:
    return {a.code: a.name for a in areas(engine).values() if a.level == "borough"}


def known_borough_codes(engine: Engine) -> frozenset[str]:
    return frozenset(borough_names(engine))


def child_areas(engine: Engine, parent_code: str) -> list[AreaInfo]:
    """The MSOAs of a borough or the LSOAs of an MSOA, by name."""
    return sorted((a for a in areas(engine).values() if a.parent_code == parent_code), key=lambda a: a.name)


@dataclass(frozen=True)
class Taxonomy:
    suppliers: dict[str, str]  # code -> name
    domains: dict[str, str]  # code -> name, in display order
    categories: dict[int, tuple[str, str]]  # id -> (domain, name)

    def category_ids(self, state: FilterState) -> tuple[int, ...] | None:
        """The category ids the state selects (explicit ones plus its domains'), or None for all."""
        if not state.categories and not state.domains:
            return None
        chosen = set(state.categories)
        chosen.update(cid for cid, (domain, _) in self.categories.items() if domain in state.domains)
        return tuple(sorted(chosen))


def taxonomy(engine: Engine) -> Taxonomy:
    def compute():
        suppliers = dict(_rows(engine, "SELECT code, name FROM suppliers ORDER BY code"))
        domains = dict(_rows(engine, "SELECT code, name FROM domains ORDER BY sort_order"))
        categories = {cid: (domain, name) for cid, domain, name in
                      _rows(engine, "SELECT id, domain, name FROM categories ORDER BY id")}
        return Taxonomy(suppliers, domains, categories)
    return _cached(engine, "taxonomy", (), compute, versioned=False)


def check_state(engine: Engine, state: FilterState) -> None:
    """Refuse (ValueError, with a message for the user) codes that are well-formed but do not exist."""
    tax = taxonomy(engine)
    for code in state.suppliers:
        if code not in tax.suppliers:
            raise ValueError(f"unknown supplier {code!r}")
    for code in state.domains:
        if code not in tax.domains:
            raise ValueError(f"unknown domain {code!r}")
    for cid in state.categories:
        if cid not in tax.categories:
            raise ValueError(f"unknown category {cid}")
    known = areas(engine)
    for level, code in (("borough", state.borough_code), ("msoa", state.msoa_code), ("lsoa", state.lsoa_code)):
        if code is not None and (code not in known or known[code].level != level):
            raise ValueError(f"unknown {level} {code!r}")
    if state.msoa_code and state.borough_code and known[state.msoa_code].parent_code != state.borough_code:
        raise ValueError(f"MSOA {state.msoa_code} is not in borough {state.borough_code}")
    if state.lsoa_code and state.msoa_code and known[state.lsoa_code].parent_code != state.msoa_code:
        raise ValueError(f"LSOA {state.lsoa_code} is not in MSOA {state.msoa_code}")
    if state.as_at is not None and as_at_watermark(engine, state.as_at) is None:
        raise ValueError(f"unknown data version (drop {state.as_at}) for 'as at'")


def population_years(engine: Engine) -> list[int]:
    return [y for (y,) in _rows(engine, "SELECT DISTINCT year FROM area_population ORDER BY year")]


def population_by_area(engine: Engine, level: str) -> dict[str, int]:
    """Residents per area at ``level`` from the newest loaded mid-year (sums of LSOAs); {} when none."""
    column = {"lsoa": "a.code", "msoa": "a.msoa_code", "borough": "a.borough_code"}[level]

    def compute():
        return {code: int(n) for code, n in _rows(engine, f"""
            SELECT {column}, sum(p.population) FROM area_population p
            JOIN areas a ON a.code = p.lsoa_code AND a.level = 'lsoa'
            WHERE p.year = (SELECT max(year) FROM area_population)
            GROUP BY 1""") if code}
    return _cached(engine, "population", (level,), compute)


# ---- the period --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Period:
    start: date  # inclusive
    end: date  # inclusive

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def previous(self) -> "Period":
        """The equal-length period just before (whole months stay whole months)."""
        if self.is_whole_months():
            months = _months_between(self.start, self.end)
            start = _add_months(self.start, -months)
            return Period(start, self.start - timedelta(days=1))
        return Period(self.start - timedelta(days=self.days), self.start - timedelta(days=1))

    def year_earlier(self) -> "Period":
        return Period(_add_months(self.start, -12), _add_months(self.end + timedelta(days=1), -12) - timedelta(days=1))

    def is_whole_months(self) -> bool:
        return self.start.day == 1 and (self.end + timedelta(days=1)).day == 1

    def label(self) -> str:
        if self.is_whole_months():
            if self.start.replace(day=1) == self.end.replace(day=1):
                return f"{self.start:%b %Y}"
            return f"{self.start:%b %Y} – {self.end:%b %Y}"
        return f"{self.start:%-d %b %Y} – {self.end:%-d %b %Y}"


def _add_months(d: date, months: int) -> date:
    total = d.year * 12 + d.month - 1 + months
    return date(total // 12, total % 12 + 1, 1) if d.day == 1 else \
        min(date(total // 12, total % 12 + 1, 28) + timedelta(days=d.day - 28),
            _month_end(date(total // 12, total % 12 + 1, 1)))


def _month_end(d: date) -> date:
    return (d.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


def _months_between(start: date, end: date) -> int:
    return (end.year - start.year) * 12 + end.month - start.month + 1


def data_span(engine: Engine, state: FilterState | None = None) -> tuple[date, date] | None:
    """First day of the first month and last day of the last month holding any incident; for a state pinned
    "as at" a drop, ending with the last month the drops up to it covered (so its default period holds)."""
    def compute():
        first, last = _rows(engine, "SELECT first_month, last_month FROM incident_months_span")[0]
        return None if first is None else (first, _month_end(last))
    span = _cached(engine, "span", (), compute)
    if span is None or state is None or state.as_at is None:
        return span
    covered = as_at_coverage(engine, state.as_at)
    last = max((end for ranges in covered.values() for _, end in ranges), default=None)
    if last is None or last < span[0]:
        return None
    return span[0], min(span[1], last)


def current_period(engine: Engine, state: FilterState) -> Period | None:
    """The state's dates, or the latest 12 months of data; None when nothing is loaded and no dates set."""
    span = data_span(engine, state)
    if state.date_from and state.date_to:
        return Period(state.date_from, state.date_to)
    if span is None:
        return None
    end = state.date_to or span[1]
    start = state.date_from or max(span[0], _add_months(end.replace(day=1), 1 - CURRENT_PERIOD_MONTHS))
    return Period(start, end) if start <= end else Period(start, start)


# ---- planning: which source answers a query, and its WHERE clause ----------------------------------------

_LONDON = ZoneInfo("Europe/London")
_LONDON_MONTH = "date_trunc('month', occurred_at AT TIME ZONE 'Europe/London')::date"  # an incident's month


@dataclass
class _Plan:
    source: str
    conditions: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)

    @property
    def relation(self) -> str:
        """What the SQL reads: the incidents table (under row-level security) or a rollup's visible view."""
        return "incidents" if self.source == "incidents" else visible_view(self.source)

    @property
    def count(self) -> str:
        return "count(*)" if self.source == "incidents" else "sum(incidents)"

    @property
    def month(self) -> str:
        return {"incidents": _LONDON_MONTH,
                "rollup_borough_day_hour": "date_trunc('month', day)::date"}.get(self.source, "month")

    def area(self, level: str) -> str:
        column = f"{level}_code"
        return f"coalesce({column}, '')" if self.source == "incidents" else column

    @property
    def hour(self) -> str:
        if self.source == "incidents":
            return ("CASE WHEN time_precision = 'minute' THEN "
                    "extract(hour FROM occurred_at AT TIME ZONE 'Europe/London')::int END")
        return "hour"

    @property
    def isodow(self) -> str:
        if self.source == "incidents":
            return ("CASE WHEN time_precision <> 'month' THEN "
                    "extract(isodow FROM occurred_at AT TIME ZONE 'Europe/London')::int END")
        return "isodow"

    def where(self, *extra: str) -> str:
        conditions = self.conditions + [c for c in extra if c]
        return ("WHERE " + " AND ".join(conditions)) if conditions else ""


_SOURCE_DIMENSIONS = {
    "rollup_borough_month": {"month", "borough"},
    "rollup_area_month": {"month", "borough", "msoa", "lsoa"},
    "rollup_borough_day_hour": {"month", "day", "borough", "hour", "isodow"},
    "rollup_grid_month": {"month", "borough", "cell"},  # a picked hotspot cell (sums of 250 m cells)
    # Only the raw table knows how each record was located (the rollups do not keep it).
    "incidents": {"month", "day", "borough", "msoa", "lsoa", "hour", "isodow", "point", "location", "cell"},
}


def _plan(engine: Engine, state: FilterState, period: Period | None, needs: set[str] = frozenset(),
          ignore: set[str] = frozenset(), records_only: bool = False) -> _Plan:
    """The cheapest source with every dimension the query groups by (``needs``) and the state filters on,
    and the conditions applying the state to it. ``ignore`` names filters this panel deliberately leaves
    out ("dates", "categories", "area", "time") because it shows them as a choice, not a restriction."""
    needed = set(needs)
    area = None if "area" in ignore else state.selected_area
    if area:
        needed.add(area[0])
    if state.polygon is not None and "area" not in ignore:
        needed.add("point")
    if state.hotspot_cell is not None and "area" not in ignore:
        needed.add("cell")
    if "time" not in ignore:
        if state.hours is not None:
            needed.add("hour")
        if state.days:
            needed.add("isodow")
    if period is not None and "dates" not in ignore and not period.is_whole_months():
        needed.add("day")
    if state.located_at_least is not None:
        needed.add("location")
    for source in ("rollup_borough_month", "rollup_area_month", "rollup_borough_day_hour", "rollup_grid_month",
                   "incidents"):
        if needed <= _SOURCE_DIMENSIONS[source]:
            break
    if source == "incidents" and not records_only:  # (a records layer shows only what the user may see anyway)
        _check_records_cover(engine, state, area)
    plan = _Plan(source)
    c, p = plan.conditions, plan.params

    if period is not None and "dates" not in ignore:
        _period_conditions(plan, period, "")
    if state.suppliers:
        c.append("supplier = ANY(:suppliers)")
        p["suppliers"] = list(state.suppliers)
    if "categories" not in ignore:
        category_ids = taxonomy(engine).category_ids(state)
        if category_ids is not None:
            c.append("category_id = ANY(:category_ids)")
            p["category_ids"] = list(category_ids)
    if state.themes:
        if source == "incidents":
            c.append("(" + " OR ".join(f"{THEMES[t][0]} IS TRUE" for t in state.themes) + ")")
        else:
            c.append("(theme_mask & :theme_mask) <> 0")
            p["theme_mask"] = state.theme_mask
    if area:
        level, code = area
        c.append(f"{level}_code = :area_code")
        p["area_code"] = code
        info = areas(engine).get(code)
        if source == "incidents" and level != "borough" and info is not None and info.borough_code:
            # Implied by the area (incidents take all three codes from their LSOA); it lets the raw table's
            # (borough_code, occurred_at) index find the area's rows, which loaders write together by borough.
            c.append("borough_code = :area_borough")
            p["area_borough"] = info.borough_code
    if state.polygon is not None and "area" not in ignore:
        # The && first: it is the leakproof condition row-level security lets the GiST index answer (0009).
        c.append(f"geom && {_POLYGON_BNG} AND ST_Intersects(geom, {_POLYGON_BNG})")
        p["polygon_wkt"] = _polygon_wkt(state.polygon)
    if state.located_at_least is not None:
        c.append("location_precision = ANY(:location_precisions)")
        p["location_precisions"] = list(precisions_at_least(state.located_at_least))
    if state.as_at is not None:
        _as_at_conditions(engine, plan, state.as_at)
    if state.hotspot_cell is not None and "area" not in ignore:
        size, ix, iy = state.hotspot_cell
        if source == "rollup_grid_month":  # the picked cell is whole 250 m rollup cells
            per = size // 250
            c.append("cell_x BETWEEN :cell_x0 AND :cell_x1 AND cell_y BETWEEN :cell_y0 AND :cell_y1")
            p.update(cell_x0=ix * per, cell_x1=ix * per + per - 1, cell_y0=iy * per, cell_y1=iy * per + per - 1)
        else:  # half-open, as floor(x / size) = ix counts it; && lets the spatial index find the cell
            c.append("geom && ST_MakeEnvelope(:cell_west, :cell_south, :cell_east, :cell_north, 27700) "
                     "AND ST_X(geom) >= :cell_west AND ST_X(geom) < :cell_east "
                     "AND ST_Y(geom) >= :cell_south AND ST_Y(geom) < :cell_north")
            p.update(cell_west=ix * size, cell_east=(ix + 1) * size, cell_south=iy * size,
                     cell_north=(iy + 1) * size)
    if "time" not in ignore:
        if state.hours is not None:
            first, last = state.hours
            joiner = "AND" if first <= last else "OR"  # 22-4 wraps past midnight
            c.append(f"({plan.hour} >= :hour_first {joiner} {plan.hour} <= :hour_last)")
            p.update(hour_first=first, hour_last=last)
        if state.days:
            c.append(f"{plan.isodow} = ANY(:isodows)")
            p["isodows"] = list(state.days)
    return plan


_POLYGON_BNG = "ST_Transform(ST_MakeValid(ST_GeomFromText(:polygon_wkt, 4326)), 27700)"  # a drawn polygon


def _polygon_wkt(ring: tuple) -> str:
    return "POLYGON((" + ", ".join(f"{lon} {lat}" for lon, lat in list(ring) + [ring[0]]) + "))"


def _check_records_cover(engine: Engine, state: FilterState, area: tuple[str, str] | None) -> None:
    """Refuse a raw-table plan unless the acting user may see, as records, everything it would count: the
    database would silently leave out the rest, and the panel would show a number that looks complete."""
    policy = db_scope.current_policy() or access.NO_ACCESS
    levels = supplier_levels(engine)
    suppliers = state.suppliers or tuple(levels)  # panels narrow the state to the user's suppliers first
    beyond = [s for s in suppliers if levels.get(s, 0) > policy.record_level]
    if beyond or not policy.sees_records:
        raise AccessRefused("This view counts individual records (a drawn area, or days below borough level), "
                            "which your access level does not include: choose whole months or a borough instead.")
    if policy.record_boroughs is not None:
        info = areas(engine).get(area[1]) if area else None  # the area the plan is restricted to, if any
        if info is None or info.borough_code not in policy.record_boroughs:
            raise AccessRefused("This view counts individual records, which you may see only in your own "
                                "boroughs: choose one of them first.")


# ---- "as at": the data as it stood when a view was pinned --------------------------------------------------

@dataclass(frozen=True)
class Watermark:
    drop_id: int
    loaded_at: Any  # when that drop was loaded: the moment the pinned view's data stood as it shows


def latest_watermark(engine: Engine) -> Watermark | None:
    """The newest loaded (or since superseded) drop: what a view pinned now is pinned to."""
    rows = _rows(engine, """SELECT id, loaded_at FROM drops WHERE status IN ('loaded', 'superseded')
                            ORDER BY id DESC LIMIT 1""")
    return Watermark(int(rows[0][0]), rows[0][1]) if rows else None


def as_at_watermark(engine: Engine, drop_id: int) -> Watermark | None:
    """The drop a state is pinned to, or None when there is no such loaded drop."""
    def compute():
        rows = _rows(engine, "SELECT id, loaded_at FROM drops WHERE id = :id AND status IN ('loaded', 'superseded')",
                     {"id": int(drop_id)})
        return Watermark(int(rows[0][0]), rows[0][1]) if rows else None
    return _cached(engine, "as_at_watermark", (int(drop_id),), compute)


def as_at_coverage(engine: Engine, drop_id: int) -> dict[str, list[tuple[date, date]]]:
    """Per supplier, the months its drops up to ``drop_id`` covered, as merged (first day, last day) ranges.

    Read from ``drops`` on the server (never from the browser): every drop loaded by then, including those a
    re-issue has since superseded (their months are still covered, now by the re-issue's rows)."""
    def compute():
        rows = _rows(engine, """
            SELECT supplier, date_trunc('month', period_start)::date, period_end FROM drops
            WHERE id <= :id AND status IN ('loaded', 'superseded') AND period_start IS NOT NULL
              AND period_end IS NOT NULL
            ORDER BY supplier, 2, 3""", {"id": int(drop_id)})
        merged: dict[str, list[tuple[date, date]]] = {}
        for supplier, start, end in rows:
            end = _month_end(end)
            ranges = merged.setdefault(supplier, [])
            if ranges and start <= ranges[-1][1] + timedelta(days=1):
                ranges[-1] = (ranges[-1][0], max(ranges[-1][1], end))
            else:
                ranges.append((start, end))
        return merged
    return _cached(engine, "as_at_coverage", (int(drop_id),), compute)


def _as_at_conditions(engine: Engine, plan: _Plan, drop_id: int) -> None:
    """Restrict ``plan`` to, per supplier, the months covered at the watermark: data loaded later for new
    months is left out, on the rollups (supplier x month) and the raw table alike, so the numbers hold."""
    terms = []
    for i, (supplier, ranges) in enumerate(sorted(as_at_coverage(engine, drop_id).items())):
        plan.params[f"asat_supplier_{i}"] = supplier
        months = []
        for j, (start, end) in enumerate(ranges):
            plan.params[f"asat_start_{i}_{j}"], plan.params[f"asat_end_{i}_{j}"] = start, end
            months.append(_period_sql(plan, f"asat_start_{i}_{j}", f"asat_end_{i}_{j}"))
        terms.append(f"(supplier = :asat_supplier_{i} AND ({' OR '.join(months)}))")
    plan.conditions.append("(" + " OR ".join(terms) + ")" if terms else "FALSE")


def _period_conditions(plan: _Plan, period: Period, suffix: str) -> None:
    """Restrict ``plan`` to ``period`` (parameters named with ``suffix``)."""
    start, end = f"period_start{suffix}", f"period_end{suffix}"
    plan.params[start], plan.params[end] = period.start, period.end
    plan.conditions.append(_period_sql(plan, start, end))


def _period_sql(plan: _Plan, start: str, end: str) -> str:
    if plan.source == "incidents":
        # Midnight in London as an instant (BST-aware); keeps partition pruning.
        return (f"occurred_at >= (CAST(:{start} AS date)::timestamp AT TIME ZONE 'Europe/London') AND "
                f"occurred_at < ((CAST(:{end} AS date) + 1)::timestamp AT TIME ZONE 'Europe/London')")
    column = "day" if plan.source == "rollup_borough_day_hour" else "month"
    if column == "month":  # whole months only reach here
        return f"month BETWEEN date_trunc('month', CAST(:{start} AS date))::date AND CAST(:{end} AS date)"
    return f"day BETWEEN :{start} AND :{end}"


def _periods_plan(engine, state, periods: dict[str, Period], needs=frozenset(), ignore=frozenset()):
    """A plan spanning several periods (current, previous, a year earlier), with a FILTER per period."""
    plan = _plan(engine, state, periods["current"], needs, ignore | {"dates"})
    if any(not p.is_whole_months() for p in periods.values()) and "day" not in _SOURCE_DIMENSIONS[plan.source]:
        plan = _plan(engine, state, periods["current"], set(needs) | {"day"}, ignore | {"dates"})
    filters = {}
    for name, period in periods.items():
        plan.params[f"period_start_{name}"], plan.params[f"period_end_{name}"] = period.start, period.end
        filters[name] = _period_sql(plan, f"period_start_{name}", f"period_end_{name}")
    span_start, span_end = min(p.start for p in periods.values()), max(p.end for p in periods.values())
    plan.params["span_start"], plan.params["span_end"] = span_start, span_end
    plan.conditions.append(_period_sql(plan, "span_start", "span_end"))
    return plan, filters


def _key(state: FilterState, *extra) -> tuple:
    return (state.data_filters(),) + extra


NO_SUPPLIER = "none_visible"  # a supplier code that exists nowhere: "this user may see none of these"


def supplier_levels(engine: Engine) -> dict[str, int]:
    """Supplier code -> the access level its records need (suppliers.access_level), cached per process."""
    return _cached(engine, "supplier_levels", (),
                   lambda: dict(_rows(engine, "SELECT code, access_level FROM suppliers")), versioned=False)


def visible_suppliers(engine: Engine, user, state: FilterState | None = None) -> frozenset[str]:
    """The suppliers whose data ``user`` may see in aggregates for ``state`` (``safestats.access``).

    Tiers whose policy says ``health == "suppressed"`` get health suppliers only on their own (the state
    selects only health suppliers, or the health domain), under disclosure control, and never mixed into
    other suppliers' counts (``safestats.disclosure`` says why)."""
    policy = access.policy_for(user)
    levels = supplier_levels(engine)
    allowed = frozenset(code for code, needed in levels.items() if needed <= policy.aggregate_level)
    if policy.health == "suppressed":
        health = frozenset(code for code, needed in levels.items() if needed > access.RECORD_LEVEL)
        wanted = set(state.suppliers) if state and state.suppliers else (
            set(health) if state and state.domains == ("health",) else set())
        allowed = allowed & health if wanted and wanted <= health else allowed - health
    return allowed


def _scoped(engine: Engine, state: FilterState, user) -> FilterState:
    """``state`` narrowed to the suppliers ``user`` may see, and refused (ValueError) below the finest area
    the user's tier may break data down to. Every panel starts here, so the restriction is part of the SQL
    and of the cache key: one user's answer is never served to a lower tier. ``user`` None is an internal
    caller (CLI, tests, benchmarks): no health, no area limit."""
    if user is not None:
        policy = access.policy_for(user)
        if state.selected_area and not policy.may_break_down_to(state.selected_area[0]):
            raise AccessRefused(f"your access level shows areas down to {policy.min_area_level} level only")
        if state.polygon is not None and not policy.may_break_down_to("lsoa"):
            raise AccessRefused(f"your access level shows areas down to {policy.min_area_level} level only: "
                             "a drawn area is finer than that")
    allowed = visible_suppliers(engine, user, state)
    if allowed == frozenset(supplier_levels(engine)):
        return state  # this user may see every supplier
    chosen = [s for s in (state.suppliers or sorted(allowed)) if s in allowed]
    return replace(state, suppliers=tuple(chosen) or (NO_SUPPLIER,))


@_for_user
def records_refusal(engine: Engine, state: FilterState, user=None) -> str | None:
    """Why the state's own plan would be refused to ``user`` (it counts records they may not see), or None."""
    try:
        scoped = _scoped(engine, state, user)
        _plan(engine, scoped, current_period(engine, scoped))
    except AccessRefused as exc:
        return str(exc)
    return None


def _controlled(engine: Engine, state: FilterState, user, level: str = "borough") -> bool:
    """Whether the (scoped) state's numbers are health aggregates under disclosure control for ``user``;
    refuses (DisclosureRefused) a view finer than a borough x calendar month for them."""
    if user is None or access.policy_for(user).health != "suppressed":
        return False
    levels = supplier_levels(engine)
    if not state.suppliers or not all(levels.get(s, 0) > access.RECORD_LEVEL for s in state.suppliers):
        return False
    period = current_period(engine, state)
    disclosure.check_minimums(state, period is None or period.is_whole_months())
    if level != "borough":
        raise disclosure.DisclosureRefused("health data at your access level is shown for boroughs and above "
                                           "only: set the map level to Borough")
    return True


def check_level(level: str, user) -> None:
    """Refuse (``AccessRefused``) areas finer than ``user``'s tier may break data down to."""
    if user is not None and not access.policy_for(user).may_break_down_to(level):
        raise AccessRefused(f"your access level shows areas down to {access.policy_for(user).min_area_level} "
                         "level only")


# ---- panels ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Headline:
    period: Period | None
    total: int
    previous: int  # the equal period just before
    year_earlier: int
    source: str


@_for_user
def headline(engine: Engine, state: FilterState, user=None) -> Headline:
    """Total in the current period, and in the previous equal period and the same period a year earlier.
    Under disclosure control each is a controlled count (None: "*")."""
    state = _scoped(engine, state, user)
    controlled = _controlled(engine, state, user)
    period = current_period(engine, state)
    if period is None:
        return Headline(None, 0, 0, 0, "none")

    def compute():
        periods = {"current": period, "previous": period.previous(), "year": period.year_earlier()}
        plan, filters = _periods_plan(engine, state, periods)
        in_memory = _periods_in_memory(engine, state, plan.source, periods.values(), "total")
        if in_memory is not None:
            return Headline(period, *(int(n[0]) for n in in_memory), plan.source)
        row = _rows(engine, f"""
            SELECT coalesce({plan.count} FILTER (WHERE {filters['current']}), 0),
                   coalesce({plan.count} FILTER (WHERE {filters['previous']}), 0),
                   coalesce({plan.count} FILTER (WHERE {filters['year']}), 0)
            FROM {plan.relation} {plan.where()}""", plan.params)[0]
        return Headline(period, int(row[0]), int(row[1]), int(row[2]), plan.source)
    result = _cached(engine, "headline", _key(state), compute)
    if controlled:
        c = disclosure.count
        return replace(result, total=c(result.total), previous=c(result.previous),
                       year_earlier=c(result.year_earlier))
    return result


@dataclass(frozen=True)
class Freshness:
    supplier: str
    name: str
    data_to: date | None  # last day of the newest period loaded
    last_loaded: Any  # datetime of the newest loaded drop


def freshness(engine: Engine, as_at: int | None = None) -> list[Freshness]:
    """Per supplier: the end of the newest period loaded, and when its newest drop was loaded; for a view
    pinned ``as_at`` a drop, as they stood when that drop was loaded (the drops up to it, superseded ones
    included: a later re-issue replaced their rows, not their months)."""
    def compute():
        if as_at is None:
            joined, params = "d.status = 'loaded'", {}
        else:
            joined, params = "d.status IN ('loaded', 'superseded') AND d.id <= :as_at", {"as_at": int(as_at)}
        return [Freshness(code, name, data_to, loaded) for code, name, data_to, loaded in _rows(engine, f"""
            SELECT s.code, s.name, max(d.period_end), max(d.loaded_at)
            FROM suppliers s LEFT JOIN drops d ON d.supplier = s.code AND {joined}
            GROUP BY s.code, s.name ORDER BY s.code""", params)]
    return _cached(engine, "freshness", (as_at,), compute)


@dataclass(frozen=True)
class MonthlySeries:
    months: list[date]
    groups: dict[str, list[int]]  # group label -> counts per month, in legend order
    year_earlier: list[int | None]  # the total 12 months before each month (None before the data starts)
    grouped_by: str  # "domain" or "category"


@_for_user
def monthly_series(engine: Engine, state: FilterState, user=None) -> MonthlySeries:
    """Incidents per month over the whole data span (the date filter is shown as a shaded range, not
    applied), stacked by domain — or by category when one domain is in view — with last year's totals.
    Under disclosure control every count is controlled, the year-earlier totals after summing."""
    state = _scoped(engine, state, user)
    controlled = _controlled(engine, state, user)
    def compute():
        plan = _plan(engine, state, None, {"month"}, ignore={"dates"})
        span = data_span(engine, state)
        if span is None:
            return MonthlySeries([], {}, [], "domain")
        months = _months_of(Period(*span))
        in_memory = _counts_in_memory(engine, state, plan.source, months, "category", ignore={"dates"})
        if in_memory is not None:
            rows = [(months[k], int(cid), in_memory[k, cid]) for k, cid in zip(*np.nonzero(in_memory))]
        else:
            rows = _rows(engine, f"""
                SELECT {plan.month} AS month, category_id, {plan.count}
                FROM {plan.relation} {plan.where()} GROUP BY 1, 2""", plan.params)
        index = {m: i for i, m in enumerate(months)}
        tax = taxonomy(engine)
        domains_present = {tax.categories[cid][0] for _, cid, _ in rows}
        by_category = len(domains_present) <= 1
        groups: dict[str, list[int]] = {}
        totals = [0] * len(months)
        order = ([tax.categories[c][1] for c in sorted(tax.categories)] if by_category
                 else list(tax.domains.values()))
        for month, cid, n in rows:
            domain, name = tax.categories[cid]
            label = name if by_category else tax.domains[domain]
            groups.setdefault(label, [0] * len(months))[index[month]] += int(n)
            totals[index[month]] += int(n)
        ordered = {label: groups[label] for label in order if label in groups}
        year_earlier = [totals[i - 12] if i >= 12 else None for i in range(len(months))]
        return MonthlySeries(months, ordered, year_earlier, "category" if by_category else "domain")
    result = _cached(engine, "monthly", _key(state), compute)
    if controlled:
        return replace(result, groups={label: [disclosure.count(n) for n in values]
                                       for label, values in result.groups.items()},
                       year_earlier=[disclosure.count(n) for n in result.year_earlier])
    return result


@dataclass(frozen=True)
class CategoryCount:
    category_id: int
    name: str
    domain: str
    incidents: int


@_for_user
def category_counts(engine: Engine, state: FilterState, user=None) -> list[CategoryCount]:
    """Incidents per category in the current period, largest first (the category filter is not applied:
    the chart is where it is chosen; selected bars are highlighted). Controlled counts under disclosure control."""
    state = _scoped(engine, state, user)
    controlled = _controlled(engine, state, user)
    period = current_period(engine, state)

    def compute():
        plan = _plan(engine, state, period, ignore={"categories"})
        tax = taxonomy(engine)
        in_memory = _counts_in_memory(engine, state, plan.source, period, "category", ignore={"categories"})
        if in_memory is not None:
            rows = sorted(((int(cid), in_memory[cid]) for cid in np.nonzero(in_memory)[0]),
                          key=lambda row: (-row[1], row[0]))
        else:
            rows = _rows(engine, f"SELECT category_id, {plan.count} FROM {plan.relation} {plan.where()} "
                                 f"GROUP BY 1 ORDER BY 2 DESC, 1", plan.params)
        return [CategoryCount(cid, tax.categories[cid][1], tax.categories[cid][0], int(n)) for cid, n in rows]
    result = _cached(engine, "categories", _key(state), compute)
    if controlled:
        return [replace(row, incidents=disclosure.count(row.incidents)) for row in result]
    return result


@dataclass(frozen=True)
class HourDayGrid:
    counts: list[list[int]]  # [isodow - 1][hour]
    timed: int  # incidents in the selection with a time of day
    untimed: int  # incidents recorded to the month or day only
    untimed_suppliers: list[str]


@_for_user
def hour_day_grid(engine: Engine, state: FilterState, user=None) -> HourDayGrid:
    """Hour of day x day of week counts in the current period (the time filters are shown, not applied).
    Health data under disclosure control is never broken down by time: an empty grid."""
    state = _scoped(engine, state, user)
    period = current_period(engine, state)
    if _controlled(engine, state, user):
        return HourDayGrid([[0] * 24 for _ in range(7)], 0, 0, [])

    def compute():
        plan = _plan(engine, state, period, {"hour", "isodow"}, ignore={"time"})
        in_memory = _counts_in_memory(engine, state, plan.source, period, "supplier_hour_day", ignore={"time"})
        if in_memory is not None:
            codes = sorted(supplier_levels(engine))
            rows = [(k // 25 % 8 or None, k % 25 if k % 25 < 24 else None, codes[k // 200], in_memory[k])
                    for k in np.nonzero(in_memory)[0]]
        else:
            rows = _rows(engine, f"""
                SELECT {plan.isodow}, {plan.hour}, supplier, {plan.count}
                FROM {plan.relation} {plan.where()} GROUP BY 1, 2, 3""", plan.params)
        grid = [[0] * 24 for _ in range(7)]
        timed = untimed = 0
        untimed_suppliers = set()
        for isodow, hour, supplier, n in rows:
            if isodow is None or hour is None:
                untimed += int(n)
                untimed_suppliers.add(supplier)
            else:
                grid[int(isodow) - 1][int(hour)] += int(n)
                timed += int(n)
        names = taxonomy(engine).suppliers
        return HourDayGrid(grid, timed, untimed, sorted(names.get(s, s) for s in untimed_suppliers))
    return _cached(engine, "hourday", _key(state), compute)


@dataclass(frozen=True)
class AreaValues:
    level: str
    current: dict[str, int]
    previous: dict[str, int]
    area_km2: dict[str, float]
    population: dict[str, int]
    suppressed: frozenset[str] = frozenset()  # areas whose count is "*" (disclosure control)

    def measure(self, measure: str) -> dict[str, float]:
        """Per area: count, change (per cent against the previous period), per km², or per 1,000 residents."""
        if measure == "count":
            return {k: float(v) for k, v in self.current.items()}
        if measure == "change":
            out = {}
            for code in set(self.current) | set(self.previous):
                before, now = self.previous.get(code, 0), self.current.get(code, 0)
                if before:
                    out[code] = 100.0 * (now - before) / before
            return out
        if measure == "rate_area":
            return {k: v / self.area_km2[k] for k, v in self.current.items() if self.area_km2.get(k)}
        if measure == "rate_population":
            return {k: 1000.0 * v / self.population[k] for k, v in self.current.items() if self.population.get(k)}
        raise ValueError(f"unknown measure {measure!r}")


@_for_user
def area_values(engine: Engine, state: FilterState, level: str, user=None) -> AreaValues:
    """Counts per area at ``level`` for the choropleth: current and previous period, sizes and residents.

    The spatial selection is not applied — the map shows every area so the user can compare and pick one.
    Under disclosure control (boroughs only) suppressed areas are left out of ``current`` and listed in
    ``suppressed``; rates and changes are made from the rounded counts.
    """
    state = _scoped(engine, state, user)
    check_level(level, user)
    controlled = _controlled(engine, state, user, level)
    period = current_period(engine, state)

    def compute():
        info = areas(engine)
        sizes = {code: a.area_km2 for code, a in info.items() if a.level == level}
        if period is None:
            return AreaValues(level, {}, {}, sizes, population_by_area(engine, level))
        plan, filters = _periods_plan(engine, state, {"current": period, "previous": period.previous()},
                                      {level}, ignore={"area"})
        in_memory = _periods_in_memory(engine, state, plan.source, [period, period.previous()], "area", level,
                                       ignore={"area"})
        if in_memory is not None:
            codes = _area_cells(engine).codes[level]
            current, previous = ({codes[k]: int(n[k]) for k in np.nonzero(n)[0]} for n in in_memory)
            return AreaValues(level, current, previous, sizes, population_by_area(engine, level))
        rows = _rows(engine, f"""
            SELECT {plan.area(level)}, {plan.count} FILTER (WHERE {filters['current']}),
                   {plan.count} FILTER (WHERE {filters['previous']})
            FROM {plan.relation} {plan.where()} GROUP BY 1""", plan.params)
        current = {code: int(n) for code, n, _ in rows if code and n}
        previous = {code: int(p) for code, _, p in rows if code and p}
        return AreaValues(level, current, previous, sizes, population_by_area(engine, level))
    result = _cached(engine, "areas", _key(state, level), compute)
    if controlled:
        current, previous = disclosure.counts(result.current), disclosure.counts(result.previous)
        return replace(result, current={k: v for k, v in current.items() if v is not None},
                       previous={k: v for k, v in previous.items() if v is not None},
                       suppressed=frozenset(k for k, v in current.items() if v is None))
    return result


@dataclass(frozen=True)
class AreaRow:
    code: str
    name: str
    level: str
    incidents: int
    previous: int
    change_pct: float | None
    per_km2: float | None
    per_1000: float | None


@_for_user
def top_areas(engine: Engine, state: FilterState, user=None, limit: int = TOP_AREAS_LIMIT) -> list[AreaRow]:
    """The busiest areas one level below the selection (boroughs; a borough's MSOAs; an MSOA's LSOAs).
    Under disclosure control: boroughs only, controlled counts (None: "*"), rates from the rounded counts."""
    state = _scoped(engine, state, user)
    selected = state.selected_area
    level = {None: "borough", "borough": "msoa", "msoa": "lsoa", "lsoa": "lsoa"}[selected and selected[0]]
    check_level(level, user)
    controlled = _controlled(engine, state, user, level)
    period = current_period(engine, state)

    def compute():
        if period is None:
            return []
        plan, filters = _periods_plan(engine, state, {"current": period, "previous": period.previous()}, {level})
        in_memory = _periods_in_memory(engine, state, plan.source, [period, period.previous()], "area", level)
        if in_memory is not None:
            codes, (now, before) = _area_cells(engine).codes[level], in_memory
            busiest = sorted(np.nonzero(now + before)[0], key=lambda k: (-now[k], codes[k]))[:limit]
            rows = [(codes[k], int(now[k]), int(before[k])) for k in busiest]
        else:
            rows = _rows(engine, f"""
                SELECT {plan.area(level)}, coalesce({plan.count} FILTER (WHERE {filters['current']}), 0) AS now,
                       coalesce({plan.count} FILTER (WHERE {filters['previous']}), 0)
                FROM {plan.relation} {plan.where(f"{plan.area(level)} <> ''")}
                GROUP BY 1 ORDER BY now DESC, 1 LIMIT :limit""", dict(plan.params, limit=limit))
        info = areas(engine)
        population = population_by_area(engine, level)
        out = []
        for code, now, before in rows:
            if not now:
                continue
            a = info.get(code)
            out.append(AreaRow(code, a.name if a else code, level, int(now), int(before),
                               100.0 * (now - before) / before if before else None,
                               now / a.area_km2 if a and a.area_km2 else None,
                               1000.0 * now / population[code] if population.get(code) else None))
        return out
    result = _cached(engine, "top", _key(state, limit), compute)
    return [_controlled_area_row(row) for row in result] if controlled else result


def _controlled_area_row(row: AreaRow) -> AreaRow:
    now, before = disclosure.count(row.incidents), disclosure.count(row.previous)
    if now is None:
        return replace(row, incidents=None, previous=before, change_pct=None, per_km2=None, per_1000=None)
    scale = now / row.incidents
    return replace(row, incidents=now, previous=before,
                   change_pct=100.0 * (now - before) / before if before else None,
                   per_km2=row.per_km2 * scale if row.per_km2 is not None else None,
                   per_1000=row.per_1000 * scale if row.per_1000 is not None else None)


# ---- map layers: density cells and point clusters --------------------------------------------------------

@_for_user
def density_cells(engine: Engine, state: FilterState, bbox_3857: tuple[float, float, float, float],
                  cell_m: int, user=None) -> list[tuple[float, float, float, float, int]]:
    """Counts on ``cell_m`` British National Grid cells (a multiple of 250 m) overlapping a Web Mercator box
    (a map tile), in the current period under all filters, as (xmin, ymin, xmax, ymax in EPSG:3857, count).
    Read from the 250 m grid rollup; raw points only when a filter needs them (a drawn polygon, an MSOA or
    LSOA, times of day). Health data under disclosure control has no cells finer than a borough: none.
    Grid cells are finer than LSOAs: refused (ValueError) for tiers that may not break data down that far."""
    state = _scoped(engine, state, user)
    check_level("lsoa", user)
    if _controlled(engine, state, user):
        return []
    if cell_m % 250:
        raise ValueError("cell size must be a multiple of 250 m")
    period = current_period(engine, state)
    factor = cell_m // 250
    xmin, ymin, xmax, ymax = (float(v) for v in bbox_3857)

    def compute():
        if period is None:
            return []
        plan = _plan(engine, state, period, {"borough"})
        if plan.source == "rollup_borough_month":
            plan.source = "rollup_grid_month"  # the borough month rollup's dimensions, plus the cell
            x, y = f"floor(cell_x / {factor}.0)", f"floor(cell_y / {factor}.0)"
            inside = ("cell_x BETWEEN floor((SELECT x0 FROM box) / 250) AND floor((SELECT x1 FROM box) / 250) "
                      "AND cell_y BETWEEN floor((SELECT y0 FROM box) / 250) AND floor((SELECT y1 FROM box) / 250)")
        else:
            plan = _plan(engine, state, period, {"point"})
            x, y = f"floor(ST_X(geom) / {cell_m})", f"floor(ST_Y(geom) / {cell_m})"
            inside = "geom && (SELECT env FROM box)"
        rows = _rows(engine, f"""
            WITH box AS (
                SELECT env, ST_XMin(env) AS x0, ST_YMin(env) AS y0, ST_XMax(env) AS x1, ST_YMax(env) AS y1
                FROM (SELECT ST_Transform(ST_MakeEnvelope(:xmin, :ymin, :xmax, :ymax, 3857), 27700) AS env) e
            ), cells AS (
                SELECT {x} * {cell_m} AS west, {y} * {cell_m} AS south, {plan.count} AS n
                FROM {plan.relation} {plan.where(inside)} GROUP BY 1, 2
            )
            SELECT ST_XMin(m), ST_YMin(m), ST_XMax(m), ST_YMax(m), n FROM (
                SELECT ST_Transform(ST_MakeEnvelope(west, south, west + {cell_m}, south + {cell_m}, 27700), 3857)
                       AS m, n FROM cells) t""",
                     dict(plan.params, xmin=xmin, ymin=ymin, xmax=xmax, ymax=ymax))
        return [(float(a), float(b), float(c), float(d), int(n)) for a, b, c, d, n in rows]
    return _cached(engine, "density", _key(state, cell_m, round(xmin), round(ymin), round(xmax), round(ymax)),
                   compute)


# Greater London with a margin, in Web Mercator metres.
LONDON_BBOX_3857 = (-70000.0, 6650000.0, 45000.0, 6760000.0)


@_for_user
def density_scale(engine: Engine, state: FilterState, cell_m: int, user=None) -> int:
    """The 98th percentile of non-empty cell counts over all of London: one colour scale for every tile."""
    state = _scoped(engine, state, user)
    def compute():
        counts = sorted(n for *_, n in density_cells(engine, state, LONDON_BBOX_3857, cell_m, user))
        return counts[int(0.98 * (len(counts) - 1))] if counts else 0
    return _cached(engine, "density_scale", _key(state, cell_m), compute)


@_for_user
def point_clusters(engine: Engine, state: FilterState, bbox_wgs84: tuple[float, float, float, float],
                   zoom: float, user=None) -> dict:
    """Incident points in the map's view as a GeoJSON FeatureCollection, clustered on the server into a
    pixel-sized grid so at most ``MAX_POINT_FEATURES`` features go to the browser whatever the zoom.
    Each feature has ``count``; police.uk points are already anonymised to snap points by the supplier.
    Only records the user may see record by record (their policy's record level and boroughs)."""
    state = _scoped(engine, state, user)
    period = current_period(engine, state)
    records = _record_conditions(user)
    west, south, east, north = (float(v) for v in bbox_wgs84)
    # ~40 screen pixels per cluster cell: metres per pixel at this zoom, near London's latitude.
    cell_m = max(1.0, 40 * 156543.03 * 0.62 / (2 ** zoom))

    def compute():
        if period is None:
            return {"type": "FeatureCollection", "features": [], "truncated": False}
        plan = _plan(engine, state, period, {"point"}, records_only=True)
        plan.conditions.extend(records[0])
        plan.params.update(records[1])
        rows = _rows(engine, f"""
            WITH pts AS (
                SELECT geom FROM incidents
                {plan.where("geom && ST_Transform(ST_MakeEnvelope(:west, :south, :east, :north, 4326), 27700)")}
            )
            SELECT ST_X(c), ST_Y(c), n FROM (
                SELECT ST_Transform(ST_Centroid(ST_Collect(geom)), 4326) AS c, count(*) AS n
                FROM pts GROUP BY ST_SnapToGrid(geom, :cell_m)
            ) clusters ORDER BY n DESC LIMIT :limit_plus_one""",
                     dict(plan.params, west=west, south=south, east=east, north=north, cell_m=cell_m,
                          limit_plus_one=MAX_POINT_FEATURES + 1))
        features = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [round(x, 5), round(y, 5)]},
                     "properties": {"count": int(n)}} for x, y, n in rows[:MAX_POINT_FEATURES]]
        return {"type": "FeatureCollection", "features": features, "truncated": len(rows) > MAX_POINT_FEATURES}
    return _cached(engine, "points", _key(state, round(west, 4), round(south, 4), round(east, 4),
                                          round(north, 4), round(zoom, 2), repr(records)), compute)


def _record_conditions(user) -> tuple[list[str], dict]:
    """SQL conditions keeping only the incidents ``user`` may see record by record (None: internal caller)."""
    if user is None:
        return [], {}
    policy = access.policy_for(user)
    conditions, params = ["access_level <= :record_level"], {"record_level": policy.record_level}
    if policy.record_boroughs is not None:
        conditions.append("borough_code = ANY(:record_boroughs)")
        params["record_boroughs"] = sorted(policy.record_boroughs)
    return conditions, params


# ---- the first page's helpers, kept for the CLI and tests -------------------------------------------------

@_for_user
def borough_counts(engine: Engine, state: FilterState, user=None) -> dict[str, int]:
    """Incidents per borough in the current period (the selection is not applied)."""
    return area_values(engine, state, "borough", user).current


@_for_user
def monthly_counts(engine: Engine, state: FilterState, user=None) -> list[tuple[date, int]]:
    """(first day of month, incidents) over the whole span under the state's non-date filters."""
    series = monthly_series(engine, state, user)
    return [(m, sum(g[i] for g in series.groups.values())) for i, m in enumerate(series.months)]


# ---- hotspots (Gi*) on the grid ---------------------------------------------------------------------------

def study_area_cells(engine: Engine, cell_m: int, region: str = "london") -> tuple[list[int], list[int]]:
    """Every grid cell (British National Grid indices at ``cell_m``) whose centre lies in the region: the
    study area of the hotspot statistics, empty cells included. Cached per process."""
    def compute():
        rows = _rows(engine, """
            WITH region AS (SELECT ST_Union(geom) AS g FROM areas WHERE level = 'borough' AND region = :region),
            bounds AS (SELECT floor(ST_XMin(g) / :cell)::int AS x0, floor(ST_XMax(g) / :cell)::int AS x1,
                              floor(ST_YMin(g) / :cell)::int AS y0, floor(ST_YMax(g) / :cell)::int AS y1 FROM region)
            SELECT i, j FROM bounds, region,
                 generate_series(x0, x1) AS i, generate_series(y0, y1) AS j
            WHERE ST_Intersects(region.g, ST_SetSRID(ST_MakePoint((i + 0.5) * :cell, (j + 0.5) * :cell), 27700))""",
                     {"cell": cell_m, "region": region})
        return [r[0] for r in rows], [r[1] for r in rows]
    return _cached(engine, "study_area", (cell_m, region), compute, versioned=False)


def _grid_plan(engine: Engine, state: FilterState, period: Period, cell_m: int,
               needs: set[str]) -> tuple[_Plan, str, str]:
    """The plan counting ``cell_m`` grid cells (with ``needs``) and the cell index expressions: the 500 m
    grid rollup for multiples of 500 m (a quarter of the 250 m rollup's rows to sum), the 250 m one for the
    rest, raw points when a filter needs them."""
    plan = _plan(engine, state, period, {"borough"} | needs)
    if plan.source == "rollup_borough_month":
        # The 500 m grid has no borough: a borough's cells come from the 250 m one.
        grid_m = 500 if cell_m % 500 == 0 and state.selected_area is None else 250
        plan.source = f"rollup_grid{'500' if grid_m == 500 else ''}_month"
        per = cell_m // grid_m  # float8, not numeric, division: several times faster over ~10^5 rollup rows
        return plan, f"floor(cell_x::float8 / {per})::int", f"floor(cell_y::float8 / {per})::int"
    plan = _plan(engine, state, period, {"point"} | needs)
    return plan, f"floor(ST_X(geom) / {cell_m})::int", f"floor(ST_Y(geom) / {cell_m})::int"


@_for_user
def grid_counts(engine: Engine, state: FilterState, cell_m: int, period: Period | None = None,
                user=None) -> dict[tuple[int, int], int]:
    """Incidents per grid cell index (x // cell_m, y // cell_m) under the state's filters in ``period``
    (default: the current period); from the 500 m grid rollup (250 m for other sizes) unless a filter needs
    raw points. Health data under disclosure control has no cells finer than a borough: none. Refused below
    the tier's finest level."""
    state = _scoped(engine, state, user)
    check_level("lsoa", user)
    if _controlled(engine, state, user):
        return {}
    if cell_m % 250:
        raise ValueError("cell size must be a multiple of 250 m")
    period = period or current_period(engine, state)

    def compute():
        if period is None:
            return {}
        plan, x, y = _grid_plan(engine, state, period, cell_m, set())
        rows = _rows(engine, f"SELECT {x}, {y}, {plan.count} FROM {plan.relation} "
                             f"{plan.where('geom IS NOT NULL' if plan.source == 'incidents' else '')} GROUP BY 1, 2",
                     plan.params)
        return {(int(i), int(j)): int(n) for i, j, n in rows}
    return _cached(engine, "grid_counts", _key(state, cell_m, period), compute)


@_for_user
def grid_counts_by_month(engine: Engine, state: FilterState, cell_m: int, period: Period,
                         user=None) -> dict[date, dict[tuple[int, int], int]]:
    """Incidents per month (London months) and grid cell under the state's filters in ``period``: the time
    steps of the emerging hot spots. From the 500 m grid rollup (250 m for other sizes) unless a filter needs
    raw points."""
    state = _scoped(engine, state, user)
    if cell_m % 250:
        raise ValueError("cell size must be a multiple of 250 m")

    def compute():
        plan, x, y = _grid_plan(engine, state, period, cell_m, {"month"})
        rows = _rows(engine, f"SELECT {plan.month}, {x}, {y}, {plan.count} FROM {plan.relation} "
                             f"{plan.where('geom IS NOT NULL' if plan.source == 'incidents' else '')} "
                             f"GROUP BY 1, 2, 3", plan.params)
        out: dict[date, dict[tuple[int, int], int]] = {}
        for month, i, j, n in rows:
            out.setdefault(month, {})[(int(i), int(j))] = int(n)
        return out
    return _cached(engine, "grid_counts_by_month", _key(state, cell_m, period), compute)


# ---- grid months in memory: what the hotspot layers count from -------------------------------------------
# A hotspot layer sums a period of grid rollup rows for every filter change (about a million at 10 million
# incidents for 12 months of the 500 m grid). Months never change between loads unless a drop touches them,
# so each worker keeps each month's rows as numpy columns (supplier, category, themes, study-area cell,
# count), keyed by the refresh that last rewrote that month (rollup_refreshes) and by what the rollup's
# visible view lets the asker's tier see. A filter change is then a mask and a bincount over arrays in
# memory, and after a load only the months it refreshed are read again.
# 14 bytes a row: ~220 MB per worker at most. At 30 million incidents the opening view's months for one way
# of seeing (500 m grid and LSOAs, two periods) are about 11 million rows.
GRID_MONTH_CACHE_ROWS = 16_000_000
_grid_months: "OrderedDict[tuple, _GridMonth]" = OrderedDict()
_grid_months_lock = threading.Lock()


@dataclass(frozen=True)
class _GridMonth:
    supplier: np.ndarray     # index into the sorted supplier codes (supplier_levels)
    category_id: np.ndarray
    theme_mask: np.ndarray
    cell: np.ndarray         # index into study_area_cells(cell_m)
    incidents: np.ndarray

    def __len__(self) -> int:
        return len(self.cell)


def _grid_family(cell_m: int | str | None) -> tuple[str, int]:
    """The rollup whose months ``cell_m`` names, and how many of its cells a side one holds: a cell size in
    metres (a grid rollup's cells summed to it), or an area family: "lsoa" (None too; ``rollup_area_month``
    per LSOA, then per borough for incidents with no LSOA: the LSOA map, the LSOA Gi* layer and every
    panel below a borough), "borough" (``rollup_borough_month``: London's and a borough's panels) or
    "day_hour" (``rollup_borough_day_hour``: the hour x weekday grid and day-level ranges)."""
    if cell_m is None or isinstance(cell_m, str):
        return _AREA_FAMILIES[cell_m or "lsoa"], 1
    return ("rollup_grid500_month", cell_m // 500) if cell_m % 500 == 0 else ("rollup_grid_month", cell_m // 250)


_AREA_FAMILIES = {"lsoa": "rollup_area_month", "borough": "rollup_borough_month",
                  "day_hour": "rollup_borough_day_hour"}
_MEMORY_FAMILY_OF = {source: name for name, source in _AREA_FAMILIES.items()}  # a plan's source -> its family
_DAY_HOUR_CELLS = 31 * 25 * 8  # per borough: day of month x hour (24: none) x ISO weekday (0: none)


@dataclass(frozen=True)
class _AreaCells:
    """How the area families' cells map to areas. "lsoa": cells ``0 .. len(lsoas)-1`` are the LSOAs, then one
    per borough (incidents with no LSOA known here), then one for none; "borough": one per borough, then
    none; "day_hour": ``((borough * 31 + day - 1) * 25 + hour) * 8 + isodow`` with the same boroughs."""
    lsoas: tuple[str, ...]
    boroughs: tuple[str, ...]
    codes: dict[str, tuple[str, ...]]       # level -> its codes (sorted)
    lsoa_cell_index: dict[str, np.ndarray]  # level -> per "lsoa" cell, the index into codes[level] (-1: none)

    def cells(self, family: str) -> int:
        nb = len(self.boroughs) + 1
        return {"lsoa": len(self.lsoas) + nb, "borough": nb, "day_hour": nb * _DAY_HOUR_CELLS}[family]

    def index_at(self, family: str, level: str, cell: np.ndarray) -> np.ndarray:
        """Per cell of ``family``, the index of its area at ``level`` in ``codes[level]`` (-1: none)."""
        if family == "lsoa":
            return self.lsoa_cell_index[level][cell]
        if level != "borough":
            raise ValueError(f"the {family} months have no {level}")
        borough = cell // _DAY_HOUR_CELLS if family == "day_hour" else cell
        return np.where(borough < len(self.boroughs), borough, -1)


def _area_cells(engine: Engine) -> _AreaCells:
    def compute():
        info = areas(engine)
        codes = {level: tuple(sorted(c for c, a in info.items() if a.level == level))
                 for level in ("borough", "msoa", "lsoa")}
        position = {level: {c: k for k, c in enumerate(codes[level])} for level in codes}
        lsoas, boroughs = codes["lsoa"], codes["borough"]
        index = {level: np.full(len(lsoas) + len(boroughs) + 1, -1, dtype=np.int32) for level in codes}
        for k, code in enumerate(lsoas):
            a = info[code]
            index["lsoa"][k] = k
            index["msoa"][k] = position["msoa"].get(a.parent_code, -1)
            index["borough"][k] = position["borough"].get(a.borough_code, -1)
        index["borough"][len(lsoas):len(lsoas) + len(boroughs)] = np.arange(len(boroughs))
        return _AreaCells(lsoas, boroughs, codes, index)
    return _cached(engine, "area_cells", (), compute, versioned=False)


def _month_versions(engine: Engine, family: str, months: list[date]) -> dict[date, tuple]:
    """Per month, the newest refresh that rewrote ``family`` for it (id and start; None if none)."""
    rows = _rows(engine, """
        SELECT DISTINCT ON (m) m, r.id, r.started_at
        FROM unnest(CAST(:months AS date[])) AS m
        LEFT JOIN rollup_refreshes r ON r.family = :family AND m BETWEEN r.month_from AND r.month_to
        ORDER BY m, r.id DESC""", {"months": months, "family": family})
    return {m: (i, at) for m, i, at in rows}


def _binary_copy_row(*columns: tuple[str, str]) -> np.dtype:
    """The numpy layout of one row of a binary COPY whose columns are ``(name, big-endian type)``: the field
    count, then each value after its 4-byte length (no column may be NULL)."""
    fields = [("fields", ">i2")]
    for k, (name, kind) in enumerate(columns):
        fields += [(f"l{k}", ">i4"), (name, kind)]
    return np.dtype(fields)


_COPY_ROW = _binary_copy_row(("month", ">i4"), ("supplier", ">i2"), ("category_id", ">i2"), ("theme_mask", ">i2"),
                             ("x", ">i4"), ("y", ">i4"), ("n", ">i4"))
_COPY_HEADER = 19  # PGCOPY signature, flags, header extension length
_PG_EPOCH = date(2000, 1, 1).toordinal()


# The day x hour months' cell, in SQL and in numpy (side by side: one layout), which _counts_in_memory decodes.
def _day_hour_cell_sql(borough: str, day: str, hour: str, isodow: str) -> str:
    """The cell from SQL expressions for the borough's index, the day of the month, the hour (NULL: no time of
    day, 24) and the ISO weekday (NULL: none, 0)."""
    return f"((({borough} * 31 + {day} - 1) * 25 + coalesce({hour}, 24)) * 8 + coalesce({isodow}, 0))::int4"


def _day_hour_cell(borough: np.ndarray, day: np.ndarray, hour: np.ndarray, isodow: np.ndarray) -> np.ndarray:
    """The cell from arrays: the borough's index, the day of the month, the hour (24: no time of day) and the
    ISO weekday (0: none)."""
    return (((borough * 31 + day - 1) * 25 + hour) * 8 + isodow).astype(np.int32)


def _read_grid_months(engine: Engine, family: str, per: int, cell_m: int, months: list[date]
                      ) -> dict[date, _GridMonth]:
    """``months`` of ``family`` through its visible view (as the current user), summed to ``cell_m`` cells
    of the study area (or, for an area family, with its ``_AreaCells`` cell), by binary COPY straight into
    numpy (a million rows in a fraction of a second)."""
    codes = sorted(supplier_levels(engine))
    params = {"codes": codes, "months": months}
    supplier = "array_position(CAST(%(codes)s AS text[]), supplier)::int2"
    if cell_m is None or isinstance(cell_m, str):  # an area family: the cell comes from the area codes
        family_name = cell_m or "lsoa"
        cells = _area_cells(engine)
        params["boroughs"] = list(cells.boroughs)
        borough = (f"coalesce(b.k - 1, {len(cells.boroughs)})::int4")
        joins = "LEFT JOIN unnest(CAST(%(boroughs)s AS text[])) WITH ORDINALITY AS b(code, k) ON b.code = borough_code"
        month, where = "month", "month = ANY(%(months)s)"
        if family_name == "lsoa":
            params["lsoas"] = list(cells.lsoas)
            cell = f"coalesce((l.k - 1)::int4, {len(cells.lsoas)} + {borough})"
            joins += " LEFT JOIN unnest(CAST(%(lsoas)s AS text[])) WITH ORDINALITY AS l(code, k) ON l.code = lsoa_code"
        elif family_name == "borough":
            cell = borough
        else:  # day_hour: a day range (its key's lead) first, then the months themselves
            month = "date_trunc('month', day)::date"
            params["first_day"], params["end_day"] = min(months), _add_months(max(months), 1)
            where = f"day >= %(first_day)s AND day < %(end_day)s AND {month} = ANY(%(months)s)"
            cell = _day_hour_cell_sql(borough, "extract(day FROM day)::int4", "hour", "isodow")
        sql = (f"SELECT {month}, {supplier}, category_id, theme_mask, {cell}, 0::int4, incidents "
               f"FROM {visible_view(family)} {joins} WHERE {where}")
    else:
        x = "cell_x" if per == 1 else f"floor(cell_x::float8 / {per})::int"
        y = "cell_y" if per == 1 else f"floor(cell_y::float8 / {per})::int"
        # The 500 m rollup's own cells are already one row per key; anything else is summed to the key.
        exact = family == "rollup_grid500_month" and per == 1
        sql = (f"SELECT month, {supplier}, category_id, theme_mask, "
               f"{x}, {y}, {'incidents' if exact else 'sum(incidents)::int4'} FROM {visible_view(family)} "
               f"WHERE month = ANY(%(months)s){'' if exact else ' GROUP BY 1, 2, 3, 4, 5, 6'}")
    if cell_m is None or isinstance(cell_m, str):
        # The area codes' unnest has no statistics, so the planner expects its join to multiply the rows and
        # sorts every rollup row by code for a merge join (spilling to disk); hashing the codes instead read
        # three LSOA months at 30M in 464 ms instead of 954 (EXPLAIN ANALYZE).
        rows = _copy_rows(engine, sql, params, settings=("SET LOCAL enable_mergejoin = off",))
        return _split_months(rows, rows["x"].astype(np.int32), months)
    rows = _copy_rows(engine, sql, params)
    xs, ys = (np.asarray(v, dtype=np.int64) for v in study_area_cells(engine, cell_m))
    lattice = np.full((xs.max() - xs.min() + 1, ys.max() - ys.min() + 1), -1, dtype=np.int32)
    lattice[xs - xs.min(), ys - ys.min()] = np.arange(len(xs), dtype=np.int32)
    gx, gy = rows["x"].astype(np.int64) - xs.min(), rows["y"].astype(np.int64) - ys.min()
    inside = (gx >= 0) & (gx < lattice.shape[0]) & (gy >= 0) & (gy < lattice.shape[1])
    cell = np.full(len(rows), -1, dtype=np.int32)
    cell[inside] = lattice[gx[inside], gy[inside]]
    keep = cell >= 0  # counts outside the study area are in no statistic
    return _split_months(rows[keep], cell[keep], months)


def _copy_rows(engine: Engine, sql: str, params: dict, settings: tuple[str, ...] = (),
               row_type: np.dtype = _COPY_ROW) -> np.ndarray:
    """The rows of ``sql`` (pyformat parameters; columns as ``row_type``) by binary COPY straight into numpy,
    as the current user (the transaction carries their scope: visible views, row-level security); ``settings``
    are SET LOCAL statements run first, in the same transaction."""
    return np.frombuffer(_copy_binary(engine, sql, params, settings)[_COPY_HEADER:-2], dtype=row_type)


def _copy_one_row(engine: Engine, sql: str, params: dict) -> list[memoryview | None]:
    """The one row of ``sql`` (pyformat parameters) by binary COPY, as the current user, each column's bytes as
    PostgreSQL sends them in binary (a bytea's own bytes: the text protocol would send them as hex, and a few
    megabytes of hex cost more to send and decode than the query took)."""
    data = _copy_binary(engine, sql, params)
    fields, at = int.from_bytes(data[_COPY_HEADER:_COPY_HEADER + 2], "big", signed=True), _COPY_HEADER + 2
    out: list[memoryview | None] = []
    for _ in range(fields):
        size = int.from_bytes(data[at:at + 4], "big", signed=True)
        at += 4
        out.append(None if size < 0 else data[at:at + size])
        at += max(size, 0)
    return out


def _copy_binary(engine: Engine, sql: str, params: dict, settings: tuple[str, ...] = ()) -> memoryview:
    """The whole binary COPY output of ``sql`` (see ``_copy_rows``)."""
    import io

    buffer = io.BytesIO()
    with engine.connect() as conn, conn.begin():
        cursor = conn.connection.dbapi_connection.cursor()
        for setting in settings:
            cursor.execute(setting)
        recording = getattr(_capture, "statements", None)
        if recording is not None:
            recording.append((re.sub(r"%\((\w+)\)s", r":\1", sql), params))
        cursor.copy_expert(f"COPY ({cursor.mogrify(sql, params).decode()}) TO STDOUT WITH (FORMAT binary)", buffer)
        cursor.close()
    return buffer.getbuffer()


def _split_months(rows: np.ndarray, cell: np.ndarray, months: list[date]) -> dict[date, _GridMonth]:
    """COPY rows (with each one's cell index) as one ``_GridMonth`` per month."""
    out = {}
    for month in months:
        this = rows["month"] == month.toordinal() - _PG_EPOCH
        out[month] = _GridMonth(rows["supplier"][this].astype(np.int16) - 1, rows["category_id"][this].astype(np.int16),
                                rows["theme_mask"][this].astype(np.int16), cell[this],
                                rows["n"][this].astype(np.int32))
    return out


def _grid_months_in_memory(engine: Engine, cell_m: int | None, months: list[date],
                           read_missing: bool = True, read_later: bool = True) -> dict[date, _GridMonth] | None:
    """``months`` of the grid rollup for ``cell_m`` cells, from this worker's memory, reading the ones it
    lacks (or that a refresh has rewritten since) in one query; with ``read_missing`` False, None when it
    lacks any (which, in served workers and unless ``read_later`` is False, are then read on a thread for the
    next request)."""
    cell_m = "lsoa" if cell_m is None else cell_m  # (one name for the LSOA months, one copy of them)
    family, per = _grid_family(cell_m)
    # What the visible view filters on: the finest area level the tier may see and its aggregate level (tiers
    # alike in both share the months; no scope, no rows).
    policy = db_scope.current_policy()
    seen_as = (policy.min_area_level, policy.aggregate_level) if db_scope.current_scope() is not None else None
    versions = _month_versions(engine, family, months)  # first: a refresh after this is re-read next time
    keys = {m: (_engine_key(engine), family, cell_m, seen_as, m, versions.get(m)) for m in months}
    found: dict[date, _GridMonth] = {}
    with _grid_months_lock:
        for month, key in keys.items():
            if key in _grid_months:
                _grid_months.move_to_end(key)
                found[month] = _grid_months[key]
    missing = [m for m in months if m not in found]
    if missing and not read_missing and found and len(missing) <= READ_NOW_MONTHS:
        read_missing = True     # a few months short of a period held: read them now, not every month by SQL
    if missing and not read_missing:
        if READ_MONTHS_IN_BACKGROUND and read_later:
            _read_months_later(engine, cell_m, missing, (keys[missing[0]][:4], tuple(missing)))
        return None
    if missing:
        read = _read_grid_months(engine, family, per, cell_m, missing)
        found.update(read)
        with _grid_months_lock:
            for month, arrays in read.items():
                for older in [k for k in _grid_months if k[:5] == keys[month][:5]]:
                    del _grid_months[older]  # the month as an earlier refresh left it: never asked for again
                _grid_months[keys[month]] = arrays
            total = sum(len(a) for a in _grid_months.values())
            while total > GRID_MONTH_CACHE_ROWS and len(_grid_months) > len(months):
                total -= len(_grid_months.popitem(last=False)[1])
    return {m: found[m] for m in months}  # in the order asked


def _months_of(period: Period) -> list[date]:
    months, m = [], period.start.replace(day=1)
    while m <= period.end:
        months.append(m)
        m = _add_months(m, 1)
    return months


def _months_in_memory_answer(engine: Engine, state: FilterState, period: Period) -> bool:
    """Whether the months in memory answer ``state`` (its spatial selection aside) for ``period``: the plan
    says the rollup does, so the only conditions are the months (whole), suppliers, categories and themes.
    (A view pinned "as at" a drop also restricts suppliers' months: only the SQL applies that.)"""
    return state.as_at is None and _plan(engine, state, period, {"borough"}).source == "rollup_borough_month"


def _counts_from_months_in_memory(engine: Engine, state: FilterState, cell_m: int | None, months: list[date],
                                  cells: int, read_missing: bool = True) -> np.ndarray | None:
    """Counts per month x cell (x LSOA for ``cell_m`` None) from the months in memory, the state's suppliers,
    categories and themes applied to the arrays exactly as the SQL would (None: months not held and
    ``read_missing`` False)."""
    in_memory = _grid_months_in_memory(engine, cell_m, months, read_missing)
    if in_memory is None:
        return None
    kept = _rows_kept(engine, state)
    counts = np.zeros((len(months), cells))
    for k, month in enumerate(months):
        g = in_memory[month]
        keep = kept(g)
        counts[k] = np.bincount(g.cell[keep], weights=g.incidents[keep], minlength=cells)
    return counts


def _rows_kept(engine: Engine, state: FilterState, ignore: set[str] = frozenset()
               ) -> Callable[[_GridMonth], np.ndarray]:
    """Which rows of a month in memory the state's suppliers, categories (unless ``ignore``d) and themes
    keep, as the SQL's conditions on them would: a function of the month's arrays."""
    tax = taxonomy(engine)
    codes = sorted(supplier_levels(engine))
    supplier_ok = np.isin(codes, state.suppliers) if state.suppliers else np.ones(len(codes), dtype=bool)
    category_ids = None if "categories" in ignore else tax.category_ids(state)
    category_ok = None
    if category_ids is not None:
        category_ok = np.zeros(max(tax.categories) + 1, dtype=bool)
        category_ok[[c for c in category_ids if 0 <= c < len(category_ok)]] = True

    def kept(g: _GridMonth) -> np.ndarray:
        keep = supplier_ok[g.supplier]
        if category_ok is not None:
            keep &= category_ok[g.category_id]
        if state.themes:
            keep &= (g.theme_mask & state.theme_mask) != 0
        return keep
    return kept


# Served workers (safestats serve turns this on with the warm-up) read the months a caller found missing
# but would not wait for (``read_missing`` False) on a thread, so the next request over them answers from
# memory.
READ_MONTHS_IN_BACKGROUND = False
# A request whose months are all held but a few reads those few at once instead of leaving the whole period
# to SQL: a quarter of a second an LSOA month at 30M, where the SQL over two years of LSOA months took 4.9 s
# (a period a month longer than the opening view's, for the LSOA layer).
READ_NOW_MONTHS = 3
_background_reads: set[tuple] = set()


def _read_months_later(engine: Engine, cell_m: int | None, months: list[date], key: tuple) -> None:
    """Read ``months`` of the ``cell_m`` rollup into this worker's memory on a daemon thread, as the current
    user sees them (their scope goes with the thread); one read of the same ``key`` at a time."""
    with _grid_months_lock:
        if key in _background_reads:
            return
        _background_reads.add(key)
    context = contextvars.copy_context()

    def read():
        try:
            context.run(_grid_months_in_memory, engine, cell_m, months)
        except Exception:  # noqa: BLE001 - the SQL answered already; the next request tries again
            logging.getLogger("safestats.warm").warning("reading rollup months failed", exc_info=True)
        finally:
            with _grid_months_lock:
                _background_reads.discard(key)

    threading.Thread(target=read, name="safestats-rollup-months", daemon=True).start()


def wait_for_background_reads(timeout_s: float = 600.0) -> None:
    """Block until this worker's background month reads are done (benchmarks and tests)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with _grid_months_lock:
            if not _background_reads:
                return
        time.sleep(0.05)


def _lsoa_codes(engine: Engine) -> tuple[str, ...]:
    """Every LSOA code in ``areas`` (all regions loaded), sorted: the first cells of the LSOA months."""
    return _area_cells(engine).lsoas


def _lsoa_counts_in_memory(engine: Engine, state: FilterState, periods: list[Period],
                           read_missing: bool = True) -> list[np.ndarray] | None:
    """Per period, the count per LSOA (``_lsoa_codes`` order) from the LSOA months in memory, as the LSOA
    choropleth's SQL counts them (every area, whatever the selection); None when only that SQL can answer
    (part months, times of day, a pinned view) or, with ``read_missing`` False, when a month is not held.
    Disclosure control is the caller's."""
    every_area = state.without_spatial_selection()
    if not all(_months_in_memory_answer(engine, every_area, period) for period in periods):
        return None
    held = [_months_with_data(engine, every_area, period) for period in periods]
    months = sorted({m for period_months in held for m in period_months})
    cells = _area_cells(engine)
    counts = _counts_from_months_in_memory(engine, every_area, None, months, cells.cells("lsoa"), read_missing)
    if counts is None:
        return None
    row = {m: k for k, m in enumerate(months)}
    return [counts[[row[m] for m in period_months]].sum(axis=0)[:len(cells.lsoas)] for period_months in held]


# ---- panels from the months in memory ----------------------------------------------------------------------
# A panel whose plan reads the borough, LSOA or day x hour rollup is answered from those months held in this
# worker's memory (numpy arrays, as the hotspot layers' grid months are) when it holds them: the plan's own
# conditions applied to the arrays as its SQL applies them (tests compare the two on random filters). A
# filter change then costs a few milliseconds of numpy per panel instead of a query over a year of rollup
# rows. The borough months are small: a worker reads any it lacks at once. LSOA and day x hour months are
# larger: a period not held is left to the SQL, and served workers read its months on a thread.

PANELS_FROM_MEMORY = True  # tests turn it off to compare with the SQL
_READ_AT_ONCE = frozenset({"borough"})


def _panel_months(engine: Engine, state: FilterState, source: str, months: list[date], day_hour: bool = True
                  ) -> tuple[str, dict[date, _GridMonth]] | None:
    """(family, its ``months`` in memory) for a panel whose plan reads ``source``; None when only SQL
    answers: another source, a pinned view, no user, or months not held (read on a thread if served, unless
    they are more than two years of a large family: the time series of an area reads its few rows by SQL,
    where a worker would read millions of rollup rows to hold them). A drawn polygon's months are by day x
    hour only when the panel needs them so (``day_hour``, ``_needs_day_hour``)."""
    family = _MEMORY_FAMILY_OF.get(source)
    policy = db_scope.current_policy()
    if not PANELS_FROM_MEMORY or state.as_at is not None or db_scope.current_scope() is None or policy is None:
        return None
    if source == "incidents" and _polygon_only(state):
        return ("day_hour" if day_hour else "borough"), _polygon_months(engine, state.polygon, months, day_hour)
    if family is None or (family == "lsoa" and not policy.may_break_down_to("lsoa")):
        return None
    held = _grid_months_in_memory(engine, family, months, read_missing=family in _READ_AT_ONCE,
                                  read_later=len(months) <= 2 * CURRENT_PERIOD_MONTHS)
    return None if held is None else (family, held)


# A drawn polygon's incidents in this worker's memory (a few polygons; keyed by the data version and scope as
# the panels), in two forms, each read when a panel first needs it, and kept for later filter changes that
# keep the polygon (categories, dates, hours, a borough):
# * by month x borough (the borough months' layout), every month: the whole-month panels (headline, time
#   series, categories, top areas, a borough map). The 250 m cells wholly inside the polygon give most of it
#   (a cell inside holds only points inside), counted from their packed points' groups (category x themes,
#   db/sql/cell_points_v2.sql, ``_cell_groups``); only the points of the cells on its edge are tested, from
#   the packed points of those cells (db/sql/cell_points_v1.sql, ``_cell_points``).
#   At 30M a central polygon of a million incidents took 1.2 s from raw points (bench/README.md).
# * by day x hour x weekday x borough (the day x hour months' layout), only the months asked for: the hour
#   x weekday grid, and every panel under a time of day, a weekday or a day-level range. The packed points of
#   every cell it touches (a year of the central polygon from raw points was 215-280 ms of two cores).
POLYGON_MONTHS_KEPT = 8
POLYGON_CELL_M = 250                # the grid rollup's cells (rollup_grid_month)
POLYGON_CELLS_MAX = 60_000          # more cells in its box (London's is ~43,000): counted from raw points only


@dataclass
class _PolygonHeld:
    by_month: dict[date, _GridMonth] | None = None              # every month ("borough" layout)
    day_hour: dict[date, _GridMonth] = field(default_factory=dict)  # the months read so far ("day_hour")


_polygon_months_held: "OrderedDict[tuple, _PolygonHeld]" = OrderedDict()
_EMPTY_GRID_MONTH = _GridMonth(*(np.zeros(0, dtype=t) for t in (np.int16, np.int16, np.int16, np.int32, np.int32)))


def _polygon_only(state: FilterState) -> bool:
    """Whether the drawn polygon is the only filter that needs the raw points (not a finer area, a picked
    cell or a location precision): its months in memory answer then."""
    return (state.polygon is not None and state.hotspot_cell is None and state.located_at_least is None
            and (state.selected_area is None or state.selected_area[0] == "borough"))


def _polygon_months(engine: Engine, ring: tuple, months: list[date], day_hour: bool) -> dict[date, _GridMonth]:
    """``months`` of the polygon's incidents the current user may see as records: by day x hour (the
    "day_hour" layout) when ``day_hour``, otherwise by month x borough (the "borough" layout)."""
    key = (_engine_key(engine), data_version(engine), db_scope.current_scope()[1:], tuple(ring))
    with _grid_months_lock:
        held = _polygon_months_held.get(key)
        if held is None:
            held = _polygon_months_held[key] = _PolygonHeld()
            while len(_polygon_months_held) > POLYGON_MONTHS_KEPT:
                _polygon_months_held.popitem(last=False)
        _polygon_months_held.move_to_end(key)
    # The panels of a newly drawn polygon all ask at once: one of them reads each form, the others wait.
    # The other workers of the host ask at the same moment too: one of them reads, the rest load its result.
    if not day_hour:
        if held.by_month is None:
            by_month_key = ("polygon months",) + key
            held.by_month = _single_flight.run(by_month_key, lambda: held.by_month or _months_read_once(
                by_month_key, lambda: _read_polygon_by_month(engine, ring)))
        found = held.by_month
    else:
        missing = [m for m in months if m not in held.day_hour]
        if missing:
            day_hour_key = ("polygon day hour",) + key + tuple(missing)
            read = _single_flight.run(day_hour_key, lambda: _months_read_once(
                day_hour_key, lambda: _read_polygon_day_hour(engine, ring, missing)))
            with _grid_months_lock:
                held.day_hour.update(read)
        found = held.day_hour
    return {m: found.get(m, _EMPTY_GRID_MONTH) for m in months}


_GRID_MONTH_FIELDS = ("supplier", "category_id", "theme_mask", "cell", "incidents")


def _months_read_once(key: tuple, read: Callable[[], dict[date, _GridMonth]]) -> dict[date, _GridMonth]:
    """``read()``'s months, read by one web worker of this host at a time (safestats.shared_reads): as arrays,
    every month's rows one after another, with each month's day number and row count."""
    def read_as_arrays() -> dict[str, np.ndarray]:
        months = read()
        order = sorted(months)
        arrays = {"month": np.array([m.toordinal() for m in order], dtype=np.int64),
                  "rows": np.array([len(months[m]) for m in order], dtype=np.int64)}
        for name in _GRID_MONTH_FIELDS:
            arrays[name] = np.concatenate([getattr(months[m], name) for m in order]) if order else \
                getattr(_EMPTY_GRID_MONTH, name)
        return arrays

    arrays = shared_reads.read_once(key, read_as_arrays)
    ends = np.cumsum(arrays["rows"])
    return {date.fromordinal(int(day)): _GridMonth(*(arrays[name][end - rows:end] for name in _GRID_MONTH_FIELDS))
            for day, rows, end in zip(arrays["month"], arrays["rows"], ends)}


_POLYGON_PARAM = _POLYGON_BNG.replace(":polygon_wkt", "%(polygon_wkt)s")
# The first instant of each London month from 1900 to 2100, worked out once a query: width_bucket's
# thresholds, bucket m being the m-th month from 1900-01.
_MONTH_BOUNDS_FROM, _MONTH_BOUNDS_COUNT = "1900-01-01", 200 * 12 + 1
_LONDON_MONTH_BOUNDS_SQL = (f"ARRAY(SELECT d::timestamp AT TIME ZONE 'Europe/London' FROM generate_series("
                            f"DATE '{_MONTH_BOUNDS_FROM}', DATE '{_MONTH_BOUNDS_FROM}' + "
                            f"{_MONTH_BOUNDS_COUNT - 1} * interval '1 month', interval '1 month') AS d)")


def _london_month_bucket(instant: str) -> str:
    """SQL: the number of ``instant``'s London month among the bounds (grouped by, then turned into a date by
    ``_london_month_of_bucket``): as ``_LONDON_MONTH`` but a binary search, not a time zone conversion."""
    return f"width_bucket({instant}, {_LONDON_MONTH_BOUNDS_SQL})"


def _london_month_of_bucket(bucket: str, instant: str) -> str:
    """SQL: the first day of month number ``bucket``; outside 1900-2100, ``instant``'s month converted."""
    return (f"CASE WHEN {bucket} BETWEEN 1 AND {_MONTH_BOUNDS_COUNT - 1} "
            f"THEN DATE '{_MONTH_BOUNDS_FROM}' + ({bucket} - 1) * interval '1 month' "
            f"ELSE date_trunc('month', {instant} AT TIME ZONE 'Europe/London') END::date")


_THEME_MASK_SQL = ("safestats_theme_mask(theme_weapon, theme_dava, theme_young_victim, theme_night_time_economy, "
                   "theme_arson)")


# The polygon's raw points by UTC hour: the hour is one division of the stored instant, where London's month,
# day, hour and weekday of each point were four time-zone conversions (290 ms of PostgreSQL for a year of a
# million-point polygon at 30M, 161 ms without them); the few thousand distinct hours are converted here.
_HOUR_COPY_ROW = _binary_copy_row(("hour", ">i4"), ("supplier", ">i2"), ("category_id", ">i2"),
                                  ("theme_mask", ">i2"), ("borough", ">i4"), ("precision", ">i2"), ("n", ">i4"))


def _read_polygon_day_hour(engine: Engine, ring: tuple, months: list[date]) -> dict[date, _GridMonth]:
    """The polygon's points of ``months`` by month x day x hour x weekday x borough (the day x hour months'
    cells, as ``_day_hour_cell`` and the rollup's time-precision rules make them), as the current user may
    see them as records: from the packed points of the cells it touches (``_cell_points``), or, for a polygon
    over more cells than ``POLYGON_CELLS_MAX``, from the raw points."""
    found = _polygon_cells(engine, ring)
    if found is not None:
        points = _cell_points(engine, ring, *found, months=sorted(months))
        rows = np.zeros(len(points), dtype=_HOUR_COPY_ROW)
        for name in ("hour", "supplier", "category_id", "theme_mask", "borough", "precision"):
            rows[name] = points[name]
        rows["n"] = 1
        return _day_hour_months(rows, months)
    cells = _area_cells(engine)
    runs: list[tuple[date, date]] = []  # [first month, the month after) of each run of consecutive months
    for month in sorted(months):
        if runs and runs[-1][1] == month:
            runs[-1] = (runs[-1][0], _add_months(month, 1))
        else:
            runs.append((month, _add_months(month, 1)))
    within = " OR ".join(
        f"occurred_at >= (CAST(%(since{k})s AS date)::timestamp AT TIME ZONE 'Europe/London') AND "
        f"occurred_at < (CAST(%(until{k})s AS date)::timestamp AT TIME ZONE 'Europe/London')" for k in range(len(runs)))
    sql = f"""
        SELECT u.hour, array_position(CAST(%(codes)s AS text[]), u.supplier)::int2, u.category_id, u.theme_mask,
               coalesce(b.k - 1, {len(cells.boroughs)})::int4, u.precision, u.n
        FROM (SELECT floor(date_part('epoch', occurred_at) / 3600)::int4 AS hour, supplier, category_id,
                     {_THEME_MASK_SQL} AS theme_mask, borough_code,
                     (CASE time_precision WHEN 'minute' THEN 0 WHEN 'day' THEN 1 ELSE 2 END)::int2 AS precision,
                     count(*)::int4 AS n
              FROM incidents
              WHERE geom && {_POLYGON_PARAM} AND ST_Intersects(geom, {_POLYGON_PARAM}) AND ({within})
              GROUP BY 1, 2, 3, 4, 5, 6) AS u
        LEFT JOIN unnest(CAST(%(boroughs)s AS text[])) WITH ORDINALITY AS b(code, k) ON b.code = u.borough_code"""
    params = {"codes": sorted(supplier_levels(engine)), "boroughs": list(cells.boroughs),
              "polygon_wkt": _polygon_wkt(ring)}
    for k, (since, until) in enumerate(runs):
        params[f"since{k}"], params[f"until{k}"] = since, until
    # (Hashing the groups instead of sorting the points: a third faster for a year of a million-point polygon.)
    rows = _copy_rows(engine, sql, params, settings=("SET LOCAL enable_sort = off",), row_type=_HOUR_COPY_ROW)
    return _day_hour_months(rows, months)


def _london_offset(utc_hour: int) -> int:
    return datetime.fromtimestamp(utc_hour * 3600, _LONDON).utcoffset() // timedelta(hours=1)


def _london_offsets(hours: np.ndarray) -> np.ndarray:
    """London's offset from UTC in whole hours at each of the distinct UTC ``hours`` (since 1970): asked of the
    time zone at each UTC day's first and last hour, and hour by hour only on days where the two differ (the
    clocks change at 01:00 UTC)."""
    days = np.unique(hours // 24)
    first = np.array([_london_offset(int(d) * 24) for d in days], dtype=np.int64)
    last = np.array([_london_offset(int(d) * 24 + 23) for d in days], dtype=np.int64)
    offsets = first[np.searchsorted(days, hours // 24)]
    for d in days[first != last]:
        on_day = hours // 24 == d
        offsets[on_day] = [_london_offset(int(h)) for h in hours[on_day]]
    return offsets


def _day_hour_months(rows: np.ndarray, months: list[date]) -> dict[date, _GridMonth]:
    """Rows of ``_HOUR_COPY_ROW`` (UTC hour, 1-based supplier, category, themes, borough, time precision, count)
    as the day x hour months: London's month, day, hour and weekday of each distinct UTC hour worked out once."""
    utc_hour = rows["hour"].astype(np.int64)
    first = int(utc_hour.min()) if len(rows) else 0
    seen = np.zeros(int(utc_hour.max()) - first + 1 if len(rows) else 0, dtype=bool)
    seen[utc_hour - first] = True  # (the distinct hours without sorting the rows: a year is ~8,800 of them)
    hours = np.flatnonzero(seen) + first
    at = np.zeros(len(seen), dtype=np.int64)
    at[hours - first] = np.arange(len(hours))
    which = at[utc_hour - first]
    offsets = _london_offsets(hours)
    local = (hours + offsets).astype("datetime64[h]")
    local_day = local.astype("datetime64[D]")
    local_month = local.astype("datetime64[M]")
    month = (local_month.astype("datetime64[D]") - np.datetime64("2000-01-01")).astype(np.int32)[which]
    day = ((local_day - local_month.astype("datetime64[D]")).astype(np.int64) + 1)[which]
    hour = ((local - local_day.astype("datetime64[h]")).astype(np.int64))[which]
    isodow = ((local_day.astype(np.int64) + 3) % 7 + 1)[which]  # (1970-01-01 was a Thursday: 4)
    precision = rows["precision"].astype(np.int64)
    hour = np.where(precision == 0, hour, 24)       # a time of day only to the minute
    isodow = np.where(precision == 2, 0, isodow)    # a weekday unless only the month is known
    cell = _day_hour_cell(rows["borough"].astype(np.int64), day, hour, isodow)
    coded = np.empty(len(rows), dtype=[("month", np.int32), ("supplier", np.int16), ("category_id", np.int16),
                                       ("theme_mask", np.int16), ("n", np.int32)])
    coded["month"], coded["n"] = month, rows["n"]
    for name in ("supplier", "category_id", "theme_mask"):
        coded[name] = rows[name]
    return _split_months(coded, cell, sorted(months))


# A polygon's points from incident_cell_points (db/sql/cell_points_v1.sql): each cell's points of a month packed
# per supplier, borough and access level, read through the web role's view (what row-level security keeps of
# incidents) as one row of concatenated columns, so that unpacking them is a few numpy calls. Only the edge
# cells' points are tested against the polygon (shapely's intersects, GEOS, on the very coordinates PostGIS's
# ST_Intersects would test), and only their coordinates are sent.
_CELL_POINT = np.dtype([("month", np.int32), ("supplier", np.int16), ("borough", np.int32), ("hour", np.int32),
                        ("category_id", np.int16), ("theme_mask", np.int16), ("precision", np.int16)])


# The rows of incident_cell_points_visible in cells %(cx)s, %(cy)s (each with its %(edge)s flag) as r, with b.k
# their borough's 1-based place in %(boroughs)s; and each row's month, supplier and borough, packed as the
# queries below begin. (LATERAL ... OFFSET 0: one index scan per cell; as a join the planner may read the whole
# table.)
_CELL_ROWS_FROM = """
        FROM unnest(CAST(%(cx)s AS int4[]), CAST(%(cy)s AS int4[]), CAST(%(edge)s AS int2[])) AS c(x, y, edge),
             LATERAL (SELECT p.*, c.edge FROM incident_cell_points_visible p
                      WHERE p.cell_x = c.x AND p.cell_y = c.y {in_months} OFFSET 0) AS r
        LEFT JOIN unnest(CAST(%(boroughs)s AS text[])) WITH ORDINALITY AS b(code, k) ON b.code = r.borough_code"""
_CELL_ROW_KEYS = """string_agg(int4send(r.month - DATE '2000-01-01'), ''::bytea),
               string_agg(int2send(array_position(CAST(%(codes)s AS text[]), r.supplier)::int2), ''::bytea),
               string_agg(int2send(coalesce(b.k - 1, {n_boroughs})::int2), ''::bytea)"""


def _cell_rows(engine: Engine, columns: str, inside: list[tuple[int, int]], edge: list[tuple[int, int]],
               months: list[date] | None, extra: dict | None = None) -> tuple[list, np.ndarray]:
    """One row of ``_CELL_ROW_KEYS`` and then ``columns`` (each aggregating r, the view's rows of the ``inside``
    and ``edge`` cells in ``months``, every month when None); the row's fields, and each view row's month,
    supplier and borough index as _CELL_POINT fields."""
    cells = _area_cells(engine)
    in_months = "" if months is None else "AND p.month = ANY(CAST(%(months)s AS date[]))"
    row = _copy_one_row(engine, f"SELECT {_CELL_ROW_KEYS.format(n_boroughs=len(cells.boroughs))}, {columns}"
                                f"{_CELL_ROWS_FROM.format(in_months=in_months)}",
                        {"codes": sorted(supplier_levels(engine)), "boroughs": list(cells.boroughs), "months": months,
                         "cx": [x for x, _ in inside + edge], "cy": [y for _, y in inside + edge],
                         "edge": [0] * len(inside) + [1] * len(edge), **(extra or {})})
    keys = np.zeros(0 if row[0] is None else len(row[0]) // 4, dtype=_CELL_POINT)
    if row[0] is not None:
        keys["month"] = np.frombuffer(row[0], dtype=">i4")
        keys["supplier"] = np.frombuffer(row[1], dtype=">i2")
        keys["borough"] = np.frombuffer(row[2], dtype=">i2")
    return row[3:], keys


def _cell_points(engine: Engine, ring: tuple, inside: list[tuple[int, int]], edge: list[tuple[int, int]],
                 months: list[date] | None = None, hours: bool = True) -> np.ndarray:
    """The points (``_CELL_POINT``: month as days since 2000-01-01, the supplier 1-based as the SQL reads give
    it, borough index) the current user may see as records in the polygon's ``inside`` and ``edge`` cells, of
    ``months`` (every month when None), the edge cells' kept only where they intersect the polygon. Without
    ``hours`` their hour is left 0 and not read (a sixth of the bytes a whole-month read would send)."""
    row, keys = _cell_rows(engine, f"""
               string_agg(int2send(r.edge), ''::bytea), string_agg(int4send(r.points), ''::bytea),
               {"string_agg(r.hours, ''::bytea)" if hours else "NULL::bytea"},
               string_agg(r.categories, ''::bytea), string_agg(r.codes, ''::bytea),
               string_agg(r.xs, ''::bytea) FILTER (WHERE r.edge = 1),
               string_agg(r.ys, ''::bytea) FILTER (WHERE r.edge = 1),
               (SELECT ST_AsBinary({_POLYGON_PARAM}))""", inside, edge, months, {"polygon_wkt": _polygon_wkt(ring)})
    if not len(keys):
        return keys
    per_row = np.frombuffer(row[1], dtype=">i4")
    out = np.repeat(keys, per_row)
    if hours:
        out["hour"] = np.frombuffer(row[2], dtype=">i4")
    out["category_id"] = np.frombuffer(row[3], dtype=">i2")
    code = np.frombuffer(row[4], dtype=">i2")
    out["theme_mask"], out["precision"] = code // 4, code % 4
    on_edge = np.repeat(np.frombuffer(row[0], dtype=">i2"), per_row) == 1
    if not on_edge.any():
        return out
    polygon = shapely.from_wkb(bytes(row[7]))
    shapely.prepare(polygon)
    keep = ~on_edge
    keep[on_edge] = shapely.intersects_xy(polygon, np.frombuffer(row[5], dtype=">f8"),
                                          np.frombuffer(row[6], dtype=">f8"))  # (the edge cells' only)
    return out[keep]


def _cell_groups(engine: Engine, cells: list[tuple[int, int]]) -> np.ndarray:
    """The records the current user may see in ``cells`` (a polygon's cells wholly inside it), every month,
    counted by month x supplier x category x themes x borough as ``_COPY_ROW`` rows (the borough in "x"), from
    the cell points' groups (db/sql/cell_points_v2.sql): a few bytes a group, not a point."""
    if not cells:
        return np.zeros(0, dtype=_COPY_ROW)
    row, keys = _cell_rows(engine, """string_agg(int4send(length(r.groups) / 4), ''::bytea),
               string_agg(r.groups, ''::bytea), string_agg(r.group_counts, ''::bytea)""", cells, [], None)
    if not len(keys):
        return np.zeros(0, dtype=_COPY_ROW)
    groups = np.repeat(keys, np.frombuffer(row[0], dtype=">i4"))
    packed = np.frombuffer(row[1], dtype=">i4")
    groups["category_id"], groups["theme_mask"] = packed // 64, packed % 64
    return _counted_by_month(groups, np.frombuffer(row[2], dtype=">i4"))


def _polygon_cells(engine: Engine, ring: tuple) -> tuple[list[tuple[int, int]], list[tuple[int, int]]] | None:
    """(the grid rollup's cells wholly inside the polygon, the cells it only crosses) as (cell_x, cell_y);
    None when its box holds more than ``POLYGON_CELLS_MAX`` cells."""
    polygon = _POLYGON_BNG
    size = POLYGON_CELL_M
    box = _rows(engine, f"""
        SELECT floor(ST_XMin(g) / {size})::int, floor(ST_XMax(g) / {size})::int,
               floor(ST_YMin(g) / {size})::int, floor(ST_YMax(g) / {size})::int
        FROM (SELECT {polygon} AS g) p""", {"polygon_wkt": _polygon_wkt(ring)})[0]
    if box[0] is None or (box[1] - box[0] + 1) * (box[3] - box[2] + 1) > POLYGON_CELLS_MAX:
        return None
    rows = _rows(engine, f"""
        SELECT x, y, ST_Covers(p.g, e) FROM (SELECT {polygon} AS g) p,
               generate_series(:x0, :x1) x, generate_series(:y0, :y1) y,
               ST_MakeEnvelope(x * {size}, y * {size}, (x + 1) * {size}, (y + 1) * {size}, 27700) e
        WHERE ST_Intersects(p.g, e)""",
                 {"polygon_wkt": _polygon_wkt(ring), "x0": box[0], "x1": box[1], "y0": box[2], "y1": box[3]})
    return [(x, y) for x, y, inside in rows if inside], [(x, y) for x, y, inside in rows if not inside]


def _read_polygon_by_month(engine: Engine, ring: tuple) -> dict[date, _GridMonth]:
    """The polygon's incidents the current user may see as records, by month x supplier x category x themes x
    borough: the cell points' groups of the cells wholly inside it (``_cell_groups``) plus the points of the
    cells on its edge that fall in it (``_cell_points``); for a polygon over more cells than
    ``POLYGON_CELLS_MAX``, its raw points."""
    found = _polygon_cells(engine, ring)
    inside, edge = found if found is not None else ([], [])
    # The edge cells' points are read on a second connection while this one reads the inside cells (each is a
    # backend on a core: 230 -> 160 ms for the central polygon at 30M); a polygon's read is one per host at a
    # time (_polygon_months), so this is at most one extra connection per newly drawn polygon.
    edge_points = None
    if edge:
        edge_points = _polygon_edge_reader().submit(contextvars.copy_context().run, _cell_points, engine, ring, [],
                                                  edge, hours=False)
    if found is None:
        # Each point's London month as its place among the months' first instants (a binary search): the time
        # zone conversion per point was a quarter of this read. Out of that range, the conversion, once a group.
        cells = _area_cells(engine)
        rows = _copy_rows(engine, f"""
            SELECT u.month, array_position(CAST(%(codes)s AS text[]), u.supplier)::int2, u.category_id,
                   u.theme_mask, coalesce(b.k - 1, {len(cells.boroughs)})::int4, 0::int4, u.n
            FROM (SELECT {_london_month_of_bucket("m", "any_at")}, supplier, category_id, theme_mask, borough_code, n
                  FROM (SELECT {_london_month_bucket("occurred_at")} AS m, supplier, category_id,
                               {_THEME_MASK_SQL} AS theme_mask, coalesce(borough_code, '') AS borough_code,
                               count(*)::int4 AS n, min(occurred_at) AS any_at
                        FROM incidents
                        WHERE geom && {_POLYGON_PARAM} AND ST_Intersects(geom, {_POLYGON_PARAM})
                        GROUP BY 1, 2, 3, 4, 5) AS raw) AS u(month, supplier, category_id, theme_mask, borough_code, n)
            LEFT JOIN unnest(CAST(%(boroughs)s AS text[])) WITH ORDINALITY AS b(code, k) ON b.code = u.borough_code""",
                          {"codes": sorted(supplier_levels(engine)), "boroughs": list(cells.boroughs),
                           "polygon_wkt": _polygon_wkt(ring)},
                          settings=("SET LOCAL enable_sort = off",))  # (hashed groups)
    else:
        rows = _cell_groups(engine, inside)
    if edge_points is not None:
        rows = np.concatenate([rows, _counted_by_month(edge_points.result())])
    months = sorted({date.fromordinal(int(d) + _PG_EPOCH) for d in np.unique(rows["month"])})
    return _split_months(rows, rows["x"].astype(np.int32), months)


_polygon_edge_readers: dict[int, ThreadPoolExecutor] = {}


def _polygon_edge_reader() -> ThreadPoolExecutor:
    """This process's threads for polygon edge reads (per process id: a forked web worker starts its own)."""
    with _grid_months_lock:
        pid = os.getpid()
        if pid not in _polygon_edge_readers:
            _polygon_edge_readers.clear()
            _polygon_edge_readers[pid] = ThreadPoolExecutor(max_workers=2, thread_name_prefix="safestats-polygon-edge")
        return _polygon_edge_readers[pid]


def _counted_by_month(points: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``_CELL_POINT`` points counted by month x supplier x category x themes x borough, as ``_COPY_ROW`` rows
    (the borough in "x") like the SQL's; with ``weights``, each point counts as its weight (a group of points)."""
    first = int(points["month"].min()) if len(points) else 0
    key = ((((points["month"].astype(np.int64) - first) * 256 + points["supplier"]) * 65536
            + points["category_id"]) * 64 + points["theme_mask"]) * 65536 + points["borough"]
    if weights is None:
        groups, n = np.unique(key, return_counts=True)
    else:
        groups, where = np.unique(key, return_inverse=True)
        n = np.bincount(where, weights=weights, minlength=len(groups))
    rows = np.zeros(len(groups), dtype=_COPY_ROW)
    rows["x"], groups = groups % 65536, groups // 65536
    rows["theme_mask"], groups = groups % 64, groups // 64
    rows["category_id"], groups = groups % 65536, groups // 65536
    rows["supplier"], groups = groups % 256, groups // 256
    rows["month"], rows["n"] = groups + first, n
    return rows


def _needs_day_hour(state: FilterState, periods: list, group: str, ignore: set[str]) -> bool:
    """Whether counts grouped by ``group`` over ``periods`` (each a ``Period`` or a list of whole months) need
    the day, hour or weekday of each incident: the hour x weekday grouping, a time of day or weekday filter
    not ``ignore``d, or a period of part months."""
    return (group == "supplier_hour_day" or ("time" not in ignore and (state.hours is not None or bool(state.days)))
            or any(isinstance(p, Period) and not p.is_whole_months() for p in periods))


def _counts_in_memory(engine: Engine, state: FilterState, source: str, period: Period | list[date], group: str,
                      level: str | None = None, ignore: set[str] = frozenset()) -> np.ndarray | None:
    """Counts grouped by ``group`` — "total", "category" (by id), "area" (by index into the area codes at
    ``level``) or "supplier_hour_day" (``(supplier * 8 + isodow) * 25 + hour``, 0 and 24 for none) — over
    ``period`` (or, per month, over a list of whole months) from the months in memory of the plan's
    ``source``, the state's filters but ``ignore``d ones applied as ``_plan`` applies them. None: only the
    SQL can answer."""
    if period is None:  # (no data and no dates: the SQL's empty answer)
        return None
    per_month = isinstance(period, list)
    months = period if per_month else _months_with_data(engine, state, period)
    found = _panel_months(engine, state, source, months, _needs_day_hour(state, [period], group, ignore))
    if found is None:
        return None
    family, held = found
    if family != "lsoa" and ((group == "area" and level != "borough") or
                             (state.selected_area and "area" not in ignore and state.selected_area[0] != "borough")):
        return None  # (the borough and day x hour months know no finer area)
    cells, kept = _area_cells(engine), _rows_kept(engine, state, ignore)
    area = None if "area" in ignore else state.selected_area
    if area is not None:
        area_index = cells.codes[area[0]].index(area[1]) if area[1] in cells.codes[area[0]] else -2
    size = {"total": 1, "category": max(taxonomy(engine).categories) + 1,
            "supplier_hour_day": len(supplier_levels(engine)) * 200,
            "area": len(cells.codes[level]) if level else 0}[group]
    out = np.zeros((len(months), size))
    for k, month in enumerate(months):
        g = held[month]
        keep = kept(g)
        if area is not None:
            keep &= cells.index_at(family, area[0], g.cell) == area_index
        if family == "day_hour":
            isodow, hour, day = g.cell % 8, g.cell // 8 % 25, g.cell // 200 % 31 + 1
            if not per_month:  # the period's days of this month (a day-level range)
                first = period.start.day if period.start >= month else 1
                last = period.end.day if period.end < _add_months(month, 1) else 31
                keep &= (day >= first) & (day <= last)
            if "time" not in ignore and state.hours is not None:
                first_hour, last_hour = state.hours
                within = ((hour >= first_hour) & (hour <= last_hour) if first_hour <= last_hour
                          else (hour >= first_hour) | (hour <= last_hour))
                keep &= within & (hour < 24)  # no time of day: the SQL's NULL hour passes no hour filter
            if "time" not in ignore and state.days:
                keep &= np.isin(isodow, state.days)
        if group == "total":
            key = np.zeros(len(g), dtype=np.int32)
        elif group == "category":
            key = g.category_id
        elif group == "area":
            key = cells.index_at(family, level, g.cell)
            keep &= key >= 0  # incidents with no area at that level are in no area's count
        else:
            key = (g.supplier.astype(np.int32) * 8 + isodow) * 25 + hour
        out[k] = np.bincount(key[keep], weights=g.incidents[keep], minlength=size)
    return out if per_month else out.sum(axis=0)


def _within_data_span(engine: Engine, state: FilterState, period: Period,
                      through_this_month: bool = False) -> Period | None:
    """The part of ``period`` inside the data span (None: none of it). Days outside count nothing, and a
    forged range of centuries would otherwise be thousands of months to hold and loop over. With
    ``through_this_month``, the span runs to the later of its last month and this month, and ignores a pin:
    the months that hold incidents or may yet (a layer's months of a period reaching past the data count
    zeros there)."""
    span = data_span(engine, None if through_this_month else state)
    if span is None:
        return None
    last = span[1]
    if through_this_month:
        last = max(last, _month_end(datetime.now(_LONDON).date()))
    start, end = max(period.start, span[0]), min(period.end, last)
    return Period(start, end) if start <= end else None


def _months_with_data(engine: Engine, state: FilterState, period: Period) -> list[date]:
    """The months of ``period`` within the data span."""
    within = _within_data_span(engine, state, period)
    return _months_of(within) if within else []


def _periods_in_memory(engine: Engine, state: FilterState, source: str, periods, group: str,
                       level: str | None = None, ignore: set[str] = frozenset()) -> list[np.ndarray] | None:
    """``_counts_in_memory`` for each of ``periods``; None unless memory answers them all."""
    every_month = sorted({m for period in periods for m in _months_with_data(engine, state, period)})
    day_hour = _needs_day_hour(state, periods, group, ignore)
    if _panel_months(engine, state, source, every_month, day_hour) is None:  # (one read for them all)
        return None
    out = []
    for period in periods:
        counts = _counts_in_memory(engine, state, source, period, group, level, ignore)
        if counts is None:
            return None
        out.append(counts)
    return out


@_for_user
def study_counts_by_month(engine: Engine, state: FilterState, cell_m: int, period: Period | None = None,
                          user=None) -> tuple[list[date], np.ndarray]:
    """(London months of ``period``, default the current period; counts per month x study-area cell, in
    ``study_area_cells`` order) under the state's filters. From the grid months in memory when the rollup
    answers the filter (no area, whole months, no time of day); otherwise as ``grid_counts_by_month`` does
    (raw points). Health data under disclosure control has no cells: zeros. Refused below the tier's
    finest level."""
    state = _scoped(engine, state, user)
    check_level("lsoa", user)
    controlled = _controlled(engine, state, user)
    if cell_m % 250:
        raise ValueError("cell size must be a multiple of 250 m")
    period = period or current_period(engine, state)

    def compute():
        cells = len(study_area_cells(engine, cell_m)[0])
        within = period and _within_data_span(engine, state, period, through_this_month=True)
        if within is None:
            return [], np.zeros((0, cells))
        months = _months_of(within)
        counts = np.zeros((len(months), cells))
        if controlled:
            return months, counts
        if state.selected_area is None and _months_in_memory_answer(engine, state, within):
            return months, _counts_from_months_in_memory(engine, state, cell_m, months, cells)
        index = {cell: k for k, cell in enumerate(zip(*study_area_cells(engine, cell_m)))}
        position = {m: k for k, m in enumerate(months)}
        for month, by_cell in grid_counts_by_month(engine, state, cell_m, within, user).items():
            for cell, n in by_cell.items():
                if cell in index and month in position:
                    counts[position[month], index[cell]] += n
        return months, counts
    return _cached(engine, "study_counts_by_month", _key(state, cell_m, period), compute)


def warm_hotspot_months(engine: Engine, log: Callable[[str], None] | None = None) -> int:
    """Read into this worker's memory the months the opening view's panels and hotspot layers use: the 500 m
    grid's for the current period and the one the comparison layer sets against it, the LSOA and day x hour
    rollups' for the same two (the maps' and charts' current and previous periods), and the borough
    rollup's for the whole span (the time series). A new web worker then answers its first filter changes
    from memory instead of reading a year or two of rollup rows (seconds at 10 million incidents). Returns
    the grid months read or found."""
    from types import SimpleNamespace

    # As the first tier allowed the layers sees the rollups (the analysts): tiers that see them alike share
    # those months (today every such tier); a tier seeing them otherwise reads its own on first use, as
    # warming every way would multiply each worker's start-up reads and memory.
    tier = next((t for t, policy in access.TIER_POLICIES.items() if policy.may_break_down_to("lsoa")), None)
    if tier is None:
        return 0
    user = SimpleNamespace(id=None, tier=tier, is_authenticated=True, is_active=True, boroughs=())
    state, months = FilterState(), 0
    started = time.perf_counter()
    with db_scope.acting_as(user):
        periods = comparison_periods(engine, state) or ()
        for period in periods:
            read, _ = study_counts_by_month(engine, state, HOTSPOT_CELL_M, period, user=user)
            months += len(read)
        if periods:
            _lsoa_counts_in_memory(engine, state, [periods[-1], periods[-1].previous()])
            # The panels': the borough months of the whole span (the time series), the day x hour months of
            # the current and previous periods (hour x weekday, day-level ranges).
            span = data_span(engine, state)
            _grid_months_in_memory(engine, "borough", _months_of(Period(*span)))
            _grid_months_in_memory(engine, "day_hour", _months_with_data(
                engine, state, Period(periods[-1].previous().start, periods[-1].end)))
    if log and periods:
        log(f"hotspot and LSOA months in memory for {tier} and tiers alike: {periods[0].start:%Y-%m} .. "
            f"{periods[-1].end:%Y-%m} in {time.perf_counter() - started:.1f} s")
    return months


# The map's hotspot layers: Gi*, emerging hot spots and period comparison on 500 m cells (about 6,300 in
# London: stable counts, and a payload of significant cells only); the kernel density on 250 m cells.
HOTSPOT_CELL_M = 500
KDE_CELL_M = 250

HOT_LABELS = {99: "Hot spot, 99% confidence", 95: "Hot spot, 95% confidence", 90: "Hot spot, 90% confidence",
              -90: "Cold spot, 90% confidence", -95: "Cold spot, 95% confidence",
              -99: "Cold spot, 99% confidence", 0: "Not significant"}
EMERGING_LABELS = {"new": "New hot spot", "consecutive": "Consecutive hot spot",
                   "intensifying": "Intensifying hot spot", "persistent": "Persistent hot spot",
                   "diminishing": "Diminishing hot spot", "sporadic": "Sporadic hot spot",
                   "historical": "Historical hot spot"}
COMPARE_LABELS = {"new_hot": "Became hot", "still_hot": "Hot in both periods", "no_longer_hot": "No longer hot",
                  "new_cold": "Became cold", "still_cold": "Cold in both periods",
                  "no_longer_cold": "No longer cold", "cold_to_hot": "Cold to hot", "hot_to_cold": "Hot to cold"}


@dataclass(frozen=True)
class HotspotLayer:
    kind: str  # gi_grid, gi_lsoa, emerging or compare (FilterState.hotspot)
    cell_m: int | None  # grid cell size; None for LSOAs
    band_m: float  # the fixed distance band (neighbours within it, the area itself included)
    fdr: bool
    confidence: int  # the lowest confidence drawn
    cells: int  # areas in the study area (grid cells with empty ones, or LSOAs)
    incidents: int
    geojson: dict  # the drawn areas only, WGS84, with their numbers in ``properties``
    note: str | None = None  # what the layer compares, or why it is empty

    @property
    def classes_drawn(self) -> list:
        """The classes present among the drawn areas (for the legend), in legend order."""
        seen = {f["properties"]["class"] for f in self.geojson["features"]}
        return [c for c in _LEGEND_ORDER.get(self.kind, ()) if c in seen]


_LEGEND_ORDER = {"gi_grid": (99, 95, 90, -90, -95, -99), "gi_lsoa": (99, 95, 90, -90, -95, -99),
                 "emerging": tuple(EMERGING_LABELS), "compare": tuple(COMPARE_LABELS)}
_EMPTY_FEATURES = {"type": "FeatureCollection", "features": []}


def _shown_classes(z: np.ndarray, fdr: bool, confidence: int) -> np.ndarray:
    """Gi* classes (+-90/95/99, 0) with those below ``confidence`` shown as not significant."""
    from safestats import hotspots
    classes = hotspots.classify(z, fdr)
    return np.where(np.abs(classes) >= confidence, classes, 0)


def _gi_properties(k: int, counts, z, p, p_fdr, classes) -> dict:
    # z and p to 6 places (the tooltip shows 2 and 4): the layer itself is checked against esda to 1e-6.
    properties = {"count": int(counts[k]), "z": round(float(z[k]), 6), "p": round(float(p[k]), 6),
                  "class": int(classes[k]), "label": HOT_LABELS[int(classes[k])]}
    if p_fdr is not None:
        properties["p_fdr"] = round(float(p_fdr[k]), 6)
    return properties


def study_area_corners_wgs84(engine: Engine, cell_m: int) -> np.ndarray:
    """Each study-area cell's four corners in WGS84 (lon, lat; SW, SE, NE, NW), in ``study_area_cells``
    order: a British National Grid square is a slightly skewed quadrilateral on the map. Once per process."""
    def compute():
        xs, ys = study_area_cells(engine, cell_m)
        rows = _rows(engine, """
            SELECT ST_X(a), ST_Y(a), ST_X(b), ST_Y(b), ST_X(c), ST_Y(c), ST_X(d), ST_Y(d) FROM (
                SELECT k, ST_Transform(ST_SetSRID(ST_MakePoint(i * :cell, j * :cell), 27700), 4326) AS a,
                          ST_Transform(ST_SetSRID(ST_MakePoint((i + 1) * :cell, j * :cell), 27700), 4326) AS b,
                          ST_Transform(ST_SetSRID(ST_MakePoint((i + 1) * :cell, (j + 1) * :cell), 27700), 4326) AS c,
                          ST_Transform(ST_SetSRID(ST_MakePoint(i * :cell, (j + 1) * :cell), 27700), 4326) AS d
                FROM unnest(CAST(:xs AS int[]), CAST(:ys AS int[])) WITH ORDINALITY AS t(i, j, k)) q ORDER BY k""",
                     {"cell": cell_m, "xs": list(xs), "ys": list(ys)})
        return np.round(np.array(rows, dtype=float).reshape(-1, 4, 2), DISPLAY_COORDINATE_DECIMALS)
    return _cached(engine, "study_area_corners", (cell_m,), compute, versioned=False)


def _cell_features(engine: Engine, cell_m: int, cells: np.ndarray, properties: list[dict]) -> dict:
    """Study-area cells (indices into ``study_area_cells``) as WGS84 squares, each with its ``cell`` id and
    ``properties``; the corners come from the per-process ``study_area_corners_wgs84``, so no SQL here."""
    xs, ys = study_area_cells(engine, cell_m)
    corners = study_area_corners_wgs84(engine, cell_m)
    features = []
    for k, props in zip(cells, properties):
        ring = corners[k].tolist()
        i, j = xs[k], ys[k]
        features.append({"type": "Feature", "id": f"{cell_m}:{i}:{j}",
                         "geometry": {"type": "Polygon", "coordinates": [ring + ring[:1]]},
                         "properties": dict(props, cell=f"{i}:{j}", cell_m=cell_m)})
    return {"type": "FeatureCollection", "features": features}


def _study_counts(engine, state, cell_m, period, user) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The study area's cells (x, y indices) and each one's count in ``period`` (default: the current one)."""
    xs, ys = study_area_cells(engine, cell_m)
    _, by_month = study_counts_by_month(engine, state, cell_m, period, user=user)
    return np.array(xs, dtype=int), np.array(ys, dtype=int), by_month.sum(axis=0)


@_for_user
def hotspot_layer(engine: Engine, state: FilterState, cell_m: int = HOTSPOT_CELL_M, band_m: float | None = None,
                  fdr: bool = False, user=None, confidence: int = 90) -> HotspotLayer:
    """Getis-Ord Gi* on the study area's grid cells for the filtered selection in the current period; the
    significant cells (hot and cold, at ``confidence`` per cent or more) as GeoJSON for the map, each with
    its count, z, two-sided p (and the FDR-adjusted p when ``fdr``) and class."""
    from safestats import hotspots
    state = _scoped(engine, state, user)

    def compute():
        xs, ys, counts = _study_counts(engine, state, cell_m, None, user)
        band = band_m or hotspots.default_band_m(cell_m)
        if not len(xs) or counts.sum() == 0:
            return HotspotLayer("gi_grid", cell_m, band, fdr, confidence, len(xs), 0, dict(_EMPTY_FEATURES))
        result = hotspots.grid_gi_star(xs, ys, counts, cell_m, band)
        p = hotspots.normal_two_sided_p(result.z)
        p_fdr = hotspots.benjamini_hochberg(p) if fdr else None
        classes = _shown_classes(result.z, fdr, confidence)
        drawn = np.nonzero(classes != 0)[0]
        geojson = _cell_features(engine, cell_m, drawn,
                                 [_gi_properties(k, counts, result.z, p, p_fdr, classes) for k in drawn])
        return HotspotLayer("gi_grid", cell_m, result.band_m, fdr, confidence, len(xs), int(counts.sum()), geojson)
    return _cached(engine, "hotspots", _key(state, cell_m, band_m, fdr, confidence), compute)


# ---- Gi* on LSOAs --------------------------------------------------------------------------------------

def lsoa_points(engine: Engine, region: str = "london") -> tuple[list[str], np.ndarray]:
    """Every LSOA of the region with its centroid in British National Grid metres (codes sorted)."""
    def compute():
        rows = _rows(engine, "SELECT code, ST_X(ST_Centroid(geom)), ST_Y(ST_Centroid(geom)) FROM areas "
                             "WHERE level = 'lsoa' AND region = :region ORDER BY code", {"region": region})
        return [r[0] for r in rows], np.array([(float(r[1]), float(r[2])) for r in rows]).reshape(-1, 2)
    return _cached(engine, "lsoa_points", (region,), compute, versioned=False)


@dataclass(frozen=True)
class AreaNeighbours:
    codes: list[str]
    points: np.ndarray  # centroids, metres
    band_m: float
    pairs_i: np.ndarray  # (i, j): j's centroid is within the band of i's, i itself included
    pairs_j: np.ndarray


def lsoa_neighbours(engine: Engine, region: str = "london") -> AreaNeighbours:
    """The LSOAs' fixed distance band and its neighbour pairs (computed once per process).

    The band is the one ArcGIS proposes by default: the largest nearest-neighbour distance between
    centroids (so every LSOA has a neighbour), rounded up to a whole metre."""
    def compute():
        codes, points = lsoa_points(engine, region)
        n, chunk = len(points), 512
        nearest = np.full(n, np.inf)
        for start in range(0, n, chunk):
            d2 = ((points[start:start + chunk, None, :] - points[None, :, :]) ** 2).sum(axis=2)
            d2[np.arange(len(d2)), np.arange(start, start + len(d2))] = np.inf
            nearest[start:start + chunk] = d2.min(axis=1)
        band = float(np.ceil(np.sqrt(nearest.max()))) if n > 1 else 1.0
        pairs_i, pairs_j = [], []
        for start in range(0, n, chunk):
            d2 = ((points[start:start + chunk, None, :] - points[None, :, :]) ** 2).sum(axis=2)
            i, j = np.nonzero(d2 <= band * band)
            pairs_i.append(i + start)
            pairs_j.append(j)
        return AreaNeighbours(codes, points, band, np.concatenate(pairs_i) if n else np.zeros(0, int),
                              np.concatenate(pairs_j) if n else np.zeros(0, int))
    return _cached(engine, "lsoa_neighbours", (region,), compute, versioned=False)


@_for_user
def lsoa_hotspot_layer(engine: Engine, state: FilterState, fdr: bool = False, user=None,
                       confidence: int = 90) -> HotspotLayer:
    """Gi* on London's LSOAs (counts in the current period, centroids, the fixed band of ``lsoa_neighbours``);
    the significant LSOAs' boundaries as GeoJSON, each with its code, name and numbers."""
    from safestats import hotspots
    state = _scoped(engine, state, user)

    def compute():
        nb = lsoa_neighbours(engine)
        current = area_values(engine, state, "lsoa", user).current
        counts = np.array([current.get(code, 0) for code in nb.codes], dtype=float)
        if not len(counts) or counts.sum() == 0:
            return HotspotLayer("gi_lsoa", None, nb.band_m, fdr, confidence, len(counts), 0, dict(_EMPTY_FEATURES))
        sums = np.bincount(nb.pairs_i, weights=counts[nb.pairs_j], minlength=len(counts))
        cardinality = np.bincount(nb.pairs_i, minlength=len(counts)).astype(float)
        z = hotspots.gi_star_from_sums(counts, sums, cardinality)
        p = hotspots.normal_two_sided_p(z)
        p_fdr = hotspots.benjamini_hochberg(p) if fdr else None
        classes = _shown_classes(z, fdr, confidence)
        index = {code: k for k, code in enumerate(nb.codes)}
        features = []
        for feature in boundaries_geojson(engine, "lsoa")["features"]:
            k = index.get(feature["properties"]["code"])
            if k is not None and classes[k] != 0:
                features.append(dict(feature, properties=dict(
                    feature["properties"], **_gi_properties(k, counts, z, p, p_fdr, classes))))
        return HotspotLayer("gi_lsoa", None, nb.band_m, fdr, confidence, len(counts), int(counts.sum()),
                            {"type": "FeatureCollection", "features": features})
    return _cached(engine, "lsoa_hotspots", _key(state, fdr, confidence), compute)


# ---- emerging hot spots and period comparison on the grid ------------------------------------------------

def time_steps(period: Period, step_months: int) -> list[list[date]]:
    """The period's London months in steps of ``step_months``, ending with the period's last month (a
    remainder at the start that does not fill a step is left out)."""
    months, m = [], period.start.replace(day=1)
    while m <= period.end:
        months.append(m)
        m = _add_months(m, 1)
    whole = len(months) // step_months * step_months
    months = months[len(months) - whole:]
    return [months[i:i + step_months] for i in range(0, whole, step_months)]


@_for_user
def emerging_hotspot_layer(engine: Engine, state: FilterState, step_months: int = 1, user=None,
                           confidence: int = 90) -> HotspotLayer:
    """Emerging hot spots across the current period's time steps: each cell's category (new, consecutive,
    intensifying, persistent, diminishing, sporadic, historical) from its Gi* z-score in every step."""
    from safestats import hotspots
    state = _scoped(engine, state, user)
    period = current_period(engine, state)
    cell_m = HOTSPOT_CELL_M

    def compute():
        band = hotspots.default_band_m(cell_m)
        xs, ys = (np.array(v, dtype=int) for v in study_area_cells(engine, cell_m))
        within = period and _within_data_span(engine, state, period, through_this_month=True)
        steps = time_steps(within, step_months) if within else []
        if len(steps) < 2:
            return HotspotLayer("emerging", cell_m, band, False, confidence, len(xs), 0, dict(_EMPTY_FEATURES),
                                "Emerging hot spots need at least two time steps: choose a longer period or "
                                "shorter steps.")
        months, by_month = study_counts_by_month(engine, state, cell_m, within, user)
        position = {m: k for k, m in enumerate(months)}
        counts = np.array([by_month[[position[m] for m in step]].sum(axis=0) for step in steps])
        z = hotspots.grid_gi_star_steps(xs, ys, counts, cell_m, band)  # every step at once
        hot = z >= dict(hotspots.CONFIDENCE_Z)[confidence]
        drawn = np.nonzero(hot.any(axis=0))[0]
        p_latest = hotspots.normal_two_sided_p(z[-1])
        trends = hotspots.mann_kendall_z_columns(z[:, drawn])
        properties = []
        for n, k in enumerate(drawn):
            category = hotspots.emerging_category(hot[:, k], z[:, k], trend=trends[n])
            properties.append({"class": category, "label": EMERGING_LABELS.get(category, category),
                               "count": int(counts[-1, k]), "z": round(float(z[-1, k]), 2),
                               "p": round(float(p_latest[k]), 4), "hot_steps": int(hot[:, k].sum()),
                               "steps": len(steps), "total": int(counts[:, k].sum())})
        keep = [n for n, props in enumerate(properties) if props["class"] != "none"]
        geojson = _cell_features(engine, cell_m, drawn[keep], [properties[n] for n in keep])
        first, last = steps[0][0], steps[-1][-1]
        note = (f"{len(steps)} steps of {step_months} month{'s' if step_months > 1 else ''}, "
                f"{first:%b %Y} – {last:%b %Y}")
        return HotspotLayer("emerging", cell_m, band, False, confidence, len(xs), int(counts.sum()), geojson, note)
    return _cached(engine, "emerging", _key(state, step_months, confidence, period), compute)


def comparison_periods(engine: Engine, state: FilterState) -> tuple[Period, Period] | None:
    """(earlier, later) periods of the comparison: the state's comparison dates (default: the equal period
    just before) and the current period."""
    later = current_period(engine, state)
    if later is None:
        return None
    earlier = Period(state.compare_from, state.compare_to) if state.compare_from else later.previous()
    return earlier, later


def _transition(before: int, after: int) -> str | None:
    if before > 0:
        return "still_hot" if after > 0 else "hot_to_cold" if after < 0 else "no_longer_hot"
    if before < 0:
        return "still_cold" if after < 0 else "cold_to_hot" if after > 0 else "no_longer_cold"
    return "new_hot" if after > 0 else "new_cold" if after < 0 else None


@_for_user
def comparison_layer(engine: Engine, state: FilterState, fdr: bool = False, user=None,
                     confidence: int = 90) -> HotspotLayer:
    """Period comparison on the grid: per cell, the counts in both periods, their change, and the Gi* class
    in each; the cells significant in either period are drawn, coloured by how their class changed."""
    from safestats import hotspots
    state = _scoped(engine, state, user)
    periods = comparison_periods(engine, state)
    cell_m = HOTSPOT_CELL_M

    def compute():
        band = hotspots.default_band_m(cell_m)
        if periods is None:
            return HotspotLayer("compare", cell_m, band, fdr, confidence, 0, 0, dict(_EMPTY_FEATURES))
        earlier, later = periods
        xs, ys, before = _study_counts(engine, state, cell_m, earlier, user)
        _, _, after = _study_counts(engine, state, cell_m, later, user)
        z_before = hotspots.grid_gi_star(xs, ys, before, cell_m, band).z
        z_after = hotspots.grid_gi_star(xs, ys, after, cell_m, band).z
        class_before = _shown_classes(z_before, fdr, confidence)
        class_after = _shown_classes(z_after, fdr, confidence)
        drawn, properties = [], []
        for k in np.nonzero((class_before != 0) | (class_after != 0))[0]:
            transition = _transition(int(class_before[k]), int(class_after[k]))
            drawn.append(k)
            properties.append({"class": transition, "label": COMPARE_LABELS[transition],
                               "count_before": int(before[k]), "count": int(after[k]),
                               "change": int(after[k] - before[k]),
                               "z_before": round(float(z_before[k]), 2), "z": round(float(z_after[k]), 2),
                               "class_before": HOT_LABELS[int(class_before[k])],
                               "class_after": HOT_LABELS[int(class_after[k])]})
        drawn = np.array(drawn, dtype=int)
        geojson = _cell_features(engine, cell_m, drawn, properties)
        note = f"{earlier.label()} → {later.label()}"
        return HotspotLayer("compare", cell_m, band, fdr, confidence, len(xs), int(after.sum()), geojson, note)
    return _cached(engine, "compare", _key(state, fdr, confidence, periods), compute)


# ---- kernel density surface ----------------------------------------------------------------------------

def study_area_boxes_3857(engine: Engine, cell_m: int) -> np.ndarray:
    """Each study-area cell's Web Mercator box (xmin, ymin, xmax, ymax), in ``study_area_cells`` order."""
    def compute():
        xs, ys = study_area_cells(engine, cell_m)
        rows = _rows(engine, """
            SELECT ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b) FROM (
                SELECT k, ST_Transform(ST_MakeEnvelope(i * :cell, j * :cell, (i + 1) * :cell, (j + 1) * :cell,
                                                       27700), 3857) AS b
                FROM unnest(CAST(:xs AS int[]), CAST(:ys AS int[])) WITH ORDINALITY AS c(i, j, k)) t ORDER BY k""",
                     {"cell": cell_m, "xs": list(xs), "ys": list(ys)})
        return np.array(rows, dtype=float).reshape(-1, 4)
    return _cached(engine, "study_area_boxes", (cell_m,), compute, versioned=False)


@dataclass(frozen=True)
class KdeSurface:
    cell_m: int
    bandwidth_m: float  # the bandwidth used
    rule_bandwidth_m: float  # the standard rule's bandwidth for this selection
    incidents: int
    density: np.ndarray  # per km², per study-area cell (``study_area_cells`` order)
    scale_max: float  # the 98th percentile of non-zero densities: one colour scale for every tile


@_for_user
def kde_surface(engine: Engine, state: FilterState, bandwidth_m: int | None = None, user=None) -> KdeSurface:
    """Quartic kernel density of the filtered selection in the current period on the study area's 250 m
    cells (incidents counted per cell, the kernel centred on each cell's centre); the bandwidth defaults to
    the standard rule (``hotspots.silverman_bandwidth_m``) on the selection."""
    from safestats import hotspots
    state = _scoped(engine, state, user)
    cell_m = KDE_CELL_M

    def compute():
        xs, ys, counts = _study_counts(engine, state, cell_m, None, user)
        if not len(xs) or counts.sum() == 0:
            return KdeSurface(cell_m, float(bandwidth_m or 0), 0.0, 0, np.zeros(len(xs)), 0.0)
        rule = hotspots.silverman_bandwidth_m((xs + 0.5) * cell_m, (ys + 0.5) * cell_m, counts)
        # A bandwidth under one cell would put every incident back in its own cell: not a surface.
        bandwidth = float(bandwidth_m) if bandwidth_m else max(rule, float(cell_m))
        nonzero = counts > 0
        gx, gy, values = hotspots.quartic_kde_grid(xs[nonzero], ys[nonzero], counts[nonzero], cell_m, bandwidth)
        # Read the surface at the study cells through a lattice over both extents (no per-cell Python).
        x0, y0 = min(xs.min(), gx.min()), min(ys.min(), gy.min())
        lattice = np.zeros((max(xs.max(), gx.max()) - x0 + 1, max(ys.max(), gy.max()) - y0 + 1))
        lattice[gx - x0, gy - y0] = values
        density = lattice[xs - x0, ys - y0]
        positive = np.sort(density[density > 0])
        scale = float(positive[int(0.98 * (len(positive) - 1))]) if len(positive) else 0.0
        return KdeSurface(cell_m, bandwidth, rule, int(counts.sum()), density, scale)
    return _cached(engine, "kde", _key(state, bandwidth_m), compute)


def kde_tile_cells(engine: Engine, surface: KdeSurface, bbox_3857: tuple[float, float, float, float]
                   ) -> list[tuple[float, float, float, float, float]]:
    """The density surface's cells overlapping a Web Mercator box (a map tile), as (xmin, ymin, xmax, ymax,
    density per km²): what ``tilerender.render_density_tile`` paints."""
    boxes = study_area_boxes_3857(engine, surface.cell_m)
    xmin, ymin, xmax, ymax = bbox_3857
    inside = ((surface.density > 0) & (boxes[:, 2] > xmin) & (boxes[:, 0] < xmax)
              & (boxes[:, 3] > ymin) & (boxes[:, 1] < ymax))
    return [(*map(float, boxes[k]), float(surface.density[k])) for k in np.nonzero(inside)[0]]


@_for_user
def hotspot_map_layer(engine: Engine, state: FilterState, user=None) -> HotspotLayer | KdeSurface | None:
    """The hotspot layer the state asks for (``state.hotspot``), for the current filters. The spatial
    selection (area, drawn polygon, picked cell) is not applied: the statistics need the whole study area,
    and the map shows every hot spot so the analyst can pick one, as the choropleth does."""
    whole = state.without_spatial_selection()
    kind, conf, fdr = state.hotspot, state.hotspot_confidence, state.hotspot_fdr
    if kind == "gi_grid":
        return hotspot_layer(engine, whole, HOTSPOT_CELL_M, fdr=fdr, user=user, confidence=conf)
    if kind == "gi_lsoa":
        return lsoa_hotspot_layer(engine, whole, fdr, user, conf)
    if kind == "emerging":
        return emerging_hotspot_layer(engine, whole, state.hotspot_step_months, user, conf)
    if kind == "compare":
        return comparison_layer(engine, whole, fdr, user, conf)
    if kind == "kde":
        return kde_surface(engine, whole, state.kde_bandwidth_m, user)
    return None
