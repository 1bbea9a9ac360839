"""Writing needs the same reason as reading (docs/decisions/0015), patient data outside the
compartment is decided like the patient's record, and deletions stay in the record they came
from. Every refusal is compared with what the same request about a patient who does not exist
gets: they must not be told apart.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.integration.security.lookalikes import (
    ID_A,
    ID_B,
    as_,
    consent,
    encounter,
    flagged,
    found,
    grant_orgs,
    observation,
    operator,
    org,
    patient,
    put,
    resident,
    same_answer,
    seed,
)
from yilian.db import UnitOfWork

# --- writing does not create access --------------------------------------------------------


def test_writing_into_a_record_without_reason_is_answered_as_if_the_patient_did_not_exist(
    uow: UnitOfWork,
) -> None:
    seed(uow)
    b = org("org-b")
    mine = as_(uow, b, "POST", "Observation", observation("pa"))
    ghost = as_(uow, b, "POST", "Observation", observation("nobody-1"))
    assert mine.status == 422
    same_answer(mine, ghost, "pa", "nobody-1")
    assert as_(uow, b, "PUT", "Observation/b-new", observation("pa", "b-new")).status == 422
    # Moving its own resource into the other record is the same write.
    assert as_(uow, b, "PUT", "Observation/obs-pb", observation("pa", "obs-pb")).status == 422

    # In a transaction, whatever else it holds (a patient that is not there, sorted first).
    def transaction(*pids: str) -> dict[str, Any]:
        return {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"request": {"method": "POST", "url": "Observation"}, "resource": observation(p)}
                for p in pids
            ],
        }

    mine = as_(uow, b, "POST", "", transaction("pa", "aaa-nobody"))
    assert mine.status == 422
    same_answer(mine, as_(uow, b, "POST", "", transaction("nobody-3", "aaa-nobody")), "pa", "nobody-3")
    # Named through what it refers to: that is what "does not exist", never the patient behind it.
    prov = {
        "resourceType": "Provenance",
        "target": [{"reference": "Observation/obs-pa"}],
        "recorded": "2026-01-01T00:00:00Z",
        "agent": [{"who": {"reference": "Organization/org-b"}}],
    }
    mine = as_(uow, b, "POST", "Provenance", prov)
    ghost = as_(uow, b, "POST", "Provenance", {**prov, "target": [{"reference": "Observation/obs-nobody"}]})
    same_answer(mine, ghost, "obs-pa", "obs-nobody")
    assert "Patient/pa" not in str(mine.json)
    # A refused write leaves nothing its own transaction could build on.
    assert as_(uow, b, "POST", "", transaction("pa", "pa")).status == 422
    # Nothing was granted: the record stays closed.
    assert "org-b" not in grant_orgs(uow, "pa")
    assert as_(uow, b, "GET", "Patient/pa").status == 404
    assert as_(uow, b, "GET", "Patient/pa/$everything").status == 404
    assert as_(uow, org("org-a"), "GET", "Observation?subject=Patient/pa").json["total"] == 1
    # In a transaction that also registers the visit at B, the observation is part of that visit.
    visit = transaction("pa")
    visit["entry"].append(
        {
            "request": {"method": "PUT", "url": "Encounter/enc-pa-at-b"},
            "resource": encounter("enc-pa-at-b", "pa", "org-b"),
        }
    )
    assert as_(uow, b, "POST", "", visit).status == 200
    assert [e["entity"] for e in flagged(uow, "reason-claimed")] == ["Encounter/enc-pa-at-b"]


def test_a_reference_into_a_record_without_reason_is_a_reference_to_nothing(uow: UnitOfWork) -> None:
    seed(uow)
    b = org("org-b")
    mine = as_(
        uow, b, "POST", "Observation", observation("pb", hasMember=[{"reference": "Observation/obs-pa"}])
    )
    ghost = as_(
        uow, b, "POST", "Observation", observation("pb", hasMember=[{"reference": "Observation/obs-nobody"}])
    )
    assert mine.status == 422
    same_answer(mine, ghost, "obs-pa", "obs-nobody")
    # A resource B may not see that still refers to B's own is not named when B deletes it.
    put(uow, {"resourceType": "Practitioner", "id": "dr-b"}, b)
    put(uow, observation("pa", "obs-pa", performer=[{"reference": "Practitioner/dr-b"}]))
    refused = as_(uow, b, "DELETE", "Practitioner/dr-b")
    assert refused.status == 409 and "obs-pa" not in str(refused.json)


def test_a_front_desk_encounter_opens_the_record_and_is_flagged_for_review(uow: UnitOfWork) -> None:
    seed(uow)
    c = org("org-c")
    # Naming another institution as the place of care gives C nothing: refused like any other write.
    other = as_(
        uow, c, "POST", "Encounter", {k: v for k, v in encounter("x", "pa", "org-a").items() if k != "id"}
    )
    assert other.status == 422
    assert (
        as_(
            uow,
            c,
            "POST",
            "ServiceRequest",
            {
                "resourceType": "ServiceRequest",
                "status": "active",
                "intent": "order",
                "subject": {"reference": "Patient/pa"},
                "performer": [{"reference": "Organization/org-c"}],
            },
        ).status
        == 422
    )
    assert not flagged(uow, "reason-claimed")
    # The patient walks into C: C registers the visit, and sees the record from then on.
    assert as_(uow, c, "PUT", "Encounter/enc-pa-at-c", encounter("enc-pa-at-c", "pa", "org-c")).status == 201
    assert as_(uow, c, "GET", "Patient/pa").status == 200
    [event] = flagged(uow, "reason-claimed")
    assert event["flagged"] and event["org_id"] == "org-c" and event["patient_keys"] == "pa"
    assert event["entity"] == "Encounter/enc-pa-at-c"
    # Through a role, an episode or an appointment at C likewise; A's own writes are never flagged.
    ep = {
        "resourceType": "EpisodeOfCare",
        "status": "active",
        "patient": {"reference": "Patient/pb"},
        "careManager": {"reference": "PractitionerRole/role-c"},
    }
    assert as_(uow, c, "POST", "EpisodeOfCare", ep).status == 201
    assert as_(uow, org("org-a"), "POST", "Observation", observation("pa")).status == 201
    assert sorted(e["patient_keys"] for e in flagged(uow, "reason-claimed")) == ["pa", "pb"]


def test_a_new_patient_and_their_data_are_written_together(uow: UnitOfWork) -> None:
    seed(uow)
    c = org("org-c")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            # POSTs run before PUTs: the observation names a patient that does not exist yet.
            {"request": {"method": "POST", "url": "Observation"}, "resource": observation("pc")},
            {"request": {"method": "PUT", "url": "Patient/pc"}, "resource": patient("pc", None)},
        ],
    }
    done = as_(uow, c, "POST", "", bundle)
    assert done.status == 200, done
    assert as_(uow, c, "GET", "Observation?subject=Patient/pc").json["total"] == 1
    assert as_(uow, org("org-b"), "GET", "Patient/pc").status == 404
    assert not flagged(uow, "reason-claimed")
    # A patient that is never created: refused as a reference to nothing.
    lone = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "POST", "url": "Observation"}, "resource": observation("pz")}],
    }
    assert as_(uow, c, "POST", "", lone).status == 422
    # The id of a patient that exists (or existed) cannot be registered again by someone else.
    assert as_(uow, c, "PUT", "Patient/pa", patient("pa", None)).status == 404
    assert as_(uow, c, "PUT", "Patient/several.patients", patient("several.patients", None)).status == 400


def test_consent_is_written_by_the_patient_the_operator_or_an_institution_with_a_reason(
    uow: UnitOfWork,
) -> None:
    seed(uow)
    a, c = org("org-a"), org("org-c")
    # C has no reason for pa: its consents are refused like writes about nobody.
    mine = as_(uow, c, "PUT", "Consent/c-1", consent("c-1", "pa", "permit", "org-c"))
    same_answer(
        mine,
        as_(uow, c, "PUT", "Consent/c-1", consent("c-1", "nobody-2", "permit", "org-c")),
        "pa",
        "nobody-2",
    )
    assert as_(uow, c, "PUT", "Consent/c-2", consent("c-2", "pa", "deny", "org-a")).status == 422
    assert as_(uow, c, "GET", "Patient/pa").status == 404
    assert as_(uow, a, "GET", "Patient/pa").status == 200
    # A may record the patient's restriction (flagged), never widen access or lift one.
    assert as_(uow, a, "PUT", "Consent/a-1", consent("a-1", "pa", "deny", "org-b")).status == 201
    assert [e["entity"] for e in flagged(uow, "consent-recorded")] == ["Consent/a-1"]
    assert as_(uow, a, "PUT", "Consent/a-2", consent("a-2", "pa", "permit", "org-c")).status == 403
    deny_all_but_c = consent("a-3", "pa", "deny")
    deny_all_but_c["provision"]["provision"] = [consent("x", "pa", "permit", "org-c")["provision"]]
    assert as_(uow, a, "PUT", "Consent/a-3", deny_all_but_c).status == 403
    assert (
        as_(uow, a, "PUT", "Consent/a-1", consent("a-1", "pa", "deny", "org-b", status="inactive")).status
        == 403
    )
    assert as_(uow, a, "DELETE", "Consent/a-1").status == 403
    assert as_(uow, c, "GET", "Patient/pa").status == 404
    # The patient decides for herself; another resident cannot decide for her.
    me = resident("pa", scopes="patient/*.cruds")
    assert (
        as_(
            uow,
            resident("pb", scopes="patient/*.cruds"),
            "PUT",
            "Consent/r-2",
            consent("r-2", "pa", "permit", "org-c"),
        ).status
        == 422
    )
    assert as_(uow, me, "PUT", "Consent/r-1", consent("r-1", "pa", "permit", "org-c")).status == 201
    assert as_(uow, c, "GET", "Patient/pa").status == 200
    assert as_(uow, me, "DELETE", "Consent/a-1").status == 204  # and lifts the restriction A recorded
    # The operator too.
    assert as_(uow, operator(), "PUT", "Consent/op-1", consent("op-1", "pa", "deny", "org-a")).status == 201
    assert as_(uow, a, "GET", "Patient/pa").status == 404


# --- patient data outside the compartment --------------------------------------------------


def outside_the_compartment(uow: UnitOfWork) -> dict[str, str]:
    """A's Task, Binary (direct and through a document) and document Bundle about pa."""
    a = org("org-a")
    made = {}
    task = {
        "resourceType": "Task",
        "id": "task-pa",
        "status": "requested",
        "intent": "order",
        "for": {"reference": "Patient/pa"},
        "owner": {"reference": "Organization/org-a"},
        "description": "转诊: 疑似HIV感染",
    }
    data = base64.b64encode(f"王芳 {ID_A}".encode()).decode()
    doc = {
        "resourceType": "DocumentReference",
        "id": "doc-pa",
        "status": "current",
        "subject": {"reference": "Patient/pa"},
        "content": [{"attachment": {"url": "Binary/bin-doc"}}],
    }
    resources = [
        task,
        {
            "resourceType": "Binary",
            "id": "bin-pa",
            "contentType": "text/plain",
            "securityContext": {"reference": "Patient/pa"},
            "data": data,
        },
        doc,
        {
            "resourceType": "Binary",
            "id": "bin-doc",
            "contentType": "text/plain",
            "securityContext": {"reference": "DocumentReference/doc-pa"},
            "data": data,
        },
        {
            "resourceType": "Bundle",
            "id": "bundle-pa",
            "type": "document",
            "timestamp": "2026-01-01T00:00:00Z",
            "identifier": {"system": "urn:test:doc", "value": "d-1"},
            "entry": [
                {
                    "fullUrl": "urn:uuid:0b1e6a52-0000-4000-8000-000000000001",
                    "resource": {
                        "resourceType": "Composition",
                        "status": "final",
                        "type": {"text": "出院小结"},
                        "subject": {"reference": "Patient/pa"},
                        "date": "2026-01-01",
                        "author": [{"reference": "Organization/org-a"}],
                        "title": "出院小结",
                    },
                },
                {"fullUrl": "http://testserver/fhir/Patient/pa", "resource": patient("pa", ID_A)},
            ],
        },
    ]
    for res in resources:
        put(uow, res, a)
        made[res["resourceType"] + "/" + res["id"]] = res["id"]
    return made


