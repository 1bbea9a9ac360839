"""The consortium registry: member institutions, their departments and their staff.

Shape of the demo 医联体 (``partOf`` points from member to lead, not from owner to owned):

    湖州市卫生健康委员会 (platform operator)
    └── 太湖中心医院 (三级甲等, 吴兴区) — the consortium lead
        ├── 南浔区浔东医院 (二级甲等)
        │   └── 南浔区和平社区卫生服务中心
        ├── 安吉县竹乡医院 (二级乙等)
        │   └── 安吉县溪口乡卫生院 → 4 village clinics
        ├── 吴兴区东风社区卫生服务中心
        └── 长兴县白沙镇卫生院 → 4 village clinics
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import NamedTuple

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
from yilian.demo.names import ChineseName, NameSampler, human_names
from yilian.kernel import naming
from yilian.kernel.prc_id import Sex

PRACTITIONER_ROLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/practitioner-role"
AREA_CODE = "0572"  # Huzhou's telephone area code

DEPARTMENTS: dict[str, str] = {
    "internal": "内科",
    "surgery": "外科",
    "paediatrics": "儿科",
    "general-practice": "全科",
    "preventive-care": "预防保健科",
    "obstetrics-gynaecology": "妇产科",
    "emergency": "急诊科",
    "tcm": "中医科",
    "immunization": "预防接种门诊",
}

LEVEL_NAMES = {"3": "三级", "2": "二级", "1": "一级", "village": "村卫生室"}
GRADE_NAMES = {"A": "甲等", "B": "乙等", "C": "丙等"}


@dataclass(frozen=True, slots=True)
class Institution:
    key: str
    name: str
    kind: str  # commission | hospital | community | township | village
    level: str | None  # INSTITUTION_LEVEL code
    grade: str | None  # INSTITUTION_GRADE code
    district: str  # GB/T 2260 code
    area: str | None  # street or township (geography.Area name)
    place: str | None  # community or village
    line: str
    parent: str | None
    clinics: tuple[str, ...]  # outpatient departments
    wards: tuple[str, ...]  # inpatient departments
    uscc: str
    phone: str
    full_url: str

    @property
    def reference(self) -> str:
        return conditional("Organization", naming.UNIFIED_SOCIAL_CREDIT_CODE, self.uscc)

    @property
    def type_text(self) -> str:
        if self.kind == "hospital" and self.level and self.grade:
            return LEVEL_NAMES[self.level] + GRADE_NAMES[self.grade]
        return {"community": "社区卫生服务中心", "township": "乡镇卫生院", "village": "村卫生室"}.get(
            self.kind, "卫生健康行政部门"
        )

    def location_key(self, department: str, ward: bool = False) -> str:
        return f"{self.uscc}-{department}{'-ward' if ward else ''}"

    def location_name(self, department: str, ward: bool = False) -> str:
        if self.kind == "village":
            return f"{self.name}诊室"
        suffix = "病区" if ward else "" if department == "immunization" else "门诊"
        return f"{self.name}{DEPARTMENTS[department]}{suffix}"

    def location_reference(self, department: str, ward: bool = False) -> str:
        return conditional("Location", naming.DEMO_RECORD, self.location_key(department, ward))


@dataclass(frozen=True, slots=True)
class Staff:
    key: str
    name: ChineseName
    sex: Sex
    birth_date: dt.date
    licence: str
    institution: str
    department: str
    role: str  # doctor | nurse
    qualification: str  # PRACTITIONER_QUALIFICATION code
    title: str | None  # e.g. 主任医师
    title_level: str | None  # CV08.30.005 code
    full_url: str
    role_full_url: str
    role_key: str

    @property
    def family_doctor(self) -> bool:
        return self.department == "general-practice"

    @property
    def reference(self) -> str:
        return conditional("Practitioner", naming.PRACTITIONER_LICENCE, self.licence)

    @property
    def role_reference(self) -> str:
        return conditional("PractitionerRole", naming.DEMO_RECORD, self.role_key)


@dataclass(frozen=True, slots=True)
class Registry:
    institutions: tuple[Institution, ...]
    staff: tuple[Staff, ...]
    entries: tuple[Entry, ...]

    def institution(self, key: str) -> Institution:
        return next(i for i in self.institutions if i.key == key)

    def members(self, kind: str) -> tuple[Institution, ...]:
        return tuple(i for i in self.institutions if i.kind == kind)

    def staff_of(
        self, institution: str, department: str | None = None, role: str = "doctor"
    ) -> tuple[Staff, ...]:
        return tuple(
            s
            for s in self.staff
            if s.institution == institution
            and s.role == role
            and (department is None or s.department == department)
        )

    def primary_care_for(self, district: str) -> Institution | None:
        """The community or township health centre responsible for a district's residents."""
        return next(
            (i for i in self.institutions if i.kind in ("community", "township") and i.district == district),
            None,
        )

    def village_clinic(self, district: str, village: str) -> Institution | None:
        return next(
            (
                i
                for i in self.institutions
                if i.kind == "village" and i.district == district and i.place == village
            ),
            None,
        )


