"""The police.uk outcomes and stop-and-search, LAS and ISTV loaders, and BTP street files, on a real PostGIS.

Real files where they exist (../shared/data/police_uk: the Met's stop and search, the burglary-only street
and outcomes subset); generated files, in each supplier's documented format, for the rest. Expected numbers
come from the CSVs themselves (csv module), not from the loaders' code.
"""
from __future__ import annotations

import csv
import gzip
import io
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from loaders.demo_police_health import istv_rows, istv_xml
from loaders.istv import CSV_COLUMNS as ISTV_COLUMNS
from loaders.las import LasAssaultsFormat
from loaders.pipeline import load_paths
from loaders.police_uk_outcomes import PoliceUkOutcomesFormat
from tests.conftest import query

STREET_HEADER = ("Crime ID,Month,Reported by,Falls within,Longitude,Latitude,Location,LSOA code,LSOA name,"
                 "Crime type,Last outcome category,Context")
BTP = "British Transport Police"


def read_rows(path: Path) -> list[dict]:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))


def write(path: Path, lines: list[str], encoding="utf-8", line_end="\r\n", bom=False) -> Path:
    data = (line_end.join(lines) + line_end).encode(encoding)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


def load(url, *paths):
    return load_paths(url, list(paths), progress=False)


def accounted(url, result):
    """loaded + quarantined + unmatched = rows read, in the result and in the database."""
    assert result.rows_loaded + result.rows_quarantined + result.rows_unmatched == result.rows_read
    drop = query(url, "SELECT rows_read, rows_loaded, rows_quarantined, rows_unmatched FROM drops WHERE id = %s",
                 (result.drop_id,))[0]
    assert drop == (result.rows_read, result.rows_loaded, result.rows_quarantined, result.rows_unmatched)
    assert query(url, "SELECT count(*) FROM quarantine WHERE drop_id = %s", (result.drop_id,))[0][0] == \
        result.rows_quarantined


def snapshot(url):
    return query(url, """SELECT (SELECT count(*) FROM incidents), (SELECT count(*) FROM quarantine),
                                (SELECT count(*) FROM drops WHERE status = 'loaded'),
                                (SELECT count(*) FROM police_uk_outcome_history),
                                (SELECT sum(hashtext(attributes::text)) FROM incidents)""")[0]


# -- British Transport Police street files ---------------------------------------------------------------------

def btp_row(crime_id, month="2023-01", lon="-0.123600", lat="51.530700", crime_type="Theft from the person",
            outcome="Under investigation"):
    return (f"{crime_id},{month},{BTP},{BTP},{lon},{lat},On or near Kings Cross (station),E01000914,Camden 026D,"
            f"{crime_type},{outcome},")


def test_btp_street_file_loads_with_its_force_and_replaces_its_own_month(clean_data, tmp_path):
    first = write(tmp_path / "2023-01-btp-street.csv", [STREET_HEADER] + [btp_row(f"{i:064x}") for i in range(1, 6)]
                  + [btp_row("", crime_type="Anti-social behaviour", outcome="")])
    [result] = load(clean_data, first)
    assert result.status == "loaded" and result.rows_loaded == 6, result.summary_line()
    assert query(clean_data, "SELECT replace_key FROM drops WHERE id = %s", (result.drop_id,))[0][0] == f"{BTP}|2023-01"
    assert query(clean_data, "SELECT DISTINCT attributes->>'force', borough_code FROM incidents") == [(BTP, "E09000007")]
    # A re-issue of the same force and month replaces it; another force's month is left alone.
    city = write(tmp_path / "2023-01-city-of-london-street.csv", [STREET_HEADER + ""] + [
        btp_row("f" * 64).replace(BTP, "City of London Police")])
    reissue = tmp_path / "reissue"
    reissue.mkdir()
    again = write(reissue / "2023-01-btp-street.csv", [STREET_HEADER] + [btp_row(f"{i:064x}", outcome="Local resolution")
                                                                       for i in range(1, 4)])
    results = load(clean_data, city, again)
    assert [r.status for r in results] == ["loaded", "loaded"]
    assert results[1].replaced_drop_ids == [result.drop_id]
    assert query(clean_data, """SELECT attributes->>'force', count(*) FROM incidents GROUP BY 1 ORDER BY 1""") == \
        [(BTP, 3), ("City of London Police", 1)]


