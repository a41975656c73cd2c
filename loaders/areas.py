"""Assign LSOA / MSOA / borough to points: the ingest pipeline's spatial join.

The LSOA polygons are read from PostGIS (the ``areas`` table is the source of truth) into a shapely
STRtree, cached per process and re-read whenever the area set changes. Measured on a month of Met data
(3,269 distinct points): the same point-in-polygon join took 64 ms in SQL and 5 ms here, so the join runs
in the loader and PostgreSQL only stores the answer. A point inside an LSOA takes that LSOA (the lowest
code if it sits on a shared edge); a point just outside every LSOA (a bridge over the Thames, a corner cut
by generalised boundaries) takes the nearest LSOA within the configured tolerance; anything farther is
outside the configured area.

Points supplied in British National Grid (LFB) get their WGS84 display twin from Ordnance Survey's OSTN15
transformation (the ``convertbng`` package, which carries the OSTN15 grid): PROJ without that grid falls back
to a Helmert transformation that is 1.3-3.1 m off on the real LFB points, while OSTN15 reproduces LFB's own
latitude/longitude to within the whole metre LFB truncates its eastings and northings to
(tests/test_lfb_loader.py). WGS84 points (police.uk) are still projected to the grid with PROJ.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import shapely
from pyproj import Transformer

_TO_BNG = Transformer.from_crs(4326, 27700, always_xy=True)
_TO_WGS84 = Transformer.from_crs(27700, 4326, always_xy=True)
POINT_CACHE_LIMIT = 2_000_000       # distinct points remembered per index (about 100 MB); then it starts afresh


@dataclass
class AssignedPoints:
    easting: np.ndarray
    northing: np.ndarray
    longitude: np.ndarray
    latitude: np.ndarray
    area_index: np.ndarray      # index into AreaIndex.lsoa_codes, -1 where no LSOA is within tolerance


class AreaIndex:
    """The LSOA polygons in British National Grid, with their MSOA and borough codes."""

    def __init__(self, version: tuple, codes: list[str], msoa_codes: list[str], borough_codes: list[str],
                 polygons: np.ndarray):
        self.version = version
        self.lsoa_codes = codes
        self.msoa_codes = msoa_codes
        self.borough_codes = borough_codes
        self.polygons = polygons
        # The codes as arrow arrays too, for the pipeline to pick each row's codes with one take().
        self.lsoa_array = pa.array(codes, pa.string())
        self.msoa_array = pa.array(msoa_codes, pa.string())
        self.borough_array = pa.array(borough_codes, pa.string())
        # Per LSOA, its borough's rank among the boroughs (the pipeline writes a drop's rows in that order).
        boroughs = sorted(set(borough_codes), key=lambda c: (c is None, c or ""))
        rank = {code: k for k, code in enumerate(boroughs)}
        self.borough_rank = np.array([rank[c] for c in borough_codes], dtype=np.int32)
        shapely.prepare(polygons)
        self.tree = shapely.STRtree(polygons)
        self._point_cache: dict[tuple[int, float], tuple[np.ndarray, np.ndarray]] = {}

    @staticmethod
    def current_version(cur) -> tuple:
        cur.execute("SELECT count(*), max(loaded_at) FROM areas WHERE level = 'lsoa'")
        return tuple(cur.fetchone())

    @classmethod
    def load(cls, cur, version: tuple) -> "AreaIndex":
        # Ordered by code so that "lowest index" means "lowest code" for points on a shared edge.
        cur.execute("""SELECT code, msoa_code, borough_code, ST_AsBinary(geom) FROM areas
                       WHERE level = 'lsoa' ORDER BY code""")
        rows = cur.fetchall()
        polygons = shapely.from_wkb([bytes(r[3]) for r in rows]) if rows else np.array([], dtype=object)
        return cls(version, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], polygons)

    def assign(self, x: np.ndarray, y: np.ndarray, srid: int, tolerance_m: float) -> AssignedPoints:
        """Project the points both ways and find each one's LSOA.

        police.uk reuses its snap points, within a file (a Met month: 3,269 distinct points in 4,900 rows) and
        from month to month, so each distinct point is projected and looked up once per process (see
        _located_points); the answers are spread back to the rows.
        """
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        if srid not in (4326, 27700):
            raise ValueError(f"unsupported coordinate system EPSG:{srid}")
        if not len(x):
            empty = np.zeros(0)
            return AssignedPoints(empty, empty, empty, empty, np.zeros(0, dtype=np.int64))
        distinct, inverse = np.unique(x + 1j * y, return_inverse=True)
        east, north, lon_d, lat_d, found = self._located_points(distinct, srid, tolerance_m)
        lon, lat = (x, y) if srid == 4326 else (lon_d[inverse], lat_d[inverse])
        return AssignedPoints(east[inverse], north[inverse], lon, lat, found[inverse])

    def _located_points(self, points: np.ndarray, srid: int, tolerance_m: float) -> tuple[np.ndarray, ...]:
        """Easting, northing, longitude, latitude and LSOA of distinct points (x + iy, sorted), from the
        point cache where seen before. The cache is replaced whole, never changed in place, so threads
        sharing this index always see a consistent one."""
        cached = self._point_cache.get((srid, tolerance_m))
        if cached is not None:
            keys, values = cached
            at = np.minimum(np.searchsorted(keys, points), len(keys) - 1)
            seen = keys[at] == points
        else:
            seen = np.zeros(len(points), dtype=bool)
        new = points[~seen]
        dx, dy = new.real.copy(), new.imag.copy()
        if srid == 4326:
            east, north = (np.asarray(v, dtype=float) for v in _TO_BNG.transform(dx, dy))
            lon, lat = dx, dy
        else:
            east, north = dx, dy
            lon, lat = bng_to_wgs84(dx, dy)
        found = np.full(len(new), -1, dtype=np.int64)
        if len(new) and len(self.lsoa_codes):
            found = self._lookup(east, north, tolerance_m)
        new_values = np.column_stack([east, north, lon, lat, found.astype(float)])
        if cached is None or len(keys) + len(new) > POINT_CACHE_LIMIT:
            all_keys, all_values = new, new_values
        else:
            all_keys, all_values = np.concatenate([keys, new]), np.concatenate([values, new_values])
            order = np.argsort(all_keys, kind="stable")
            all_keys, all_values = all_keys[order], all_values[order]
        if len(new):
            self._point_cache[(srid, tolerance_m)] = (all_keys, all_values)
        at = np.searchsorted(all_keys, points)
        chosen = all_values[at]
        return chosen[:, 0], chosen[:, 1], chosen[:, 2], chosen[:, 3], chosen[:, 4].astype(np.int64)

    def _lookup(self, east: np.ndarray, north: np.ndarray, tolerance_m: float) -> np.ndarray:
        found = np.full(len(east), -1, dtype=np.int64)
        if len(east):
            points = shapely.points(east, north)
            point_idx, area_idx = self.tree.query(points, predicate="intersects")
            best = np.full(len(east), np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(best, point_idx, area_idx)
            hit = best != np.iinfo(np.int64).max
            found[hit] = best[hit]
            missing = np.flatnonzero(~hit)
            if len(missing) and tolerance_m > 0:
                near_point, near_area = self.tree.query_nearest(points[missing], max_distance=tolerance_m)
                # query_nearest may return several equidistant areas for a point: keep the lowest code.
                nearest = np.full(len(missing), np.iinfo(np.int64).max, dtype=np.int64)
                np.minimum.at(nearest, near_point, near_area)
                ok = nearest != np.iinfo(np.int64).max
                found[missing[ok]] = nearest[ok]
        return found


def bng_to_wgs84(easting: np.ndarray, northing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitude and latitude of British National Grid points by OSTN15; by PROJ's Helmert transformation
    where OSTN15 has no answer (outside its grid, which covers Great Britain and its waters)."""
    from convertbng.cutil import convert_lonlat

    easting, northing = np.asarray(easting, dtype=float), np.asarray(northing, dtype=float)
    if not len(easting):
        return easting.copy(), northing.copy()
    lon, lat = (np.array(v, dtype=float) for v in convert_lonlat(easting, northing))
    missing = ~(np.isfinite(lon) & np.isfinite(lat))
    if missing.any():
        helmert_lon, helmert_lat = _TO_WGS84.transform(easting[missing], northing[missing])
        lon[missing], lat[missing] = helmert_lon, helmert_lat
    return lon, lat


_cached: dict[str, AreaIndex] = {}


def area_index_for(cur, cache_key: str) -> AreaIndex:
    """The AreaIndex for this database, re-read from PostGIS only when its area set has changed."""
    version = AreaIndex.current_version(cur)
    index = _cached.get(cache_key)
    if index is None or index.version != version:
        index = AreaIndex.load(cur, version)
        _cached[cache_key] = index
    return index
