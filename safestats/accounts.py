"""Organisations and user accounts: the operations the CLI and the admin pages share, with who may do what.

An organisation (``organisations``) has a kind, a highest tier its members may hold (``max_tier``) and an
active flag; disabling it ends its members' sessions and stops them signing in. A user account belongs to
one organisation and has a tier; ``org_admin`` makes it an organisation admin. ``save_account`` and
``save_organisation`` validate everything (known active organisation, tier within the organisation's
ceiling, the password rule of ``safestats.passwords``) and raise ``AccountError`` with a sentence saying
what to change.

Who may manage whom is decided here, from the acting user (``actor``; None = the operator at the CLI, who
already holds the database): portal admins (``policy_for(actor).admin``) manage every account and
organisation; organisation admins manage only accounts of their own organisation, may not move them to
another one, may not grant an admin tier or organisation-admin rights, and may not touch portal admins;
nobody else manages anything. Disabling an account, changing its password or organisation, or disabling its
organisation ends its live sessions (``safestats.login_security``).
"""
from __future__ import annotations

from collections.abc import Iterable

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from safestats.access import TIER_POLICIES, TIERS, policy_for, tier_within
from safestats.login_security import clear_attempts, revoke_user_sessions
from safestats.passwords import password_problem

ORGANISATION_KINDS = ("authority", "borough", "police", "fire", "transport", "ambulance", "nhs_trust", "other")


class AccountError(ValueError):
    """A change that may not be made, with what to do instead."""


class NotPermitted(AccountError):
    """The acting user may not make this change (the admin pages answer 403)."""


@dataclass(frozen=True)
class Organisation:
    id: int
    code: str
    name: str
    kind: str
    max_tier: str
    active: bool
    members: int = 0


@dataclass(frozen=True)
class Account:
    id: int
    email: str
    display_name: str
    organisation_id: int
    organisation: str          # the organisation's code
    organisation_name: str
    tier: str
    org_admin: bool
    active: bool
    second_factor_enrolled: bool
    created_at: datetime
    last_login_at: datetime | None
    boroughs: tuple[str, ...] = ()   # ONS codes a borough analyst sees record by record (user_boroughs)


_ORG_SELECT = """
    SELECT o.id, o.code, o.name, o.kind, o.max_tier, o.active,
           (SELECT count(*) FROM users u WHERE u.organisation_id = o.id) AS members
    FROM organisations o
"""
_ACCOUNT_SELECT = """
    SELECT u.id, u.email, u.display_name, u.organisation_id, o.code AS organisation, o.name AS organisation_name,
           u.tier, u.org_admin, u.active, u.totp_confirmed_at IS NOT NULL AS second_factor_enrolled,
           u.created_at, u.last_login_at,
           ARRAY(SELECT b.borough_code FROM user_boroughs b WHERE b.user_id = u.id ORDER BY 1) AS boroughs
    FROM users u JOIN organisations o ON o.id = u.organisation_id
"""


def _organisation(row) -> Organisation:
    return Organisation(**row._mapping)


def _account(row) -> Account:
    return Account(**dict(row._mapping, boroughs=tuple(row.boroughs or ())))


# --- who may do what --------------------------------------------------------------------------------------

def is_portal_admin(actor) -> bool:
    return actor is None or policy_for(actor).admin


def may_administer_users(actor) -> bool:
    """Whether the admin user pages are open to ``actor`` at all (portal or organisation admin)."""
    return is_portal_admin(actor) or (policy_for(actor).tier != "none" and bool(getattr(actor, "org_admin", False)))


def may_manage_account(actor, account: Account) -> bool:
    if is_portal_admin(actor):
        return True
    return (may_administer_users(actor) and account.organisation_id == getattr(actor, "organisation_id", None)
            and not TIER_POLICIES[account.tier].admin)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise NotPermitted(message)


# --- organisations ----------------------------------------------------------------------------------------

def find_organisation(conn: Connection, code_or_name: str) -> Organisation | None:
    """The organisation with this code or name (case-insensitive), or None."""
    row = conn.execute(text(_ORG_SELECT + " WHERE upper(o.code) = upper(:v) OR lower(o.name) = lower(:v)"),
                       {"v": (code_or_name or "").strip()}).first()
    return _organisation(row) if row else None


def list_organisations(engine: Engine) -> list[Organisation]:
    with engine.connect() as conn:
        return [_organisation(r) for r in conn.execute(text(_ORG_SELECT + " ORDER BY o.kind, o.name"))]


def get_organisation(engine: Engine, org_id: int) -> Organisation | None:
    with engine.connect() as conn:
        row = conn.execute(text(_ORG_SELECT + " WHERE o.id = :id"), {"id": org_id}).one_or_none()
    return _organisation(row) if row else None