# -- police.uk outcomes -------------------------------------------------------------------------------------------

@pytest.mark.shared_data
def test_real_outcomes_update_loaded_burglaries_and_count_the_rest(clean_data, shared_data):
    folder = shared_data / "police_uk" / "metropolitan_burglary_only"
    outcomes = sorted(folder.glob("*-outcomes.csv"))
    streets = sorted(folder.glob("*-street.csv.gz"))
    assert len(outcomes) == len(streets) == 11
    # Given outcomes first: the pipeline loads update drops after the drops they update.
    results = load(clean_data, *outcomes[:3], *streets[:3])
    assert [r.path.name for r in results][-3:] == [p.name for p in outcomes[:3]]
    assert all(r.status == "loaded" for r in results), [r.summary_line() for r in results]
    loaded_ids = {row[0] for row in query(clean_data, "SELECT DISTINCT supplier_record_id FROM incidents")}
    latest: dict[str, tuple[str, str]] = {}
    for path, result in zip(outcomes[:3], results[-3:]):
        rows = read_rows(path)
        accounted(clean_data, result)
        assert result.rows_read == len(rows)
        assert result.rows_quarantined == 0
        assert result.rows_unmatched == sum(1 for r in rows if r["Crime ID"] not in loaded_ids) > 0
        assert result.rows_loaded == sum(1 for r in rows if r["Crime ID"] in loaded_ids) > 0
        for r in rows:
            if r["Crime ID"] in loaded_ids:
                latest[r["Crime ID"]] = (r["Outcome type"], r["Month"])   # files in month order; last row wins
    assert query(clean_data, "SELECT count(*) FROM police_uk_outcome_history")[0][0] == \
        sum(r.rows_read for r in results[-3:])
    got = dict((cid, (o, m)) for cid, o, m in query(clean_data, """
        SELECT DISTINCT supplier_record_id, attributes->>'last_outcome_category', attributes->>'last_outcome_month'
        FROM incidents WHERE attributes ? 'last_outcome_month'"""))
    assert got == latest


def outcome_line(crime_id, month, outcome):
    return (f"{crime_id},{month},City of London Police,City of London Police,-0.092000,51.515000,On or near Cheapside,"
            f"E01032739,City of London 001F,{outcome}")


def test_outcomes_reissue_replaces_history_and_same_file_twice_changes_nothing(clean_data, tmp_path):
    street = write(tmp_path / "2023-01-city-of-london-street.csv", [STREET_HEADER] + [
        btp_row(c * 64).replace(BTP, "City of London Police") for c in "abc"])
    header = ",".join(PoliceUkOutcomesFormat.columns)
    first = write(tmp_path / "2023-02-city-of-london-outcomes.csv", [header, outcome_line("a" * 64, "2023-02", "Local resolution"),
                                                                      outcome_line("b" * 64, "2023-02", "Suspect charged"),
                                                                      outcome_line("9" * 64, "2023-02", "Suspect charged"),
                                                                      outcome_line("", "2023-02", "Suspect charged"),
                                                                      outcome_line("c" * 64, "2099-01", "Suspect charged")])
    _, result = load(clean_data, street, first)
    accounted(clean_data, result)
    assert (result.rows_loaded, result.rows_unmatched, result.rows_quarantined) == (2, 1, 2)
    assert "1 unmatched" in result.summary_line()
    before = snapshot(clean_data)
    [again] = load(clean_data, first)
    assert again.status == "skipped" and snapshot(clean_data) == before
    reissue = tmp_path / "r"
    reissue.mkdir()
    second = write(reissue / first.name, [header, outcome_line("a" * 64, "2023-02", "Offender given a caution")])
    [replaced] = load(clean_data, second)
    assert replaced.replaced_drop_ids == [result.drop_id]
    assert query(clean_data, "SELECT crime_id, outcome_type FROM police_uk_outcome_history") == \
        [("a" * 64, "Offender given a caution")]
    assert dict(query(clean_data, """SELECT left(supplier_record_id, 1), attributes->>'last_outcome_category'
                                     FROM incidents""")) == {"a": "Offender given a caution", "b": "Suspect charged",
                                                             "c": "Under investigation"}


