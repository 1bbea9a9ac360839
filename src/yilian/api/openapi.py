"""The OpenAPI 3.1 document of the JSON API under ``/api``, generated from the route registrations.

Nothing here is written by hand per endpoint: every route registered through
:class:`yilian.api.rest.ApiRoutes` left a :class:`~yilian.api.rest.RouteSpec` (path, method, the
SMART permission it needs, operator-only or not, its pydantic body and reply models, its success
status, its query parameters, whether it takes an ``Idempotency-Key``, the ``reason`` codes its
refusals carry), and the document is built from those. A route added, removed or changed in code
changes the document with it; a test checks that every registered route is in it.

The document is served at ``/api/openapi.json`` without authentication, like the FHIR capability
statement (``/fhir/metadata``): it describes the interface and contains no data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from yilian import __version__
from yilian.api.rest import RouteSpec
from yilian.fhir.outcomes import STATUS
from yilian.kernel.errors import Category

PATH = "/api/openapi.json"
PROBLEM_JSON = "application/problem+json"
_PARAM = re.compile(r"{([^}:]+)(?::[^}]*)?}")

# Every /api route can answer these: a bad request (body, query or path), no credentials, scopes
# or institution that do not allow the call, and a server error (logged, no traceback sent).
_ALWAYS = (Category.INVALID, Category.UNAUTHENTICATED, Category.FORBIDDEN, Category.INTERNAL)


class ProblemError(BaseModel):
    detail: str
    pointer: list[str] = Field(description="the body field the error is about")


class Problem(BaseModel):
    """An RFC 9457 problem document: every refusal of an /api route."""

    type: str = Field(description="https://yilian.example.cn/problems/{category}")
    title: str
    status: int
    detail: str = Field(description="what is wrong, in words a person at the desk can act on")
    code: str = Field(description="the FHIR issue type of the category")
    instance: str | None = Field(default=None, description="the request path")
    reason: str | None = Field(
        default=None,
        description="a machine-readable refusal code (insufficient-balance, card-lost, day-closed…)",
    )
    errors: list[ProblemError] | None = Field(default=None, description="one entry per invalid body field")


def _tag(spec: RouteSpec) -> str:
    return {"mpi": "patient index", "card": "health cards", "payment": "payments"}.get(
        spec.subtype.split("-")[0], spec.subtype.split("-")[0]
    )


def _operation_id(spec: RouteSpec) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", _PARAM.sub(r"by_\1", spec.path.removeprefix("/api/")))
    return f"{spec.method.lower()}_{words.strip('_')}"


def _statuses(spec: RouteSpec) -> dict[int, list[str]]:
    """Refusal status → the reason codes that come with it (possibly none)."""
    out: dict[int, list[str]] = {STATUS[c][0]: [] for c in _ALWAYS}
    if _PARAM.search(spec.path):
        out.setdefault(STATUS[Category.NOT_FOUND][0], [])
    if spec.content_type is not None:
        out.setdefault(STATUS[Category.TOO_LARGE][0], [])
    for reason, category in spec.reasons:
        out.setdefault(STATUS[category][0], []).append(reason)
    return dict(sorted(out.items()))


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _operation(spec: RouteSpec, names: Mapping[tuple[type[BaseModel], str], str]) -> dict[str, Any]:
    scope = f"{spec.permission.resource_type}.{spec.permission.letter}"
    access = f"Needs a token whose scopes allow `{spec.permission.letter}` on {spec.permission.resource_type}"
    access += " (e.g. `system/" + scope + "`)"
    if spec.operator_only:
        access += "; only the platform operator (a client or user without an institution) may call it"
    op: dict[str, Any] = {
        "operationId": _operation_id(spec),
        "summary": spec.summary.split(". ")[0][:120],
        "description": f"{spec.summary}\n\n{access}. Audited as `{spec.subtype}`.",
        "tags": [_tag(spec)],
        "security": [{"bearer": []}, {"session": []}],
        "x-permission": scope,
        "x-operator-only": spec.operator_only,
        "x-audit-subtype": spec.subtype,
    }
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in _PARAM.findall(spec.path)
    ]
    params += [
        {"name": name, "in": "query", "required": False, "description": doc, "schema": {"type": "string"}}
        for name, doc in spec.query
    ]
    if spec.idempotent:
        params.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": True,
                "description": "a retry with the same key and body gets the first reply byte for byte "
                "(with `Idempotent-Replayed: true`) and changes nothing; the same key with another "
                "body is refused (422 `idempotency-key-reused`). Keys are kept at least 24 h.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        )
    if params:
        op["parameters"] = params
    if spec.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(names[(spec.body, "validation")])}},
        }
    elif spec.content_type is not None:
        op["requestBody"] = {
            "required": True,
            "content": {spec.content_type: {"schema": {"type": "string"}}},
        }
    success: dict[str, Any] = {"description": "done" if spec.method != "GET" else "found"}
    schema = _ref(names[(spec.reply, "serialization")]) if spec.reply is not None else {"type": "object"}
    success["content"] = {"application/json": {"schema": schema}}
    responses: dict[str, Any] = {str(spec.status): success}
    for status, codes in _statuses(spec).items():
        text = next(title for s, _, title in STATUS.values() if s == status)
        if codes:
            text += ": reason " + ", ".join(f"`{c}`" for c in codes)
        responses[str(status)] = {
            "description": text,
            "content": {PROBLEM_JSON: {"schema": _ref("Problem")}},
        }
        if codes:
            responses[str(status)]["x-reasons"] = codes
    op["responses"] = responses
    return op


def document(specs: Sequence[RouteSpec]) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``specs``."""
    models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (Problem, "serialization")
    ]
    for spec in specs:
        if spec.body is not None:
            models.append((spec.body, "validation"))
        if spec.reply is not None:
            models.append((spec.reply, "serialization"))
    unique = list(dict.fromkeys(models))
    keys, defs = models_json_schema(unique, ref_template="#/components/schemas/{model}")
    names: dict[tuple[type[BaseModel], str], str] = {
        (model, mode): str(keys[(model, mode)]["$ref"]).rsplit("/", 1)[1] for model, mode in unique
    }
    paths: dict[str, dict[str, Any]] = {}
    for spec in specs:
        path = _PARAM.sub(r"{\1}", spec.path)
        paths.setdefault(path, {})[spec.method.lower()] = _operation(spec, names)
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Yilian JSON API",
            "version": __version__,
            "description": "The platform's JSON endpoints under /api (the FHIR API is at /fhir, "
            "described by /fhir/metadata). Errors are RFC 9457 problem documents; amounts are "
            "integer fen. See docs/api.md and docs/payments.md.",
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": name} for name in sorted({_tag(s) for s in specs})],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(defs.get("$defs", {}).items())),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an access token from POST /auth/token (OAuth2 client credentials, "
                    "SMART v2 scopes)",
                },
                "session": {"type": "apiKey", "in": "cookie", "name": "yilian_session"},
            },
        },
    }
