"""Demo drops for police.uk outcomes and stop and search, LAS assault call-outs and ED (ISTV) assaults.

Each generator writes its supplier's own file format (docs/suppliers/*.md), deterministically from a seed,
for the months the police.uk street demo covers, and borrows the street files' snap points (and the
LSOAs' population-weighted centres) so every located demo row lies in London. Outcomes files name Crime
IDs of the street files of the same and earlier months, plus a few that match nothing (as real outcomes
files do); stop and search leaves a tenth of rows without coordinates; LAS rows carry a point, a postcode
and borough, or a postcode only (postcodes of the demo ONS Postcode Directory file, ``write_demo_onspd``,
which ``generate_demo_drops`` writes alongside; a few it lacks); ISTV drops are XML submissions for most demo
sites and a CSV for one, their free-text locations often naming streets of the police.uk demo files. Volumes
are small (a few hundred rows a month per supplier) so ``./dev portal`` stays quick.
"""
from __future__ import annotations

import csv
import io
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from xml.sax.saxutils import escape

from loaders.istv import CSV_COLUMNS as ISTV_CSV_COLUMNS, ED_SITES, LOCATION_TYPES
from loaders.las import LasAssaultsFormat
from loaders.police_uk_outcomes import PoliceUkOutcomesFormat
from loaders.police_uk_stop_search import PoliceUkStopSearchFormat
from loaders.themes import LONDON

STOP_SEARCH_ROWS_PER_MONTH = 400
LAS_ROWS_PER_MONTH = 250
ISTV_ROWS_PER_SITE_MONTH = 30
OUTCOME_SHARE = 0.3                 # of a month's crimes that get an outcome row in a later month
UNMATCHED_OUTCOMES_PER_FILE = 5     # outcomes of crimes older than the demo (real files have many)

STOP_SEARCH_OBJECTS = (("Controlled drugs", 0.60, "Misuse of Drugs Act 1971 (section 23)"),
                       ("Offensive weapons", 0.17, "Police and Criminal Evidence Act 1984 (section 1)"),
                       ("Stolen goods", 0.15, "Police and Criminal Evidence Act 1984 (section 1)"),
                       ("Evidence of offences under the Act", 0.04, "Police and Criminal Evidence Act 1984 (section 1)"),
                       ("Firearms", 0.01, "Firearms Act 1968 (section 47)"),
                       ("Articles for use in criminal damage", 0.01, "Police and Criminal Evidence Act 1984 (section 1)"),
                       ("Fireworks", 0.005, "Police and Criminal Evidence Act 1984 (section 1)"),
                       ("Anything to threaten or harm anyone", 0.003, "Criminal Justice and Public Order Act 1994 (section 60)"),
                       ("", 0.002, "Misuse of Drugs Act 1971 (section 23)"))
STOP_SEARCH_OUTCOMES = (("A no further action disposal", 0.71), ("Arrest", 0.15), ("Community resolution", 0.09),
                        ("Penalty Notice for Disorder", 0.03), ("Summons / charged by post", 0.015),
                        ("Caution (simple or conditional)", 0.005))
AGE_RANGES = (("18-24", 0.27), ("over 34", 0.21), ("25-34", 0.21), ("10-17", 0.17), ("", 0.14))
ETHNICITIES = (("White", "White - English/Welsh/Scottish/Northern Irish/British"),
               ("Black", "Black/African/Caribbean/Black British - Any other Black/African/Caribbean background"),
               ("Asian", "Asian/Asian British - Any other Asian background"), ("Other", "Other ethnic group - Not stated"))
LAS_CATEGORIES = (("Assault", 0.78), ("Stabbing", 0.10), ("Sexual assault", 0.05), ("Assault with weapon", 0.04),
                  ("Shooting", 0.01), ("Corrosive substance attack", 0.02))
