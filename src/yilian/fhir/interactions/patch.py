"""patch: JSON Patch (RFC 6902) and FHIRPath Patch, applied to the current version."""

from __future__ import annotations

from typing import Any

from yilian.db import UnitOfWork
from yilian.fhir import patch as patching
from yilian.fhir.access import UPDATE, not_visible, require
from yilian.fhir.interactions import writes
from yilian.fhir.interactions.context import FhirContext
from yilian.fhir.interactions.outcome import WriteResult
from yilian.fhir.interactions.read import check_type
from yilian.fhir.interactions.search import find
from yilian.fhir.store import repository as repo
from yilian.kernel.errors import Category, YilianError

JSON_PATCH = "application/json-patch+json"


def apply(current: dict[str, Any], body: Any, *, json_patch: bool) -> dict[str, Any]:
    if json_patch:
        if not isinstance(body, list):
            raise YilianError(Category.INVALID, "a JSON Patch body is an array of operations")
        return patching.apply_json_patch(current, body)
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise YilianError(
            Category.INVALID,
            "a FHIRPath Patch body is a Parameters resource (or send application/json-patch+json for JSON Patch)",
        )
    return patching.apply_fhirpath_patch(current, body)


def patch(
    uow: UnitOfWork,
    ctx: FhirContext,
    body: Any,
    *,
    res_type: str,
    res_id: str,
    json_patch: bool,
    if_match: int | None = None,
) -> WriteResult:
    check_type(res_type)
    require(ctx.policy, UPDATE, res_type)
    current = repo.get_current(uow.conn, res_type, res_id, for_update=True)
    if current is None or not ctx.policy.can_see(uow, res_type, current.patient_key, res_id):
        raise not_visible(res_type, res_id)
    if current.deleted:
        raise YilianError(Category.GONE, f"{res_type}/{res_id} was deleted")
    if if_match is not None and if_match != current.version:
        raise YilianError(
            Category.PRECONDITION_FAILED,
            f"If-Match expected version {if_match} but {res_type}/{res_id} is at version {current.version}",
        )
    import orjson

    assert current.content is not None
    patched = apply(orjson.loads(current.content), body, json_patch=json_patch)
    if patched.get("resourceType") != res_type or patched.get("id") != res_id:
        raise YilianError(Category.UNPROCESSABLE, "a patch may not change the resource's type or id")
    resource = writes.check_body(patched, res_type)
    stored = writes.store_next(uow, ctx, current, resource, method="PATCH")
    return WriteResult(stored, created=False)


def conditional_patch(
    uow: UnitOfWork, ctx: FhirContext, body: Any, *, res_type: str, criteria: str, json_patch: bool
) -> WriteResult:
    matches = find(uow, ctx, res_type, criteria)
    if len(matches) != 1:
        raise YilianError(
            Category.PRECONDITION_FAILED if matches else Category.NOT_FOUND,
            f"conditional patch {criteria!r} matched {len(matches) if matches else 'no'} {res_type}",
        )
    return patch(uow, ctx, body, res_type=res_type, res_id=matches[0].res_id, json_patch=json_patch)
