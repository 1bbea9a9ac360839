"""Every way a Patient enters the platform is matched by the patient index: a resident already
registered through FHIR REST and then loaded by ``yilian import``, by ``$import`` or sent as an
HL7 v2 ADT^A04 by another hospital is one person. Runs on SQLite and PostgreSQL; each path
commits in its own transactions, as it does in production."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.exchange.test_bulk_export import ASYNC, finish, send
from tests.support.auth import bearer, system_token
from tests.support.fhir_calls import call, entries
from yilian import mpi
from yilian.api.app import create_app
from yilian.api.wiring import platform_settings
from yilian.cli.transfer import run_import
from yilian.db import Database, UnitOfWork
from yilian.exchange import IntakeSettings
from yilian.exchange.intake import receive
from yilian.fhir import FhirContext
from yilian.kernel import naming
from yilian.security.clients import register_client


@dataclass(frozen=True)
class Resident:
    family: str
    given: str
    pinyin: str
    birth: str
    gender: str
    prc: str  # a valid resident ID number (GB 11643 check character)


# One resident per path, so that the tests stay apart in the module's database.
ZHANG_WEI = Resident("张", "伟", "ZHANG Wei", "1990-01-01", "male", "110105199001011232")
WANG_FANG = Resident("王", "芳", "Wang Fang", "1985-07-09", "female", "110105198507090025")
LI_NA = Resident("李", "娜", "Li Na", "1985-07-09", "female", "110105198507090041")


def registered(db: Database, r: Resident, mrn: str) -> str:
    """The resident registered at hospital A through FHIR REST, committed."""
    body = {
        "resourceType": "Patient",
        "identifier": [
            {"system": naming.PRC_RESIDENT_ID, "value": r.prc},
            {"system": naming.mrn_system("H330502A"), "value": mrn},
        ],
        "name": [{"family": r.family, "given": [r.given]}],
        "gender": r.gender,
        "birthDate": r.birth,
        "telecom": [{"system": "phone", "value": "13912340000"}],
    }
    with UnitOfWork(db, write=True) as uow:
        created = call(uow, FhirContext(settings=platform_settings()), "POST", "Patient", body)
        assert created.status == 201, created
        uow.commit()
    return str(created.json["id"])


def elsewhere(pid: str, r: Resident, org: str, mrn: str) -> dict[str, Any]:
    """The same resident as another hospital's system writes it: pinyin, its own record number."""
    return {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [
            {"system": naming.PRC_RESIDENT_ID, "value": r.prc},
            {"system": naming.mrn_system(org), "value": mrn},
        ],
        "name": [{"text": r.pinyin}],
        "gender": r.gender,
        "birthDate": r.birth,
    }


def person_of(db: Database, patient_id: str) -> str | None:
    with UnitOfWork(db) as uow:
        return mpi.person_of(uow, patient_id)


def test_a_resident_loaded_by_yilian_import_is_the_person_registered_before(
    db: Database, tmp_path: Path
) -> None:
    first = registered(db, ZHANG_WEI, "A-1")
    path = tmp_path / "Patient.ndjson"
    path.write_bytes(orjson.dumps(elsewhere("legacy-zhang-wei", ZHANG_WEI, "H330521A", "L-9")) + b"\n")
    assert run_import(db, platform_settings(), [path]) == 0
    assert person_of(db, first) == person_of(db, "legacy-zhang-wei") is not None


def test_a_resident_loaded_by_bulk_import_is_the_person_registered_before(
    db: Database, tmp_path: Path
) -> None:
    first = registered(db, WANG_FANG, "A-2")
    app = create_app(db, platform_settings(), bulk_dir=tmp_path / "bulk")
    operator = bearer(system_token(db, scopes="system/*.cruds", name="importer"))
    r = send(
        app,
        "POST",
        "/fhir/$import",
        headers={**ASYNC, **operator, "Content-Type": "application/fhir+ndjson"},
        content=orjson.dumps(elsewhere("bulk-wang-fang", WANG_FANG, "H330522A", "B-3")) + b"\n",
    )
    assert r.status_code == 202, r.text
    manifest = finish(app, r.headers["content-location"].removeprefix("http://testserver"), operator)
    assert manifest["error"] == [] and [(o["type"], o["count"]) for o in manifest["output"]] == [
        ("Patient", 1)
    ]
    assert person_of(db, first) == person_of(db, "bulk-wang-fang") is not None


@pytest.fixture(scope="module")
def gateway(db: Database) -> str:
    with UnitOfWork(db, write=True) as uow:
        client, _ = register_client(
            uow, name="HIS gateway", org_id=None, scopes="system/*.cruds", hl7_senders=("*",)
        )
        uow.commit()
    return client.client_id


def test_an_hl7_registration_of_a_resident_registered_through_fhir_is_the_same_person(
    db: Database, gateway: str
) -> None:
    first = registered(db, LI_NA, "A-3")
    # Another hospital's HIS registers her (ADT^A04): its record number, the ID number in PID-3.
    raw = (
        "MSH|^~\\&|HIS|HZ1Y|YILIAN|CITY|20261204093000||ADT^A04^ADT_A01|MPI-A04-1|P|2.5\r"
        "EVN|A04|20261204093000\r"
        f"PID|1||ZY-0042^^^HZ1Y^MR~{LI_NA.prc}^^^CHN^NI||李^娜||19850709|F|||人民路1号^^湖州市^浙江省^313000^CHN^H\r"
        "PV1|1|O|内科门诊||||||||||||||||MZ-0042^^^HZ1Y^VN\r"
    ).encode()
    outcome = receive(db, raw, settings=IntakeSettings(fhir=platform_settings()), client_id=gateway)
    assert outcome.code == "AA", outcome
    with UnitOfWork(db) as uow:
        found = entries(
            call(
                uow,
                FhirContext(settings=platform_settings()),
                "GET",
                f"Patient?identifier={naming.mrn_system('HZ1Y')}|ZY-0042",
            ).json
        )
    assert len(found) == 1 and found[0]["id"] != first
    assert person_of(db, first) == person_of(db, found[0]["id"]) is not None