LAS_AGE_BANDS = (("0-17", 0.10), ("18-24", 0.25), ("25-34", 0.27), ("35-44", 0.17), ("45-54", 0.11),
                 ("55-64", 0.05), ("65+", 0.03), ("Unknown", 0.02))
ISTV_METHODS = (("01", 0.62), ("02", 0.07), ("03", 0.10), ("04", 0.07), ("05", 0.005), ("06", 0.01),
                ("07", 0.06), ("99", 0.065))
ISTV_LOCATION_DESCRIPTIONS = ("outside a pub on the high street", "bus stop near the station", "at home",
                              "nightclub queue", "park by the canal", "on the night bus", "shop doorway",
                              "estate stairwell", "outside a takeaway", "school gates")
# One real postcode district inside each borough, for the postcodes the demo invents (unit codes are made up,
# so a demo postcode is plausible but need not exist).
POSTCODE_DISTRICTS = {
    "E09000001": "EC2V", "E09000002": "RM10", "E09000003": "NW4", "E09000004": "DA5", "E09000005": "NW10",
    "E09000006": "BR1", "E09000007": "NW1", "E09000008": "CR0", "E09000009": "W5", "E09000010": "EN1",
    "E09000011": "SE10", "E09000012": "E8", "E09000013": "W6", "E09000014": "N17", "E09000015": "HA1",
    "E09000016": "RM1", "E09000017": "UB8", "E09000018": "TW3", "E09000019": "N1", "E09000020": "W8",
    "E09000021": "KT1", "E09000022": "SW9", "E09000023": "SE13", "E09000024": "SW19", "E09000025": "E15",
    "E09000026": "IG1", "E09000027": "TW9", "E09000028": "SE15", "E09000029": "SM1", "E09000030": "E1",
    "E09000031": "E17", "E09000032": "SW18", "E09000033": "W1D",
}
UNIT_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"       # the letters postcode units use (no C, I, K, M, O, V)
LAS_UNKNOWN_POSTCODE_SHARE = 0.05            # postcode rows whose postcode the demo directory lacks (new builds)
DEMO_ONSPD_FILE = "ONSPD_DEMO_UK.csv"
# The ONS Postcode Directory's columns (February 2023 edition); docs/suppliers/onspd.md.
ONSPD_HEADER = (
    "pcd", "pcd2", "pcds", "dointr", "doterm", "oscty", "ced", "oslaua", "osward", "parish", "usertype",
    "oseast1m", "osnrth1m", "osgrdind", "oshlthau", "nhser", "ctry", "rgn", "streg", "pcon", "eer", "teclec",
    "ttwa", "pct", "itl", "statsward", "oa01", "casward", "park", "lsoa01", "msoa01", "ur01ind", "oac01", "oa11",
    "lsoa11", "msoa11", "wz11", "sicbl", "bua11", "buasd11", "ru11ind", "oac11", "lat", "long", "lep1", "lep2",
    "pfa", "imd", "calncv", "icb", "oa21", "lsoa21", "msoa21",
)
# Share of ISTV free-text locations that name a street of the site's borough (as police.uk spells it, or
# abbreviated, or misspelt); the rest are the generic descriptions above.
ISTV_STREET_SHARE = 0.45
STREET_ABBREVIATIONS = {"Road": "Rd", "Street": "St", "Lane": "Ln", "Avenue": "Ave", "Gardens": "Gdns",
                        "Place": "Pl", "Square": "Sq", "Crescent": "Cres", "Terrace": "Tce", "Close": "Cl",
                        "Drive": "Dr"}
ISTV_STREET_TEMPLATES = ("{street}", "outside the pub on {street}", "bus stop, {street}", "{street} by the shops",
                         "in the street ({street})")


def _pick(rng: random.Random, weighted):
    values = [w[0] for w in weighted]
    return rng.choices(values, weights=[w[1] for w in weighted])[0]


