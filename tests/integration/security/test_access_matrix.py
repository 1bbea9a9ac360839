"""Two institutions with look-alike patients: whoever has no reason sees nothing of the other's,
on every path that returns data. The same for a resident reaching for another patient."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest

from tests.support.fhir_calls import Call, call
from yilian.db import UnitOfWork
from yilian.fhir import FhirContext, FhirSettings
from yilian.security.grants import GrantDeriver
from yilian.security.policy import SecurityPolicy
from yilian.security.principal import RESIDENT, SYSTEM, Principal
from yilian.security.scopes import parse_scopes

SETTINGS = FhirSettings(observers=(GrantDeriver(),))


def ctx_for(uow: UnitOfWork, principal: Principal | None) -> FhirContext:
    if principal is None:
        return FhirContext(base_url="http://testserver/fhir", settings=SETTINGS)
    return FhirContext(
        base_url="http://testserver/fhir", settings=SETTINGS, policy=SecurityPolicy(principal, uow.db)
    )


def org_principal(org: str, scopes: str = "system/*.cruds") -> Principal:
    return Principal(
        kind=SYSTEM,
        subject=f"client-{org}",
        scopes=parse_scopes(scopes),
        org_id=org,
        client_id=f"client-{org}",
    )


def resident(patient: str, *more: str) -> Principal:
    return Principal(
        kind=RESIDENT,
        subject=f"user-{patient}",
        scopes=parse_scopes("patient/*.rs"),
        org_id=None,
        patient_keys=frozenset({patient, *more}),
    )


def seed(uow: UnitOfWork) -> dict[str, str]:
    """Hospital A treats patient pa, clinic B treats pb; both named 王芳, born the same day."""
    trusted = ctx_for(uow, None)

    def put(res: dict[str, Any]) -> None:
        r = call(uow, trusted, "PUT", f"{res['resourceType']}/{res['id']}", res)
        assert r.status in (200, 201), r

    put({"resourceType": "Organization", "id": "org-a", "name": "市第一人民医院"})
    put({"resourceType": "Organization", "id": "org-b", "name": "城东社区卫生服务中心"})
    put({"resourceType": "Practitioner", "id": "dr-li", "name": [{"family": "李", "given": ["明"]}]})
    for pid, org in (("pa", "org-a"), ("pb", "org-b")):
        put(
            {
                "resourceType": "Patient",
                "id": pid,
                "name": [{"family": "王", "given": ["芳"]}],
                "gender": "female",
                "birthDate": "1980-05-12",
                "identifier": [{"system": "urn:test:mrn", "value": f"mrn-{pid}"}],
                "generalPractitioner": [{"reference": "Practitioner/dr-li"}],
            }
        )
        put(
            {
                "resourceType": "Encounter",
                "id": f"enc-{pid}",
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": f"Patient/{pid}"},
                "serviceProvider": {"reference": f"Organization/{org}"},
            }
        )
        put(
            {
                "resourceType": "Observation",
                "id": f"obs-{pid}",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "subject": {"reference": f"Patient/{pid}"},
                "encounter": {"reference": f"Encounter/enc-{pid}"},
                "valueQuantity": {
                    "value": 150,
                    "unit": "mmHg",
                    "system": "http://unitsofmeasure.org",
                    "code": "mm[Hg]",
                },
                "performer": [{"reference": "Practitioner/dr-li"}],
            }
        )
        put(
            {
                "resourceType": "Provenance",
                "id": f"prov-{pid}",
                "target": [{"reference": f"Observation/obs-{pid}"}],
                "recorded": "2026-01-01T00:00:00Z",
                "agent": [{"who": {"reference": "Practitioner/dr-li"}}],
            }
        )
    return {"a": "org-a", "b": "org-b"}


def ids_in(body: dict[str, Any] | None) -> set[str]:
    if not body:
        return set()
    if body.get("resourceType") != "Bundle":
        return {f"{body['resourceType']}/{body.get('id')}"} if body.get("id") else set()
    out = set()
    for e in body.get("entry", []):
        res = e.get("resource")
        if isinstance(res, dict):
            out |= (
                ids_in(res) if res.get("resourceType") == "Bundle" else {f"{res['resourceType']}/{res['id']}"}
            )
    return out


PA_DATA = {"Patient/pa", "Encounter/enc-pa", "Observation/obs-pa", "Provenance/prov-pa"}

# Every way of reaching data, each with a query that would find hospital A's patient pa.
PATHS = [
    ("GET", "Patient/pa"),
    ("GET", "Patient/pa/_history/1"),
    ("GET", "Patient/pa/_history"),
    ("GET", "Observation/obs-pa"),
    ("GET", "Patient?name=王芳"),
    ("GET", "Patient?family=王&birthdate=1980-05-12"),
    ("GET", "Patient?identifier=urn:test:mrn|mrn-pa"),
    ("GET", "Patient?_id=pa"),
    ("GET", "Patient?general-practitioner=Practitioner/dr-li"),
    ("GET", "Observation?code=http://loinc.org|8480-6"),
    ("GET", "Observation?subject:Patient.name=王芳"),
    ("GET", "Observation?patient.identifier=urn:test:mrn|mrn-pa"),
    ("GET", "Patient?_has:Observation:patient:code=8480-6"),
    ("GET", "Encounter?service-provider=Organization/org-a"),
    ("GET", "Observation?_include=Observation:patient&_id=obs-pa,obs-pb"),
    ("GET", "Patient?_revinclude=Observation:patient&_revinclude=Provenance:target&_id=pa,pb"),
    ("GET", "Observation?_revinclude:iterate=Provenance:target&code=8480-6"),
    ("GET", "Patient/pa/Observation"),
    ("GET", "Patient/pa/$everything"),
    ("GET", "Observation/_history"),
    ("GET", "_history"),
    ("GET", "?_type=Patient,Observation&_lastUpdated=gt2000-01-01"),
    ("GET", "Observation?_summary=count&code=8480-6"),
    ("POST", "Observation/_search"),
]


@pytest.mark.parametrize(("method", "url"), PATHS, ids=[p[1] for p in PATHS])
def test_institution_without_reason_sees_nothing(uow: UnitOfWork, method: str, url: str) -> None:
    seed(uow)
    b = ctx_for(uow, org_principal("org-b"))
    r = call(uow, b, method, url)
    assert r.status in (200, 404), r
    assert not (ids_in(r.json) & PA_DATA), f"{url} leaked {ids_in(r.json) & PA_DATA}"
    if (
        r.status == 200
        and r.json
        and r.json.get("resourceType") == "Bundle"
        and "total" in r.json
        and "_summary=count" in url
    ):
        assert r.json["total"] == 1  # only clinic B's own observation is counted
    # And the institution with the reason does see pa's data on the same path.
    a = ctx_for(uow, org_principal("org-a"))
    mine = call(uow, a, method, url)
    assert mine.status in (200, 404)
    if (
        method == "GET"
        and "pb" not in url
        and "org-b" not in url
        and mine.status == 200
        and "_summary" not in url
    ):
        assert ids_in(mine.json) & PA_DATA or url.startswith(
            ("Encounter?service-provider=Organization/org-b",)
        ), url


def test_paging_never_crosses_into_another_institution(uow: UnitOfWork) -> None:
    seed(uow)
    b = ctx_for(uow, org_principal("org-b"))
    seen: set[str] = set()
    url = "Observation?_count=1"
    while url:
        page = call(uow, b, "GET", url).json
        seen |= ids_in(page)
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url = nxt[0].split("/fhir/", 1)[1] if nxt else ""
    assert seen == {"Observation/obs-pb"}


def test_a_cursor_from_another_caller_does_not_work(uow: UnitOfWork) -> None:
    seed(uow)
    a = ctx_for(uow, org_principal("org-a"))
    page = call(uow, a, "GET", "Observation?_count=1&_sort=_id").json
    page_b = call(uow, ctx_for(uow, org_principal("org-b")), "GET", "Observation?_count=0").json
    assert page_b["total"] == 1
    nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
    if nxt:
        stolen = call(uow, ctx_for(uow, org_principal("org-b")), "GET", nxt[0].split("/fhir/", 1)[1])
        assert stolen.status == 400


def test_writes_to_another_institutions_record_are_refused(uow: UnitOfWork) -> None:
    seed(uow)
    b = ctx_for(uow, org_principal("org-b"))
    assert call(
        uow,
        b,
        "PUT",
        "Observation/obs-pa",
        {"resourceType": "Observation", "id": "obs-pa", "status": "final", "code": {"text": "x"}},
    ).status in (403, 404)
    assert (
        call(
            uow,
            b,
            "PATCH",
            "Observation/obs-pa",
            [{"op": "replace", "path": "/status", "value": "amended"}],
            content_type="application/json-patch+json",
        ).status
        == 404
    )
    assert call(uow, b, "DELETE", "Observation/obs-pa").status == 204
    assert (
        call(uow, ctx_for(uow, org_principal("org-a")), "GET", "Observation/obs-pa").status == 200
    )  # untouched


def test_batch_and_transaction_entries_are_checked_each(uow: UnitOfWork) -> None:
    seed(uow)
    b = ctx_for(uow, org_principal("org-b"))
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Patient/pa"}},
            {"request": {"method": "GET", "url": "Patient?name=王芳"}},
            {"request": {"method": "GET", "url": "Patient/pb"}},
        ],
    }
    r = call(uow, b, "POST", "", bundle)
    assert r.status == 200
    statuses = [e["response"]["status"][:3] for e in r.json["entry"]]
    assert statuses == ["404", "200", "200"]
    assert not (ids_in(r.json) & PA_DATA)


def test_treatment_at_b_gives_b_a_reason(uow: UnitOfWork) -> None:
    seed(uow)
    b = ctx_for(uow, org_principal("org-b"))
    assert call(uow, b, "GET", "Patient/pa").status == 404
    enc = {
        "resourceType": "Encounter",
        "id": "enc-pa-at-b",
        "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/pa"},
        "serviceProvider": {"reference": "Organization/org-b"},
    }
    # The registration desk at B records the visit through a trusted channel (the patient is in front of them).
    assert call(uow, ctx_for(uow, None), "PUT", "Encounter/enc-pa-at-b", enc).status == 201
    b = ctx_for(uow, org_principal("org-b"))  # the next request
    assert call(uow, b, "GET", "Patient/pa").status == 200
    assert "Observation/obs-pa" in ids_in(call(uow, b, "GET", "Patient/pa/$everything").json)


def test_resident_sees_own_and_childs_record_only(uow: UnitOfWork) -> None:
    seed(uow)
    me = ctx_for(uow, resident("pb"))
    assert call(uow, me, "GET", "Patient/pb").status == 200
    assert call(uow, me, "GET", "Patient/pa").status == 404
    assert ids_in(call(uow, me, "GET", "Observation?code=8480-6").json) == {"Observation/obs-pb"}
    assert not (ids_in(call(uow, me, "GET", "Patient?name=王芳").json) & PA_DATA)
    # A resident may not write through patient/*.rs scopes.
    assert (
        call(
            uow,
            me,
            "POST",
            "Observation",
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": "Patient/pb"},
            },
        ).status
        == 403
    )
    parent = ctx_for(uow, resident("pb", "pa"))
    assert call(uow, parent, "GET", "Patient/pa").status == 200


def test_platform_operator_sees_the_region(uow: UnitOfWork) -> None:
    seed(uow)
    op = ctx_for(
        uow,
        Principal(
            kind=SYSTEM, subject="operator", scopes=parse_scopes("system/*.rs"), org_id=None, client_id="op"
        ),
    )
    assert ids_in(call(uow, op, "GET", "Patient?name=王芳").json) == {"Patient/pa", "Patient/pb"}


def test_break_the_glass_opens_the_record(uow: UnitOfWork) -> None:
    seed(uow)
    p = org_principal("org-b").with_purpose("BTG", "unconscious patient in the emergency room")
    assert call(uow, ctx_for(uow, p), "GET", "Patient/pa").status == 200


SCOPE_CASES = [
    ("system/Patient.r", "GET", "Patient/pb", 200),
    ("system/Patient.r", "GET", "Patient?name=王", 403),
    ("system/Patient.s", "GET", "Patient?name=王", 200),
    ("system/Patient.s", "GET", "Patient/pb", 403),
    ("system/Patient.rs", "GET", "Observation/obs-pb", 403),
    ("system/Patient.rs", "POST", "Patient", 403),
    ("system/Patient.c", "POST", "Patient", 201),
    ("system/Patient.rs", "PUT", "Patient/pb", 403),
    ("system/Patient.u", "PUT", "Patient/pb", 200),
    ("system/Patient.rs", "DELETE", "Patient/pb", 403),
    ("system/Patient.rs", "GET", "Patient/pb/_history", 200),
    ("system/Observation.rs", "GET", "Patient/pb/_history", 403),
    ("system/*.rs", "PATCH", "Patient/pb", 403),
    ("system/Patient.read", "GET", "Patient?name=王", 200),
    ("system/Patient.write", "GET", "Patient/pb", 403),
]


@pytest.mark.parametrize(
    ("scopes", "method", "url", "status"), SCOPE_CASES, ids=[f"{c[0]} {c[1]} {c[2]}" for c in SCOPE_CASES]
)
def test_scope_matrix(uow: UnitOfWork, scopes: str, method: str, url: str, status: int) -> None:
    seed(uow)
    ctx = ctx_for(uow, org_principal("org-b", scopes))
    body: Any = None
    content_type = "application/fhir+json"
    if method == "POST":
        body = {"resourceType": "Patient", "name": [{"family": "新"}]}
    elif method == "PUT":
        body = {"resourceType": "Patient", "id": "pb", "gender": "female"}
    elif method == "PATCH":
        body = [{"op": "replace", "path": "/gender", "value": "other"}]
        content_type = "application/json-patch+json"
    r: Call = call(uow, ctx, method, url, body, content_type=content_type)
    assert r.status == status, r


def test_consent_denying_an_institution_overrides_treatment(uow: UnitOfWork) -> None:
    seed(uow)
    trusted = ctx_for(uow, None)
    a = ctx_for(uow, org_principal("org-a"))
    assert call(uow, a, "GET", "Patient/pa").status == 200
    consent = {
        "resourceType": "Consent",
        "id": "c-pa",
        "status": "active",
        "scope": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/pa"},
        "provision": {
            "type": "deny",
            "actor": [
                {
                    "role": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": "PRCP",
                            }
                        ]
                    },
                    "reference": {"reference": "Organization/org-a"},
                }
            ],
        },
    }
    assert call(uow, trusted, "PUT", "Consent/c-pa", consent).status == 201
    assert call(uow, ctx_for(uow, org_principal("org-a")), "GET", "Patient/pa").status == 404
    assert not (
        ids_in(call(uow, ctx_for(uow, org_principal("org-a")), "GET", "Observation?code=8480-6").json)
        & PA_DATA
    )
    # Revoked: takes effect on the next request.
    consent["status"] = "inactive"
    assert call(uow, trusted, "PUT", "Consent/c-pa", consent).status == 200
    assert call(uow, ctx_for(uow, org_principal("org-a")), "GET", "Patient/pa").status == 200


def test_consent_deny_all_but_some(uow: UnitOfWork) -> None:
    seed(uow)
    consent = {
        "resourceType": "Consent",
        "id": "c-all",
        "status": "active",
        "scope": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/pa"},
        "provision": {
            "type": "deny",
            "provision": [
                {
                    "type": "permit",
                    "actor": [
                        {
                            "role": {
                                "coding": [
                                    {
                                        "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                        "code": "PRCP",
                                    }
                                ]
                            },
                            "reference": {"reference": "Organization/org-b"},
                        }
                    ],
                }
            ],
        },
    }
    assert call(uow, ctx_for(uow, None), "PUT", "Consent/c-all", consent).status == 201
    assert (
        call(uow, ctx_for(uow, org_principal("org-a")), "GET", "Patient/pa").status == 404
    )  # treated there, but denied
    assert (
        call(uow, ctx_for(uow, org_principal("org-b")), "GET", "Patient/pa").status == 200
    )  # permitted by consent


def test_query_strings_cannot_smuggle_other_rows(uow: UnitOfWork) -> None:
    seed(uow)
    b = ctx_for(uow, org_principal("org-b"))
    for q in ("_id=pa,pb", "_id:not=pb", "_lastUpdated=gt1900-01-01", "name:missing=false"):
        got = ids_in(call(uow, b, "GET", "Patient?" + urlencode([tuple(q.split("=", 1))])).json)
        assert got <= {"Patient/pb"}, q
