"""Disclosure control for health-derived aggregates shown to tiers whose policy says ``health == "suppressed"``.

The NHS HES/ECDS rule: a count of 1-7 is shown as "*" (``None`` here), any other count is rounded to the
nearest 5 (0 stays 0), totals are rounded after summing (never summed from rounded parts), and a rate or
mean made from 1-7 records is suppressed; rates here are made from the rounded count, so no rate gives the
exact count back through a known population or area.

Differencing (two filter states that differ by one area, one day or one category revealing a suppressed
count by subtraction) is prevented by three rules the query layer applies with ``check_minimums`` and
``SCOPE`` below:

* health data never mixes with other suppliers' counts for these tiers: a panel shows health on its own (the
  state selects only health suppliers, or the health domain) or not at all, so an exact police count can
  never be subtracted from a police + health total;
* the finest health cell is a borough x calendar month (no MSOA, LSOA, drawn polygon, day-level dates, hours
  or days of the week), so the sliding windows that defeat rounding are not available;
* the rule applies to every health number these tiers get, London totals included, so no exact health number
  exists to subtract from (stricter than the rule's "below London level": one borough with data would
  otherwise equal the London total).

Every pair of states then leaves at least two values of 1-7 possible for the difference
(``tests/test_disclosure.py``). Tiers with ``health == "full"`` see exact numbers; ``"none"`` sees no health.
"""
from __future__ import annotations

from safestats.access import AccessRefused
from safestats.filters import FilterState

SUPPRESSED_MAX = 7     # counts 1..7 are shown as "*"
ROUND_TO = 5
SUPPRESSED_LABEL = "*"


class DisclosureRefused(AccessRefused):
    """A health view finer than the minimum area or period for this tier (shown to the user as a message)."""


def count(n: int | None) -> int | None:
    """One health-derived count as shown: 0, None ("*", 1-7), or rounded to the nearest 5 (halves up)."""
    if n is None:
        return None
    n = int(n)
    if n == 0:
        return 0
    if 0 < n <= SUPPRESSED_MAX:
        return None
    return int((n + ROUND_TO // 2) // ROUND_TO * ROUND_TO)


def counts(values: dict) -> dict:
    """``count`` over a dict's values."""
    return {key: count(n) for key, n in values.items()}


def label(n: int | None) -> str:
    """What a table, tooltip or export shows for a controlled count."""
    return SUPPRESSED_LABEL if n is None else f"{n:,}"


def check_minimums(state: FilterState, period_whole_months: bool) -> None:
    """Refuse a health view below a borough x calendar month for a tier under disclosure control."""
    if state.msoa_code or state.lsoa_code:
        raise DisclosureRefused("health data at your access level is shown for boroughs and above only: "
                                "choose a borough, not an MSOA or LSOA")
    if state.polygon is not None:
        raise DisclosureRefused("health data at your access level cannot be counted in a drawn area: "
                                "clear the drawing and choose a borough")
    if state.hours is not None or state.days:
        raise DisclosureRefused("health data at your access level is not broken down by time of day or day of "
                                "the week: remove those filters")
    if not period_whole_months:
        raise DisclosureRefused("health data at your access level is counted in whole calendar months: choose "
                                "dates from the 1st of a month to the end of a month")
