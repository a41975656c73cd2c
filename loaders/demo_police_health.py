"""Demo drops for police.uk outcomes and stop and search, LAS assault call-outs and ED (ISTV) assaults.

Each generator writes its supplier's own file format (docs/suppliers/*.md), deterministically from a seed,
for the months the police.uk street demo covers, and borrows the street files' snap points (and the
LSOAs' population-weighted centres) so every located demo row lies in London. Outcomes files name Crime
IDs of the street files of the same and earlier months, plus a few that match nothing (as real outcomes
files do); stop and search leaves a tenth of rows without coordinates; LAS rows carry a point, a postcode
and borough, or neither; ISTV drops are XML submissions for most demo sites and a CSV for one. Volumes are
small (a few hundred rows a month per supplier) so ``./dev portal`` stays quick.
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
POSTCODE_DISTRICTS = {"E09000022": "SW9", "E09000030": "E1", "E09000028": "SE15", "E09000014": "N17",
                      "E09000009": "W5", "E09000033": "W1D", "E09000012": "E8", "E09000025": "E15"}


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


def generate_las(out_dir: Path, months: list[str], seed: int) -> list[Path]:
    """LAS assault call-outs: 80 % with a point, 15 % postcode and borough, 5 % postcode only."""
    from loaders.boundaries import LONDON_BOROUGHS
    from loaders.demo import london_lsoas

    lsoas = london_lsoas()
    written = []
    for month in months:
        rng = random.Random(f"{seed}-las-{month}")
        rows = []
        for n in range(LAS_ROWS_PER_MONTH):
            when = _random_minute(rng, month)
            k = rng.randrange(len(lsoas.codes))
            borough = str(lsoas.boroughs[k])
            district = POSTCODE_DISTRICTS.get(LONDON_BOROUGHS[borough], "SE1")
            postcode = f"{district} {rng.randint(1, 9)}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}"
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


def istv_rows(rng: random.Random, site: str, month: str, n: int) -> list[tuple[str, ...]]:
    """ISTV assault records (CSV_COLUMNS order) for one site and calendar month."""
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
                     rng.choice(ISTV_LOCATION_DESCRIPTIONS) if rng.random() > 0.1 else ""))
    rows.sort(key=lambda r: r[4])
    return rows


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


def generate_istv(out_dir: Path, months: list[str], seed: int) -> list[Path]:
    """One submission per demo ED site and month: XML for all sites but the last, which sends CSV."""
    written = []
    sites = sorted(ED_SITES)
    for month in months:
        for site in sites:
            rng = random.Random(f"{seed}-istv-{site}-{month}")
            rows = istv_rows(rng, site, month, ISTV_ROWS_PER_SITE_MONTH)
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
            + generate_las(out_dir, months, seed) + generate_istv(out_dir, months, seed))

