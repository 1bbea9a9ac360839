"""Writing many resources at once (``$import``, ``yilian import``): the write pipeline, batched.

Every resource goes through what a single write does — validation, stamping, index rows,
patient compartment, sealing, the write observers (patient index, access grants), and the
reference check — but the SQL is done per chunk, not per resource: one lookup of which ids
exist, one of which referenced resources exist, one multi-row INSERT of the new resources
(returning their keys), and one bulk insert per version and index table (``COPY`` on
PostgreSQL). That is what makes a bulk load cost its validation and indexing, not its
round trips.

References are checked before anything is written: a resource whose target is neither
stored nor in the chunk is refused with the same ``not-found`` issue a single write gets
(callers try those again once the rest is in). Resources already stored become their next
version through the ordinary update path. If anything in the batched write is refused late
(an observer refusing a Patient), the chunk is rolled back to its savepoint and written one
resource at a time, so one bad resource costs only itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from yilian.db import UnitOfWork
from yilian.db.dialect import insert_tables
from yilian.fhir.access import CREATE, SEVERAL_PATIENTS, UPDATE, Write
from yilian.fhir.interactions import writes
from yilian.fhir.interactions.context import FhirContext
from yilian.fhir.interactions.update import update as update_one
from yilian.fhir.search.indexer import IndexRows, extract
from yilian.fhir.store import repository as repo
from yilian.fhir.store.tables import INDEX_TABLES, resource, resource_version
from yilian.kernel.errors import Category, YilianError
from yilian.kernel.ids import is_valid_fhir_id, new_id


@dataclass
class _Prepared:
    index: int
    res_type: str
    res_id: str
    resource: dict[str, Any]
    method: str
    refs: dict[tuple[str, str], str]  # target -> where (for the not-found message)


def _prepare(i: int, doc: Any) -> _Prepared:
    if not isinstance(doc, dict):
        raise YilianError(
            Category.INVALID, f"not a FHIR resource (a JSON object) but a JSON {type(doc).__name__}"
        )
    rid = doc.get("id")
    if rid is not None and (not isinstance(rid, str) or not is_valid_fhir_id(rid)):
        # Checked before validation, as a single PUT would: the id names the resource.
        raise YilianError(
            Category.INVALID, f"id {rid!r} is not a valid FHIR id ([A-Za-z0-9-.], 1-64 characters)"
        )
    res = writes.check_body(doc)
    rtype: str = res["resourceType"]
    if rtype == "Patient" and rid == SEVERAL_PATIENTS:
        raise YilianError(Category.INVALID, f"the id {SEVERAL_PATIENTS!r} is reserved; choose another")
    if rid is None:
        rid, method = new_id(), "POST"
    else:
        method = "PUT"
    refs: dict[tuple[str, str], str] = {}
    for t, tid, raw, path in writes.local_references(res, rtype):
        if (t, tid) != (rtype, rid):
            refs.setdefault((t, tid), f"{path} ({raw})")
    return _Prepared(i, rtype, rid, res, method, refs)


def write_many(uow: UnitOfWork, ctx: FhirContext, docs: Sequence[Any]) -> list[YilianError | None]:
    """Write ``docs`` (update-as-create by id, create otherwise); one result per doc, None when written.

    The caller owns the transaction; nothing here commits.
    """
    results: list[YilianError | None] = [None] * len(docs)
    prepared: list[_Prepared] = []
    seen: set[tuple[str, str]] = set()
    later: list[_Prepared] = []
    for i, doc in enumerate(docs):
        try:
            p = _prepare(i, doc)
            writes.before_store(uow, ctx, p.res_type, p.resource)
        except YilianError as err:
            results[i] = err
            continue
        if (p.res_type, p.res_id) in seen:
            # The same resource twice in one chunk: the later one is a second version, which
            # the single-write path writes after the batch.
            later.append(p)
            continue
        seen.add((p.res_type, p.res_id))
        prepared.append(p)
    if prepared:
        _write_prepared(uow, ctx, prepared, results)
    for p in later:
        results[p.index] = _one(uow, ctx, p)
    return results


def _write_prepared(
    uow: UnitOfWork, ctx: FhirContext, prepared: list[_Prepared], results: list[YilianError | None]
) -> None:
    writes.flush(uow)
    if ctx.policy.row_filter(resource) is not None:
        # A caller who may not see everything writes one resource at a time, each with every
        # check of a single write (what it may refer to is what it may see).
        for p in prepared:
            results[p.index] = _one(uow, ctx, p)
        return
    if ctx.settings.enforce_referential_integrity:
        prepared = _drop_dangling(uow, prepared, results)
    try:
        with writes.savepoint(uow) as rollback:
            try:
                _write_batch(uow, ctx, prepared)
                writes.flush(uow)
            except YilianError:
                rollback()
                raise
    except (YilianError, IntegrityError):
        for p in prepared:
            results[p.index] = _one(uow, ctx, p)


def _one(uow: UnitOfWork, ctx: FhirContext, p: _Prepared) -> YilianError | None:
    """The single-write path in a savepoint of its own (a refused resource costs only itself)."""
    try:
        with writes.savepoint(uow) as rollback:
            try:
                update_one(uow, ctx, p.resource, res_type=p.res_type, res_id=p.res_id, method=p.method)
                writes.finish(uow, ctx)
            except YilianError:
                rollback()
                raise
    except YilianError as err:
        return err
    return None


def _drop_dangling(
    uow: UnitOfWork, prepared: list[_Prepared], results: list[YilianError | None]
) -> list[_Prepared]:
    """Refuse resources whose references lead nowhere (neither stored nor in the chunk), until none do."""
    targets = {t for p in prepared for t in p.refs}
    in_chunk = {(p.res_type, p.res_id) for p in prepared}
    stored = repo.existing(uow.conn, targets - in_chunk) if targets - in_chunk else set()
    keep = prepared
    while True:
        known = stored | {(p.res_type, p.res_id) for p in keep}
        still: list[_Prepared] = []
        for p in keep:
            missing = [(t, where) for t, where in p.refs.items() if t not in known]
            if missing:
                results[p.index] = writes.missing_error(missing)
            else:
                still.append(p)
        if len(still) == len(keep):
            return still
        keep = still


def _write_batch(uow: UnitOfWork, ctx: FhirContext, prepared: list[_Prepared]) -> None:
    conn = uow.conn
    policy = ctx.policy
    existing = repo.existing(conn, [(p.res_type, p.res_id) for p in prepared], deleted=True)
    fresh: list[_Prepared] = []
    for p in prepared:
        if (p.res_type, p.res_id) in existing:
            # Already stored (a re-import): the next version, through the checked update path.
            update_one(uow, ctx, p.resource, res_type=p.res_type, res_id=p.res_id, method=p.method)
        else:
            if not policy.allows(CREATE, p.res_type) and not policy.allows(UPDATE, p.res_type):
                raise YilianError(
                    Category.FORBIDDEN, f"the access token does not allow create of {p.res_type}"
                )
            fresh.append(p)
    if not fresh:
        return
    last = writes.now_us()
    staged: list[tuple[_Prepared, int, bytes, IndexRows]] = []
    for p in fresh:
        content = writes.stamp(p.resource, p.res_id, 1, last)
        rows = extract(p.resource, p.res_type, base_url=ctx.base_url)
        staged.append((p, last, content, rows))
    # The patient compartment: named by the resource itself, else by what it refers to (in the
    # chunk or stored), as a single write decides it.
    pkeys: dict[tuple[str, str], str | None] = {}
    pending: list[int] = []
    for n, (p, _lu, _c, rows) in enumerate(staged):
        pkeys[(p.res_type, p.res_id)] = writes.patient_key(p.res_type, p.res_id, rows)
        if pkeys[(p.res_type, p.res_id)] is None and writes.in_patient_compartment(p.res_type):
            pending.append(n)
    if pending:
        lookups = {t for n in pending for t in staged[n][0].refs if t not in pkeys}
        found = writes.stored_patient_keys(conn, lookups) if lookups else {}
        for n in pending:
            p = staged[n][0]
            for t in p.refs:
                key = pkeys.get(t) if t in pkeys else found.get(t)
                if key:
                    pkeys[(p.res_type, p.res_id)] = key
                    break
    # Outside the compartment: the patients a resource names, directly or through its targets.
    others = [
        (p, writes.named_patients(p.res_type, p.res_id, p.resource, ctx.base_url))
        for p, *_ in staged
        if writes.holds_patient_data(p.res_type)
    ]
    lookups = {t for _, named in others for t in named.targets if t not in pkeys}
    stored_keys = writes.stored_patient_keys(conn, lookups) if lookups else {}
    patients: dict[tuple[str, str], frozenset[str]] = {
        k: frozenset({v}) if v and v != SEVERAL_PATIENTS else frozenset() for k, v in pkeys.items()
    }
    for p, named in others:
        known = {t: pkeys[t] if t in pkeys else stored_keys.get(t) for t in named.targets}
        key, names = writes.key_of(named, known)
        pkeys[(p.res_type, p.res_id)], patients[(p.res_type, p.res_id)] = key, names
    for p, *_ in staged:
        k = (p.res_type, p.res_id)
        writes.authorize(
            uow, ctx, Write(p.res_type, p.res_id, p.resource, pkeys[k], patients[k], is_new=True)
        )
    new_rows: list[dict[str, Any]] = []
    for p, lu, content, rows in staged:
        stored = writes.for_storage(uow, p.resource, content, rows)
        new_rows.append(
            {
                "res_type": p.res_type,
                "res_id": p.res_id,
                "version": 1,
                "last_updated": lu,
                "deleted": False,
                "patient_key": pkeys[(p.res_type, p.res_id)],
                "content": stored,
            }
        )
    result = conn.execute(insert(resource).returning(resource.c.pk, sort_by_parameter_order=True), new_rows)
    pks = [int(x) for x in result.scalars().all()]
    versions: list[dict[str, Any]] = []
    index: dict[str, list[dict[str, Any]]] = {}
    touched: set[str] = uow.state.setdefault(writes.TOUCHED, set())
    for pk, row, (p, _lu, _c, rows) in zip(pks, new_rows, staged, strict=True):
        versions.append(
            repo.version_row(
                pk, p.res_type, p.res_id, 1, row["last_updated"], row["content"], p.method, row["patient_key"]
            )
        )
        for kind, kind_rows in rows.items():
            for r in kind_rows:
                r["resource_pk"] = pk
            index.setdefault(kind, []).extend(kind_rows)
        touched.update(patients[(p.res_type, p.res_id)])
    insert_tables(conn, [(resource_version, versions), *((INDEX_TABLES[k], r) for k, r in index.items())])
    # The observers (patient index, access grants) in their order, each seeing every new resource.
    for observer in ctx.settings.observers:
        many = getattr(observer, "on_new_many", None)
        if many is not None:
            many(
                uow,
                ctx,
                [
                    (p.res_type, p.res_id, p.resource, row["patient_key"])
                    for p, row in zip(fresh, new_rows, strict=True)
                ],
            )
            continue
        for p, row in zip(fresh, new_rows, strict=True):
            observer.on_write(uow, ctx, p.res_type, p.res_id, p.resource, row["patient_key"])


__all__ = ["write_many"]
