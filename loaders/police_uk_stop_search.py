"""police.uk stop-and-search files (``YYYY-MM-<force>-stop-and-search.csv[.gz]``) on the shared ingest pipeline.

A dataset of its own, not crime: each row is one stop and search by one force (named by the file: the
files carry no force column) with its time in UTC to the second (``2022-06-30T23:00:00+00:00``), so
occurred_at is kept to the minute and a summer month's file starts at 23:00 UTC on the last day of the
previous month (midnight in London). Rows go to the 'police_activity' domain, one category per object of
search (categories 90-99, ``supplier_category_map``). About a tenth of the Met's rows have no coordinates;
they are kept, located to nothing (location_precision 'none', no areas), so counts by time and object stay
whole; rows with a point take police.uk's anonymised snap point and the areas it falls in. The subjects are
not victims, so the young-victim theme stays NULL; the weapon theme is TRUE for searches *for* a weapon
(offensive weapons, firearms, section 60), by category; night-time economy follows the shared rule
(loaders/themes.py). A later file for the same force and month replaces the earlier one.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone

from loaders.pipeline import Quarantine, SupplierFormat, json_object
from loaders.police_uk import GB_LAT, GB_LON, RECORD_ACCESS_LEVEL
from loaders.themes import night_time_economy


def check_gb_point(lon: str, lat: str) -> tuple[float, float]:
    """The point as floats, or Quarantine: unparseable, swapped or outside Great Britain."""
    try:
        x, y = float(lon), float(lat)
    except ValueError:
        raise Quarantine(f"unparseable coordinates Longitude={lon!r} Latitude={lat!r}") from None
    if not (GB_LON[0] <= x <= GB_LON[1] and GB_LAT[0] <= y <= GB_LAT[1]):
        if GB_LON[0] <= y <= GB_LON[1] and GB_LAT[0] <= x <= GB_LAT[1]:
            raise Quarantine(f"coordinates look swapped (Longitude={lon}, Latitude={lat})")
        raise Quarantine(f"coordinates outside Great Britain (Longitude={lon}, Latitude={lat})")
    return x, y


class PoliceUkStopSearchFormat(SupplierFormat):
    supplier = "police_uk_stop_search"
    file_pattern = re.compile(r"^(?P<month>\d{4}-\d{2})-(?P<force>[a-z0-9-]+)-stop-and-search\.csv(\.gz)?$")
    columns = ("Type", "Date", "Part of a policing operation", "Policing operation", "Latitude", "Longitude",
               "Gender", "Age range", "Self-defined ethnicity", "Officer-defined ethnicity", "Legislation",
               "Object of search", "Outcome", "Outcome linked to object of search",
               "Removal of more than just outer clothing")
    coordinate_srid = 4326

    def __init__(self, file_name, mapping):
        super().__init__(file_name, mapping)
        self.force = self.file_match.group("force") if self.file_match else None
        self.file_month = self.file_match.group("month") if self.file_match else None
        self.now = datetime.now(timezone.utc)

    def harmonise_row(self, fields: list[str], line_no: int) -> tuple:
        (search_type, date, in_operation, operation, lat, lon, gender, age_range, self_ethnicity,
         officer_ethnicity, legislation, object_of_search, outcome, outcome_linked, removal) = fields
        try:
            occurred = datetime.fromisoformat(date.strip())
        except ValueError:
            raise Quarantine(f"unparseable Date {date!r} (expected an ISO timestamp such as "
                             "2022-07-01T10:15:00+00:00)") from None
        if occurred.tzinfo is None:
            raise Quarantine(f"Date {date!r} has no UTC offset (police.uk writes +00:00)")
        if occurred > self.now:
            raise Quarantine(f"Date {date} is in the future")
        occurred = occurred.replace(second=0, microsecond=0)   # kept to the minute (time_precision)
        mapped = self.mapping.get(object_of_search.strip())
        if mapped is None:
            raise Quarantine(f"object of search {object_of_search!r} has no mapping onto the harmonised taxonomy "
                             "(add it to supplier_category_map for police_uk_stop_search)")
        if lon or lat:
            x, y = check_gb_point(lon, lat)
            precision = "snap_point"
        else:
            x = y = None
            precision = "none"      # kept, counted, on no map (see the module docstring)
        attributes = json_object(
            ("force", self.force), ("type", search_type), ("part_of_policing_operation", in_operation),
            ("policing_operation", operation), ("gender", gender), ("age_range", age_range),
            ("self_defined_ethnicity", self_ethnicity), ("officer_defined_ethnicity", officer_ethnicity),
            ("legislation", legislation), ("outcome", outcome),
            ("outcome_linked_to_object_of_search", outcome_linked),
            ("removal_of_more_than_outer_clothing", removal))
        return (line_no, None, occurred, "minute", mapped.category_id, object_of_search.strip(),
                mapped.theme_weapon, None, None, night_time_economy(occurred, "minute"), None,
                x, y, precision, None, RECORD_ACCESS_LEVEL, attributes)

    def replace_key(self) -> str | None:
        return f"{self.force}|{self.file_month}" if self.force else None
