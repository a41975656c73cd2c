"""What each access tier may see: the one policy module the query layer and callbacks consult.

The access-tier issue turns this into data (a policy table, row-level security in PostgreSQL, per-borough
grants); until then it holds the one rule the dashboard needs: who may receive record-level points.
Viewers see aggregates only; every analyst tier sees police.uk points, which the supplier has already
anonymised to snap points.
"""
from __future__ import annotations

RECORD_LEVEL_TIERS = frozenset({"borough_analyst", "partner_analyst", "istv_analyst", "admin"})


def may_see_points(user) -> bool:
    return bool(getattr(user, "is_authenticated", False)) and getattr(user, "tier", None) in RECORD_LEVEL_TIERS
