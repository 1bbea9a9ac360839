"""Shared builders for the health-card tests: a FHIR context wired like the platform (the patient
index observes every Patient write) and typed Patient builders."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.support.fhir_calls import call
from yilian.api.wiring import platform_settings
from yilian.db import UnitOfWork
from yilian.fhir import FhirContext
from yilian.kernel import naming, prc_id

MRN_A = naming.mrn_system("card-hosp-a")
MRN_B = naming.mrn_system("card-hosp-b")


def resident_id(
    division: str = "330502", born: dt.date = dt.date(1980, 5, 17), sex: prc_id.Sex = "female", seq: int = 42
) -> str:
    return prc_id.generate(division, born, sex, seq)


def make_patient(
    uow: UnitOfWork,
    ctx: FhirContext,
    *,
    family: str = "王",
    given: str = "芳",
    born: str = "1980-05-17",
    gender: str = "female",
    prc: str | None = None,
    mrn: tuple[str, str] | None = None,
    district: str | None = None,
) -> str:
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [{"use": "official", "family": family, "given": [given]}],
        "birthDate": born,
        "gender": gender,
        "identifier": [],
    }
    if prc:
        body["identifier"].append({"system": naming.PRC_RESIDENT_ID, "value": prc})
    if mrn:
        body["identifier"].append({"system": mrn[0], "value": mrn[1]})
    if not body["identifier"]:
        del body["identifier"]
    if district:
        body["address"] = [{"use": "home", "district": district}]
    created = call(uow, ctx, "POST", "Patient", body)
    assert created.status == 201, created
    return str(created.json["id"])


@pytest.fixture
def cctx() -> FhirContext:
    return FhirContext(base_url="http://testserver/fhir", settings=platform_settings({}))
