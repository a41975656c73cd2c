"""The ONS LSOA population loader takes the layouts analysts actually get and refuses files it cannot trust.

Against the real PostGIS test database with London's areas loaded: each LSOA-code and total header variant,
the mid-year from the file name or --year (and a clear error without either), thousands separators,
cp1252 and UTF-8 with BOM, title lines above the header; every rejection (missing columns, bad totals,
blank or repeated codes, a failure inside the transaction) leaves the earlier rows of that year exactly as
they were; a reload replaces the year and only that year; codes outside the loaded areas are counted and
skipped; the synthetic demo file loads completely; and the `safestats population` command's output and
exit codes.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest

from db import libpq_dsn
from loaders.population import (
    LSOA_CODE_HEADERS, TOTAL_HEADERS, PopulationFileRejected, load_population, year_from_file_name,
)
from tests.conftest import query

# Codes not in London's areas: a Welsh and a Manchester LSOA (a national file has ~30,000 such rows).
OUTSIDE_LONDON = ("W01000001", "E01005062")


def _clear_population(url: str) -> None:
    conn = psycopg2.connect(libpq_dsn(url))
    with conn, conn.cursor() as cur:
        cur.execute("TRUNCATE area_population")
    conn.close()


@pytest.fixture
def population_db(areas_loaded) -> str:
    """London's areas loaded and area_population empty (these tests commit)."""
    _clear_population(areas_loaded)
    yield areas_loaded
    _clear_population(areas_loaded)


@pytest.fixture(scope="module")
def london_codes(areas_loaded) -> list[str]:
    return [code for (code,) in query(areas_loaded, "SELECT code FROM areas WHERE level = 'lsoa' ORDER BY code")]


def write_csv(path: Path, lines: list[str], encoding: str = "utf-8", newline: str = "\r\n") -> Path:
    path.write_bytes(newline.join(lines).encode(encoding) + newline.encode())
    return path


def stored(url: str, year: int) -> dict[str, int]:
    return dict(query(url, "SELECT lsoa_code, population FROM area_population WHERE year = %s", (year,)))


@pytest.mark.parametrize("code_header", [*LSOA_CODE_HEADERS, "  lsoa   code ", "lsoa21cd"])
@pytest.mark.parametrize("total_header", [*TOTAL_HEADERS, "All ages", " ALL  AGES "])
def test_every_header_variant_is_accepted(population_db, london_codes, tmp_path, code_header, total_header):
    path = write_csv(tmp_path / "sapelsoasyoa2020.csv", [
        f'LAD 2021 Code,LAD 2021 Name,{code_header},LSOA Name,"{total_header}",F0,M0',
        f"E09000001,City of London,{london_codes[0]},City of London 001A,1465,3,4",
        f"E09000001,City of London,{london_codes[1]},City of London 001B,1210,5,2",
        f"W06000001,Isle of Anglesey,{OUTSIDE_LONDON[0]},Isle of Anglesey 001A,1597,9,8",
    ])

    report = load_population(population_db, path)

    assert (report.year, report.rows_read, report.stored, report.unknown_codes) == (2020, 3, 2, 1)
    assert stored(population_db, 2020) == {london_codes[0]: 1465, london_codes[1]: 1210}
    assert report.source_file == "sapelsoasyoa2020.csv"
    assert query(population_db, "SELECT DISTINCT source FROM area_population") == [("sapelsoasyoa2020.csv",)]


@pytest.mark.parametrize("file_name, year", [
    ("sapelsoasyoa2020.csv", 2020),
    ("mid-2019-lsoa-population.csv", 2019),
    ("sape23dt2mid2020lsoasyoaestimatesunformatted.csv", 2020),
    ("Mid_2022 LSOA 2021 persons.csv", 2022),
    ("sapelsoasyoa2022-release-mid-2021.csv", 2021),   # an explicit "mid-YYYY" wins over another year
])
def test_year_from_the_file_name(file_name, year):
    assert year_from_file_name(file_name) == year


@pytest.mark.parametrize("file_name", ["lsoa-population.csv", "sapelsoasyoa20192022.csv", "pop 2019 and 2020.csv"])
def test_no_single_year_in_the_file_name_asks_for_year(file_name):
    with pytest.raises(PopulationFileRejected, match="--year"):
        year_from_file_name(file_name)


