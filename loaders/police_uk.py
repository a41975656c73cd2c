"""police.uk street-level crime files (``YYYY-MM-<force>-street.csv``) on the shared ingest pipeline.

Each file holds one force's crimes and anti-social behaviour for one month, at police.uk's anonymised
"snap points" (WGS84). The force is read from the "Reported by" column, not the file name. Anti-social
behaviour rows have a blank Crime ID and are kept. police.uk republishes months with updated outcomes, so a
drop replaces any earlier drop of the same force and month (replace key ``<force>|<YYYY-MM>``). Areas are
assigned from the point; the supplier's own LSOA code (2011 or 2021 vintage, as given) is kept in the
attributes. Rows without coordinates ("No Location") are quarantined.
"""
from __future__ import annotations

import re
from datetime import date, datetime
from zoneinfo import ZoneInfo

from loaders.pipeline import CategoryMapping, Quarantine, SupplierFormat, json_object

LONDON = ZoneInfo("Europe/London")
MONTH_RE = re.compile(r"(\d{4})-(\d{2})")
RECORD_ACCESS_LEVEL = 10        # access_levels 'record': partner analysts and above see the record itself
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
        attributes_json = json_object(("force", force), ("falls_within", falls_within), ("location", location),
                                      ("lsoa_code", lsoa_code), ("lsoa_name", lsoa_name),
                                      ("last_outcome_category", outcome), ("context", context))
        # police.uk gives months only, so night-time-economy hours cannot be known (NULL, not FALSE).
        return (line_no, crime_id or None, occurred_at, "month", mapped.category_id, crime_type,
                mapped.theme_weapon, mapped.theme_dava, mapped.theme_young_victim, None, mapped.theme_arson,
                x, y, "snap_point", None, RECORD_ACCESS_LEVEL, attributes_json)

    def replace_key(self) -> str | None:
        if not self.forces:
            return None
        month = self.file_month or "+".join(sorted(self.months_seen))
        return f"{'+'.join(sorted(self.forces))}|{month}"
