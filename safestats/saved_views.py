"""Saved and shared dashboard views: save, list, share, change and open them, each checked for the acting user.

A saved view is a name, a description, its owner and a ``FilterState`` query string (filters, map layers,
zoom and centre), either following the latest data or pinned "as at" the newest drop when it was saved
(``FilterState.as_at``; the query layer restricts every panel to the months each supplier's drops covered
by then). Views are shared with named colleagues of the owner's organisation, with whole organisations or
with everyone of a tier. Everyone lists "my views" and "shared with me"; only the owner renames, updates
(replaces the state with the current one), deletes or shares a view; anyone who can see a view may
duplicate it into their own.

Every function takes the acting user and runs ``acting_as`` them, so two locks apply: the checks here
(``ViewNotFound`` for a view the user may not see, exactly as for one that does not exist; ``NotOwner``
for a change to someone else's view) and PostgreSQL's row-level security on ``saved_views`` and
``saved_view_shares`` for the web role (``db/sql/saved_views_v1.sql``). Opening a view goes through
``reduce_state``: whatever the view shows beyond the opener's tier (a health supplier for a viewer, a level
finer than their tier, incident points without record access, record-level filters outside their
boroughs) is taken out, and each removal is reported in a sentence for the page's note: never an error,
never a leak.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.engine import Engine

from safestats import access, db_scope, queries
from safestats.filters import FilterState

LONDON = ZoneInfo("Europe/London")
MAX_NAME_LENGTH = 120
MAX_DESCRIPTION_LENGTH = 2000
HEALTH_DOMAIN = "health"


class ViewError(ValueError):
    """A saved-view request that cannot be done, with a sentence saying why (shown to the user)."""


class ViewNotFound(ViewError):
    """No such view for this user: it does not exist, or it is neither theirs nor shared with them."""


class NotOwner(ViewError):
    """Only the owner may rename, update, delete or share a view."""


@dataclass(frozen=True)
class Share:
    kind: str     # "user", "organisation" or "tier"
    key: str      # the user's or organisation's id, or the tier (as text: one type for the pickers)
    label: str


@dataclass(frozen=True)
class SavedView:
    id: int
    owner_id: int
    owner_name: str
    name: str
    description: str
    query: str                 # FilterState.to_query_string()
    created_at: datetime
    updated_at: datetime
    shares: tuple[Share, ...] = ()   # all of them for the owner; for a recipient, those naming them

    @property
    def state(self) -> FilterState:
        return FilterState.from_query_string(self.query)

    @property
    def as_at(self) -> int | None:
        try:
            return self.state.as_at
        except ValueError:
            return None

    def owned_by(self, user) -> bool:
        return getattr(user, "id", None) == self.owner_id


@dataclass(frozen=True)
class ShareChoices:
    users: list[tuple[int, str]]           # colleagues of the acting user's organisation
    organisations: list[tuple[int, str]]
    tiers: list[str]


@dataclass(frozen=True)
class Reduction:
    state: FilterState
    removed: tuple[str, ...]   # one sentence per thing taken out; empty when the view is shown whole

    @property
    def note(self) -> str | None:
        if not self.removed:
            return None
        return "Parts of this view are beyond your access level and were left out: " + " ".join(self.removed)


# ---- reading ----------------------------------------------------------------------------------------------

_VIEW_SELECT = """
    SELECT v.id, v.owner_id, coalesce(u.display_name, u.email) AS owner_name, v.name, v.description, v.state,
           v.created_at, v.updated_at
    FROM saved_views v JOIN users u ON u.id = v.owner_id
"""
_SHARES_SELECT = """
    SELECT s.view_id,
           CASE WHEN s.user_id IS NOT NULL THEN 'user' WHEN s.organisation_id IS NOT NULL THEN 'organisation'
                ELSE 'tier' END AS kind,
           coalesce(s.user_id::text, s.organisation_id::text, s.tier) AS key,
           coalesce(coalesce(u.display_name, u.email), o.name, s.tier) AS label
    FROM saved_view_shares s
    LEFT JOIN users u ON u.id = s.user_id
    LEFT JOIN organisations o ON o.id = s.organisation_id
    WHERE s.view_id = ANY(:ids)
    ORDER BY 2, 4
