"""Version stamps of stored resources: what a system's cache of FHIR facts checks before use.

A stamp is (id, version, lastUpdated µs) of each current resource. Any write — by any process —
changes it: a new version, a delete, a new resource, a reference moved to or from a target.
``lastUpdated`` is part of it so that a database restored from a backup and written again (the
same version numbers, other content) is not taken for what was cached. One indexed query
answers a resource's stamp and those of every resource referring to a target through a search
parameter (the same rows the reference search finds), so a cache hit costs one round trip.
"""

from __future__ import annotations

from sqlalchemy import String, bindparam, false, select, union_all

from yilian.db import UnitOfWork
from yilian.db.statements import Statement
from yilian.fhir.interactions.writes import flush
from yilian.fhir.store.tables import idx_reference, resource

Stamp = tuple[tuple[str, int, int], ...]  # (resource id, version, lastUpdated µs), sorted

_r, _x = resource, idx_reference
_ONE = select(bindparam("one_kind", type_=String), _r.c.res_id, _r.c.version, _r.c.last_updated).where(
    _r.c.res_type == bindparam("one_type", type_=String),
    _r.c.res_id == bindparam("one_id", type_=String),
    _r.c.deleted == false(),
)
_REFERRING = (
    select(bindparam("ref_kind", type_=String), _r.c.res_id, _r.c.version, _r.c.last_updated)
    .select_from(_x.join(_r, _r.c.pk == _x.c.resource_pk))
    .where(
        _x.c.res_type == bindparam("ref_type", type_=String),
        _x.c.param == bindparam("ref_param", type_=String),
        _x.c.target_type == bindparam("target_type", type_=String),
        _x.c.target_id == bindparam("target_id", type_=String),
        _r.c.deleted == false(),
    )
)
_ONE_ONLY = Statement(lambda _: _ONE)
_ONE_AND_REFERRING = Statement(lambda _: union_all(_ONE, _REFERRING))


def stamps(
    uow: UnitOfWork,
    *,
    of: tuple[str, str],
    referring: tuple[str, str, str, str] | None = None,
) -> tuple[Stamp, Stamp]:
    """(the stamp of resource ``of`` = (type, id), empty when it is missing or deleted; the
    stamps of every current resource of type T whose parameter P refers to ``target_type/
    target_id``, for ``referring`` = (T, P, target_type, target_id), else empty) as stored now,
    this unit of work's own buffered writes included."""
    flush(uow)  # buffered index and version rows must be in the tables for the stamps to see them
    params = {"one_kind": "O", "one_type": of[0], "one_id": of[1]}
    statement = _ONE_ONLY
    if referring is not None:
        ref_type, ref_param, target_type, target_id = referring
        params |= {
            "ref_kind": "R",
            "ref_type": ref_type,
            "ref_param": ref_param,
            "target_type": target_type,
            "target_id": target_id,
        }
        statement = _ONE_AND_REFERRING
    one: list[tuple[str, int, int]] = []
    refs: list[tuple[str, int, int]] = []
    for kind, res_id, version, last_updated in statement.all(uow.conn, params):
        (one if kind == "O" else refs).append((str(res_id), int(version), int(last_updated)))
    return tuple(one), tuple(sorted(refs))
