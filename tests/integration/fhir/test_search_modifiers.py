"""Modifiers, several values, escaping, and what the server does with parameters it does not know."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.fhir_calls import call, ids
from yilian.db import UnitOfWork
from yilian.fhir import FhirContext

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def put(uow: UnitOfWork, ctx: FhirContext, resource: dict[str, Any]) -> None:
    r = call(uow, ctx, "PUT", f"{resource['resourceType']}/{resource['id']}", resource)
    assert r.status in (200, 201), r


def search(
    uow: UnitOfWork, ctx: FhirContext, url: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    r = call(uow, ctx, "GET", url, headers=headers)
    assert r.status == 200, (url, r)
    body: dict[str, Any] = r.json
    return body


def found(uow: UnitOfWork, ctx: FhirContext, url: str) -> set[str]:
    return ids(search(uow, ctx, url))


def refused(
    uow: UnitOfWork, ctx: FhirContext, url: str, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    r = call(uow, ctx, "GET", url, headers=headers)
    assert r.status == 400, (url, r)
    assert r.json["resourceType"] == "OperationOutcome"
    issues: list[dict[str, Any]] = r.json["issue"]
    assert issues and all(i["severity"] == "error" for i in issues)
    return issues


def outcome_entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"]


@pytest.fixture
def records(uow: UnitOfWork, ctx: FhirContext) -> None:
    """One resource with every element the searches below look at, and one with none of them."""
    put(
        uow,
        ctx,
        {
            "resourceType": "Patient",
            "id": "full",
            "gender": "female",
            "birthDate": "1975-09-21",
            "name": [{"family": "Smith", "given": ["John", "Quincy"]}],
            "identifier": [
                {"system": "urn:example:ids", "value": "A|B"},
                {"system": "urn:example:ids", "value": "C\\D"},
            ],
            "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Smith</div>'},
        },
    )
    put(uow, ctx, {"resourceType": "Patient", "id": "empty"})
    put(
        uow,
        ctx,
        {
            "resourceType": "Patient",
            "id": "muller",
            "gender": "male",
            "birthDate": "1980-01-02",
            "name": [{"family": "Müller", "given": ["Anne"]}],
        },
    )
    put(
        uow,
        ctx,
        {
            "resourceType": "Observation",
            "id": "o-full",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
            "subject": {"reference": "Patient/full"},
            "valueQuantity": {"value": 120, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
        },
    )
    put(
        uow,
        ctx,
        {
            "resourceType": "Observation",
            "id": "o-empty",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
        },
    )
    put(
        uow,
        ctx,
        {
            "resourceType": "RiskAssessment",
            "id": "r-full",
            "status": "final",
            "subject": {"reference": "Patient/full"},
            "prediction": [{"probabilityDecimal": 0.3}],
        },
    )
    put(
        uow,
        ctx,
        {
            "resourceType": "RiskAssessment",
            "id": "r-empty",
            "status": "final",
            "subject": {"reference": "Patient/full"},
        },
    )
    put(
        uow,
        ctx,
        {
            "resourceType": "ValueSet",
            "id": "v-full",
            "status": "active",
            "url": "http://example.org/fhir/ValueSet/a",
        },
    )
    put(uow, ctx, {"resourceType": "ValueSet", "id": "v-empty", "status": "draft"})
    put(uow, ctx, {"resourceType": "Organization", "id": "org-comma", "name": "Smith,Jones"})
    put(uow, ctx, {"resourceType": "Organization", "id": "org-smith", "name": "Smith"})
    put(uow, ctx, {"resourceType": "Organization", "id": "org-jones", "name": "Jones"})
    put(uow, ctx, {"resourceType": "Organization", "id": "org-dollar", "name": "$5 clinic"})


@pytest.mark.parametrize(
    ("url", "with_value", "without_value"),
    [
        ("Patient?family", "full", "empty"),  # string
        ("Patient?gender", "full", "empty"),  # token
        ("Patient?birthdate", "full", "empty"),  # date
        ("Patient?_text", "full", "empty"),  # text
        ("Observation?subject", "o-full", "o-empty"),  # reference
        ("Observation?value-quantity", "o-full", "o-empty"),  # quantity
        ("Observation?code-value-quantity", "o-full", "o-empty"),  # composite
        ("RiskAssessment?probability", "r-full", "r-empty"),  # number
        ("ValueSet?url", "v-full", "v-empty"),  # uri
    ],
)
def test_missing_on_every_type(
    uow: UnitOfWork, ctx: FhirContext, records: None, url: str, with_value: str, without_value: str
) -> None:
    assert without_value in found(uow, ctx, f"{url}:missing=true")
    assert with_value not in found(uow, ctx, f"{url}:missing=true")
    assert with_value in found(uow, ctx, f"{url}:missing=false")
    assert without_value not in found(uow, ctx, f"{url}:missing=false")


def test_missing_on_resource_columns(uow: UnitOfWork, ctx: FhirContext, records: None) -> None:
    assert found(uow, ctx, "Patient?_id:missing=true") == set()
    assert found(uow, ctx, "Patient?_lastUpdated:missing=false") == {"full", "empty", "muller"}


def test_missing_takes_true_or_false(uow: UnitOfWork, ctx: FhirContext, records: None) -> None:
    refused(uow, ctx, "Patient?gender:missing=maybe")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("Patient?family=smith,muller", {"full", "muller"}),  # comma: OR
        ("Patient?given=john&given=quincy", {"full"}),  # repeated: AND
        ("Patient?given=john&given=anne", set()),
        ("Patient?given=john,anne&gender=male", {"muller"}),
        ("Patient?birthdate=ge1975&birthdate=lt1980", {"full"}),  # a range as two ANDed prefixes
        ("Patient?_id=full&_id=muller", set()),
        ("Patient?gender:not=male,female", {"empty"}),  # neither value
        ("Organization?name:exact=Smith\\,Jones", {"org-comma"}),  # \, is part of the value
        ("Organization?name:exact=Smith,Jones", {"org-smith", "org-jones"}),
        ("Organization?name=smith\\,", {"org-comma"}),
        ("Organization?name=\\$5", {"org-dollar"}),
        ("Patient?identifier=urn:example:ids|A\\|B", {"full"}),  # \| is part of the code
        ("Patient?identifier=A\\|B", {"full"}),
        ("Patient?identifier=urn:example:ids|A", set()),
        ("Patient?identifier=C\\\\D", {"full"}),  # \\ is one backslash
    ],
)
def test_several_values_and_escapes(
    uow: UnitOfWork, ctx: FhirContext, records: None, url: str, expected: set[str]
) -> None:
    assert found(uow, ctx, url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "Patient?family:foo=smith",  # no such modifier
        "Patient?gender:exact=male",  # a string modifier on a token
        "Patient?birthdate:contains=1980",
        "Patient?family:below=smith",
        "Observation?subject:Foo=1",  # neither a modifier nor a resource type
        "Observation?code-value-quantity:not=8480-6$120",
        "Patient?_include:foo=Patient:organization",
    ],
)
def test_unknown_modifier_is_400(uow: UnitOfWork, ctx: FhirContext, records: None, url: str) -> None:
    refused(uow, ctx, url)


@pytest.mark.parametrize("modifier", ["in", "not-in", "above", "below"])
def test_terminology_modifiers_are_refused_as_not_supported(
    uow: UnitOfWork, ctx: FhirContext, records: None, modifier: str
) -> None:
    issues = refused(uow, ctx, f"Observation?code:{modifier}=http://loinc.org/vs/LL1-1")
    assert issues[0]["code"] == "not-supported"


@pytest.mark.parametrize(
    "url",
    [
        "Patient?family=",  # an empty value
        "Patient?_count=ten",
        "Patient?_count=-1",
        "Patient?_sort=colour",
        "Patient?_sort=_text",  # not sortable
        "Patient?_summary=everything",
        "Patient?_total=some",
        "Patient?_include=Patient",
        "Patient?_include=Patient:family",  # not a reference parameter
        "Patient?_include=Nope:subject",
        "Patient?_has:Observation:patient=8480-6",  # _has needs Type:reference:parameter
        "Patient?_has:Nope:patient:code=8480-6",
        "Patient?_has:Observation:code:code=8480-6",  # code is not a reference parameter
        "Patient?_has:Observation:patient:colour=red",
        "Patient?_contained=true",
    ],
)
def test_malformed_requests_are_400(uow: UnitOfWork, ctx: FhirContext, records: None, url: str) -> None:
    refused(uow, ctx, url)


def test_unknown_parameter_is_ignored_and_reported(uow: UnitOfWork, ctx: FhirContext, records: None) -> None:
    bundle = search(uow, ctx, "Patient?colour=red&family=smith")
    assert ids(bundle) == {"full"}
    (outcome,) = outcome_entries(bundle)
    assert outcome["resourceType"] == "OperationOutcome"
    (issue,) = outcome["issue"]
    assert issue["severity"] == "warning" and "colour" in issue["diagnostics"]
    # The ignored parameter is not part of the query the links repeat.
    assert all("colour" not in link["url"] for link in bundle["link"])


def test_unknown_parameter_is_reported_with_a_count_only(
    uow: UnitOfWork, ctx: FhirContext, records: None
) -> None:
    for url in ("Patient?colour=red&_summary=count", "Patient?colour=red&_count=0"):
        bundle = search(uow, ctx, url)
        assert bundle["total"] == 3
        assert [e["search"]["mode"] for e in bundle["entry"]] == ["outcome"]


def test_parameter_of_another_type_is_ignored_and_reported(
    uow: UnitOfWork, ctx: FhirContext, records: None
) -> None:
    bundle = search(uow, ctx, "Patient?code=8480-6")  # code is an Observation parameter
    assert ids(bundle) == {"full", "empty", "muller"}
    assert "code" in outcome_entries(bundle)[0]["issue"][0]["diagnostics"]


def test_strict_handling_refuses_unknown_parameters(uow: UnitOfWork, ctx: FhirContext, records: None) -> None:
    strict = {"Prefer": "handling=strict"}
    issues = refused(uow, ctx, "Patient?colour=red&family=smith", headers=strict)
    assert "colour" in issues[0]["diagnostics"]
    refused(uow, ctx, "Patient?code=8480-6", headers=strict)
    assert ids(search(uow, ctx, "Patient?family=smith", headers=strict)) == {"full"}
    lenient = search(uow, ctx, "Patient?colour=red&family=smith", headers={"Prefer": "handling=lenient"})
    assert ids(lenient) == {"full"} and outcome_entries(lenient)


def test_no_outcome_entry_when_everything_was_understood(
    uow: UnitOfWork, ctx: FhirContext, records: None
) -> None:
    assert outcome_entries(search(uow, ctx, "Patient?family=smith")) == []
