"""London Fire Brigade incident records (London Datastore "LFB Incident data") on the shared ingest pipeline.

One row per incident the brigade attended: fires, false alarms and special services, timed to the second
(DateOfCall + TimeOfCall, London local time; stored with precision 'minute', the finest the schema has) and
located in British National Grid. Exact points (Easting_m/Northing_m) are 'exact'; dwellings are published
only at the 50 m rounded point (Easting_rounded/Northing_rounded, 'rounded_50m'); a row with no usable point
but a valid IncGeo_BoroughCode is placed in that borough ('borough'). Areas come from the point (the
supplier's borough and ward codes are kept in the attributes). The supplier category is StopCodeDescription,
or for special services "Special Service: <SpecialServiceType>" (db/sql/taxonomy_fire_transport.sql). The
file carries no motive, so a fire's arson flag is NULL unless the row itself says "Deliberate" (TRUE) or
"Accidental" (FALSE). A file covers the period its name states ("LFB Incident data from 2018 onwards",
"lfb_incidents_2023_sample_jan-oct"), and the London Datastore re-issues it under the same name, so a drop
replaces the earlier drop whose file name gives the same period. A repeated IncidentNumber in one file is quarantined after its first occurrence.
Documented in docs/suppliers/lfb_incidents.md.
"""
from __future__ import annotations

import re
from datetime import date, datetime

from loaders.pipeline import CategoryMapping, Quarantine, SupplierFormat, json_object
from loaders.themes import LONDON, night_time_economy

RECORD_ACCESS_LEVEL = 10        # access_levels 'record'
# London's 33 boroughs (E09000001 City of London .. E09000033 Westminster): what a borough-only row may name.
LONDON_BOROUGH_CODE = re.compile(r"E090000(0[1-9]|[12][0-9]|3[0-3])")
# British National Grid's extent: a point outside it (0, 0, blank, text) is no point at all, so the row falls
# back to the rounded point or the borough; a point inside it but outside London is quarantined by the
# pipeline's area join.
BNG_EASTING = (0.0, 700_000.0)
BNG_NORTHING = (0.0, 1_300_000.0)
# Older LFB releases (2009-2017) write dates as "01 Jan 2009"; current ones as ISO "2023-01-01".
DATE_FORMATS = ("%Y-%m-%d", "%d %b %Y", "%d/%m/%Y")
TIME_OF_CALL = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])")
# A motive stated in the row's own words ("Primary Fire - Deliberate") decides the arson theme. The London
# Datastore file has no motive column and no such wording; this keeps a file that does have it honest.
DELIBERATE = re.compile(r"\bdeliberate\b", re.IGNORECASE)
ACCIDENTAL = re.compile(r"\baccidental\b", re.IGNORECASE)
MOTIVE_SUFFIX = re.compile(r"\s*[-:(]?\s*\b(deliberate|accidental)\b\)?\s*$", re.IGNORECASE)


def _bng_point(easting: str, northing: str) -> tuple[float, float] | None:
    """The point if both values are numbers inside British National Grid's extent, else None."""
    try:
        x, y = float(easting), float(northing)
    except ValueError:
        return None
    if BNG_EASTING[0] < x < BNG_EASTING[1] and BNG_NORTHING[0] < y < BNG_NORTHING[1]:
        return x, y
    return None


