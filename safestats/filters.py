"""The dashboard's filter state: one frozen dataclass, and its strict round trip through a URL query string.

Every page and every query function takes a ``FilterState`` instead of loose arguments, so "what is the user
looking at?" has one answer that can be logged, cached on and (a later issue) kept in the URL. Values
arriving from the browser are untrusted: ``from_query_string`` accepts only the keys and formats it knows and
raises ``ValueError`` on anything else — a mistyped or tampered filter must never silently become an
unfiltered (all-London) query. It checks format only; whether a well-formed borough code actually exists is
checked against the database's boroughs by the caller (see ``safestats.queries.known_borough_codes``).
To grow the state, add a field with a default, its key in ``_KEYS``, and a parse and a format step.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date, datetime
from urllib.parse import parse_qsl, urlencode

# ONS codes (E09000007) and the name-derived keys the boundary loader makes when a source has no code.
_AREA_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,39}$")
_KEYS = ("borough", "from", "to")
MAX_QUERY_STRING_LENGTH = 2000


@dataclass(frozen=True)
class FilterState:
    """What the user has chosen to look at; ``None`` in a field means "not filtered on this"."""

    borough_code: str | None = None
    date_from: date | None = None  # inclusive, a calendar date in Europe/London
    date_to: date | None = None  # inclusive

    def __post_init__(self) -> None:
        if self.borough_code is not None:
            if not isinstance(self.borough_code, str) or not _AREA_CODE.match(self.borough_code):
                raise ValueError(f"not a valid borough code: {self.borough_code!r}")
        for name in ("date_from", "date_to"):
            value = getattr(self, name)
            # datetime is a subclass of date, but a time of day here would be silently ignored by the SQL.
            if value is not None and (not isinstance(value, date) or isinstance(value, datetime)):
                raise ValueError(f"{name} must be a date, not {value!r}")
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError(f"date_from {self.date_from} is after date_to {self.date_to}")

    def with_borough(self, borough_code: str | None) -> "FilterState":
        return replace(self, borough_code=borough_code)

    def to_query_string(self) -> str:
        """``borough=E09000007&from=2024-01-01&to=2024-12-31``, keys in a fixed order, unset fields left out."""
        pairs = []
        if self.borough_code is not None:
            pairs.append(("borough", self.borough_code))
        if self.date_from is not None:
            pairs.append(("from", self.date_from.isoformat()))
        if self.date_to is not None:
            pairs.append(("to", self.date_to.isoformat()))
        return urlencode(pairs)

    @classmethod
    def from_query_string(cls, query: str | None) -> "FilterState":
        """Parse what ``to_query_string`` writes (a leading ``?`` is allowed); raise ``ValueError`` otherwise."""
        if query is None:
            return cls()
        if not isinstance(query, str):
            raise ValueError(f"filter state must be a query string, not {type(query).__name__}")
        if len(query) > MAX_QUERY_STRING_LENGTH:
            raise ValueError("filter query string is too long")
        query = query[1:] if query.startswith("?") else query
        if not query:
            return cls()
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError as exc:
            raise ValueError(f"malformed filter query string: {query!r}") from exc
        values: dict[str, str] = {}
        for key, value in pairs:
            if key not in _KEYS:
                raise ValueError(f"unknown filter {key!r} (known: {', '.join(_KEYS)})")
            if key in values:
                raise ValueError(f"filter {key!r} given more than once")
            if value == "":
                raise ValueError(f"filter {key!r} has an empty value")
            values[key] = value
        return cls(
            borough_code=values.get("borough"),
            date_from=_parse_date("from", values.get("from")),
            date_to=_parse_date("to", values.get("to")),
        )


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
