"""Who pays for the demo residents' care: the city's medical security bureau (医疗保障局) and each
resident's FHIR ``Coverage`` — their basic insurance scheme, and medical aid (医疗救助) for the
few who are eligible — in the shape the payments system reads (``yilian.payments.coverage``),
so that charges at the demo institutions are adjudicated and reimbursed on the spot.
"""

from __future__ import annotations

import datetime as dt
import random

from yilian.demo import check_digits, geography
from yilian.demo.elements import (
    Entry,
    Json,
    coding,
    concept,
    conditional,
    identifier,
    if_none_exist,
    ref,
    test_data_meta,
    urn,
)
from yilian.demo.population import Person
from yilian.demo.registry import organization_identifiers, phone
from yilian.kernel import naming

BUREAU_NAME = "湖州市医疗保障局"
BUREAU_DISTRICT = "330502"  # 吴兴区, the city centre, where the city's bureaus sit
# The bureau administers every scheme's fund in the city (and medical aid, since the 2018
# reform): one payor for all of them.
SCHEME_NAMES = {
    "urban-employee": "城镇职工基本医疗保险",
    "urban-resident": "城乡居民基本医疗保险",
    "ncms": "新型农村合作医疗",
    "medical-aid": "医疗救助",
}


def bureau_uscc(seed: int) -> str:
    rng = random.Random(f"{seed}:payor")
    return check_digits.make_uscc("1", "1", BUREAU_DISTRICT, f"{rng.randrange(10**8):08d}")


def payor_entries(seed: int) -> list[Entry]:
    """The medical security bureau's Organization (a payer, not a member of the consortium)."""
    uscc = bureau_uscc(seed)
    rng = random.Random(f"{seed}:payor:phone")
    district = geography.district(BUREAU_DISTRICT)
    area = next(a for a in district.areas if not a.rural)
    resource: Json = {
        "resourceType": "Organization",
        "meta": test_data_meta(),
        "identifier": organization_identifiers(uscc),
        "active": True,
        "type": [concept(coding(naming.ORGANIZATION_TYPE, "pay", "Payer"), text="医疗保障行政部门")],
        "name": BUREAU_NAME,
        "telecom": [{"system": "phone", "value": phone(rng), "use": "work"}],
        "address": [geography.address(district, area, None, "红旗路8号", use="work")],
    }
    return [
        Entry(
            urn(seed, "Organization/payor"), resource, if_none_exist(naming.UNIFIED_SOCIAL_CREDIT_CODE, uscc)
        )
    ]


def scheme_of(person: Person) -> str | None:
    """The basic scheme ``person`` is insured by: employees by their employer's scheme; rural
    residents still on a county NCMS record by NCMS; everyone else by the residents' scheme."""
    if person.insurance is None:
        return None
    if person.insurance.system == naming.INSURANCE_EMPLOYEE:
        return "urban-employee"
    return "ncms" if person.ncms_number else "urban-resident"


def aid_eligible(seed: int, person: Person, as_of: dt.date) -> bool:
    """Medical aid for a few residents: more often the rural elderly (低保, 特困供养)."""
    rng = random.Random(f"{seed}:aid:{person.key}")
    return rng.random() < (0.25 if person.rural and person.age(as_of) >= 60 else 0.03)


def coverage_entries(seed: int, person: Person, patient_url: str, as_of: dt.date) -> list[Entry]:
    """``person``'s Coverage resources for the year of ``as_of``."""
    scheme = scheme_of(person)
    if scheme is None or person.insurance is None:
        return []
    payor = conditional("Organization", naming.UNIFIED_SOCIAL_CREDIT_CODE, bureau_uscc(seed))
    number = (
        (naming.INSURANCE_NCMS, person.ncms_number)
        if scheme == "ncms" and person.ncms_number
        else (person.insurance.system, person.insurance.number)
    )
    out = [_coverage(seed, person, patient_url, payor, scheme, number, as_of)]
    if aid_eligible(seed, person, as_of):
        out.append(_coverage(seed, person, patient_url, payor, "medical-aid", None, as_of))
    return out


def _coverage(
    seed: int,
    person: Person,
    patient_url: str,
    payor: str,
    scheme: str,
    number: tuple[str, str] | None,
    as_of: dt.date,
) -> Entry:
    resource: Json = {
        "resourceType": "Coverage",
        "meta": test_data_meta(),
        "status": "active",
        "type": concept(
            coding(naming.PAYMENT_SCHEME, scheme, SCHEME_NAMES[scheme]), text=SCHEME_NAMES[scheme]
        ),
        "beneficiary": ref(patient_url),
        "payor": [ref(payor, BUREAU_NAME)],
        "period": {"start": f"{as_of.year}-01-01", "end": f"{as_of.year}-12-31"},
        "class": [
            {
                "type": concept(coding(naming.COVERAGE_CLASS, "plan")),
                "value": geography.city().code,
                "name": f"{geography.city().name}统筹区",
            }
        ],
    }
    record = f"coverage-{person.key}-{scheme}"
    resource["identifier"] = [identifier(naming.DEMO_RECORD, record)]
    if number is not None:
        resource["identifier"].append(identifier(*number))
        resource["subscriberId"] = number[1]
    return Entry(
        urn(seed, f"Coverage/{person.key}-{scheme}"), resource, if_none_exist(naming.DEMO_RECORD, record)
    )