# -- police.uk stop and search ------------------------------------------------------------------------------------

@pytest.mark.shared_data
def test_real_stop_and_search_exact_accounting_and_counts_by_object(clean_data, shared_data):
    files = sorted((shared_data / "police_uk").glob("*-metropolitan-stop-and-search.csv.gz"))
    assert len(files) == 10
    results = load(clean_data, *files)
    assert all(r.status == "loaded" for r in results), [r.summary_line() for r in results]
    expected_objects: Counter = Counter()
    unlocated = 0
    for path, result in zip(files, results):
        rows = read_rows(path)
        accounted(clean_data, result)
        assert result.rows_read == len(rows) and result.rows_unmatched == 0
        unlocated += sum(1 for r in rows if not r["Latitude"])
        # Every quarantined row has a point outside London (rows without one are kept, located to nothing).
        reasons = [r[0] for r in query(clean_data, "SELECT reason FROM quarantine WHERE drop_id = %s", (result.drop_id,))]
        assert all(reason.startswith("outside the configured area") for reason in reasons), reasons[:3]
        quarantined_lines = {r[0] for r in query(clean_data, "SELECT line_no FROM quarantine WHERE drop_id = %s",
                                                 (result.drop_id,))}
        expected_objects.update(r["Object of search"] for n, r in enumerate(rows, start=2) if n not in quarantined_lines)
    assert dict(query(clean_data, "SELECT supplier_category, count(*) FROM incidents GROUP BY 1")) == expected_objects
    assert query(clean_data, """SELECT count(*) FROM incidents WHERE location_precision = 'none'
                                AND geom IS NULL AND lsoa_code IS NULL AND borough_code IS NULL""")[0][0] == unlocated
    assert query(clean_data, """SELECT count(*) FROM incidents WHERE location_precision = 'snap_point'
                                AND (lsoa_code IS NULL OR borough_code IS NULL)""")[0][0] == 0
    # Domain, categories, themes, access, time precision.
    assert query(clean_data, """SELECT DISTINCT c.domain, i.access_level, i.time_precision FROM incidents i
                                JOIN categories c ON c.id = i.category_id""") == [("police_activity", 10, "minute")]
    themes = dict(query(clean_data, """SELECT supplier_category, bool_or(theme_weapon IS TRUE) FROM incidents
                                       GROUP BY 1"""))
    assert themes["Offensive weapons"] and themes["Firearms"] and not themes["Controlled drugs"]
    assert query(clean_data, """SELECT count(*) FROM incidents WHERE theme_young_victim IS NOT NULL
                                OR theme_dava IS NOT NULL OR theme_night_time_economy IS NULL""")[0][0] == 0
    # The UTC timestamp of the first July row is midnight in London.
    first = read_rows(files[0])[0]["Date"]
    assert first == "2022-06-30T23:00:00+00:00"
    assert query(clean_data, """SELECT min(occurred_at AT TIME ZONE 'Europe/London') FROM incidents
                                WHERE drop_id = %s""", (results[0].drop_id,))[0][0] == datetime(2022, 7, 1, 0, 0)


SS_HEADER = ("Type,Date,Part of a policing operation,Policing operation,Latitude,Longitude,Gender,Age range,"
             "Self-defined ethnicity,Officer-defined ethnicity,Legislation,Object of search,Outcome,"
             "Outcome linked to object of search,Removal of more than just outer clothing")


def ss_row(date="2023-01-05T21:30:00+00:00", lat="51.500000", lon="-0.120000", obj="Offensive weapons"):
    return (f"Person search,{date},False,,{lat},{lon},Male,18-24,White - Any other White background,White,"
            f"Police and Criminal Evidence Act 1984 (section 1),{obj},Arrest,,")


