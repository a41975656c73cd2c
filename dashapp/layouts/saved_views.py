"""The saved-views part of the dashboard: the "Views" button, the data-age line, the opened-view note and the panel.

The panel (a dbc.Offcanvas) holds the save form (name, description, and a switch that pins the view "as at"
the newest drop instead of following the latest data), the lists "My views" and "Shared with me" (each
view's name opens it at ``/views/<id>``; the owner's own views have Rename, Update, Share and Delete, every
view has Duplicate) and the sharing form (colleagues of the user's organisation, organisations, tiers).
This module arranges components and turns ``safestats.saved_views`` values into presentation; it never
touches the database. Callbacks: ``dashapp.callbacks.saved_views``.
"""
from __future__ import annotations

import dash_bootstrap_components as dbc
from dash import dcc, html

from dashapp import ids

# The Flask session key under which opening a view (``/views/<id>``) leaves its note for the page.
OPENED_VIEW_SESSION_KEY = "safestats_opened_view"


def toolbar() -> html.Div:
    """The "Views" button and the line saying which data the page shows and how old it is."""
    return html.Div([
        html.Button("Views", id=ids.VIEWS_OPEN, n_clicks=0, type="button",
                    className="btn btn-sm btn-outline-primary ss-views-open"),
        html.Span(id=ids.VIEWS_DATA_AGE, className="ss-data-age", **{"aria-live": "polite"}),
    ], className="ss-views-toolbar d-flex align-items-center gap-2")


def opened_view_note() -> dbc.Alert:
    """Shown when the page is a saved view just opened: its name, and what was left out for this user."""
    return dbc.Alert(id=ids.VIEWS_NOTE, color="info", is_open=False, dismissable=True, className="mb-2")


def note_children(note: dict) -> list:
    children = [html.Strong(f"Saved view “{note['name']}” by {note['owner']}."),
                "" if note.get("removed") else " Shown as saved."]
    if note.get("removed"):
        children.append(html.Div([
            html.Div("Parts of this view are beyond your access level and were left out:", className="fw-semibold"),
            html.Ul([html.Li(item) for item in note["removed"]], className="mb-0"),
        ], className="mt-1 ss-views-removed"))
    return children


def panel() -> html.Div:
    """The offcanvas panel and the store that tells the lists to refresh after an action."""
    save_form = html.Div([
        html.H6("Save the current view", className="ss-views-heading"),
        html.Label("View name", htmlFor=ids.VIEWS_NAME, className="visually-hidden"),
        dbc.Input(id=ids.VIEWS_NAME, placeholder="Name", maxLength=120, size="sm", className="mb-1"),
        html.Label("View description", htmlFor=ids.VIEWS_DESCRIPTION, className="visually-hidden"),
        dbc.Textarea(id=ids.VIEWS_DESCRIPTION, placeholder="Description (optional)", maxLength=2000, rows=2,
                     size="sm", className="mb-1"),
        dbc.Switch(id=ids.VIEWS_PIN, label="Pin to the data as it stands now (“as at”); off: follow the latest data",
                   value=False, className="ss-views-pin"),
        html.Button("Save as new view", id=ids.VIEWS_SAVE, n_clicks=0, type="button",
                    className="btn btn-sm btn-primary mt-1"),
        html.Div("Rename and Update on a view below use the name, description and switch above.",
                 className="ss-card-sub mt-1"),
    ], className="ss-views-section")
    share_form = html.Div([
        html.H6("Share one of my views", className="ss-views-heading"),
        dcc.Dropdown(id=ids.VIEWS_SHARE_VIEW, placeholder="Choose a view", clearable=True, className="mb-1"),
        html.Div("Colleagues (your organisation)", className="ss-filter-label"),
        dbc.Checklist(id=ids.VIEWS_SHARE_USERS, options=[], value=[], className="mb-1 ss-checklist"),
        html.Div("Organisations (all their members)", className="ss-filter-label"),
        dcc.Dropdown(id=ids.VIEWS_SHARE_ORGS, multi=True, placeholder="Choose organisations", className="mb-1"),
        html.Div("Everyone of a tier", className="ss-filter-label"),
        dbc.Checklist(id=ids.VIEWS_SHARE_TIERS, options=[], value=[], inline=True, className="mb-1 ss-checklist"),
        html.Button("Save sharing", id=ids.VIEWS_SHARE_SAVE, n_clicks=0, type="button",
                    className="btn btn-sm btn-primary"),
        html.Div("Whoever opens a view sees only what their own access level allows; the page tells them what "
                 "was left out.", className="ss-card-sub mt-1"),
    ], className="ss-views-section")
    return html.Div([
        dcc.Store(id=ids.VIEWS_CHANGED, data=None),
        dbc.Offcanvas([
            save_form,
            html.Div(id=ids.VIEWS_MESSAGE, className="ss-views-message", role="status"),
            html.H6("My views", className="ss-views-heading"),
            html.Div(id=ids.VIEWS_MINE),
            html.H6("Shared with me", className="ss-views-heading"),
            html.Div(id=ids.VIEWS_SHARED),
            share_form,
        ], id=ids.VIEWS_PANEL, title="Saved views", placement="end", is_open=False, scrollable=True),
    ])


def _action(label: str, action: str, view_id: int, title: str, css: str = "btn-outline-secondary") -> html.Button:
    return html.Button(label, id={"type": ids.VIEWS_ACTION, "action": action, "view": view_id}, n_clicks=0,
                       type="button", title=title, className=f"btn btn-sm {css} ss-views-action")


def view_list(views, mine: bool) -> list:
    """One entry per view: its name (a link that opens it), description, data mode, owner and actions."""
    if not views:
        return [html.Div("None yet." if mine else "Nothing has been shared with you yet.", className="ss-card-sub")]
    items = []
    for view in views:
        mode = "as at a fixed drop" if view.as_at is not None else "follows the latest data"
        meta = f"{mode} · updated {view.updated_at:%-d %b %Y}" + ("" if mine else f" · by {view.owner_name}")
        if mine and view.shares:
            meta += " · shared with " + ", ".join(s.label for s in view.shares)
        actions = [_action("Duplicate", "duplicate", view.id, "Copy it into my views")]
        if mine:
            actions = [_action("Rename", "rename", view.id, "Rename to the name and description above"),
                       _action("Update", "update", view.id, "Replace it with the current dashboard view"),
                       _action("Share", "share", view.id, "Choose who sees it (form below)"),
                       *actions,
                       _action("Delete", "delete", view.id, "Delete it (for everyone it is shared with too)",
                               "btn-outline-danger")]
        items.append(html.Li([
            html.A(view.name, href=f"/views/{view.id}", className="ss-views-name"),
            html.Div(view.description, className="ss-views-description") if view.description else None,
            html.Div(meta, className="ss-card-sub"),
            html.Div(actions, className="ss-views-actions d-flex flex-wrap gap-1"),
        ], className="ss-views-item", **{"data-view-id": str(view.id)}))
    return [html.Ul(items, className="ss-views-list list-unstyled")]


def message(text: str | None, ok: bool) -> list:
    if not text:
        return []
    return [dbc.Alert(text, color="success" if ok else "warning", className="py-1 px-2 my-2")]
