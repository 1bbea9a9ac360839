"""The demo region: deterministic, valid FHIR R4, realistic, and loadable twice without change."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import SHARED as SHARED_DATA
from yilian.demo import DEMO_AS_OF, DemoRegion, build_demo_region, check_digits, reference
from yilian.demo.names import pinyin_word
from yilian.kernel import naming, prc_id

ROOT = Path(__file__).resolve().parents[3]
SHARED = SHARED_DATA
DATA = ROOT / "src" / "yilian" / "demo" / "data"
HAN = re.compile(r"^[\u4e00-\u9fff]+$")
PINYIN = re.compile(r"^[A-Z][a-zü']*$")
CONDITIONAL = re.compile(r"^(?P<type>[A-Za-z]+)\?identifier=(?P<system>[^|]+)\|(?P<value>.+)$")

Json = dict[str, Any]


@pytest.fixture(scope="module")
def region() -> DemoRegion:
    return build_demo_region()


@pytest.fixture(scope="module")
def bundles(region: DemoRegion) -> list[Json]:
    return region.bundles()


def resources(bundles: list[Json], kind: str | None = None) -> Iterator[Json]:
    for bundle in bundles:
        for entry in bundle["entry"]:
            if kind is None or entry["resource"]["resourceType"] == kind:
                yield entry["resource"]


def identifiers(resource: Json, system: str) -> list[str]:
    return [i["value"] for i in resource.get("identifier", []) if i.get("system") == system]


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def digest(bundles: list[Json]) -> str:
    return hashlib.sha256(json.dumps(bundles, ensure_ascii=False).encode()).hexdigest()


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes(bundles: list[Json]) -> None:
    assert digest(build_demo_region().bundles()) == digest(bundles)


def test_same_bytes_in_another_process_with_another_hash_seed(bundles: list[Json]) -> None:
    # str hashing is randomised per process; nothing in the output may depend on it.
    code = (
        "import hashlib, json; from yilian.demo import build_demo_region; "
        "print(hashlib.sha256(json.dumps(build_demo_region().bundles(), ensure_ascii=False).encode()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == digest(bundles)


def test_another_seed_another_region(bundles: list[Json]) -> None:
    other = build_demo_region(seed=7, residents=60)
    assert digest(other.bundles()) != digest(bundles)
    assert other.summary()["Patient"] == 60 + len(other.known_duplicates)


def test_too_few_residents_is_refused() -> None:
    with pytest.raises(Exception, match="at least 10"):
        build_demo_region(residents=3)


# --------------------------------------------------------------------------- shape and counts


def test_bundles_are_transactions_of_posts(region: DemoRegion, bundles: list[Json]) -> None:
    assert bundles[0]["entry"][0]["resource"]["resourceType"] == "Organization"
    registry_types = {e["resource"]["resourceType"] for e in bundles[0]["entry"]}
    assert registry_types == {"Organization", "Location", "Practitioner", "PractitionerRole"}
    for bundle in bundles:
        assert bundle["resourceType"] == "Bundle"
        assert bundle["type"] == "transaction"
        for entry in bundle["entry"]:
            assert entry["fullUrl"].startswith("urn:uuid:")
            assert "id" not in entry["resource"]  # the server assigns ids
            assert entry["request"]["method"] == "POST"
            assert entry["request"]["url"] == entry["resource"]["resourceType"]
    # ~20 residents per bundle after the registry
    patients_per_bundle = [
        sum(1 for e in b["entry"] if e["resource"]["resourceType"] == "Patient") for b in bundles[1:]
    ]
    assert all(15 <= n <= 30 for n in patients_per_bundle[:-1])


def test_full_urls_are_unique(bundles: list[Json]) -> None:
    urls = [e["fullUrl"] for b in bundles for e in b["entry"]]
    assert len(urls) == len(set(urls))


def test_summary_counts(region: DemoRegion, bundles: list[Json]) -> None:
    summary = region.summary()
    assert summary == dict(sorted(Counter(r["resourceType"] for r in resources(bundles)).items()))
    assert summary["Patient"] == 300 + len(region.known_duplicates)
    assert summary["Organization"] == 16 + 1  # the consortium and the medical security bureau
    assert summary["Coverage"] >= 280  # nearly everyone is insured
    assert 35 <= summary["Practitioner"] <= 50
    assert summary["PractitionerRole"] == summary["Practitioner"]
    assert summary["Encounter"] > 300
    assert summary["Observation"] > 500
    assert summary["Condition"] > 200
    assert summary["Immunization"] > 100
    assert summary["RelatedPerson"] >= 10


def is_payer(org: Json) -> bool:
    return any(c["code"] == "pay" for t in org.get("type", []) for c in t["coding"])


def test_consortium_hierarchy(bundles: list[Json]) -> None:
    orgs = {
        e["fullUrl"]: e["resource"]
        for e in bundles[0]["entry"]
        if e["resource"]["resourceType"] == "Organization" and not is_payer(e["resource"])
    }

    def level(org: Json) -> tuple[str, ...]:
        return tuple(
            c["code"] for t in org["type"] for c in t["coding"] if c["system"] == naming.INSTITUTION_LEVEL
        )

    levels = Counter(level(o) for o in orgs.values())
    assert levels == {(): 1, ("3",): 1, ("2",): 2, ("1",): 4, ("village",): 8}
    roots = [o for o in orgs.values() if "partOf" not in o]
    assert [r["name"] for r in roots] == ["湖州市卫生健康委员会"]
    tertiary = next(o for o in orgs.values() if level(o) == ("3",))
    grades = [
        c["code"] for t in tertiary["type"] for c in t["coding"] if c["system"] == naming.INSTITUTION_GRADE
    ]
    assert grades == ["A"]
    for org in orgs.values():
        if level(org) == ("village",):
            parent = orgs[org["partOf"]["reference"]]
            assert level(parent) == ("1",), "village clinics belong to a township health centre"
        # every chain ends at the commission
        seen = 0
        node = org
        while "partOf" in node:
            node = orgs[node["partOf"]["reference"]]
            seen += 1
            assert seen < 10
        assert node["name"] == "湖州市卫生健康委员会"


def test_institution_codes_and_addresses(bundles: list[Json]) -> None:
    districts = {d.code for d in reference.divisions() if d.kind in ("district", "county")}
    for org in resources(bundles, "Organization"):
        (uscc,) = identifiers(org, naming.UNIFIED_SOCIAL_CREDIT_CODE)
        assert check_digits.is_valid_uscc(uscc), uscc
        assert uscc[2:8] in districts
        assert identifiers(org, naming.ORGANIZATION_CODE) == [uscc[8:17]]
        (address,) = org["address"]
        (division,) = address["extension"]
        assert division["valueCoding"]["code"] in districts
        assert address["city"] == "湖州市"
        assert org["telecom"][0]["value"].startswith("0572-")


# --------------------------------------------------------------------------- references


def test_every_reference_resolves(bundles: list[Json]) -> None:
    by_identifier: dict[tuple[str, str, str], int] = Counter()
    for resource in resources(bundles):
        for ident in resource.get("identifier", []):
            by_identifier[(resource["resourceType"], ident["system"], ident["value"])] += 1
    for bundle in bundles:
        urls = {e["fullUrl"] for e in bundle["entry"]}
        for entry in bundle["entry"]:
            for target in references(entry["resource"]):
                if target.startswith("urn:uuid:"):
                    assert target in urls, f"{target} is not in the same bundle"
                    continue
                match = CONDITIONAL.match(target)
                assert match, f"unexpected reference form {target}"
                key = (match["type"], match["system"], match["value"])
                assert by_identifier[key] == 1, f"{target} must match exactly one resource"
                # conditional targets are registry resources, created by the first bundle
                assert any(
                    e["resource"]["resourceType"] == match["type"]
                    and match["value"] in identifiers(e["resource"], match["system"])
                    for e in bundles[0]["entry"]
                )


def test_references_point_at_the_right_types(bundles: list[Json]) -> None:
    types = {e["fullUrl"]: e["resource"]["resourceType"] for b in bundles for e in b["entry"]}
    for enc in resources(bundles, "Encounter"):
        assert types[enc["subject"]["reference"]] == "Patient"
        for d in enc.get("diagnosis", []):
            assert types[d["condition"]["reference"]] == "Condition"
    for kind in ("Observation", "Condition"):
        for res in resources(bundles, kind):
            assert types[res["subject"]["reference"]] == "Patient"
            assert types[res["encounter"]["reference"]] == "Encounter"
    for imm in resources(bundles, "Immunization"):
        assert types[imm["patient"]["reference"]] == "Patient"
    for rp in resources(bundles, "RelatedPerson"):
        assert types[rp["patient"]["reference"]] == "Patient"


def test_residents_are_insured_as_the_payments_system_reads_coverage(
    region: DemoRegion, bundles: list[Json]
) -> None:
    """Each insured resident has one Coverage of their basic scheme (and one of medical aid if
    eligible), for the demo year, in the city's pooling region, paid by the medical security
    bureau; and a policy is in force for every scheme used, so their charges are reimbursed."""
    from yilian.payments.adjudication import policy_in_force
    from yilian.payments.service import policies

    types = {e["fullUrl"]: e["resource"]["resourceType"] for b in bundles for e in b["entry"]}
    (bureau,) = (o for o in resources(bundles[:1], "Organization") if is_payer(o))
    (uscc,) = identifiers(bureau, naming.UNIFIED_SOCIAL_CREDIT_CODE)
    schemes_of: dict[str, list[str]] = defaultdict(list)
    for cov in resources(bundles, "Coverage"):
        assert types[cov["beneficiary"]["reference"]] == "Patient"
        (payor,) = cov["payor"]
        assert payor["reference"] == f"Organization?identifier={naming.UNIFIED_SOCIAL_CREDIT_CODE}|{uscc}"
        assert cov["status"] == "active"
        assert cov["period"] == {"start": f"{region.as_of.year}-01-01", "end": f"{region.as_of.year}-12-31"}
        (plan,) = cov["class"]
        assert plan["type"]["coding"][0] == {"system": naming.COVERAGE_CLASS, "code": "plan"}
        assert plan["value"] == region.city
        (scheme,) = (c["code"] for c in cov["type"]["coding"] if c["system"] == naming.PAYMENT_SCHEME)
        assert policy_in_force(policies(), scheme=scheme, region=plan["value"], on=region.as_of), scheme
        schemes_of[cov["beneficiary"]["reference"]].append(scheme)
    basic = {"urban-employee", "urban-resident", "ncms"}
    patients = sum(1 for _ in resources(bundles, "Patient")) - len(region.known_duplicates)
    assert len(schemes_of) >= 0.9 * patients  # nearly everyone is insured
    for schemes in schemes_of.values():
        assert len([s for s in schemes if s in basic]) == 1, schemes  # one basic scheme each
        assert len(schemes) == len(set(schemes))
    used = Counter(s for schemes in schemes_of.values() for s in schemes)
    assert set(used) == basic | {"medical-aid"}
    assert used["medical-aid"] < 0.15 * len(schemes_of)  # aid is for the few


# --------------------------------------------------------------------------- idempotent loading


def test_every_entry_is_conditional_on_an_identifier_it_carries(bundles: list[Json]) -> None:
    conditions = []
    for bundle in bundles:
        for entry in bundle["entry"]:
            condition = entry["request"].get("ifNoneExist")
            assert condition, f"{entry['resource']['resourceType']} would be created again on a second load"
            system, value = condition.removeprefix("identifier=").split("|", 1)
            assert value in identifiers(entry["resource"], system)
            conditions.append((entry["resource"]["resourceType"], condition))
    assert len(conditions) == len(set(conditions)), "two entries share an ifNoneExist condition"


# --------------------------------------------------------------------------- people


def test_id_numbers_are_valid_and_agree_with_the_patient(region: DemoRegion, bundles: list[Json]) -> None:
    districts = {d.code for d in reference.divisions() if d.kind in ("district", "county")}
    legacy = {d.duplicate for d in region.known_duplicates if d.kind == "legacy-id"}
    seen: set[str] = set()
    urls = {id(e["resource"]): e["fullUrl"] for b in bundles for e in b["entry"]}
    checked = 0
    for kind in ("Patient", "RelatedPerson"):
        for res in resources(bundles, kind):
            for value in identifiers(res, naming.PRC_RESIDENT_ID):
                parsed = prc_id.parse(value, today=region.as_of)
                assert parsed.birth_date.isoformat() == res["birthDate"]
                assert parsed.sex == res["gender"]
                assert parsed.division in districts
                if len(value) == 15:
                    assert urls[id(res)] in legacy
                else:
                    assert parsed.number == value
                if kind == "Patient" and urls[id(res)] not in {d.duplicate for d in region.known_duplicates}:
                    assert value not in seen, "two residents share an ID number"
                    seen.add(value)
                checked += 1
    assert checked > 250
    # Newborns are the only residents without one (they have no household registration yet).
    for patient in resources(bundles, "Patient"):
        if not identifiers(patient, naming.PRC_RESIDENT_ID) and urls[id(patient)] not in {
            d.duplicate for d in region.known_duplicates
        }:
            assert (region.as_of - dt.date.fromisoformat(patient["birthDate"])).days < 60


def test_patient_identifiers(region: DemoRegion, bundles: list[Json]) -> None:
    patients = list(resources(bundles, "Patient"))
    # Card numbers are the card system's to give (yilian.card, once loaded): none in the bundles,
    # but most residents are marked to receive one, each holder one of the region's Patients.
    assert not [v for p in patients for v in identifiers(p, naming.HEALTH_CARD)]
    full_urls = {
        e["fullUrl"] for b in bundles for e in b["entry"] if e["resource"]["resourceType"] == "Patient"
    }
    assert region.card_holders <= full_urls
    assert 0.7 * 300 < len(region.card_holders) < 300
    for p in patients:
        mrns = [i for i in p["identifier"] if i["system"].startswith(naming.PLATFORM_SID + "mrn/")]
        assert len(mrns) == 1
        assert mrns[0]["assigner"]["reference"].startswith("Organization?identifier=")
        insurance = [
            i
            for i in p["identifier"]
            if i["system"] in (naming.INSURANCE_EMPLOYEE, naming.INSURANCE_RESIDENT)
        ]
        assert len(insurance) <= 1
        for telecom in p.get("telecom", []):
            assert re.fullmatch(r"1[3-9]\d{9}", telecom["value"])
        (address,) = p["address"]
        assert address["text"].startswith("浙江省湖州市")
        rural = p["extension"][0]["valueCoding"]["code"]
        assert rural in ("urban", "rural")
    phones = Counter(t["value"] for p in patients for t in p.get("telecom", []))
    # a phone is shared only by a mother and her children (registration forms record the guardian)
    assert max(phones.values()) <= 4


def test_names_look_chinese(bundles: list[Json]) -> None:
    surnames = {s.hanzi for s in reference.surnames()}
    compound = 0
    for kind in ("Patient", "Practitioner", "RelatedPerson"):
        for res in resources(bundles, kind):
            hanzi = [n for n in res["name"] if n["extension"][0]["valueCode"] == "IDE"]
            pinyin = [n for n in res["name"] if n["extension"][0]["valueCode"] == "ABC"]
            if not hanzi:  # a duplicate registered in pinyin only
                assert pinyin
                continue
            name = hanzi[0]
            assert HAN.match(name["text"]), name["text"]
            assert name["text"] == name["family"] + name["given"][0]
            assert 2 <= len(name["text"]) <= 4
            if name["family"] not in surnames:  # only the compound-split duplicate
                assert name["family"] + name["given"][0][0] in surnames
            compound += len(name["family"]) > 1
            if pinyin:
                assert PINYIN.match(pinyin[0]["family"]), pinyin[0]
                assert PINYIN.match(pinyin[0]["given"][0]), pinyin[0]
                assert pinyin[0]["text"] == f"{pinyin[0]['family']} {pinyin[0]['given'][0]}"
    assert compound >= 1, "compound surnames (欧阳, 司马…) must appear"


def test_name_frequencies_are_realistic(bundles: list[Json]) -> None:
    families = Counter(
        n["family"]
        for p in resources(bundles, "Patient")
        for n in p["name"]
        if n["extension"][0]["valueCode"] == "IDE"
    )
    top = {f for f, _ in families.most_common(10)}
    assert len(top & set("王李张刘陈杨赵黄周吴")) >= 4
    assert len(families) > 80


@pytest.mark.parametrize(
    ("surname", "spelling"),
    [("单", "Shan"), ("曾", "Zeng"), ("解", "Xie"), ("仇", "Qiu"), ("区", "Ou"), ("欧阳", "Ouyang"), ("诸葛", "Zhuge"),
     ("吕", "Lü"), ("朴", "Piao"), ("查", "Zha")],
)  # fmt: skip
def test_polyphonic_and_compound_surnames_are_spelled_as_surnames(surname: str, spelling: str) -> None:
    table = {s.hanzi: s for s in reference.surnames()}
    assert pinyin_word(table[surname].pinyin) == spelling


def test_pinyin_spelling_rules() -> None:
    assert pinyin_word(("xiao3", "ming2")) == "Xiaoming"
    assert pinyin_word(("jia1", "en1")) == "Jia'en"
    assert pinyin_word(("nv3",)) == "Nü"


def test_children_have_mothers(region: DemoRegion, bundles: list[Json]) -> None:
    urls = {e["fullUrl"]: e["resource"] for b in bundles for e in b["entry"]}
    mothers = {rp["patient"]["reference"]: rp for rp in resources(bundles, "RelatedPerson")}
    children = 0
    for url, res in urls.items():
        if res["resourceType"] != "Patient":
            continue
        born = dt.date.fromisoformat(res["birthDate"])
        age = (region.as_of - born).days / 365.25
        if age < 7 and url not in {d.duplicate for d in region.known_duplicates}:
            children += 1
            mother = mothers[url]
            assert mother["relationship"][0]["coding"][0]["code"] == "MTH"
            assert mother["gender"] == "female"
            age_at_birth = (born - dt.date.fromisoformat(mother["birthDate"])).days / 365.25
            assert 20 <= age_at_birth <= 40
            assert res["telecom"] == mother["telecom"]
    assert children >= 15
    # the mother is also a resident, linked to her RelatedPerson records
    linked = [link["other"]["reference"] for p in resources(bundles, "Patient") for link in p.get("link", [])]
    assert sorted(linked) == sorted(
        e["fullUrl"] for b in bundles for e in b["entry"] if e["resource"]["resourceType"] == "RelatedPerson"
    )


def test_family_doctors(bundles: list[Json]) -> None:
    roles = {
        f"PractitionerRole?identifier={naming.DEMO_RECORD}|{v}": r
        for r in resources(bundles, "PractitionerRole")
        for v in identifiers(r, naming.DEMO_RECORD)
    }
    signed = [p for p in resources(bundles, "Patient") if "generalPractitioner" in p]
    assert len(signed) >= 30
    for p in signed:
        role = roles[p["generalPractitioner"][0]["reference"]]
        assert role["specialty"][0]["coding"][0]["code"] == "general-practice"


# --------------------------------------------------------------------------- duplicates


def test_known_duplicates(region: DemoRegion, bundles: list[Json]) -> None:
    urls = {e["fullUrl"]: e["resource"] for b in bundles for e in b["entry"]}
    dups = region.known_duplicates
    assert len(dups) >= 3
    assert {"typo", "pinyin-only", "legacy-id", "moved", "name-order"} <= {d.kind for d in dups}
    for d in dups:
        original, duplicate = urls[d.original], urls[d.duplicate]
        assert original["resourceType"] == duplicate["resourceType"] == "Patient"
        assert d.original_identifier[1] in identifiers(original, d.original_identifier[0])
        assert d.duplicate_identifier[1] in identifiers(duplicate, d.duplicate_identifier[0])
        assert d.original_identifier[0] != d.duplicate_identifier[0], "registered at another institution"
        assert original["birthDate"] == duplicate["birthDate"]
        assert original["gender"] == duplicate["gender"]
        assert original["name"] != duplicate["name"] or d.kind in ("legacy-id", "moved")
        (original_id,) = identifiers(original, naming.PRC_RESIDENT_ID)
        assert original_id not in d.note, "notes mask ID numbers"
        dup_ids = identifiers(duplicate, naming.PRC_RESIDENT_ID)
        if d.kind in ("typo", "name-order", "compound-split"):
            assert dup_ids == [original_id]
        elif d.kind == "legacy-id":
            assert prc_id.parse(dup_ids[0], today=region.as_of).number == original_id
        else:
            assert dup_ids == []
        if d.kind == "pinyin-only":
            assert [n["extension"][0]["valueCode"] for n in duplicate["name"]] == ["ABC"]
        # the duplicate has its own clinical record, which a merge must keep resolvable
        assert any(
            e.get("subject", {}).get("reference") == d.duplicate for e in resources(bundles, "Encounter")
        )


# --------------------------------------------------------------------------- clinical content


def test_conditions_use_chinese_icd10(bundles: list[Json]) -> None:
    table = reference.diagnoses()
    codes: Counter[str] = Counter()
    for cond in resources(bundles, "Condition"):
        icd = [c for c in cond["code"]["coding"] if c["system"] == naming.ICD10_CN]
        assert len(icd) == 1
        assert icd[0]["display"] == table[icd[0]["code"]].name == cond["code"]["text"]
        codes[icd[0]["code"]] += 1
        if cond["clinicalStatus"]["coding"][0]["code"] == "resolved":
            assert cond["abatementDateTime"] >= cond["onsetDateTime"]
    assert codes["I10.x00"] >= 30  # hypertension is common among adults
    assert codes["E11.900"] >= 8


def test_observations(bundles: list[Json]) -> None:
    kinds: Counter[str] = Counter()
    for obs in resources(bundles, "Observation"):
        (code,) = obs["code"]["coding"]
        assert code["system"] == naming.LOINC
        assert HAN.match(code["display"])
        kinds[code["code"]] += 1
        if code["code"] == "85354-9":
            systolic, diastolic = (c["valueQuantity"] for c in obs["component"])
            assert systolic["code"] == diastolic["code"] == "mm[Hg]"
            assert 50 <= diastolic["value"] < systolic["value"] <= 220
        else:
            quantity = obs["valueQuantity"]
            assert quantity["system"] == naming.UCUM
            low, high = {
                "14771-0": (3.0, 20.0), "4548-4": (4.0, 14.0), "8302-2": (130, 200), "29463-7": (30, 150),
                "39156-5": (14, 45),
            }[code["code"]]  # fmt: skip
            assert low <= quantity["value"] <= high, (code, quantity)
    assert set(kinds) == {"85354-9", "14771-0", "4548-4", "8302-2", "29463-7", "39156-5"}


def test_visits_happen_before_the_demo_date(region: DemoRegion, bundles: list[Json]) -> None:
    limit = dt.datetime.combine(region.as_of, dt.time(23, 59), dt.timezone(dt.timedelta(hours=8)))
    for enc in resources(bundles, "Encounter"):
        start = dt.datetime.fromisoformat(enc["period"]["start"])
        end = dt.datetime.fromisoformat(enc["period"]["end"])
        assert start < end <= limit
        assert enc["class"]["code"] in ("AMB", "IMP")


def test_immunizations_follow_the_nip_schedule(region: DemoRegion, bundles: list[Json]) -> None:
    schedule = {(d.series, d.dose_number): d for d in reference.nip_schedule()}
    births = {e["fullUrl"]: dt.date.fromisoformat(e["resource"]["birthDate"]) for b in bundles for e in b["entry"]
              if e["resource"]["resourceType"] == "Patient"}  # fmt: skip
    per_child: dict[str, list[tuple[dt.date, Json]]] = defaultdict(list)
    for imm in resources(bundles, "Immunization"):
        child = imm["patient"]["reference"]
        given = dt.datetime.fromisoformat(imm["occurrenceDateTime"]).date()
        per_child[child].append((given, imm))
        protocol = imm["protocolApplied"][0]
        dose = schedule[(protocol["series"], protocol["doseNumberPositiveInt"])]
        nip = [c for c in imm["vaccineCode"]["coding"] if c["system"] == naming.NIP_VACCINE]
        cv = [c for c in imm["vaccineCode"]["coding"] if c["system"] == naming.VACCINE]
        assert nip[0]["code"] == dose.abbreviation and cv[0]["code"] == dose.vaccine_cv
        assert imm["lotNumber"] and imm["expirationDate"] > given.isoformat()
        earliest = _add_months(births[child], dose.age_months)
        assert earliest <= given < region.as_of, (dose.abbreviation, dose.dose_number)
        if dose.age_months == 0:
            assert given == births[child], "birth doses on the day of birth"
        assert any(
            p.get("actor", {}).get("reference", "").startswith("Organization?") for p in imm["performer"]
        )
    assert len(per_child) >= 15
    live = {"MMR", "JE-L", "HepA-L"}
    for doses in per_child.values():
        series: dict[str, list[tuple[int, dt.date]]] = defaultdict(list)
        for given, imm in doses:
            protocol = imm["protocolApplied"][0]
            series[protocol["series"]].append((protocol["doseNumberPositiveInt"], given))
        for items in series.values():
            ordered = [d for _, d in sorted(items)]
            assert ordered == sorted(ordered), "doses of a series in order"
        assert not ({"JE-L", "JE-I"} <= set(series)), "one Japanese encephalitis series only"
        assert not ({"HepA-L", "HepA-I"} <= set(series)), "one hepatitis A series only"
        if "JE-I" in series and len(series["JE-I"]) >= 2:
            first, second = sorted(series["JE-I"])[:2]
            if (first[0], second[0]) == (1, 2):
                assert 7 <= (second[1] - first[1]).days <= 10
        live_days = sorted({given for given, imm in doses if imm["vaccineCode"]["coding"][0]["code"] in live})
        for a, b in itertools.pairwise(live_days):
            assert (b - a).days >= 28, "injectable live vaccines on different days are >= 28 days apart"


def _add_months(day: dt.date, months: int) -> dt.date:
    year, month = divmod(day.month - 1 + months, 12)
    for last in (31, 30, 29, 28):
        try:
            return dt.date(day.year + year, month + 1, min(day.day, last))
        except ValueError:
            continue
    raise AssertionError


# --------------------------------------------------------------------------- FHIR validity


@pytest.fixture(scope="module")
def schema_validators() -> dict[str, Any]:
    import jsonschema_rs

    path = SHARED / "fhir-r4-definitions" / "fhir.schema.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    # The published R4 schema refers to two definitions it does not contain.
    schema["definitions"].setdefault("Resource", {"$ref": "#/definitions/ResourceList"})
    schema["definitions"].setdefault("integer64", {"$ref": "#/definitions/integer"})
    out = {}
    for kind in ("Bundle", "Organization", "Location", "Practitioner", "PractitionerRole", "Patient",
                 "RelatedPerson", "Encounter", "Condition", "Observation", "Immunization", "Coverage"):  # fmt: skip
        single = {k: v for k, v in schema.items() if k not in ("oneOf", "discriminator")}
        single["$ref"] = f"#/definitions/{kind}"
        out[kind] = jsonschema_rs.validator_for(single)
    return out


def test_every_resource_is_schema_valid(bundles: list[Json], schema_validators: dict[str, Any]) -> None:
    problems = []
    for res in resources(bundles):
        for error in schema_validators[res["resourceType"]].iter_errors(res):
            problems.append(f"{res['resourceType']}: {error}"[:300])
    for bundle in bundles:
        problems.extend(f"Bundle: {e}"[:300] for e in schema_validators["Bundle"].iter_errors(bundle))
    assert not problems, "\n".join(problems[:10])


def test_the_schema_check_catches_mistakes(schema_validators: dict[str, Any]) -> None:
    bad = {"resourceType": "Patient", "gender": "man", "birthDate": "1990-13-01"}
    assert list(schema_validators["Patient"].iter_errors(bad))


def test_every_resource_passes_the_platform_validator(bundles: list[Json]) -> None:
    from yilian.fhir import validation

    for bundle in bundles:
        validation.check(bundle)
    for res in resources(bundles):
        validation.check(res)


def test_every_resource_is_labelled_test_data(bundles: list[Json]) -> None:
    for res in resources(bundles):
        assert {"system": naming.V3_ACT_REASON, "code": "HTEST", "display": "test health data"} in res[
            "meta"
        ]["security"]


# --------------------------------------------------------------------------- identifier and code systems


def _naming_systems() -> set[str]:
    values = {v for v in vars(naming).values() if isinstance(v, str) and ":" in v}
    return values | set(naming.WS364_VALUE_DOMAINS.values())


def test_demo_systems_come_from_naming(bundles: list[Json]) -> None:
    known = _naming_systems()
    allowed_prefixes = ("http://terminology.hl7.org/CodeSystem/", "urn:ietf:bcp:47")
    used: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            system = node.get("system")
            if isinstance(system, str) and ("value" in node or "code" in node):
                used.add(system)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(list(resources(bundles)))
    for system in used:
        if system in ("phone", "email"):
            continue  # ContactPoint.system
        assert (
            system in known
            or system.startswith(allowed_prefixes)
            or system.startswith((naming.PLATFORM_SID + "mrn/", naming.PLATFORM_SID + "visit/"))
        ), system


def test_mrn_and_visit_systems() -> None:
    assert (
        naming.mrn_system("12330502798950514B") == "https://yilian.example.cn/fhir/sid/mrn/12330502798950514B"
    )
    assert naming.visit_number_system("x1").endswith("/visit/x1")
    assert naming.passport_system("USA").endswith("/passport/USA")
    for bad in ("", "a b", "a/b", "x" * 65):
        with pytest.raises(Exception, match="institution key"):
            naming.mrn_system(bad)
    with pytest.raises(Exception, match="alpha-3"):
        naming.passport_system("cn")
    assert naming.value_domain("CV02.01.101") == naming.ID_DOCUMENT_TYPE
    with pytest.raises(Exception, match="no OID"):
        naming.value_domain("CV99.99.999")


def test_oids_match_the_national_oid_list() -> None:
    path = SHARED / "cn-standards" / "oid" / "OID.xml"
    listed = {o.get("oid"): o.get("valueSetName") for o in ET.parse(path).getroot().iter("OID")}
    by_set = {v: k for k, v in listed.items()}
    for table, system in naming.WS364_VALUE_DOMAINS.items():
        assert system == f"urn:oid:{by_set[table]}", table
    expected = {
        naming.ICD10_CN: "ICD-10", naming.ICD9_CM3: "ICD-9-CM-3", naming.ADMIN_DIVISION: "GB/T 2260-1999",
        naming.ETHNICITY: "GB 3304-1991", naming.SEX: "GB/T 2261.1-2003", naming.MARITAL_STATUS: "GB/T 2261.2-2003",
        naming.COUNTRY: "GB/T 2659-2000", naming.EDUCATION: "GB/T 4658-1984", naming.OCCUPATION: "GB/T 6565-2009",
        naming.FAMILY_RELATIONSHIP: "GB/T 4761-2008", naming.PROFESSIONAL_TITLE: "GB/T 8561-2001",
        naming.TCM_DISEASE: "GB/T 15657-1995", naming.INSTITUTION_CLASSIFICATION: "WS 218-2002",
        naming.DEPARTMENT: "SD01.01.003.00", naming.ID_DOCUMENT_TYPE: "CV02.01.101",
        naming.INSURANCE_TYPE: "CV02.01.204", naming.VACCINE: "CV08.50.001", naming.ROUTE: "CV06.00.102",
        naming.PROFESSIONAL_TITLE_LEVEL: "CV08.30.005",
    }  # fmt: skip
    for system, value_set in expected.items():
        assert listed[system.removeprefix("urn:oid:")] == value_set, system
    # every urn:oid constant is in the list, except the two WS/T 500 identifier roots
    # (the list covers code systems only; docs/decisions/0004-identifier-systems.md)
    identifier_roots = {naming.PRC_RESIDENT_ID, naming.HEALTH_CARD}
    assert identifier_roots == {"urn:oid:2.16.156.10011.1.3", "urn:oid:2.16.156.10011.1.19"}
    for value in vars(naming).values():
        if isinstance(value, str) and value.startswith("urn:oid:") and value not in identifier_roots:
            assert value.removeprefix("urn:oid:") in listed, value


# --------------------------------------------------------------------------- shipped reference data


def test_check_digit_algorithms() -> None:
    # The worked example of GB 32100-2015.
    assert check_digits.is_valid_uscc("91350100M000100Y43")
    assert check_digits.organization_code_check("M000100Y") == "4"
    assert not check_digits.is_valid_uscc("91350100M000100Y44")


def test_reference_data_is_small_and_sourced() -> None:
    files = sorted(DATA.iterdir())
    assert {f.name for f in files} >= {"SOURCE.md", "divisions.csv", "surnames.csv", "given_chars.csv",
                                       "diagnoses.csv", "nip_schedule.csv"}  # fmt: skip
    assert sum(f.stat().st_size for f in files) < 300_000
    source = (DATA / "SOURCE.md").read_text(encoding="utf-8")
    for f in files:
        if f.suffix == ".csv":
            assert f"`{f.name}`" in source


def test_demo_city_is_real() -> None:
    divisions = {d.code: d for d in reference.divisions()}
    assert divisions["330500"].name == "湖州市"
    assert {c for c, d in divisions.items() if d.kind in ("district", "county")} == {
        "330502", "330503", "330521", "330522", "330523"
    }  # fmt: skip


def test_reference_data_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "gen_demo_data.py"),
            "--source",
            str(SHARED),
            "--out",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    for generated in tmp_path.iterdir():
        assert generated.read_bytes() == (DATA / generated.name).read_bytes(), (
            f"re-run scripts/gen_demo_data.py: {generated.name}"
        )


def test_as_of_is_fixed() -> None:
    assert dt.date(2026, 12, 1) == DEMO_AS_OF
    assert build_demo_region(residents=20, as_of=dt.date(2025, 1, 1)).as_of == dt.date(2025, 1, 1)
