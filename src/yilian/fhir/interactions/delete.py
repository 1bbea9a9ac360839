"""delete (a versioned tombstone) and conditional delete."""

from __future__ import annotations

from yilian.db import UnitOfWork
from yilian.fhir.access import DELETE, require
from yilian.fhir.interactions import writes
from yilian.fhir.interactions.context import FhirContext
from yilian.fhir.interactions.outcome import Resource
from yilian.fhir.interactions.read import check_type
from yilian.fhir.interactions.search import find
from yilian.fhir.store import repository as repo
from yilian.kernel.errors import Category, YilianError


def delete(uow: UnitOfWork, ctx: FhirContext, *, res_type: str, res_id: str) -> Resource | None:
    """Delete the resource; deleting what does not exist (or is already deleted) is a success with nothing done."""
    check_type(res_type)
    require(ctx.policy, DELETE, res_type)
    current = repo.get_current(uow.conn, res_type, res_id, for_update=True)
    if (
        current is None
        or current.deleted
        or not ctx.policy.can_see(uow, res_type, current.patient_key, res_id)
    ):
        return None
    return writes.store_next(uow, ctx, current, None, method="DELETE")


def conditional_delete(uow: UnitOfWork, ctx: FhirContext, *, res_type: str, criteria: str) -> Resource | None:
    check_type(res_type)
    matches = find(uow, ctx, res_type, criteria)
    if len(matches) > 1:
        raise YilianError(
            Category.PRECONDITION_FAILED,
            f"conditional delete {criteria!r} matches more than one {res_type}; this server deletes one at a time",
        )
    if not matches:
        return None
    return delete(uow, ctx, res_type=res_type, res_id=matches[0].res_id)