def test_stop_and_search_bad_input(clean_data, tmp_path):
    lines = [SS_HEADER, ss_row(), ss_row(lat="", lon=""), ss_row(date="2099-01-01T10:00:00+00:00"),
             ss_row(lat="53.480000", lon="-2.240000"), ss_row(obj="Unicorns"), ss_row(date="yesterday"),
             ss_row(lat="-0.12", lon="51.5"), ss_row()]
    path = write(tmp_path / "2023-01-metropolitan-stop-and-search.csv", lines, bom=True)
    [result] = load(clean_data, path)
    accounted(clean_data, result)
    assert (result.rows_read, result.rows_loaded) == (8, 3)     # duplicate rows are two searches: both kept
    reasons = [r[0] for r in query(clean_data, "SELECT reason FROM quarantine ORDER BY line_no")]
    assert ["future" in reasons[0], "outside the configured area" in reasons[1], "no mapping" in reasons[2],
            "unparseable Date" in reasons[3], "swapped" in reasons[4]] == [True] * 5, reasons
    wrong = write(tmp_path / "2023-02-metropolitan-stop-and-search.csv", [SS_HEADER.replace("Gender", "Sex"), ss_row()])
    cp1252 = tmp_path / "2023-03-metropolitan-stop-and-search.csv"
    cp1252.write_bytes((SS_HEADER + "\r\n" + ss_row().replace("White - Any", "Caf\xe9 - Any") + "\r\n").encode("cp1252"))
    results = load(clean_data, wrong, cp1252)
    assert results[0].status == "rejected" and "'Gender'" in results[0].message and "'Sex'" in results[0].message
    assert results[1].status == "loaded" and results[1].encoding == "cp1252"
    assert query(clean_data, "SELECT attributes->>'self_defined_ethnicity' FROM incidents WHERE drop_id = %s",
                 (results[1].drop_id,)) == [("Café - Any other White background",)]


# -- London Ambulance Service -------------------------------------------------------------------------------------

LAS_HEADER = ",".join(LasAssaultsFormat.columns)


def test_las_assaults_categories_locations_access_and_bad_rows(clean_data, tmp_path):
    lines = [LAS_HEADER,
             "LAS1,2023-01-06,23:15,Stabbing,530000,180500,,,18-24,Male",             # point (Southwark/Lambeth)
             "LAS2,2023-01-07,02:05,Assault,,,SW9 8AB,Lambeth,35-44,Female",           # borough from name
             "LAS3,2023-01-07,12:00,Shooting,,,E1 6AN,E09000030,0-17,Male",            # borough from code
             "LAS4,2023-01-08,14:30,Sexual assault,,,N17 6QA,,25-34,Female",           # postcode only: none
             "LAS5,2023-01-09,09:00,Assault,,,,,Unknown,Unknown",                      # nothing: none
             "LAS1,2023-01-09,10:00,Assault,,,,Lambeth,18-24,Male",                    # duplicate number
             "LAS6,2099-01-09,10:00,Assault,,,,Lambeth,18-24,Male",                    # future
             "LAS7,2023-01-09,10:00,Assault,351000,391000,,,18-24,Male",               # Manchester: outside
             "LAS8,2023-01-09,10:00,Kicked by horse,,,,Lambeth,18-24,Male",            # unmapped category
             "LAS9,2023-01-09,10:00,Assault,,,,Narnia,18-24,Male",                     # unknown borough
             "LAS10,2023-02-01,10:00,Assault,,,,Lambeth,18-24,Male"]                   # another month's call
    path = write(tmp_path / "2023-01-las-assaults.csv", lines)
    [result] = load(clean_data, path)
    accounted(clean_data, result)
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (11, 5, 6)
    rows = query(clean_data, """SELECT supplier_record_id, category_id, theme_weapon, theme_young_victim,
                                       theme_night_time_economy, location_precision, borough_code IS NOT NULL,
                                       lsoa_code IS NOT NULL, access_level, attributes->>'location_method'
                                FROM incidents ORDER BY supplier_record_id""")
    assert rows == [
        ("LAS1", 71, True, True, True, "exact", True, True, 20, "point"),
        # No postcode directory is loaded here (tests/test_locating.py loads one): borough given, or nothing.
        ("LAS2", 70, None, False, True, "borough", True, False, 20,
         "borough given (postcode SW9 8AB not in the postcode directory)"),
        ("LAS3", 72, True, True, False, "borough", True, False, 20,
         "borough given (postcode E1 6AN not in the postcode directory)"),
        ("LAS4", 76, None, False, False, "none", False, False, 20,
         "none (postcode N17 6QA not in the postcode directory)"),
        ("LAS5", 70, None, None, False, "none", False, False, 20, "none"),
    ]
    reasons = [r[0] for r in query(clean_data, "SELECT reason FROM quarantine ORDER BY line_no")]
    for reason, expected in zip(reasons, ("duplicate Incident Number LAS1 (first on line 2)", "in the future",
                                          "outside the configured area", "no mapping", "not a London borough",
                                          "outside the drop's month")):
        assert expected in reason, reasons
    before = snapshot(clean_data)
    assert load(clean_data, path)[0].status == "skipped" and snapshot(clean_data) == before
    wrong = write(tmp_path / "2023-02-las-assaults.csv", [LAS_HEADER.replace(",Patient Sex", "")])
    assert load(clean_data, wrong)[0].status == "rejected" and snapshot(clean_data) == before