def test_year_flag_wins_and_is_required_without_a_year_in_the_name(population_db, london_codes, tmp_path):
    lines = ["LSOA Code,LSOA Name,All Ages", f"{london_codes[0]},City of London 001A,1500"]

    report = load_population(population_db, write_csv(tmp_path / "sapelsoasyoa2020.csv", lines), year=2021)
    assert report.year == 2021 and stored(population_db, 2021) == {london_codes[0]: 1500}
    assert stored(population_db, 2020) == {}

    with pytest.raises(PopulationFileRejected, match="pass it with --year YYYY"):
        load_population(population_db, write_csv(tmp_path / "lsoa-population.csv", lines))
    with pytest.raises(PopulationFileRejected, match="outside 1990-2100"):
        load_population(population_db, write_csv(tmp_path / "lsoa-population.csv", lines), year=20)


def test_thousands_separators_and_whole_decimals(population_db, london_codes, tmp_path):
    path = write_csv(tmp_path / "mid-2020.csv", [
        "LSOA Code,LSOA Name,All Ages",
        f'{london_codes[0]},City of London 001A,"1,234"',
        f'{london_codes[1]},City of London 001B,"12,345"',
        f"{london_codes[2]},City of London 001C,1876.0",
        f"{london_codes[3]},City of London 001E, 987 ",
    ])

    load_population(population_db, path)

    assert stored(population_db, 2020) == {london_codes[0]: 1234, london_codes[1]: 12345, london_codes[2]: 1876,
                                           london_codes[3]: 987}


@pytest.mark.parametrize("encoding", ["cp1252", "utf-8-sig", "utf-8"])
def test_cp1252_and_utf8_with_or_without_bom(population_db, london_codes, tmp_path, encoding):
    # Welsh LSOA names carry accents, so the name column is where encodings differ in real files.
    path = write_csv(tmp_path / "mid-2020.csv", [
        "LSOA Code,LSOA Name,All Ages",
        f"{OUTSIDE_LONDON[0]},Ynys Môn 001A,1597",
        f"{london_codes[0]},City of London 001A,1465",
    ], encoding=encoding)

    report = load_population(population_db, path)

    assert (report.stored, report.unknown_codes) == (1, 1)
    assert stored(population_db, 2020) == {london_codes[0]: 1465}


def test_an_undecodable_line_in_a_utf8_file_rejects_it(population_db, london_codes, tmp_path):
    path = tmp_path / "mid-2020.csv"
    path.write_bytes("LSOA Code,LSOA Name,All Ages\r\n".encode()
                     + f"{OUTSIDE_LONDON[0]},Ynys Môn 001A,1597\r\n".encode("utf-8")
                     + f"{london_codes[0]},Ynys M\xf4n 001B,1465\r\n".encode("cp1252"))

    with pytest.raises(PopulationFileRejected, match="line 3: not valid UTF-8"):
        load_population(population_db, path)
    assert stored(population_db, 2020) == {}


def test_title_lines_above_the_header_are_skipped(population_db, london_codes, tmp_path):
    # What "Save as CSV" makes of the Persons sheet of ONS's workbook: title rows, then the header.
    path = write_csv(tmp_path / "sape23dt2mid2020lsoasyoaestimatesunformatted.csv", [
        "Mid-2020 Population Estimates for Lower Layer Super Output Areas in England and Wales,,,",
        "All Persons,,,",
        ",,,",
        "Source: Office for National Statistics,,,",
        "LSOA Code,LSOA Name,All Ages,0",
        f"{london_codes[0]},City of London 001A,1465,13",
        ",,,",
    ])

    report = load_population(population_db, path)

    assert (report.year, report.rows_read, report.stored) == (2020, 1, 1)


