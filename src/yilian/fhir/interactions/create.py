"""create, with conditional create (``If-None-Exist``) backed by a unique claim."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qsl, urlencode

from yilian.db import UnitOfWork
from yilian.fhir.access import CREATE, require
from yilian.fhir.interactions import writes
from yilian.fhir.interactions.context import FhirContext
from yilian.fhir.interactions.outcome import WriteResult
from yilian.fhir.interactions.read import check_type
from yilian.fhir.interactions.search import find
from yilian.fhir.store import repository as repo
from yilian.fhir.store import sealing
from yilian.kernel.errors import Category, YilianError
from yilian.kernel.ids import new_id


def normalize_criteria(criteria: str) -> str:
    """Equal criteria written differently (order, encoding) claim the same key."""
    criteria = criteria.lstrip("?")
    if "?" in criteria:
        criteria = criteria.split("?", 1)[1]
    pairs = sorted(parse_qsl(criteria, keep_blank_values=True))
    return urlencode(pairs)


def create(
    uow: UnitOfWork,
    ctx: FhirContext,
    body: Any,
    *,
    res_type: str,
    if_none_exist: str | None = None,
    res_id: str | None = None,
) -> WriteResult:
    check_type(res_type)
    require(ctx.policy, CREATE, res_type)
    resource = writes.check_body(body, res_type)
    if if_none_exist is None:
        stored = writes.store_new(uow, ctx, resource, res_id=res_id or new_id(), method="POST")
        return WriteResult(stored, created=True)
    return conditional_create(uow, ctx, resource, res_type=res_type, criteria=if_none_exist, res_id=res_id)


def conditional_create(
    uow: UnitOfWork,
    ctx: FhirContext,
    resource: dict[str, Any],
    *,
    res_type: str,
    criteria: str,
    res_id: str | None = None,
) -> WriteResult:
    norm = normalize_criteria(criteria)
    if not norm:
        raise YilianError(Category.INVALID, "If-None-Exist has no search criteria")
    matches = find(uow, ctx, res_type, norm)
    if len(matches) > 1:
        raise YilianError(
            Category.PRECONDITION_FAILED,
            f"If-None-Exist {criteria!r} matches more than one {res_type}; be more specific",
        )
    if matches:
        return WriteResult(matches[0], created=False, noop=True)
    # Criteria often hold an ID number: with a keyring the claim keeps only a keyed hash of them.
    keyring = sealing.keyring_for(uow.conn.engine)
    if keyring is not None:
        digest, kept = keyring.blind(norm, kind="exact"), "(sealed)"
    else:
        digest, kept = hashlib.sha256(norm.encode()).hexdigest(), norm
    with writes.savepoint(uow) as rollback:
        stored = writes.store_new(uow, ctx, resource, res_id=res_id or new_id(), method="POST")
        if repo.claim(uow.conn, res_type, digest, kept, stored.pk):
            return WriteResult(stored, created=True)
        # Another request holds the claim. Wait for it (row lock), then look again: if its
        # resource still matches, it won and ours goes; if not, the claim is stale and ours takes it.
        repo.lock_claim(uow.conn, res_type, digest)
        others = [m for m in find(uow, ctx, res_type, norm, limit=3) if m.pk != stored.pk]
        if not others:
            repo.take_over_claim(uow.conn, res_type, digest, stored.pk)
            return WriteResult(stored, created=True)
        rollback()
    if len(others) > 1:
        raise YilianError(
            Category.PRECONDITION_FAILED,
            f"If-None-Exist {criteria!r} matches more than one {res_type}; be more specific",
        )
    return WriteResult(others[0], created=False, noop=True)