class _Member(NamedTuple):
    key: str
    name: str
    kind: str
    level: str | None
    grade: str | None
    district: str
    area: str
    place: str | None
    line: str
    parent: str | None
    clinics: tuple[str, ...] = ()
    wards: tuple[str, ...] = ()


_HOSPITAL_CLINICS = ("internal", "surgery", "paediatrics", "obstetrics-gynaecology")
_PRIMARY_CLINICS = ("general-practice", "immunization")
_MEMBERS = (
    _Member("commission", "湖州市卫生健康委员会", "commission", None, None, "330502", "东风街道", None, "人民路1号", None),
    _Member("taihu", "湖州市太湖中心医院", "hospital", "3", "A", "330502", "东风街道", None, "健康路88号", "commission",
            (*_HOSPITAL_CLINICS, "emergency", "tcm"), ("internal", "surgery", "paediatrics")),
    _Member("xundong", "湖州市南浔区浔东医院", "hospital", "2", "A", "330503", "和平街道", None, "中山路120号", "taihu",
            _HOSPITAL_CLINICS, ("internal",)),
    _Member("zhuxiang", "安吉县竹乡医院", "hospital", "2", "B", "330523", "递铺街道", None, "文化路56号", "taihu",
            _HOSPITAL_CLINICS, ("internal",)),
    _Member("dongfeng-chc", "吴兴区东风社区卫生服务中心", "community", "1", None, "330502", "东风街道", "幸福社区",
            "建设路21号", "taihu", _PRIMARY_CLINICS),
    _Member("heping-chc", "南浔区和平社区卫生服务中心", "community", "1", None, "330503", "和平街道", "幸福社区",
            "新华路9号", "xundong", _PRIMARY_CLINICS),
    _Member("xikou-thc", "安吉县溪口乡卫生院", "township", "1", None, "330523", "溪口乡", "青山村", "学院路3号",
            "zhuxiang", _PRIMARY_CLINICS),
    _Member("baisha-thc", "长兴县白沙镇卫生院", "township", "1", None, "330522", "白沙镇", "白沙村", "胜利路18号",
            "taihu", _PRIMARY_CLINICS),
)  # fmt: skip


def _village_clinics() -> list[tuple[str, str, str, str, str, str]]:
    """(key, name, district, township, village, parent) of each 村卫生室."""
    out = []
    for district, township, villages, parent in (
        ("330523", "溪口乡", geography.ANJI_VILLAGES, "xikou-thc"),
        ("330522", "白沙镇", geography.CHANGXING_VILLAGES, "baisha-thc"),
    ):
        for n, village in enumerate(villages, start=1):
            out.append((f"{parent}-v{n}", f"{township}{village}卫生室", district, township, village, parent))
    return out


# Staffing per (institution key or kind): (department, role, qualification, title, title level).
_HOSPITAL_STAFF_TAIHU = (
    ("internal", "doctor", "physician", "主任医师", "1"),
    ("internal", "doctor", "physician", "副主任医师", "2"),
    ("internal", "doctor", "physician", "主治医师", "3"),
    ("surgery", "doctor", "physician", "主任医师", "1"),
    ("surgery", "doctor", "physician", "主治医师", "3"),
    ("surgery", "doctor", "physician", "住院医师", "4"),
    ("paediatrics", "doctor", "physician", "副主任医师", "2"),
    ("paediatrics", "doctor", "physician", "主治医师", "3"),
    ("obstetrics-gynaecology", "doctor", "physician", "副主任医师", "2"),
    ("emergency", "doctor", "physician", "主治医师", "3"),
    ("tcm", "doctor", "physician", "主治医师", "3"),
    ("internal", "nurse", "nurse", "主管护师", "3"),
    ("paediatrics", "nurse", "nurse", "护师", "4"),
)
_HOSPITAL_STAFF_COUNTY = (
    ("internal", "doctor", "physician", "副主任医师", "2"),
    ("internal", "doctor", "physician", "主治医师", "3"),
    ("surgery", "doctor", "physician", "主治医师", "3"),
    ("paediatrics", "doctor", "physician", "主治医师", "3"),
    ("obstetrics-gynaecology", "doctor", "physician", "主治医师", "3"),
    ("internal", "nurse", "nurse", "护师", "4"),
)
_PRIMARY_STAFF = (
    ("general-practice", "doctor", "physician", "主治医师", "3"),
    ("general-practice", "doctor", "assistant-physician", "医师", "4"),
    ("immunization", "nurse", "nurse", "护师", "4"),
)
_VILLAGE_STAFF = (("general-practice", "doctor", "village-doctor", None, None),)