"""


def _user_id(user) -> int:
    if access.policy_for(user) is access.NO_ACCESS or getattr(user, "id", None) is None:
        raise ViewNotFound("Sign in to use saved views.")
    return int(user.id)


def _fetch(engine: Engine, user, where: str, params: dict) -> list[SavedView]:
    with db_scope.acting_as(user), engine.connect() as conn:
        rows = conn.execute(text(f"{_VIEW_SELECT} WHERE {where} ORDER BY lower(v.name), v.id"), params).all()
        shares: dict[int, list[Share]] = {}
        if rows:
            for view_id, kind, key, label in conn.execute(text(_SHARES_SELECT), {"ids": [r.id for r in rows]}):
                shares.setdefault(view_id, []).append(Share(kind, key, label))
    return [SavedView(r.id, r.owner_id, r.owner_name, r.name, r.description, r.state, r.created_at,
                      r.updated_at, tuple(shares.get(r.id, ()))) for r in rows]


def list_views(engine: Engine, user) -> tuple[list[SavedView], list[SavedView]]:
    """("my views", "shared with me"): every view the user owns, and every other one they may see."""
    me = _user_id(user)
    visible = _fetch(engine, user, "TRUE", {})   # row-level security leaves only what this user may see
    return [v for v in visible if v.owner_id == me], [v for v in visible if v.owner_id != me]


def get_view(engine: Engine, user, view_id) -> SavedView:
    """The view, if the user owns it or it is shared with them; ``ViewNotFound`` otherwise (either way)."""
    _user_id(user)
    try:
        view_id = int(view_id)
    except (TypeError, ValueError):
        raise ViewNotFound("No such view.") from None
    found = _fetch(engine, user, "v.id = :id", {"id": view_id})
    if not found:
        raise ViewNotFound("That view does not exist or has not been shared with you.")
    return found[0]


def _own(engine: Engine, user, view_id) -> SavedView:
    view = get_view(engine, user, view_id)
    if not view.owned_by(user):
        raise NotOwner(f"Only {view.owner_name} (its owner) may change “{view.name}”: duplicate it to make your own.")
    return view


# ---- writing ----------------------------------------------------------------------------------------------

def _clean_name(name) -> str:
    name = " ".join(str(name or "").split())
    if not name:
        raise ViewError("Give the view a name.")
    if len(name) > MAX_NAME_LENGTH:
        raise ViewError(f"A view's name may be at most {MAX_NAME_LENGTH} characters.")
    return name


def _clean_description(description) -> str:
    description = str(description or "").strip()
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise ViewError(f"A description may be at most {MAX_DESCRIPTION_LENGTH} characters.")
    return description


def pinned_state(engine: Engine, state: FilterState, pin: bool) -> FilterState:
    """The state to save: following the latest data (``pin`` False), or pinned "as at" the newest drop. A
    state already pinned (a pinned view opened, then saved) keeps its own watermark."""
    if not pin:
        return replace(state, as_at=None)
    if state.as_at is not None:
        return state
    watermark = queries.latest_watermark(engine)
    if watermark is None:
        raise ViewError("No data has been loaded yet, so there is nothing to pin the view to: save it to "
                        "follow the latest data instead.")
    return replace(state, as_at=watermark.drop_id)


def _checked_query(engine: Engine, state: FilterState) -> str:
    queries.check_state(engine, state)
    return state.to_query_string()


def save_view(engine: Engine, user, name, description, state: FilterState, pin: bool = False) -> SavedView:
    """Save ``state`` as a new view of ``user`` (pinned "as at" the newest drop when ``pin``)."""
    me = _user_id(user)
    query = _checked_query(engine, pinned_state(engine, state, pin))
    with db_scope.acting_as(user), engine.begin() as conn:
        view_id = conn.execute(text("""
            INSERT INTO saved_views (owner_id, name, description, state) VALUES (:owner, :name, :description, :state)
            RETURNING id"""), {"owner": me, "name": _clean_name(name), "description": _clean_description(description),
                               "state": query}).scalar_one()
    return get_view(engine, user, view_id)


def _change(engine: Engine, user, view_id, values: dict) -> SavedView:
    view = _own(engine, user, view_id)
    assignments = ", ".join(f"{column} = :{column}" for column in values)
    with db_scope.acting_as(user), engine.begin() as conn:
        changed = conn.execute(text(f"UPDATE saved_views SET {assignments}, updated_at = now() WHERE id = :id"),
                               dict(values, id=view.id)).rowcount
    if changed != 1:   # row-level security let nothing through: not theirs after all
        raise NotOwner("Only a view's owner may change it.")
    return get_view(engine, user, view.id)


def rename_view(engine: Engine, user, view_id, name, description=None) -> SavedView:
    """Rename the user's own view (and replace its description when one is given)."""
    values = {"name": _clean_name(name)}
    if description is not None:
        values["description"] = _clean_description(description)
    return _change(engine, user, view_id, values)


