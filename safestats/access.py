"""What each access tier may see: the one policy module the query layer, callbacks and endpoints consult.

A user's tier maps to one ``TierPolicy`` (``policy_for(user)``): which suppliers' data they may see in
aggregates and whether health aggregates reach them only under disclosure control; up to which access level
they may see records (points, record lists, record exports) and in which boroughs; the finest area level
they may break data down to; whether they administer the portal; and whether signing in needs a second
factor (TOTP). Every decision about "may this user
see that" is read from the policy, never from an ``if tier == ...`` in a callback. A user we cannot
identify (anonymous, unknown tier) gets ``NO_ACCESS``: nothing at all, never "everything".

Access levels are ``access_levels.level`` (and ``incidents.access_level`` / ``suppliers.access_level``):
10 = record (police, fire, transport), 20 = health_record (ambulance and A&E).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

RECORD_LEVEL = 10          # police, fire and transport records
HEALTH_RECORD_LEVEL = 20   # ambulance and A&E records
AREA_LEVELS = ("borough", "msoa", "lsoa")   # coarsest first

HealthAccess = Literal["none", "suppressed", "full"]


class AccessRefused(ValueError):
    """The user's tier does not allow this view; the message says why and what they can do instead."""


@dataclass(frozen=True)
class TierPolicy:
    """What one tier may see. ``record_boroughs`` None means every borough; otherwise only those."""

    tier: str
    health: HealthAccess                 # health aggregates: not at all, under disclosure control, or in full
    record_level: int                    # highest incidents.access_level seen record by record (0: none)
    record_boroughs: frozenset[str] | None
    min_area_level: str                  # the finest area level this tier may break data down to
    admin: bool = False
    second_factor: bool = False          # signing in needs a TOTP code as well as the password
    # An organisation admin manages their own organisation's accounts (users.org_admin, set by policy_for).
    org_admin: bool = False

    @property
    def aggregate_level(self) -> int:
        """The highest supplier access level whose data reaches this tier in aggregates (in any form)."""
        return HEALTH_RECORD_LEVEL if self.health != "none" else RECORD_LEVEL

    @property
    def sees_records(self) -> bool:
        return self.record_level > 0

    def may_see_record(self, access_level: int, borough_code: str | None) -> bool:
        if access_level > self.record_level:
            return False
        return self.record_boroughs is None or borough_code in self.record_boroughs

    def may_break_down_to(self, level: str) -> bool:
        return AREA_LEVELS.index(level) <= AREA_LEVELS.index(self.min_area_level)


# The tier set (mirrored into the database by the access-tier migration, which the RLS policies read).
TIER_POLICIES: dict[str, TierPolicy] = {
    "viewer": TierPolicy("viewer", health="none", record_level=0, record_boroughs=frozenset(),
                         min_area_level="borough"),
    # record_boroughs is filled from the user's assigned boroughs by policy_for.
    "borough_analyst": TierPolicy("borough_analyst", health="suppressed", record_level=RECORD_LEVEL,
                                  record_boroughs=frozenset(), min_area_level="lsoa"),
    "partner_analyst": TierPolicy("partner_analyst", health="suppressed", record_level=RECORD_LEVEL,
                                  record_boroughs=None, min_area_level="lsoa"),
    "istv_analyst": TierPolicy("istv_analyst", health="full", record_level=HEALTH_RECORD_LEVEL,
                               record_boroughs=None, min_area_level="lsoa", second_factor=True),
    "admin": TierPolicy("admin", health="full", record_level=HEALTH_RECORD_LEVEL, record_boroughs=None,
                        min_area_level="lsoa", admin=True, second_factor=True),
}
TIERS = tuple(TIER_POLICIES)   # lowest first: an organisation's max_tier caps its members by this order
NO_ACCESS = TierPolicy("none", health="none", record_level=0, record_boroughs=frozenset(),
                       min_area_level="borough")


def policy_for(user) -> TierPolicy:
    """The policy of ``user`` (a logged-in ``dashapp.auth.User``); ``NO_ACCESS`` for anyone unidentified."""
    if user is None or not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", True):
        return NO_ACCESS
    policy = TIER_POLICIES.get(getattr(user, "tier", None))
    if policy is None:
        return NO_ACCESS
    if policy.tier == "borough_analyst":
        policy = replace(policy, record_boroughs=frozenset(getattr(user, "boroughs", ()) or ()))
    if getattr(user, "org_admin", False):
        policy = replace(policy, org_admin=True)
    return policy


def tier_within(tier: str, ceiling: str) -> bool:
    """Whether ``tier`` is at most ``ceiling`` in the order of ``TIERS`` (unknown tiers never are)."""
    return tier in TIERS and ceiling in TIERS and TIERS.index(tier) <= TIERS.index(ceiling)


def needs_second_factor(tier: str, org_admin: bool = False) -> bool:
    """Whether signing in as this tier (or as an organisation admin, who manages accounts) needs TOTP.

    Unknown tiers do: when in doubt, ask for more, never less."""
    policy = TIER_POLICIES.get(tier)
    return org_admin or policy is None or policy.second_factor


# The callbacks' question "may this user get incident points at all?" (the query layer narrows them further).
def may_see_points(user) -> bool:
    return policy_for(user).sees_records
