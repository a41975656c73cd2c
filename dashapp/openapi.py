"""The read API's OpenAPI 3 description (``/api/v1/openapi.json``) and its short how-to page (``/api/v1/docs``).

Hand-written beside ``dashapp.api`` and checked against it: ``tests/test_api_schemathesis.py`` runs
schemathesis on this description with a token of every tier (no 5xx, every status, media type and body as
declared). The filter parameters are the dashboard link's keys (``safestats.filters.QUERY_KEYS``), each a
string the API parses as strictly as a link; a bad one is a 400 with a message.
"""
from __future__ import annotations

from flask import render_template_string

from safestats import dataout
from safestats.filters import QUERY_KEYS

_FILTER_HELP = {
    "from": "first day, YYYY-MM-DD (Europe/London); with no dates the latest 12 months of data",
    "to": "last day, YYYY-MM-DD",
    "supplier": "supplier codes, comma-separated (GET /api/v1/suppliers lists yours)",
    "domain": "domain codes, comma-separated (crime, asb, fire, transport, health, ...)",
    "cat": "category ids, comma-separated",
    "theme": "themes, comma-separated: weapon, dava, young_victim, night_time_economy, arson (any of)",
    "borough": "borough ONS code, e.g. E09000007",
    "msoa": "MSOA code", "lsoa": "LSOA code",
    "poly": "a drawn area: lon,lat;lon,lat;... (3 to 100 corners)",
    "cell": "a 250 or 500 m British National Grid cell: size:x:y",
    "hours": "hours of the day, e.g. 18-23 (22-4 wraps past midnight)",
    "dow": "ISO weekdays, comma-separated (1 = Monday)",
    "located": "only records located at least this well: exact, postcode, gazetteer, borough",
    "level": "aggregates: the area level, borough (default), msoa or lsoa, as your tier allows",
}
_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_METADATA = {"type": "object", "required": ["title", "generated_at", "tier", "filters", "filters_summary",
                                            "freshness", "attribution", "licence"],
             "properties": {"title": {"type": "string"}, "generated_at": {"type": "string"},
                            "tier": {"type": "string"}, "filters": {"type": "string"},
                            "filters_summary": {"type": "string"},
                            "period_start": {"type": ["string", "null"]}, "period_end": {"type": ["string", "null"]},
                            "freshness": {"type": "array", "items": {"type": "object"}},
                            "attribution": {"type": "array", "items": {"type": "string"}},
                            "licence": {"type": "string"}, "disclosure": {"type": ["string", "null"]},
                            "details": {"type": "object"}}}
_FEATURES = {"type": "object", "required": ["type", "features"],
             "properties": {"type": {"const": "FeatureCollection"}, "metadata": {"type": "object"},
                            "features": {"type": "array", "items": {
                                "type": "object", "required": ["type", "geometry", "properties"],
                                "properties": {"type": {"const": "Feature"},
                                               "geometry": {"type": ["object", "null"]},
                                               "properties": {"type": "object"}}}}}}
_RECORD = {"type": "object", "additionalProperties": False, "required": list(dataout.RECORD_FIELDS),
           "properties": {"id": {"type": "integer"}, "supplier": {"type": "string"},
                          "supplier_record_id": {"type": ["string", "null"]}, "occurred_at": {"type": "string"},
                          "time_precision": {"enum": ["month", "day", "minute"]},
                          "category_id": {"type": "integer"}, "category": {"type": "string"},
                          "domain": {"type": "string"}, "supplier_category": {"type": "string"},
                          "themes": {"type": "string"}, "longitude": {"type": ["number", "null"]},
                          "latitude": {"type": ["number", "null"]}, "location_precision": {"type": "string"},
                          "lsoa_code": {"type": ["string", "null"]}, "msoa_code": {"type": ["string", "null"]},
                          "borough_code": {"type": ["string", "null"]}}}