def update_view(engine: Engine, user, view_id, state: FilterState, pin: bool = False) -> SavedView:
    """Replace the user's own view's state with ``state`` (the dashboard's current one)."""
    return _change(engine, user, view_id, {"state": _checked_query(engine, pinned_state(engine, state, pin))})


def delete_view(engine: Engine, user, view_id) -> None:
    view = _own(engine, user, view_id)
    with db_scope.acting_as(user), engine.begin() as conn:
        if conn.execute(text("DELETE FROM saved_views WHERE id = :id"), {"id": view.id}).rowcount != 1:
            raise NotOwner("Only a view's owner may delete it.")


def duplicate_view(engine: Engine, user, view_id, name=None) -> SavedView:
    """A copy of any view the user may see, owned by them and shared with nobody (its state as saved)."""
    view = get_view(engine, user, view_id)
    copy_name = _clean_name(name) if name else _clean_name(f"Copy of {view.name}"[:MAX_NAME_LENGTH])
    me = _user_id(user)
    with db_scope.acting_as(user), engine.begin() as conn:
        new_id = conn.execute(text("""
            INSERT INTO saved_views (owner_id, name, description, state) VALUES (:owner, :name, :description, :state)
            RETURNING id"""), {"owner": me, "name": copy_name, "description": view.description,
                               "state": view.query}).scalar_one()
    return get_view(engine, user, new_id)


def share_choices(engine: Engine, user) -> ShareChoices:
    """Who the user may share with: colleagues of their own organisation, organisations, tiers."""
    me = _user_id(user)
    with db_scope.acting_as(user), engine.connect() as conn:
        colleagues = conn.execute(text("""
            SELECT u.id, coalesce(u.display_name, u.email) || ' (' || u.tier || ')' FROM users u
            WHERE u.organisation_id = (SELECT organisation_id FROM users WHERE id = :me) AND u.id <> :me AND u.active
            ORDER BY 2"""), {"me": me}).all()
        organisations = conn.execute(text("SELECT id, name FROM organisations WHERE active ORDER BY name")).all()
    return ShareChoices([(int(i), label) for i, label in colleagues], [(int(i), n) for i, n in organisations],
                        list(access.TIERS))


def set_shares(engine: Engine, user, view_id, user_ids=(), organisation_ids=(), tiers=()) -> SavedView:
    """Share the user's own view with exactly these colleagues, organisations and tiers (replacing the
    previous shares). Named users must be active colleagues of the owner's organisation."""
    view = _own(engine, user, view_id)
    choices = share_choices(engine, user)
    try:
        wanted_users = {int(u) for u in user_ids or ()}
        wanted_orgs = {int(o) for o in organisation_ids or ()}
    except (TypeError, ValueError):
        raise ViewError("Choose users and organisations from the lists.") from None
    wanted_tiers = {str(t) for t in tiers or ()}
    if not wanted_users <= {i for i, _ in choices.users}:
        raise ViewError("Views are shared by name only with colleagues of your own organisation: share with "
                        "their organisation instead.")
    if not wanted_orgs <= {i for i, _ in choices.organisations}:
        raise ViewError("Unknown or disabled organisation.")
    if not wanted_tiers <= set(choices.tiers):
        raise ViewError(f"Unknown tier: one of {', '.join(choices.tiers)}.")
    rows = ([{"view": view.id, "u": u, "o": None, "t": None} for u in sorted(wanted_users)]
            + [{"view": view.id, "u": None, "o": o, "t": None} for o in sorted(wanted_orgs)]
            + [{"view": view.id, "u": None, "o": None, "t": t} for t in sorted(wanted_tiers)])
    with db_scope.acting_as(user), engine.begin() as conn:
        conn.execute(text("DELETE FROM saved_view_shares WHERE view_id = :view"), {"view": view.id})
        if rows:
            conn.execute(text("INSERT INTO saved_view_shares (view_id, user_id, organisation_id, tier) "
                              "VALUES (:view, :u, :o, :t)"), rows)
    return get_view(engine, user, view.id)