class LfbIncidentFormat(SupplierFormat):
    supplier = "lfb"
    file_pattern = re.compile(
        r"^lfb[ _-]+incidents?(?:[ _-]+data)?[ _-]+(?P<period>[^/]+?)\.csv(\.gz)?$", re.IGNORECASE)
    columns = (
        "IncidentNumber", "DateOfCall", "CalYear", "TimeOfCall", "HourOfCall", "IncidentGroup",
        "StopCodeDescription", "SpecialServiceType", "PropertyCategory", "PropertyType", "AddressQualifier",
        "Postcode_full", "Postcode_district", "UPRN", "USRN", "IncGeo_BoroughCode", "IncGeo_BoroughName",
        "ProperCase", "IncGeo_WardCode", "IncGeo_WardName", "IncGeo_WardNameNew", "Easting_m", "Northing_m",
        "Easting_rounded", "Northing_rounded", "Latitude", "Longitude", "FRS", "IncidentStationGround",
        "FirstPumpArriving_AttendanceTime", "FirstPumpArriving_DeployedFromStation",
        "SecondPumpArriving_AttendanceTime", "SecondPumpArriving_DeployedFromStation",
        "NumStationsWithPumpsAttending", "NumPumpsAttending", "PumpCount", "PumpMinutesRounded",
        "Notional Cost (£)", "NumCalls")
    coordinate_srid = 27700

    def __init__(self, file_name: str, mapping: dict[str, CategoryMapping]):
        super().__init__(file_name, mapping)
        self.period = self.file_match.group("period") if self.file_match else None
        self.first_line_of: dict[str, int] = {}       # IncidentNumber -> line it was first seen on
        self.today = date.today()
        self.dates: dict[str, date] = {}

    def call_date(self, date_of_call: str) -> date:
        """The day of the call; Quarantine if unparseable, before 2000 or in the future. Cached per value
        (a month's file has about 30 distinct dates, and strptime is most of a row's cost otherwise)."""
        day = self.dates.get(date_of_call)
        if day is not None:
            return day
        for fmt in DATE_FORMATS:
            try:
                day = datetime.strptime(date_of_call.strip(), fmt).date()
                break
            except ValueError:
                continue
        if day is None:
            raise Quarantine(f"unparseable DateOfCall {date_of_call!r} (expected YYYY-MM-DD)")
        if day > self.today:
            raise Quarantine(f"DateOfCall {day.isoformat()} is in the future")
        if day.year < 2000:
            raise Quarantine(f"DateOfCall {day.isoformat()} is before 2000 (a corrupt date?)")
        self.dates[date_of_call] = day
        return day

    def occurred_at(self, date_of_call: str, time_of_call: str) -> datetime:
        day = self.call_date(date_of_call)
        clock = TIME_OF_CALL.fullmatch(time_of_call.strip())
        if clock is None:
            raise Quarantine(f"unparseable TimeOfCall {time_of_call!r} (expected HH:MM:SS)")
        # The brigade's clock is London local time; an autumn repeated hour is read as its first occurrence.
        return datetime(day.year, day.month, day.day, int(clock[1]), int(clock[2]), int(clock[3]), tzinfo=LONDON)

    def harmonise_row(self, fields: list[str], line_no: int) -> tuple:
        (incident_number, date_of_call, cal_year, time_of_call, hour_of_call, incident_group, stop_code,
         special_service_type, property_category, property_type, address_qualifier, postcode_full,
         postcode_district, uprn, usrn, borough_code, borough_name, proper_case, ward_code, ward_name,
         ward_name_new, easting_m, northing_m, easting_rounded, northing_rounded, latitude, longitude, frs,
         station_ground, first_pump_time, first_pump_station, second_pump_time, second_pump_station,
         num_stations, num_pumps, pump_count, pump_minutes, notional_cost, num_calls) = fields
        incident_number = incident_number.strip()
        if not incident_number:
            raise Quarantine("blank IncidentNumber (every LFB record has one; ask LFB to re-export the file)")
        occurred = self.occurred_at(date_of_call, time_of_call)

        stop_code = stop_code.strip()
        special_service_type = special_service_type.strip()
        described = (stop_code if stop_code != "Special Service"
                     else f"Special Service: {special_service_type}" if special_service_type else stop_code)
        supplier_category = MOTIVE_SUFFIX.sub("", described)
        mapped = self.mapping.get(supplier_category)
        if mapped is None:
            raise Quarantine(f"StopCodeDescription/SpecialServiceType {described!r} has no mapping onto the "
                             "harmonised taxonomy (add it to supplier_category_map)")
        arson = (True if DELIBERATE.search(described) else False if ACCIDENTAL.search(described)
                 else mapped.theme_arson)

        borough_code = borough_code.strip()
        point = _bng_point(easting_m, northing_m)
        precision = "exact"
        if point is None:
            point, precision = _bng_point(easting_rounded, northing_rounded), "rounded_50m"
        borough_hint = None
        if point is None:
            if not LONDON_BOROUGH_CODE.fullmatch(borough_code):
                raise Quarantine("no usable location: no point in Easting_m/Northing_m or "
                                 f"Easting_rounded/Northing_rounded and no London borough code "
                                 f"(IncGeo_BoroughCode {borough_code!r})")
            precision, borough_hint = "borough", borough_code

        # Only now, so that a quarantined row does not make a later good copy look like a repeat.
        first_line = self.first_line_of.setdefault(incident_number, line_no)
        if first_line != line_no:
            raise Quarantine(f"IncidentNumber {incident_number} repeats line {first_line} (the first copy is "
                             "loaded; ask LFB which one is right if they differ)")

        attributes = json_object(
            ("incident_group", incident_group), ("stop_code_description", stop_code),
            ("special_service_type", special_service_type), ("property_category", property_category),
            ("property_type", property_type.strip()), ("address_qualifier", address_qualifier),
            ("postcode_full", postcode_full), ("postcode_district", postcode_district),
            ("uprn", "" if uprn == "0" else uprn), ("usrn", usrn), ("borough_code", borough_code),
            ("borough_name", proper_case or borough_name), ("ward_code", ward_code),
            ("ward_name", ward_name_new or ward_name), ("latitude", latitude), ("longitude", longitude),
            ("incident_station_ground", station_ground), ("first_pump_attendance_s", first_pump_time),
            ("first_pump_station", first_pump_station), ("second_pump_attendance_s", second_pump_time),
            ("second_pump_station", second_pump_station), ("stations_with_pumps", num_stations),
            ("pumps_attending", num_pumps), ("pump_count", pump_count), ("pump_minutes", pump_minutes),
            ("notional_cost_gbp", notional_cost), ("calls", num_calls))
        x, y = point if point is not None else (None, None)
        return (line_no, incident_number, occurred, "minute", mapped.category_id, supplier_category,
                mapped.theme_weapon, mapped.theme_dava, mapped.theme_young_victim,
                night_time_economy(occurred, "minute"), arson, x, y, precision, borough_hint,
                RECORD_ACCESS_LEVEL, attributes)

    def replace_key(self) -> str | None:
        # The period the file name states, normalised ("LFB Incident data from 2018 onwards.csv" and
        # "lfb-incident-data-from-2018-onwards.csv" are the same publication).
        if not self.period:
            return None
        return "period:" + re.sub(r"[^a-z0-9]+", "-", self.period.lower()).strip("-")