OUTSIDE = [
    "Task?patient=Patient/pa",
    "Task",
    "Task/task-pa",
    "Binary",
    "Binary/bin-pa",
    "Binary/bin-doc",
    "Bundle",
    "Bundle/bundle-pa",
    "Bundle?identifier=urn:test:doc|d-1",
    "Task?owner=Organization/org-a",
]


@pytest.mark.parametrize("url", OUTSIDE)
def test_task_binary_and_bundle_belong_to_their_patient(uow: UnitOfWork, url: str) -> None:
    seed(uow)
    made = outside_the_compartment(uow)
    for who in (org("org-c"), resident("pb")):
        got = as_(uow, who, "GET", url)
        assert got.status in (200, 404) and not found(got), (who.subject, got)
    assert found(as_(uow, org("org-a"), "GET", url)) & set(made)


def test_a_consultation_task_gives_its_owner_a_reason_until_it_goes(uow: UnitOfWork) -> None:
    seed(uow)
    c = org("org-c")
    task = {
        "resourceType": "Task",
        "id": "consult-pa",
        "status": "requested",
        "intent": "order",
        "for": {"reference": "Patient/pa"},
        "owner": {"reference": "Organization/org-c"},
    }
    put(uow, task, org("org-a"))
    assert as_(uow, c, "GET", "Patient/pa").status == 200
    assert as_(uow, org("org-a"), "DELETE", "Task/consult-pa").status == 204
    assert as_(uow, c, "GET", "Patient/pa").status == 404


