"""read and vread."""

from __future__ import annotations

from yilian.db import UnitOfWork
from yilian.fhir.access import READ, not_visible, require
from yilian.fhir.interactions import writes
from yilian.fhir.interactions.context import FhirContext
from yilian.fhir.interactions.outcome import Resource
from yilian.fhir.model import model
from yilian.fhir.store import repository as repo
from yilian.kernel.errors import Category, YilianError


def check_type(res_type: str) -> None:
    if not model().is_resource_type(res_type):
        raise YilianError(Category.NOT_FOUND, f"unknown resource type {res_type!r}")


def read(uow: UnitOfWork, ctx: FhirContext, res_type: str, res_id: str) -> Resource:
    """The current version; NOT_FOUND if it never existed (or the caller may not see it), GONE if
    deleted (a deletion is in the compartment of what it deleted: only those who could see the
    resource learn that it was deleted)."""
    check_type(res_type)
    require(ctx.policy, READ, res_type)
    return _found(ctx, uow, repo.get_current(uow.conn, res_type, res_id), res_type, res_id)


def read_fast(reader: repo.FastReader, ctx: FhirContext, res_type: str, res_id: str) -> Resource:
    """:func:`read` on the short path for reads by id (see ``FastReader``)."""
    check_type(res_type)
    require(ctx.policy, READ, res_type)
    # No unit of work on the short path: the policy looks up what it needs on its own.
    return _found(ctx, None, reader.current(res_type, res_id), res_type, res_id)


def _found(
    ctx: FhirContext, uow: UnitOfWork | None, current: repo.StoredVersion | None, res_type: str, res_id: str
) -> Resource:
    if current is None or not ctx.policy.can_see(uow, res_type, current.patient_key, res_id):
        raise not_visible(res_type, res_id)
    if current.deleted:
        raise YilianError(Category.GONE, f"{res_type}/{res_id} was deleted (version {current.version})")
    return Resource.of(current)


def vread(uow: UnitOfWork, ctx: FhirContext, res_type: str, res_id: str, version: str) -> Resource:
    check_type(res_type)
    require(ctx.policy, READ, res_type)
    writes.flush(uow)
    try:
        number = int(version)
    except ValueError:
        raise YilianError(Category.NOT_FOUND, f"{res_type}/{res_id} has no version {version!r}") from None
    found = repo.get_version(uow.conn, res_type, res_id, number)
    if found is not None and not ctx.policy.can_see(uow, res_type, found.patient_key, res_id):
        raise not_visible(res_type, res_id)
    if found is None:
        current = repo.get_current(uow.conn, res_type, res_id)
        # Which versions a resource has is told only to those who may see it.
        if current is None or not ctx.policy.can_see(uow, res_type, current.patient_key, res_id):
            raise not_visible(res_type, res_id)
        raise YilianError(Category.NOT_FOUND, f"{res_type}/{res_id} has no version {version}")
    if found.deleted:
        raise YilianError(Category.GONE, f"version {version} of {res_type}/{res_id} is a deletion")
    return Resource.of(found)
