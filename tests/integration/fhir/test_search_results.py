"""What a search returns: sorting, paging, counts, summaries, system and compartment searches, $everything."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.support.fhir_calls import call, ids
from yilian.db import UnitOfWork
from yilian.fhir import FhirContext, FhirSettings
from yilian.kernel import clock

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


def put(uow: UnitOfWork, ctx: FhirContext, resource: dict[str, Any]) -> None:
    r = call(uow, ctx, "PUT", f"{resource['resourceType']}/{resource['id']}", resource)
    assert r.status in (200, 201), r


def search(uow: UnitOfWork, ctx: FhirContext, url: str, method: str = "GET") -> dict[str, Any]:
    r = call(uow, ctx, method, url)
    assert r.status == 200, (url, r)
    body: dict[str, Any] = r.json
    return body


def order(uow: UnitOfWork, ctx: FhirContext, url: str) -> list[str]:
    return [
        e["resource"]["id"] for e in search(uow, ctx, url).get("entry", []) if e["search"]["mode"] == "match"
    ]


def refused(uow: UnitOfWork, ctx: FhirContext, url: str) -> None:
    r = call(uow, ctx, "GET", url)
    assert r.status == 400, (url, r)
    assert r.json["resourceType"] == "OperationOutcome"


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((lk["url"] for lk in bundle["link"] if lk["relation"] == relation), None)


def relative(ctx: FhirContext, url: str) -> str:
    """A link as the in-process caller takes it: relative to the base."""
    assert url.startswith(ctx.base_url), url
    return url[len(ctx.base_url) :].lstrip("/")


def walk(
    uow: UnitOfWork, ctx: FhirContext, url: str, between: Callable[[int], None] | None = None
) -> list[list[str]]:
    """Follow ``next`` links from ``url``; ``between(n)`` runs after page n is read."""
    pages: list[list[str]] = []
    current: str | None = url
    while current is not None:
        bundle = search(uow, ctx, current)
        pages.append([e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"])
        assert len(pages) < 50, "paging does not end"
        nxt = link(bundle, "next")
        current = relative(ctx, nxt) if nxt else None
        if between is not None:
            between(len(pages))
    return pages


@pytest.fixture
def ticking_clock() -> Iterator[None]:
    """Every write one second after the last, from 2024-01-01: lastUpdated orders are exact."""
    seconds = itertools.count()
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    clock.set_clock(lambda: start + dt.timedelta(seconds=next(seconds)))
    try:
        yield
    finally:
        clock.set_clock(None)


# --- _sort ----------------------------------------------------------------------------------


@pytest.fixture
def sortable(uow: UnitOfWork, ctx: FhirContext, ticking_clock: None) -> None:
    put(
        uow,
        ctx,
        {
            "resourceType": "Patient",
            "id": "s1",
            "gender": "female",
            "birthDate": "1990-01-01",
            "name": [{"family": "Adams", "given": ["Zoe"]}],
        },
    )
    put(
        uow,
        ctx,
        {
            "resourceType": "Patient",
            "id": "s2",
            "gender": "male",
            "birthDate": "1985-06-15",
            "name": [{"family": "白", "given": ["雪"]}],
        },
    )
    put(
        uow,
        ctx,
        {
            "resourceType": "Patient",
            "id": "s3",
            "gender": "male",
            "birthDate": "1990-01-01",
            "name": [{"family": "Chen", "given": ["Hao"]}],
        },
    )
    put(uow, ctx, {"resourceType": "Patient", "id": "s4", "gender": "female", "name": [{"family": "Baker"}]})
    put(uow, ctx, {"resourceType": "Patient", "id": "s5", "birthDate": "1970"})

    def obs(oid: str, code: str, **extra: Any) -> None:
        put(
            uow,
            ctx,
            {
                "resourceType": "Observation",
                "id": oid,
                "status": "final",
                "code": {"coding": [{"system": LOINC, "code": code}]},
                **extra,
            },
        )

    def mmhg(value: float) -> dict[str, Any]:
        return {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}

    obs(
        "ob-a",
        "8480-6",
        subject={"reference": "Patient/s2"},
        valueQuantity=mmhg(150),
        effectiveDateTime="2024-01-03",
    )
    obs(
        "ob-b",
        "2339-0",
        subject={"reference": "Patient/s1"},
        effectiveDateTime="2024-01-01",
        valueQuantity={"value": 97, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"},
    )
    obs(
        "ob-c",
        "8462-4",
        subject={"reference": "Patient/s3"},
        valueQuantity=mmhg(95),
        effectiveDateTime="2024-01-02",
    )
    obs("ob-d", "8480-6")
    for rid, probability in (("ra-1", 0.8), ("ra-2", 0.1), ("ra-3", None)):
        ra: dict[str, Any] = {
            "resourceType": "RiskAssessment",
            "id": rid,
            "status": "final",
            "subject": {"reference": "Patient/s1"},
        }
        if probability is not None:
            ra["prediction"] = [{"probabilityDecimal": probability}]
        put(uow, ctx, ra)
    for vid, url in (
        ("vs-b", "http://example.org/fhir/ValueSet/b"),
        ("vs-a", "http://example.org/fhir/ValueSet/a"),
        ("vs-none", None),
        ("vs-c", "http://example.org/fhir/ValueSet/c"),
    ):
        vs: dict[str, Any] = {"resourceType": "ValueSet", "id": vid, "status": "active"}
        if url:
            vs["url"] = url
        put(uow, ctx, vs)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("Patient?_sort=family", ["s1", "s4", "s3", "s2", "s5"]),  # string; no name sorts last
        ("Patient?_sort=-family", ["s2", "s3", "s4", "s1", "s5"]),  # ...also descending
        ("Patient?_sort=birthdate", ["s5", "s2", "s1", "s3", "s4"]),  # date; ties keep a stable order
        ("Patient?_sort=-birthdate", ["s1", "s3", "s2", "s5", "s4"]),
        ("Patient?_sort=gender,-birthdate", ["s1", "s4", "s3", "s2", "s5"]),  # token, then date
        ("Patient?_sort=-gender,family", ["s3", "s2", "s1", "s4", "s5"]),
        ("Patient?_sort=_id", ["s1", "s2", "s3", "s4", "s5"]),
        ("Patient?_sort=-_lastUpdated", ["s5", "s4", "s3", "s2", "s1"]),
        ("Observation?_sort=code", ["ob-b", "ob-c", "ob-a", "ob-d"]),  # token
        ("Observation?_sort=-code", ["ob-a", "ob-d", "ob-c", "ob-b"]),
        ("Observation?_sort=subject", ["ob-b", "ob-a", "ob-c", "ob-d"]),  # reference
        ("Observation?_sort=value-quantity", ["ob-c", "ob-b", "ob-a", "ob-d"]),  # quantity
        ("Observation?_sort=-value-quantity", ["ob-a", "ob-b", "ob-c", "ob-d"]),
        ("Observation?_sort=date", ["ob-b", "ob-c", "ob-a", "ob-d"]),
        ("Observation?_sort=-date", ["ob-a", "ob-c", "ob-b", "ob-d"]),
        ("Observation?_sort=code,-value-quantity", ["ob-b", "ob-c", "ob-a", "ob-d"]),
        ("RiskAssessment?_sort=probability", ["ra-2", "ra-1", "ra-3"]),  # number
        ("RiskAssessment?_sort=-probability", ["ra-1", "ra-2", "ra-3"]),
        ("ValueSet?_sort=url", ["vs-a", "vs-b", "vs-c", "vs-none"]),  # uri
        ("ValueSet?_sort=-url", ["vs-c", "vs-b", "vs-a", "vs-none"]),
    ],
)
def test_sort(uow: UnitOfWork, ctx: FhirContext, sortable: None, url: str, expected: list[str]) -> None:
    assert order(uow, ctx, url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "Patient?_sort=family,gender",
        "Patient?_sort=-birthdate",
        "Patient?_sort=gender,-birthdate",
        "Observation?_sort=-value-quantity",
        "RiskAssessment?_sort=-probability",
        "Patient?_sort=-_lastUpdated",
    ],
)
def test_sort_is_stable_across_pages(uow: UnitOfWork, ctx: FhirContext, sortable: None, url: str) -> None:
    whole = order(uow, ctx, url)
    for count in (1, 2, 3):
        assert list(itertools.chain.from_iterable(walk(uow, ctx, f"{url}&_count={count}"))) == whole


def test_sort_by_a_parameter_that_cannot_be_sorted_is_400(
    uow: UnitOfWork, ctx: FhirContext, sortable: None
) -> None:
    refused(uow, ctx, "Observation?_sort=code-value-quantity")
    refused(uow, ctx, "Patient?_sort=_content")


# --- _count and _total ----------------------------------------------------------------------


@pytest.fixture
def seven(uow: UnitOfWork, ctx: FhirContext) -> None:
    for n in range(1, 8):
        put(
            uow,
            ctx,
            {"resourceType": "Patient", "id": f"pg-{n}", "name": [{"family": "Page", "given": [f"G{n}"]}]},
        )
    put(uow, ctx, {"resourceType": "Patient", "id": "other", "name": [{"family": "Other"}]})


def test_count(uow: UnitOfWork, ctx: FhirContext, seven: None) -> None:
    none = search(uow, ctx, "Patient?family=page&_count=0")
    assert none["total"] == 7 and "entry" not in none and link(none, "next") is None
    one = search(uow, ctx, "Patient?family=page&_count=1")
    assert len(one["entry"]) == 1 and one["total"] == 7 and link(one, "next")
    large = search(uow, ctx, "Patient?family=page&_count=500")
    assert len(large["entry"]) == 7 and link(large, "next") is None
    capped = search(uow, ctx, "Patient?family=page&_count=5000")
    assert len(capped["entry"]) == 7
    assert ("_count", "1000") in parse_qsl(urlsplit(link(capped, "self") or "").query)


def test_page_sizes_come_from_the_deployment(uow: UnitOfWork, seven: None) -> None:
    small = FhirContext(
        base_url="http://testserver/fhir", settings=FhirSettings(default_page_size=2, max_page_size=3)
    )
    assert len(search(uow, small, "Patient?family=page")["entry"]) == 2
    capped = search(uow, small, "Patient?family=page&_count=10")
    assert len(capped["entry"]) == 3
    assert ("_count", "3") in parse_qsl(urlsplit(link(capped, "self") or "").query)
    assert len(walk(uow, small, "Patient?family=page")) == 4  # 2 + 2 + 2 + 1


def test_total(uow: UnitOfWork, ctx: FhirContext, seven: None) -> None:
    assert "total" not in search(uow, ctx, "Patient?family=page&_total=none&_count=2")
    assert search(uow, ctx, "Patient?family=page&_total=accurate&_count=2")["total"] == 7
    assert search(uow, ctx, "Patient?family=page&_total=estimate&_count=2")["total"] == 7
    assert search(uow, ctx, "Patient?family=page&_count=2")["total"] == 7  # accurate unless told otherwise


# --- paging ---------------------------------------------------------------------------------


def test_paging_walks_every_match_once(uow: UnitOfWork, ctx: FhirContext, seven: None) -> None:
    pages = walk(uow, ctx, "Patient?family=page&_count=3")
    assert [len(p) for p in pages] == [3, 3, 1]
    flat = list(itertools.chain.from_iterable(pages))
    assert sorted(flat) == [f"pg-{n}" for n in range(1, 8)]


def test_paging_has_no_gaps_or_duplicates_while_resources_are_created(
    uow: UnitOfWork, ctx: FhirContext, seven: None
) -> None:
    def create(page: int) -> None:
        # One new match that sorts before everything already paged and one that sorts after.
        put(
            uow,
            ctx,
            {
                "resourceType": "Patient",
                "id": f"new-a{page}",
                "name": [{"family": "Page", "given": [f"A{page}"]}],
            },
        )
        put(
            uow,
            ctx,
            {
                "resourceType": "Patient",
                "id": f"new-z{page}",
                "name": [{"family": "Page", "given": [f"Z{page}"]}],
            },
        )

    for url in (
        "Patient?family=page&_count=3",
        "Patient?family=page&_sort=given&_count=3",
        "Patient?family=page&_sort=-given&_count=2",
    ):
        flat = list(itertools.chain.from_iterable(walk(uow, ctx, url, between=create)))
        assert len(flat) == len(set(flat)), flat  # no duplicates
        assert {f"pg-{n}" for n in range(1, 8)} <= set(flat)  # no gaps
        for pid in [
            p for p in ids(search(uow, ctx, "Patient?_id:not=other&_count=1000")) if p.startswith("new-")
        ]:
            call(uow, ctx, "DELETE", f"Patient/{pid}")


def test_paging_skips_resources_deleted_before_their_page(
    uow: UnitOfWork, ctx: FhirContext, seven: None
) -> None:
    def delete(page: int) -> None:
        if page == 1:
            assert call(uow, ctx, "DELETE", "Patient/pg-7").status == 204

    flat = list(itertools.chain.from_iterable(walk(uow, ctx, "Patient?family=page&_count=3", between=delete)))
    assert flat == [f"pg-{n}" for n in range(1, 7)]


def test_links(uow: UnitOfWork, ctx: FhirContext, seven: None) -> None:
    first_page = search(uow, ctx, "Patient?family=page&_count=3")
    self_url, first_url, next_url = (
        link(first_page, "self"),
        link(first_page, "first"),
        link(first_page, "next"),
    )
    assert self_url and first_url and next_url
    assert self_url.startswith("http://testserver/fhir/Patient?")
    assert dict(parse_qsl(urlsplit(self_url).query)) == {"family": "page", "_count": "3"}
    assert first_url == self_url
    assert "_cursor" in dict(parse_qsl(urlsplit(next_url).query))
    second_page = search(uow, ctx, relative(ctx, next_url))
    # The second page's self link is that page; its first link goes back to the start.
    assert link(second_page, "self") == next_url
    assert link(second_page, "first") == first_url
    assert order(uow, ctx, relative(ctx, first_url)) == [e["resource"]["id"] for e in first_page["entry"]]


def test_tampered_or_foreign_cursor_is_400(uow: UnitOfWork, ctx: FhirContext, seven: None) -> None:
    next_url = link(search(uow, ctx, "Patient?family=page&_count=3"), "next")
    assert next_url
    cursor = dict(parse_qsl(urlsplit(next_url).query))["_cursor"]
    flipped = cursor[:-3] + ("A" if cursor[-3] != "A" else "B") + cursor[-2:]
    refused(uow, ctx, f"Patient?family=page&_count=3&_cursor={flipped}")
    refused(uow, ctx, "Patient?family=page&_count=3&_cursor=not-a-cursor")
    refused(uow, ctx, f"Patient?family=other&_count=3&_cursor={cursor}")  # another query's cursor
    refused(uow, ctx, f"Patient?family=page&_count=3&_sort=given&_cursor={cursor}")


# --- _summary and _elements -----------------------------------------------------------------


@pytest.fixture
def detailed(uow: UnitOfWork, ctx: FhirContext) -> None:
    put(
        uow,
        ctx,
        {
            "resourceType": "Patient",
            "id": "rich",
            "meta": {"tag": [{"system": "http://example.org/tags", "code": "vip"}]},
            "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">刘洋</div>'},
            "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": "310104198203153218"}],
            "name": [{"family": "刘", "given": ["洋"]}],
            "gender": "male",
            "birthDate": "1982-03-15",
            "maritalStatus": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M"}]
            },
            "contact": [{"name": {"family": "刘", "given": ["梅"]}}],
            "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "zh-CN"}]}}],
        },
    )
    put(
        uow,
        ctx,
        {
            "resourceType": "Observation",
            "id": "rich-obs",
            "status": "final",
            "text": {
                "status": "generated",
                "div": '<div xmlns="http://www.w3.org/1999/xhtml">血糖 97 mg/dL</div>',
            },
            "code": {"coding": [{"system": LOINC, "code": "2339-0"}]},
            "subject": {"reference": "Patient/rich"},
            "valueQuantity": {"value": 97, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"},
            "note": [{"text": "空腹"}],
        },
    )


def first_resource(uow: UnitOfWork, ctx: FhirContext, url: str) -> dict[str, Any]:
    bundle = search(uow, ctx, url)
    resource: dict[str, Any] = bundle["entry"][0]["resource"]
    return resource


def subsetted(resource: dict[str, Any]) -> bool:
    return SUBSETTED in [
        {"system": t.get("system"), "code": t.get("code")} for t in resource.get("meta", {}).get("tag", [])
    ]


def test_summary_true(uow: UnitOfWork, ctx: FhirContext, detailed: None) -> None:
    res = first_resource(uow, ctx, "Patient?_id=rich&_summary=true")
    assert {"resourceType", "id", "meta", "identifier", "name", "gender", "birthDate"} <= set(res)
    assert not {"text", "maritalStatus", "contact", "communication"} & set(res)
    assert subsetted(res)
    assert {"system": "http://example.org/tags", "code": "vip"} in res["meta"]["tag"]  # own tags kept
    assert res["meta"]["versionId"] == "1"


def test_summary_text_keeps_narrative_and_mandatory_elements(
    uow: UnitOfWork, ctx: FhirContext, detailed: None
) -> None:
    patient = first_resource(uow, ctx, "Patient?_id=rich&_summary=text")
    assert set(patient) == {"resourceType", "id", "meta", "text"} and subsetted(patient)
    obs = first_resource(uow, ctx, "Observation?_id=rich-obs&_summary=text")
    assert set(obs) == {"resourceType", "id", "meta", "text", "status", "code"}


def test_summary_data_drops_only_the_narrative(uow: UnitOfWork, ctx: FhirContext, detailed: None) -> None:
    full = first_resource(uow, ctx, "Patient?_id=rich")
    data = first_resource(uow, ctx, "Patient?_id=rich&_summary=data")
    assert set(data) == set(full) - {"text"} and subsetted(data)
    assert data["contact"] == full["contact"]


def test_summary_count_and_false(uow: UnitOfWork, ctx: FhirContext, detailed: None) -> None:
    counted = search(uow, ctx, "Patient?_id=rich&_summary=count")
    assert counted["total"] == 1 and "entry" not in counted
    counted = search(uow, ctx, "Patient?_id=rich&_summary=count&_total=none")
    assert counted["total"] == 1
    full = first_resource(uow, ctx, "Patient?_id=rich&_summary=false")
    assert full == call(uow, ctx, "GET", "Patient/rich").json and not subsetted(full)


@pytest.mark.parametrize(
    ("url", "keys"),
    [
        ("Patient?_id=rich&_elements=name,gender", {"name", "gender"}),
        ("Patient?_id=rich&_elements=birthDate", {"birthDate"}),
        ("Observation?_id=rich-obs&_elements=subject", {"subject", "status", "code"}),  # mandatory kept
        (
            "Observation?_id=rich-obs&_elements=value",
            {"valueQuantity", "status", "code"},
        ),  # choice by its name
        ("Observation?_id=rich-obs&_elements=valueQuantity", {"valueQuantity", "status", "code"}),
    ],
)
def test_elements(uow: UnitOfWork, ctx: FhirContext, detailed: None, url: str, keys: set[str]) -> None:
    res = first_resource(uow, ctx, url)
    assert set(res) == {"resourceType", "id", "meta"} | keys
    assert subsetted(res)


def test_summary_applies_to_included_resources(uow: UnitOfWork, ctx: FhirContext, detailed: None) -> None:
    bundle = search(uow, ctx, "Observation?_id=rich-obs&_include=Observation:subject&_summary=true")
    patient = next(e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "include")
    assert "contact" not in patient and subsetted(patient)


# --- system-level search and _search by POST ------------------------------------------------


def test_system_search(uow: UnitOfWork, ctx: FhirContext, sortable: None) -> None:
    assert ids(search(uow, ctx, "?_type=Patient,Observation&_id=s1,ob-a,ra-1")) == {"s1", "ob-a"}
    assert ids(search(uow, ctx, "?_id=s1,ob-a,ra-1")) == {"s1", "ob-a", "ra-1"}
    # ticking_clock: s1 was written at 00:00:00, s2 at 00:00:01, ... ob-a (the sixth write) at 00:00:05.
    assert ids(search(uow, ctx, "?_type=Patient,Observation&_lastUpdated=le2024-01-01T00:00:05Z")) == {
        "s1",
        "s2",
        "s3",
        "s4",
        "s5",
        "ob-a",
    }
    assert ids(search(uow, ctx, "?_lastUpdated=2024-01-01T00:00:05Z")) == {"ob-a"}
    assert order(uow, ctx, "?_type=Patient,Observation&_sort=-_lastUpdated&_count=3") == [
        "ob-d",
        "ob-c",
        "ob-b",
    ]
    assert ids(search(uow, ctx, "?_type=Patient&family=adams")) == {"s1"}
    bundle = search(uow, ctx, "?_type=Patient,Observation&_id=s1")
    assert link(bundle, "self") == "http://testserver/fhir?_type=Patient%2CObservation&_id=s1"


@pytest.mark.parametrize(
    "url",
    [
        "?_type=Patient,Observation&family=adams",  # not a parameter of Observation
        "?_type=Nope",
        "?_type=Patient,Observation&_sort=family",  # sorting by a type's own parameter needs one type
    ],
)
def test_system_search_errors(uow: UnitOfWork, ctx: FhirContext, sortable: None, url: str) -> None:
    refused(uow, ctx, url)


def test_post_search_takes_parameters_like_get(uow: UnitOfWork, ctx: FhirContext, sortable: None) -> None:
    # (A form-encoded body is merged by the HTTP layer: tests/api/test_search_http.py.)
    assert ids(search(uow, ctx, "Patient/_search?family=adams,chen", method="POST")) == {"s1", "s3"}
    assert ids(search(uow, ctx, "_search?_type=Patient&_id=s2", method="POST")) == {"s2"}
    assert call(uow, ctx, "GET", "Patient/_search?family=adams").status == 405


# --- compartments and $everything -----------------------------------------------------------


@pytest.fixture
def chart(uow: UnitOfWork, ctx: FhirContext, ticking_clock: None) -> None:
    """ev-p's record, the things it refers to, and ev-q's record next to it."""
    put(uow, ctx, {"resourceType": "Organization", "id": "ev-org", "name": "上海市第六人民医院"})
    put(
        uow, ctx, {"resourceType": "Practitioner", "id": "ev-pr", "name": [{"family": "周", "given": ["静"]}]}
    )
    put(
        uow,
        ctx,
        {
            "resourceType": "Medication",
            "id": "ev-med",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "387458008"}]},
        },
    )
    put(
        uow,
        ctx,
        {
            "resourceType": "Patient",
            "id": "ev-p",
            "name": [{"family": "孙", "given": ["丽"]}],
            "managingOrganization": {"reference": "Organization/ev-org"},
        },
    )
    put(uow, ctx, {"resourceType": "Patient", "id": "ev-q", "name": [{"family": "Qian"}]})
    put(
        uow,
        ctx,
        {
            "resourceType": "Encounter",
            "id": "ev-e",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "Patient/ev-p"},
            "serviceProvider": {"reference": "Organization/ev-org"},
        },
    )
    for oid, subject, code, extra in (
        (
            "ev-o1",
            "Patient/ev-p",
            "8480-6",
            {
                "performer": [{"reference": "Practitioner/ev-pr"}],
                "encounter": {"reference": "Encounter/ev-e"},
            },
        ),
        ("ev-o2", "Patient/ev-p", "8462-4", {}),
        (
            "ev-q-o",
            "Patient/ev-q",
            "8480-6",
            {"performer": [{"reference": "Patient/ev-p"}]},
        ),  # ev-p measured ev-q
    ):
        put(
            uow,
            ctx,
            {
                "resourceType": "Observation",
                "id": oid,
                "status": "final",
                "code": {"coding": [{"system": LOINC, "code": code}]},
                "subject": {"reference": subject},
                **extra,
            },
        )
    put(
        uow,
        ctx,
        {
            "resourceType": "MedicationRequest",
            "id": "ev-mr",
            "status": "active",
            "intent": "order",
            "medicationReference": {"reference": "Medication/ev-med"},
            "subject": {"reference": "Patient/ev-p"},
        },
    )


EV_P = {"ev-p", "ev-e", "ev-o1", "ev-o2", "ev-q-o", "ev-mr"}  # the compartment
EV_REFERRED = {"ev-org", "ev-pr", "ev-med", "ev-q"}  # what it refers to


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("Patient/ev-p/Observation", {"ev-o1", "ev-o2", "ev-q-o"}),  # subject or performer
        ("Patient/ev-p/Observation?code=8462-4", {"ev-o2"}),
        ("Patient/ev-q/Observation", {"ev-q-o"}),
        ("Patient/ev-p/Encounter", {"ev-e"}),
        ("Patient/ev-p/Patient", {"ev-p"}),
        ("Patient/ev-p/*", EV_P),
        ("Patient/ev-p/*?_type=Observation,MedicationRequest", {"ev-o1", "ev-o2", "ev-q-o", "ev-mr"}),
        ("Patient/nobody/Observation", set()),
        ("Encounter/ev-e/Observation", {"ev-o1"}),
        ("Practitioner/ev-pr/Observation", {"ev-o1"}),
    ],
)
def test_compartment_search(
    uow: UnitOfWork, ctx: FhirContext, chart: None, url: str, expected: set[str]
) -> None:
    assert ids(search(uow, ctx, url)) == expected


def test_compartment_search_of_a_type_outside_the_compartment(
    uow: UnitOfWork, ctx: FhirContext, chart: None
) -> None:
    # Organizations are not in any patient's compartment: nothing matches.
    assert ids(search(uow, ctx, "Patient/ev-p/Organization")) == set()


def test_compartment_that_does_not_exist_is_404(uow: UnitOfWork, ctx: FhirContext, chart: None) -> None:
    assert call(uow, ctx, "GET", "Organization/ev-org/Patient").status == 404


def test_everything(uow: UnitOfWork, ctx: FhirContext, chart: None) -> None:
    bundle = search(uow, ctx, "Patient/ev-p/$everything")
    assert ids(bundle) == EV_P | EV_REFERRED
    assert bundle["total"] == len(EV_P | EV_REFERRED)
    assert ids(search(uow, ctx, "Patient/ev-q/$everything")) == {"ev-q", "ev-q-o", "ev-p"}
    assert ids(search(uow, ctx, "Patient/ev-p/$everything?_type=Observation,Patient")) == {
        "ev-p",
        "ev-o1",
        "ev-o2",
        "ev-q-o",
        "ev-q",
    }
    assert ids(search(uow, ctx, "Patient/ev-p/$everything?_type=Organization")) == {"ev-org"}


def test_everything_since(uow: UnitOfWork, ctx: FhirContext, chart: None) -> None:
    # ticking_clock: the ten writes of the chart happened at 00:00:00 ... 00:00:09; ev-o2 was the 8th.
    assert ids(search(uow, ctx, "Patient/ev-p/$everything?_since=2024-01-01T00:00:07Z")) == {
        "ev-o2",
        "ev-q-o",
        "ev-mr",
    }
    put(uow, ctx, {"resourceType": "Organization", "id": "ev-org", "name": "上海市第六人民医院（新院区）"})
    assert ids(search(uow, ctx, "Patient/ev-p/$everything?_since=2024-01-01T00:00:10Z")) == {"ev-org"}


def test_everything_pages_without_duplicates(uow: UnitOfWork, ctx: FhirContext, chart: None) -> None:
    pages = walk(uow, ctx, "Patient/ev-p/$everything?_count=3")
    assert [len(p) for p in pages] == [3, 3, 3, 1]
    flat = list(itertools.chain.from_iterable(pages))
    assert len(flat) == len(set(flat)) and set(flat) == EV_P | EV_REFERRED


def test_everything_page_sizes_come_from_the_deployment(uow: UnitOfWork, chart: None) -> None:
    small = FhirContext(
        base_url="http://testserver/fhir", settings=FhirSettings(default_page_size=4, max_page_size=6)
    )
    assert [len(p) for p in walk(uow, small, "Patient/ev-p/$everything")] == [4, 4, 2]
    assert [len(p) for p in walk(uow, small, "Patient/ev-p/$everything?_count=100")] == [6, 4]


def test_everything_leaves_out_deleted_resources(
    uow: UnitOfWork, ctx: FhirContext, lenient_ctx: FhirContext, chart: None
) -> None:
    assert call(uow, ctx, "DELETE", "Observation/ev-o2").status == 204
    assert call(uow, lenient_ctx, "DELETE", "Medication/ev-med").status == 204  # still referred to by ev-mr
    assert ids(search(uow, ctx, "Patient/ev-p/$everything")) == (EV_P | EV_REFERRED) - {"ev-o2", "ev-med"}


def test_everything_errors(uow: UnitOfWork, ctx: FhirContext, chart: None) -> None:
    assert call(uow, ctx, "GET", "Patient/nobody/$everything").status == 404
    refused(uow, ctx, "Patient/ev-p/$everything?colour=red")
    refused(uow, ctx, "Patient/ev-p/$everything?_type=Nope")
    refused(uow, ctx, "Patient/ev-p/$everything?_count=3&_cursor=forged")
