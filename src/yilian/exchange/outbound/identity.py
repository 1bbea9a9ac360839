"""Subscriptions on ``Person``: member hospitals learn when the patient index changes a person.

A hospital subscribes with criteria on ``Person`` — ``Person`` alone (every person it can see:
one with a record it has a reason to see), ``Person?link=Patient/<id>`` or
``Person?identifier=<system>|<value>`` — and is notified whenever an identity decision changes
such a person: a record linked to it automatically or by a steward, unlinked, the person merged
into another or the merge undone, a new person for a new record. Matching uses the patient
index's own ``Person`` search under the subscriber's access policy, like any subscription, and
the notification carries the ``Person`` as it is when delivered (it is computed, not stored, so
there are no versions of it to send).

Persons are not forwarded to a city node: a district's identity decisions are its own, and the
city's patient index makes its own from the records forwarded to it.
"""

from __future__ import annotations

from sqlalchemy import select

from yilian import mpi
from yilian.db import UnitOfWork
from yilian.db.statements import Statement
from yilian.exchange.outbound import owners, subscriptions
from yilian.exchange.outbound.outbox import enqueue
from yilian.exchange.outbound.tables import destination
from yilian.fhir.interactions.context import FhirContext, FhirSettings

_CTX = FhirContext(settings=FhirSettings(virtual_types=mpi.virtual_types()))


# Asked whenever the patient index changes a person (every new Patient): compiled once.
_PERSON_SUBSCRIPTIONS = Statement(
    lambda _: select(destination.c.dest_id, destination.c.criteria, destination.c.owner).where(
        destination.c.active.is_(True),
        destination.c.kind == "subscription",
        destination.c.res_type == "Person",
    )
)


def person_changed(uow: UnitOfWork, persons: frozenset[str]) -> None:
    """Queue a notification of each changed person for every Person subscription it matches."""
    rows = _PERSON_SUBSCRIPTIONS.all(uow.conn, {})
    if not rows:
        return
    for person in sorted(persons):
        targets: list[str] = []
        for dest_id, criteria, owner in rows:
            policy = owners.policy_of(uow, uow.db, owner)
            if policy is None:
                continue  # the owner was revoked
            _res_type, pairs = subscriptions.parse_criteria(criteria or "")
            if subscriptions.matches(uow, _CTX, policy, pairs, "Person", person):
                targets.append(dest_id)
        enqueue(uow, sorted(targets), res_type="Person", res_id=person, version=0, deleted=False)


def watch_identity_changes() -> None:
    """Have the patient index tell :func:`person_changed` of every change (idempotent)."""
    mpi.on_person_change(person_changed)
