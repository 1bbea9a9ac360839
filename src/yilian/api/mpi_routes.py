"""``/api/mpi``: the data steward's desk of the patient index.

Review queue (list, accept, reject, with the field-by-field evidence), link and unlink a
record, merge and unmerge persons, a person's records and decision history, counts. Identity
decisions are region-wide, so every route belongs to the platform operator's stewards (an
institution is refused with 403 whatever the person or record, so nothing here tells it what
exists; it sees the persons of its own records through ``/fhir/Person``); every call needs a
scope on ``Person`` and is audited, and every decision records who and why.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from starlette.routing import BaseRoute

from yilian import mpi
from yilian.api.rest import ApiRoutes, Call, Permission, Reply, operator_only
from yilian.db import UnitOfWork
from yilian.kernel.errors import Category, YilianError

READ = Permission("r", "Person")
WRITE = Permission("u", "Person")


class Decision(BaseModel):
    reason: str = Field(min_length=3, max_length=2000, description="why: every identity decision is recorded")


class LinkBody(Decision):
    patient: str = Field(min_length=1, max_length=64, description="the Patient record's id")
    person: str = Field(min_length=1, max_length=36, description="the person it is")


class UnlinkBody(Decision):
    patient: str = Field(min_length=1, max_length=64)


class MergeBody(Decision):
    into: str = Field(min_length=1, max_length=36, description="the surviving person")


class UnmergeBody(Decision):
    merge_event: str = Field(min_length=1, max_length=36, description="the event id the merge returned")


def _int(call: Call[Any], name: str, default: int) -> int:
    raw = call.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise YilianError(Category.INVALID, f"{name} must be a whole number") from None


def _reviews(uow: UnitOfWork, call: Call[Any]) -> Reply:
    rows, total = mpi.list_reviews(
        uow,
        status=call.query.get("status", "open"),
        limit=_int(call, "limit", 50),
        offset=_int(call, "offset", 0),
    )
    patients = {r.patient_id for r in rows} | {r.candidate_patient_id for r in rows if r.candidate_patient_id}
    return Reply(
        {"total": total, "reviews": [r.to_json() for r in rows]},
        patients=sorted(patients),
        entity="mpi/reviews",
    )


def _accept(uow: UnitOfWork, call: Call[Decision]) -> Reply:
    r = mpi.accept_review(
        uow,
        review_id=call.params["review_id"],
        actor=call.principal.identity,
        reason=call.require_body().reason,
    )
    return Reply(r.to_json(), patients=[r.patient_id], entity=f"mpi/reviews/{r.review_id}")


def _reject(uow: UnitOfWork, call: Call[Decision]) -> Reply:
    r = mpi.reject_review(
        uow,
        review_id=call.params["review_id"],
        actor=call.principal.identity,
        reason=call.require_body().reason,
    )
    return Reply(r.to_json(), patients=[r.patient_id], entity=f"mpi/reviews/{r.review_id}")


def _link(uow: UnitOfWork, call: Call[LinkBody]) -> Reply:
    b = call.require_body()
    event = mpi.link_record(
        uow, patient_id=b.patient, person_id=b.person, actor=call.principal.identity, reason=b.reason
    )
    return Reply(
        {"event": event, "patient": b.patient, "person": mpi.person_of(uow, b.patient)},
        patients=[b.patient],
        entity=f"Patient/{b.patient}",
    )


def _unlink(uow: UnitOfWork, call: Call[UnlinkBody]) -> Reply:
    b = call.require_body()
    person = mpi.unlink_record(uow, patient_id=b.patient, actor=call.principal.identity, reason=b.reason)
    return Reply(
        {"patient": b.patient, "person": person}, patients=[b.patient], entity=f"Patient/{b.patient}"
    )


def _merge(uow: UnitOfWork, call: Call[MergeBody]) -> Reply:
    b = call.require_body()
    source = call.params["person_id"]
    event = mpi.merge_persons(
        uow, source_person=source, target_person=b.into, actor=call.principal.identity, reason=b.reason
    )
    return Reply(
        {"event": event, "merged": source, "into": b.into},
        patients=mpi.records_of(uow, b.into),
        entity=f"Person/{source}",
    )


def _unmerge(uow: UnitOfWork, call: Call[UnmergeBody]) -> Reply:
    b = call.require_body()
    event = mpi.unmerge(uow, event_id=b.merge_event, actor=call.principal.identity, reason=b.reason)
    person = call.params["person_id"]
    return Reply(
        {"event": event, "person": person, "records": mpi.records_of(uow, person)},
        patients=mpi.records_of(uow, person),
        entity=f"Person/{person}",
    )


def _person(uow: UnitOfWork, call: Call[Any]) -> Reply:
    view = mpi.person_view(uow, call.params["person_id"])
    body = {
        "person": view.person_id,
        "status": view.status,
        "merged_into": view.merged_into,
        "records": [{"patient": p, "how": how, "source": src} for p, how, src in view.records],
        "history": mpi.history(uow, person_id=view.person_id),
    }
    return Reply(body, patients=[p for p, _, _ in view.records], entity=f"Person/{view.person_id}")


def _counts(uow: UnitOfWork, call: Call[Any]) -> Reply:
    c = mpi.counts(uow)
    return Reply(
        {
            "persons": c.persons,
            "records": c.records,
            "open_reviews": c.open_reviews,
            "merged_persons": c.merged,
        },
        entity="mpi/counts",
    )


def routes(api: ApiRoutes) -> list[BaseRoute]:
    return [
        api.route(
            "/api/mpi/reviews",
            _reviews,
            method="GET",
            permission=READ,
            subtype="mpi-reviews",
            check=operator_only,
        ),
        api.route(
            "/api/mpi/reviews/{review_id}/accept",
            _accept,
            method="POST",
            permission=WRITE,
            body=Decision,
            subtype="mpi-review-accept",
            check=operator_only,
        ),
        api.route(
            "/api/mpi/reviews/{review_id}/reject",
            _reject,
            method="POST",
            permission=WRITE,
            body=Decision,
            subtype="mpi-review-reject",
            check=operator_only,
        ),
        api.route(
            "/api/mpi/links",
            _link,
            method="POST",
            permission=WRITE,
            body=LinkBody,
            subtype="mpi-link",
            check=operator_only,
        ),
        api.route(
            "/api/mpi/unlinks",
            _unlink,
            method="POST",
            permission=WRITE,
            body=UnlinkBody,
            subtype="mpi-unlink",
            check=operator_only,
        ),
        api.route(
            "/api/mpi/persons/{person_id}/merge",
            _merge,
            method="POST",
            permission=WRITE,
            body=MergeBody,
            subtype="mpi-merge",
            check=operator_only,
        ),
        api.route(
            "/api/mpi/persons/{person_id}/unmerge",
            _unmerge,
            method="POST",
            permission=WRITE,
            body=UnmergeBody,
            subtype="mpi-unmerge",
            check=operator_only,
        ),
        api.route(
            "/api/mpi/persons/{person_id}",
            _person,
            method="GET",
            permission=READ,
            subtype="mpi-person",
            check=operator_only,
        ),
        api.route(
            "/api/mpi/counts",
            _counts,
            method="GET",
            permission=READ,
            subtype="mpi-counts",
            check=operator_only,
        ),
    ]
