"""Patient and RelatedPerson resources of the demo residents."""

from __future__ import annotations

from yilian.demo import geography
from yilian.demo.elements import (
    Entry,
    Json,
    coding,
    concept,
    identifier,
    if_none_exist,
    ref,
    test_data_meta,
    urn,
)
from yilian.demo.names import human_names
from yilian.demo.population import Person
from yilian.demo.registry import Institution
from yilian.kernel import naming

BCP47 = "urn:ietf:bcp:47"


def id_number_identifier(value: str) -> Json:
    return identifier(
        naming.PRC_RESIDENT_ID,
        value,
        concept(
            coding(naming.V2_IDENTIFIER_TYPE, "NI", "National unique individual identifier"),
            coding(naming.ID_DOCUMENT_TYPE, "01", "居民身份证"),
            text="居民身份证",
        ),
        use="official",
    )


def mrn_identifier(institution: Institution, mrn: str) -> Json:
    out = identifier(
        naming.mrn_system(institution.uscc),
        mrn,
        concept(coding(naming.V2_IDENTIFIER_TYPE, "MR", "Medical record number"), text="病案号"),
        use="usual",
    )
    out["assigner"] = ref(institution.reference, institution.name)
    return out


def patient_url(seed: int, key: str) -> str:
    return urn(seed, f"Patient/{key}")


def mother_url(seed: int, child_key: str) -> str:
    return urn(seed, f"RelatedPerson/{child_key}-mother")


def mother_record_key(seed: int, child_key: str) -> str:
    return f"{seed}-{child_key}-mother"


def _identifiers(p: Person, home: Institution) -> list[Json]:
    out = []
    if p.id_number:
        out.append(id_number_identifier(p.id_number))
    out.append(mrn_identifier(home, p.mrn))
    if p.insurance:
        codings = [coding(naming.V2_IDENTIFIER_TYPE, "MB", "Member Number")]
        if p.insurance.cv_code:
            codings.append(coding(naming.INSURANCE_TYPE, p.insurance.cv_code, p.insurance.scheme))
        out.append(
            identifier(p.insurance.system, p.insurance.number, concept(*codings, text=p.insurance.scheme))
        )
    if p.ncms_number:
        out.append(
            identifier(
                naming.INSURANCE_NCMS,
                p.ncms_number,
                concept(
                    coding(naming.V2_IDENTIFIER_TYPE, "MB", "Member Number"),
                    coding(naming.INSURANCE_TYPE, "1", "新型农村合作医疗"),
                    text="新农合参合证号",
                ),
                use="old",
            )
        )
    return out


def home_address(p: Person) -> Json:
    return geography.address(p.district, p.area, p.place, p.line, use="home")


def residence_extension(rural: bool) -> Json:
    code, display = ("rural", "农村") if rural else ("urban", "城镇")
    return {"url": naming.EXT_RESIDENCE_TYPE, "valueCoding": coding(naming.RESIDENCE_TYPE, code, display)}


def patient_entry(seed: int, p: Person, home: Institution) -> Entry:
    resource: Json = {
        "resourceType": "Patient",
        "meta": test_data_meta(),
        "extension": [residence_extension(p.rural)],
        "identifier": _identifiers(p, home),
        "active": True,
        "name": human_names(p.name),
    }
    if p.phone:
        resource["telecom"] = [{"system": "phone", "value": p.phone, "use": "mobile"}]
    resource["gender"] = p.sex
    resource["birthDate"] = p.birth_date.isoformat()
    resource["address"] = [home_address(p)]
    resource["communication"] = [
        {"language": concept(coding(BCP47, "zh-CN", "Chinese (China)")), "preferred": True}
    ]
    if p.family_doctor:
        resource["generalPractitioner"] = [
            ref(p.family_doctor.role_reference, f"{p.family_doctor.name.text}（家庭医生）")
        ]
    resource["managingOrganization"] = ref(home.reference, home.name)
    if p.children:
        # The mother is also the RelatedPerson of each child: the same human, so "seealso".
        resource["link"] = [{"other": ref(mother_url(seed, c)), "type": "seealso"} for c in p.children]
    return Entry(patient_url(seed, p.key), resource, if_none_exist(naming.mrn_system(home.uscc), p.mrn))


def mother_entry(seed: int, child: Person, mother: Person) -> Entry:
    key = mother_record_key(seed, child.key)
    ids = [identifier(naming.DEMO_RECORD, key)]
    if mother.id_number:
        ids.append(id_number_identifier(mother.id_number))
    resource: Json = {
        "resourceType": "RelatedPerson",
        "meta": test_data_meta(),
        "identifier": ids,
        "active": True,
        "patient": ref(patient_url(seed, child.key), child.name.text),
        "relationship": [concept(coding(naming.V3_ROLE_CODE, "MTH", "mother"), text="母亲")],
        "name": human_names(mother.name),
        "telecom": [{"system": "phone", "value": mother.phone, "use": "mobile"}] if mother.phone else [],
        "gender": "female",
        "birthDate": mother.birth_date.isoformat(),
        "address": [home_address(mother)],
    }
    if not resource["telecom"]:
        del resource["telecom"]
    return Entry(mother_url(seed, child.key), resource, if_none_exist(naming.DEMO_RECORD, key))
