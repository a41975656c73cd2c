"""Every Dash component id in the portal, as constants, so layouts, callbacks and browser tests agree.

An id is part of the page's contract: the browser tests find elements by these names (``#`` + id), so
renaming one here renames it everywhere. Ids are prefixed by the page they belong to.
"""

# Overview page: shared state
OVERVIEW_URL = "overview-url"
OVERVIEW_FILTER_STATE = "overview-filter-state"  # dcc.Store: FilterState.to_query_string()

# Overview page: navbar
NAVBAR_USER = "navbar-user"
NAVBAR_LOGOUT = "navbar-logout"

# Overview page: map
OVERVIEW_MAP = "overview-map"
OVERVIEW_TILES = "overview-tiles"
OVERVIEW_BOROUGHS = "overview-boroughs"  # dl.GeoJSON of the borough boundaries
OVERVIEW_LEGEND = "overview-legend"

# Overview page: selection and chart
OVERVIEW_SELECTION = "overview-selection"  # "Selected borough: X (clear)"
OVERVIEW_SELECTION_NAME = "overview-selection-name"
OVERVIEW_CLEAR_SELECTION = "overview-clear-selection"
OVERVIEW_CHART = "overview-chart"
OVERVIEW_CHART_TITLE = "overview-chart-title"
OVERVIEW_TOTAL = "overview-total"
