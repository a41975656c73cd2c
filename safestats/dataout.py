"""Data out: records and aggregates for a filter state and user, and the CSV and GeoJSON files made of them.

The one module behind both the dashboard's exports (``dashapp.exports``) and the read API
(``dashapp.api``), on top of the query layer (``safestats.queries``: the same plans, the same scoping to the
user's suppliers and area level, the same disclosure control), so an exported number is the number the
dashboard shows for the same state and user:

* ``aggregates``: counts by area (borough, MSOA or LSOA, as the tier allows) x period (month or year) x
  category in the state's current period, under every filter of the state (its area selection included).
  Health aggregates for tiers under disclosure control are borough x month cells at the finest, each
  controlled (``safestats.disclosure``: 1-7 as ``None``/"*", others rounded to 5), and the file's total is
  the dashboard headline's (rounded after summing).
* ``records``: the incidents themselves, keyset-paged by (time, id), only for a user whose policy shows
  every record the view would hold (record level, and their boroughs for borough analysts); otherwise
  ``AccessRefused`` with what to do instead. No supplier free text (``attributes``) ever leaves.
* writers: ``aggregates_csv``, ``records_csv`` (leading ``# `` comment lines, then a header row: read with
  ``pandas.read_csv(url, comment="#", na_values="*")`` or R's ``read.csv(comment.char = "#",
  na.strings = "*")``; the first line says how many lines to skip for tools without comment support, such
  as QGIS's "Number of header lines to discard"), and ``aggregates_geojson`` / ``records_geojson`` (the
  same metadata as a top-level ``metadata`` member, which GeoJSON readers ignore). Every file names its
  filters (query string and a plain summary), the data's freshness per supplier, when and for which tier it
  was made, the disclosure rule when applied, and the licences and attributions its data carries.
"""
from __future__ import annotations

import base64
import csv
import io
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine

from safestats import access, disclosure, queries
from safestats.access import AccessRefused
from safestats.filters import DAY_NAMES, THEMES, FilterState
from safestats.location_levels import METHOD_LABELS

LONDON = ZoneInfo("Europe/London")
AREA_LEVEL_LABELS = {"borough": "Borough", "msoa": "MSOA", "lsoa": "LSOA"}
GRAINS = ("month", "year")
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 5000
# The most records one dashboard export file holds; larger views are paged through the API.
MAX_EXPORT_RECORDS = 100_000
NO_AREA = "Not located to an area"

# What each supplier's data needs said wherever it is reused (README "Data licences and attribution").
SUPPLIER_ATTRIBUTIONS = {
    "police_uk": "police.uk (Home Office): Contains public sector information licensed under the Open "
                 "Government Licence v3.0.",
    "police_uk_outcomes": "police.uk (Home Office): Contains public sector information licensed under the Open "
                          "Government Licence v3.0.",
    "police_uk_stop_search": "police.uk (Home Office): Contains public sector information licensed under the "
                             "Open Government Licence v3.0.",
    "lfb": "London Fire Brigade (London Datastore): Contains public sector information licensed under the Open "
           "Government Licence v2.0.",
    "tfl_bus": "Transport for London: Powered by TfL Open Data.",
    "las": "London Ambulance Service / Greater London Authority, London Datastore (UK Open Government Licence).",
    "istv_ed": "NHS emergency departments, shared under NHS England's Information Sharing to Tackle Violence "
               "standard for community-safety partners: not for onward publication.",
}
BOUNDARY_ATTRIBUTION = ("Boundaries: Source: Office for National Statistics licensed under the Open Government "
                        "Licence v3.0. Contains OS data © Crown copyright and database right 2022.")
OGL_URL = "https://www.nationalarchives.gov.uk/doc/open-government-licence/version/3/"


# ---- the filters in words ---------------------------------------------------------------------------------

def filter_names(engine: Engine) -> dict:
    """Code -> name maps for every filter a state can name (what ``filter_labels`` reads)."""
    tax = queries.taxonomy(engine)
    return {"suppliers": tax.suppliers, "domains": tax.domains,
            "categories": {cid: name for cid, (_, name) in tax.categories.items()},
            "areas": {code: a.name for code, a in queries.areas(engine).items()}}


