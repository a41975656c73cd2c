"""The dashboard's filter state: one frozen dataclass, and its strict round trip through a URL query string.

Everything an analyst has chosen — dates, suppliers, categories, themes, the selected area or drawn polygon,
time of day, day of week, how well records must be located, a hotspot grid cell picked on the map, the data
version a view is pinned to ("as at" a drop: ``asat``, see ``safestats.queries``), and how
the map is drawn (level, measure, class breaks, layers, the hotspot layer and its settings, zoom and centre) —
lives in one ``FilterState``. It is the only thing a shared link encodes: ``to_query_string`` writes it into
the page URL, ``from_query_string`` reads it back, and the query layer takes it (never loose arguments).
Values arriving from the browser are untrusted: parsing accepts only the keys and formats it knows and
raises ``ValueError`` with a message fit to show the user on anything else — a mistyped or tampered filter
must never silently become an unfiltered (all-London) query. It checks format only; whether a well-formed
code exists (a borough, a supplier) is checked against the database by ``safestats.queries.check_state``.
``data_filters()`` drops the fields that only change how the map is drawn, so panels, caches and history
entries key on what changes the numbers. To grow the state: a field with a default, its key in ``_KEYS``,
a parse step and a format step.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from datetime import date, datetime, timedelta
from urllib.parse import parse_qsl, urlencode

# ONS codes (E09000007) and the name-derived keys the boundary loader makes when a source has no code.
_AREA_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,39}$")
_SIMPLE_CODE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
MAX_QUERY_STRING_LENGTH = 4000

# Cross-cutting themes analysts report on; each is an incidents.theme_* column and a bit in the rollups.
THEMES = {
    "weapon": ("theme_weapon", 1, "Weapon or knife involved"),
    "dava": ("theme_dava", 2, "Domestic abuse / VAWG"),
    "young_victim": ("theme_young_victim", 4, "Young victim"),
    "night_time_economy": ("theme_night_time_economy", 8, "Night-time economy"),
    "arson": ("theme_arson", 16, "Arson"),
}
MAP_LEVELS = ("borough", "msoa", "lsoa")
MAP_MEASURES = ("count", "change", "rate_area", "rate_population")
MAP_BREAKS = ("quantile", "jenks")
MAP_LAYERS = ("density", "points")
# The hotspot layer drawn over the map (one at a time): Gi* on grid cells or LSOAs, the kernel density surface,
# emerging hot spots over time steps, or the change between two periods.
HOTSPOT_LAYERS = ("gi_grid", "gi_lsoa", "kde", "emerging", "compare")
HOTSPOT_CONFIDENCES = (90, 95, 99)
HOTSPOT_CELL_SIZES = (250, 500)  # metres: the grid cells a picked hotspot cell can be (British National Grid)
HOTSPOT_STEP_MONTHS = (1, 2, 3, 6)
MIN_KDE_BANDWIDTH_M, MAX_KDE_BANDWIDTH_M = 100, 10_000
# British National Grid extent (metres): a picked cell outside it is a tampered value.
_BNG_X, _BNG_Y = (0, 700_000), (0, 1_300_000)
MIN_ZOOM, MAX_ZOOM = 8, 18
MAX_POLYGON_VERTICES = 100
# Generous bounds of Great Britain: a drawn polygon or map centre outside it is a tampered value.
_GB_LON, _GB_LAT = (-9.0, 2.5), (49.0, 61.5)

_KEYS = ("from", "to", "supplier", "domain", "cat", "theme", "borough", "msoa", "lsoa", "poly", "cell", "hours",
         "dow", "located", "asat", "level", "measure", "breaks", "layer", "hot", "conf", "fdr", "bw", "step", "cmpfrom",
         "cmpto", "z", "c")
QUERY_KEYS = _KEYS  # every key a link (or an API call's filters) may carry
# "Located at least as well as": the location methods, best first (safestats/location_levels.py); the last
# ("unlocated") would filter nothing, so it is not a choice.
LOCATED_CHOICES = ("exact", "postcode", "gazetteer", "borough")
# Keys that change only how the map is drawn, not which incidents are counted.
_VIEW_ONLY_FIELDS = ("map_level", "map_measure", "map_breaks", "map_layers", "hotspot", "hotspot_confidence",
                     "hotspot_fdr", "kde_bandwidth_m", "hotspot_step_months", "compare_from", "compare_to",
                     "zoom", "centre")

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # ISO day 1..7


@dataclass(frozen=True)
class FilterState:
    """What the user has chosen to look at; an empty or ``None`` field means "not filtered on this"."""

    date_from: date | None = None  # inclusive, a calendar date in Europe/London
    date_to: date | None = None  # inclusive
    suppliers: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()  # a domain selects all its categories
    categories: tuple[int, ...] = ()
    themes: tuple[str, ...] = ()  # any of these themes (OR): "knife or domestic abuse"
    borough_code: str | None = None
    msoa_code: str | None = None
    lsoa_code: str | None = None
    polygon: tuple[tuple[float, float], ...] | None = None  # (lon, lat) ring drawn on the map, not closed
    # (cell size in metres, x // size, y // size) of a British National Grid cell picked on the hotspot layer
    hotspot_cell: tuple[int, int, int] | None = None
    hours: tuple[int, int] | None = None  # inclusive local hours; (22, 4) wraps past midnight
    days: tuple[int, ...] = ()  # ISO weekdays, 1 = Monday
    located_at_least: str | None = None  # only records located at least this well (LOCATED_CHOICES)
    # "As at": the id of the newest drop when a saved view was pinned; every panel then counts, per supplier,
    # only the months that supplier's drops up to this one covered (None: follow the latest data).
    as_at: int | None = None
    map_level: str | None = None  # None: the level follows the zoom
    map_measure: str = "count"
    map_breaks: str = "quantile"
    map_layers: tuple[str, ...] = ()
    hotspot: str | None = None  # one of HOTSPOT_LAYERS, or None for no hotspot layer
    hotspot_confidence: int = 90  # the lowest confidence (per cent) drawn as hot or cold
    hotspot_fdr: bool = False  # Benjamini-Hochberg false-discovery-rate correction of the Gi* p-values
    kde_bandwidth_m: int | None = None  # None: the standard rule (Silverman / ArcGIS) on the selection
    hotspot_step_months: int = 1  # emerging hot spots: months per time step, across the current period
    compare_from: date | None = None  # period comparison: the earlier period (None: the one just before)
    compare_to: date | None = None
    zoom: float | None = None
    centre: tuple[float, float] | None = None  # (lat, lon)

    def __post_init__(self) -> None:
        for name in ("date_from", "date_to", "compare_from", "compare_to"):
            value = getattr(self, name)
            # datetime is a subclass of date, but a time of day here would be silently ignored by the SQL.
            if value is not None and (not isinstance(value, date) or isinstance(value, datetime)):
                raise ValueError(f"{name} must be a date, not {value!r}")
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError(f"the start date {self.date_from} is after the end date {self.date_to}")
        if (self.compare_from is None) != (self.compare_to is None):
            raise ValueError("a comparison period needs both a start and an end date")
        if self.compare_from and self.compare_from > self.compare_to:
            raise ValueError(f"the comparison period starts ({self.compare_from}) after it ends ({self.compare_to})")
        _check_codes("supplier", self.suppliers, _SIMPLE_CODE)
        _check_codes("domain", self.domains, _SIMPLE_CODE)
        if not isinstance(self.categories, tuple) or not all(
                isinstance(c, int) and not isinstance(c, bool) and 0 < c < 1000 for c in self.categories):
            raise ValueError(f"categories must be category numbers, not {self.categories!r}")
        _check_unique("category", self.categories)
        if not isinstance(self.themes, tuple) or any(t not in THEMES for t in self.themes):
            raise ValueError(f"unknown theme in {self.themes!r} (known: {', '.join(THEMES)})")
        _check_unique("theme", self.themes)
        for name in ("borough_code", "msoa_code", "lsoa_code"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not _AREA_CODE.match(value)):
                raise ValueError(f"not a valid area code: {value!r}")
        if self.polygon is not None:
            _check_polygon(self.polygon)
        if self.hotspot_cell is not None:
            _check_cell(self.hotspot_cell)
        if self.hours is not None:
            if (not isinstance(self.hours, tuple) or len(self.hours) != 2
                    or not all(isinstance(h, int) and 0 <= h <= 23 for h in self.hours)):
                raise ValueError(f"hours must be two hours of the day 0-23, not {self.hours!r}")
        if not isinstance(self.days, tuple) or not all(isinstance(d, int) and 1 <= d <= 7 for d in self.days):
            raise ValueError(f"days must be weekdays 1 (Monday) to 7 (Sunday), not {self.days!r}")
        _check_unique("day", self.days)
        if self.located_at_least is not None and self.located_at_least not in LOCATED_CHOICES:
            raise ValueError(f"unknown location method {self.located_at_least!r} "
                             f"(known: {', '.join(LOCATED_CHOICES)})")
        if self.as_at is not None and not (isinstance(self.as_at, int) and not isinstance(self.as_at, bool)
                                           and 0 < self.as_at < 10 ** 12):
            raise ValueError(f"'as at' must be a drop number, not {self.as_at!r}")
        if self.map_level is not None and self.map_level not in MAP_LEVELS:
            raise ValueError(f"unknown map level {self.map_level!r} (known: {', '.join(MAP_LEVELS)})")
        if self.map_measure not in MAP_MEASURES:
            raise ValueError(f"unknown map measure {self.map_measure!r} (known: {', '.join(MAP_MEASURES)})")
        if self.map_breaks not in MAP_BREAKS:
            raise ValueError(f"unknown class breaks {self.map_breaks!r} (known: {', '.join(MAP_BREAKS)})")
        if not isinstance(self.map_layers, tuple) or any(layer not in MAP_LAYERS for layer in self.map_layers):
            raise ValueError(f"unknown map layer in {self.map_layers!r} (known: {', '.join(MAP_LAYERS)})")
        if self.hotspot is not None and self.hotspot not in HOTSPOT_LAYERS:
            raise ValueError(f"unknown hotspot layer {self.hotspot!r} (known: {', '.join(HOTSPOT_LAYERS)})")
        if self.hotspot_confidence not in HOTSPOT_CONFIDENCES:
            raise ValueError(f"hotspot confidence must be one of {HOTSPOT_CONFIDENCES}, not {self.hotspot_confidence!r}")
        if not isinstance(self.hotspot_fdr, bool):
            raise ValueError(f"the FDR option must be true or false, not {self.hotspot_fdr!r}")
        if self.kde_bandwidth_m is not None and not (
                isinstance(self.kde_bandwidth_m, int) and not isinstance(self.kde_bandwidth_m, bool)
                and MIN_KDE_BANDWIDTH_M <= self.kde_bandwidth_m <= MAX_KDE_BANDWIDTH_M):
            raise ValueError(f"the density bandwidth must be {MIN_KDE_BANDWIDTH_M} to {MAX_KDE_BANDWIDTH_M} "
                             f"metres, not {self.kde_bandwidth_m!r}")
        if self.hotspot_step_months not in HOTSPOT_STEP_MONTHS:
            raise ValueError(f"a time step must be one of {HOTSPOT_STEP_MONTHS} months, "
                             f"not {self.hotspot_step_months!r}")
        if self.zoom is not None and not (isinstance(self.zoom, (int, float)) and MIN_ZOOM <= self.zoom <= MAX_ZOOM):
            raise ValueError(f"zoom must be between {MIN_ZOOM} and {MAX_ZOOM}, not {self.zoom!r}")
        if self.centre is not None:
            lat, lon = self.centre
            if not (_GB_LAT[0] <= lat <= _GB_LAT[1] and _GB_LON[0] <= lon <= _GB_LON[1]):
                raise ValueError(f"the map centre {self.centre!r} is outside Great Britain")

    # ---- derived views of the state -------------------------------------------------------------------

    def data_filters(self) -> "FilterState":
        """The state without the map-drawing fields: what decides which incidents are counted."""
        return replace(self, **{f.name: f.default for f in fields(self) if f.name in _VIEW_ONLY_FIELDS})

    def map_view(self) -> "FilterState":
        """Only the map-drawing fields (what resetting the filters keeps)."""
        return replace(FilterState(), **{name: getattr(self, name) for name in _VIEW_ONLY_FIELDS})

    def without_spatial_selection(self) -> "FilterState":
        """The state with no area, drawn polygon or picked cell (the map shows every area, the selection highlighted)."""
        return replace(self, borough_code=None, msoa_code=None, lsoa_code=None, polygon=None, hotspot_cell=None)

    @property
    def selected_area(self) -> tuple[str, str] | None:
        """(level, code) of the finest area selected, or None."""
        for level, code in (("lsoa", self.lsoa_code), ("msoa", self.msoa_code), ("borough", self.borough_code)):
            if code is not None:
                return level, code
        return None

    @property
    def theme_mask(self) -> int:
        mask = 0
        for theme in self.themes:
            mask |= THEMES[theme][1]
        return mask

    def is_default(self) -> bool:
        return self.data_filters() == FilterState()

    # ---- URL round trip ---------------------------------------------------------------------------------

    def to_query_string(self) -> str:
        """``from=2024-01-01&to=2024-12-31&borough=E09000007…``: keys in a fixed order, unset fields left out."""
        pairs: list[tuple[str, str]] = []
        if self.date_from is not None:
            pairs.append(("from", self.date_from.isoformat()))
        if self.date_to is not None:
            pairs.append(("to", self.date_to.isoformat()))
        for key, values in (("supplier", self.suppliers), ("domain", self.domains),
                            ("cat", self.categories), ("theme", self.themes)):
            if values:
                pairs.append((key, ",".join(str(v) for v in values)))
        for key, code in (("borough", self.borough_code), ("msoa", self.msoa_code), ("lsoa", self.lsoa_code)):
            if code is not None:
                pairs.append((key, code))
        if self.polygon is not None:
            pairs.append(("poly", ";".join(f"{lon:.5f},{lat:.5f}" for lon, lat in self.polygon)))
        if self.hotspot_cell is not None:
            pairs.append(("cell", ":".join(str(v) for v in self.hotspot_cell)))
        if self.hours is not None:
            pairs.append(("hours", f"{self.hours[0]}-{self.hours[1]}"))
        if self.days:
            pairs.append(("dow", ",".join(str(d) for d in self.days)))
        if self.located_at_least is not None:
            pairs.append(("located", self.located_at_least))
        if self.as_at is not None:
            pairs.append(("asat", str(self.as_at)))
        if self.map_level is not None:
            pairs.append(("level", self.map_level))
        if self.map_measure != "count":
            pairs.append(("measure", self.map_measure))
        if self.map_breaks != "quantile":
            pairs.append(("breaks", self.map_breaks))
        if self.map_layers:
            pairs.append(("layer", ",".join(self.map_layers)))
        if self.hotspot is not None:
            pairs.append(("hot", self.hotspot))
        if self.hotspot_confidence != 90:
            pairs.append(("conf", str(self.hotspot_confidence)))
        if self.hotspot_fdr:
            pairs.append(("fdr", "1"))
        if self.kde_bandwidth_m is not None:
            pairs.append(("bw", str(self.kde_bandwidth_m)))
        if self.hotspot_step_months != 1:
            pairs.append(("step", str(self.hotspot_step_months)))
        if self.compare_from is not None:
            pairs.append(("cmpfrom", self.compare_from.isoformat()))
            pairs.append(("cmpto", self.compare_to.isoformat()))
        if self.zoom is not None:
            pairs.append(("z", f"{self.zoom:g}"))
        if self.centre is not None:
            pairs.append(("c", f"{self.centre[0]:.5f},{self.centre[1]:.5f}"))
        return urlencode(pairs, safe=",;:")

    @classmethod
    def from_query_string(cls, query: str | None) -> "FilterState":
        """Parse what ``to_query_string`` writes (a leading ``?`` is allowed); raise ``ValueError`` otherwise."""
        if query is None:
            return cls()
        if not isinstance(query, str):
            raise ValueError(f"filter state must be a query string, not {type(query).__name__}")
        if len(query) > MAX_QUERY_STRING_LENGTH:
            raise ValueError("the link's filter is too long")
        query = query[1:] if query.startswith("?") else query
        if not query:
            return cls()
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError as exc:
            raise ValueError(f"malformed filter in the link: {query[:80]!r}") from exc
        values: dict[str, str] = {}
        for key, value in pairs:
            if key not in _KEYS:
                raise ValueError(f"unknown filter {key!r} in the link (known: {', '.join(_KEYS)})")
            if key in values:
                raise ValueError(f"filter {key!r} given more than once")
            if value == "":
                raise ValueError(f"filter {key!r} has an empty value")
            values[key] = value
        try:
            return cls(
                date_from=_parse_date("from", values.get("from")),
                date_to=_parse_date("to", values.get("to")),
                suppliers=_parse_list(values.get("supplier")),
                domains=_parse_list(values.get("domain")),
                categories=tuple(_parse_int("cat", v) for v in _parse_list(values.get("cat"))),
                themes=_parse_list(values.get("theme")),
                borough_code=values.get("borough"),
                msoa_code=values.get("msoa"),
                lsoa_code=values.get("lsoa"),
                polygon=_parse_polygon(values.get("poly")),
                hotspot_cell=_parse_cell(values.get("cell")),
                hours=_parse_hours(values.get("hours")),
                days=tuple(_parse_int("dow", v) for v in _parse_list(values.get("dow"))),
                located_at_least=values.get("located"),
                as_at=_parse_int("asat", values["asat"], digits=12) if "asat" in values else None,
                map_level=values.get("level"),
                map_measure=values.get("measure", "count"),
                map_breaks=values.get("breaks", "quantile"),
                map_layers=_parse_list(values.get("layer")),
                hotspot=values.get("hot"),
                hotspot_confidence=_parse_int("conf", values["conf"]) if "conf" in values else 90,
                hotspot_fdr=_parse_flag("fdr", values.get("fdr")),
                kde_bandwidth_m=_parse_int("bw", values["bw"], digits=5) if "bw" in values else None,
                hotspot_step_months=_parse_int("step", values["step"]) if "step" in values else 1,
                compare_from=_parse_date("cmpfrom", values.get("cmpfrom")),
                compare_to=_parse_date("cmpto", values.get("cmpto")),
                zoom=_parse_float("z", values["z"]) if "z" in values else None,
                centre=_parse_pair("c", values["c"]) if "c" in values else None,
            )
        except (TypeError, OverflowError) as exc:  # e.g. a NaN smuggled into a number
            raise ValueError(f"invalid filter in the link: {exc}") from exc


def _check_codes(what: str, codes, pattern) -> None:
    if not isinstance(codes, tuple) or not all(isinstance(c, str) and pattern.match(c) for c in codes):
        raise ValueError(f"not valid {what} codes: {codes!r}")
    _check_unique(what, codes)


def _check_unique(what: str, values) -> None:
    if len(set(values)) != len(values):
        raise ValueError(f"a {what} is given more than once: {values!r}")


def _check_polygon(polygon) -> None:
    if not isinstance(polygon, tuple) or not 3 <= len(polygon) <= MAX_POLYGON_VERTICES:
        raise ValueError(f"a drawn area needs 3 to {MAX_POLYGON_VERTICES} corners")
    for point in polygon:
        if (not isinstance(point, tuple) or len(point) != 2
                or not all(isinstance(v, (int, float)) and v == v for v in point)):
            raise ValueError(f"not a map point: {point!r}")
        lon, lat = point
        if not (_GB_LON[0] <= lon <= _GB_LON[1] and _GB_LAT[0] <= lat <= _GB_LAT[1]):
            raise ValueError(f"a corner of the drawn area ({lon}, {lat}) is outside Great Britain")


def _check_cell(cell) -> None:
    if (not isinstance(cell, tuple) or len(cell) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in cell)):
        raise ValueError(f"a picked cell must be (size, x, y) whole numbers, not {cell!r}")
    size, ix, iy = cell
    if size not in HOTSPOT_CELL_SIZES:
        raise ValueError(f"a picked cell must be {' or '.join(map(str, HOTSPOT_CELL_SIZES))} m, not {size!r}")
    if not (_BNG_X[0] <= ix * size < _BNG_X[1] and _BNG_Y[0] <= iy * size < _BNG_Y[1]):
        raise ValueError(f"the picked cell {cell!r} is outside Great Britain")


def _parse_cell(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    if not re.fullmatch(r"\d{3}:\d{1,4}:\d{1,4}", text):
        raise ValueError(f"filter 'cell' must look like 500:1059:362, not {text!r}")
    size, ix, iy = (int(v) for v in text.split(":"))
    return size, ix, iy


def _parse_flag(key: str, text: str | None) -> bool:
    if text is None:
        return False
    if text != "1":
        raise ValueError(f"filter {key!r} must be 1 when set, not {text!r}")
    return True


def _parse_list(text: str | None) -> tuple[str, ...]:
    return tuple(text.split(",")) if text else ()


def _parse_int(key: str, text: str, digits: int = 4) -> int:
    if not re.fullmatch(r"\d{1,%d}" % digits, text):
        raise ValueError(f"filter {key!r} must be whole numbers, not {text!r}")
    return int(text)


def _parse_float(key: str, text: str) -> float:
    if not re.fullmatch(r"-?\d{1,3}(\.\d{1,7})?", text):
        raise ValueError(f"filter {key!r} must be a number, not {text!r}")
    return float(text)


def _parse_pair(key: str, text: str) -> tuple[float, float]:
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"filter {key!r} must be two numbers separated by a comma, not {text!r}")
    return _parse_float(key, parts[0]), _parse_float(key, parts[1])


def _parse_polygon(text: str | None):
    if text is None:
        return None
    corners = text.split(";")
    if len(corners) > MAX_POLYGON_VERTICES:
        raise ValueError(f"a drawn area may have at most {MAX_POLYGON_VERTICES} corners")
    return tuple(_parse_pair("poly", corner) for corner in corners)


def _parse_hours(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    match = re.fullmatch(r"(\d{1,2})-(\d{1,2})", text)
    if not match:
        raise ValueError(f"filter 'hours' must look like 18-23, not {text!r}")
    return int(match.group(1)), int(match.group(2))


def _parse_date(key: str, text: str | None) -> date | None:
    if text is None:
        return None
    # date.fromisoformat in 3.11 also accepts 20240101 and week dates; the URL format is YYYY-MM-DD only.
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise ValueError(f"filter {key!r} must be a date as YYYY-MM-DD, not {text!r}")
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"filter {key!r} is not a real date: {text!r}") from exc


# ---- quick picks for the date range ---------------------------------------------------------------------

QUICK_PICKS = {
    "last_28_days": "Last 28 days",
    "last_12_months": "Last 12 months",
    "year_to_date": "Year to date",
    "financial_year": "This financial year",
}


def quick_pick_range(pick: str, today: date) -> tuple[date, date]:
    """The (from, to) dates of a quick pick, ending today (inclusive). UK financial years start in April."""
    if pick == "last_28_days":
        return today - timedelta(days=27), today
    if pick == "last_12_months":
        start = date(today.year - 1, today.month, 1)
        return (start + timedelta(days=32)).replace(day=1), today
    if pick == "year_to_date":
        return date(today.year, 1, 1), today
    if pick == "financial_year":
        start_year = today.year if today.month >= 4 else today.year - 1
        return date(start_year, 4, 1), today
    raise ValueError(f"unknown quick pick {pick!r} (known: {', '.join(QUICK_PICKS)})")
