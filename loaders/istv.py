"""Hospital emergency department assaults: the ISTV minimum data set, as XML submissions or CSV files.

The Information Sharing to Tackle Violence (ISTV) minimum data set (NHS Data Model and Dictionary; ISB
1594) is what an emergency department shares monthly about patients hurt by assault: a submission header
(reporting period start and end dates, site code of treatment) and, per assault, the arrival date and time,
the assault date and time, the assault method (and its other description), the assault location type and
a free-text location description. Files: ``istv-<site code>-<YYYY-MM>.xml`` (an XML submission, checked
against ``docs/suppliers/istv.xsd``: a file that breaks it is rejected whole, with the reason) or ``.csv``
(the same fields, header fields repeated on every row). Only those fields are kept (data minimisation);
every row is health data, access level 20. Rows are located by the pipeline (loaders/locating.py): the
free-text location is matched against the street gazetteer within the hospital's catchment (boroughs within
5 km of the site in ``ED_SITES``), else the row is placed in the borough of the site; a site not listed is
located to nothing ('none'). The confidence is stored with the row, the method in ``attributes``. A later file for the
same site and reporting period replaces the earlier one. docs/suppliers/istv_ed.md.
"""
from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from datetime import date, datetime, timezone

from loaders.las import HEALTH_ACCESS_LEVEL
from loaders.locating import LocationRequest
from loaders.pipeline import DropRejected, Quarantine, SupplierFormat, json_object
from loaders.themes import LONDON, night_time_economy

CSV_COLUMNS = ("Site Code", "Reporting Period Start Date", "Reporting Period End Date", "Arrival Date Time",
               "Assault Date Time", "Assault Method", "Assault Method Other Description", "Assault Location Type",
               "Assault Location Description")
# ASSAULT METHOD and ASSAULT LOCATION TYPE codes (docs/suppliers/istv_ed.md, istv.xsd).
ASSAULT_METHODS = {"01": "Body part (punch, kick, head-butt)", "02": "Blunt object", "03": "Knife or sharp object",
                   "04": "Glass or bottle", "05": "Firearm", "06": "Corrosive substance", "07": "Other",
                   "99": "Not known"}
LOCATION_TYPES = {"01": "Street or other public place", "02": "Licensed premises (pub, bar, club)",
                  "03": "Home or other residential", "04": "Public transport", "05": "Workplace",
                  "06": "School, college or university", "07": "Other", "99": "Not known"}
SITE_CODE_RE = re.compile(r"^[A-Z0-9]{3,5}$")
OTHER_DESCRIPTION_MAX = 100
LOCATION_DESCRIPTION_MAX = 250
# DEMO site list: real London ED site codes (ODS) could not be sourced and verified here, so these are
# invented codes for the demo drops; a deployment replaces them with the ODS site codes of London's type 1
# EDs and their boroughs. A site not listed is located to nothing.
# Each site: name, borough, and the site's point (British National Grid metres; invented demo points inside
# the borough), whose catchment bounds the matching of free-text locations (loaders/locating.py).
ED_SITES = {
    "DEM01": ("Demo General Hospital ED (Lambeth)", "E09000022", (531000, 175500)),
    "DEM02": ("Demo Royal Hospital ED (Tower Hamlets)", "E09000030", (534800, 181700)),
    "DEM03": ("Demo University Hospital ED (Southwark)", "E09000028", (534300, 176800)),
    "DEM04": ("Demo North Hospital ED (Haringey)", "E09000014", (533900, 190000)),
    "DEM05": ("Demo West Hospital ED (Ealing)", "E09000009", (517700, 180800)),
    "DEM06": ("Demo Central Hospital ED (Westminster)", "E09000033", (526800, 181400)),
}

# The XML layout istv.xsd defines: element name, minimum and maximum occurrences, in order.
HEADER_ELEMENTS = (("ReportingPeriodStartDate", 1, 1), ("ReportingPeriodEndDate", 1, 1),
                   ("SiteCodeOfTreatment", 1, 1))
ASSAULT_ELEMENTS = (("ArrivalDateTime", 0, 1), ("AssaultDateTime", 1, 1), ("AssaultMethod", 1, 1),
                    ("AssaultMethodOtherDescription", 0, 1), ("AssaultLocationType", 1, 1),
                    ("AssaultLocationDescription", 0, 1))
XML_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
XML_DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})?$")