QUALIFICATION_NAMES = {
    "physician": "执业医师",
    "assistant-physician": "执业助理医师",
    "village-doctor": "乡村医生",
    "nurse": "注册护士",
}
TITLE_LEVEL_NAMES = {"1": "正高", "2": "副高", "3": "中级", "4": "师级/助理", "5": "士级"}
# Years since qualifying that a title typically takes (for plausible birth years).
_TITLE_AGE = {"1": (48, 60), "2": (40, 55), "3": (32, 48), "4": (25, 38), None: (30, 62)}


def organization_identifiers(uscc: str) -> list[Json]:
    """An organization's unified social credit code, and the organization code inside it that
    older systems still send."""
    return [
        identifier(
            naming.UNIFIED_SOCIAL_CREDIT_CODE,
            uscc,
            concept(
                coding(naming.V2_IDENTIFIER_TYPE, "XX", "Organization identifier"), text="统一社会信用代码"
            ),
            use="official",
        ),
        identifier(naming.ORGANIZATION_CODE, uscc[8:17], use="old"),
    ]


def phone(rng: random.Random) -> str:
    """A landline in the city."""
    return f"{AREA_CODE}-{rng.choice('2356')}{rng.randrange(10**6):06d}"


def _uscc(rng: random.Random, kind: str, district: str) -> str:
    body = f"{rng.randrange(10**8):08d}"
    authority, org_type = {"commission": ("1", "1"), "village": ("5", "2")}.get(kind, ("1", "2"))
    return check_digits.make_uscc(authority, org_type, district, body)


def build_registry(seed: int, as_of: dt.date) -> Registry:
    rng = random.Random(f"{seed}:registry")
    names = NameSampler()
    institutions: list[Institution] = []
    for m in _MEMBERS:
        institutions.append(
            Institution(*m, _uscc(rng, m.kind, m.district), phone(rng), urn(seed, f"Organization/{m.key}"))
        )
    for key, name, district, township, village, parent in _village_clinics():
        institutions.append(
            Institution(key, name, "village", "village", None, district, township, village, "1号", parent,
                        ("general-practice",), (), _uscc(rng, "village", district), phone(rng),
                        urn(seed, f"Organization/{key}"))
        )  # fmt: skip

    staff: list[Staff] = []
    licences: set[str] = set()
    for inst in institutions:
        plan = {
            "taihu": _HOSPITAL_STAFF_TAIHU,
            "xundong": _HOSPITAL_STAFF_COUNTY,
            "zhuxiang": _HOSPITAL_STAFF_COUNTY,
        }.get(inst.key) or {
            "community": _PRIMARY_STAFF,
            "township": _PRIMARY_STAFF,
            "village": _VILLAGE_STAFF,
        }.get(inst.kind, ())
        for n, (department, role, qualification, title, title_level) in enumerate(plan, start=1):
            sex: Sex = "female" if rng.random() < (0.9 if role == "nurse" else 0.45) else "male"
            low, high = _TITLE_AGE[title_level]
            birth = as_of - dt.timedelta(days=rng.randint(low * 365, high * 365))
            licence = f"{'2' if role == 'nurse' else '1'}{inst.district}{rng.randrange(10**8):08d}"
            while licence in licences:
                licence = f"{licence[:7]}{rng.randrange(10**8):08d}"
            licences.add(licence)
            key = f"{inst.key}-s{n}"
            staff.append(
                Staff(key, names.name(rng, sex), sex, birth, licence, inst.key, department, role, qualification,
                      title, title_level, urn(seed, f"Practitioner/{key}"), urn(seed, f"PractitionerRole/{key}"),
                      f"{licence}-{inst.uscc}")
            )  # fmt: skip

    by_key = {i.key: i for i in institutions}
    entries: list[Entry] = [_organization(i, by_key) for i in institutions]
    for inst in institutions:
        entries.extend(_locations(seed, inst))
    entries.extend(_practitioner(s) for s in staff)
    entries.extend(_role(seed, s, by_key[s.institution]) for s in staff)
    return Registry(tuple(institutions), tuple(staff), tuple(entries))