def _street_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _random_minute(rng: random.Random, month: str) -> datetime:
    """A London local minute in ``month``, weighted towards evenings and nights as violence is."""
    year, mon = int(month[:4]), int(month[5:])
    first = datetime(year, mon, 1)
    days = ((first.replace(day=28) + timedelta(days=4)).replace(day=1) - first).days
    hour = rng.choices(range(24), weights=[5, 4, 3, 2, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 6, 7, 8, 8, 8, 7])[0]
    return first.replace(day=rng.randint(1, days), hour=hour, minute=rng.randint(0, 59))


def write_csv(path: Path, header, rows, line_end: str = "\r\n") -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator=line_end)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def generate_outcomes(out_dir: Path, street_files: list[Path], seed: int) -> list[Path]:
    """One outcomes file per street file after the first month: outcomes of that force's earlier crimes."""
    rng = random.Random(f"{seed}-outcomes")
    by_force: dict[str, list[tuple[str, list[dict]]]] = {}
    for path in sorted(street_files):
        month, force = path.name[:7], path.name[8:-len("-street.csv")]
        by_force.setdefault(force, []).append((month, _street_rows(path)))
    written = []
    for force, months in by_force.items():
        for k in range(1, len(months)):
            month = months[k][0]
            rows = []
            # Earlier months only: a batch loads the month's street file and its outcomes in either order.
            for _, earlier in months[max(0, k - 3):k]:
                for r in earlier:
                    if r["Crime ID"] and rng.random() < OUTCOME_SHARE / 3:
                        outcome = rng.choice(("Investigation complete; no suspect identified",
                                              "Unable to prosecute suspect", "Suspect charged",
                                              "Offender given a caution", "Local resolution"))
                        rows.append((r["Crime ID"], month, r["Reported by"], r["Falls within"], r["Longitude"],
                                     r["Latitude"], r["Location"] or "No location", r["LSOA code"], r["LSOA name"],
                                     outcome))
            reporter = rows[0][2] if rows else "Metropolitan Police Service"
            for _ in range(UNMATCHED_OUTCOMES_PER_FILE):
                rows.append(("%064x" % rng.getrandbits(256), month, reporter, reporter, "", "", "No location", "",
                             "", "Investigation complete; no suspect identified"))
            written.append(write_csv(out_dir / f"{month}-{force}-outcomes.csv", PoliceUkOutcomesFormat.columns, rows))
    return written


def generate_stop_search(out_dir: Path, street_files: list[Path], seed: int) -> list[Path]:
    """Met stop-and-search files, UTC timestamps, about a tenth without coordinates."""
    written = []
    for path in sorted(p for p in street_files if "-metropolitan-" in p.name):
        month = path.name[:7]
        rng = random.Random(f"{seed}-stop-search-{month}")
        points = [(r["Latitude"], r["Longitude"]) for r in _street_rows(path) if r["Longitude"]]
        rows = []
        for _ in range(STOP_SEARCH_ROWS_PER_MONTH):
            utc = _random_minute(rng, month).replace(tzinfo=LONDON).astimezone(timezone.utc)
            lat, lon = rng.choice(points) if points and rng.random() > 0.1 else ("", "")
            obj, _, legislation = rng.choices(STOP_SEARCH_OBJECTS, weights=[o[1] for o in STOP_SEARCH_OBJECTS])[0]
            officer, self_defined = rng.choice(ETHNICITIES)
            rows.append((rng.choices(("Person search", "Person and Vehicle search", "Vehicle search"), (79, 20, 1))[0],
                         utc.isoformat(), "False", "", lat, lon,
                         rng.choices(("Male", "Female", "Other", ""), (90, 8.5, 0.1, 1.4))[0], _pick(rng, AGE_RANGES),
                         self_defined, officer, legislation, obj, _pick(rng, STOP_SEARCH_OUTCOMES), "", ""))
        rows.sort(key=lambda r: r[1])
        written.append(write_csv(out_dir / f"{month}-metropolitan-stop-and-search.csv",
                                 PoliceUkStopSearchFormat.columns, rows, line_end="\n"))
    return written


