"""Search by every parameter type, as docs/api.md claims it — on both databases.

Each test stores a handful of purpose-built resources (ids chosen so the expected result can
be read off the test) and checks which of them a search returns.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.fhir_calls import call, ids
from yilian.db import UnitOfWork
from yilian.fhir import FhirContext
from yilian.kernel import clock

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
RESIDENT_ID = "urn:oid:2.16.156.10011.1.3"  # PRC resident identity card numbers
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
ICD10 = "http://hl7.org/fhir/sid/icd-10"


def put(uow: UnitOfWork, ctx: FhirContext, resource: dict[str, Any]) -> None:
    r = call(uow, ctx, "PUT", f"{resource['resourceType']}/{resource['id']}", resource)
    assert r.status in (200, 201), r


def found(uow: UnitOfWork, ctx: FhirContext, url: str) -> set[str]:
    r = call(uow, ctx, "GET", url)
    assert r.status == 200, (url, r)
    return ids(r.json)


def refused(uow: UnitOfWork, ctx: FhirContext, url: str) -> dict[str, Any]:
    r = call(uow, ctx, "GET", url)
    assert r.status == 400, (url, r)
    assert r.json["resourceType"] == "OperationOutcome"
    body: dict[str, Any] = r.json
    return body


def patient(pid: str, **elements: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, **elements}


def observation(
    oid: str, code: str = "8480-6", system: str | None = LOINC, **elements: Any
) -> dict[str, Any]:
    coding: dict[str, Any] = {"code": code}
    if system:
        coding["system"] = system
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [coding]},
        **elements,
    }


# --- string ---------------------------------------------------------------------------------


@pytest.fixture
def people(uow: UnitOfWork, ctx: FhirContext) -> None:
    put(
        uow,
        ctx,
        patient(
            "zhang-wei",
            name=[{"family": "张", "given": ["伟"]}, {"family": "Zhāng", "given": ["Wěi"]}],
            address=[
                {
                    "line": ["朝阳区建国路88号"],
                    "city": "北京市",
                    "district": "朝阳区",
                    "state": "北京市",
                    "postalCode": "100022",
                    "country": "CN",
                }
            ],
        ),
    )
    put(
        uow,
        ctx,
        patient(
            "li-na",
            name=[{"family": "李", "given": ["娜"]}, {"family": "Li", "given": ["Na"]}],
            address=[{"city": "上海市", "postalCode": "200030", "country": "CN"}],
        ),
    )
    put(uow, ctx, patient("ouyang", name=[{"family": "欧阳", "given": ["娜娜"]}]))
    put(
        uow,
        ctx,
        patient(
            "smith",
            name=[
                {
                    "text": "John  Quincy Smith",
                    "family": "Smith",
                    "given": ["John", "Quincy"],
                    "prefix": ["Mr."],
                }
            ],
            address=[
                {
                    "line": ["1 Main St"],
                    "city": "Boston",
                    "state": "MA",
                    "postalCode": "02115",
                    "country": "US",
                }
            ],
        ),
    )
    put(uow, ctx, patient("smithson", name=[{"family": "Smithson", "given": ["Anne"]}]))
    put(
        uow,
        ctx,
        patient(
            "muller",
            name=[{"family": "Müller", "given": ["Jürgen"]}],
            address=[{"city": "München", "country": "DE"}],
        ),
    )
    put(uow, ctx, patient("nameless"))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("family=smith", {"smith", "smithson"}),  # starts-with
        ("family=SMITH", {"smith", "smithson"}),  # case folding
        ("family=mith", set()),  # not a substring search by default
        ("family:exact=Smith", {"smith"}),
        ("family:exact=smith", set()),  # :exact is case-sensitive
        ("family:contains=MITH", {"smith", "smithson"}),
        ("family=muller", {"muller"}),  # accent folding
        ("family=Müller", {"muller"}),
        ("family:exact=Muller", set()),  # :exact is accent-sensitive
        ("family=zhang", {"zhang-wei"}),  # Zhāng
        ("given=wei", {"zhang-wei"}),
        ("given=jurgen", {"muller"}),
        ("given=quincy", {"smith"}),  # second given name
        ("name=mr", {"smith"}),  # prefix
        ("name=john quincy", {"smith"}),  # the name's text
        ("name=john   QUINCY", {"smith"}),  # whitespace-insensitive
        ("name=张", {"zhang-wei"}),
        ("name=伟", {"zhang-wei"}),
        ("name=张伟", {"zhang-wei"}),  # Chinese family + given written together
        ("name:exact=张伟", {"zhang-wei"}),
        ("name=李娜", {"li-na"}),
        ("name=娜", {"li-na", "ouyang"}),
        ("name=欧阳娜娜", {"ouyang"}),  # compound surname
        ("family=阳", set()),
        ("family:contains=阳", {"ouyang"}),
        ("family=li", {"li-na"}),
        ("address=朝阳", {"zhang-wei"}),  # line and district
        ("address:contains=建国路", {"zhang-wei"}),
        ("address=boston", {"smith"}),
        ("address:contains=main", {"smith"}),
        ("address=munchen", {"muller"}),
        ("address-city=北京", {"zhang-wei"}),
        ("address-city=上海市", {"li-na"}),
        ("address-state=ma", {"smith"}),
        ("address-postalcode=1000", {"zhang-wei"}),
        ("address-postalcode:exact=02115", {"smith"}),
        ("address-country=cn", {"zhang-wei", "li-na"}),
        ("family:missing=true", {"nameless"}),
        ("address:missing=true", {"ouyang", "smithson", "nameless"}),
    ],
)
def test_string(uow: UnitOfWork, ctx: FhirContext, people: None, query: str, expected: set[str]) -> None:
    assert found(uow, ctx, f"Patient?{query}") == expected


# --- token ----------------------------------------------------------------------------------


@pytest.fixture
def coded(uow: UnitOfWork, ctx: FhirContext) -> None:
    put(
        uow,
        ctx,
        patient(
            "t-male",
            gender="male",
            active=True,
            identifier=[
                {"system": RESIDENT_ID, "value": "110101199003074512"},
                {
                    "type": {"coding": [{"system": V2_0203, "code": "MR"}], "text": "病案号"},
                    "system": "urn:oid:2.16.156.10011.1.12.1",
                    "value": "MRN-0001",
                },
            ],
            telecom=[
                {"system": "phone", "value": "13800138000"},
                {"system": "email", "value": "wei@example.cn"},
            ],
            deceasedBoolean=False,
        ),
    )
    put(
        uow,
        ctx,
        patient(
            "t-female",
            gender="female",
            active=False,
            identifier=[
                {
                    "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
                    "system": "urn:oid:2.16.156.10011.1.12.2",
                    "value": "MRN-0002",
                }
            ],
            telecom=[{"system": "phone", "value": "13900139000"}],
            deceasedDateTime="2023-06-01",
        ),
    )
    put(uow, ctx, patient("t-bare"))
    systolic = observation(
        "sys",
        "8480-6",
        category=[
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
    )
    systolic["code"]["coding"][0]["display"] = "Systolic blood pressure"
    put(uow, ctx, systolic)
    put(uow, ctx, observation("nosys", "8480-6", system=None))
    put(
        uow,
        ctx,
        {
            "resourceType": "Observation",
            "id": "bp",
            "status": "amended",
            "code": {
                "coding": [
                    {"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"},
                    {"system": SNOMED, "code": "75367002", "display": "Blood pressure"},
                ],
                "text": "血压 Blood pressure",
            },
        },
    )
    put(
        uow,
        ctx,
        {"resourceType": "Observation", "id": "text-only", "status": "final", "code": {"text": "Headache"}},
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("Observation?code=8480-6", {"sys", "nosys"}),
        (f"Observation?code={LOINC}|8480-6", {"sys"}),
        ("Observation?code=|8480-6", {"nosys"}),  # explicitly no system
        (f"Observation?code={LOINC}|", {"sys", "bp"}),  # any code of the system
        (f"Observation?code={SNOMED}|75367002", {"bp"}),  # any coding of the CodeableConcept
        (f"Observation?code={LOINC}|75367002", set()),  # system and code of the same coding
        ("Observation?code:text=blood", {"bp"}),
        ("Observation?code:text=血压", {"bp"}),
        ("Observation?code:text=headache", {"text-only"}),
        ("Observation?category=vital-signs", {"sys"}),
        ("Observation?status=amended", {"bp"}),
        ("Observation?status=http://hl7.org/fhir/observation-status|final", {"sys", "nosys", "text-only"}),
        ("Patient?gender=male", {"t-male"}),
        ("Patient?gender=http://hl7.org/fhir/administrative-gender|male", {"t-male"}),  # implied system
        ("Patient?gender=http://example.org/other|male", set()),
        ("Patient?gender:not=male", {"t-female", "t-bare"}),  # :not includes resources without a gender
        ("Patient?gender:missing=true", {"t-bare"}),
        ("Patient?gender:missing=false", {"t-male", "t-female"}),
        ("Patient?active=true", {"t-male"}),
        ("Patient?active=false", {"t-female"}),
        ("Patient?active:not=true", {"t-female", "t-bare"}),
        (f"Patient?identifier={RESIDENT_ID}|110101199003074512", {"t-male"}),
        ("Patient?identifier=110101199003074512", {"t-male"}),
        (f"Patient?identifier={RESIDENT_ID}|", {"t-male"}),
        (f"Patient?identifier={RESIDENT_ID}|MRN-0001", set()),
        (f"Patient?identifier:of-type={V2_0203}|MR|MRN-0002", {"t-female"}),
        (f"Patient?identifier:of-type={V2_0203}|MR|110101199003074512", set()),
        ("Patient?identifier:text=病案", {"t-male"}),
        ("Patient?telecom=13800138000", {"t-male"}),
        ("Patient?phone=13900139000", {"t-female"}),
        ("Patient?email=wei@example.cn", {"t-male"}),
        ("Patient?phone=wei@example.cn", set()),
        ("Patient?deceased=true", {"t-female"}),
        ("Patient?_id=t-male,t-bare", {"t-male", "t-bare"}),
        ("Patient?_id:not=t-male", {"t-female", "t-bare"}),
    ],
)
def test_token(uow: UnitOfWork, ctx: FhirContext, coded: None, url: str, expected: set[str]) -> None:
    assert found(uow, ctx, url) == expected


@pytest.fixture
def diagnoses(uow: UnitOfWork, ctx: FhirContext) -> None:
    put(uow, ctx, patient("dx-p"))

    def condition(cid: str, codings: list[dict[str, str]], **extra: Any) -> None:
        put(
            uow,
            ctx,
            {
                "resourceType": "Condition",
                "id": cid,
                "subject": {"reference": "Patient/dx-p"},
                "code": {"coding": codings},
                **extra,
            },
        )

    condition(
        "c-htn",
        [{"system": ICD10, "code": "I10", "display": "原发性高血压"}],
        clinicalStatus={
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
            ]
        },
        onsetAge={"value": 52, "unit": "a", "system": UCUM, "code": "a"},
        recordedDate="2024-05-01",
    )
    condition(
        "c-dm",
        [{"system": ICD10, "code": "E11.9", "display": "2型糖尿病"}],
        onsetPeriod={"start": "2019-03-01"},
    )
    condition(
        "c-flu",
        [{"system": ICD10, "code": "J10.1"}, {"system": SNOMED, "code": "6142004", "display": "Influenza"}],
        onsetDateTime="2024-01-10T09:00:00+08:00",
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("code=I10", {"c-htn"}),
        (f"code={ICD10}|E11.9", {"c-dm"}),
        (f"code={ICD10}|", {"c-htn", "c-dm", "c-flu"}),
        (f"code={SNOMED}|6142004", {"c-flu"}),
        ("code=I10,E11.9", {"c-htn", "c-dm"}),
        ("code:text=2型", {"c-dm"}),
        ("code:text=influenza", {"c-flu"}),
        ("clinical-status=active", {"c-htn"}),
        ("onset-age=lt60", {"c-htn"}),  # an Age is a quantity
        (f"onset-age=52|{UCUM}|a", {"c-htn"}),
        ("onset-date=ge2019", {"c-dm", "c-flu"}),  # a period without an end reaches past any date
        ("onset-date=2019-03", set()),  # ...so no month contains it
        ("onset-date=2024-01-10", {"c-flu"}),  # 01:00 UTC
        ("recorded-date=2024-05", {"c-htn"}),
        ("subject=dx-p", {"c-htn", "c-dm", "c-flu"}),
    ],
)
def test_condition_with_icd10(
    uow: UnitOfWork, ctx: FhirContext, diagnoses: None, query: str, expected: set[str]
) -> None:
    assert found(uow, ctx, f"Condition?{query}") == expected


def test_token_of_type_needs_three_parts(uow: UnitOfWork, ctx: FhirContext, coded: None) -> None:
    refused(uow, ctx, f"Patient?identifier:of-type={V2_0203}|MR")


def test_token_computed_boolean_false_for_absent_element(
    uow: UnitOfWork, ctx: FhirContext, coded: None
) -> None:
    # Patient-deceased: "Patient.deceased.exists() and Patient.deceased != false".
    assert found(uow, ctx, "Patient?deceased=false") == {"t-male", "t-bare"}


# --- reference ------------------------------------------------------------------------------


@pytest.fixture
def referring(uow: UnitOfWork, ctx: FhirContext) -> None:
    put(uow, ctx, patient("p1", name=[{"family": "王", "given": ["芳"]}]))
    put(uow, ctx, patient("p2", name=[{"family": "Zhao", "given": ["Lei"]}]))
    put(uow, ctx, {"resourceType": "Group", "id": "g1", "type": "person", "actual": True})
    put(uow, ctx, observation("o-p1", subject={"reference": "Patient/p1"}))
    put(uow, ctx, observation("o-p2-abs", subject={"reference": "http://testserver/fhir/Patient/p2"}))
    put(
        uow,
        ctx,
        observation(
            "o-ident", subject={"identifier": {"system": RESIDENT_ID, "value": "440301198811110021"}}
        ),
    )
    put(uow, ctx, observation("o-none"))
    put(uow, ctx, observation("o-g1", subject={"reference": "Group/g1"}))
    put(uow, ctx, observation("o-ext", subject={"reference": "http://other.example.org/fhir/Patient/9"}))
    for qid, canonical in (("qr-2", "|2.0"), ("qr-1", "|1.0"), ("qr-plain", "")):
        put(
            uow,
            ctx,
            {
                "resourceType": "QuestionnaireResponse",
                "id": qid,
                "status": "completed",
                "questionnaire": f"http://example.org/fhir/Questionnaire/phq-9{canonical}",
            },
        )
    put(
        uow,
        ctx,
        {
            "resourceType": "QuestionnaireResponse",
            "id": "qr-gad",
            "status": "completed",
            "questionnaire": "http://example.org/fhir/Questionnaire/gad-7",
        },
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("Observation?subject=Patient/p1", {"o-p1"}),
        ("Observation?subject=p1", {"o-p1"}),  # bare id, any type
        ("Observation?subject=http://testserver/fhir/Patient/p1", {"o-p1"}),  # this server's base
        ("Observation?subject=Patient/p2", {"o-p2-abs"}),  # stored as an absolute URL on this server
        ("Observation?subject:Patient=p2", {"o-p2-abs"}),
        ("Observation?subject:Group=g1", {"o-g1"}),
        ("Observation?subject:Patient=g1", set()),
        ("Observation?patient=p1", {"o-p1"}),
        ("Observation?subject=Patient/p1,Group/g1", {"o-p1", "o-g1"}),
        ("Observation?subject=http://other.example.org/fhir/Patient/9", {"o-ext"}),
        ("Observation?subject=Patient/9", set()),  # another server's patient 9 is not ours
        (f"Observation?subject:identifier={RESIDENT_ID}|440301198811110021", {"o-ident"}),
        ("Observation?subject:identifier=440301198811110021", {"o-ident"}),
        ("Observation?subject:missing=true", {"o-none"}),
        (
            "QuestionnaireResponse?questionnaire=http://example.org/fhir/Questionnaire/phq-9",
            {"qr-2", "qr-1", "qr-plain"},
        ),
        ("QuestionnaireResponse?questionnaire=http://example.org/fhir/Questionnaire/phq-9|2.0", {"qr-2"}),
        ("QuestionnaireResponse?questionnaire=http://example.org/fhir/Questionnaire/gad-7|2.0", set()),
    ],
)
def test_reference(uow: UnitOfWork, ctx: FhirContext, referring: None, url: str, expected: set[str]) -> None:
    assert found(uow, ctx, url) == expected


def test_reference_to_a_version_matches_the_resource(
    uow: UnitOfWork, ctx: FhirContext, referring: None
) -> None:
    put(uow, ctx, observation("o-versioned", subject={"reference": "Patient/p1/_history/1"}))
    assert found(uow, ctx, "Observation?subject=Patient/p1") == {"o-p1", "o-versioned"}
    assert found(uow, ctx, "Observation?subject:Patient.name=王") == {"o-p1", "o-versioned"}


def test_reference_type_modifier_must_agree_with_the_value(
    uow: UnitOfWork, ctx: FhirContext, referring: None
) -> None:
    refused(uow, ctx, "Observation?subject:Group=Patient/p1")
    refused(uow, ctx, "Observation?subject:Organization=o1")  # not a target of Observation.subject


# --- date -----------------------------------------------------------------------------------


@pytest.fixture
def born(uow: UnitOfWork, ctx: FhirContext) -> None:
    for pid, birth in (
        ("d-day", "1980-05-03"),
        ("d-month", "1980-05"),
        ("d-year", "1980"),
        ("d-before", "1979-12-31"),
        ("d-after", "1981-01-01"),
    ):
        put(uow, ctx, patient(pid, birthDate=birth))
    put(uow, ctx, patient("d-none"))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("1980", {"d-day", "d-month", "d-year"}),  # the whole year contains all three
        ("eq1980", {"d-day", "d-month", "d-year"}),
        ("1980-05", {"d-day", "d-month"}),
        ("1980-05-03", {"d-day"}),
        ("ne1980", {"d-before", "d-after"}),
        ("ne1980-05", {"d-year", "d-before", "d-after"}),
        ("gt1980", {"d-after"}),
        ("lt1980", {"d-before"}),
        ("ge1980", {"d-day", "d-month", "d-year", "d-after"}),
        ("le1980", {"d-day", "d-month", "d-year", "d-before"}),
        ("gt1980-05-03", {"d-month", "d-year", "d-after"}),  # ranges reaching past the day
        ("lt1980-05-03", {"d-month", "d-year", "d-before"}),
        ("sa1980-05-03", {"d-after"}),  # starts after the day ends
        ("eb1980-05-03", {"d-before"}),  # ends before the day starts
        ("sa1979", {"d-day", "d-month", "d-year", "d-after"}),
        ("eb1981", {"d-day", "d-month", "d-year", "d-before"}),
        ("1980-05-03T00:00:00Z", set()),  # a second inside the day does not contain the day
        ("ge1980-05-03T00:00:00Z", {"d-day", "d-month", "d-year", "d-after"}),
    ],
)
def test_date_prefixes_on_dates(
    uow: UnitOfWork, ctx: FhirContext, born: None, query: str, expected: set[str]
) -> None:
    assert found(uow, ctx, f"Patient?birthdate={query}") == expected


@pytest.fixture
def timed(uow: UnitOfWork, ctx: FhirContext) -> None:
    # 08:30 in Beijing is 00:30 UTC on the same day; 23:30 in New York is 04:30 UTC the next day.
    put(uow, ctx, observation("t-beijing", effectiveDateTime="2024-03-01T08:30:00+08:00"))
    put(uow, ctx, observation("t-newyork", effectiveDateTime="2024-03-01T23:30:00-05:00"))
    put(uow, ctx, observation("t-instant", effectiveInstant="2024-03-01T12:00:00.250Z"))
    put(
        uow,
        ctx,
        observation("t-period", effectivePeriod={"start": "2024-02-28", "end": "2024-03-01T06:00:00Z"}),
    )
    put(uow, ctx, observation("t-near", effectiveDateTime="2023-12-03"))
    put(uow, ctx, observation("t-far", effectiveDateTime="2023-12-10"))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("2024-03-01", {"t-beijing", "t-instant"}),
        ("2024-03-02", {"t-newyork"}),
        ("2024-03", {"t-beijing", "t-newyork", "t-instant"}),
        ("2024-03-01T08:30:00%2B08:00", {"t-beijing"}),
        ("2024-03-01T08:30:00+08:00", {"t-beijing"}),  # an unencoded '+' arrives as a space: still understood
        ("2024-03-01T00:30:00Z", {"t-beijing"}),
        ("2024-03-01T07:00:00-05:00", {"t-instant"}),  # 12:00:00Z, the second 12:00:00.250Z lies in
        ("2024-03-01T12:00:00Z", {"t-instant"}),
        ("ge2024-03-01T08:00:00%2B08:00", {"t-beijing", "t-newyork", "t-instant", "t-period"}),
        ("lt2024-03-01T00:30:00Z", {"t-period", "t-near", "t-far"}),
        ("gt2024-03-01T06:00:00Z", {"t-newyork", "t-instant"}),
        ("le2024-02-29", {"t-period", "t-near", "t-far"}),
        ("ap2023-12-01", {"t-near"}),  # within 10% of the distance from now (pinned below)
    ],
)
def test_date_prefixes_on_datetimes_and_periods(
    uow: UnitOfWork, ctx: FhirContext, timed: None, pinned_now: None, query: str, expected: set[str]
) -> None:
    assert found(uow, ctx, f"Observation?date={query}") == expected


@pytest.fixture
def pinned_now() -> Iterator[None]:
    clock.set_clock(lambda: dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    try:
        yield
    finally:
        clock.set_clock(None)


@pytest.fixture
def stays(uow: UnitOfWork, ctx: FhirContext) -> None:
    put(uow, ctx, patient("ep"))
    for eid, period in (
        ("e-closed", {"start": "2024-01-10", "end": "2024-01-15"}),
        ("e-open-end", {"start": "2024-01-20"}),  # still in hospital
        ("e-open-start", {"end": "2024-01-05"}),
    ):
        put(
            uow,
            ctx,
            {
                "resourceType": "Encounter",
                "id": eid,
                "status": "in-progress",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                "subject": {"reference": "Patient/ep"},
                "period": period,
            },
        )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("2024-01-12", set()),  # a day inside the stay does not contain the stay
        ("2024-01", {"e-closed"}),
        ("ne2024-01", {"e-open-end", "e-open-start"}),
        ("gt2024-01-12", {"e-closed", "e-open-end"}),
        ("ge2024-01-18", {"e-open-end"}),
        ("lt2024-01-08", {"e-open-start"}),
        ("le2024-01-12", {"e-closed", "e-open-start"}),
        ("sa2024-01-16", {"e-open-end"}),
        ("eb2024-01-08", {"e-open-start"}),
        ("sa2024-01-05", {"e-closed", "e-open-end"}),
        ("eb2024-01-10", {"e-open-start"}),
        ("gt9999", set()),
    ],
)
def test_date_prefixes_on_periods(
    uow: UnitOfWork, ctx: FhirContext, stays: None, query: str, expected: set[str]
) -> None:
    assert found(uow, ctx, f"Encounter?date={query}") == expected


@pytest.mark.parametrize(
    "query",
    [
        "1980-13",
        "1980-02-30",
        "notadate",
        "gt",
        "19800503",
        "1980-05-03T25:00:00Z",
        "1980-05-03T10:61:00Z",
        "xx1980",
    ],
)
def test_invalid_dates_are_400(uow: UnitOfWork, ctx: FhirContext, query: str) -> None:
    body = refused(uow, ctx, f"Patient?birthdate={query}")
    assert body["issue"][0]["severity"] == "error"


# --- number and quantity --------------------------------------------------------------------


@pytest.fixture
def risks(uow: UnitOfWork, ctx: FhirContext) -> None:
    put(uow, ctx, patient("rp"))
    for rid, probability in (("r-025", 0.25), ("r-05", 0.5), ("r-08", 0.8), ("r-100", 100), ("r-996", 99.6)):
        put(
            uow,
            ctx,
            {
                "resourceType": "RiskAssessment",
                "id": rid,
                "status": "final",
                "subject": {"reference": "Patient/rp"},
                "prediction": [{"probabilityDecimal": probability}],
            },
        )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("0.5", {"r-05"}),  # [0.45, 0.55]
        ("0.50", {"r-05"}),
        ("0.3", {"r-025"}),  # 0.25 lies in [0.25, 0.35]
        ("100", {"r-100", "r-996"}),  # [99.5, 100.5]
        ("100.0", {"r-100"}),  # [99.95, 100.05]
        ("eq100.0", {"r-100"}),
        ("ne0.5", {"r-025", "r-08", "r-100", "r-996"}),
        ("gt0.5", {"r-08", "r-100", "r-996"}),
        ("ge0.5", {"r-05", "r-08", "r-100", "r-996"}),
        ("lt0.5", {"r-025"}),
        ("le0.5", {"r-025", "r-05"}),
        ("sa0.8", {"r-100", "r-996"}),
        ("eb0.8", {"r-025", "r-05"}),
        ("ap100", {"r-100", "r-996"}),
        ("0.25,0.8", {"r-025", "r-08"}),
    ],
)
def test_number(uow: UnitOfWork, ctx: FhirContext, risks: None, query: str, expected: set[str]) -> None:
    assert found(uow, ctx, f"RiskAssessment?probability={query}") == expected


def test_number_not_a_number_is_400(uow: UnitOfWork, ctx: FhirContext) -> None:
    refused(uow, ctx, "RiskAssessment?probability=high")


@pytest.fixture
def measured(uow: UnitOfWork, ctx: FhirContext) -> None:
    glucose = "2339-0"  # Glucose [Mass/volume] in Blood
    put(
        uow,
        ctx,
        observation(
            "q-54",
            "15074-8",
            valueQuantity={"value": 5.4, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"},
        ),
    )
    put(
        uow,
        ctx,
        observation(
            "q-61",
            "15074-8",
            valueQuantity={"value": 6.1, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"},
        ),
    )
    put(
        uow,
        ctx,
        observation(
            "q-97", glucose, valueQuantity={"value": 97, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"}
        ),
    )
    put(uow, ctx, observation("q-unit-only", "15074-8", valueQuantity={"value": 5.4, "unit": "mmol/L"}))
    put(uow, ctx, observation("q-none", "15074-8"))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("5.4", {"q-54", "q-unit-only"}),
        (f"5.4|{UCUM}|mmol/L", {"q-54"}),
        ("5.4||mmol/L", {"q-54", "q-unit-only"}),  # code or unit
        (f"5.4|{UCUM}|", {"q-54"}),  # any unit of the system
        (f"gt5.5|{UCUM}|mmol/L", {"q-61"}),
        ("lt100||mg/dL", {"q-97"}),
        ("ge97", {"q-97"}),
        ("le6.1", {"q-54", "q-61", "q-unit-only"}),
        ("ne5.4", {"q-61", "q-97"}),
        ("ap6", {"q-54", "q-61", "q-unit-only"}),  # 6 ± 10%
        ("97|http://example.org/units|mg/dL", set()),
        (f"5.4|{UCUM}|mmol/L,97|{UCUM}|mg/dL", {"q-54", "q-97"}),
    ],
)
def test_quantity(uow: UnitOfWork, ctx: FhirContext, measured: None, query: str, expected: set[str]) -> None:
    assert found(uow, ctx, f"Observation?value-quantity={query}") == expected


def test_quantity_malformed_is_400(uow: UnitOfWork, ctx: FhirContext) -> None:
    refused(uow, ctx, "Observation?value-quantity=5.4|mmol/L")


# --- uri ------------------------------------------------------------------------------------


@pytest.fixture
def value_sets(uow: UnitOfWork, ctx: FhirContext) -> None:
    for vid, url in (
        ("vs-gender", "http://hl7.org/fhir/ValueSet/administrative-gender"),
        ("vs-marital", "http://hl7.org/fhir/ValueSet/marital-status"),
        ("vs-ethnicity", "http://example.org/fhir/ValueSet/cn-ethnicity"),
        ("vs-root", "http://example.org/fhir"),
        ("vs-lookalike", "http://hl7.org/fhirx/ValueSet/other"),
        ("vs-underscore", "http://example.org/fhir_x"),
    ):
        put(uow, ctx, {"resourceType": "ValueSet", "id": vid, "url": url, "status": "active"})
    put(uow, ctx, {"resourceType": "ValueSet", "id": "vs-nourl", "status": "draft"})


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("url=http://hl7.org/fhir/ValueSet/marital-status", {"vs-marital"}),
        ("url=http://hl7.org/fhir/ValueSet/marital", set()),  # exact, not starts-with
        ("url=HTTP://HL7.ORG/fhir/ValueSet/marital-status", set()),  # case-sensitive
        ("url:below=http://hl7.org/fhir/ValueSet", {"vs-gender", "vs-marital"}),
        ("url:below=http://hl7.org/fhir", {"vs-gender", "vs-marital"}),  # not http://hl7.org/fhirx
        ("url:below=http://hl7.org/fhir/", {"vs-gender", "vs-marital"}),
        ("url:above=http://example.org/fhir/ValueSet/cn-ethnicity/_history/2", {"vs-ethnicity", "vs-root"}),
        ("url:above=http://example.org/fhirx", set()),  # vs-root is not above it, vs-underscore neither
        ("url:missing=true", {"vs-nourl"}),
    ],
)
def test_uri(uow: UnitOfWork, ctx: FhirContext, value_sets: None, query: str, expected: set[str]) -> None:
    assert found(uow, ctx, f"ValueSet?{query}") == expected


# --- composite ------------------------------------------------------------------------------


def blood_pressure(oid: str, systolic: float, diastolic: float) -> dict[str, Any]:
    def component(code: str, display: str, value: float) -> dict[str, Any]:
        return {
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
            "valueQuantity": {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
        }

    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}]},
        "component": [
            component("8480-6", "Systolic blood pressure", systolic),
            component("8462-4", "Diastolic blood pressure", diastolic),
        ],
    }


@pytest.fixture
def pressures(uow: UnitOfWork, ctx: FhirContext) -> None:
    put(uow, ctx, blood_pressure("bp-high", 150, 95))
    put(uow, ctx, blood_pressure("bp-normal", 118, 76))
    put(
        uow,
        ctx,
        observation(
            "glucose", "2339-0", valueQuantity={"value": 97, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"}
        ),
    )
    put(
        uow,
        ctx,
        observation(
            "systolic-alone",
            "8480-6",
            valueQuantity={"value": 142, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
        ),
    )
    put(
        uow,
        ctx,
        observation(
            "smoker", "72166-2", valueCodeableConcept={"coding": [{"system": SNOMED, "code": "77176002"}]}
        ),
    )
    put(uow, ctx, observation("note", "8251-1", valueString="pays $5, twice"))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (f"component-code-value-quantity={LOINC}|8480-6$gt140", {"bp-high"}),
        ("component-code-value-quantity=8462-4$lt80", {"bp-normal"}),
        ("component-code-value-quantity=8480-6$lt80", set()),  # components are paired: 76 is diastolic
        (f"component-code-value-quantity=8480-6$150|{UCUM}|mm[Hg]", {"bp-high"}),
        ("component-code-value-quantity=8480-6$150||mmHg", {"bp-high"}),
        ("component-code-value-quantity=8480-6$gt140,8480-6$lt120", {"bp-high", "bp-normal"}),
        (f"code-value-quantity={LOINC}|2339-0$97|{UCUM}|mg/dL", {"glucose"}),
        ("code-value-quantity=2339-0$ge100", set()),
        ("code-value-quantity=8480-6$gt140", {"systolic-alone"}),
        ("combo-code-value-quantity=8480-6$gt140", {"bp-high", "systolic-alone"}),
        ("combo-code-value-quantity=2339-0$97", {"glucose"}),
        (f"code-value-concept=72166-2${SNOMED}|77176002", {"smoker"}),
        ("code-value-concept=72166-2$77176002", {"smoker"}),
        ("code-value-string=8251-1$pays \\$5\\, tw", {"note"}),  # escaped $ and , inside a component
        ("code-value-string=8251-1$twice", set()),
    ],
)
def test_composite(
    uow: UnitOfWork, ctx: FhirContext, pressures: None, query: str, expected: set[str]
) -> None:
    assert found(uow, ctx, f"Observation?{query}") == expected


def test_composite_needs_every_component(uow: UnitOfWork, ctx: FhirContext, pressures: None) -> None:
    refused(uow, ctx, "Observation?component-code-value-quantity=8480-6")


# --- parameters of every resource -----------------------------------------------------------


@pytest.fixture
def labelled(uow: UnitOfWork, ctx: FhirContext) -> None:
    put(
        uow,
        ctx,
        patient(
            "m-vip",
            meta={
                "tag": [{"system": "http://example.org/tags", "code": "vip"}],
                "security": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
                ],
                "profile": [
                    "http://hl7.org/fhir/StructureDefinition/bp",
                    "http://example.org/fhir/StructureDefinition/cn-patient",
                ],
                "source": "http://his.hospital-a.cn/fhir#a1b2",
            },
            text={
                "status": "generated",
                "div": '<div xmlns="http://www.w3.org/1999/xhtml">患者有<b>高血压</b>病史 Hypertension</div>',
            },
            name=[{"family": "陈", "given": ["静"]}],
        ),
    )
    put(
        uow,
        ctx,
        patient(
            "m-plain",
            meta={
                "tag": [{"system": "http://example.org/tags", "code": "research"}],
                "source": "http://lis.hospital-b.cn",
            },
            name=[{"family": "Chen", "given": ["Jing"], "text": "hypertension clinic patient"}],
        ),
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("_tag=vip", {"m-vip"}),
        ("_tag=http://example.org/tags|research", {"m-plain"}),
        ("_tag=http://example.org/tags|", {"m-vip", "m-plain"}),
        ("_tag:not=vip", {"m-plain"}),
        ("_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R", {"m-vip"}),
        ("_security:missing=true", {"m-plain"}),
        ("_profile=http://example.org/fhir/StructureDefinition/cn-patient", {"m-vip"}),
        ("_profile:below=http://example.org/fhir/StructureDefinition", {"m-vip"}),
        ("_source=http://lis.hospital-b.cn", {"m-plain"}),
        ("_source=http://his.hospital-a.cn/fhir%23a1b2", {"m-vip"}),
        ("_source:below=http://his.hospital-a.cn", {"m-vip"}),
        ("_text=高血压", {"m-vip"}),
        ("_text=hypertension", {"m-vip"}),  # narrative only: m-plain's name is not narrative
        ("_text=高血压 hypertension", {"m-vip"}),  # every word
        ("_content=静", {"m-vip"}),
        ("_content=jing", {"m-plain"}),
        ("_id=m-vip", {"m-vip"}),
    ],
)
def test_common_parameters(
    uow: UnitOfWork, ctx: FhirContext, labelled: None, query: str, expected: set[str]
) -> None:
    assert found(uow, ctx, f"Patient?{query}") == expected


def test_content_covers_nested_text_elements(uow: UnitOfWork, ctx: FhirContext, labelled: None) -> None:
    # m-plain's name.text is "hypertension clinic patient"; m-vip has "Hypertension" only in its narrative.
    assert found(uow, ctx, "Patient?_content=hypertension") == {"m-plain"}


@pytest.fixture
def dated_writes(uow: UnitOfWork, ctx: FhirContext) -> Iterator[None]:
    try:
        for pid, when in (
            ("lu-2023", "2023-06-01T12:00:00"),
            ("lu-2024a", "2024-01-01T00:00:00"),
            ("lu-2024b", "2024-01-01T08:00:00"),
        ):
            stamp = dt.datetime.fromisoformat(when).replace(tzinfo=dt.UTC)
            clock.set_clock(lambda stamp=stamp: stamp)
            put(uow, ctx, patient(pid))
    finally:
        clock.set_clock(None)
    yield


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("2024-01-01", {"lu-2024a", "lu-2024b"}),
        ("2024-01-01T00:00:00Z", {"lu-2024a"}),
        ("gt2023-12-31", {"lu-2024a", "lu-2024b"}),
        ("lt2024", {"lu-2023"}),
        ("ge2024-01-01T08:00:00Z", {"lu-2024b"}),
        ("le2024-01-01T07:59:59Z", {"lu-2023", "lu-2024a"}),
        ("ne2024-01-01", {"lu-2023"}),
        ("sa2023-06-01", {"lu-2024a", "lu-2024b"}),
        ("eb2024-01-01T08:00:00Z", {"lu-2023", "lu-2024a"}),
        ("2023-06-01T20:00:00%2B08:00", {"lu-2023"}),
    ],
)
def test_last_updated(
    uow: UnitOfWork, ctx: FhirContext, dated_writes: None, query: str, expected: set[str]
) -> None:
    assert found(uow, ctx, f"Patient?_lastUpdated={query}") == expected
