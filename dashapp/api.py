"""The read API for analysts' own tools (``/api/v1/``): incidents, aggregates, areas, suppliers, and its description.

Every data route is declared ``guard.API_TOKEN``: the caller is the owner of the request's personal API token
(``Authorization: Bearer ssa_...``, made on the user's account page, ``dashapp.account``), loaded afresh on
each call so their tier, boroughs and active state are as they are now; the session cookie is never read, so
a browser cannot be tricked into calling it. ``authenticate_request`` (installed as the app's
``safestats_bearer_auth``) finds the user and counts the call against the token's rate limit in PostgreSQL
(``safestats.api_tokens.claim_call``: 429 with ``Retry-After`` over the limit). The guard then checks the
tier and writes the audit row (filters, rows sent, exported) like any endpoint, and the request runs
``acting_as`` that user, under the web role and row-level security, as the dashboard does.

Filters are the dashboard link's keys, parsed as strictly (``FilterState.from_query_string``; a bad value is
a 400 naming it), plus ``format`` (json, csv, geojson), ``limit`` and ``cursor`` (incidents, keyset pages)
and ``grain`` (month or year; aggregates); the link's ``level`` key is the aggregates' area level. What
comes back is made by ``safestats.dataout``, the module behind the dashboard's exports, so the numbers are the
dashboard's for the same user. ``/api/v1/openapi.json`` (``dashapp.openapi``) describes it all; the
description itself is public, every answer with data needs a token.
"""
from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlencode

from flask import Blueprint, Response, current_app, g, jsonify, request
from flask_login import current_user

from dashapp import guard, openapi
from safestats import access, api_tokens, dataout, queries
from safestats.access import AccessRefused
from safestats.filters import FilterState

bp = Blueprint("api_v1", __name__, url_prefix="/api/v1")
REALM = "safestats-api"
API_KEYS = ("format", "limit", "cursor", "grain")  # the API's own parameters, beside the filter keys
FORMATS = ("json", "csv", "geojson")
MEDIA_TYPES = {"json": "application/json", "csv": "text/csv; charset=utf-8", "geojson": "application/geo+json"}


def _engine():
    return current_app.extensions["safestats_engine"]


def authenticate_request():
    """(user, None) for a request with a live token of an active user within its rate limit; otherwise
    (user or None, the refusal): 401 without a usable token, 429 over the limit."""
    from dashapp.auth import load_user_by_id

    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return None, guard.json_error(401, "missing bearer token: send 'Authorization: Bearer <token>' with a "
                                           "token made on your SafeStats account page (/account)", REALM)
    token = api_tokens.verify_token(_engine(), presented.strip())
    if token is None:
        return None, guard.json_error(401, "token not recognised, expired or revoked: check it was copied "
                                           "whole, or make a new one on your account page (/account)", REALM)
    user = load_user_by_id(_engine(), token.user_id)
    if user is None:
        return None, guard.json_error(401, "this token's account (or its organisation) is disabled: ask your "
                                           "SafeStats administrator", REALM)
    retry_after = api_tokens.claim_call(_engine(), token.id, current_app.config["SAFESTATS_API_CALLS_PER_MINUTE"])
    if retry_after is not None:
        refusal = guard.json_error(429, f"more than {current_app.config['SAFESTATS_API_CALLS_PER_MINUTE']} calls a "
                                        f"minute with this token: wait {retry_after} s (Retry-After) and page "
                                        "with larger limits")
        refusal.headers["Retry-After"] = str(retry_after)
        return user, refusal
    g.api_token_id = token.id
    return user, None


def install(server) -> None:
    """Mount the API on the app and make its bearer tokens the way the guard identifies API callers."""
    server.config.setdefault("SAFESTATS_API_CALLS_PER_MINUTE", 120)
    server.extensions["safestats_bearer_auth"] = authenticate_request
    server.register_blueprint(bp)


class _BadRequest(ValueError):
    pass


def _parse() -> tuple[FilterState, dict[str, str]]:
    """The request's filter state and API parameters; ``_BadRequest`` naming what is wrong."""
    raw = request.query_string.decode("ascii", "replace")
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=True) if raw else []
    except ValueError as exc:
        raise _BadRequest(f"malformed query string: {raw[:80]!r}") from exc
    options: dict[str, str] = {}
    for key, value in pairs:
        if key in API_KEYS:
            if key in options:
                raise _BadRequest(f"parameter {key!r} given more than once")
            options[key] = value
    try:
        state = FilterState.from_query_string(urlencode([(k, v) for k, v in pairs if k not in API_KEYS], safe=",;:"))
        queries.check_state(_engine(), state)
    except ValueError as exc:
        raise _BadRequest(str(exc)) from exc
    fmt = options.get("format", "json")
    if fmt not in FORMATS:
        raise _BadRequest(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return state, options


def _answer(compute):
    """Run ``compute()`` and turn refusals into JSON errors: 400 for a bad request, 403 above the tier."""
    try:
        return compute()
    except AccessRefused as exc:
        return guard.json_error(403, str(exc))
    except ValueError as exc:   # _BadRequest, a bad cursor, an unknown level or grain
        return guard.json_error(400, str(exc))


def _send(body, fmt: str, name: str, rows: int, state: FilterState, headers: dict | None = None) -> Response:
    guard.note(rows=rows, state=state.data_filters().to_query_string() or None, exported=True)
    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False, default=str)
    response = Response(text, mimetype=MEDIA_TYPES[fmt].split(";")[0])
    if fmt == "csv":
        response.headers["Content-Type"] = MEDIA_TYPES["csv"]
    if fmt != "json":
        response.headers["Content-Disposition"] = f'attachment; filename="safestats-{name}.{fmt}"'
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _limit(options: dict) -> int:
    text = options.get("limit", str(dataout.DEFAULT_PAGE_SIZE))
    if not text.isdigit() or len(text) > 5 or not 1 <= int(text) <= dataout.MAX_PAGE_SIZE:
        raise _BadRequest(f"limit must be a whole number from 1 to {dataout.MAX_PAGE_SIZE}, not {text!r}")
    return int(text)


