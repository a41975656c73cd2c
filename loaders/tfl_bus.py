"""TfL bus safety data (injury incidents on London's bus network) on the shared ingest pipeline.

One row per injured person: month of the incident ("Date Of Incident" is dd-mm-yyyy, always the 1st, so
precision 'month'), route, operator and its group, garage, borough, injury result, incident event type,
victim category, sex and age band. There is no incident id and no coordinate: a row is placed in its
borough (location_precision 'borough', from the borough name, "&" or "and"); "None London Borough" and "Not
specified" rows have no place in London and are quarantined with that reason. Identical rows are genuine
repeats (several people hurt in one incident), so none is dropped. The supplier category is Incident Event
Type (db/sql/taxonomy_fire_transport.sql); the young-victim theme comes from Victims Age (Child and Youth:
TRUE, Adult and Elderly: FALSE, Unknown: NULL). A file covers the period its name states
("tfl_bus_safety_2015-01_to_2018-06"; TfL's own cumulative "TFL Bus Safety.csv" has none, and is the period
"all"), and a re-issue of the same period replaces the earlier drop. Documented in
docs/suppliers/tfl_bus_safety.md.
"""
from __future__ import annotations

import re
from datetime import date, datetime

from loaders.boundaries import LONDON_BOROUGHS
from loaders.pipeline import CategoryMapping, Quarantine, SupplierFormat, json_object
from loaders.themes import LONDON

RECORD_ACCESS_LEVEL = 10        # access_levels 'record'
DATE_OF_INCIDENT = re.compile(r"(\d{2})-(\d{2})-(\d{4})")


def borough_key(name: str) -> str:
    """A borough name as a lookup key: TfL writes "Barking & Dagenham", "Richmond Upon Thames"."""
    return re.sub(r"\s+", " ", name.replace("&", " and ").strip().lower())


BOROUGH_CODES = {borough_key(name): code for name, code in LONDON_BOROUGHS.items()}
# TfL's words for "not in a London borough"; any other unknown name is reported as unrecognised.
NOT_IN_LONDON = {"none london borough": "outside London ('None London Borough')",
                 "not specified": "no borough given ('Not specified')"}
# Victims Age bands in TfL's data, and what they say about the young-victim theme (under 18 / 18-24).
YOUNG_VICTIM = {"child": True, "youth": True, "adult": False, "elderly": False, "unknown": None, "": None}


class TflBusSafetyFormat(SupplierFormat):
    supplier = "tfl_bus"
    file_pattern = re.compile(r"^tfl[ _-]+bus[ _-]+safety(?:[ _-]+(?P<period>[^/]+?))?\.csv(\.gz)?$",
                              re.IGNORECASE)
    columns = ("Year", "Date Of Incident", "Route", "Operator", "Group Name", "Bus Garage", "Borough",
               "Injury Result Description", "Incident Event Type", "Victim Category", "Victims Sex",
               "Victims Age")
    coordinate_srid = 27700         # never used: no row has a point

    def __init__(self, file_name: str, mapping: dict[str, CategoryMapping]):
        super().__init__(file_name, mapping)
        self.period = self.file_match.group("period") if self.file_match else None
        self.month_starts: dict[str, datetime] = {}
        self.latest_month = date.today().replace(day=1)

    def month_start(self, year: str, date_of_incident: str) -> datetime:
        """The first instant of the incident's month in London; Quarantine if unparseable or in the future."""
        key = f"{year}|{date_of_incident}"
        cached = self.month_starts.get(key)
        if cached is not None:
            return cached
        m = DATE_OF_INCIDENT.fullmatch(date_of_incident.strip())
        try:
            day = date(int(m.group(3)), int(m.group(2)), int(m.group(1))) if m else None
        except ValueError:
            day = None
        if day is None or day.year < 2000:
            raise Quarantine(f"unparseable Date Of Incident {date_of_incident!r} (expected dd-mm-yyyy)")
        if day.replace(day=1) > self.latest_month:
            raise Quarantine(f"Date Of Incident {date_of_incident} is in the future")
        if year.strip() != str(day.year):
            raise Quarantine(f"Year {year!r} disagrees with Date Of Incident {date_of_incident!r}")
        start = self.month_starts[key] = datetime(day.year, day.month, 1, tzinfo=LONDON)
        return start

    def harmonise_row(self, fields: list[str], line_no: int) -> tuple:
        (year, date_of_incident, route, operator, group_name, bus_garage, borough, injury_result, event_type,
         victim_category, victim_sex, victim_age) = fields
        occurred = self.month_start(year, date_of_incident)
        event_type = event_type.strip()
        mapped = self.mapping.get(event_type)
        if mapped is None:
            raise Quarantine(f"Incident Event Type {event_type!r} has no mapping onto the harmonised taxonomy "
                             "(add it to supplier_category_map)")
        key = borough_key(borough)
        borough_code = BOROUGH_CODES.get(key)
        if borough_code is None:
            why = NOT_IN_LONDON.get(key) or f"unrecognised Borough {borough!r} (expected a London borough name)"
            raise Quarantine(f"no location in London: {why}")
        age = victim_age.strip()
        if age.lower() not in YOUNG_VICTIM:
            raise Quarantine(f"unrecognised Victims Age {victim_age!r} (expected Child, Youth, Adult, Elderly "
                             "or Unknown)")
        young = YOUNG_VICTIM[age.lower()]
        attributes = json_object(
            ("route", route.strip()), ("operator", operator.strip()), ("group_name", group_name.strip()),
            ("bus_garage", bus_garage.strip()), ("borough", borough.strip()),
            ("injury_result", injury_result.strip()), ("victim_category", victim_category.strip()),
            ("victim_sex", victim_sex.strip()), ("victim_age", age))
        # Months only, so night-time-economy hours cannot be known (NULL, not FALSE).
        return (line_no, None, occurred, "month", mapped.category_id, event_type, mapped.theme_weapon,
                mapped.theme_dava, young if young is not None else mapped.theme_young_victim, None,
                mapped.theme_arson, None, None, "borough", borough_code, RECORD_ACCESS_LEVEL, attributes)

    def replace_key(self) -> str | None:
        period = re.sub(r"[^a-z0-9]+", "-", (self.period or "all").lower()).strip("-")
        return f"period:{period or 'all'}"
