"""How well a record is located: the five methods, best first, and what each stored precision means.

Every incident row stores ``location_precision`` (migration 0001) and ``location_confidence`` (0-100,
migration 0012). The precision already names the method, at a finer grain, so the method is not stored a
second time: a supplier's own point (``exact``, police.uk's anonymised ``snap_point``, LFB's
``rounded_50m``) is the method *exact*; ``postcode`` a postcode centroid from the ONS Postcode Directory;
``street`` a match of a free-text location against the gazetteer (*gazetteer*); ``borough`` the borough
only; ``none`` *unlocated*. Confidence says how sure SafeStats is that the stored location is right at that
precision: 100 for what the supplier states, less for what SafeStats inferred (loaders/locating.py sets it
and documents the scores). This module is the one place the mapping lives: the loader's per-drop report,
the admin data-status page, the CLI and the query layer's "located at least as well as" filter read it.
"""
from __future__ import annotations

# Best first: "at least as well as X" means X or any method before it.
LOCATION_METHODS = ("exact", "postcode", "gazetteer", "borough", "unlocated")
METHOD_LABELS = {"exact": "exact point", "postcode": "postcode centroid", "gazetteer": "street (gazetteer)",
                 "borough": "borough only", "unlocated": "unlocated"}
METHOD_OF_PRECISION = {"exact": "exact", "snap_point": "exact", "rounded_50m": "exact", "postcode": "postcode",
                       "street": "gazetteer", "borough": "borough", "none": "unlocated"}
# The confidence a row gets when nothing more specific is known: the supplier's own statement is taken as
# certain at its precision; a row located to nothing has none.
DEFAULT_CONFIDENCE = {"exact": 100, "snap_point": 100, "rounded_50m": 100, "postcode": 90, "street": 70,
                      "borough": 100, "none": 0}
# Confidence bands for display (the number is stored; the band is how pages word it).
CONFIDENCE_BANDS = ((80, "high"), (50, "medium"), (1, "low"), (0, "none"))


def precisions_at_least(method: str) -> tuple[str, ...]:
    """The stored precisions of ``method`` and of every better method (for the query layer's filter)."""
    if method not in LOCATION_METHODS:
        raise ValueError(f"unknown location method {method!r} (known: {', '.join(LOCATION_METHODS)})")
    allowed = set(LOCATION_METHODS[:LOCATION_METHODS.index(method) + 1])
    return tuple(p for p, m in METHOD_OF_PRECISION.items() if m in allowed)


def confidence_band(confidence: float | None) -> str:
    if confidence is None:
        return "not assessed"
    for floor, band in CONFIDENCE_BANDS:
        if confidence >= floor:
            return band
    return "none"