@pytest.mark.parametrize("header, row, message", [
    ("LSOA Code,LSOA Name,Population", "{code},City of London 001A,1465",
     "missing column: total population (one of All Ages, Total, Persons)"),
    ("Code,LSOA Name,All Ages", "{code},City of London 001A,1465",
     "missing column: LSOA code (one of LSOA Code, LSOA 2011 Code"),
    ("Code,Name,People", "{code},City of London 001A,1465", "missing columns: LSOA code"),
    ("LSOA Code,LSOA11CD,All Ages", "{code},{code},1465", "more than one LSOA code column"),
    ("LSOA Code,LSOA Name,All Ages", "{code},City of London 001A,n/a",
     "line 3 ({code}): the total 'n/a' is not a whole number"),
    ("LSOA Code,LSOA Name,All Ages", "{code},City of London 001A,-12", "line 3 ({code}): the total '-12' is negative"),
    ("LSOA Code,LSOA Name,All Ages", "{code},City of London 001A,1465.5", "not a whole number"),
    ("LSOA Code,LSOA Name,All Ages", "{code},City of London 001A,", "line 3 ({code}): the total is blank"),
    ("LSOA Code,LSOA Name,All Ages", " ,City of London 001A,1465", "line 3: the LSOA code is blank"),
    ("LSOA Code,LSOA Name,All Ages", "{first},City of London 001A,1465",
     "line 3: {first} is listed again (first on line 2)"),
])
def test_a_rejected_file_leaves_the_year_as_it_was(population_db, london_codes, tmp_path, header, row, message):
    first, code = london_codes[0], london_codes[1]
    load_population(population_db, write_csv(tmp_path / "mid-2020-good.csv", [
        "LSOA Code,LSOA Name,All Ages", f"{first},City of London 001A,1400", f"{code},City of London 001B,1300"]))
    before = query(population_db, "SELECT lsoa_code, year, population, source, loaded_at FROM area_population "
                                  "ORDER BY lsoa_code")
    bad = write_csv(tmp_path / "mid-2020-bad.csv", [header, f"{first},City of London 001A,1500",
                                                    row.format(code=code, first=first)])

    with pytest.raises(PopulationFileRejected) as rejected:
        load_population(population_db, bad)

    assert message.format(code=code, first=first) in str(rejected.value)
    assert query(population_db, "SELECT lsoa_code, year, population, source, loaded_at FROM area_population "
                                "ORDER BY lsoa_code") == before


def test_rejection_lists_the_first_lines_and_counts_the_rest(population_db, london_codes, tmp_path):
    lines = ["LSOA Code,LSOA Name,All Ages"] + [f"{code},x,unknown" for code in london_codes[:8]]

    with pytest.raises(PopulationFileRejected) as rejected:
        load_population(population_db, write_csv(tmp_path / "mid-2020.csv", lines))

    text = str(rejected.value)
    assert text.startswith("8 rows cannot be trusted, so nothing was loaded: line 2 ")
    assert "line 6 " in text and "line 7 " not in text and "(and 3 more)" in text


def test_a_failure_inside_the_transaction_changes_nothing(population_db, london_codes, tmp_path, monkeypatch):
    """The delete of the old year and the COPY of the new one commit together or not at all."""
    import loaders.population as population

    load_population(population_db, write_csv(tmp_path / "mid-2020-a.csv", [
        "LSOA Code,LSOA Name,All Ages", f"{london_codes[0]},City of London 001A,1400"]))

    class CopyThenFail(psycopg2.extensions.cursor):
        def copy_expert(self, *args, **kwargs):
            super().copy_expert(*args, **kwargs)
            raise RuntimeError("connection lost after the COPY")

    real_connect = psycopg2.connect
    monkeypatch.setattr(population.psycopg2, "connect",
                        lambda dsn: real_connect(dsn, cursor_factory=CopyThenFail))
    with pytest.raises(RuntimeError):
        load_population(population_db, write_csv(tmp_path / "mid-2020-b.csv", [
            "LSOA Code,LSOA Name,All Ages", f"{london_codes[1]},City of London 001B,1300"]))

    assert stored(population_db, 2020) == {london_codes[0]: 1400}


def test_a_reload_replaces_that_year_only(population_db, london_codes, tmp_path):
    header = "LSOA Code,LSOA Name,All Ages"
    load_population(population_db, write_csv(tmp_path / "mid-2019.csv", [header, f"{london_codes[0]},a,1100"]))
    load_population(population_db, write_csv(tmp_path / "mid-2020-first.csv", [
        header, f"{london_codes[0]},a,1200", f"{london_codes[1]},b,1300"]))

    report = load_population(population_db, write_csv(tmp_path / "mid-2020-revised.csv", [
        header, f"{london_codes[1]},b,1350", f"{london_codes[2]},c,1450"]))

    assert report.replaced_rows == 2 and "replaced the 2 earlier rows for 2020" in report.summary()
    assert stored(population_db, 2020) == {london_codes[1]: 1350, london_codes[2]: 1450}
    assert stored(population_db, 2019) == {london_codes[0]: 1100}
    assert query(population_db, "SELECT DISTINCT source FROM area_population WHERE year = 2020") == [
        ("mid-2020-revised.csv",)]