def filter_labels(state: FilterState, names: dict) -> list[tuple[str, str]]:
    """(URL key it clears, plain label) per active data filter: the dashboard's chips and every file's summary."""
    labels = []
    if state.date_from or state.date_to:
        labels.append(("dates", f"{state.date_from or '…'} to {state.date_to or '…'}"))
    if state.suppliers:
        labels.append(("supplier", "Supplier: " + ", ".join(names["suppliers"].get(s, s).split("(")[0].strip()
                                                             for s in state.suppliers)))
    if state.domains:
        labels.append(("domain", "Domain: " + ", ".join(names["domains"].get(d, d) for d in state.domains)))
    if state.categories:
        labels.append(("cat", "Category: " + ", ".join(names["categories"].get(c, str(c)) for c in state.categories)))
    if state.themes:
        labels.append(("theme", "Theme: " + ", ".join(THEMES[t][2] for t in state.themes)))
    area = state.selected_area
    if area:
        labels.append(("area", f"{AREA_LEVEL_LABELS[area[0]]}: {names['areas'].get(area[1], area[1])}"))
    if state.polygon:
        labels.append(("poly", "Drawn area"))
    if state.hotspot_cell:
        labels.append(("cell", f"Hotspot cell ({state.hotspot_cell[0]} m)"))
    if state.hours:
        labels.append(("hours", f"Hours {state.hours[0]:02d}:00–{state.hours[1]:02d}:59"))
    if state.days:
        labels.append(("dow", "Days: " + ", ".join(DAY_NAMES[d - 1] for d in state.days)))
    if state.located_at_least:
        labels.append(("located", f"Located at least: {METHOD_LABELS[state.located_at_least]}"))
    if state.as_at is not None:  # removing it follows the latest data again
        labels.append(("asat", f"Pinned: data as at drop {state.as_at}"))
    return labels


def describe(engine: Engine, state: FilterState) -> str:
    labels = filter_labels(state, filter_names(engine))
    return "; ".join(label for _, label in labels) or "No filters: all incidents in London"


# ---- what every file says about itself ----------------------------------------------------------------------

@dataclass(frozen=True)
class Metadata:
    """The facts every export names: what, for whom, which filters, how fresh, under which licences."""

    title: str
    generated_at: str  # UTC, ISO 8601
    tier: str
    filters: str  # the FilterState query string (data filters only): paste it after /? to see the view
    filters_summary: str
    period_start: str | None
    period_end: str | None
    freshness: list[dict]  # per supplier the user may see: newest data and when its newest drop was loaded
    attribution: list[str]
    licence: str
    disclosure: str | None = None
    details: dict = field(default_factory=dict)  # level, grain, rows, total ...

    def as_json(self) -> dict:
        return asdict(self)

    def comment_lines(self) -> list[str]:
        """The CSV's leading ``# `` lines (the first says how many there are)."""
        body = [f"title: {self.title}", f"generated_at: {self.generated_at}", f"tier: {self.tier}",
                f"filters: {self.filters or '(none)'}", f"filters_summary: {self.filters_summary}",
                f"period: {self.period_start or '-'} to {self.period_end or '-'}"]
        body += [f"{key}: {value}" for key, value in self.details.items()]
        body += [f"freshness: {f['supplier']} data to {f['data_to'] or '-'}, loaded {f['last_loaded'] or '-'}"
                 for f in self.freshness]
        if self.disclosure:
            body.append(f"disclosure: {self.disclosure}")
        body += [f"attribution: {a}" for a in self.attribution]
        body.append(f"licence: {self.licence}")
        lines = [f"SafeStats export: {len(body) + 1} comment lines, then a header row "
                 "(read with comment='#'; '*' marks a suppressed count)"] + body
        return ["# " + line.replace("\n", " ") for line in lines]