# ---- opening: what the opener may see --------------------------------------------------------------------

def _names(engine: Engine, codes) -> str:
    suppliers = queries.taxonomy(engine).suppliers
    return ", ".join(suppliers.get(c, c).split("(")[0].strip() for c in codes)


def reduce_state(engine: Engine, state: FilterState, user) -> Reduction:
    """``state`` with everything ``user``'s tier may not see taken out, and a sentence per removal.

    The result is what the dashboard would show them without any refusal: suppliers beyond their aggregate
    level (or health mixed with other suppliers, for tiers that see health only on its own), areas, map
    levels and grid layers finer than their tier breaks data down to, incident points without record access,
    health finer than a borough x calendar month under disclosure control, and record-level filters (a drawn
    area, location quality, days below borough level) where their records do not reach. It never widens the
    view to anything the tier may not see: every panel applies the same policy again."""
    policy = access.policy_for(user)
    removed: list[str] = []
    if policy is access.NO_ACCESS:
        return Reduction(FilterState(), ("Nothing can be shown without signing in.",))
    try:
        queries.check_state(engine, state)
    except ValueError as exc:
        if state.as_at is not None:
            try:
                queries.check_state(engine, replace(state, as_at=None))
                return _reduce_access(engine, replace(state, as_at=None), user, [
                    "The data version the view was pinned to is no longer held: it follows the latest data."])
            except ValueError:
                pass
        return Reduction(FilterState(), (f"The view's filters could not be used ({exc}): showing all London.",))
    return _reduce_access(engine, state, user, removed)


def _reduce_access(engine: Engine, state: FilterState, user, removed: list[str]) -> Reduction:
    policy = access.policy_for(user)
    levels = queries.supplier_levels(engine)
    health_suppliers = {code for code, level in levels.items() if level > access.RECORD_LEVEL}

    # Suppliers: those beyond the tier, or health mixed with others for tiers that see health only alone.
    if state.suppliers:
        allowed = queries.visible_suppliers(engine, user, state)
        gone = [s for s in state.suppliers if s not in allowed]
        if gone:
            why = ("health data is shown at your access level only on its own, under disclosure control"
                   if policy.health == "suppressed" and set(gone) <= health_suppliers else
                   "not available at your access level")
            state = replace(state, suppliers=tuple(s for s in state.suppliers if s in allowed))
            removed.append(f"Supplier{'s' if len(gone) > 1 else ''} {_names(engine, gone)} ({why}).")
    effective = queries.visible_suppliers(engine, user, state)
    no_health = ("health data is shown at your access level only on its own" if policy.health == "suppressed"
                 else "health data is not available at your access level")
    if HEALTH_DOMAIN in state.domains and not effective & health_suppliers:
        state = replace(state, domains=tuple(d for d in state.domains if d != HEALTH_DOMAIN))
        removed.append(f"The health domain ({no_health}).")
    tax = queries.taxonomy(engine)
    health_categories = [c for c in state.categories if tax.categories.get(c, ("",))[0] == HEALTH_DOMAIN]
    if health_categories and not effective & health_suppliers:
        state = replace(state, categories=tuple(c for c in state.categories if c not in health_categories))
        removed.append(f"Health categories ({no_health}).")

    # Areas and map detail finer than the tier breaks data down to.
    finest = policy.min_area_level
    if state.lsoa_code and not policy.may_break_down_to("lsoa"):
        state = replace(state, lsoa_code=None)
        removed.append(f"The LSOA selection (your access level shows areas down to {finest} level).")
    if state.msoa_code and not policy.may_break_down_to("msoa"):
        state = replace(state, msoa_code=None)
        removed.append(f"The MSOA selection (your access level shows areas down to {finest} level).")
    state, removed = _drop_fine_detail(state, removed, policy.may_break_down_to("lsoa"),
                                       f"your access level shows areas down to {finest} level")
    if state.map_level and not policy.may_break_down_to(state.map_level):
        removed.append(f"The {state.map_level.upper()} map level (shown at {finest} level).")
        state = replace(state, map_level=finest)
    if "points" in state.map_layers and not policy.sees_records:
        state = replace(state, map_layers=tuple(layer for layer in state.map_layers if layer != "points"))
        removed.append("Incident points (your access level shows aggregates only).")

    # Health under disclosure control: nothing finer than a borough x calendar month.
    if policy.health == "suppressed" and effective and effective <= health_suppliers:
        why = "health data is shown at your access level for boroughs and whole months only"
        if state.msoa_code or state.lsoa_code:
            state = replace(state, msoa_code=None, lsoa_code=None)
            removed.append(f"The MSOA or LSOA selection ({why}).")
        state, removed = _drop_fine_detail(state, removed, False, why)
        if state.hours is not None or state.days:
            state = replace(state, hours=None, days=())
            removed.append(f"The time of day and day of week filters ({why}).")
        if state.map_level not in (None, "borough"):
            state = replace(state, map_level="borough")
            removed.append(f"The finer map level (shown by borough: {why}).")
        state, removed = _whole_months(state, removed, why)

    # Record-level filters where the user's records do not reach (e.g. outside a borough analyst's boroughs).
    for step in (_without_located, _without_polygon, _whole_months_for_records):
        if queries.records_refusal(engine, state, user) is None:
            break
        state, removed = step(state, removed)
    return Reduction(state, tuple(removed))