def test_unknown_codes_are_counted_and_low_coverage_warns(population_db, london_codes, tmp_path):
    path = write_csv(tmp_path / "mid-2020.csv", ["LSOA Code,LSOA Name,All Ages"]
                     + [f"{code},x,1500" for code in london_codes[:100]]
                     + [f"{code},y,1600" for code in OUTSIDE_LONDON])

    report = load_population(population_db, path)

    assert (report.rows_read, report.stored, report.unknown_codes) == (102, 100, 2)
    assert report.lsoas_loaded == len(london_codes) == 4835
    assert report.lsoas_without_population == 4735
    assert report.summary().startswith(
        "Population mid-2020 from mid-2020.csv: 102 rows read, 100 stored, 2 with codes not in the loaded areas "
        "(skipped), 4,735 of 4,835 loaded LSOAs without a population.")
    assert "Warning: only 100 of the 4,835 loaded LSOAs (2%) have a population" in report.summary()


def test_the_synthetic_demo_file_covers_every_london_lsoa(population_db, tmp_path):
    from loaders.demo import write_demo_population_csv

    report = load_population(population_db, write_demo_population_csv(tmp_path, 2023))

    assert (report.year, report.rows_read, report.stored, report.unknown_codes) == (2023, 4835, 4835, 0)
    assert report.lsoas_without_population == 0 and report.coverage_warning is None
    total, = query(population_db, "SELECT sum(population) FROM area_population WHERE year = 2023")[0]
    assert 7_000_000 < total < 10_000_000, "London's population is about 8.8 million"


def _safestats(args: list[str], url: str, home: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("safestats")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "safestats.cli"]
    env = dict(os.environ, DATABASE_URL=url, SAFESTATS_HOME=str(home))
    return subprocess.run(command + args, env=env, capture_output=True, text=True, timeout=300)


def test_the_population_command(population_db, london_codes, tmp_path):
    good = write_csv(tmp_path / "sapelsoasyoa2020.csv", ["LSOA Code,LSOA Name,All Ages",
                                                         f"{london_codes[0]},City of London 001A,1465"])
    bad = write_csv(tmp_path / "sapelsoasyoa2021.csv", ["LSOA Code,LSOA Name,All Ages",
                                                        f"{london_codes[0]},City of London 001A,lots"])
    no_year = write_csv(tmp_path / "lsoa-population.csv", ["LSOA Code,LSOA Name,All Ages",
                                                            f"{london_codes[0]},City of London 001A,1500"])

    help_text = _safestats(["--help"], population_db, tmp_path / "home")
    ok = _safestats(["population", str(good)], population_db, tmp_path / "home")
    rejected = _safestats(["population", str(bad)], population_db, tmp_path / "home")
    missing_year = _safestats(["population", str(no_year)], population_db, tmp_path / "home")
    with_year = _safestats(["population", str(no_year), "--year", "2022"], population_db, tmp_path / "home")

    assert "population" in help_text.stdout
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("Population mid-2020 from sapelsoasyoa2020.csv: 1 rows read, 1 stored")
    assert rejected.returncode == 1 and rejected.stdout == ""
    assert "not loaded, nothing changed" in rejected.stderr
    assert "the total 'lots' is not a whole number" in rejected.stderr
    assert missing_year.returncode == 1 and "--year YYYY" in missing_year.stderr
    assert with_year.returncode == 0, with_year.stdout + with_year.stderr
    assert stored(population_db, 2020) == {london_codes[0]: 1465}
    assert stored(population_db, 2021) == {}
    assert stored(population_db, 2022) == {london_codes[0]: 1500}


def test_a_database_without_the_table_or_areas_says_what_to_run(tmp_path):
    import uuid

    from db import migrate
    from tests.conftest import drop_database, make_database

    url = make_database(f"safestats_test_population_{uuid.uuid4().hex[:10]}")
    path = write_csv(tmp_path / "mid-2020.csv", ["LSOA Code,LSOA Name,All Ages", "E01000001,x,1465"])
    try:
        with pytest.raises(PopulationFileRejected, match="run `safestats migrate`"):
            load_population(url, path)
        migrate.upgrade(url)
        with pytest.raises(PopulationFileRejected, match="run `safestats boundaries` first"):
            load_population(url, path)
        assert query(url, "SELECT count(*) FROM area_population") == [(0,)]
    finally:
        drop_database(url)