def metadata(engine: Engine, state: FilterState, user, title: str, controlled: bool = False,
             with_boundaries: bool = False, **details) -> Metadata:
    """The metadata of an export of ``state`` for ``user``: the suppliers named are the ones the user may see."""
    visible = queries.visible_suppliers(engine, user, state)
    chosen = [s for s in (state.suppliers or sorted(visible)) if s in visible]
    fresh = [{"supplier": f.supplier, "name": f.name, "data_to": f.data_to.isoformat() if f.data_to else None,
              "last_loaded": _iso(f.last_loaded)} for f in queries.freshness(engine, state.as_at) if f.supplier in chosen]
    attribution = [SUPPLIER_ATTRIBUTIONS.get(s, f"{s}: see the supplier's terms") for s in chosen]
    attribution = list(dict.fromkeys(attribution))  # police.uk's three feeds share one line
    if with_boundaries:
        attribution.append(BOUNDARY_ATTRIBUTION)
    period = queries.current_period(engine, queries._scoped(engine, state, user))
    if not chosen:
        details = dict(details, suppliers="none: no supplier in this view is within your access level")
    rule = (f"NHS HES/ECDS rule: health counts 1-{disclosure.SUPPRESSED_MAX} shown as '{disclosure.SUPPRESSED_LABEL}', "
            f"others rounded to the nearest {disclosure.ROUND_TO}; totals rounded after summing") if controlled else None
    return Metadata(title=title, generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    tier=access.policy_for(user).tier, filters=state.data_filters().to_query_string(),
                    filters_summary=describe(engine, state),
                    period_start=period.start.isoformat() if period else None,
                    period_end=period.end.isoformat() if period else None,
                    freshness=fresh, attribution=attribution,
                    licence=f"Open Government Licence v3.0 where stated ({OGL_URL}); other data under its "
                            "supplier's terms as attributed; SafeStats portal data for authorised use",
                    disclosure=rule, details=details)


def _iso(value) -> str | None:
    if value is None:
        return None
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else value.isoformat()


# ---- aggregates ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AggregateRow:
    area_code: str  # '' for incidents not located to an area
    area_name: str
    period: str  # YYYY-MM (month) or YYYY (year)
    category_id: int
    category: str
    domain: str
    count: int | None  # None: suppressed ("*") under disclosure control


@dataclass(frozen=True)
class AreaTotal:
    """One area's counts for a map layer: over the whole period and per period (each controlled on its own)."""

    code: str
    name: str
    count: int | None
    periods: dict[str, int | None]


@dataclass(frozen=True)
class Aggregates:
    level: str
    grain: str
    period: queries.Period | None
    rows: list[AggregateRow]  # area x period x category
    areas: list[AreaTotal]  # per area, summed exactly over categories (and periods) before any control
    periods: dict[str, int | None]  # per period over every area and category (summed exactly, then controlled)
    controlled: bool  # health counts under disclosure control
    total: int | None  # the dashboard headline's total for the same state and user (None: "*")


def _export_level(state: FilterState, user) -> str:
    """The dashboard export's level: the map's (else one below the selection), no finer than the tier allows."""
    selected = state.selected_area[0] if state.selected_area else None
    level = state.map_level or {None: "borough", "borough": "msoa", "msoa": "lsoa", "lsoa": "lsoa"}[selected]
    policy = access.policy_for(user)
    while not policy.may_break_down_to(level):
        level = access.AREA_LEVELS[access.AREA_LEVELS.index(level) - 1]
    return level


