"""update (with create-on-update for client ids) and conditional update."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError

from yilian.db import UnitOfWork
from yilian.fhir.access import CREATE, UPDATE, not_visible, require
from yilian.fhir.interactions import writes
from yilian.fhir.interactions.context import FhirContext
from yilian.fhir.interactions.outcome import WriteResult
from yilian.fhir.interactions.read import check_type
from yilian.fhir.interactions.search import find
from yilian.fhir.store import repository as repo
from yilian.kernel.errors import Category, Issue, YilianError
from yilian.kernel.ids import new_id


def _check_if_match(if_match: int | None, version: int | None, label: str) -> None:
    if if_match is not None and version != if_match:
        current = "does not exist" if version is None else f"is at version {version}"
        raise YilianError(
            Category.PRECONDITION_FAILED,
            f"If-Match expected version {if_match} but {label} {current}",
        )


def update(
    uow: UnitOfWork,
    ctx: FhirContext,
    body: Any,
    *,
    res_type: str,
    res_id: str,
    if_match: int | None = None,
    method: str = "PUT",
) -> WriteResult:
    check_type(res_type)
    resource = writes.check_body(body, res_type)
    body_id = resource.get("id")
    if body_id is None:
        raise YilianError(
            Category.INVALID,
            f"the resource has no id; an update must carry the id of the URL ({res_id})",
            issues=[Issue("Resource.id is required in an update", (f"{res_type}.id",), code="required")],
        )
    if body_id != res_id:
        raise YilianError(
            Category.INVALID,
            f"the resource id {body_id!r} does not match the URL's {res_id!r}",
            issues=[Issue("Resource.id does not match the URL", (f"{res_type}.id",))],
        )
    return _write(uow, ctx, resource, res_type=res_type, res_id=res_id, if_match=if_match, method=method)


def _write(
    uow: UnitOfWork,
    ctx: FhirContext,
    resource: dict[str, Any],
    *,
    res_type: str,
    res_id: str,
    if_match: int | None,
    method: str,
) -> WriteResult:
    label = f"{res_type}/{res_id}"
    current = repo.get_current(uow.conn, res_type, res_id, for_update=True)
    if current is not None and not ctx.policy.can_see(uow, res_type, current.patient_key, res_id):
        # In a record the caller may not see (current or deleted): 404, what a read or a patch of
        # it answers. It cannot be created either — ids are one namespace — so that the id is
        # taken is all a caller can learn, never whose, of which patient, or what it holds.
        raise not_visible(res_type, res_id)
    if current is None or current.deleted:
        require(ctx.policy, CREATE, res_type)
    else:
        require(ctx.policy, UPDATE, res_type)
    if current is None:
        _check_if_match(if_match, None, label)
        try:
            with writes.savepoint(uow):
                stored = writes.store_new(uow, ctx, resource, res_id=res_id, method=method)
            return WriteResult(stored, created=True)
        except IntegrityError:
            # Created concurrently by another request: this becomes an update of it.
            current = repo.get_current(uow.conn, res_type, res_id, for_update=True)
            if current is None:
                raise
    _check_if_match(if_match, None if current.deleted else current.version, label)
    stored = writes.store_next(uow, ctx, current, resource, method=method)
    return WriteResult(stored, created=current.deleted)


def conditional_update(
    uow: UnitOfWork,
    ctx: FhirContext,
    body: Any,
    *,
    res_type: str,
    criteria: str,
    if_match: int | None = None,
) -> WriteResult:
    check_type(res_type)
    resource = writes.check_body(body, res_type)
    matches = find(uow, ctx, res_type, criteria)
    if len(matches) > 1:
        raise YilianError(
            Category.PRECONDITION_FAILED, f"conditional update {criteria!r} matches more than one {res_type}"
        )
    body_id = resource.get("id")
    if not matches:
        return _write(
            uow, ctx, resource, res_type=res_type, res_id=body_id or new_id(), if_match=if_match, method="PUT"
        )
    found = matches[0]
    if body_id is not None and body_id != found.res_id:
        raise YilianError(
            Category.INVALID,
            f"conditional update matched {res_type}/{found.res_id} but the resource says id {body_id!r}",
        )
    resource["id"] = found.res_id
    return _write(uow, ctx, resource, res_type=res_type, res_id=found.res_id, if_match=if_match, method="PUT")
