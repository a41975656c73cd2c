"""Saved views' callbacks and the route that opens a view: thin edges onto ``safestats.saved_views``.

Saving, changing (rename, update, duplicate, delete) and sharing are separate callbacks, so each audit row
names what was done (``save_saved_view``, ``change_saved_view``, ``share_saved_view``) and, through
``guard.note``, the view's filter state; each writes its result to one store, which refreshes the lists.
Opening a view is the route ``/views/<id>`` (audited as ``saved_views.open_view``): it loads the view for the
logged-in user (who must own it or have it shared with them), reduces it to what their tier may see
(``saved_views.reduce_state``), leaves the view's name and what was left out in the session for the page's
note, and sends the browser to the dashboard with the reduced state as its URL. The page shows that note
while its filters are still the view's. Nothing from the browser is trusted: the current state is re-parsed
and checked, view ids are looked up for the user, and the module and the database's row-level security
both refuse what is not theirs.
"""
from __future__ import annotations

import logging
import time

from dash import ALL, Dash, Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate
from flask import Blueprint, current_app, redirect, session
from flask_login import current_user

from dashapp import guard, ids
from dashapp.layouts import saved_views as view
from safestats import saved_views
from safestats.filters import FilterState

log = logging.getLogger(__name__)

bp = Blueprint("saved_views", __name__)


def _engine():
    return current_app.extensions["safestats_engine"]


def _current_state(share_url, stored) -> FilterState:
    """The dashboard's current view: the address bar (zoom and centre included), else the view store."""
    query = share_url.split("?", 1)[1] if isinstance(share_url, str) and "?" in share_url else None
    if query is None and isinstance(stored, dict) and isinstance(stored.get("qs"), str):
        query = stored["qs"]
    return FilterState.from_query_string(query or "")


def _result(text: str, ok: bool = True) -> dict:
    # The time makes every result a new value, so the lists refresh even after an identical message.
    return {"message": text, "ok": ok, "at": time.time()}


def _clicked() -> bool:
    """Whether the callback was fired by a real click (re-rendered buttons arrive with n_clicks 0)."""
    return bool(ctx.triggered and ctx.triggered[0].get("value"))


@bp.get("/views/<int:view_id>")
@guard.endpoint(guard.LOGIN)
def open_view(view_id: int):
    """Open a saved view: reduced to what this user may see, with a note saying what was left out."""
    engine = _engine()
    try:
        saved = saved_views.get_view(engine, current_user, view_id)
        state = saved.state
    except (saved_views.ViewNotFound, ValueError) as exc:
        session[view.OPENED_VIEW_SESSION_KEY] = {"error": str(exc)}
        return redirect("/")
    reduction = saved_views.reduce_state(engine, state, current_user)
    query = reduction.state.to_query_string()
    session[view.OPENED_VIEW_SESSION_KEY] = {"name": saved.name, "owner": saved.owner_name, "qs": query,
                                             "removed": list(reduction.removed)}
    guard.note(rows=1, state=query)
    return redirect("/?" + query if query else "/")