@queries._for_user
def aggregates(engine: Engine, state: FilterState, user=None, level: str | None = None,
               grain: str = "month") -> Aggregates:
    """Counts by area x period x category in the state's current period. ``level`` None is the dashboard
    export's choice (``_export_level``; boroughs for health under disclosure control); an explicit level
    finer than the tier allows, or than the disclosure rule allows, is refused (``AccessRefused``)."""
    if level is not None and level not in access.AREA_LEVELS:
        raise ValueError(f"unknown area level {level!r} (known: {', '.join(access.AREA_LEVELS)})")
    if grain not in GRAINS:
        raise ValueError(f"unknown period grain {grain!r} (known: {', '.join(GRAINS)})")
    scoped = queries._scoped(engine, state, user)
    if level is None:
        level = "borough" if queries._controlled(engine, scoped, user) else _export_level(state, user)
    queries.check_level(level, user)
    controlled = queries._controlled(engine, scoped, user, level)
    period = queries.current_period(engine, scoped)
    total = queries.headline(engine, state, user).total
    if period is None:
        return Aggregates(level, grain, None, [], [], {}, controlled, total)
    plan = queries._plan(engine, scoped, period, {level, "month"})
    bucket = plan.month if grain == "month" else f"date_trunc('year', {plan.month})::date"
    exact = [(area or "", f"{b:%Y-%m}" if grain == "month" else f"{b:%Y}", int(cid), int(n))
             for area, b, cid, n in queries._rows(engine, f"""
        SELECT {plan.area(level)}, {bucket}, category_id, {plan.count}
        FROM {plan.relation} {plan.where()} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""", plan.params)]
    shown = disclosure.count if controlled else int
    tax, info = queries.taxonomy(engine), queries.areas(engine)

    def name(code: str) -> str:
        return info[code].name if code in info else NO_AREA
    rows = [AggregateRow(area, name(area), bucket_label, cid, tax.categories[cid][1], tax.categories[cid][0],
                         shown(n)) for area, bucket_label, cid, n in exact]
    by_area: dict[str, dict[str, int]] = {}
    by_period: dict[str, int] = {}
    for area, bucket_label, _, n in exact:
        periods = by_area.setdefault(area, {})
        periods[bucket_label] = periods.get(bucket_label, 0) + n
        by_period[bucket_label] = by_period.get(bucket_label, 0) + n
    totals = [AreaTotal(area, name(area), shown(sum(periods.values())),
                        {label: shown(n) for label, n in periods.items()}) for area, periods in by_area.items()]
    return Aggregates(level, grain, period, rows, totals, {k: shown(n) for k, n in sorted(by_period.items())},
                      controlled, total)


# ---- records ------------------------------------------------------------------------------------------------

RECORD_FIELDS = ("id", "supplier", "supplier_record_id", "occurred_at", "time_precision", "category_id", "category",
                 "domain", "supplier_category", "themes", "longitude", "latitude", "location_precision",
                 "lsoa_code", "msoa_code", "borough_code")


@dataclass(frozen=True)
class RecordPage:
    records: list[dict]  # RECORD_FIELDS, occurred_at in London time with its offset
    next_cursor: str | None  # pass it back for the next page; None: this was the last


