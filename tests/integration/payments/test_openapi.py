"""The OpenAPI document at /api/openapi.json, on both databases: it lists every /api route the
router actually serves (read from Starlette's routes, not from the registry the document is built
from), with its method and request schema; the issue-6 contract's replies conform to the reply
schemas the document shows (validated with the document's own JSON Schema, unknown fields
refused); and schemathesis, generating requests from the document, finds no server error.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance
from starlette.routing import Route

from tests.integration.payments.builders import Region
from tests.integration.payments.conftest import CardDesk
from tests.integration.payments.conftest import today as business_day
from tests.integration.payments.test_payment_api import DRUG, call, key, new_card
from tests.support.auth import bearer, system_token
from yilian.api.app import create_app
from yilian.api.wiring import platform_settings
from yilian.db import Database
from yilian.kernel import clock

CONTRACT = {
    ("post", "/api/cards/{card_no}/top-ups"),
    ("get", "/api/cards/{card_no}/wallet"),
    ("post", "/api/charges"),
    ("post", "/api/charges/{charge_id}/refunds"),
    ("post", "/api/holds"),
    ("post", "/api/holds/{hold_id}/post"),
    ("post", "/api/holds/{hold_id}/void"),
    ("post", "/api/settlement/days/{date}/close"),
    ("get", "/api/settlement/days/{date}"),
    ("get", "/api/ledger/trial-balance"),
}


@pytest.fixture(scope="module")
def spec(app: Any) -> dict[str, Any]:
    # No credentials: the document holds no data and is served to anyone.
    response = call(app, "GET", "/api/openapi.json", headers={})
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


@pytest.fixture(scope="module")
def hospital(db: Database, region: Region) -> dict[str, str]:
    return bearer(
        system_token(
            db, scopes="system/Account.cru system/ChargeItem.cr", org_id=region.city_hospital, name="HIS"
        )
    )


def test_every_served_api_route_is_documented_with_its_method_and_body(
    app: Any, spec: dict[str, Any]
) -> None:
    served = {
        (method.lower(), route.path)
        for route in app.rest.routes
        if isinstance(route, Route) and route.path.startswith("/api/") and route.path != "/api/openapi.json"
        for method in (route.methods or ()) - {"HEAD"}
    }
    documented = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert served == documented
    assert documented >= CONTRACT
    assert {p.split("/")[2] for _, p in served} >= {
        "mpi",
        "cards",
        "charges",
        "holds",
        "settlement",
        "ledger",
    }
    for spec_of in app.state.api_specs:
        op = spec["paths"][spec_of.path][spec_of.method.lower()]
        if spec_of.body is not None:
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
            expected = spec_of.body.model_json_schema(ref_template="#/components/schemas/{model}")
            expected.pop("$defs", None)
            assert schema == expected, spec_of.path
        else:
            assert "application/json" not in op.get("requestBody", {}).get("content", {})
        assert op["x-permission"] == f"{spec_of.permission.resource_type}.{spec_of.permission.letter}"
        assert str(spec_of.status) in op["responses"]
        for status in ("400", "401", "403", "500"):
            assert op["responses"][status]["content"]["application/problem+json"]
    keyed = spec["paths"]["/api/charges"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["required"] for p in keyed["parameters"])
    assert "card-lost" in keyed["responses"]["409"]["x-reasons"]
    assert "card-replaced" in keyed["responses"]["410"]["x-reasons"]
    assert "insufficient-balance" in keyed["responses"]["409"]["x-reasons"]
    assert spec["paths"]["/api/settlement/days/{date}/close"]["post"]["x-operator-only"] is True


class Conformance:
    """Validate a reply against the schema the document gives its route and status."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    def __call__(self, method: str, path: str, status: int, body: Any) -> None:
        response = self.spec["paths"][path][method]["responses"][str(status)]
        media = next(iter(response["content"].values()))
        schema = {**media["schema"], "components": self.spec["components"]}
        errors = [e.message for e in jsonschema_rs.validator_for(schema).iter_errors(body)]
        assert not errors, (method, path, errors)


@pytest.fixture
def tomorrow_clock() -> Iterator[list[bool]]:
    flipped = [False]
    # From the policy year's clock (conftest), not the calendar's: the charges here are insured.
    base, started = clock.now(), time.monotonic()
    clock.set_clock(
        lambda: base + dt.timedelta(seconds=time.monotonic() - started, days=1 if flipped[0] else 0)
    )
    yield flipped
    clock.set_clock(None)


