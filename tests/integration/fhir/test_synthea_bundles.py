"""The 20 Synthea patient bundles load as transactions; compartment counts and $everything are whole."""

from __future__ import annotations

import csv
from typing import Any

import orjson
import pytest

from tests.conftest import SHARED
from tests.support.fhir_calls import call
from yilian.db import Database, UnitOfWork
from yilian.db.uow import transact
from yilian.fhir import FhirContext, FhirRequest, FhirSettings, dispatch

SYNTHEA = SHARED / "synthea-fhir-r4"
MANIFEST = list(csv.DictReader((SYNTHEA / "MANIFEST.csv").open(encoding="utf-8")))
CTX = FhirContext(base_url="http://testserver/fhir", settings=FhirSettings())
COUNTED = (
    "Encounter",
    "Observation",
    "Immunization",
    "Condition",
    "Procedure",
    "Claim",
    "ExplanationOfBenefit",
    "MedicationRequest",
)


@pytest.fixture(scope="module")
def loaded(db: Database) -> dict[str, dict[str, Any]]:
    """file -> {"patient": server id, "response": transaction-response, "bundle": original}."""
    out = {}
    for row in MANIFEST:
        bundle = orjson.loads((SYNTHEA / row["file"]).read_bytes())
        resp = transact(db, lambda uow, b=bundle: dispatch(uow, CTX, FhirRequest("POST", "", body=b)))
        assert resp.status == 200
        body = orjson.loads(resp.body or b"{}")
        patient_loc = next(
            e["response"]["location"]
            for e, src in zip(body["entry"], bundle["entry"], strict=True)
            if src["resource"]["resourceType"] == "Patient"
        )
        out[row["file"]] = {"patient": patient_loc.split("/")[1], "response": body, "bundle": bundle}
    return out


@pytest.mark.parametrize(
    "row", MANIFEST, ids=[r["file"].split("_")[0] + "_" + r["file"].split("_")[1] for r in MANIFEST]
)
def test_bundle_loads_with_every_entry_created(loaded: dict[str, Any], row: dict[str, str]) -> None:
    info = loaded[row["file"]]
    entries = info["response"]["entry"]
    assert len(entries) == int(row["entries"])
    assert all(e["response"]["status"].startswith("201") for e in entries)
    assert all(e["response"]["location"].count("/") == 3 for e in entries)  # Type/id/_history/1


@pytest.mark.parametrize(
    "row", MANIFEST, ids=[r["file"].split("_")[0] + "_" + r["file"].split("_")[1] for r in MANIFEST]
)
def test_compartment_counts_match_manifest(db: Database, loaded: dict[str, Any], row: dict[str, str]) -> None:
    pid = loaded[row["file"]]["patient"]
    with UnitOfWork(db) as uow:
        for rtype in COUNTED:
            by_param = call(uow, CTX, "GET", f"{rtype}?patient={pid}&_summary=count").json
            assert by_param["total"] == int(row[rtype]), (rtype, by_param)
            compartment = call(uow, CTX, "GET", f"Patient/{pid}/{rtype}?_summary=count").json
            assert compartment["total"] == int(row[rtype]), rtype


@pytest.mark.parametrize(
    "row", MANIFEST, ids=[r["file"].split("_")[0] + "_" + r["file"].split("_")[1] for r in MANIFEST]
)
def test_no_urn_uuid_left_and_identity_searches(
    db: Database, loaded: dict[str, Any], row: dict[str, str]
) -> None:
    pid = loaded[row["file"]]["patient"]
    with UnitOfWork(db) as uow:
        patient = call(uow, CTX, "GET", f"Patient/{pid}").json
        assert patient["name"][0]["family"] == row["family"]
        by_mr = call(
            uow, CTX, "GET", f"Patient?identifier=http://hospital.smarthealthit.org|{row['MR']}"
        ).json
        assert [e["resource"]["id"] for e in by_mr["entry"]] == [pid]
        by_demo = call(uow, CTX, "GET", f"Patient?family={row['family']}&birthdate={row['birthDate']}").json
        assert pid in {e["resource"]["id"] for e in by_demo["entry"]}
        hist = call(uow, CTX, "GET", f"Patient/{pid}/_history").json
        assert [e["resource"]["meta"]["versionId"] for e in hist["entry"]] == ["1"]
        everything = _everything(uow, pid)
    assert b"urn:uuid:" not in orjson.dumps(everything)


def _everything(uow: UnitOfWork, pid: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    url = f"Patient/{pid}/$everything?_count=100"
    while url:
        page = call(uow, CTX, "GET", url).json
        out += [e["resource"] for e in page.get("entry", [])]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url = nxt[0].split("/fhir/", 1)[1] if nxt else ""
    return out


@pytest.mark.parametrize(
    "row", MANIFEST, ids=[r["file"].split("_")[0] + "_" + r["file"].split("_")[1] for r in MANIFEST]
)
def test_everything_returns_every_resource_of_the_bundle(
    db: Database, loaded: dict[str, Any], row: dict[str, str]
) -> None:
    info = loaded[row["file"]]
    created = {e["response"]["location"].rsplit("/_history", 1)[0] for e in info["response"]["entry"]}
    with UnitOfWork(db) as uow:
        got = _everything(uow, info["patient"])
    keys = [f"{r['resourceType']}/{r['id']}" for r in got]
    assert len(keys) == len(set(keys)), "no resource twice"
    assert created <= set(keys)