def demo_postcodes() -> list[str]:
    """One invented postcode per London LSOA (loaders.demo.london_lsoas order), in a real district of the
    LSOA's borough, unique: its centroid is the LSOA's centre in the demo directory (write_demo_onspd)."""
    from loaders.boundaries import LONDON_BOROUGHS
    from loaders.demo import london_lsoas

    seen: dict[str, int] = {}
    postcodes = []
    for borough in london_lsoas().boroughs:
        code = LONDON_BOROUGHS[str(borough)]
        i = seen[code] = seen.get(code, -1) + 1
        unit = i // 9
        postcodes.append(f"{POSTCODE_DISTRICTS[code]} {1 + i % 9}{UNIT_LETTERS[unit // 20 % 20]}{UNIT_LETTERS[unit % 20]}")
    return postcodes


def write_demo_onspd(out_dir: Path) -> Path:
    """A small ONS Postcode Directory file (ONSPD's own columns) holding the demo postcodes: one per London
    LSOA at the LSOA's centre (what the demo LAS records use), plus what real directories also hold: a few
    terminated postcodes, one without a grid reference and a few outside London (which the loader skips)."""
    from loaders.areas import bng_to_wgs84
    from loaders.boundaries import LONDON_BOROUGHS
    from loaders.demo import london_lsoas

    lsoas = london_lsoas()
    east, north = lsoas.easting.round(), lsoas.northing.round()
    lon, lat = bng_to_wgs84(east, north)
    rows = []

    def row(pcds, laua, e, n, lo, la, lsoa="", doterm="", grid="1"):
        values = dict.fromkeys(ONSPD_HEADER, "")
        outward, inward = pcds.split(" ")
        values.update(pcd=f"{outward:<4}{inward}", pcd2=f"{outward:<5}{inward}", pcds=pcds, dointr="198001",
                      doterm=doterm, oslaua=laua, usertype="0", oseast1m=e, osnrth1m=n, osgrdind=grid,
                      ctry="E92000001", rgn="E12000007" if laua.startswith("E09") else "E12000008",
                      lat=la, long=lo, lsoa11=lsoa)
        rows.append([values[c] for c in ONSPD_HEADER])

    postcodes = demo_postcodes()
    for k, postcode in enumerate(postcodes):
        row(postcode, LONDON_BOROUGHS[str(lsoas.boroughs[k])], f"{east[k]:.0f}", f"{north[k]:.0f}",
            f"{lon[k]:.6f}", f"{lat[k]:.6f}", str(lsoas.codes[k]))
    for k in range(0, 50, 10):      # terminated postcodes next to live ones (sector 0, unit xA)
        outward = postcode_district(postcodes[k])
        row(f"{outward} 0{UNIT_LETTERS[k // 10]}A", LONDON_BOROUGHS[str(lsoas.boroughs[k])], f"{east[k]:.0f}",
            f"{north[k]:.0f}", f"{lon[k]:.6f}", f"{lat[k]:.6f}", str(lsoas.codes[k]), doterm="201512")
    row("SW1A 0ZZ", "E09000033", "", "", "0.000000", "99.999999", grid="9")     # no grid reference
    row("SL1 1AA", "E06000039", "497400", "179700", "-0.596000", "51.510000")   # Slough: outside London
    row("GU1 1AA", "E07000209", "499500", "149600", "-0.574000", "51.238000")   # Guildford
    return write_csv(Path(out_dir) / DEMO_ONSPD_FILE, ONSPD_HEADER, rows)


def postcode_district(postcode: str) -> str:
    return postcode.split(" ")[0]


