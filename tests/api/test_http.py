"""The FHIR endpoint over real HTTP: content negotiation, headers, errors as OperationOutcome."""

from __future__ import annotations

import httpx
import pytest

from tests.support.server import RunningServer

FHIR_JSON = "application/fhir+json"


@pytest.fixture
def http(server: RunningServer, auth: dict[str, str]) -> httpx.Client:
    return httpx.Client(base_url=f"{server.base}/fhir", timeout=30.0, headers=auth)


def test_metadata_is_a_capability_statement(http: httpx.Client) -> None:
    r = http.get("/metadata")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(FHIR_JSON)
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    patient = next(x for x in cs["rest"][0]["resource"] if x["type"] == "Patient")
    assert {"read", "create", "search-type"} <= {i["code"] for i in patient["interaction"]}
    assert any(p["name"] == "name" for p in patient["searchParam"])


def test_create_read_with_headers(http: httpx.Client) -> None:
    r = http.post(
        "/Patient",
        json={"resourceType": "Patient", "name": [{"text": "李雷"}]},
        headers={"Content-Type": FHIR_JSON},
    )
    assert r.status_code == 201
    assert r.headers["etag"] == 'W/"1"' and "last-modified" in r.headers
    loc = r.headers["location"]
    got = http.get(loc.split("/fhir", 1)[1])
    assert got.status_code == 200 and got.json()["name"][0]["text"] == "李雷"
    head = http.head(loc.split("/fhir", 1)[1])
    assert head.status_code == 200 and head.content == b""


def test_bad_json_and_bad_type_are_operation_outcomes(http: httpx.Client) -> None:
    r = http.post("/Patient", content=b"{not json", headers={"Content-Type": FHIR_JSON})
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
    r = http.post("/Patient", content=b"<Patient/>", headers={"Content-Type": "application/fhir+xml"})
    assert r.status_code in (400, 415) and r.json()["resourceType"] == "OperationOutcome"
    r = http.get("/NotAType/1")
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"
    r = http.get("/Patient?_format=xml")
    assert r.status_code in (400, 406) and r.json()["resourceType"] == "OperationOutcome"
    r = http.request("DELETE", "/metadata")
    assert r.status_code == 405


def test_utf8_bom_is_tolerated(http: httpx.Client) -> None:
    body = b'\xef\xbb\xbf{"resourceType":"Patient","active":true}'
    r = http.post("/Patient", content=body, headers={"Content-Type": FHIR_JSON})
    assert r.status_code == 201


def test_json_patch_over_http(http: httpx.Client) -> None:
    made = http.post("/Patient", json={"resourceType": "Patient", "gender": "male"}).json()
    r = http.patch(
        f"/Patient/{made['id']}",
        content=b'[{"op":"replace","path":"/gender","value":"female"}]',
        headers={"Content-Type": "application/json-patch+json", "If-Match": 'W/"1"'},
    )
    assert r.status_code == 200 and r.json()["gender"] == "female"
    stale = http.patch(
        f"/Patient/{made['id']}",
        content=b'[{"op":"replace","path":"/gender","value":"male"}]',
        headers={"Content-Type": "application/json-patch+json", "If-Match": 'W/"1"'},
    )
    assert stale.status_code == 412


def test_post_search_and_paging_links(http: httpx.Client) -> None:
    for i in range(7):
        http.post(
            "/Patient", json={"resourceType": "Patient", "name": [{"family": "Pagetest", "given": [f"n{i}"]}]}
        )
    r = http.post("/Patient/_search", data={"family": "pagetest", "_count": "3"})
    assert r.status_code == 200
    bundle = r.json()
    seen = [e["resource"]["id"] for e in bundle["entry"]]
    assert bundle["total"] == 7
    nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
    while nxt:
        page = http.get(nxt[0]).json()
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
    assert len(seen) == 7 and len(set(seen)) == 7
    forged = http.get("/Patient?family=pagetest&_cursor=AAAAAAAAAAAAAAAAeyJ2IjpbMF19")
    assert forged.status_code == 400


def test_front_page_and_health(server: RunningServer) -> None:
    home = httpx.get(server.base + "/")
    assert home.status_code == 200 and "医联" in home.text and "/fhir/metadata" in home.text
    assert httpx.get(server.base + "/health/ready").json()["status"] == "ready"
