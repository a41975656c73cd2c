"""Every Dash component id in the portal, as constants, so layouts, callbacks and browser tests agree.

An id is part of the page's contract: the browser tests find elements by these names (``#`` + id), so
renaming one here renames it everywhere. Ids are prefixed by the page they belong to.
"""

# Dashboard: state. The URL is the source of truth; the stores hold its parsed halves for the panels.
URL = "dash-url"
VIEW_STATE = "dash-view-state"  # dcc.Store: the whole FilterState query string (what the map draws)
DATA_STATE = "dash-data-state"  # dcc.Store: FilterState.data_filters() query string (what panels count)
MAP_DRAWN = "dash-map-drawn"  # dcc.Store: the drawn polygon's geojson, as the user last changed it
STATE_ERROR = "dash-state-error"  # alert for a refused link or control value

# Navbar
NAVBAR_USER = "navbar-user"
NAVBAR_LOGOUT = "navbar-logout"
NAVBAR_ADMIN = "navbar-admin"   # link to /admin/users, for portal and organisation admins

# Filter panel
FILTER_DATES = "filter-dates"
FILTER_QUICK_PICK = "filter-quick-pick"
FILTER_SUPPLIERS = "filter-suppliers"
FILTER_DOMAINS = "filter-domains"
FILTER_CATEGORIES = "filter-categories"
FILTER_THEMES = "filter-themes"
FILTER_BOROUGH = "filter-borough"
FILTER_MSOA = "filter-msoa"
FILTER_LSOA = "filter-lsoa"
FILTER_HOURS = "filter-hours"
FILTER_DAYS = "filter-days"
FILTER_LOCATED = "filter-located"  # "located at least as well as" (location quality)
FILTER_RESET = "filter-reset"
FILTER_CHIPS = "filter-chips"
CHIP_REMOVE = "chip-remove"  # pattern-matching type: {"type": CHIP_REMOVE, "key": <filter key>}

# Headline cards
HEADLINE = "headline"
HEADLINE_TOTAL = "headline-total"
FRESHNESS = "freshness"

# Map
MAP = "map"
MAP_TILES = "map-tiles"
MAP_DENSITY = "map-density"  # dl.TileLayer of server-rendered density tiles
MAP_AREAS = {"borough": "map-areas-borough", "msoa": "map-areas-msoa", "lsoa": "map-areas-lsoa"}
MAP_POINTS = "map-points"
MAP_DRAW = "map-draw"  # dl.EditControl
MAP_LEGEND = "map-legend"
MAP_LEVEL = "map-level"
MAP_MEASURE = "map-measure"
MAP_BREAKS = "map-breaks"
MAP_LAYERS = "map-layers"
MAP_NOTE = "map-note"
# Hotspot layers: the choice and its settings, the drawn cells/LSOAs, the density tiles and their legend
MAP_HOTSPOT = "map-hotspot"  # dbc.Select: none / gi_grid / gi_lsoa / kde / emerging / compare
MAP_HOTSPOT_CONFIDENCE = "map-hotspot-confidence"
MAP_HOTSPOT_FDR = "map-hotspot-fdr"
MAP_KDE_BANDWIDTH = "map-kde-bandwidth"
MAP_HOTSPOT_STEP = "map-hotspot-step"
MAP_COMPARE_DATES = "map-compare-dates"
MAP_HOTSPOT_OPTIONS = "map-hotspot-options"  # the settings row (each setting shown for the layers it affects)
MAP_HOTSPOTS = "map-hotspots"  # dl.GeoJSON of the drawn hot/cold cells or LSOAs
MAP_KDE = "map-kde"  # dl.TileLayer of server-rendered kernel density tiles
HOTSPOT_LEGEND = "map-hotspot-legend"
SELECTION = "selection"
SELECTION_NAME = "selection-name"
CLEAR_SELECTION = "clear-selection"
COPY_LINK = "copy-link"
SHARE_URL = "share-url"

# Charts
TIMESERIES = "chart-timeseries"
CATEGORIES = "chart-categories"
HOUR_DAY = "chart-hour-day"
HOUR_DAY_NOTE = "chart-hour-day-note"
TOP_AREAS = "table-top-areas"
TOP_AREAS_TITLE = "table-top-areas-title"

# Saved views (dashapp/layouts/saved_views.py): the "Views" button and panel, its forms and lists
VIEWS_OPEN = "views-open"  # the toolbar button opening the panel
VIEWS_PANEL = "views-panel"  # dbc.Offcanvas
VIEWS_DATA_AGE = "views-data-age"  # "as at <date> (data N days old)" / "following the latest data (...)"
VIEWS_NOTE = "views-note"  # alert: the view just opened, and what was left out for this user
VIEWS_NAME = "views-name"
VIEWS_DESCRIPTION = "views-description"
VIEWS_PIN = "views-pin"  # dbc.Switch: pin "as at" the newest drop, or follow the latest data
VIEWS_SAVE = "views-save"
VIEWS_MESSAGE = "views-message"  # what the last action did, or why it was refused
VIEWS_MINE = "views-mine"
VIEWS_SHARED = "views-shared"
VIEWS_ACTION = "views-action"  # pattern-matching type: {"type": VIEWS_ACTION, "action": ..., "view": <id>}
VIEWS_CHANGED = "views-changed"  # dcc.Store: the last action's result, which refreshes the lists
VIEWS_SHARE_VIEW = "views-share-view"  # which of my views the sharing form edits
VIEWS_SHARE_USERS = "views-share-users"
VIEWS_SHARE_ORGS = "views-share-orgs"
VIEWS_SHARE_TIERS = "views-share-tiers"
VIEWS_SHARE_SAVE = "views-share-save"
# Exports (dashapp/layouts/exports.py): download links for the current view, the printable summary, tokens
EXPORT_BAR = "export-bar"
EXPORT_AGGREGATES_CSV = "export-aggregates-csv"
EXPORT_AGGREGATES_GEOJSON = "export-aggregates-geojson"
EXPORT_RECORDS_CSV = "export-records-csv"
EXPORT_RECORDS_GEOJSON = "export-records-geojson"
EXPORT_SUMMARY = "export-summary"
EXPORT_ACCOUNT = "export-account"