def generate_las(out_dir: Path, months: list[str], seed: int) -> list[Path]:
    """LAS assault call-outs: 80 % with a point, 15 % postcode and borough, 5 % postcode only. Postcodes are
    the demo directory's postcode of the call's LSOA (write_demo_onspd), a few of them unknown to it."""
    from loaders.demo import london_lsoas

    lsoas = london_lsoas()
    postcodes = demo_postcodes()
    written = []
    for month in months:
        rng = random.Random(f"{seed}-las-{month}")
        rows = []
        for n in range(LAS_ROWS_PER_MONTH):
            when = _random_minute(rng, month)
            k = rng.randrange(len(lsoas.codes))
            borough = str(lsoas.boroughs[k])
            postcode = postcodes[k]
            if rng.random() < LAS_UNKNOWN_POSTCODE_SHARE:   # a postcode the directory does not hold yet
                postcode = f"{postcode_district(postcode)} 0{rng.choice(UNIT_LETTERS[5:])}{rng.choice(UNIT_LETTERS)}"
            kind = rng.random()
            if kind < 0.80:
                easting, northing, postcode_out, borough_out = (f"{lsoas.easting[k]:.0f}", f"{lsoas.northing[k]:.0f}",
                                                                "", "")
            elif kind < 0.95:
                easting = northing = ""
                postcode_out, borough_out = postcode, borough
            else:
                easting = northing = borough_out = ""
                postcode_out = postcode
            rows.append((f"LAS{month.replace('-', '')}{n + 1:05d}", when.strftime("%Y-%m-%d"), when.strftime("%H:%M"),
                         _pick(rng, LAS_CATEGORIES), easting, northing, postcode_out, borough_out,
                         _pick(rng, LAS_AGE_BANDS), rng.choices(("Male", "Female", "Unknown"), (72, 27, 1))[0]))
        rows.sort(key=lambda r: (r[1], r[2]))
        written.append(write_csv(out_dir / f"{month}-las-assaults.csv", LasAssaultsFormat.columns, rows))
    return written