def save_organisation(engine: Engine, *, code: str, name: str, kind: str = "other", max_tier: str = "partner_analyst",
                      active: bool = True, org_id: int | None = None, actor=None) -> Organisation:
    """Add an organisation (``org_id`` None) or change one; disabling it ends its members' sessions."""
    _require(is_portal_admin(actor), "Only portal admins add or change organisations.")
    code, name = (code or "").strip(), (name or "").strip()
    if not code or len(code) > 40 or not all(c.isalnum() or c in "_.-" for c in code):
        raise AccountError("An organisation code is 1-40 letters, digits, '_', '.' or '-' (e.g. NHS ODS code RJ1).")
    if not name:
        raise AccountError("An organisation needs a name.")
    if kind not in ORGANISATION_KINDS:
        raise AccountError(f"Unknown organisation kind {kind!r}: one of {', '.join(ORGANISATION_KINDS)}.")
    if max_tier not in TIERS:
        raise AccountError(f"Unknown tier {max_tier!r}: one of {', '.join(TIERS)}.")
    with engine.begin() as conn:
        clash = conn.execute(text("SELECT id FROM organisations WHERE upper(code) = upper(:c) AND id IS DISTINCT FROM :id"),
                             {"c": code, "id": org_id}).first()
        if clash:
            raise AccountError(f"Another organisation already has the code {code!r}.")
        params = {"code": code, "name": name, "kind": kind, "max_tier": max_tier, "active": active, "id": org_id}
        if org_id is None:
            org_id = conn.execute(text("INSERT INTO organisations (code, name, kind, max_tier, active) "
                                       "VALUES (:code, :name, :kind, :max_tier, :active) RETURNING id"), params).scalar_one()
        else:
            above = conn.execute(text("SELECT count(*) FROM users WHERE organisation_id = :id AND active "
                                      "AND array_position(CAST(:tiers AS text[]), tier) > array_position(CAST(:tiers AS text[]), :max_tier)"),
                                 {"id": org_id, "tiers": list(TIERS), "max_tier": max_tier}).scalar_one()
            if above:
                raise AccountError(f"{above} active member(s) hold a tier above {max_tier}; lower their tiers first.")
            if conn.execute(text("UPDATE organisations SET code = :code, name = :name, kind = :kind, "
                                 "max_tier = :max_tier, active = :active WHERE id = :id"), params).rowcount != 1:
                raise AccountError(f"No organisation with id {org_id}.")
        if not active:
            members = [r.id for r in conn.execute(text("SELECT id FROM users WHERE organisation_id = :id"), {"id": org_id})]
            revoke_user_sessions(conn, members, "organisation disabled")
    return get_organisation(engine, org_id)


# --- accounts ---------------------------------------------------------------------------------------------

def list_accounts(engine: Engine, actor=None) -> list[Account]:
    """The accounts ``actor`` may manage: all for portal admins, their organisation's for organisation admins."""
    if not may_administer_users(actor):
        return []
    with engine.connect() as conn:
        rows = conn.execute(text(_ACCOUNT_SELECT + " ORDER BY o.name, lower(u.email)"))
        return [a for a in map(_account, rows) if may_manage_account(actor, a)]


def get_account(engine: Engine, user_id: int | None = None, email: str | None = None) -> Account | None:
    where, value = ("u.id = :v", user_id) if user_id is not None else ("lower(u.email) = lower(:v)", (email or "").strip())
    with engine.connect() as conn:
        row = conn.execute(text(_ACCOUNT_SELECT + f" WHERE {where}"), {"v": value}).one_or_none()
    return _account(row) if row else None