def _drop_fine_detail(state: FilterState, removed: list[str], allowed: bool, why: str):
    """Without a drawn area, a picked grid cell, the density grid and the hotspot layers, unless ``allowed``."""
    if allowed:
        return state, removed
    if state.polygon is not None:
        state = replace(state, polygon=None)
        removed.append(f"The drawn area ({why}).")
    if state.hotspot_cell is not None:
        state = replace(state, hotspot_cell=None)
        removed.append(f"The picked hotspot cell ({why}).")
    if "density" in state.map_layers:
        state = replace(state, map_layers=tuple(layer for layer in state.map_layers if layer != "density"))
        removed.append(f"The density layer ({why}).")
    if state.hotspot is not None:
        state = replace(state, hotspot=None)
        removed.append(f"The hotspot layer ({why}).")
    return state, removed


def _whole_months(state: FilterState, removed: list[str], why: str):
    start, end = state.date_from, state.date_to
    whole_start = start.replace(day=1) if start else None
    whole_end = (end.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1) if end else None
    if (whole_start, whole_end) != (start, end):
        state = replace(state, date_from=whole_start, date_to=whole_end)
        removed.append(f"Day-level dates (widened to whole months: {why}).")
    return state, removed


_RECORDS_WHY = "it counts individual records, which your access level does not include here"


def _without_located(state: FilterState, removed: list[str]):
    if state.located_at_least is None:
        return state, removed
    removed.append(f"The location quality filter ({_RECORDS_WHY}).")
    return replace(state, located_at_least=None), removed


def _without_polygon(state: FilterState, removed: list[str]):
    if state.polygon is None:
        return state, removed
    removed.append(f"The drawn area ({_RECORDS_WHY}).")
    return replace(state, polygon=None), removed


def _whole_months_for_records(state: FilterState, removed: list[str]):
    return _whole_months(state, removed, _RECORDS_WHY)


# ---- how old the data is ------------------------------------------------------------------------------------

def _london_date(moment) -> date:
    return moment.astimezone(LONDON).date() if isinstance(moment, datetime) else moment


def data_age(engine: Engine, state: FilterState, today: date | None = None) -> str:
    """What the page says about the data a state shows: "as at <date> (data N days old)" for a pinned view,
    "following the latest data (newest drop <date>)" otherwise."""
    today = today or datetime.now(LONDON).date()
    if state.as_at is not None:
        watermark = queries.as_at_watermark(engine, state.as_at)
        if watermark is not None and watermark.loaded_at is not None:
            pinned = _london_date(watermark.loaded_at)
            days = max(0, (today - pinned).days)
            return (f"As at {pinned:%-d %b %Y} (data {days} day{'' if days == 1 else 's'} old): later drops are "
                    "not counted; a re-issued month can still change.")
    watermark = queries.latest_watermark(engine)
    if watermark is None or watermark.loaded_at is None:
        return "Following the latest data (no drops loaded yet)."
    return f"Following the latest data (newest drop {_london_date(watermark.loaded_at):%-d %b %Y})."

