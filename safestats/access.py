"""What each access tier may see: the one policy module the query layer and callbacks consult.

Two rules, both applied on the server by ``safestats.queries`` (never trusted from the browser):
which suppliers' data a tier may see at all — health data (ambulance and A&E, suppliers at access level
``health_record`` = 20) only for violence-data (ISTV) analysts and admins; every other tier sees police,
fire and transport data (level 10) — and who may receive record-level points (not viewers). A user we
cannot identify gets the most restrictive answer. The access-tier issue turns this into a policy table,
row-level security in PostgreSQL, per-borough grants and suppressed health aggregates for lower tiers.
"""
from __future__ import annotations

RECORD_LEVEL_TIERS = frozenset({"borough_analyst", "partner_analyst", "istv_analyst", "admin"})
# The highest suppliers.access_level whose data (aggregated or not) each tier may see.
TIER_DATA_LEVEL = {"viewer": 10, "borough_analyst": 10, "partner_analyst": 10, "istv_analyst": 20, "admin": 20}
LOWEST_DATA_LEVEL = 10


def data_level(user) -> int:
    """The highest supplier access level ``user`` may see; the lowest level for anyone unidentified."""
    if user is None or not getattr(user, "is_authenticated", False):
        return LOWEST_DATA_LEVEL
    return TIER_DATA_LEVEL.get(getattr(user, "tier", None), LOWEST_DATA_LEVEL)


def may_see_points(user) -> bool:
    return bool(getattr(user, "is_authenticated", False)) and getattr(user, "tier", None) in RECORD_LEVEL_TIERS