@bp.get("/incidents", endpoint="incidents")
@guard.endpoint(guard.API_TOKEN, exported=True)
def incidents():
    def compute():
        state, options = _parse()
        fmt = options.get("format", "json")
        page = dataout.records(_engine(), state, current_user, options.get("cursor") or None, _limit(options))
        meta = dataout.metadata(_engine(), state, current_user, "SafeStats incidents (records)",
                                records=len(page.records), next_cursor=page.next_cursor or "")
        headers = {}
        if page.next_cursor:
            following = [(k, v) for k, v in parse_qsl(request.query_string.decode(), keep_blank_values=True)
                         if k != "cursor"] + [("cursor", page.next_cursor)]
            headers["Link"] = f'<{request.base_url}?{urlencode(following, safe=",;:")}>; rel="next"'
        if fmt == "csv":
            body = dataout.records_csv(page, meta)
        elif fmt == "geojson":
            body = dataout.records_geojson(page, meta)
        else:
            body = {"metadata": meta.as_json(), "records": page.records, "next_cursor": page.next_cursor}
        return _send(body, fmt, "incidents", len(page.records), state, headers)
    return _answer(compute)


@bp.get("/aggregates", endpoint="aggregates")
@guard.endpoint(guard.API_TOKEN, exported=True)
def aggregates():
    def compute():
        state, options = _parse()
        fmt = options.get("format", "json")
        aggs = dataout.aggregates(_engine(), state, current_user, state.map_level or "borough",
                                  options.get("grain", "month"))
        meta = dataout.metadata(_engine(), state, current_user, "SafeStats aggregates", aggs.controlled,
                                with_boundaries=True, level=aggs.level, grain=aggs.grain,
                                total=dataout.disclosure.label(aggs.total), rows=len(aggs.rows))
        if fmt == "csv":
            return _send(dataout.aggregates_csv(aggs, meta), fmt, "aggregates", len(aggs.rows), state)
        if fmt == "geojson":
            body = dataout.aggregates_geojson(_engine(), aggs, meta)
            return _send(body, fmt, "aggregates", len(body["features"]), state)
        body = {"metadata": meta.as_json(), "level": aggs.level, "grain": aggs.grain, "total": aggs.total,
                "total_suppressed": aggs.total is None,
                "rows": [{"area_code": r.area_code, "area_name": r.area_name, "period": r.period,
                          "category_id": r.category_id, "category": r.category, "domain": r.domain,
                          "count": r.count, "suppressed": r.count is None} for r in aggs.rows]}
        return _send(body, fmt, "aggregates", len(aggs.rows), state)
    return _answer(compute)


@bp.get("/areas", endpoint="areas")
@guard.endpoint(guard.API_TOKEN)
def areas():
    def compute():
        level = request.args.get("level", "borough")
        if set(request.args) - {"level"} or len(request.args.getlist("level")) > 1:
            raise _BadRequest("areas takes one parameter, level (borough, msoa or lsoa)")
        if level not in access.AREA_LEVELS:
            raise _BadRequest(f"level must be one of {', '.join(access.AREA_LEVELS)}, not {level!r}")
        policy = access.policy_for(current_user)
        if not policy.may_break_down_to(level):
            raise AccessRefused(f"your access level shows areas down to {policy.min_area_level} level only")
        shapes = queries.boundaries_geojson(_engine(), level)
        guard.note(rows=len(shapes["features"]))
        body = dict(shapes, metadata={"level": level, "attribution": [dataout.BOUNDARY_ATTRIBUTION]})
        return Response(json.dumps(body), mimetype="application/geo+json")
    return _answer(compute)


@bp.get("/suppliers", endpoint="suppliers")
@guard.endpoint(guard.API_TOKEN)
def suppliers():
    def compute():
        if request.args:
            raise _BadRequest("suppliers takes no parameters")
        policy = access.policy_for(current_user)
        levels = queries.supplier_levels(_engine())
        rows = [{"code": f.supplier, "name": f.name, "data_to": f.data_to.isoformat() if f.data_to else None,
                 "last_loaded": f.last_loaded.isoformat(timespec="seconds") if f.last_loaded else None,
                 "records": levels.get(f.supplier, 99) <= policy.record_level,
                 "disclosure_control": policy.health == "suppressed" and levels.get(f.supplier, 0) > access.RECORD_LEVEL,
                 "attribution": dataout.SUPPLIER_ATTRIBUTIONS.get(f.supplier)}
                for f in queries.freshness(_engine()) if levels.get(f.supplier, 99) <= policy.aggregate_level]
        guard.note(rows=len(rows))
        return jsonify(suppliers=rows, tier=policy.tier)
    return _answer(compute)


@bp.get("/openapi.json", endpoint="openapi")
@guard.endpoint(guard.PUBLIC, audit=False)
def openapi_description():
    # Describes the API only (no data): public, so tools can read it before they hold a token.
    return jsonify(openapi.description(request.host_url.rstrip("/")))


@bp.get("/docs", endpoint="docs")
@guard.endpoint(guard.PUBLIC, audit=False)
def docs():
    return openapi.docs_page(request.host_url.rstrip("/"))