# -- ISTV (emergency departments) -----------------------------------------------------------------------------------

def test_istv_xml_and_csv_load_as_health_records_with_only_the_data_set(clean_data, tmp_path):
    import random

    rows = istv_rows(random.Random(1), "DEM01", "2023-01", 25)
    xml_path = tmp_path / "istv-DEM01-2023-01.xml"
    xml_path.write_bytes(istv_xml(rows))
    csv_rows = istv_rows(random.Random(2), "ZZZ99", "2023-01", 10)
    csv_path = tmp_path / "istv-ZZZ99-2023-01.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([ISTV_COLUMNS, *csv_rows])
    results = load(clean_data, xml_path, csv_path)
    assert [r.status for r in results] == ["loaded", "loaded"], [r.summary_line() for r in results]
    for result, n in zip(results, (25, 10)):
        accounted(clean_data, result)
        assert result.rows_loaded == n
    assert query(clean_data, "SELECT DISTINCT access_level, time_precision FROM incidents") == [(20, "minute")]
    # No gazetteer here (tests/test_locating.py builds one): the site's borough, confidence 40 (low).
    assert query(clean_data, """SELECT attributes->>'site_code', location_precision, borough_code,
                                       location_confidence, count(*)
                                FROM incidents GROUP BY 1, 2, 3, 4 ORDER BY 1""") == [
        ("DEM01", "borough", "E09000022", 40, 25), ("ZZZ99", "none", None, 0, 10)]
    allowed = {"site_code", "reporting_period_start", "reporting_period_end", "arrival_at", "assault_method",
               "assault_method_other_description", "assault_location_type", "assault_location_description",
               "location_method"}
    keys = {k for (k,) in query(clean_data, "SELECT DISTINCT jsonb_object_keys(attributes) FROM incidents")}
    assert keys <= allowed and {"site_code", "assault_method"} <= keys
    weapons = dict(query(clean_data, "SELECT supplier_category, bool_and(theme_weapon) FROM incidents "
                                     "WHERE supplier_category IN ('01', '03') GROUP BY 1"))
    assert weapons.get("03") in (True, None) and weapons.get("01") in (False, None)
    assert query(clean_data, "SELECT DISTINCT c.domain FROM incidents i JOIN categories c ON c.id = i.category_id") \
        == [("health",)]
    # Expected: one row per Assault element / CSV line, by method.
    assert dict(query(clean_data, "SELECT supplier_category, count(*) FROM incidents GROUP BY 1")) == \
        Counter(r[5] for r in rows + csv_rows)