_AGGREGATE_ROW = {"type": "object", "additionalProperties": False,
                  "required": ["area_code", "area_name", "period", "category_id", "category", "domain", "count",
                               "suppressed"],
                  "properties": {"area_code": {"type": "string"}, "area_name": {"type": "string"},
                                 "period": {"type": "string", "pattern": r"^\d{4}(-\d{2})?$"},
                                 "category_id": {"type": "integer"}, "category": {"type": "string"},
                                 "domain": {"type": "string"},
                                 "count": {"type": ["integer", "null"], "minimum": 0},
                                 "suppressed": {"type": "boolean"}}}


def _errors(*statuses: int) -> dict:
    what = {400: "a filter or parameter is not valid (the message names it)",
            401: "no token, or a wrong, expired or revoked one, or a disabled account",
            403: "the view is above your tier (the message says what you may ask for instead)",
            429: "over the token's calls per minute: wait Retry-After seconds"}
    out = {}
    for status in statuses:
        out[str(status)] = {"description": what[status], "content": {"application/json": {"schema": _ERROR}}}
        if status == 429:
            out[str(status)]["headers"] = {"Retry-After": {"schema": {"type": "string"}, "required": True}}
    return out


_CODE = r"[a-z][a-z0-9_]{0,39}"
_DATE = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
# The format of each filter (what the parser checks first; whether a code exists, or dates are in order, is
# checked against the data and answered with a 400 naming it).
_FILTER_SCHEMAS = {
    "from": _DATE, "to": _DATE, "cmpfrom": _DATE, "cmpto": _DATE,
    "supplier": {"type": "string", "pattern": rf"^{_CODE}(,{_CODE})*$"},
    "domain": {"type": "string", "pattern": rf"^{_CODE}(,{_CODE})*$"},
    "cat": {"type": "string", "pattern": r"^\d{1,4}(,\d{1,4})*$"},
    "dow": {"type": "string", "pattern": r"^[1-7](,[1-7])*$"},
    "theme": {"type": "string", "pattern": r"^(weapon|dava|young_victim|night_time_economy|arson)"
                                           r"(,(weapon|dava|young_victim|night_time_economy|arson))*$"},
    "borough": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,39}$"},
    "msoa": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,39}$"},
    "lsoa": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,39}$"},
    "hours": {"type": "string", "pattern": r"^\d{1,2}-\d{1,2}$"},
    "located": {"enum": ["exact", "postcode", "gazetteer", "borough"]},
    "level": {"enum": ["borough", "msoa", "lsoa"]},
}


_EXAMPLES = {"from": "2024-03-01", "to": "2024-03-31"}


def _filter_parameters() -> list[dict]:
    return [{"name": key, "in": "query", "required": False,
             "schema": _FILTER_SCHEMAS.get(key, {"type": "string", "minLength": 1}),
             "description": _FILTER_HELP.get(key, "as in a dashboard link (map settings, ignored here)"),
             **({"example": _EXAMPLES[key]} if key in _EXAMPLES else {})}
            for key in QUERY_KEYS]


def _format(*choices: str) -> dict:
    return {"name": "format", "in": "query", "required": False, "schema": {"enum": list(choices)},
            "description": "json (default), csv (leading '# ' metadata lines, '*' = suppressed) or geojson"}