def test_a_stored_bundle_of_several_patients_is_the_operators_alone(uow: UnitOfWork) -> None:
    seed(uow)
    both = {
        "resourceType": "Bundle",
        "id": "two",
        "type": "collection",
        "entry": [{"resource": patient("pa", ID_A)}, {"resource": patient("pb", ID_B)}],
    }
    put(uow, both, operator())
    assert as_(uow, operator(), "GET", "Bundle/two").status == 200
    for o in ("org-a", "org-b"):
        assert as_(uow, org(o), "GET", "Bundle/two").status == 404
        assert not found(as_(uow, org(o), "GET", "Bundle"))
    assert as_(uow, resident("pa", "pb"), "GET", "Bundle/two").status == 404
    # An institution with a reason for only one of them is refused as for a patient that is not there;
    # one with a reason for both (A after treating pb too) is told to store one per patient.
    assert as_(uow, org("org-a"), "PUT", "Bundle/two-a", {**both, "id": "two-a"}).status in (403, 422)
    put(uow, encounter("enc-pb-at-a", "pb", "org-a"))
    assert as_(uow, org("org-a"), "PUT", "Bundle/two-a", {**both, "id": "two-a"}).status == 403


# --- deleted resources and overwrites -----------------------------------------------------


def test_deletions_are_seen_only_by_those_who_could_see_what_was_deleted(uow: UnitOfWork) -> None:
    seed(uow)
    a, c = org("org-a"), org("org-c")
    assert as_(uow, a, "DELETE", "Observation/obs-pa").status == 204
    assert as_(uow, a, "GET", "Observation/obs-pa").status == 410
    assert as_(uow, a, "GET", "Observation/obs-pa/_history/2").status == 410
    for url in (
        "Observation/obs-pa",
        "Observation/obs-pa/_history/2",
        "Observation/obs-pa/_history/1",
        "Observation/obs-pa/_history",
    ):
        assert as_(uow, c, "GET", url).status == 404, url
    same_answer(
        as_(uow, c, "GET", "Observation/obs-pa/_history/9"),
        as_(uow, c, "GET", "Observation/nobody/_history/9"),
        "obs-pa",
        "nobody",
    )
    for url in ("_history", "Observation/_history", "Observation/_history?_count=100"):
        got = as_(uow, c, "GET", url)
        assert "Observation/obs-pa" not in {e["request"]["url"] for e in got.json.get("entry", [])}, url
    mine = as_(uow, a, "GET", "Observation/_history")
    assert any(
        e["request"]["method"] == "DELETE" and e["request"]["url"] == "Observation/obs-pa"
        for e in mine.json["entry"]
    )