def _organization(inst: Institution, by_key: dict[str, Institution]) -> Entry:
    district = geography.district(inst.district)
    area = next((a for a in district.areas if a.name == inst.area), None)
    types = [
        concept(coding(naming.ORGANIZATION_TYPE, "govt", "Government"))
        if inst.kind == "commission"
        else concept(coding(naming.ORGANIZATION_TYPE, "prov", "Healthcare Provider"))
    ]
    if inst.level:
        level = [coding(naming.INSTITUTION_LEVEL, inst.level, LEVEL_NAMES[inst.level])]
        if inst.grade:
            level.append(coding(naming.INSTITUTION_GRADE, inst.grade, GRADE_NAMES[inst.grade]))
        types.append(concept(*level, text=inst.type_text))
    resource: Json = {
        "resourceType": "Organization",
        "meta": test_data_meta(),
        "identifier": organization_identifiers(inst.uscc),
        "active": True,
        "type": types,
        "name": inst.name,
        "telecom": [{"system": "phone", "value": inst.phone, "use": "work"}],
        "address": [geography.address(district, area, inst.place, inst.line, use="work")],
    }
    if inst.parent:
        parent = by_key[inst.parent]
        resource["partOf"] = ref(parent.full_url, parent.name)
    return Entry(inst.full_url, resource, if_none_exist(naming.UNIFIED_SOCIAL_CREDIT_CODE, inst.uscc))


def _locations(seed: int, inst: Institution) -> list[Entry]:
    out = []
    units = [(d, False) for d in inst.clinics] + [(d, True) for d in inst.wards]
    for department, ward in units:
        key = inst.location_key(department, ward)
        name = inst.location_name(department, ward)
        physical = ("wa", "Ward") if ward else ("ro", "Room")
        resource: Json = {
            "resourceType": "Location",
            "meta": test_data_meta(),
            "identifier": [identifier(naming.DEMO_RECORD, key)],
            "status": "active",
            "name": name,
            "mode": "instance",
            "type": [
                concept(
                    coding(naming.PLATFORM_DEPARTMENT, department, DEPARTMENTS[department]),
                    text=DEPARTMENTS[department],
                )
            ],
            "physicalType": concept(
                coding("http://terminology.hl7.org/CodeSystem/location-physical-type", *physical)
            ),
            "managingOrganization": ref(urn(seed, f"Organization/{inst.key}"), inst.name),
        }
        out.append(Entry(urn(seed, f"Location/{key}"), resource, if_none_exist(naming.DEMO_RECORD, key)))
    return out


def _practitioner(s: Staff) -> Entry:
    qualifications: list[Json] = [
        {
            "code": concept(
                coding(
                    naming.PRACTITIONER_QUALIFICATION, s.qualification, QUALIFICATION_NAMES[s.qualification]
                ),
                text=QUALIFICATION_NAMES[s.qualification],
            ),
            "issuer": {"display": "浙江省卫生健康委员会"},
        }
    ]
    if s.title and s.title_level:
        qualifications.append(
            {
                "code": concept(
                    coding(naming.PROFESSIONAL_TITLE_LEVEL, s.title_level, TITLE_LEVEL_NAMES[s.title_level]),
                    text=s.title,
                )
            }
        )
    resource: Json = {
        "resourceType": "Practitioner",
        "meta": test_data_meta(),
        "identifier": [
            identifier(
                naming.PRACTITIONER_LICENCE,
                s.licence,
                concept(
                    coding(naming.V2_IDENTIFIER_TYPE, "MD", "Medical License number"), text="执业证书编码"
                ),
            )
        ],
        "active": True,
        "name": human_names(s.name),
        "gender": s.sex,
        "birthDate": s.birth_date.isoformat(),
        "qualification": qualifications,
    }
    return Entry(s.full_url, resource, if_none_exist(naming.PRACTITIONER_LICENCE, s.licence))


def _role(seed: int, s: Staff, inst: Institution) -> Entry:
    department = DEPARTMENTS[s.department]
    role_code = {"doctor": "Doctor", "nurse": "Nurse"}[s.role]
    resource: Json = {
        "resourceType": "PractitionerRole",
        "meta": test_data_meta(),
        "identifier": [identifier(naming.DEMO_RECORD, s.role_key)],
        "active": True,
        "practitioner": ref(s.full_url, s.name.text),
        "organization": ref(inst.full_url, inst.name),
        "code": [
            concept(
                coding(PRACTITIONER_ROLE_SYSTEM, s.role, role_code),
                text="家庭医生" if s.family_doctor else s.title or QUALIFICATION_NAMES[s.qualification],
            )
        ],
        "specialty": [concept(coding(naming.PLATFORM_DEPARTMENT, s.department, department), text=department)],
        "location": [
            ref(urn(seed, f"Location/{inst.location_key(s.department)}"), inst.location_name(s.department))
        ],
        "telecom": [{"system": "phone", "value": inst.phone, "use": "work"}],
    }
    return Entry(s.role_full_url, resource, if_none_exist(naming.DEMO_RECORD, s.role_key))
