"""police.uk street-level crime files (``YYYY-MM-<force>-street.csv``) on the shared ingest pipeline.

Each file holds one force's crimes and anti-social behaviour for one month, at police.uk's anonymised
"snap points" (WGS84). The force is read from the "Reported by" column, not the file name. Anti-social
behaviour rows have a blank Crime ID and are kept. police.uk republishes months with updated outcomes, so a
drop replaces any earlier drop of the same force and month (replace key ``<force>|<YYYY-MM>``). Areas are
assigned from the point; the supplier's own LSOA code (2011 or 2021 vintage, as given) is kept in the
attributes, but not its LSOA name (ONS's name of that code), and "Falls within" only where it differs from
"Reported by" (in London's files it never does): PostgreSQL parses every attribute of every row into jsonb
during the COPY, and those two were half the bytes (bench/README.md). Rows without coordinates ("No
Location") are quarantined.
"""
from __future__ import annotations

import re
from datetime import date, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loaders.columnar import distinct_codes
from loaders.pipeline import CategoryMapping, HarmonisedColumns, Quarantine, SupplierFormat, json_object

LONDON = ZoneInfo("Europe/London")
MONTH_RE = re.compile(r"(\d{4})-(\d{2})")
RECORD_ACCESS_LEVEL = 10        # access_levels 'record': partner analysts and above see the record itself
# Coordinates written the way police.uk writes them (a plain decimal); anything else (blank, text, exponents,
# spaces) is left to harmonise_row, whose float() is the rule.
PLAIN_DECIMAL = r"^-?[0-9]{1,3}\.[0-9]{1,12}$"
# A generous box around Great Britain: police.uk points outside it are corrupt (or lat/lon swapped).
GB_LON = (-8.8, 2.0)
GB_LAT = (49.8, 61.0)