def istv_rows(rng: random.Random, site: str, month: str, n: int,
              streets: list[str] | None = None) -> list[tuple[str, ...]]:
    """ISTV assault records (CSV_COLUMNS order) for one site and calendar month; with ``streets`` (street names
    of the site's borough), ISTV_STREET_SHARE of the free-text locations name one of them."""
    year, mon = int(month[:4]), int(month[5:])
    start = datetime(year, mon, 1)
    end = (start.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    rows = []
    for _ in range(n):
        assaulted = _random_minute(rng, month)
        arrived = assaulted + timedelta(minutes=rng.randint(15, 240))
        method = _pick(rng, ISTV_METHODS)
        other = rng.choice(("chair", "dog bite", "vehicle")) if method == "07" else ""
        location_type = rng.choice(list(LOCATION_TYPES))
        rows.append((site, start.date().isoformat(), end.date().isoformat(),
                     arrived.strftime("%Y-%m-%dT%H:%M:00") if rng.random() > 0.03 else "",
                     assaulted.strftime("%Y-%m-%dT%H:%M:00"), method, other, location_type,
                     _istv_description(rng, streets) if rng.random() > 0.1 else ""))
    rows.sort(key=lambda r: r[4])
    return rows


def _istv_description(rng: random.Random, streets: list[str] | None) -> str:
    """A free-text location as an ED receptionist types it: often a street, abbreviated or misspelt."""
    if not streets or rng.random() >= ISTV_STREET_SHARE:
        return rng.choice(ISTV_LOCATION_DESCRIPTIONS)
    street = rng.choice(streets)
    words = street.split(" ")
    kind = rng.random()
    if kind < 0.3 and words[-1] in STREET_ABBREVIATIONS:
        street = " ".join(words[:-1] + [STREET_ABBREVIATIONS[words[-1]]])
    elif kind < 0.4 and len(words[0]) > 5:      # a typo: one letter of the first word dropped
        cut = rng.randrange(1, len(words[0]) - 1)
        street = " ".join([words[0][:cut] + words[0][cut + 1:]] + words[1:])
    return rng.choice(ISTV_STREET_TEMPLATES).format(street=street)


def streets_by_borough(street_files: list[Path]) -> dict[str, list[str]]:
    """Street names (police.uk "On or near ..." locations, generic place types and road numbers left out) of
    each borough in the police.uk demo files, most used first."""
    from collections import Counter

    from loaders.boundaries import LONDON_BOROUGHS
    from loaders.demo import london_lsoas
    from loaders.locating import POLICE_UK_PLACE_TYPES, normalise_name

    lsoas = london_lsoas()
    borough_of = {str(c): LONDON_BOROUGHS[str(b)] for c, b in zip(lsoas.codes, lsoas.boroughs)}
    counts: dict[str, Counter] = {}
    for path in street_files:
        for r in _street_rows(path):
            name = r["Location"].removeprefix("On or near ").strip()
            borough = borough_of.get(r["LSOA code"])
            if borough and " " in name and normalise_name(name) not in POLICE_UK_PLACE_TYPES:
                counts.setdefault(borough, Counter())[name] += 1
    return {b: [name for name, _ in c.most_common(60)] for b, c in counts.items()}


def istv_xml(rows: list[tuple[str, ...]]) -> bytes:
    """An ISTV XML submission (docs/suppliers/istv.xsd) of rows in CSV_COLUMNS order (one site and period)."""
    site, start, end = rows[0][:3]
    out = io.StringIO()
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n<ISTVSubmission>\n  <SubmissionHeader>\n'
              f"    <ReportingPeriodStartDate>{start}</ReportingPeriodStartDate>\n"
              f"    <ReportingPeriodEndDate>{end}</ReportingPeriodEndDate>\n"
              f"    <SiteCodeOfTreatment>{site}</SiteCodeOfTreatment>\n  </SubmissionHeader>\n")
    for _, _, _, arrival, assault, method, other, location_type, description in rows:
        out.write("  <Assault>\n")
        for tag, value in (("ArrivalDateTime", arrival), ("AssaultDateTime", assault), ("AssaultMethod", method),
                           ("AssaultMethodOtherDescription", other), ("AssaultLocationType", location_type),
                           ("AssaultLocationDescription", description)):
            if value:
                out.write(f"    <{tag}>{escape(value)}</{tag}>\n")
        out.write("  </Assault>\n")
    out.write("</ISTVSubmission>\n")
    return out.getvalue().encode("utf-8")


def generate_istv(out_dir: Path, months: list[str], seed: int, street_files: list[Path] = ()) -> list[Path]:
    """One submission per demo ED site and month: XML for all sites but the last, which sends CSV. Free-text
    locations name streets of the site's borough from the police.uk demo files (``street_files``)."""
    written = []
    sites = sorted(ED_SITES)
    streets = streets_by_borough(list(street_files)) if street_files else {}
    for month in months:
        for site in sites:
            rng = random.Random(f"{seed}-istv-{site}-{month}")
            rows = istv_rows(rng, site, month, ISTV_ROWS_PER_SITE_MONTH, streets.get(ED_SITES[site][1]))
            if site == sites[-1]:
                written.append(write_csv(out_dir / f"istv-{site}-{month}.csv", ISTV_CSV_COLUMNS, rows))
            else:
                path = out_dir / f"istv-{site}-{month}.xml"
                path.write_bytes(istv_xml(rows))
                written.append(path)
    return written


def generate_police_health_drops(out_dir: Path, street_files: list[Path], months: list[str], seed: int) -> list[Path]:
    """Every format of this module for ``months``, given the police.uk street demo files already written."""
    out_dir = Path(out_dir)
    return (generate_outcomes(out_dir, street_files, seed) + generate_stop_search(out_dir, street_files, seed)
            + generate_las(out_dir, months, seed) + generate_istv(out_dir, months, seed, street_files))

