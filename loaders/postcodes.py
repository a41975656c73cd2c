"""Load the ONS Postcode Directory (ONSPD) into ``postcodes``: each postcode's centroid, for locating records.

ONSPD is ONS's quarterly list of every UK postcode, live and terminated, with its grid reference and the
areas it falls in; docs/suppliers/onspd.md describes the columns used. The file is the CSV ONS ships
(``Data/ONSPD_<MON>_<YEAR>_UK.csv``; also accepted gzipped, or the release zip itself, from which the largest
``ONSPD_*.csv`` under ``Data/`` is read). Columns are found by name, because ONS adds columns between
editions: ``pcds``, ``doterm``, ``oslaua``, ``oseast1m``, ``osnrth1m``, ``osgrdind``, ``lat``, ``long`` are
required, ``lsoa11`` and ``lsoa21`` are kept when present, every other column is ignored. Kept: postcodes
with a grid reference (``osgrdind`` 1-8; 9 means none) in London's boroughs (``oslaua`` E09000001-33), or
in every local authority with ``all_regions``. A malformed kept row (a postcode that is not one, a grid
reference that is not a number) rejects the file, naming the first lines, and nothing changes: ONSPD is an
official file, so a bad line means a damaged or wrong file. A load replaces the whole table in one
transaction (a failure leaves the previous directory in place).
"""
from __future__ import annotations

import csv
import gzip
import io
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from db import libpq_dsn
from loaders.boundaries import LONDON_BOROUGHS

REQUIRED = ("pcds", "doterm", "oslaua", "oseast1m", "osnrth1m", "osgrdind", "lat", "long")
OPTIONAL = ("lsoa11", "lsoa21")
POSTCODE = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]? [0-9][A-Z]{2}$")
NO_GRID_REFERENCE = "9"
LONDON_AUTHORITIES = frozenset(LONDON_BOROUGHS.values())
REJECTION_EXAMPLES = 5


class PostcodeFileRejected(Exception):
    """The file is not a usable ONSPD file; nothing was changed."""


@dataclass
class PostcodeLoadReport:
    file: str
    rows_read: int
    loaded: int
    terminated: int
    outside_region: int
    no_grid_reference: int
    seconds: float

    def summary(self) -> str:
        return (f"{self.file}: {self.loaded:,} postcodes loaded ({self.loaded - self.terminated:,} live, "
                f"{self.terminated:,} terminated) of {self.rows_read:,} rows; skipped {self.outside_region:,} "
                f"outside the region and {self.no_grid_reference:,} without a grid reference "
                f"({self.seconds:.1f} s)")


def read_onspd_text(path: Path) -> str:
    """The ONSPD CSV's text from a .csv, .csv.gz or the release .zip."""
    if path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist()
                       if re.search(r"(^|/)ONSPD_[^/]*\.csv$", m.filename, re.IGNORECASE)]
            if not members:
                raise PostcodeFileRejected(f"{path.name} holds no ONSPD_*.csv (expected Data/ONSPD_<MON>_<YEAR>_UK.csv)")
            data = archive.read(max(members, key=lambda m: m.file_size))
    else:
        data = path.read_bytes()
        if path.suffix.lower() == ".gz":
            data = gzip.decompress(data)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252")


def parse_onspd(text: str, all_regions: bool = False) -> tuple[list[tuple], dict[str, int]]:
    """The rows to load (postcode, easting, northing, longitude, latitude, laua, lsoa11, lsoa21, doterm) and
    counts of what was read and skipped; PostcodeFileRejected on a missing column or malformed rows."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise PostcodeFileRejected("the file is empty (no header line)") from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise PostcodeFileRejected(f"not an ONS Postcode Directory file: missing column(s) {', '.join(missing)} "
                                   f"(needs {', '.join(REQUIRED)}; see docs/suppliers/onspd.md)")
    at = {name: header.index(name) for name in REQUIRED + OPTIONAL if name in header}
    width = len(header)
    rows, bad = [], []
    counts = {"rows_read": 0, "outside_region": 0, "no_grid_reference": 0, "terminated": 0}
    for fields in reader:
        if not fields:
            continue
        counts["rows_read"] += 1
        line_no = reader.line_num
        if len(fields) != width:
            bad.append(f"line {line_no}: {len(fields)} fields, expected {width}")
            continue
        laua = fields[at["oslaua"]].strip()
        if not all_regions and laua not in LONDON_AUTHORITIES:
            counts["outside_region"] += 1
            continue
        if fields[at["osgrdind"]].strip() == NO_GRID_REFERENCE or not fields[at["oseast1m"]].strip():
            counts["no_grid_reference"] += 1
            continue
        postcode = " ".join(fields[at["pcds"]].upper().split())
        try:
            east, north = int(fields[at["oseast1m"]]), int(fields[at["osnrth1m"]])
            lat, lon = float(fields[at["lat"]]), float(fields[at["long"]])
        except ValueError:
            bad.append(f"line {line_no}: grid reference or lat/long is not a number")
            continue
        if not POSTCODE.fullmatch(postcode):
            bad.append(f"line {line_no}: pcds {fields[at['pcds']]!r} is not a postcode")
            continue
        terminated = fields[at["doterm"]].strip() or None
        counts["terminated"] += terminated is not None
        rows.append((postcode, east, north, lon, lat, laua,
                     fields[at["lsoa11"]].strip() or None if "lsoa11" in at else None,
                     fields[at["lsoa21"]].strip() or None if "lsoa21" in at else None, terminated))
    if bad:
        raise PostcodeFileRejected(f"{len(bad):,} malformed row(s), e.g. " + "; ".join(bad[:REJECTION_EXAMPLES])
                                   + ". Download the directory again from the ONS Open Geography Portal.")
    seen = set()
    for row in rows:
        if row[0] in seen:
            raise PostcodeFileRejected(f"postcode {row[0]} is listed twice; an ONSPD file lists each once")
        seen.add(row[0])
    return rows, counts


def load_postcodes(url: str, path: Path, all_regions: bool = False) -> PostcodeLoadReport:
    """Replace the ``postcodes`` table with the file's postcodes (see the module docstring)."""
    started = time.monotonic()
    rows, counts = parse_onspd(read_onspd_text(path), all_regions)
    if not rows:
        raise PostcodeFileRejected(f"no postcode in {path.name} has a grid reference in "
                                   f"{'any region' if all_regions else 'London'}; nothing loaded")
    buffer = io.StringIO()
    for postcode, east, north, lon, lat, laua, lsoa11, lsoa21, terminated in rows:
        buffer.write("\t".join((postcode, str(east), str(north), f"SRID=27700;POINT({east} {north})", repr(lon),
                                repr(lat), laua, lsoa11 or r"\N", lsoa21 or r"\N", terminated or r"\N",
                                path.name)) + "\n")
    buffer.seek(0)
    conn = psycopg2.connect(libpq_dsn(url))
    try:
        with conn, conn.cursor() as cur:
            cur.execute("DELETE FROM postcodes")
            cur.copy_expert("""COPY postcodes (postcode, easting, northing, geom, longitude, latitude, laua_code,
                                               lsoa11_code, lsoa21_code, terminated, source_file) FROM STDIN""",
                            buffer)
    finally:
        conn.close()
    return PostcodeLoadReport(path.name, counts["rows_read"], len(rows), counts["terminated"],
                              counts["outside_region"], counts["no_grid_reference"], time.monotonic() - started)
