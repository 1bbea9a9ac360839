"""The write observer that fills the outbox: every FHIR write, in its own transaction.

For each write it finds the active destinations that may want it — every forwarding target,
and the subscriptions on the written type — with one indexed query, decides per subscription
whether the write matches (the search engine, under the owner's policy), and queues one
message per destination. It must run after the observers that derive access grants, so that
a write which itself gives the owner a reason to see the record (an encounter at their
hospital) counts.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, bindparam, or_, select

from yilian import mpi
from yilian.db import UnitOfWork
from yilian.db.statements import Statement
from yilian.exchange.outbound import owners, subscriptions
from yilian.exchange.outbound.identity import watch_identity_changes
from yilian.exchange.outbound.outbox import enqueue
from yilian.exchange.outbound.tables import destination
from yilian.fhir.store import repository as repo

# The destinations that may want a write of a type; asked on every write, so compiled once.
_D = destination.c
_WANTING = Statement(
    lambda _: select(_D.dest_id, _D.kind, _D.criteria, _D.owner).where(
        _D.active.is_(True),
        or_(_D.kind == "forward", and_(_D.kind == "subscription", _D.res_type == bindparam("res_type"))),
    )
)

# Never forwarded: a district's subscriptions are its own members' business (forwarding them
# would make the city notify the same hospitals a second time).
NOT_FORWARDED = frozenset({"Subscription"})


class OutboxObserver:
    def __init__(self) -> None:
        # A platform that queues writes for subscriptions also queues identity changes for
        # subscriptions on Person (the patient index's decisions are not FHIR writes).
        watch_identity_changes()

    def on_write(
        self,
        uow: UnitOfWork,
        ctx: Any,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any] | None,
        patient_key: str | None,
    ) -> None:
        self._queue(uow, ctx, resource_type, resource_id, resource)
        # Persons the patient index changed for this write (a Patient record linked, or given a
        # person of its own) are matched now that the grants the write derives exist.
        mpi.flush_person_changes(uow)

    def _queue(
        self,
        uow: UnitOfWork,
        ctx: Any,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any] | None,
    ) -> None:
        if resource_type == "Subscription":
            subscriptions.on_subscription_write(uow, ctx, resource_id, resource)
        rows = _WANTING.all(uow.conn, {"res_type": resource_type})
        if not rows:
            return
        version = _version(uow, resource_type, resource_id, resource)
        targets: list[str] = []
        for dest_id, kind, criteria, owner in rows:
            if kind == "forward":
                if resource_type not in NOT_FORWARDED:
                    targets.append(dest_id)
                continue
            if resource is None:
                continue  # a deletion matches no search (see docs/subscriptions.md)
            policy = owners.policy_of(uow, uow.db, owner)
            if policy is None:
                continue  # the owner was revoked
            _res_type, pairs = subscriptions.parse_criteria(criteria or "")
            if subscriptions.matches(uow, ctx, policy, pairs, resource_type, resource_id):
                targets.append(dest_id)
        enqueue(
            uow,
            sorted(targets),
            res_type=resource_type,
            res_id=resource_id,
            version=version,
            deleted=resource is None,
        )


def _version(uow: UnitOfWork, res_type: str, res_id: str, resource: dict[str, Any] | None) -> int:
    meta = resource.get("meta") if resource is not None else None
    if isinstance(meta, dict) and str(meta.get("versionId", "")).isdigit():
        return int(meta["versionId"])
    current = repo.get_current(uow.conn, res_type, res_id)
    return current.version if current is not None else 0


__all__ = ["NOT_FORWARDED", "OutboxObserver"]
