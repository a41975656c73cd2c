"""The export links' edge: the view state -> every export link's URL (browser-side; no data of ours moves here).

The state store holds the current view's query string (written by ``sync_state``); each link is the
export endpoint plus that query string. The endpoints parse it strictly and check the user themselves
(``dashapp.exports``), so nothing here is trusted.
"""
from __future__ import annotations

from dash import Dash, Input, Output

from dashapp import guard, ids

EXPORT_URLS = {ids.EXPORT_AGGREGATES_CSV: "/export/aggregates.csv", ids.EXPORT_AGGREGATES_GEOJSON: "/export/aggregates.geojson",
               ids.EXPORT_RECORDS_CSV: "/export/records.csv", ids.EXPORT_RECORDS_GEOJSON: "/export/records.geojson",
               ids.EXPORT_SUMMARY: "/export/summary"}


def register_callbacks(app: Dash) -> None:
    # view state -> export links
    guard.clientside_callback(
        app, """function (stored) {
            const urls = %s;
            const qs = (stored && !stored.error && stored.qs) ? stored.qs : null;
            return urls.map(u => qs === null ? "#" : (qs ? u + "?" + qs : u));
        }""" % [EXPORT_URLS[key] for key in EXPORT_URLS],
        *[Output(key, "href") for key in EXPORT_URLS], Input(ids.VIEW_STATE, "data"), name="export_links")