def encode_cursor(occurred_at: datetime, record_id: int) -> str:
    return base64.urlsafe_b64encode(f"{occurred_at.isoformat()}|{record_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The (time, id) a cursor from ``records`` names; ValueError for anything else."""
    try:
        text_ = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        when, record_id = text_.split("|")
        parsed = datetime.fromisoformat(when)
        if parsed.tzinfo is None or not record_id.isdigit() or len(record_id) > 19:
            raise ValueError
        return parsed, int(record_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("the cursor is not one this API gave: start again without it") from exc


@queries._for_user
def records(engine: Engine, state: FilterState, user=None, cursor: str | None = None,
            limit: int = DEFAULT_PAGE_SIZE) -> RecordPage:
    """The incidents of the state's current period under every filter, oldest first, ``limit`` at a time;
    refused (``AccessRefused``) unless the user may see every one of them record by record."""
    if not 1 <= limit <= MAX_EXPORT_RECORDS:
        raise ValueError(f"a page holds 1 to {MAX_EXPORT_RECORDS} records")
    policy = access.policy_for(user)
    if user is None or not policy.sees_records:
        raise AccessRefused("Your access level includes aggregates only, not individual records: export the "
                            "aggregates instead.")
    scoped = queries._scoped(engine, state, user)
    period = queries.current_period(engine, scoped)
    after = decode_cursor(cursor) if cursor else None
    if period is None:
        return RecordPage([], None)
    try:  # the raw-table plan refuses a view holding records beyond the user's record level or boroughs
        plan = queries._plan(engine, scoped, period, {"point"})
    except AccessRefused as exc:
        raise AccessRefused("Record-level data is only for records your access level covers: "
                            + ("choose one of your boroughs first." if "boroughs" in str(exc) else
                               "choose suppliers whose records you may see, or export the aggregates.")) from exc
    conditions, params = queries._record_conditions(user)
    if after is not None:
        conditions.append("(occurred_at, id) > (:after_at, :after_id)")
        params.update(after_at=after[0], after_id=after[1])
    themes = ", ".join(f"{column} IS TRUE AS {key}" for key, (column, _, _) in THEMES.items())
    rows = queries._rows(engine, f"""
        SELECT id, supplier, supplier_record_id, occurred_at, time_precision, category_id, supplier_category,
               longitude, latitude, location_precision, lsoa_code, msoa_code, borough_code, {themes}
        FROM incidents {plan.where(*conditions)} ORDER BY occurred_at, id LIMIT :limit_plus_one""",
                         dict(plan.params, **params, limit_plus_one=limit + 1))
    tax = queries.taxonomy(engine)
    out = []
    for row in rows[:limit]:
        domain, category = tax.categories[row.category_id]
        out.append({"id": row.id, "supplier": row.supplier, "supplier_record_id": row.supplier_record_id,
                    "occurred_at": row.occurred_at.astimezone(LONDON).isoformat(),
                    "time_precision": row.time_precision, "category_id": row.category_id, "category": category,
                    "domain": domain, "supplier_category": row.supplier_category,
                    "themes": ",".join(key for key in THEMES if getattr(row, key)),
                    "longitude": row.longitude, "latitude": row.latitude,
                    "location_precision": row.location_precision, "lsoa_code": row.lsoa_code,
                    "msoa_code": row.msoa_code, "borough_code": row.borough_code})
    last = rows[limit - 1] if len(rows) > limit else None
    return RecordPage(out, encode_cursor(last.occurred_at, last.id) if last is not None else None)


# ---- writers ------------------------------------------------------------------------------------------------

AGGREGATE_COLUMNS = ("area_code", "area_name", "area_level", "period", "category_id", "category", "domain", "count")


def _csv(meta: Metadata, header, rows) -> str:
    out = io.StringIO()
    out.write("\n".join(meta.comment_lines()) + "\n")
    # Text quoted, numbers bare: a '#' inside a quoted name is data, not a comment, to pandas and R.
    writer = csv.writer(out, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _label(n: int | None):
    return disclosure.SUPPRESSED_LABEL if n is None else n


def aggregates_csv(aggs: Aggregates, meta: Metadata) -> str:
    return _csv(meta, AGGREGATE_COLUMNS, ([r.area_code, r.area_name, aggs.level, r.period, r.category_id, r.category,
                                          r.domain, _label(r.count)] for r in aggs.rows))


def records_csv(page: RecordPage, meta: Metadata) -> str:
    return _csv(meta, RECORD_FIELDS, ([_csv_value(record[k]) for k in RECORD_FIELDS] for record in page.records))


def _csv_value(value):
    return "" if value is None else value


def aggregates_geojson(engine: Engine, aggs: Aggregates, meta: Metadata) -> dict:
    """One feature per area (its boundary, WGS84): ``count`` over the period and ``count_<period>`` per
    period (null with ``suppressed`` true for "*"). Areas with no incidents are included with 0, so a map
    layer covers the whole region."""
    shapes = queries.boundaries_geojson(engine, aggs.level)
    totals = {t.code: t for t in aggs.areas}
    labels = sorted({label for t in aggs.areas for label in t.periods})
    features = []
    for shape in shapes["features"]:
        code = shape["properties"]["code"]
        total = totals.get(code) or AreaTotal(code, shape["properties"]["name"], 0, {})
        properties = {"code": code, "name": shape["properties"]["name"], "level": aggs.level,
                      "count": total.count, "suppressed": total.count is None}
        properties.update({f"count_{label}": total.periods.get(label, 0) for label in labels})
        features.append({"type": "Feature", "id": code, "geometry": shape["geometry"], "properties": properties})
    return {"type": "FeatureCollection", "metadata": meta.as_json(), "features": features}


def records_geojson(page: RecordPage, meta: Metadata) -> dict:
    features = []
    for record in page.records:
        located = record["longitude"] is not None and record["latitude"] is not None
        features.append({"type": "Feature", "id": record["id"],
                         "geometry": {"type": "Point", "coordinates": [record["longitude"], record["latitude"]]}
                         if located else None,
                         "properties": {k: v for k, v in record.items() if k not in ("longitude", "latitude")}})
    return {"type": "FeatureCollection", "metadata": meta.as_json(), "features": features}
