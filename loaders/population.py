"""Load ONS mid-year resident population estimates by LSOA into ``area_population``, for rates per 1,000.

The source is ONS's "Lower layer Super Output Area population estimates" (small area population estimates,
SAPE), the Persons sheet saved as CSV. ONS has changed the layout between releases, so the loader finds its
two columns by name: the LSOA code (``LSOA Code``, ``LSOA 2011 Code``, ``LSOA 2021 Code``, ``LSOA11CD``,
``LSOA21CD``) and the all-ages total (``All Ages``, ``Total``, ``Persons``), case- and space-insensitively;
every other column (names, local authorities, single years of age) is ignored, and title lines above the
header (what a saved workbook sheet carries) are skipped. The mid-year comes from ``year`` or from the one
4-digit year in the file name. The file must be complete and trustworthy: a blank code, a total that is not
a whole non-negative number, or a code listed twice rejects the whole file, naming the first lines at
fault, and nothing changes. Codes the ``areas`` table does not hold (a file covers England and Wales;
SafeStats may hold only London) are counted and skipped. The year is replaced in one transaction (delete
that year, COPY the new rows), so a reload replaces it and a failure leaves the previous rows in place.
See docs/suppliers/ons_population.md.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from db import libpq_dsn
from loaders.pipeline import DropRejected, decode_supplier_bytes

# Header names as ONS releases have spelt them, compared after _normalise_header.
LSOA_CODE_HEADERS = ("LSOA Code", "LSOA 2011 Code", "LSOA 2021 Code", "LSOA11CD", "LSOA21CD")
TOTAL_HEADERS = ("All Ages", "Total", "Persons")
# A workbook sheet saved as CSV keeps the title rows above the header; look this far for the header.
HEADER_SEARCH_LINES = 20
# How many faulty lines a rejection message lists (the count of all of them is given too).
REJECTION_EXAMPLES = 5
# Below this share of the loaded LSOAs having a population, the report warns (wrong file or vintage?).
COVERAGE_WARNING_SHARE = 0.5
# area_population.year CHECK constraint (migration 0003).
MIN_YEAR, MAX_YEAR = 1990, 2100
POSTGRES_INTEGER_MAX = 2_147_483_647

_WHOLE_NUMBER = re.compile(r"\d+(?:\.0*)?|\d{1,3}(?:,\d{3})+(?:\.0*)?")
_YEAR_IN_NAME = re.compile(r"(?<!\d)(\d{4})(?!\d)")
_MID_YEAR_IN_NAME = re.compile(r"mid[-_ ]?(\d{4})(?!\d)", re.IGNORECASE)


class PopulationFileRejected(Exception):
    """The population file is refused as a whole; the message says why and what to do. Nothing was changed."""


@dataclass(frozen=True)
class PopulationLoadReport:
    year: int
    source_file: str
    rows_read: int                  # data rows in the file (blank lines not counted)
    stored: int                     # rows written to area_population (codes found in areas)
    unknown_codes: int              # rows whose LSOA code is not in areas (level 'lsoa'): skipped
    lsoas_without_population: int   # loaded LSOAs the file gave no population for
    lsoas_loaded: int               # LSOAs in areas when the file was loaded
    replaced_rows: int              # rows of the same year deleted first (an earlier load)

    @property
    def coverage_warning(self) -> str | None:
        """Why the file covers too few of the loaded LSOAs, or None when it covers enough."""
        if self.lsoas_loaded and self.stored < COVERAGE_WARNING_SHARE * self.lsoas_loaded:
            return (f"only {self.stored:,} of the {self.lsoas_loaded:,} loaded LSOAs "
                    f"({self.stored / self.lsoas_loaded:.0%}) have a population: is the file for the other LSOA "
                    "vintage (2011 or 2021 codes) than the boundaries, or for another region?")
        return None

    def summary(self) -> str:
        line = (f"Population mid-{self.year} from {self.source_file}: {self.rows_read:,} rows read, "
                f"{self.stored:,} stored, {self.unknown_codes:,} with codes not in the loaded areas (skipped), "
                f"{self.lsoas_without_population:,} of {self.lsoas_loaded:,} loaded LSOAs without a population")
        if self.replaced_rows:
            line += f"; replaced the {self.replaced_rows:,} earlier rows for {self.year}"
        line += "."
        warning = self.coverage_warning
        return line + (f" Warning: {warning}" if warning else "")


def _normalise_header(name: str) -> str:
    return " ".join(name.split()).casefold()


def year_from_file_name(file_name: str) -> int:
    """The mid-year a file name carries ("mid-2020...", "sapelsoasyoa2020.csv"); else PopulationFileRejected."""
    mid_years = {int(y) for y in _MID_YEAR_IN_NAME.findall(file_name)}
    years = mid_years or {int(y) for y in _YEAR_IN_NAME.findall(file_name) if MIN_YEAR <= int(y) <= MAX_YEAR}
    if len(years) == 1:
        return years.pop()
    if years:
        raise PopulationFileRejected(
            f"the file name {file_name!r} names several years ({', '.join(map(str, sorted(years)))}); "
            "pass the mid-year with --year YYYY")
    raise PopulationFileRejected(
        f"the file name {file_name!r} carries no 4-digit year to take the mid-year from; pass it with --year YYYY")


def _check_year(year: int) -> int:
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise PopulationFileRejected(f"the mid-year {year} is outside {MIN_YEAR}-{MAX_YEAR}; pass --year YYYY")
    return year


def _find_column(header: list[str], accepted: tuple[str, ...]) -> list[int]:
    wanted = {_normalise_header(h) for h in accepted}
    return [i for i, name in enumerate(header) if _normalise_header(name) in wanted]


def _locate_header(rows: list[tuple[int, list[str]]]) -> tuple[int, int, int]:
    """(index into rows of the header, LSOA code column, total column), or PopulationFileRejected naming
    the missing columns. The header is the first row with an LSOA code column among the first lines."""
    candidates = [(i, fields) for i, (line_no, fields) in enumerate(rows) if line_no <= HEADER_SEARCH_LINES]
    for i, fields in candidates:
        code_columns = _find_column(fields, LSOA_CODE_HEADERS)
        if not code_columns:
            continue
        total_columns = _find_column(fields, TOTAL_HEADERS)
        for what, found in (("LSOA code", code_columns), ("total population", total_columns)):
            if len(found) > 1:
                raise PopulationFileRejected(
                    f"the header has more than one {what} column ({', '.join(fields[c] for c in found)}), so "
                    "which one to use is unclear; delete the one you do not want and load it again")
        if not total_columns:
            raise PopulationFileRejected(
                f"missing column: total population (one of {', '.join(TOTAL_HEADERS)}); the header "
                f"(line {rows[i][0]}) has: {', '.join(fields)}. Save the Persons sheet of the ONS workbook as CSV")
        return i, code_columns[0], total_columns[0]
    first = candidates[0][1] if candidates else []
    missing = ["LSOA code (one of " + ", ".join(LSOA_CODE_HEADERS) + ")"]
    if not _find_column(first, TOTAL_HEADERS):
        missing.append("total population (one of " + ", ".join(TOTAL_HEADERS) + ")")
    raise PopulationFileRejected(
        f"missing column{'s' if len(missing) > 1 else ''}: {'; '.join(missing)}; no line among the first "
        f"{HEADER_SEARCH_LINES} has them (the first line has: {', '.join(first) or 'nothing'}). Is this an ONS "
        "LSOA population estimates file? Save the Persons sheet of the ONS workbook as CSV")


def _parse_total(text: str) -> tuple[int | None, str | None]:
    """(population, None) for a whole non-negative number ("1234", "1,234", "1234.0"), else (None, reason)."""
    value = text.strip()
    if not value:
        return None, "the total is blank"
    if value.startswith("-") and _WHOLE_NUMBER.fullmatch(value[1:].strip()):
        return None, f"the total {value!r} is negative"
    if not _WHOLE_NUMBER.fullmatch(value):
        return None, f"the total {value!r} is not a whole number"
    number = int(value.split(".")[0].replace(",", ""))
    if number > POSTGRES_INTEGER_MAX:
        return None, f"the total {value!r} is too large for a population"
    return number, None


def parse_population_csv(data: bytes) -> tuple[dict[str, int], int]:
    """The LSOA code -> population of an ONS SAPE CSV's bytes, and its number of data rows; raises
    PopulationFileRejected when the file cannot be trusted as a whole."""
    try:
        decoded = decode_supplier_bytes(data)
    except DropRejected as exc:
        raise PopulationFileRejected(str(exc)) from None
    reader = csv.reader(decoded.lines)
    rows: list[tuple[int, list[str]]] = []
    start_line = 1
    for fields in reader:
        rows.append((start_line, fields))  # the line the record starts on, as a spreadsheet shows it
        start_line = reader.line_num + 1
    # Blank lines and all-empty rows (",,,," left by spreadsheets) carry nothing.
    rows = [(line_no, fields) for line_no, fields in rows if any(f.strip() for f in fields)]
    if not rows:
        raise PopulationFileRejected("the file is empty; expected an ONS LSOA population estimates CSV")
    header_index, code_column, total_column = _locate_header(rows)
    data_rows = rows[header_index + 1:]
    if not data_rows:
        raise PopulationFileRejected("the file has a header but no data rows")

    problems: list[str] = []
    undecodable = {index + 1 for index in decoded.bad_lines}
    population: dict[str, int] = {}
    first_seen: dict[str, int] = {}
    for line_no, fields in data_rows:
        if line_no in undecodable:
            problems.append(f"line {line_no}: {decoded.bad_lines[line_no - 1]}")
            continue
        code = fields[code_column].strip().upper() if code_column < len(fields) else ""
        total = fields[total_column] if total_column < len(fields) else ""
        if not code:
            problems.append(f"line {line_no}: the LSOA code is blank")
            continue
        number, reason = _parse_total(total)
        if reason:
            problems.append(f"line {line_no} ({code}): {reason}")
            continue
        if code in first_seen:
            problems.append(f"line {line_no}: {code} is listed again (first on line {first_seen[code]})")
            continue
        first_seen[code] = line_no
        population[code] = number
    if problems:
        shown = "; ".join(problems[:REJECTION_EXAMPLES])
        more = f" (and {len(problems) - REJECTION_EXAMPLES:,} more)" if len(problems) > REJECTION_EXAMPLES else ""
        raise PopulationFileRejected(
            f"{len(problems):,} row{'s' if len(problems) != 1 else ''} cannot be trusted, so nothing was loaded: "
            f"{shown}{more}. Correct the file (or download it again from ONS) and load it again")
    return population, len(data_rows)


def load_population(url: str, path: Path, year: int | None = None) -> PopulationLoadReport:
    """Replace mid-``year``'s populations with the file's rows for the LSOAs in ``areas``; return the report.

    Raises PopulationFileRejected, changing nothing, when the file, its year or the database is not fit."""
    path = Path(path)
    year = _check_year(year) if year is not None else _check_year(year_from_file_name(path.name))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PopulationFileRejected(f"cannot read {path}: {exc.strerror or exc}") from None
    population, rows_read = parse_population_csv(data)

    conn = psycopg2.connect(libpq_dsn(url))
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass('area_population') IS NOT NULL")
            if not cur.fetchone()[0]:
                raise PopulationFileRejected(
                    "the database has no area_population table yet; run `safestats migrate` (and "
                    "`safestats boundaries` if no areas are loaded), then load the population file again")
            # One population load at a time (a second one waits), so two loads of a year cannot interleave
            # their delete and insert; readers are not blocked.
            cur.execute("LOCK TABLE area_population IN SHARE ROW EXCLUSIVE MODE")
            cur.execute("SELECT code FROM areas WHERE level = 'lsoa'")
            known = {code for (code,) in cur.fetchall()}
            if not known:
                raise PopulationFileRejected(
                    "no LSOAs are loaded, so no population can be matched to an area; run "
                    "`safestats boundaries` first, then load the population file again")
            stored = {code: number for code, number in population.items() if code in known}
            cur.execute("DELETE FROM area_population WHERE year = %s", (year,))
            replaced = cur.rowcount
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerows((code, year, number, path.name) for code, number in sorted(stored.items()))
            buffer.seek(0)
            cur.copy_expert("COPY area_population (lsoa_code, year, population, source) FROM STDIN "
                            "WITH (FORMAT csv)", buffer)
    finally:
        conn.close()
    return PopulationLoadReport(
        year=year, source_file=path.name, rows_read=rows_read, stored=len(stored),
        unknown_codes=len(population) - len(stored), lsoas_without_population=len(known) - len(stored),
        lsoas_loaded=len(known), replaced_rows=replaced)
