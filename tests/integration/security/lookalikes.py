"""Hospital A treats 王芳 (pa), clinic B treats her look-alike (pb), clinic C has no reason for
either: the region the access tests run in, on the full platform settings, in process (each
test inside its rolled-back unit of work, on both databases), and the small builders they use.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from tests.support.fhir_calls import Call, call
from yilian.api.wiring import platform_settings
from yilian.db import UnitOfWork
from yilian.fhir import FhirContext
from yilian.kernel.naming import PRC_RESIDENT_ID
from yilian.kernel.prc_id import check_character
from yilian.security.audit import flush
from yilian.security.audit.tables import audit_event
from yilian.security.policy import SecurityPolicy
from yilian.security.principal import RESIDENT, SYSTEM, Principal
from yilian.security.scopes import parse_scopes
from yilian.security.tables import access_grant

SETTINGS = platform_settings({})


def prc_id(first17: str) -> str:
    return first17 + check_character(first17)


ID_A, ID_B, ID_M = prc_id("11010519800512002"), prc_id("11010519800512004"), prc_id("11010519850301002")


def ctx_for(uow: UnitOfWork, principal: Principal | None = None) -> FhirContext:
    """A request's context: trusted (None) or as ``principal``; a new one per request, as the server makes."""
    if principal is None:
        return FhirContext(base_url="http://testserver/fhir", settings=SETTINGS)
    return FhirContext(
        base_url="http://testserver/fhir", settings=SETTINGS, policy=SecurityPolicy(principal, uow.db)
    )


def org(org_id: str, scopes: str = "system/*.cruds") -> Principal:
    return Principal(
        kind=SYSTEM,
        subject=f"client-{org_id}",
        scopes=parse_scopes(scopes),
        org_id=org_id,
        client_id=f"client-{org_id}",
    )


def operator(scopes: str = "system/*.cruds") -> Principal:
    return Principal(
        kind=SYSTEM, subject="operator", scopes=parse_scopes(scopes), org_id=None, client_id="operator"
    )


def resident(patient: str, *more: str, scopes: str = "patient/*.rs") -> Principal:
    return Principal(
        kind=RESIDENT,
        subject=f"user-{patient}",
        scopes=parse_scopes(scopes),
        org_id=None,
        patient_keys=frozenset({patient, *more}),
    )


def as_(uow: UnitOfWork, who: Principal | None, method: str, url: str, body: Any = None, **kw: Any) -> Call:
    return call(uow, ctx_for(uow, who), method, url, body, **kw)


def put(uow: UnitOfWork, res: dict[str, Any], who: Principal | None = None) -> None:
    r = as_(uow, who, "PUT", f"{res['resourceType']}/{res['id']}", res)
    assert r.status in (200, 201), r


def patient(pid: str, id_number: str | None, birth: str = "1980-05-12", **extra: Any) -> dict[str, Any]:
    ident = [{"system": "urn:test:mrn", "value": f"mrn-{pid}"}]
    if id_number:
        ident.append({"system": PRC_RESIDENT_ID, "value": id_number})
    return {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"family": "王", "given": ["芳"]}],
        "gender": "female",
        "birthDate": birth,
        "identifier": ident,
        **extra,
    }


def encounter(eid: str, pid: str, org_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{pid}"},
        "serviceProvider": {"reference": f"Organization/{org_id}"},
    }


def observation(pid: str, oid: str | None = None, **extra: Any) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "valueQuantity": {"value": 150},
        **extra,
    }
    if oid:
        obs["id"] = oid
    return obs


def consent(cid: str, pid: str, effect: str, *orgs: str, status: str = "active") -> dict[str, Any]:
    actor = [
        {
            "role": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}
                ]
            },
            "reference": {"reference": f"Organization/{o}"},
        }
        for o in orgs
    ]
    provision: dict[str, Any] = {"type": effect}
    if actor:
        provision["actor"] = actor
    return {
        "resourceType": "Consent",
        "id": cid,
        "status": status,
        "scope": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{pid}"},
        "provision": provision,
    }


def seed(uow: UnitOfWork) -> None:
    for o in ("org-a", "org-b", "org-c"):
        put(uow, {"resourceType": "Organization", "id": o, "name": o})
    put(
        uow,
        {
            "resourceType": "PractitionerRole",
            "id": "role-c",
            "organization": {"reference": "Organization/org-c"},
        },
    )
    for pid, id_number, o in (("pa", ID_A, "org-a"), ("pb", ID_B, "org-b")):
        put(uow, patient(pid, id_number))
        put(uow, encounter(f"enc-{pid}", pid, o))
        put(uow, observation(pid, f"obs-{pid}"))


def same_answer(mine: Call, ghost: Call, real: str, fake: str) -> None:
    """Two refusals that must not be told apart (the ids named aside)."""

    def named(text: str, rid: str) -> str:
        return re.sub(rf"(?<![\w-]){re.escape(rid)}(?![\w-])", "ID", text)

    assert mine.status == ghost.status, (mine, ghost)
    assert named(str(mine.json), real) == named(str(ghost.json), fake), (mine, ghost)


def grant_orgs(uow: UnitOfWork, pid: str) -> set[str]:
    rows = uow.conn.execute(select(access_grant.c.org_id).where(access_grant.c.patient_key == pid))
    return {r.org_id for r in rows}


def flagged(uow: UnitOfWork, subtype: str) -> list[Any]:
    flush(uow)
    return list(uow.conn.execute(select(audit_event).where(audit_event.c.subtype == subtype)).mappings())


def found(r: Call) -> set[str]:
    if r.status != 200 or not r.json:
        return set()
    if r.json.get("resourceType") != "Bundle" or r.json.get("type") != "searchset":
        return {f"{r.json['resourceType']}/{r.json['id']}"}
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in r.json.get("entry", [])}
