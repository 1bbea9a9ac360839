"""Search over real HTTP: ``POST _search`` with a form body, and what only the HTTP layer decides."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import RunningServer

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def http(server: RunningServer, auth: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server.base}/fhir", timeout=30.0, headers=auth) as client:
        yield client


@pytest.fixture(scope="module")
def people(http: httpx.Client) -> dict[str, str]:
    """Four patients of one family name, made once per server (the server's database is not rolled back)."""
    made: dict[str, str] = {}
    for key, given, gender, birth in (
        ("wei", "伟", "male", "1990-02-01"),
        ("fang", "芳", "female", "1992-07-09"),
        ("lei", "磊", "male", "1988-11-30"),
        ("na", "娜", "female", "1990-12-31"),
    ):
        body = {
            "resourceType": "Patient",
            "name": [{"family": "韩", "given": [given]}],
            "gender": gender,
            "birthDate": birth,
        }
        r = http.post("/Patient", json=body)
        assert r.status_code == 201, r.text
        made[key] = r.json()["id"]
    return made


def ids(bundle: dict[str, object]) -> set[str]:
    entries = bundle.get("entry", [])
    assert isinstance(entries, list)
    return {e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"}


def test_form_body_is_searched_like_a_query_string(http: httpx.Client, people: dict[str, str]) -> None:
    r = http.post("/Patient/_search", data={"name": "韩", "gender": "female"})
    assert r.status_code == 200, r.text
    assert ids(r.json()) == {people["fang"], people["na"]}
    assert ids(http.get("/Patient", params={"name": "韩", "gender": "female"}).json()) == {
        people["fang"],
        people["na"],
    }


def test_form_body_and_url_parameters_combine(http: httpx.Client, people: dict[str, str]) -> None:
    # Parameters in the URL and in the body are one search: ANDed.
    r = http.post("/Patient/_search?gender=male", data={"name": "韩"})
    assert ids(r.json()) == {people["wei"], people["lei"]}
    # Repeated names AND, commas OR, in the body as in a URL.
    r = http.post("/Patient/_search", content="name=韩&birthdate=ge1990&birthdate=lt1991", headers=FORM)
    assert ids(r.json()) == {people["wei"], people["na"]}
    r = http.post(
        "/Patient/_search", content="name=%E9%9F%A9%E4%BC%9F,%E9%9F%A9%E7%A3%8A", headers=FORM
    )  # 韩伟,韩磊
    assert ids(r.json()) == {people["wei"], people["lei"]}


def test_form_body_dates_with_time_zones(http: httpx.Client, people: dict[str, str]) -> None:
    # In a form body '+' means a space: the offset must be sent as %2B (httpx does that).
    r = http.post("/Patient/_search", data={"name": "韩", "birthdate": "lt1990-02-01T08:00:00+08:00"})
    assert ids(r.json()) == {people["lei"]}


def test_system_search_by_post(http: httpx.Client, people: dict[str, str]) -> None:
    r = http.post("/_search", data={"_type": "Patient", "_id": f"{people['wei']},{people['na']}"})
    assert r.status_code == 200, r.text
    assert ids(r.json()) == {people["wei"], people["na"]}


def test_paging_after_a_post_search_goes_on_by_get(http: httpx.Client, people: dict[str, str]) -> None:
    r = http.post("/Patient/_search", data={"name": "韩", "_count": "1", "_sort": "birthdate"})
    bundle = r.json()
    seen = [e["resource"]["id"] for e in bundle["entry"]]
    nxt = next((lk["url"] for lk in bundle["link"] if lk["relation"] == "next"), None)
    while nxt:
        # The links carry the form's parameters: a plain GET continues the search.
        assert "name=" in nxt and "_cursor=" in nxt
        page = http.get(nxt).json()
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        nxt = next((lk["url"] for lk in page["link"] if lk["relation"] == "next"), None)
    assert seen == [people["lei"], people["wei"], people["na"], people["fang"]]


def test_strict_handling_over_http(http: httpx.Client, people: dict[str, str]) -> None:
    lenient = http.post("/Patient/_search", data={"name": "韩", "colour": "red"})
    assert lenient.status_code == 200
    assert any(e["search"]["mode"] == "outcome" for e in lenient.json()["entry"])
    strict = http.post(
        "/Patient/_search", data={"name": "韩", "colour": "red"}, headers={"Prefer": "handling=strict"}
    )
    assert strict.status_code == 400 and strict.json()["resourceType"] == "OperationOutcome"


def test_get_on_search_endpoint_is_not_allowed(http: httpx.Client) -> None:
    assert http.get("/Patient/_search", params={"name": "韩"}).status_code == 405
