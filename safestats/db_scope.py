"""The user's access scope as PostgreSQL settings, applied to every transaction (the database half of access.py).

``scope_for(user)`` turns a user's ``TierPolicy`` into the settings the row-level security policies read
(``safestats.user_id``, ``safestats.tier``, ``safestats.aggregate_level``, ``safestats.record_level``,
``safestats.record_boroughs`` = ``*`` or comma-separated codes; ``db/sql/access_control_v1.sql``). Code runs
``with acting_as(user):`` and every transaction it starts on an engine from ``db.get_engine`` begins with one
``SELECT safestats_set_scope(...)``: SET LOCAL, so the settings end with the transaction and never reach the
next request on a pooled connection. Outside ``acting_as``, or for anyone ``policy_for`` does not know, no
settings are made, and the database answers with no incident rows at all. The query layer enters
``acting_as`` with the user every panel function is given; the web app enters it for the logged-in user
around each request (``dashapp.create_app``).
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar

from sqlalchemy import event
from sqlalchemy.engine import Engine

from safestats.access import TIER_POLICIES, TierPolicy, policy_for

SETTING_NAMES = ("user_id", "tier", "aggregate_level", "record_level", "record_boroughs")


class Scope(tuple):
    """The five settings, in ``SETTING_NAMES`` order (a tuple, so it can be part of a cache key)."""

    def as_params(self) -> dict[str, str]:
        return dict(zip(SETTING_NAMES, self))


_current_scope: ContextVar[Scope | None] = ContextVar("safestats_db_scope", default=None)
_current_policy: ContextVar[TierPolicy | None] = ContextVar("safestats_db_policy", default=None)


def scope_for(user) -> Scope | None:
    """The settings for ``user``, or None (no settings: no rows) for anyone without a known tier."""
    policy = policy_for(user)
    if policy.tier not in TIER_POLICIES:
        return None
    boroughs = "*" if policy.record_boroughs is None else ",".join(sorted(policy.record_boroughs))
    user_id = getattr(user, "id", None)
    return Scope((str(user_id) if user_id is not None else "", policy.tier, str(policy.aggregate_level),
                  str(policy.record_level), boroughs))


@contextlib.contextmanager
def acting_as(user):
    """Run the block's transactions in ``user``'s scope (and the block's policy checks with their policy)."""
    scope_token = _current_scope.set(scope_for(user))
    policy_token = _current_policy.set(policy_for(user))
    try:
        yield
    finally:
        _current_scope.reset(scope_token)
        _current_policy.reset(policy_token)


@contextlib.contextmanager
def outside_scope():
    """Run the block's transactions without a scope: for writes to tables no row-level security guards (the
    audit log), which would otherwise pay a round trip for settings nothing reads."""
    scope_token = _current_scope.set(None)
    try:
        yield
    finally:
        _current_scope.reset(scope_token)


def current_scope() -> Scope | None:
    return _current_scope.get()


def current_policy() -> TierPolicy | None:
    """The policy of the user the current block acts as (None outside ``acting_as``)."""
    return _current_policy.get()


APPLY_SQL = ("SELECT safestats_set_scope(%(user_id)s, %(tier)s, %(aggregate_level)s, %(record_level)s, "
             "%(record_boroughs)s)")


def _apply_current_scope(conn) -> None:
    scope = _current_scope.get()
    if scope is not None:
        conn.exec_driver_sql(APPLY_SQL, scope.as_params())


def install(engine: Engine) -> Engine:
    """Make every transaction on ``engine`` start in the current scope (idempotent)."""
    if not event.contains(engine, "begin", _apply_current_scope):
        event.listen(engine, "begin", _apply_current_scope)
    return engine