def test_an_id_in_a_record_the_caller_may_not_see_answers_like_a_read(uow: UnitOfWork) -> None:
    seed(uow)
    c = org("org-c")
    as_(uow, org("org-a"), "DELETE", "Observation/obs-pa")
    for rtype, rid, body in (
        ("Encounter", "enc-pa", encounter("enc-pa", "pc", "org-c")),
        ("Observation", "obs-pa", observation("pc", "obs-pa")),
    ):
        put(uow, patient("pc", None), c)
        written = as_(uow, c, "PUT", f"{rtype}/{rid}", body)
        read = as_(uow, c, "GET", f"{rtype}/{rid}")
        patched = as_(
            uow,
            c,
            "PATCH",
            f"{rtype}/{rid}",
            [{"op": "replace", "path": "/status", "value": "cancelled"}],
            content_type="application/json-patch+json",
        )
        assert written.status == read.status == patched.status == 404
        assert written.json == read.json == patched.json
    assert as_(uow, org("org-a"), "GET", "Encounter/enc-pa").json["subject"]["reference"] == "Patient/pa"


# --- each kind of reason comes and goes with its source ----------------------------------

REASONS = {
    "EpisodeOfCare": {
        "resourceType": "EpisodeOfCare",
        "status": "active",
        "patient": {"reference": "Patient/pa"},
        "managingOrganization": {"reference": "Organization/org-c"},
    },
    "Appointment": {
        "resourceType": "Appointment",
        "status": "booked",
        "participant": [
            {"actor": {"reference": "Patient/pa"}, "status": "accepted"},
            {"actor": {"reference": "PractitionerRole/role-c"}, "status": "accepted"},
        ],
    },
    "ServiceRequest": {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/pa"},
        "performer": [{"reference": "Organization/org-c"}],
    },
    "Task": {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "for": {"reference": "Patient/pa"},
        "owner": {"reference": "Organization/org-c"},
    },
    "CareTeam": {
        "resourceType": "CareTeam",
        "subject": {"reference": "Patient/pa"},
        "managingOrganization": [{"reference": "Organization/org-c"}],
    },
}


@pytest.mark.parametrize("rtype", sorted(REASONS))
def test_each_reason_opens_the_record_while_its_source_exists(uow: UnitOfWork, rtype: str) -> None:
    seed(uow)
    c = org("org-c")
    assert as_(uow, c, "GET", "Patient/pa").status == 404
    made = as_(uow, org("org-a"), "POST", rtype, REASONS[rtype])  # A refers, books, contracts…
    assert made.status == 201, made
    assert as_(uow, c, "GET", "Patient/pa").status == 200
    assert "Observation/obs-pa" in found(as_(uow, c, "GET", "Observation?subject=Patient/pa"))
    assert as_(uow, org("org-a"), "DELETE", f"{rtype}/{made.json['id']}").status == 204
    assert as_(uow, c, "GET", "Patient/pa").status == 404