def register_callbacks(app: Dash) -> None:
    """Attach the saved views' callbacks to ``app`` (this instance only)."""

    # "Views" button -> the panel opens (browser-side: no data)
    guard.clientside_callback(
        app, """function (n) { return n ? true : window.dash_clientside.no_update; }""",
        Output(ids.VIEWS_PANEL, "is_open"), Input(ids.VIEWS_OPEN, "n_clicks"), name="open_views_panel")

    # URL -> the note about the saved view just opened (while the page still shows its filters)
    @guard.callback(app, Output(ids.VIEWS_NOTE, "children"), Output(ids.VIEWS_NOTE, "is_open"),
                    Output(ids.VIEWS_NOTE, "color"), Input(ids.URL, "search"))
    def show_opened_view_note(search):
        note = session.get(view.OPENED_VIEW_SESSION_KEY)
        if not isinstance(note, dict):
            return [], False, "info"
        if note.get("error"):
            session.pop(view.OPENED_VIEW_SESSION_KEY, None)   # said once
            return [note["error"]], True, "warning"
        try:
            shown = FilterState.from_query_string(search or "").data_filters()
            opened = FilterState.from_query_string(note.get("qs") or "").data_filters()
        except ValueError:
            return [], False, "info"
        if shown != opened:
            return [], False, "info"
        return view.note_children(note), True, "warning" if note.get("removed") else "info"

    # data filters -> which data the page shows, and how old it is
    @guard.callback(app, Output(ids.VIEWS_DATA_AGE, "children"), Input(ids.DATA_STATE, "data"),
                    prevent_initial_call=True)
    def show_data_age(stored):
        if not isinstance(stored, dict) or stored.get("error") or not isinstance(stored.get("qs"), str):
            return ""
        try:
            return saved_views.data_age(_engine(), FilterState.from_query_string(stored["qs"]))
        except ValueError:
            return ""

    # panel opened, or an action done -> my views, shared with me, and the sharing form's choices
    @guard.callback(app, Output(ids.VIEWS_MINE, "children"), Output(ids.VIEWS_SHARED, "children"),
                    Output(ids.VIEWS_MESSAGE, "children"), Output(ids.VIEWS_SHARE_VIEW, "options"),
                    Output(ids.VIEWS_SHARE_USERS, "options"), Output(ids.VIEWS_SHARE_ORGS, "options"),
                    Output(ids.VIEWS_SHARE_TIERS, "options"),
                    Input(ids.VIEWS_PANEL, "is_open"), Input(ids.VIEWS_CHANGED, "data"),
                    State(ids.VIEW_STATE, "data"), prevent_initial_call=True)
    def list_saved_views(is_open, changed, _stored):
        if not is_open:
            raise PreventUpdate
        engine = _engine()
        mine, shared = saved_views.list_views(engine, current_user)
        choices = saved_views.share_choices(engine, current_user)
        guard.note(rows=len(mine) + len(shared))
        result = changed if isinstance(changed, dict) and ctx.triggered_id == ids.VIEWS_CHANGED else {}
        return (view.view_list(mine, True), view.view_list(shared, False),
                view.message(result.get("message"), bool(result.get("ok"))),
                [{"label": v.name, "value": v.id} for v in mine],
                [{"label": label, "value": i} for i, label in choices.users],
                [{"label": name, "value": i} for i, name in choices.organisations],
                [{"label": tier.replace("_", " "), "value": tier} for tier in choices.tiers])

    # "Save as new view" -> a new view of the current state
    @guard.callback(app, Output(ids.VIEWS_CHANGED, "data", allow_duplicate=True),
                    Input(ids.VIEWS_SAVE, "n_clicks"), State(ids.VIEWS_NAME, "value"),
                    State(ids.VIEWS_DESCRIPTION, "value"), State(ids.VIEWS_PIN, "value"),
                    State(ids.SHARE_URL, "value"), State(ids.VIEW_STATE, "data"), prevent_initial_call=True)
    def save_saved_view(n_clicks, name, description, pin, share_url, stored):
        if not n_clicks:
            raise PreventUpdate
        try:
            saved = saved_views.save_view(_engine(), current_user, name, description,
                                          _current_state(share_url, stored), bool(pin))
        except ValueError as exc:
            return _result(f"Not saved: {exc}", ok=False)
        guard.note(rows=1, state=saved.query)
        return _result(f"Saved “{saved.name}” ({'as at the newest drop' if saved.as_at else 'following the latest data'}).")

    # Rename / Update / Share / Duplicate / Delete on a listed view -> that change (owner-only ones checked)
    @guard.callback(app, Output(ids.VIEWS_CHANGED, "data", allow_duplicate=True),
                    Output(ids.VIEWS_SHARE_VIEW, "value"),
                    Input({"type": ids.VIEWS_ACTION, "action": ALL, "view": ALL}, "n_clicks"),
                    State(ids.VIEWS_NAME, "value"), State(ids.VIEWS_DESCRIPTION, "value"),
                    State(ids.VIEWS_PIN, "value"), State(ids.SHARE_URL, "value"), State(ids.VIEW_STATE, "data"),
                    prevent_initial_call=True)
    def change_saved_view(_clicks, name, description, pin, share_url, stored):
        trigger = ctx.triggered_id
        if not isinstance(trigger, dict) or not _clicked():
            raise PreventUpdate
        action, view_id = trigger.get("action"), trigger.get("view")
        engine = _engine()
        try:
            if action == "share":
                saved = saved_views.get_view(engine, current_user, view_id)
                if not saved.owned_by(current_user):
                    raise saved_views.NotOwner("Only a view's owner may share it.")
                return no_update, saved.id
            if action == "rename":
                saved = saved_views.rename_view(engine, current_user, view_id, name, description or None)
                done = f"Renamed to “{saved.name}”."
            elif action == "update":
                saved = saved_views.update_view(engine, current_user, view_id, _current_state(share_url, stored),
                                                bool(pin))
                done = f"“{saved.name}” now shows the current view."
            elif action == "duplicate":
                saved = saved_views.duplicate_view(engine, current_user, view_id)
                done = f"Copied into your views as “{saved.name}”."
            elif action == "delete":
                saved = saved_views.get_view(engine, current_user, view_id)
                saved_views.delete_view(engine, current_user, view_id)
                done = f"Deleted “{saved.name}”."
            else:
                raise PreventUpdate
        except ValueError as exc:
            return _result(str(exc), ok=False), no_update
        guard.note(rows=1, state=saved.query)
        return _result(done), no_update

    # sharing form's view -> who it is shared with now
    @guard.callback(app, Output(ids.VIEWS_SHARE_USERS, "value"), Output(ids.VIEWS_SHARE_ORGS, "value"),
                    Output(ids.VIEWS_SHARE_TIERS, "value"), Input(ids.VIEWS_SHARE_VIEW, "value"),
                    State(ids.VIEW_STATE, "data"), prevent_initial_call=True)
    def load_view_shares(view_id, _stored):
        if view_id is None:
            return [], [], []
        try:
            saved = saved_views.get_view(_engine(), current_user, view_id)
        except saved_views.ViewNotFound:
            return [], [], []
        if not saved.owned_by(current_user):
            return [], [], []
        guard.note(rows=len(saved.shares))
        by_kind = {kind: [s.key for s in saved.shares if s.kind == kind] for kind in ("user", "organisation", "tier")}
        return ([int(k) for k in by_kind["user"]], [int(k) for k in by_kind["organisation"]], by_kind["tier"])

    # "Save sharing" -> the chosen view is shared with exactly these colleagues, organisations and tiers
    @guard.callback(app, Output(ids.VIEWS_CHANGED, "data", allow_duplicate=True),
                    Input(ids.VIEWS_SHARE_SAVE, "n_clicks"), State(ids.VIEWS_SHARE_VIEW, "value"),
                    State(ids.VIEWS_SHARE_USERS, "value"), State(ids.VIEWS_SHARE_ORGS, "value"),
                    State(ids.VIEWS_SHARE_TIERS, "value"), State(ids.VIEW_STATE, "data"), prevent_initial_call=True)
    def share_saved_view(n_clicks, view_id, user_ids, organisation_ids, tiers, _stored):
        if not n_clicks:
            raise PreventUpdate
        if view_id is None:
            return _result("Choose one of your views to share first.", ok=False)
        try:
            saved = saved_views.set_shares(_engine(), current_user, view_id, user_ids or (), organisation_ids or (),
                                           tiers or ())
        except ValueError as exc:
            return _result(f"Not shared: {exc}", ok=False)
        guard.note(rows=len(saved.shares), state=saved.query)
        who = ", ".join(s.label for s in saved.shares) or "nobody"
        return _result(f"“{saved.name}” is shared with {who}.")