def description(server_url: str = "") -> dict:
    """The OpenAPI 3.1 description of ``/api/v1/`` (``server_url``: where this portal is served)."""
    csv_body = {"text/csv": {"schema": {"type": "string"}}}
    common_errors = _errors(400, 401, 403, 429)
    return {
        "openapi": "3.1.0",
        "info": {"title": "SafeStats read API", "version": "1.0.0",
                 "description": "Incidents, aggregates, areas and suppliers of the SafeStats portal for your own "
                                "tools. Every call needs a personal API token (make one on your account page, "
                                "/account) and returns only what your tier may see, with health counts under "
                                "disclosure control where your tier has them. Every call is audited. How to use it "
                                "from R, Python, QGIS and Power BI: /api/v1/docs."},
        "servers": [{"url": server_url or "/"}],
        "security": [{"bearerToken": []}],
        "components": {"securitySchemes": {"bearerToken": {"type": "http", "scheme": "bearer",
                                                           "description": "a personal API token, ssa_..."}}},
        "paths": {
            "/api/v1/incidents": {"get": {
                "operationId": "incidents",
                "summary": "Incident records of the current period under the filters, oldest first, paged",
                "description": "Only for tiers that see every record the filters hold (record level, and their "
                               "boroughs for borough analysts); otherwise 403. Pass next_cursor back as cursor "
                               "for the next page (also the Link header).",
                "parameters": _filter_parameters() + [
                    _format("json", "csv", "geojson"),
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": dataout.MAX_PAGE_SIZE},
                     "description": f"records per page (default {dataout.DEFAULT_PAGE_SIZE})"},
                    {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "next_cursor of the previous page"}],
                "responses": {"200": {"description": "one page of records", "content": {
                    "application/json": {"schema": {
                        "type": "object", "required": ["metadata", "records", "next_cursor"],
                        "properties": {"metadata": _METADATA, "records": {"type": "array", "items": _RECORD},
                                       "next_cursor": {"type": ["string", "null"]}}}},
                    "application/geo+json": {"schema": _FEATURES}, **csv_body}}, **common_errors}}},
            "/api/v1/aggregates": {"get": {
                "operationId": "aggregates",
                "summary": "Counts by area x period x category in the current period under the filters",
                "description": "The dashboard's numbers for the same filters and user: count is null (CSV '*') "
                               "where disclosure control suppresses it; total is the dashboard headline. "
                               "format=geojson gives one feature per area (a map layer for QGIS).",
                "parameters": _filter_parameters() + [
                    _format("json", "csv", "geojson"),
                    {"name": "grain", "in": "query", "required": False, "schema": {"enum": list(dataout.GRAINS)},
                     "description": "month (default) or year"}],
                "responses": {"200": {"description": "the counts", "content": {
                    "application/json": {"schema": {
                        "type": "object", "required": ["metadata", "level", "grain", "total", "total_suppressed",
                                                       "rows"],
                        "properties": {"metadata": _METADATA, "level": {"enum": ["borough", "msoa", "lsoa"]},
                                       "grain": {"enum": list(dataout.GRAINS)},
                                       "total": {"type": ["integer", "null"]},
                                       "total_suppressed": {"type": "boolean"},
                                       "rows": {"type": "array", "items": _AGGREGATE_ROW}}}},
                    "application/geo+json": {"schema": _FEATURES}, **csv_body}}, **common_errors}}},
            "/api/v1/areas": {"get": {
                "operationId": "areas", "summary": "Area boundaries (WGS84) at a level your tier may see",
                "parameters": [{"name": "level", "in": "query", "required": False,
                                "schema": {"enum": ["borough", "msoa", "lsoa"]}}],
                "responses": {"200": {"description": "the areas", "content": {
                    "application/geo+json": {"schema": _FEATURES}}}, **common_errors}}},
            "/api/v1/suppliers": {"get": {
                "operationId": "suppliers",
                "summary": "The suppliers whose data you may see, how fresh it is, and what you get of it",
                "responses": {"200": {"description": "the suppliers", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["suppliers", "tier"],
                    "properties": {"tier": {"type": "string"}, "suppliers": {"type": "array", "items": {
                        "type": "object",
                        "required": ["code", "name", "data_to", "last_loaded", "records", "disclosure_control"],
                        "properties": {"code": {"type": "string"}, "name": {"type": "string"},
                                       "data_to": {"type": ["string", "null"]},
                                       "last_loaded": {"type": ["string", "null"]},
                                       "records": {"type": "boolean"}, "disclosure_control": {"type": "boolean"},
                                       "attribution": {"type": ["string", "null"]}}}}}}}}},
                    **_errors(400, 401, 429)}}},
        },
    }


DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>SafeStats read API</title>
<link rel="stylesheet" href="/static/bootstrap.min.css"><link rel="stylesheet" href="/static/safestats.css"></head>
<body><main class="container py-4" style="max-width: 60rem">
<h1 class="h3">SafeStats read API</h1>
<p>Incidents, aggregates, areas and suppliers for your own tools, with exactly what your tier shows on the
dashboard (health counts under disclosure control where your tier has them: <code>*</code> in CSV, null in
JSON). Every call is audited. Description: <a href="/api/v1/openapi.json">/api/v1/openapi.json</a> (OpenAPI 3.1).</p>
<h2 class="h5">Token</h2>
<p>Make a personal token on your <a href="/account">account page</a> (shown once: keep it like a password).
It acts as you, with your tier as it is at each call; revoke it there. Send it as
<code>Authorization: Bearer ssa_...</code>. A token may make {{ per_minute }} calls a minute (then 429 with
<code>Retry-After</code>).</p>
<h2 class="h5">Filters</h2>
<p>The dashboard link's own keys: copy the part after <code>?</code> of a dashboard link, e.g.
<code>from=2024-01-01&amp;to=2024-12-31&amp;borough=E09000007&amp;domain=crime</code>. Aggregates also take
<code>level</code> (borough, msoa, lsoa) and <code>grain</code> (month, year); incidents take
<code>limit</code> (up to {{ max_page }}) and <code>cursor</code>; both take <code>format</code> (json, csv,
geojson). CSV files start with <code># </code> metadata lines (filters, freshness, licence); the first says
how many.</p>
<h2 class="h5">R</h2>
<pre>library(httr2)
resp &lt;- request("{{ base }}/api/v1/aggregates") |&gt;
  req_url_query(from = "2024-01-01", to = "2024-12-31", format = "csv") |&gt;
  req_auth_bearer_token(Sys.getenv("SAFESTATS_TOKEN")) |&gt; req_perform()
counts &lt;- read.csv(text = resp_body_string(resp), comment.char = "#", na.strings = "*")</pre>
<h2 class="h5">Python</h2>
<pre>import io, os, pandas as pd, requests
r = requests.get("{{ base }}/api/v1/aggregates", params={"from": "2024-01-01", "to": "2024-12-31", "format": "csv"},
                 headers={"Authorization": f"Bearer {os.environ['SAFESTATS_TOKEN']}"})
counts = pd.read_csv(io.StringIO(r.text), comment="#", na_values="*")
# records, page by page
url, params = "{{ base }}/api/v1/incidents", {"borough": "E09000007", "limit": 5000}
while True:
    page = requests.get(url, params=params, headers={"Authorization": f"Bearer {os.environ['SAFESTATS_TOKEN']}"}).json()
    ...  # page["records"]
    if not page["next_cursor"]: break
    params["cursor"] = page["next_cursor"]</pre>
<h2 class="h5">QGIS: an aggregate layer</h2>
<ol><li>Settings › Options › Authentication: add a configuration of type <em>API Header</em> with header
<code>Authorization</code> and value <code>Bearer ssa_...</code>.</li>
<li>Layer › Add Layer › Add Vector Layer › Protocol: HTTP(S), type GeoJSON, URI
<code>{{ base }}/api/v1/aggregates?format=geojson&amp;from=2024-01-01&amp;to=2024-12-31&amp;level=borough</code>,
and choose that authentication configuration.</li>
<li>Style it by <code>count</code> (graduated). Each period's count is a field <code>count_YYYY-MM</code>.</li></ol>
<h2 class="h5">Power BI</h2>
<p>Get data › Web › Advanced: URL parts <code>{{ base }}/api/v1/aggregates?format=csv&amp;from=2024-01-01</code>,
HTTP request header <code>Authorization</code> = <code>Bearer ssa_...</code>; Anonymous access (the header
authenticates). In Power Query, skip the leading <code>#</code> rows (<code>Table.Skip</code> by the count the first
line gives) and promote headers; replace <code>*</code> with null.</p>
</main></body></html>"""


def docs_page(base: str):
    from flask import current_app

    return render_template_string(DOCS_PAGE, base=base, max_page=dataout.MAX_PAGE_SIZE,
                                  per_minute=current_app.config.get("SAFESTATS_API_CALLS_PER_MINUTE", 120))
