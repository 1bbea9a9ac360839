"""Subscriptions on Person: a hospital learns of the patient index's identity decisions about
its patients — a record linked, a merge and its undoing — through a real HTTP receiver, under
its own access (never of a person it has no reason to see), on both databases."""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.integration.cli.test_cli import yilian
from tests.integration.exchange.test_outbound import (
    SETTINGS,
    fast,
    org_client,
    put,
    queued,
    receiver,  # noqa: F401 — the fixture
    run_until,
    subscribe,
    subscription,
    tag,
    write,
)
from tests.support.receiver import Received, Receiver
from tests.support.server import database_url
from yilian import mpi
from yilian.db import Database, UnitOfWork
from yilian.exchange.outbound import DeliveryWorker


def patient(pid: str, org: str, *, family: str, given: str, birth: str, phone: str) -> dict[str, object]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"family": family, "given": [given]}],
        "gender": "male",
        "birthDate": birth,
        "telecom": [{"system": "phone", "value": phone}],
        "managingOrganization": {"reference": f"Organization/{org}"},
    }


def sent_to(receiver: Receiver, sub: str) -> list[Received]:  # noqa: F811 — the fixture's type
    return [r for r in receiver.received if r.headers.get("x-yilian-subscription") == f"Subscription/{sub}"]


def person_of(db: Database, pid: str) -> str:
    with UnitOfWork(db) as uow:
        found = mpi.person_of(uow, pid)
    assert found is not None
    return found


def test_a_hospital_is_told_when_its_patients_person_is_merged_and_unmerged(
    db: Database,
    receiver: Receiver,  # noqa: F811
) -> None:
    t = tag()
    hospital, other = org_client(db, f"h-{t}"), org_client(db, f"o-{t}")
    mine = subscribe(db, "Person", receiver.url, hospital, payload="application/fhir+json")
    theirs = subscribe(db, f"Person?link=Patient/b-{t}", receiver.url, other)
    # Two records of one man that the index cannot tell apart with certainty (different
    # phones, one without a birth date): two persons, until a steward merges them.
    put(
        db,
        patient(
            f"a-{t}",
            hospital.org_id or "",
            family="赵",
            given=f"建国{t}",
            birth="1961-02-03",
            phone="13900000001",
        ),
    )
    put(
        db,
        {
            "resourceType": "Patient",
            "id": f"b-{t}",
            "name": [{"family": "赵", "given": [f"建国{t}"]}],
            "managingOrganization": {"reference": f"Organization/{other.org_id}"},
        },
    )
    a, b = person_of(db, f"a-{t}"), person_of(db, f"b-{t}")
    assert a != b
    # A new record is a new person: each hospital hears of its own patient's only.
    assert [(rt, rid) for rt, rid, _ in queued(db, mine)] == [("Person", a)]
    assert [(rt, rid) for rt, rid, _ in queued(db, theirs)] == [("Person", b)]

    def told(sub: str, since: int) -> list[str]:
        return sorted(rid for _, rid, _ in queued(db, sub)[since:])

    with UnitOfWork(db, write=True) as uow:
        merge = mpi.merge_persons(uow, source_person=b, target_person=a, actor="steward", reason="same man")
    # Both persons changed. The hospital sees both: its patient's person, now holding both
    # records, and the merged-away person, which now points at it. The other hospital asked
    # about its own record only: it hears of the person that record now belongs to.
    assert told(mine, 1) == sorted([a, b])
    assert told(theirs, 1) == [a]

    with UnitOfWork(db, write=True) as uow:
        mpi.unmerge(uow, event_id=merge, actor="steward", reason="twins after all")
    # Undone: the hospital's person has its one record again (the other person, restored with
    # the other hospital's record, is no longer the hospital's business); the other hospital's
    # record is back with its own person.
    assert told(mine, 3) == [a]
    assert told(theirs, 2) == [b]

    worker = DeliveryWorker(db, fast())
    try:
        run_until(worker, lambda: len(sent_to(receiver, mine)) >= 3)
    finally:
        worker.http.close()
    sent = sent_to(receiver, mine)
    # Access is decided again at delivery: the merged-away person (message 3 or 2, whichever
    # sorted first) is the hospital's business no longer once the merge is undone, so it is
    # withheld; the rest go, in order.
    b_seq = next(seq for _, rid, seq in queued(db, mine) if rid == b)
    assert [r.headers["x-yilian-sequence"] for r in sent] == [str(n) for n in (1, 2, 3, 4) if n != b_seq]
    person = orjson.loads(sent[-1].body)
    # Sent as the person is at delivery: after the unmerge, the hospital's record alone.
    assert person["resourceType"] == "Person" and person["id"] == a
    assert [link["target"]["reference"] for link in person["link"]] == [f"Patient/a-{t}"]


def test_person_criteria_the_index_cannot_search_are_refused(db: Database) -> None:
    t = tag()
    hospital = org_client(db, f"h-{t}")
    r = write(db, "POST", "Subscription", subscription("Person?name=赵", "http://127.0.0.1:9/hook"), hospital)
    assert r.status == 422, r
    assert "Subscription.criteria" in orjson.dumps(r.json).decode()
    assert SETTINGS.virtual_types.get("Person") is not None


def test_a_merge_at_the_command_line_notifies_too(db: Database, tmp_path: Path) -> None:
    t = tag()
    hospital = org_client(db, f"h-{t}")
    sub = subscribe(db, "Person", "http://127.0.0.1:9/hook", hospital)
    put(
        db,
        patient(
            f"a-{t}",
            hospital.org_id or "",
            family="钱",
            given=f"一{t}",
            birth="1970-01-01",
            phone="13900000002",
        ),
    )
    put(
        db,
        patient(
            f"b-{t}",
            hospital.org_id or "",
            family="孙",
            given=f"二{t}",
            birth="1971-01-01",
            phone="13900000003",
        ),
    )
    a, b = person_of(db, f"a-{t}"), person_of(db, f"b-{t}")
    before = len(queued(db, sub))
    run = yilian("mpi", "merge", b, a, "--reason", "one resident", "-d", database_url(db), cwd=tmp_path)
    assert run.code == 0, run.err
    assert sorted(rid for _, rid, _ in queued(db, sub)[before:]) == sorted([a, b])
