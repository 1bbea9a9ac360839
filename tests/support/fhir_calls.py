"""Calling the FHIR core the way the HTTP layer does, inside a test's unit of work."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from yilian.db import UnitOfWork
from yilian.fhir import FhirContext, FhirRequest, FhirResponse, dispatch, outcomes
from yilian.fhir.interactions.writes import flush, savepoint
from yilian.kernel.errors import YilianError


class Call:
    """Result of one request: status, headers, JSON body (or None)."""

    def __init__(self, status: int, headers: dict[str, str], body: Any) -> None:
        self.status = status
        self.headers = headers
        self.json = body

    def __repr__(self) -> str:
        return f"<Call {self.status} {str(self.json)[:300]}>"


def call(
    uow: UnitOfWork,
    ctx: FhirContext,
    method: str,
    url: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    content_type: str = "application/fhir+json",
) -> Call:
    parts = urlsplit(url)
    body = orjson.loads(orjson.dumps(body)) if body is not None else None  # the request owns its body
    req = FhirRequest(
        method,
        parts.path.strip("/"),
        parse_qsl(parts.query, keep_blank_values=True),
        {k.lower(): v for k, v in (headers or {}).items()},
        body,
        content_type,
    )
    # Each call is all-or-nothing inside the test's transaction, as a request is in its own.
    try:
        with savepoint(uow) as rollback:
            try:
                resp: FhirResponse = dispatch(uow, ctx, req)
                flush(uow)
            except YilianError:
                rollback()
                raise
    except YilianError as err:
        return Call(outcomes.status_of(err.category), {}, outcomes.outcome(err))
    return Call(resp.status, resp.headers, orjson.loads(resp.body) if resp.body else None)


def entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"
    ]


def ids(bundle: dict[str, Any]) -> set[str]:
    return {r["id"] for r in entries(bundle)}