def _children_in_order(parent: ET.Element, layout, where: str) -> dict[str, str]:
    """The texts of ``parent``'s child elements, checked against ``layout``; DropRejected otherwise."""
    children = list(parent)
    values: dict[str, str] = {}
    at = 0
    for name, low, high in layout:
        count = 0
        while at < len(children) and children[at].tag == name:
            if len(children[at]):
                raise DropRejected(f"schema: {where}/{name} must hold text, not elements")
            values[name] = (children[at].text or "").strip()
            at += 1
            count += 1
        if not low <= count <= high:
            raise DropRejected(f"schema: {where} needs {low}..{high} {name} element(s) in this order "
                               f"({', '.join(n for n, _, _ in layout)}), found {count}")
    if at < len(children):
        raise DropRejected(f"schema: unexpected element {children[at].tag!r} in {where} (allowed, in order: "
                           f"{', '.join(n for n, _, _ in layout)})")
    return values


def _check_value(value: str, kind: str, where: str) -> None:
    """The simple types of istv.xsd; DropRejected naming the element and the value."""
    ok = {"date": lambda v: XML_DATE_RE.fullmatch(v) is not None and _valid(date.fromisoformat, v),
          "dateTime": lambda v: XML_DATETIME_RE.fullmatch(v) is not None and _valid(datetime.fromisoformat, v),
          "site": lambda v: SITE_CODE_RE.fullmatch(v) is not None,
          "method": lambda v: v in ASSAULT_METHODS, "locationType": lambda v: v in LOCATION_TYPES,
          "other": lambda v: 1 <= len(v) <= OTHER_DESCRIPTION_MAX,
          "description": lambda v: 1 <= len(v) <= LOCATION_DESCRIPTION_MAX}[kind]
    if not ok(value):
        raise DropRejected(f"schema: {where} = {value[:60]!r} is not a valid {kind} (see docs/suppliers/istv.xsd)")


def _valid(parse, value: str) -> bool:
    try:
        parse(value)
        return True
    except ValueError:
        return False


ASSAULT_TYPES = {"ArrivalDateTime": "dateTime", "AssaultDateTime": "dateTime", "AssaultMethod": "method",
                 "AssaultMethodOtherDescription": "other", "AssaultLocationType": "locationType",
                 "AssaultLocationDescription": "description"}


def istv_xml_to_csv(data: bytes) -> bytes:
    """An ISTV XML submission as CSV bytes (CSV_COLUMNS), after checking it against istv.xsd's rules.

    The standard library's parser does no schema validation, so the XSD's rules are checked here by hand
    (the XSD stays the published contract). DTDs are refused: the data set needs none, and entity
    expansion is how XML bombs work.
    """
    if b"<!DOCTYPE" in data[:4096] or b"<!ENTITY" in data:
        raise DropRejected("the XML declares a DTD or entities, which an ISTV submission never needs; "
                           "ask the sender to export plain XML")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise DropRejected(f"not well-formed XML ({exc}); ask the sender to re-export the submission") from None
    if root.tag != "ISTVSubmission":
        raise DropRejected(f"schema: the root element is {root.tag!r}, expected 'ISTVSubmission' "
                           "(namespaces are not used; see docs/suppliers/istv.xsd)")
    children = list(root)
    if not children or children[0].tag != "SubmissionHeader":
        raise DropRejected("schema: ISTVSubmission must start with one SubmissionHeader")
    header = _children_in_order(children[0], HEADER_ELEMENTS, "SubmissionHeader")
    _check_value(header["ReportingPeriodStartDate"], "date", "SubmissionHeader/ReportingPeriodStartDate")
    _check_value(header["ReportingPeriodEndDate"], "date", "SubmissionHeader/ReportingPeriodEndDate")
    _check_value(header["SiteCodeOfTreatment"], "site", "SubmissionHeader/SiteCodeOfTreatment")
    assaults = children[1:]
    if not assaults:
        raise DropRejected("schema: a submission holds at least one Assault")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for n, assault in enumerate(assaults, start=1):
        where = f"Assault #{n}"
        if assault.tag != "Assault":
            raise DropRejected(f"schema: unexpected element {assault.tag!r} after SubmissionHeader "
                               "(only Assault elements may follow)")
        values = _children_in_order(assault, ASSAULT_ELEMENTS, where)
        for name, value in values.items():
            _check_value(value, ASSAULT_TYPES[name], f"{where}/{name}")
        writer.writerow((header["SiteCodeOfTreatment"], header["ReportingPeriodStartDate"],
                         header["ReportingPeriodEndDate"], values.get("ArrivalDateTime", ""),
                         values["AssaultDateTime"], values["AssaultMethod"],
                         values.get("AssaultMethodOtherDescription", ""), values["AssaultLocationType"],
                         values.get("AssaultLocationDescription", "")))
    return out.getvalue().encode("utf-8")


