"""Chains, reverse chains (_has), _include and _revinclude (with :iterate) — on both databases.

The record used throughout:

    org-top ← partof ─ org-commission ← partof ─ org-hospital ← organization ─ pat-wang ─ gp → pr-li
                                                       org-ruijin ← organization ─ pat-zhao ─ gp → pr-smith
    obs-wang-sys, obs-wang-dia → pat-wang;  obs-zhao → pat-zhao;  obs-group → grp;  obs-loc → loc
    mr-1 → med-1 → org-pharma (manufacturer);  mr-1 → pat-wang, pr-li;  prov-1 → obs-wang-sys
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.fhir_calls import call, ids
from yilian.db import UnitOfWork
from yilian.fhir import FhirContext

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"


def put(uow: UnitOfWork, ctx: FhirContext, resource: dict[str, Any]) -> None:
    r = call(uow, ctx, "PUT", f"{resource['resourceType']}/{resource['id']}", resource)
    assert r.status in (200, 201), r


def search(uow: UnitOfWork, ctx: FhirContext, url: str) -> dict[str, Any]:
    r = call(uow, ctx, "GET", url)
    assert r.status == 200, (url, r)
    body: dict[str, Any] = r.json
    return body


def found(uow: UnitOfWork, ctx: FhirContext, url: str) -> set[str]:
    return ids(search(uow, ctx, url))


def included(bundle: dict[str, Any]) -> list[str]:
    """``Type/id`` of every include entry, in order (duplicates kept, so tests can see them)."""
    return [
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == "include"
    ]


def refused(uow: UnitOfWork, ctx: FhirContext, url: str) -> str:
    r = call(uow, ctx, "GET", url)
    assert r.status == 400, (url, r)
    assert r.json["resourceType"] == "OperationOutcome"
    return str(r.json["issue"][0]["diagnostics"])


def reading(oid: str, subject: str, code: str, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": subject},
        "valueQuantity": {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
    }


@pytest.fixture
def record(uow: UnitOfWork, ctx: FhirContext) -> None:
    put(uow, ctx, {"resourceType": "Organization", "id": "org-top", "name": "国家卫生健康委员会"})
    put(
        uow,
        ctx,
        {
            "resourceType": "Organization",
            "id": "org-commission",
            "name": "北京市卫生健康委员会",
            "partOf": {"reference": "Organization/org-top"},
        },
    )
    put(
        uow,
        ctx,
        {
            "resourceType": "Organization",
            "id": "org-hospital",
            "name": "北京协和医院",
            "partOf": {"reference": "Organization/org-commission"},
        },
    )
    put(uow, ctx, {"resourceType": "Organization", "id": "org-ruijin", "name": "Shanghai Ruijin Hospital"})
    put(uow, ctx, {"resourceType": "Organization", "id": "org-pharma", "name": "华北制药"})
    put(
        uow, ctx, {"resourceType": "Practitioner", "id": "pr-li", "name": [{"family": "李", "given": ["明"]}]}
    )
    put(
        uow,
        ctx,
        {"resourceType": "Practitioner", "id": "pr-smith", "name": [{"family": "Smith", "given": ["Jane"]}]},
    )
    put(
        uow,
        ctx,
        {
            "resourceType": "Patient",
            "id": "pat-wang",
            "name": [{"family": "王", "given": ["芳"]}],
            "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": "110105197509214321"}],
            "managingOrganization": {"reference": "Organization/org-hospital"},
            "generalPractitioner": [{"reference": "Practitioner/pr-li"}],
        },
    )
    put(
        uow,
        ctx,
        {
            "resourceType": "Patient",
            "id": "pat-zhao",
            "name": [{"family": "Zhao", "given": ["Lei"]}],
            "gender": "male",
            "managingOrganization": {"reference": "Organization/org-ruijin"},
            "generalPractitioner": [{"reference": "Practitioner/pr-smith"}],
        },
    )
    put(
        uow,
        ctx,
        {"resourceType": "Group", "id": "grp", "type": "person", "actual": True, "name": "王氏家族随访组"},
    )
    put(uow, ctx, {"resourceType": "Location", "id": "loc", "name": "王府井社区卫生服务站"})
    put(uow, ctx, reading("obs-wang-sys", "Patient/pat-wang", "8480-6", 150))
    put(uow, ctx, reading("obs-wang-dia", "Patient/pat-wang", "8462-4", 95))
    put(uow, ctx, reading("obs-zhao", "Patient/pat-zhao", "8480-6", 118))
    put(uow, ctx, reading("obs-group", "Group/grp", "8480-6", 130))
    put(uow, ctx, reading("obs-loc", "Location/loc", "8480-6", 125))
    put(
        uow,
        ctx,
        {
            "resourceType": "Medication",
            "id": "med-1",
            "code": {"coding": [{"system": SNOMED, "code": "387458008", "display": "Aspirin"}]},
            "manufacturer": {"reference": "Organization/org-pharma"},
        },
    )
    put(
        uow,
        ctx,
        {
            "resourceType": "MedicationRequest",
            "id": "mr-1",
            "status": "active",
            "intent": "order",
            "medicationReference": {"reference": "Medication/med-1"},
            "subject": {"reference": "Patient/pat-wang"},
            "requester": {"reference": "Practitioner/pr-li"},
        },
    )
    put(
        uow,
        ctx,
        {
            "resourceType": "MedicationRequest",
            "id": "mr-2",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": SNOMED, "code": "387458008"}]},
            "subject": {"reference": "Patient/pat-zhao"},
        },
    )
    put(
        uow,
        ctx,
        {
            "resourceType": "Provenance",
            "id": "prov-1",
            "recorded": "2024-03-01T08:00:00+08:00",
            "target": [{"reference": "Observation/obs-wang-sys"}],
            "agent": [{"who": {"reference": "Practitioner/pr-li"}}],
        },
    )


# --- chains ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # one level, with and without the type modifier
        ("Observation?subject:Patient.name=王", {"obs-wang-sys", "obs-wang-dia"}),
        ("Observation?patient.name=zhao", {"obs-zhao"}),
        ("Observation?subject:Patient.name=王,zhao", {"obs-wang-sys", "obs-wang-dia", "obs-zhao"}),
        ("Observation?subject:Patient.name:exact=王芳", {"obs-wang-sys", "obs-wang-dia"}),
        (
            "Observation?subject:Patient.identifier=urn:oid:2.16.156.10011.1.3|110105197509214321",
            {"obs-wang-sys", "obs-wang-dia"},
        ),
        ("Observation?subject:Patient._id=pat-zhao", {"obs-zhao"}),
        ("MedicationRequest?medication.code=387458008", {"mr-1"}),  # mr-2 names the drug inline
        # subject may be a Patient, Group, Device or Location: name is a string parameter of
        # Patient and Location (Group and Device have none), so both are searched
        ("Observation?subject.name=王", {"obs-wang-sys", "obs-wang-dia", "obs-loc"}),
        ("Observation?subject:Location.name=王", {"obs-loc"}),
        ("Observation?subject:Group.code=x", set()),
        # two, three and four levels
        ("Observation?subject:Patient.organization.name=北京协和", {"obs-wang-sys", "obs-wang-dia"}),
        ("Observation?patient.general-practitioner.name=smith", {"obs-zhao"}),
        (
            "Observation?subject:Patient.general-practitioner:Practitioner.family=李",
            {"obs-wang-sys", "obs-wang-dia"},
        ),
        ("Observation?subject:Patient.organization.partof.name=北京市卫生", {"obs-wang-sys", "obs-wang-dia"}),
        (
            "Observation?subject:Patient.organization.partof.partof.name=国家",
            {"obs-wang-sys", "obs-wang-dia"},
        ),
        ("Observation?subject:Patient.organization.partof.name=国家", set()),
        # modifiers at the end of a chain
        ("Observation?subject:Patient.gender:missing=true", {"obs-wang-sys", "obs-wang-dia"}),
        ("Observation?patient.gender:not=male", {"obs-wang-sys", "obs-wang-dia"}),
        ("Observation?patient._id:not=pat-wang", {"obs-zhao"}),
        (
            "Observation?subject:Patient.organization:missing=false",
            {"obs-wang-sys", "obs-wang-dia", "obs-zhao"},
        ),
        # chains and plain parameters together
        ("Observation?subject:Patient.name=王&code=8462-4", {"obs-wang-dia"}),
        ("Observation?subject:Patient.name=王&subject:Patient.organization.name=shanghai", set()),
    ],
)
def test_chains(uow: UnitOfWork, ctx: FhirContext, record: None, url: str, expected: set[str]) -> None:
    assert found(uow, ctx, url) == expected


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("Observation?code.name=x", "not a reference"),  # code is a token
        ("Observation?subject:Patient.gender.name=x", "not a reference"),  # ... one level down
        ("Observation?subject.colour=red", "colour"),  # no target type has it
        ("Observation?subject:Patient.code=8480-6", "code"),
        ("Observation?subject:missing.name=x", "type modifier only"),
        ("Observation?subject:Group.name=王", "name"),  # Group has no name parameter
        ("Observation?focus.type=x", "ambiguous"),  # a token on most types, a uri on StructureDefinition
        ("Observation?subject:Patient.organization.partof.partof.partof.name=x", "too deep"),
    ],
)
def test_chain_errors(uow: UnitOfWork, ctx: FhirContext, record: None, url: str, says: str) -> None:
    assert says in refused(uow, ctx, url)


def test_ambiguous_chain_is_answered_once_the_type_is_named(
    uow: UnitOfWork, ctx: FhirContext, record: None
) -> None:
    assert found(uow, ctx, "Observation?focus:Patient.name=王") == set()


# --- reverse chains -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("Patient?_has:Observation:patient:code=8480-6", {"pat-wang", "pat-zhao"}),
        ("Patient?_has:Observation:patient:code=8462-4", {"pat-wang"}),
        ("Patient?_has:Observation:subject:value-quantity=gt140", {"pat-wang"}),
        ("Patient?_has:Observation:patient:code=8462-4,1234-5", {"pat-wang"}),
        ("Patient?_has:Observation:patient:code=9999-9", set()),
        # each _has is matched on its own: here by two different observations of pat-wang
        (
            "Patient?_has:Observation:patient:code=8462-4&_has:Observation:patient:value-quantity=gt140",
            {"pat-wang"},
        ),
        (
            "Patient?_has:Observation:patient:code=8480-6&_has:Observation:patient:value-quantity=lt120",
            {"pat-wang", "pat-zhao"},
        ),
        ("Group?_has:Observation:subject:code=8480-6", {"grp"}),
        (
            "Patient?_has:MedicationRequest:subject:medication.code=387458008",
            {"pat-wang"},
        ),  # with a chain inside
        # nested: practitioners who are the GP of a patient with a diastolic reading
        ("Practitioner?_has:Patient:general-practitioner:_has:Observation:patient:code=8462-4", {"pr-li"}),
        (
            "Organization?_has:Patient:organization:_has:Observation:patient:value-quantity=118",
            {"org-ruijin"},
        ),
        ("Observation?_has:Provenance:target:agent=Practitioner/pr-li", {"obs-wang-sys"}),
        ("Patient?_has:Observation:patient:_id=obs-zhao", {"pat-zhao"}),
        (
            "Patient?_has:Observation:patient:code:not=8480-6",
            {"pat-wang"},
        ),  # has a reading that is not systolic
        ("Practitioner?_has:Patient:general-practitioner:gender:missing=true", {"pr-li"}),
    ],
)
def test_reverse_chains(
    uow: UnitOfWork, ctx: FhirContext, record: None, url: str, expected: set[str]
) -> None:
    assert found(uow, ctx, url) == expected


# --- _include and _revinclude ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("Observation?_id=obs-wang-sys&_include=Observation:subject", ["Patient/pat-wang"]),
        (
            "Observation?code=8480-6&_include=Observation:subject:Patient",
            ["Patient/pat-wang", "Patient/pat-zhao"],
        ),
        ("Observation?_id=obs-group&_include=Observation:subject:Patient", []),
        ("Observation?_id=obs-group,obs-loc&_include=Observation:subject", ["Group/grp", "Location/loc"]),
        (
            "MedicationRequest?_id=mr-1&_include=*",
            ["Medication/med-1", "Patient/pat-wang", "Practitioner/pr-li"],
        ),
        (
            "MedicationRequest?_id=mr-1&_include=MedicationRequest:*",
            ["Medication/med-1", "Patient/pat-wang", "Practitioner/pr-li"],
        ),
        ("MedicationRequest?_id=mr-2&_include=MedicationRequest:medication", []),  # an inline medication
        (
            "Patient?_id=pat-wang&_revinclude=Observation:subject",
            ["Observation/obs-wang-dia", "Observation/obs-wang-sys"],
        ),
        (
            "Patient?_id=pat-wang&_revinclude=Observation:subject&_revinclude=MedicationRequest:subject",
            ["MedicationRequest/mr-1", "Observation/obs-wang-dia", "Observation/obs-wang-sys"],
        ),
        ("Observation?_id=obs-wang-sys&_revinclude=Provenance:target", ["Provenance/prov-1"]),
        (
            "Practitioner?_id=pr-li&_revinclude=*",
            ["MedicationRequest/mr-1", "Patient/pat-wang", "Provenance/prov-1"],
        ),
        # :iterate follows includes from what was included
        (
            "MedicationRequest?_id=mr-1&_include=MedicationRequest:medication&_include:iterate=Medication:manufacturer",
            ["Medication/med-1", "Organization/org-pharma"],
        ),
        (
            "MedicationRequest?_id=mr-1&_include=MedicationRequest:medication&_include=Medication:manufacturer",
            ["Medication/med-1"],
        ),  # without :iterate it applies to the matches only
        (
            "Observation?_id=obs-wang-sys&_include=Observation:subject&_include:iterate=Patient:general-practitioner",
            ["Patient/pat-wang", "Practitioner/pr-li"],
        ),
        (
            "Organization?_id=org-hospital&_include:iterate=Organization:partof",
            ["Organization/org-commission", "Organization/org-top"],
        ),
        (
            "Patient?_id=pat-wang&_revinclude=Observation:subject&_revinclude:iterate=Provenance:target",
            ["Observation/obs-wang-dia", "Observation/obs-wang-sys", "Provenance/prov-1"],
        ),
    ],
)
def test_includes(uow: UnitOfWork, ctx: FhirContext, record: None, url: str, expected: list[str]) -> None:
    bundle = search(uow, ctx, url)
    assert sorted(included(bundle)) == expected
    # total counts the matches only
    assert bundle["total"] == len(ids(bundle))


def test_no_duplicates_between_matches_and_includes(uow: UnitOfWork, ctx: FhirContext, record: None) -> None:
    # Both of pat-wang's readings refer to pat-wang: included once.
    bundle = search(uow, ctx, "Observation?subject=Patient/pat-wang&_include=Observation:subject")
    assert included(bundle) == ["Patient/pat-wang"]
    # org-commission is a match and the partof of another match: it is not included again.
    bundle = search(uow, ctx, "Organization?name=北京&_include=Organization:partof")
    assert ids(bundle) == {"org-hospital", "org-commission"}
    assert included(bundle) == ["Organization/org-top"]
    # A match that an included resource refers back to is not included either.
    bundle = search(
        uow, ctx, "Patient?_id=pat-wang&_revinclude=Observation:subject&_include:iterate=Observation:subject"
    )
    assert sorted(included(bundle)) == ["Observation/obs-wang-dia", "Observation/obs-wang-sys"]


def test_include_entries_are_marked_and_addressed(uow: UnitOfWork, ctx: FhirContext, record: None) -> None:
    bundle = search(uow, ctx, "Observation?_id=obs-zhao&_include=Observation:subject")
    modes = [(e["search"]["mode"], e["fullUrl"]) for e in bundle["entry"]]
    assert modes == [
        ("match", "http://testserver/fhir/Observation/obs-zhao"),
        ("include", "http://testserver/fhir/Patient/pat-zhao"),
    ]


def test_deleted_resources_are_neither_included_nor_chained_through(
    uow: UnitOfWork, ctx: FhirContext, lenient_ctx: FhirContext, record: None
) -> None:
    # lenient_ctx: a deployment that lets resources be deleted while others still refer to them.
    for path in ("Organization/org-pharma", "Observation/obs-wang-dia", "Organization/org-ruijin"):
        assert call(uow, lenient_ctx, "DELETE", path).status == 204
    bundle = search(
        uow,
        ctx,
        "MedicationRequest?_id=mr-1&_include=MedicationRequest:medication&_include:iterate=Medication:manufacturer",
    )
    assert included(bundle) == ["Medication/med-1"]
    bundle = search(uow, ctx, "Patient?_id=pat-wang&_revinclude=Observation:subject")
    assert included(bundle) == ["Observation/obs-wang-sys"]
    assert found(uow, ctx, "Observation?subject:Patient.organization.name=shanghai") == set()
    assert found(uow, ctx, "Patient?_has:Observation:patient:code=8462-4") == set()
    assert found(uow, ctx, "Organization?name=shanghai") == set()