class PoliceUkStreetFormat(SupplierFormat):
    supplier = "police_uk"
    file_pattern = re.compile(r"^(?P<month>\d{4}-\d{2})-(?P<force>[a-z0-9-]+)-street\.csv(\.gz)?$")
    columns = ("Crime ID", "Month", "Reported by", "Falls within", "Longitude", "Latitude", "Location",
               "LSOA code", "LSOA name", "Crime type", "Last outcome category", "Context")
    coordinate_srid = 4326

    def __init__(self, file_name: str, mapping: dict[str, CategoryMapping]):
        super().__init__(file_name, mapping)
        self.file_month = self.file_match.group("month") if self.file_match else None
        self.month_starts: dict[str, str] = {}        # "2022-10" -> ISO timestamp of its first instant in London
        self.forces: set[str] = set()
        self.months_seen: set[str] = set()
        self.latest_month = date.today().strftime("%Y-%m")

    def month_start(self, month: str) -> str:
        """ISO timestamp of the month's first instant in London time; Quarantine if not a valid past month."""
        cached = self.month_starts.get(month)
        if cached is not None:
            return cached
        m = MONTH_RE.fullmatch(month.strip())
        if not m or not (1 <= int(m.group(2)) <= 12) or int(m.group(1)) < 2000:
            raise Quarantine(f"unparseable month {month!r} (expected YYYY-MM)")
        month = month.strip()
        if month > self.latest_month:
            raise Quarantine(f"month {month} is in the future")
        if self.file_month and month != self.file_month:
            raise Quarantine(f"month {month} differs from the drop's month {self.file_month} "
                             "(a police.uk street file holds one month)")
        start = datetime(int(m.group(1)), int(m.group(2)), 1, tzinfo=LONDON).isoformat()
        self.month_starts[month] = start
        return start

    def harmonise_row(self, fields: list[str], line_no: int) -> tuple:
        (crime_id, month, reported_by, falls_within, lon, lat, location, lsoa_code, lsoa_name, crime_type,
         outcome, context) = fields
        occurred_at = self.month_start(month)
        if not lon or not lat:
            raise Quarantine(f"no coordinates (Location: {location!r})")
        try:
            x, y = float(lon), float(lat)
        except ValueError:
            raise Quarantine(f"unparseable coordinates Longitude={lon!r} Latitude={lat!r}") from None
        if not (GB_LON[0] <= x <= GB_LON[1] and GB_LAT[0] <= y <= GB_LAT[1]):
            if GB_LON[0] <= y <= GB_LON[1] and GB_LAT[0] <= x <= GB_LAT[1]:
                raise Quarantine(f"coordinates look swapped (Longitude={lon}, Latitude={lat})")
            raise Quarantine(f"coordinates outside Great Britain (Longitude={lon}, Latitude={lat})")
        mapped = self.mapping.get(crime_type)
        if mapped is None:
            raise Quarantine(f"crime type {crime_type!r} has no mapping onto the harmonised taxonomy "
                             "(add it to supplier_category_map)")
        force = reported_by.strip()
        if not force:
            raise Quarantine("blank 'Reported by' (the force)")
        self.forces.add(force)
        self.months_seen.add(month)
        # Kept lean (module docstring): Falls within only where it differs from the force, no LSOA name.
        attributes_json = json_object(("force", force),
                                      ("falls_within", falls_within if falls_within != force else ""),
                                      ("location", location), ("lsoa_code", lsoa_code),
                                      ("last_outcome_category", outcome), ("context", context))
        # police.uk gives months only, so night-time-economy hours cannot be known (NULL, not FALSE).
        return (line_no, crime_id or None, occurred_at, "month", mapped.category_id, crime_type,
                mapped.theme_weapon, mapped.theme_dava, mapped.theme_young_victim, None, mapped.theme_arson,
                x, y, "snap_point", None, RECORD_ACCESS_LEVEL, attributes_json)

    def harmonise_columns(self, columns: dict[str, pa.Array]) -> HarmonisedColumns:
        """harmonise_row for a whole file at once; rows any check doubts are marked for harmonise_row.

        Months, forces and crime types repeat, so each distinct value goes through the row-wise rule once
        (month_start, str.strip, the mapping) and numpy spreads the answer; coordinates are checked and
        converted as arrays.
        """
        n = len(columns["Month"])
        row_wise = np.zeros(n, dtype=bool)

        months, month_of_row = distinct_codes(columns["Month"])
        month_starts = []
        for month in months:
            try:
                month_starts.append(datetime.fromisoformat(self.month_start(month)))
            except Quarantine:
                month_starts.append(None)
        row_wise |= np.array([s is None for s in month_starts])[month_of_row]

        lon, lat = columns["Longitude"], columns["Latitude"]
        plain = (pc.match_substring_regex(lon, PLAIN_DECIMAL).to_numpy(zero_copy_only=False)
                 & pc.match_substring_regex(lat, PLAIN_DECIMAL).to_numpy(zero_copy_only=False))
        x = pc.cast(pc.if_else(pa.array(plain), lon, "0"), pa.float64()).to_numpy(zero_copy_only=False)
        y = pc.cast(pc.if_else(pa.array(plain), lat, "0"), pa.float64()).to_numpy(zero_copy_only=False)
        in_gb = (GB_LON[0] <= x) & (x <= GB_LON[1]) & (GB_LAT[0] <= y) & (y <= GB_LAT[1])
        row_wise |= ~(plain & in_gb)

        crime_types, type_of_row = distinct_codes(columns["Crime type"])
        mapped = [self.mapping.get(t) for t in crime_types]
        row_wise |= np.array([m is None for m in mapped])[type_of_row]

        forces_given, force_of_row = distinct_codes(columns["Reported by"])
        forces = [f.strip() for f in forces_given]
        row_wise |= np.array([not f for f in forces])[force_of_row]

        kept = ~row_wise
        self.forces.update(forces[i] for i in np.unique(force_of_row[kept]))
        self.months_seen.update(months[i] for i in np.unique(month_of_row[kept]))

        def per_category(values: list, arrow_type) -> pa.Array:
            return pa.array(values, arrow_type).take(pa.array(type_of_row))

        kept_months = np.unique(month_of_row[kept])
        if len(kept_months) == 1:       # a police.uk street file holds one month: one value for every row
            occurred = month_starts[int(kept_months[0])]
        else:
            occurred = pa.array(month_starts, pa.timestamp("us", tz="UTC")).take(pa.array(month_of_row))
        force = pa.array(forces, pa.string()).take(pa.array(force_of_row))
        crime_id = columns["Crime ID"]
        falls_within = columns["Falls within"]
        # The JSON members as a struct: their JSON text is built by the COPY's encoder (columnar.json_text).
        attributes = pa.StructArray.from_arrays(
            [force, pc.if_else(pc.equal(falls_within, force), "", falls_within), columns["Location"],
             columns["LSOA code"], columns["Last outcome category"], columns["Context"]],
            names=["force", "falls_within", "location", "lsoa_code", "last_outcome_category", "context"])
        values = {
            "supplier_record_id": pc.if_else(pc.equal(crime_id, ""), pa.scalar(None, pa.string()), crime_id),
            "occurred_at": occurred,
            "time_precision": "month",
            "category_id": per_category([m.category_id if m else 0 for m in mapped], pa.int16()),
            "supplier_category": columns["Crime type"],
            "theme_weapon": per_category([m.theme_weapon if m else None for m in mapped], pa.bool_()),
            "theme_dava": per_category([m.theme_dava if m else None for m in mapped], pa.bool_()),
            "theme_young_victim": per_category([m.theme_young_victim if m else None for m in mapped], pa.bool_()),
            # police.uk gives months only, so night-time-economy hours cannot be known (NULL, not FALSE).
            "theme_night_time_economy": None,
            "theme_arson": per_category([m.theme_arson if m else None for m in mapped], pa.bool_()),
            "x": pa.array(x), "y": pa.array(y),
            "location_precision": "snap_point",
            "borough_hint": None,
            "access_level": RECORD_ACCESS_LEVEL,
            "attributes": attributes,
        }
        return HarmonisedColumns(values, row_wise)

    def replace_key(self) -> str | None:
        if not self.forces:
            return None
        month = self.file_month or "+".join(sorted(self.months_seen))
        return f"{'+'.join(sorted(self.forces))}|{month}"
