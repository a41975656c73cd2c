"""schemathesis against the read API's own OpenAPI description, with a personal token of every tier (issue 8).

For each operation of ``/api/v1/openapi.json`` and each tier, schemathesis generates requests (filters,
formats, levels, limits, cursors, valid and not) and checks every response: no 5xx, a status, media type,
headers and body the description declares, and a 401 without the token. On top of that each response is
checked against the tier: no record fields for tiers without record access, no health data for viewers,
and for tiers under disclosure control no health count of 1-7 and none that is not a multiple of 5. The
data is ``tests/test_forged_inputs``'s seed (exact health counts 3 and 53), through ``test_dataout_api``'s
fixtures. The rate limit is lifted for the run (it has its own test).
"""
from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from dashapp import openapi
from safestats import api_tokens, disclosure
from safestats.access import TIERS
from tests.test_dataout_api import CONTROLLED, _user, app, seeded  # noqa: F401  (fixtures)

ANSWERED: dict[tuple[str, str], set[int]] = {}   # (path, tier) -> the statuses seen
RECORD_TIERS = {"borough_analyst", "partner_analyst", "istv_analyst", "admin"}
HEALTH_SUPPLIERS = {"las", "istv_ed"}


@pytest.fixture(scope="module")
def tier_tokens(app):  # noqa: F811
    app.config["SAFESTATS_API_CALLS_PER_MINUTE"] = 1_000_000
    engine = app.extensions["safestats_engine"]
    yield {tier: api_tokens.create_token(engine, _user(app, tier).id, f"schemathesis {tier}")[1] for tier in TIERS}
    app.config["SAFESTATS_API_CALLS_PER_MINUTE"] = 120


# The description the app serves (a test below checks it is the same): loaded here, as schemathesis needs it
# when the tests are collected, before the database fixtures exist.
schema = schemathesis.openapi.from_dict(openapi.description())


def test_the_description_is_what_the_app_serves(app, tier_tokens):  # noqa: F811
    served = app.test_client().get("/api/v1/openapi.json", base_url="http://localhost").get_json()
    assert served["paths"] == openapi.description()["paths"]
    assert set(served["paths"]) == {f"/api/v1/{name}" for name in ("incidents", "aggregates", "areas", "suppliers")}


def _check_within_tier(tier: str, response) -> None:
    """Nothing above the tier in a 200 answer."""
    if response.status_code != 200:
        return
    text = response.text
    body = json.loads(text) if response.headers.get("Content-Type", "").startswith(("application/json",
                                                                                    "application/geo+json")) else None
    if tier not in RECORD_TIERS:
        assert "occurred_at" not in text and "supplier_record_id" not in text, "records reached a tier without them"
    if tier == "viewer":
        assert not any(s in text for s in ('"las"', '"istv_ed"', "Ambulance", "emergency department")), text[:300]
    if isinstance(body, dict) and isinstance(body.get("rows"), list):
        for row in body["rows"]:
            if row["domain"] == "health":
                assert tier != "viewer"
                if tier in CONTROLLED:
                    assert row["count"] is None or (row["count"] > disclosure.SUPPRESSED_MAX
                                                    and row["count"] % disclosure.ROUND_TO == 0), row
    if isinstance(body, dict) and isinstance(body.get("records"), list):
        for record in body["records"]:
            assert tier in RECORD_TIERS
            if tier in ("borough_analyst", "partner_analyst"):
                assert record["supplier"] not in HEALTH_SUPPLIERS, record


@schema.parametrize()
@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_api_against_its_description(case, app, tier_tokens):  # noqa: F811
    # Every generated request is sent with each tier's token: the same request, five policies. Left out:
    # "positive data acceptance" (a request the schema allows must succeed), which cannot hold for filters
    # whose validity depends on the data (a well-formed borough code that does not exist, dates out of
    # order, an MSOA outside the borough, a level above the tier): those are 400s and 403s with a message,
    # as declared.
    case.operation.schema.app = app   # the WSGI app (what from_wsgi sets): also for checks that re-send
    for tier in TIERS:
        response = case.call_and_validate(headers={"Authorization": f"Bearer {tier_tokens[tier]}"}, app=app,
                                          excluded_checks=[positive_data_acceptance])
        assert response.status_code < 500, (tier, response.status_code)
        _check_within_tier(tier, response)
        if response.request.method == "GET":   # (a check may leave its own OPTIONS probe as the response)
            ANSWERED.setdefault((case.operation.path, tier), set()).add(response.status_code)


def test_every_operation_answered_every_tier_with_data():
    """The positive control of the run above: each operation gave data (200) to every tier it is for, and
    refused (403) the incidents to viewers, so the checks on 200 answers were exercised."""
    for path in ("/api/v1/aggregates", "/api/v1/areas", "/api/v1/suppliers"):
        for tier in TIERS:
            assert 200 in ANSWERED.get((path, tier), set()), (path, tier, ANSWERED.get((path, tier)))
    for tier in ("partner_analyst", "istv_analyst", "admin"):
        assert 200 in ANSWERED[("/api/v1/incidents", tier)], tier
    assert 200 not in ANSWERED[("/api/v1/incidents", "viewer")] and 403 in ANSWERED[("/api/v1/incidents", "viewer")]
