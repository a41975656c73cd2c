"""London Ambulance Service assault call-outs (``YYYY-MM-las-assaults.csv[.gz]``) on the shared pipeline.

One row per ambulance incident coded as an assault, with the call's date and time (London local time, to
the minute), the call category (assault, stabbing, shooting, ...: categories 70-79 through
``supplier_category_map``), the incident location as a British National Grid point or, failing that, a
postcode and borough, and the patient's age band and sex. This is health data: every row is access level
20 ('health_record'). Location: the point when given (precision 'exact'); otherwise the pipeline locates
the row (loaders/locating.py): the postcode's centroid when the postcode is in the ONS Postcode Directory
table ('postcode'), else the borough when given ('borough'), else nothing ('none'); the confidence is stored
with the row and how it was located in ``attributes.location_method``. The young-victim theme is TRUE for patients under 25
by age band (the GLA's youth-violence age range), FALSE from 25, NULL when unknown. A later file for the
same month replaces the earlier one. The layout is ours, written from LAS's and the London Datastore's data
descriptions (no public record-level sample exists): docs/suppliers/las_assaults.md.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone

from loaders.boundaries import LONDON_BOROUGHS
from loaders.locating import LocationRequest
from loaders.pipeline import Quarantine, SupplierFormat, json_object
from loaders.themes import LONDON, night_time_economy

HEALTH_ACCESS_LEVEL = 20        # access_levels 'health_record'
# Great Britain in British National Grid metres: anything outside is corrupt (or easting/northing swapped).
BNG_EAST = (0, 700_000)
BNG_NORTH = (0, 1_300_000)
POSTCODE_RE = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}$")
AGE_BAND_RE = re.compile(r"^(\d{1,3})-(\d{1,3})$|^(\d{1,3})\+$")
BOROUGH_CODES = set(LONDON_BOROUGHS.values())
BOROUGH_BY_NAME = {name.lower(): code for name, code in LONDON_BOROUGHS.items()}
# The spellings suppliers use for the same boroughs ("&" for "and").
BOROUGH_BY_NAME.update({name.replace(" and ", " & "): code for name, code in BOROUGH_BY_NAME.items()})


def borough_code(value: str) -> str | None:
    """The ONS code of a London borough given by code or name; None if blank; Quarantine if not London's."""
    value = value.strip()
    if not value:
        return None
    if value.upper() in BOROUGH_CODES:
        return value.upper()
    code = BOROUGH_BY_NAME.get(value.lower())
    if code is None:
        raise Quarantine(f"Borough {value!r} is not a London borough name or code (E09000001-E09000033)")
    return code


def young_victim(age_band: str) -> bool | None:
    """TRUE under 25, FALSE from 25, None when the band is unknown or straddles 25."""
    m = AGE_BAND_RE.fullmatch(age_band.strip())
    if not m:
        return None
    if m.group(3):
        return False if int(m.group(3)) >= 25 else None
    low, high = int(m.group(1)), int(m.group(2))
    return True if high < 25 else False if low >= 25 else None


def local_minute(date_text: str, time_text: str, what: str) -> datetime:
    """A London local date (YYYY-MM-DD) and time (HH:MM) as an aware datetime, or Quarantine."""
    try:
        naive = datetime.strptime(f"{date_text.strip()} {time_text.strip()}", "%Y-%m-%d %H:%M")
    except ValueError:
        raise Quarantine(f"unparseable {what} {date_text!r} {time_text!r} (expected YYYY-MM-DD and HH:MM, "
                         "London time)") from None
    # fold=0: in the repeated hour of late October the first (summer-time) instant is taken.
    return naive.replace(tzinfo=LONDON)


class LasAssaultsFormat(SupplierFormat):
    supplier = "las"
    file_pattern = re.compile(r"^(?P<month>\d{4}-\d{2})-las-assaults\.csv(\.gz)?$")
    columns = ("Incident Number", "Call Date", "Call Time", "Call Category", "Easting", "Northing", "Postcode",
               "Borough", "Patient Age Band", "Patient Sex")
    coordinate_srid = 27700

    def __init__(self, file_name, mapping):
        super().__init__(file_name, mapping)
        self.file_month = self.file_match.group("month") if self.file_match else None
        self.now = datetime.now(timezone.utc)
        self.first_line_of: dict[str, int] = {}

    def harmonise_row(self, fields: list[str], line_no: int) -> tuple:
        (incident, call_date, call_time, category, easting, northing, postcode, borough, age_band, sex) = fields
        incident = incident.strip()
        if not incident:
            raise Quarantine("blank Incident Number")
        occurred = local_minute(call_date, call_time, "call date and time")
        if occurred > self.now:
            raise Quarantine(f"call date and time {call_date} {call_time} is in the future")
        if self.file_month and occurred.strftime("%Y-%m") != self.file_month:
            raise Quarantine(f"call date {call_date} is outside the drop's month {self.file_month} "
                             "(an LAS file holds one month of calls)")
        mapped = self.mapping.get(category.strip())
        if mapped is None:
            raise Quarantine(f"call category {category!r} has no mapping onto the harmonised taxonomy "
                             "(add it to supplier_category_map for las)")
        postcode = " ".join(postcode.upper().split())
        if postcode and not POSTCODE_RE.fullmatch(postcode):
            raise Quarantine(f"Postcode {postcode!r} is not a UK postcode")
        hint = borough_code(borough)
        x = y = None
        if easting.strip() or northing.strip():
            try:
                x, y = float(easting), float(northing)
            except ValueError:
                raise Quarantine(f"unparseable Easting={easting!r} Northing={northing!r}") from None
            if not (BNG_EAST[0] <= x <= BNG_EAST[1] and BNG_NORTH[0] <= y <= BNG_NORTH[1]):
                raise Quarantine(f"Easting={easting} Northing={northing} is outside Great Britain "
                                 "(British National Grid metres)")
            precision, method, hint = "exact", "point", None     # areas come from the point
        else:
            # The pipeline locates it (loaders/locating.py): postcode centroid, else the borough, else nothing.
            precision, method = ("borough" if hint else "none"), ""
        # Checked last, so a row that fails another check is not remembered as the first of its number.
        first = self.first_line_of.setdefault(incident, line_no)
        if first != line_no:
            raise Quarantine(f"duplicate Incident Number {incident} (first on line {first})")
        if not method:
            self.location_requests[line_no] = LocationRequest(
                postcode=postcode, fallback_borough=hint, fallback_confidence=100, fallback_note="borough given")
        attributes = json_object(("call_category", category.strip()), ("postcode", postcode),
                                 ("borough", borough.strip()), ("patient_age_band", age_band.strip()),
                                 ("patient_sex", sex.strip()), ("location_method", method))
        return (line_no, incident, occurred, "minute", mapped.category_id, category.strip(),
                mapped.theme_weapon, mapped.theme_dava, young_victim(age_band),
                night_time_economy(occurred, "minute"), mapped.theme_arson,
                x, y, precision, hint, HEALTH_ACCESS_LEVEL, attributes)

    def replace_key(self) -> str | None:
        return f"las|{self.file_month}" if self.file_month else None