def local_instant(value: str, what: str) -> datetime:
    """An ISO date and time (London local time unless it carries an offset) as an aware datetime."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Quarantine(f"unparseable {what} {value!r} (expected YYYY-MM-DDThh:mm[:ss])") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=LONDON)


class IstvFormat(SupplierFormat):
    supplier = "istv_ed"
    file_pattern = re.compile(r"^istv-(?P<site>[A-Za-z0-9]{3,5})-(?P<month>\d{4}-\d{2})\.(?P<kind>xml|csv)(\.gz)?$")
    columns = CSV_COLUMNS
    coordinate_srid = 27700         # of the points the gazetteer gives (the data set has none of its own)
    uses_locator = True

    def __init__(self, file_name, mapping):
        super().__init__(file_name, mapping)
        self.now = datetime.now(timezone.utc)
        self.periods: set[str] = set()

    def as_csv(self, data: bytes) -> bytes:
        return istv_xml_to_csv(data) if self.file_match and self.file_match.group("kind") == "xml" else data

    def harmonise_row(self, fields: list[str], line_no: int) -> tuple:
        (site, period_start, period_end, arrival, assaulted, method, other, location_type, description) = fields
        site = site.strip().upper()
        if not SITE_CODE_RE.fullmatch(site):
            raise Quarantine(f"Site Code {site!r} is not an ODS site code (3-5 letters and digits)")
        try:
            start, end = date.fromisoformat(period_start.strip()), date.fromisoformat(period_end.strip())
        except ValueError:
            raise Quarantine(f"unparseable reporting period {period_start!r} .. {period_end!r} "
                             "(expected YYYY-MM-DD)") from None
        if end < start:
            raise Quarantine(f"reporting period ends ({end}) before it starts ({start})")
        occurred = local_instant(assaulted, "Assault Date Time")
        arrived = local_instant(arrival, "Arrival Date Time") if arrival.strip() else None
        for instant, what in ((occurred, "Assault Date Time"), (arrived, "Arrival Date Time")):
            if instant is not None and instant > self.now:
                raise Quarantine(f"{what} {instant.isoformat()} is in the future")
        method = method.strip()
        mapped = self.mapping.get(method)
        if mapped is None:
            raise Quarantine(f"Assault Method {method!r} is not an ISTV code ({', '.join(ASSAULT_METHODS)})")
        location_type = location_type.strip()
        if location_type not in LOCATION_TYPES:
            raise Quarantine(f"Assault Location Type {location_type!r} is not an ISTV code "
                             f"({', '.join(LOCATION_TYPES)})")
        self.periods.add(f"{site}|{start}|{end}")
        occurred = occurred.replace(second=0, microsecond=0)
        site_known = ED_SITES.get(site)
        if site_known:
            # Located by the pipeline (loaders/locating.py): the free text in the site's catchment, else the
            # borough of the site.
            precision, hint, method_note = "borough", site_known[1], ""
            self.location_requests[line_no] = LocationRequest(
                text=description.strip(), near=site_known[2], home_borough=site_known[1],
                fallback_borough=site_known[1], fallback_confidence=40, fallback_note="borough of the hospital site")
        else:
            precision, hint = "none", None
            method_note = "none (site not in the ED site list, so no catchment to match the text in)"
        # Only the data set's own fields, plus how the row was located (data minimisation).
        attributes = json_object(
            ("site_code", site), ("reporting_period_start", start.isoformat()),
            ("reporting_period_end", end.isoformat()),
            ("arrival_at", arrived.isoformat() if arrived else ""), ("assault_method", method),
            ("assault_method_other_description", other.strip()), ("assault_location_type", location_type),
            ("assault_location_description", description.strip()), ("location_method", method_note))
        return (line_no, None, occurred, "minute", mapped.category_id, method, mapped.theme_weapon,
                mapped.theme_dava, None, night_time_economy(occurred, "minute"), mapped.theme_arson,
                None, None, precision, hint, HEALTH_ACCESS_LEVEL, attributes)

    def replace_key(self) -> str | None:
        return "+".join(sorted(self.periods)) or None