def save_account(engine: Engine, *, email: str, display_name: str | None = None, organisation: str | None = None,
                 tier: str | None = None, org_admin: bool | None = None, active: bool | None = None,
                 password: str | None = None, user_id: int | None = None, actor=None,
                 boroughs: Iterable[str] | None = None) -> Account:
    """Create the account (no ``user_id`` and no account with this email) or change it; None keeps a field.
    ``boroughs`` (ONS codes) replaces the boroughs a borough analyst sees record by record; they take effect
    at the user's next request (the user loader reads them every time).

    A new account needs a password, an organisation and a tier; changing the password, the organisation or
    disabling the account ends its live sessions."""
    from dashapp.auth import hash_password   # the one argon2 hasher (OWASP parameters)

    email = (email or "").strip()
    existing = get_account(engine, user_id=user_id) if user_id is not None else get_account(engine, email=email)
    if user_id is not None and existing is None:
        raise AccountError(f"No user with id {user_id}.")
    if existing is None:
        _require(may_administer_users(actor), "Only portal and organisation admins add users.")
        if "@" not in email or len(email) > 320:
            raise AccountError(f"Not an email address: {email!r}.")
        if password is None:
            raise AccountError("A new user needs a password.")
        organisation = organisation or getattr(actor, "organisation", None)
        tier = tier or "viewer"
    else:
        _require(may_manage_account(actor, existing), "You may only manage users of your own organisation "
                 "(and only portal admins manage admins).")
        email = existing.email   # an account's email never changes (it is the login and the throttle key)
    with engine.begin() as conn:
        org = find_organisation(conn, organisation) if organisation else None
        if organisation and org is None:
            raise AccountError(f"Unknown organisation {organisation!r}: give its code or name "
                               "(`safestats orgs list` lists them; `safestats orgs add` adds one).")
        org_id = org.id if org else existing.organisation_id
        org = org or find_organisation(conn, existing.organisation)
        tier = tier or existing.tier
        org_admin = (existing.org_admin if existing else False) if org_admin is None else org_admin
        active = (existing.active if existing else True) if active is None else active
        if tier not in TIERS:
            raise AccountError(f"Unknown tier {tier!r}: one of {', '.join(TIERS)}.")
        if not org.active and active:
            raise AccountError(f"{org.name} is disabled; enable the organisation first.")
        if not tier_within(tier, org.max_tier):
            raise AccountError(f"{org.name} members may hold at most the {org.max_tier} tier; choose a lower tier "
                               "or raise the organisation's highest tier.")
        if not is_portal_admin(actor):
            _require(existing is None or org_id == existing.organisation_id, "Organisation admins cannot move users "
                     "to another organisation.")
            _require(org_id == getattr(actor, "organisation_id", None), "Organisation admins add users to their own "
                     "organisation only.")
            _require(not TIER_POLICIES[tier].admin, "Only portal admins grant an admin tier.")
            _require(org_admin == (existing.org_admin if existing else False),
                     "Only portal admins grant or remove organisation-admin rights.")
        if boroughs is not None:
            boroughs = sorted({b.strip().upper() for b in boroughs if b and b.strip()})
            known = set(conn.execute(text("SELECT code FROM areas WHERE level = 'borough'")).scalars())
            unknown = [b for b in boroughs if b not in known]
            if unknown:
                raise AccountError(f"Unknown borough code(s) {', '.join(unknown)}: give ONS codes such as E09000007.")
        if existing and actor is not None and existing.id == getattr(actor, "id", None) and not active:
            raise AccountError("You cannot disable your own account; ask another admin.")
        password_hash = None
        if password is not None:
            problem = password_problem(password, email)
            if problem:
                raise AccountError(problem)
            password_hash = hash_password(password)
        params = {"email": email, "name": (display_name or "").strip() or (existing.display_name if existing else email),
                  "org": org_id, "tier": tier, "org_admin": org_admin, "active": active, "hash": password_hash}
        if existing is None:
            new_id = conn.execute(text("""
                INSERT INTO users (email, display_name, organisation_id, tier, org_admin, active, password_hash)
                VALUES (:email, :name, :org, :tier, :org_admin, :active, :hash) RETURNING id"""), params).scalar_one()
        else:
            new_id = params["id"] = existing.id
            conn.execute(text("""
                UPDATE users SET display_name = :name, organisation_id = :org, tier = :tier, org_admin = :org_admin,
                       active = :active, password_hash = coalesce(:hash, password_hash),
                       disabled_at = CASE WHEN :active THEN NULL ELSE coalesce(disabled_at, now()) END
                WHERE id = :id"""), params)
            reasons = [why for why, happened in (("user disabled", not active),
                                                 ("password changed", password_hash is not None),
                                                 ("organisation changed", org_id != existing.organisation_id))
                       if happened]
            if reasons:
                revoke_user_sessions(conn, [existing.id], ", ".join(reasons))
            if active and (not existing.active or password_hash is not None):
                clear_attempts(conn, email)   # re-enabled or given a new password: the lock-out is over
        if boroughs is not None:
            conn.execute(text("DELETE FROM user_boroughs WHERE user_id = :id"), {"id": new_id})
            for code in boroughs:
                conn.execute(text("INSERT INTO user_boroughs (user_id, borough_code) VALUES (:id, :code)"),
                             {"id": new_id, "code": code})
    return get_account(engine, user_id=new_id)


def reset_second_factor(engine: Engine, user_id: int, actor=None) -> Account:
    """Forget the account's TOTP (a lost phone); it enrols again at the next sign-in. Ends its sessions."""
    from safestats.login_security import reset_totp

    account = get_account(engine, user_id=user_id)
    if account is None:
        raise AccountError(f"No user with id {user_id}.")
    _require(may_manage_account(actor, account), "You may only manage users of your own organisation.")
    with engine.begin() as conn:
        reset_totp(conn, user_id)
        revoke_user_sessions(conn, [user_id], "second factor reset")
    return get_account(engine, user_id=user_id)


def unlock_account(engine: Engine, email: str) -> None:
    """Clear the failed sign-in count of an account (the operator, after checking who is asking)."""
    clear_attempts(engine, email)