@pytest.mark.parametrize("breakage, reason", [
    (lambda x: x.replace(b"<AssaultMethod>01</AssaultMethod>", b"<AssaultMethod>knife</AssaultMethod>", 1), "valid method"),
    (lambda x: x.replace(b"<SiteCodeOfTreatment>", b"<SiteCode>").replace(b"</SiteCodeOfTreatment>", b"</SiteCode>"),
     "SiteCodeOfTreatment"),
    (lambda x: x.replace(b"</Assault>", b"<PatientName>Jo Bloggs</PatientName></Assault>", 1), "PatientName"),
    (lambda x: x[: len(x) // 2], "not well-formed"),
    (lambda x: x.replace(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
                         b"<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"aaaa\">]>"), "DTD"),
    (lambda x: x.replace(b"<AssaultDateTime>2023-01-", b"<AssaultDateTime>2023-13-", 1), "dateTime"),
])
def test_istv_xml_breaking_the_schema_is_rejected_whole(clean_data, tmp_path, breakage, reason):
    import random

    good = istv_xml(istv_rows(random.Random(3), "DEM02", "2023-01", 5))
    for method in ("01", "02", "03", "04", "05", "06", "07", "99"):
        good = good.replace(f"<AssaultMethod>{method}</AssaultMethod>".encode(), b"<AssaultMethod>01</AssaultMethod>")
    path = tmp_path / "istv-DEM02-2023-01.xml"
    path.write_bytes(breakage(good))
    [result] = load(clean_data, path)
    assert result.status == "rejected" and reason in result.message, result.message
    assert query(clean_data, "SELECT count(*) FROM incidents")[0][0] == 0
    assert query(clean_data, "SELECT status, error FROM drops") == [("rejected", result.message)]


def test_istv_csv_bad_rows_are_quarantined(clean_data, tmp_path):
    good = ("DEM03", "2023-01-01", "2023-01-31", "2023-01-10T23:50:00", "2023-01-10T23:10:00", "03", "", "02",
            "outside the Red Lion")
    rows = [good, good,                                          # two patients, same incident: both kept
            good[:4] + ("2099-01-01T00:00:00",) + good[5:],      # future
            good[:5] + ("knife",) + good[6:],                     # not a code
            good[:7] + ("55",) + good[8:],                        # location type not a code
            ("DEM03", "2023-01-31", "2023-01-01") + good[3:]]     # period ends before it starts
    path = tmp_path / "istv-DEM03-2023-01.csv"
    text = io.StringIO()
    csv.writer(text).writerows([ISTV_COLUMNS, *rows])
    path.write_bytes(text.getvalue().encode("cp1252"))
    [result] = load(clean_data, path)
    accounted(clean_data, result)
    assert (result.rows_loaded, result.rows_quarantined) == (2, 4)
    assert query(clean_data, "SELECT DISTINCT theme_weapon, theme_night_time_economy, category_id FROM incidents") == \
        [(True, True, 71)]


def test_demo_drops_of_every_new_format_load(clean_data, tmp_path):
    from loaders.demo import generate_demo_drops

    files = generate_demo_drops(tmp_path, months=3, end_month="2025-06", rows_per_month=1500,
                                fire_and_transport=False)
    results = load(clean_data, tmp_path)
    assert len(results) == len(files) and all(r.status == "loaded" for r in results), \
        [r.summary_line() for r in results if r.status != "loaded"]
    suppliers = {r.supplier for r in results}
    assert suppliers == {"police_uk", "police_uk_outcomes", "police_uk_stop_search", "las", "istv_ed"}
    outcomes = [r for r in results if r.supplier == "police_uk_outcomes"]
    # Unmatched: the 5 invented Crime IDs per file, and outcomes of street rows quarantined for "No Location".
    loaded_ids = {row[0] for row in query(clean_data, "SELECT supplier_record_id FROM incidents WHERE supplier = 'police_uk'")}
    for result in outcomes:
        assert result.rows_unmatched == sum(1 for r in read_rows(result.path) if r["Crime ID"] not in loaded_ids) >= 5
    assert sum(r.rows_loaded for r in outcomes) > 0
    assert query(clean_data, """SELECT supplier, min(access_level), max(access_level) FROM incidents
                                GROUP BY 1 ORDER BY 1""") == [
        ("istv_ed", 20, 20), ("las", 20, 20), ("police_uk", 10, 10), ("police_uk_stop_search", 10, 10)]