def test_contract_replies_match_the_documented_schemas(
    app: Any,
    db: Database,
    spec: dict[str, Any],
    desk: CardDesk,
    region: Region,
    hospital: dict[str, str],
    tomorrow_clock: list[bool],
) -> None:
    check = Conformance(spec)
    card = new_card(db, desk, region, "ncms")
    org = region.city_hospital

    def go(
        method: str, template: str, status: int, *, json: Any = None, headers: Any = None, **p: str
    ) -> Any:
        keyed = method == "post"
        r = call(
            app,
            method.upper(),
            template.format(**p),
            headers=headers or hospital,
            key=key() if keyed else None,
            json=json,
        )
        assert r.status_code == status, r.text
        check(method, template, status, r.json())
        return r.json()

    go(
        "post",
        "/api/cards/{card_no}/top-ups",
        201,
        card_no=card,
        json={"amount_fen": 90_000, "channel": "cash", "org": org},
    )
    go("get", "/api/cards/{card_no}/wallet", 200, card_no=card)
    charged = go(
        "post",
        "/api/charges",
        201,
        json={"card_no": card, "org": org, "department": "clinic", "items": [DRUG], "diagnoses": ["J06.9"]},
    )
    assert charged["explanation"]["steps"], charged
    go("get", "/api/charges/{charge_id}", 200, charge_id=charged["charge_id"])
    go(
        "post",
        "/api/charges/{charge_id}/refunds",
        201,
        charge_id=charged["charge_id"],
        json={"amount_fen": 100, "reason": "one tablet returned"},
    )
    go("get", "/api/cards/{card_no}/statement", 200, card_no=card)
    hold = go(
        "post",
        "/api/holds",
        201,
        json={"card_no": card, "org": org, "department": "ward", "amount_fen": 10_000},
    )
    go("get", "/api/holds/{hold_id}", 200, hold_id=hold["hold_id"])
    go("post", "/api/holds/{hold_id}/post", 200, hold_id=hold["hold_id"], json={"amount_fen": 4_000})
    other = go(
        "post",
        "/api/holds",
        201,
        json={"card_no": card, "org": org, "department": "ward", "amount_fen": 1_000},
    )
    go("post", "/api/holds/{hold_id}/void", 200, hold_id=other["hold_id"])
    refused = call(
        app,
        "POST",
        "/api/charges",
        headers=hospital,
        key=key(),
        json={"card_no": card, "org": org, "department": "clinic", "items": [{**DRUG, "quantity": 10_000}]},
    )
    assert refused.status_code == 409
    check("post", "/api/charges", 409, refused.json())
    operator = bearer(system_token(db, scopes="system/*.cruds", name="operator"))
    today = business_day()
    go("get", "/api/settlement/days/{date}", 200, date=today, headers=operator)
    go("get", "/api/ledger/trial-balance", 200, headers=operator)
    tomorrow_clock[0] = True
    operator = bearer(system_token(db, scopes="system/*.cruds", name="tomorrow's operator"))
    go("post", "/api/settlement/days/{date}/close", 201, date=today, headers=operator)
    closed = call(app, "GET", f"/api/settlement/days/{today}?detail=true", headers=operator)
    check("get", "/api/settlement/days/{date}", 200, closed.json())
    assert closed.json()["reconciliation"]["reconciled"]


# --------------------------------------------------------------------------- schemathesis


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_never_meet_a_server_error(db: Database, mode: GenerationMode) -> None:
    """Requests generated from the document for every operation — bodies, path values, query
    parameters and idempotency keys that fit the schemas (positive) and that break them
    (negative) — sent with the operator's token: never a 500, and every reply, successes and
    problem documents alike, matches the schema the document gives for its status."""
    app = create_app(db, platform_settings())  # its own: the test client runs the app's lifespan
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
    operator = bearer(system_token(db, scopes="system/*.cruds", name=f"schemathesis {mode.value}"))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(app.state.api_specs)
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case: Any) -> None:
            response = case.call(headers=operator)
            assert response.status_code < 500, (case.method, case.formatted_path, response.text[:500])
            case.validate_response(response, checks=[response_schema_conformance])

        run()
