"""Small builders for payment tests: institutions, residents with cards, coverages — in the FHIR store."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import orjson

from yilian.db import UnitOfWork
from yilian.fhir import FhirContext, FhirRequest, dispatch
from yilian.kernel import naming
from yilian.payments.coverage import SCHEME_SYSTEM

CTX = FhirContext(base_url="http://testserver/fhir")
HUZHOU_WUXING = "330502"  # inside the 330500 pooling region
HANGZHOU_SHANGCHENG = "330102"  # outside it


def _create(uow: UnitOfWork, resource: dict[str, Any]) -> str:
    response = dispatch(uow, CTX, FhirRequest("POST", resource["resourceType"], body=resource))
    return str(orjson.loads(response.body or b"{}")["id"])


def make_org(
    uow: UnitOfWork, *, name: str = "湖州市中心医院", level: str | None = "3", division: str = HUZHOU_WUXING
) -> str:
    org: dict[str, Any] = {"resourceType": "Organization", "name": name}
    if level:
        org["type"] = [{"coding": [{"system": naming.INSTITUTION_LEVEL, "code": level}]}]
    return _create(
        uow,
        {
            **org,
            "address": [
                {
                    "extension": [
                        {
                            "url": naming.EXT_ADDRESS_DIVISION,
                            "valueCoding": {"system": naming.ADMIN_DIVISION, "code": division},
                        }
                    ],
                    "text": name,
                }
            ],
        },
    )


def make_patient(uow: UnitOfWork, *, family: str = "王", given: str = "芳") -> str:
    return _create(
        uow, {"resourceType": "Patient", "name": [{"family": family, "given": [given]}], "gender": "female"}
    )


def make_coverage(
    uow: UnitOfWork,
    *,
    patient_id: str,
    payor_org: str,
    scheme: str = "ncms",
    region: str = "330500",
    start: str = "2026-01-01",
    end: str = "2026-12-31",
    status: str = "active",
) -> str:
    return _create(
        uow,
        {
            "resourceType": "Coverage",
            "status": status,
            "type": {"coding": [{"system": SCHEME_SYSTEM, "code": scheme}]},
            "beneficiary": {"reference": f"Patient/{patient_id}"},
            "payor": [{"reference": f"Organization/{payor_org}"}],
            "period": {"start": start, "end": end},
            "class": [
                {
                    "type": {
                        "coding": [
                            {"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "plan"}
                        ]
                    },
                    "value": region,
                }
            ],
        },
    )


@dataclass(frozen=True)
class Region:
    city_hospital: str
    county_hospital: str
    township_centre: str
    out_of_region: str
    insurer: str
    aid_fund: str


def make_region(uow: UnitOfWork) -> Region:
    return Region(
        city_hospital=make_org(uow, name="湖州市第一人民医院", level="3"),
        county_hospital=make_org(uow, name="长兴县人民医院", level="2", division="330522"),
        township_centre=make_org(uow, name="织里镇卫生院", level="1"),
        out_of_region=make_org(uow, name="浙江省人民医院", level="3", division=HANGZHOU_SHANGCHENG),
        insurer=make_org(uow, name="湖州市医疗保障局", level=None),
        aid_fund=make_org(uow, name="湖州市民政局 医疗救助", level=None),
    )


def day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def make_encounter(uow: UnitOfWork, *, patient_id: str, org: str, inpatient: bool = False) -> str:
    return _create(
        uow,
        {
            "resourceType": "Encounter",
            "status": "in-progress",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "IMP" if inpatient else "AMB",
            },
            "subject": {"reference": f"Patient/{patient_id}"},
            "serviceProvider": {"reference": f"Organization/{org}"},
        },
    )


def make_charge_item(uow: UnitOfWork, *, patient_id: str, code: str, encounter: str | None = None) -> str:
    """A hospital's own ChargeItem in the shared record (what a charge line may bill)."""
    item: dict[str, Any] = {
        "resourceType": "ChargeItem",
        "status": "billable",
        "code": {
            "coding": [{"system": "https://yilian.example.cn/fhir/CodeSystem/charge-item", "code": code}]
        },
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    if encounter:
        item["context"] = {"reference": f"Encounter/{encounter}"}
    return _create(uow, item)
