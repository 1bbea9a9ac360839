"""Real FHIR client libraries against a running server: fhirpy and fhirclient (SMART on FHIR)."""

from __future__ import annotations

import pytest
from fhirpy import SyncFHIRClient

from tests.support.server import RunningServer


@pytest.fixture
def fhirpy_client(server: RunningServer, operator_token: str) -> SyncFHIRClient:
    return SyncFHIRClient(f"{server.base}/fhir", authorization=f"Bearer {operator_token}")


def test_fhirpy_crud(fhirpy_client: SyncFHIRClient) -> None:
    patient = fhirpy_client.resource("Patient", name=[{"family": "韩", "given": ["梅梅"]}], gender="female")
    patient.save()
    assert patient.id
    fetched = fhirpy_client.reference("Patient", patient.id).to_resource()
    assert fetched["name"][0]["family"] == "韩"
    fetched["birthDate"] = "1990-02-03"
    fetched.save()
    again = fhirpy_client.reference("Patient", patient.id).to_resource()
    assert again["birthDate"] == "1990-02-03" and again["meta"]["versionId"] == "2"
    again.delete()
    found = fhirpy_client.resources("Patient").search(_id=patient.id).fetch_all()
    assert found == []


def test_fhirpy_paging_include_and_chain(fhirpy_client: SyncFHIRClient) -> None:
    org = fhirpy_client.resource("Organization", name="市第一人民医院")
    org.save()
    for i in range(25):
        p = fhirpy_client.resource(
            "Patient",
            name=[{"family": "Fhirpytest", "given": [f"g{i}"]}],
            managingOrganization={"reference": f"Organization/{org.id}"},
        )
        p.save()
        fhirpy_client.resource(
            "Observation",
            status="final",
            code={"text": "体温"},
            subject={"reference": f"Patient/{p.id}"},
            valueQuantity={
                "value": 36.5 + i / 10,
                "unit": "Cel",
                "system": "http://unitsofmeasure.org",
                "code": "Cel",
            },
        ).save()
    everyone = fhirpy_client.resources("Patient").search(family="fhirpytest").limit(7).fetch_all()
    assert len(everyone) == 25 and len({p.id for p in everyone}) == 25
    bundle = (
        fhirpy_client.resources("Patient")
        .search(family="fhirpytest")
        .include("Patient", "organization")
        .limit(50)
        .fetch_raw()
    )
    included = [e for e in bundle["entry"] if e["search"]["mode"] == "include"]
    assert [e["resource"]["id"] for e in included] == [org.id]
    chained = fhirpy_client.resources("Observation").search(subject__Patient__family="fhirpytest").fetch_all()
    assert len(chained) == 25
    hot = fhirpy_client.resources("Observation").search(value_quantity__gt=38).fetch_all()
    assert len([o for o in hot if o["subject"]["reference"].startswith("Patient/")]) >= 6


def test_fhirclient_reads_metadata_and_patients(server: RunningServer, operator_token: str) -> None:
    from fhirclient import client
    from fhirclient.models.patient import Patient

    smart = client.FHIRClient(settings={"app_id": "yilian-test", "api_base": f"{server.base}/fhir"})
    assert smart.server is not None
    smart.prepare()
    # The CapabilityStatement points SMART clients at our OAuth endpoints.
    assert smart.server.auth is not None and smart.server.auth.auth_type == "oauth2"
    assert smart.server.auth._token_uri == f"{server.base}/auth/token"
    # A backend-services token obtained elsewhere is presented on every request.
    smart.server.session.headers["Authorization"] = f"Bearer {operator_token}"
    caps = smart.server.capabilityStatement
    assert caps.fhirVersion == "4.0.1"
    made = Patient({"resourceType": "Patient", "name": [{"family": "Fhirclienttest", "given": ["Li"]}]})
    result = made.create(smart.server)
    assert result and result.get("id")
    read = Patient.read(result["id"], smart.server)
    assert read.name[0].family == "Fhirclienttest"
    search = list(Patient.where(struct={"family": "fhirclienttest"}).perform_resources_iter(smart.server))
    assert [p.id for p in search] == [result["id"]]
