"""The identifier systems and code systems Yilian uses, in one place.

Every ``Identifier.system`` and ``Coding.system`` the platform writes comes from here,
so that a number issued by one member institution means the same thing at every other
and a code can be traced to the standard that defines it.

Where China's OID list for health information (national root ``2.16.156.10011``, as
shipped in ``../shared/data/cn-standards/oid/OID.xml``) assigns an OID, the system is
``urn:oid:<that OID>``. That list covers code systems (value domains, national
classifications) but no *identifier* namespaces, so identifiers (ID numbers, health
cards, MRNs, insurance numbers, permits) use platform URIs under
:data:`PLATFORM_SID`. A system URI is a name, not an address: it never changes with the
deployment's host name, and nothing dereferences it. ``docs/identifiers.md`` is the
human-readable table of all of them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from yilian.kernel.errors import Category, YilianError

# --------------------------------------------------------------------------- namespaces

PLATFORM_SID: Final = "https://yilian.example.cn/fhir/sid/"
"""Root of platform-defined identifier systems (``Identifier.system``)."""

PLATFORM_CODE_SYSTEM: Final = "https://yilian.example.cn/fhir/CodeSystem/"
"""Root of platform-defined code systems, for concepts no national code list covers."""

PLATFORM_EXTENSION: Final = "https://yilian.example.cn/fhir/StructureDefinition/"
"""Root of platform-defined extension URLs."""

# --------------------------------------------------------------------------- people

PRC_RESIDENT_ID: Final = "urn:oid:2.16.156.10011.1.3"
"""PRC resident identity number (公民身份号码, GB 11643-1999), 18 characters.

Value: the normalised 18-character form (upper-case ``X``); validate and normalise with
``yilian.kernel.prc_id.parse`` (which also converts the legacy 15-digit form).
The OID is the one the national shared-document specification (WS/T 500) uses for this
number under the national root 2.16.156.10011, so FHIR and CDA documents name it alike
(docs/decisions/0004-identifier-systems.md).
"""

HEALTH_CARD: Final = "urn:oid:2.16.156.10011.1.19"
"""Resident health card number (居民健康卡号), issued by the card system.

The OID WS/T 500 uses for the health card number. The number's format belongs to the card
system (the resident's ID number where there is one, a platform number with a check
character otherwise).
"""

_ORG_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,63}$")


def mrn_system(org_id: str) -> str:
    """Identifier system of the medical record numbers (病案号/就诊号) of one institution.

    MRNs are unique only within the hospital that assigned them, so each institution gets
    its own namespace: ``https://yilian.example.cn/fhir/sid/mrn/<org_id>``. ``org_id`` is the
    institution's unified social credit code (national, permanent; see
    :data:`UNIFIED_SOCIAL_CREDIT_CODE`) — not a database id, which differs between nodes.
    Platform-defined: no national OID exists per institution.
    """
    if not _ORG_KEY.match(org_id):
        raise YilianError(
            Category.INVALID,
            "institution key for an MRN system must be 1-64 letters, digits, '.' or '-'",
        )
    return f"{PLATFORM_SID}mrn/{org_id}"


def visit_number_system(org_id: str) -> str:
    """Identifier system of one institution's visit numbers (门(急)诊号 / 住院号) on ``Encounter``.

    Like MRNs, visit numbers are unique only within the issuing institution:
    ``https://yilian.example.cn/fhir/sid/visit/<org_id>``, ``org_id`` as in :func:`mrn_system`.
    They let a hospital re-send a visit without creating it twice. Platform-defined.
    """
    if not _ORG_KEY.match(org_id):
        raise YilianError(
            Category.INVALID,
            "institution key for a visit-number system must be 1-64 letters, digits, '.' or '-'",
        )
    return f"{PLATFORM_SID}visit/{org_id}"


DEMO_RECORD: Final = PLATFORM_SID + "demo-record"
"""Business identifier of the synthetic records ``yilian demo`` loads (locations, roles,
observations, conditions, immunizations…), so that loading the demo twice creates nothing new
(``ifNoneExist``). Only ever on resources labelled ``HTEST``. Platform-defined."""

INSURANCE_EMPLOYEE: Final = PLATFORM_SID + "insurance/employee"
"""Member number in the urban employees' basic medical insurance (城镇职工基本医疗保险, 职工医保).

Value as issued by the medical-insurance bureau, ``[0-9A-Z]{6,20}``. Platform-defined:
the OID list has code systems for insurance *types* (:data:`INSURANCE_TYPE`) but no
namespace for member numbers.
"""

INSURANCE_RESIDENT: Final = PLATFORM_SID + "insurance/urban-rural-resident"
"""Member number in the urban and rural residents' basic medical insurance (城乡居民基本医疗保险).

The scheme that merged the new rural cooperative medical scheme (新农合) and the urban
residents' insurance (城镇居民医保) from 2016; numbers re-issued at the merger live here.
Value as issued, ``[0-9A-Z]{6,20}``. Platform-defined.
"""

INSURANCE_NCMS: Final = PLATFORM_SID + "insurance/ncms"
"""Legacy member number of the new rural cooperative medical scheme (新农合, 参合证号).

Kept as its own namespace because legacy loads still carry these numbers and they were
issued by county NCMS offices, independently of the resident-insurance numbers.
Value as issued. Platform-defined.
"""


def passport_system(country: str = "CHN") -> str:
    """Passport numbers issued by one country (ISO 3166-1 alpha-3, e.g. ``CHN``).

    Passport numbers are unique only per issuing state, hence one namespace per country.
    Platform-defined.
    """
    if not re.fullmatch(r"[A-Z]{3}", country):
        raise YilianError(Category.INVALID, "passport country must be an ISO 3166-1 alpha-3 code such as CHN")
    return f"{PLATFORM_SID}passport/{country}"


PASSPORT_CHN: Final = PLATFORM_SID + "passport/CHN"
"""Passport numbers of the PRC (护照). Value as printed, e.g. ``E12345678``. Platform-defined."""

HK_MACAO_PERMIT: Final = PLATFORM_SID + "hk-macao-home-return-permit"
"""Mainland travel permit for Hong Kong and Macao residents (港澳居民来往内地通行证, 回乡证).

Value as printed (``H``/``M`` + 8 or 10 digits). Platform-defined. Holders of the newer
residence permit for HK/Macao/Taiwan residents (港澳台居民居住证) have an 18-character
number in the GB 11643 layout with division 810000/820000/830000; that goes under
:data:`PRC_RESIDENT_ID`.
"""

TAIWAN_PERMIT: Final = PLATFORM_SID + "taiwan-compatriot-permit"
"""Mainland travel permit for Taiwan residents (台湾居民来往大陆通行证, 台胞证). Value as printed
(8 digits). Platform-defined."""

PHONE: Final = PLATFORM_SID + "phone"
"""A mobile phone number used as a matching identifier (MPI, PIX-like queries).

The phone itself belongs in ``ContactPoint`` (``telecom``); this system exists for
identifier cross-reference and ``$match`` input. Value: 11 digits, no country code,
pattern ``1[3-9][0-9]{9}``. Platform-defined.
"""

PRACTITIONER_LICENCE: Final = PLATFORM_SID + "practitioner-licence"
"""Practising certificate number of a physician or nurse (医师/护士执业证书编码), as printed.
Platform-defined: the OID list assigns none."""

# --------------------------------------------------------------------------- institutions

UNIFIED_SOCIAL_CREDIT_CODE: Final = PLATFORM_SID + "uscc"
"""Unified social credit code (统一社会信用代码, GB 32100-2015) of an organisation.

18 characters from ``0-9A-HJ-NPQRTUWXY``: registration authority, organisation type,
6-digit GB/T 2260 division, the 9-character organisation code (GB 11714) and a check
character (weights 3^(i-1) mod 31). Platform-defined: the OID list has none.
"""

ORGANIZATION_CODE: Final = PLATFORM_SID + "organization-code"
"""Legacy organisation code (组织机构代码, GB 11714-1997): 8 characters + a check character
(weights 3,7,9,10,5,8,4,2, MOD 11, ``X`` for 10), often written ``12345678-9``; stored
without the hyphen. Embedded in positions 9-17 of the unified social credit code.
Platform-defined."""

# --------------------------------------------------------------------------- identifier types

V2_IDENTIFIER_TYPE: Final = "http://terminology.hl7.org/CodeSystem/v2-0203"
"""HL7 v2 table 0203 identifier types (``MR``, ``PPN``, ``NI``, ``XX``, ``MB``, ``HC``…) for
``Identifier.type``, so that non-Chinese clients can tell the kinds of number apart."""

ID_DOCUMENT_TYPE: Final = "urn:oid:2.16.156.10011.2.3.1.1"
"""身份证件类别代码表 (WS 364.3 CV02.01.101): ``01`` resident ID card, ``02`` household register,
``03`` passport, ``06`` HK/Macao permit, ``07`` Taiwan permit, ``99`` other. Used as a second
coding of ``Identifier.type`` on identity documents. OID list entry."""

INSURANCE_TYPE: Final = "urn:oid:2.16.156.10011.2.3.1.248"
"""医疗保险类别代码表 (CV02.01.204 in the OID list; sheet CV02.02.204 in the shipped WS 364 workbook):
``1`` 新型农村合作医疗, ``2`` 城镇职工基本医疗保险, ``3`` 城镇居民基本医疗保险, ``4`` 商业医疗保险,
``5`` 公费医疗, ``8`` 无保险, ``9`` 其他. OID list entry."""

# --------------------------------------------------------------------------- national code systems

ICD10_CN: Final = "urn:oid:2.16.156.10011.2.3.3.11"
"""Diseases: ICD-10 as published in China (疾病分类与代码, GB/T 14396), including the national
6-character extension codes (``I10.x00`` 高血压病, ``E11.900`` 2型糖尿病). OID list entry "ICD-10"."""

ICD9_CM3: Final = "urn:oid:2.16.156.10011.2.3.3.12"
"""Procedures and operations: ICD-9-CM-3 (手术(操作)代码). OID list entry."""

ADMIN_DIVISION: Final = "urn:oid:2.16.156.10011.2.3.3.2"
"""Administrative divisions of the PRC at county level and above (GB/T 2260), 6 digits,
e.g. ``330502`` 吴兴区; also the first six digits of a resident ID number. OID list entry."""

SEX: Final = "urn:oid:2.16.156.10011.2.3.3.4"
"""Human sex (GB/T 2261.1-2003 生理性别): ``0`` unknown, ``1`` male, ``2`` female, ``9`` not stated.
Patients carry FHIR ``gender``; this system is for data sets and CDA exchange. OID list entry."""

ETHNICITY: Final = "urn:oid:2.16.156.10011.2.3.3.3"
"""Ethnic groups of China (GB 3304-1991 民族), 2 digits, ``01`` 汉族. OID list entry."""

MARITAL_STATUS: Final = "urn:oid:2.16.156.10011.2.3.3.5"
"""Marital status (GB/T 2261.2-2003 婚姻状况). OID list entry."""

COUNTRY: Final = "urn:oid:2.16.156.10011.2.3.3.1"
"""Countries and regions (GB/T 2659-2000, ISO 3166-1 based). OID list entry."""

EDUCATION: Final = "urn:oid:2.16.156.10011.2.3.3.6"
"""Education level (GB/T 4658 学历). OID list entry."""

OCCUPATION: Final = "urn:oid:2.16.156.10011.2.3.3.7"
"""Occupations (GB/T 6565-2009 职业分类与代码). OID list entry."""

FAMILY_RELATIONSHIP: Final = "urn:oid:2.16.156.10011.2.3.3.8"
"""Family relationships (GB/T 4761-2008 家庭关系). OID list entry."""

PROFESSIONAL_TITLE: Final = "urn:oid:2.16.156.10011.2.3.3.10"
"""Professional and technical posts (GB/T 8561 专业技术职务代码, e.g. 主任医师). OID list entry."""

TCM_DISEASE: Final = "urn:oid:2.16.156.10011.2.3.3.14"
"""Traditional Chinese medicine diseases and syndromes (GB/T 15657-1995). OID list entry."""

INSTITUTION_CLASSIFICATION: Final = "urn:oid:2.16.156.10011.2.3.4.1"
"""Classification of health institutions (卫生机构分类代码, WS 218-2002): general hospital,
community health centre, township health centre, village clinic… OID list entry. Not yet used
by the demo: the code list itself is not among the shipped reference data."""

DEPARTMENT: Final = "urn:oid:2.16.156.10011.2.3.2.62"
"""Clinical departments of health institutions (医疗卫生机构业务科室分类与代码表). OID list entry.
The code list is not shipped yet, so departments are also coded with :data:`PLATFORM_DEPARTMENT`."""

VACCINE: Final = "urn:oid:2.16.156.10011.2.3.1.210"
"""Vaccine names (疫苗名称代码表, WS 364 CV08.50.001): ``01`` 乙型肝炎疫苗, ``02`` 结核疫苗 (BCG),
``03`` 脊髓灰质炎疫苗, ``04`` 白喉百日咳破伤风疫苗, ``06`` 乙型脑炎疫苗, ``07`` 脑膜炎球菌疫苗,
``10`` 白喉破伤风疫苗, ``11`` 麻疹流行性腮腺炎风疹疫苗, ``15`` 甲型肝炎疫苗… OID list entry."""

ROUTE: Final = "urn:oid:2.16.156.10011.2.3.1.158"
"""Routes of administration (用药途径代码表, CV06.00.102): ``1`` 口服, ``401`` 皮下注射,
``402`` 皮内注射, ``403`` 肌肉注射… OID list entry."""

PROFESSIONAL_TITLE_LEVEL: Final = "urn:oid:2.16.156.10011.2.3.1.209"
"""Level of a professional title (专业技术职务类别代码表, CV08.30.005): ``1`` 正高, ``2`` 副高,
``3`` 中级, ``4`` 师级/助理, ``5`` 士级, ``6`` 待聘. OID list entry."""

# --------------------------------------------------------------------------- platform code systems

INSTITUTION_LEVEL: Final = PLATFORM_CODE_SYSTEM + "institution-level"
"""Level of a member institution (医院等级), which drives referral direction and the
insurance reimbursement ratio: ``3`` 三级, ``2`` 二级, ``1`` 一级 (community and township
health centres), ``village`` 村卫生室. Platform-defined: the OID list has no code system for
hospital levels (CV08.10.004 classifies *diagnosing* institutions for death reports)."""

INSTITUTION_GRADE: Final = PLATFORM_CODE_SYSTEM + "institution-grade"
"""Grade within a level (等次): ``A`` 甲等, ``B`` 乙等, ``C`` 丙等. A 三级甲等 hospital is coded
``3`` in :data:`INSTITUTION_LEVEL` plus ``A`` here. Platform-defined."""

PAYMENT_SCHEME: Final = PLATFORM_CODE_SYSTEM + "payment-scheme"
"""The scheme a FHIR ``Coverage`` (its ``type``) enrols a resident in, as the payments system
reimburses by it (one policy per scheme, region and year): ``urban-employee`` 城镇职工基本医疗保险,
``urban-resident`` 城乡居民基本医疗保险, ``ncms`` 新型农村合作医疗, ``medical-aid`` 医疗救助.
Platform-defined: CV02.01.204 (:data:`INSURANCE_TYPE`) has no code for medical aid."""

COVERAGE_CLASS: Final = "http://terminology.hl7.org/CodeSystem/coverage-class"
"""``Coverage.class`` types (HL7); ``plan`` carries the pooling region (统筹区, a GB/T 2260 code)."""

PLATFORM_DEPARTMENT: Final = PLATFORM_CODE_SYSTEM + "department"
"""Clinical departments until the national table (:data:`DEPARTMENT`) is shipped: ``internal``
内科, ``surgery`` 外科, ``paediatrics`` 儿科, ``general-practice`` 全科, ``preventive-care``
预防保健科, ``obstetrics-gynaecology`` 妇产科, ``emergency`` 急诊科, ``tcm`` 中医科,
``immunization`` 预防接种门诊. Platform-defined."""

PRACTITIONER_QUALIFICATION: Final = PLATFORM_CODE_SYSTEM + "practitioner-qualification"
"""Kind of licence a practitioner holds: ``physician`` 执业医师, ``assistant-physician``
执业助理医师, ``village-doctor`` 乡村医生, ``nurse`` 注册护士. Platform-defined."""

NIP_VACCINE: Final = PLATFORM_CODE_SYSTEM + "nip-vaccine"
"""Vaccines of the national immunization programme by the abbreviations of the 2021 NHC
schedule (``HepB``, ``BCG``, ``IPV``, ``bOPV``, ``DTaP``, ``DT``, ``MMR``, ``JE-L``, ``JE-I``,
``MPSV-A``, ``MPSV-AC``, ``HepA-L``, ``HepA-I``). Finer than :data:`VACCINE`, which has one
code per antigen group (IPV and bOPV are both ``03``), and the forecaster needs the product.
Platform-defined."""

RESIDENCE_TYPE: Final = PLATFORM_CODE_SYSTEM + "residence-type"
"""Urban or rural residence (``urban`` 城镇, ``rural`` 农村), which decides the insurance scheme
and the primary-care institution responsible for a resident. Platform-defined."""

CARD_REFUSAL: Final = PLATFORM_CODE_SYSTEM + "card-refusal"
"""Why a health card number was refused (``card-lost``, ``card-suspended``, ``card-replaced``,
``card-revoked``, ``card-not-activated``, ``unknown-card``, ``bad-card-number``): the
``OperationOutcome.issue.details`` of a refused lookup, the ``reason`` of a problem document.
Platform-defined."""

# --------------------------------------------------------------------------- platform extensions

EXT_ADDRESS_DIVISION: Final = PLATFORM_EXTENSION + "address-division"
"""Extension on ``Address``: ``valueCoding`` in :data:`ADMIN_DIVISION`, the county-level
division of the address (``Address.district`` carries only its name)."""

EXT_RESIDENCE_TYPE: Final = PLATFORM_EXTENSION + "residence-type"
"""Extension on ``Patient``: ``valueCoding`` in :data:`RESIDENCE_TYPE`."""

# --------------------------------------------------------------------------- international

LOINC: Final = "http://loinc.org"
"""LOINC, for observations (blood pressure 85354-9, fasting glucose 14771-0 …)."""

SNOMED_CT: Final = "http://snomed.info/sct"
"""SNOMED CT, as a second coding of diagnoses where the concept is unambiguous."""

UCUM: Final = "http://unitsofmeasure.org"
"""UCUM units for ``Quantity.system`` (``mm[Hg]``, ``mmol/L``, ``kg/m2``)."""

V3_ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
"""Encounter class (``AMB`` outpatient, ``IMP`` inpatient)."""

V3_ROLE_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
"""Personal relationships of a RelatedPerson (``MTH`` mother, ``GUARD`` guardian)."""

V3_ROUTE: Final = "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration"
"""Routes for clients that do not know CV06.00.102 (``IM``, ``SQ``, ``IDINJ``, ``PO``)."""

V3_ACT_REASON: Final = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
"""Security labels; ``HTEST`` (test health data) marks every synthetic demo resource."""

ORGANIZATION_TYPE: Final = "http://terminology.hl7.org/CodeSystem/organization-type"
"""Broad organisation kind (``prov`` healthcare provider, ``govt`` the health commission)."""

# --------------------------------------------------------------------------- WS 364 value domains

WS364_VALUE_DOMAINS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "CV02.01.101": "urn:oid:2.16.156.10011.2.3.1.1",  # 身份证件类别代码表
        "CV02.01.102": "urn:oid:2.16.156.10011.2.3.1.2",  # 出生(分娩)地点类别代码表
        "CV02.01.103": "urn:oid:2.16.156.10011.2.3.1.3",  # 死亡地点类别代码表
        "CV02.01.104": "urn:oid:2.16.156.10011.2.3.1.4",  # 传染病患者归属代码表
        "CV02.01.201": "urn:oid:2.16.156.10011.2.3.1.5",  # 血缘关系代码表
        "CV02.01.202": "urn:oid:2.16.156.10011.2.3.1.6",  # 传染病患者职业代码表
        "CV02.01.203": "urn:oid:2.16.156.10011.2.3.1.7",  # 家庭年人均收入代码表
        "CV02.10.001": "urn:oid:2.16.156.10011.2.3.1.8",  # 家族近亲婚配者与本人关系代码表
        "CV02.10.002": "urn:oid:2.16.156.10011.2.3.1.9",  # 妊娠终止方式代码表
        "CV02.10.003": "urn:oid:2.16.156.10011.2.3.1.10",  # 分娩方式代码表
        "CV02.10.004": "urn:oid:2.16.156.10011.2.3.1.11",  # 出生缺陷儿结局代码表
        "CV02.10.005": "urn:oid:2.16.156.10011.2.3.1.12",  # 既往常见疾病种类代码表
        "CV03.00.101": "urn:oid:2.16.156.10011.2.3.1.13",  # 吸烟状态代码表
        "CV03.00.102": "urn:oid:2.16.156.10011.2.3.1.14",  # 被动吸烟场所类别代码表
        "CV03.00.103": "urn:oid:2.16.156.10011.2.3.1.15",  # 吸食烟草种类代码表
        "CV03.00.104": "urn:oid:2.16.156.10011.2.3.1.16",  # 饮酒频率代码表
        "CV03.00.105": "urn:oid:2.16.156.10011.2.3.1.17",  # 饮酒种类代码表
        "CV03.00.106": "urn:oid:2.16.156.10011.2.3.1.18",  # 饮食种类代码表
        "CV03.00.107": "urn:oid:2.16.156.10011.2.3.1.19",  # 饮食习惯代码表
        "CV03.00.108": "urn:oid:2.16.156.10011.2.3.1.20",  # 饮食频率分类代表
        "CV03.00.109": "urn:oid:2.16.156.10011.2.3.1.21",  # 每天食用的食物食用频率代码表
        "CV03.00.110": "urn:oid:2.16.156.10011.2.3.1.22",  # 每年食用的食物食用频率代码表
        "CV03.00.111": "urn:oid:2.16.156.10011.2.3.1.23",  # 身体活动频率代码表
        "CV03.00.112": "urn:oid:2.16.156.10011.2.3.1.24",  # 患重性精神疾病对家庭社会的影响代码表
        "CV03.00.113": "urn:oid:2.16.156.10011.2.3.1.25",  # 艾滋病接触史代码表
        "CV03.00.114": "urn:oid:2.16.156.10011.2.3.1.26",  # 每日饮水量代码表
        "CV03.00.115": "urn:oid:2.16.156.10011.2.3.1.27",  # 饮水类别代码表
        "CV03.00.116": "urn:oid:2.16.156.10011.2.3.1.28",  # 个人不良行为接触史代码表
        "CV03.00.201": "urn:oid:2.16.156.10011.2.3.1.29",  # 职业照射种类代码表
        "CV03.00.202": "urn:oid:2.16.156.10011.2.3.1.30",  # 受照原因代码表
        "CV03.00.203": "urn:oid:2.16.156.10011.2.3.1.31",  # 职业病危害因素类别代码表
        "CV03.00.204": "urn:oid:2.16.156.10011.2.3.1.32",  # 农药名称代码表
        "CV03.00.301": "urn:oid:2.16.156.10011.2.3.1.33",  # 环境危险因素暴露类别代码表
        "CV03.00.302": "urn:oid:2.16.156.10011.2.3.1.34",  # 厨房排风设施类别代码表
        "CV03.00.303": "urn:oid:2.16.156.10011.2.3.1.35",  # 燃料类型类别代码表
        "CV03.00.304": "urn:oid:2.16.156.10011.2.3.1.36",  # 厕所类别代码表
        "CV03.00.401": "urn:oid:2.16.156.10011.2.3.1.37",  # 孕早期服药类别代码表
        "CV03.00.402": "urn:oid:2.16.156.10011.2.3.1.38",  # 孕产期高危因素代码表
        "CV03.00.403": "urn:oid:2.16.156.10011.2.3.1.39",  # 接触有害因素类别代码表
        "CV03.00.404": "urn:oid:2.16.156.10011.2.3.1.40",  # 艾滋宿忠者亲属HⅣ感染状况代码表
        "CV04.01.001": "urn:oid:2.16.156.10011.2.3.1.41",  # 妇科及乳腺不适症状代码表
        "CV04.01.002": "urn:oid:2.16.156.10011.2.3.1.42",  # 乳量代码表
        "CV04.01.003": "urn:oid:2.16.156.10011.2.3.1.43",  # 伤害发生原因代码表
        "CV04.01.004": "urn:oid:2.16.156.10011.2.3.1.44",  # 伤害意图类别代码表
        "CV04.01.005": "urn:oid:2.16.156.10011.2.3.1.45",  # 伤害发生地点代码表
        "CV04.01.006": "urn:oid:2.16.156.10011.2.3.1.46",  # 伤害发生时活动类别代码表
        "CV04.01.007": "urn:oid:2.16.156.10011.2.3.1.47",  # 疑似结核患者症状代码表
        "CV04.01.008": "urn:oid:2.16.156.10011.2.3.1.48",  # 忸性丝虫病患者症状代码表
        "CV04.01.009": "urn:oid:2.16.156.10011.2.3.1.49",  # 精神症状代码表
        "CV04.01.010": "urn:oid:2.16.156.10011.2.3.1.50",  # 儿童睡眠质旦代码表
        "CV04.01.011": "urn:oid:2.16.156.10011.2.3.1.51",  # 儿童陲眠情况代码表
        "CV04.01.012": "urn:oid:2.16.156.10011.2.3.1.52",  # 儿童大便性状代码表
        "CV04.01.013": "urn:oid:2.16.156.10011.2.3.1.53",  # 老年人健康状态自我评估代码表
        "CV04.01.014": "urn:oid:2.16.156.10011.2.3.1.54",  # 老年人生活自理能力自我评估代码表
        "CV04.10.001": "urn:oid:2.16.156.10011.2.3.1.55",  # 附件检查结果代码表
        "CV04.10.002": "urn:oid:2.16.156.10011.2.3.1.56",  # 子宫大小代码表
        "CV04.10.003": "urn:oid:2.16.156.10011.2.3.1.57",  # 妇科检查方式代码表
        "CV04.10.004": "urn:oid:2.16.156.10011.2.3.1.58",  # 皮肤检查结果代码表
        "CV04.10.005": "urn:oid:2.16.156.10011.2.3.1.59",  # 浮肿状况代码表
        "CV04.10.006": "urn:oid:2.16.156.10011.2.3.1.60",  # 巩膜检查结果代码表
        "CV04.10.007": "urn:oid:2.16.156.10011.2.3.1.61",  # 口唇外观代码表
        "CV04.10.008": "urn:oid:2.16.156.10011.2.3.1.62",  # 儿童面色代码表
        "CV04.10.009": "urn:oid:2.16.156.10011.2.3.1.63",  # 黄疸部位代码表
        "CV04.10.010": "urn:oid:2.16.156.10011.2.3.1.64",  # 齿列类别代码表
        "CV04.10.011": "urn:oid:2.16.156.10011.2.3.1.65",  # 淋巴结检查结果代码表
        "CV04.10.012": "urn:oid:2.16.156.10011.2.3.1.66",  # 乳腺检查结果代码表
        "CV04.10.013": "urn:oid:2.16.156.10011.2.3.1.67",  # 肛门指诊检查结果代码表
        "CV04.10.014": "urn:oid:2.16.156.10011.2.3.1.68",  # 下肢水肿检查结果代码表
        "CV04.10.015": "urn:oid:2.16.156.10011.2.3.1.69",  # 足背动脉搏动代码表
        "CV04.10.016": "urn:oid:2.16.156.10011.2.3.1.70",  # 伤害部位代码表
        "CV04.10.017": "urn:oid:2.16.156.10011.2.3.1.71",  # 慢性丝虫病症状发作部位代码表
        "CV04.10.018": "urn:oid:2.16.156.10011.2.3.1.72",  # 前囟张力代码表
        "CV04.10.019": "urn:oid:2.16.156.10011.2.3.1.73",  # 脐带检查结果代码表
        "CV04.10.020": "urn:oid:2.16.156.10011.2.3.1.74",  # 儿童体格发育评价代码
        "CV04.10.021": "urn:oid:2.16.156.10011.2.3.1.75",  # 可疑佝偻病症状代码表
        "CV04.10.022": "urn:oid:2.16.156.10011.2.3.1.76",  # 可疑佝偻病体征代码表
        "CV04.30.001": "urn:oid:2.16.156.10011.2.3.1.77",  # 血吸虫患者肝实质纤维化程度代码表
        "CV04.30.002": "urn:oid:2.16.156.10011.2.3.1.78",  # 常用放射诊断检查技术编码表
        "WS 364.8-2011 A.1": "urn:oid:2.16.156.10011.2.3.1.79",  # x线摄影体位编码
        "WS 364.8-2011 A.2": "urn:oid:2.16.156.10011.2.3.1.80",  # X线摄影方向编码
        "CV04.50.001": "urn:oid:2.16.156.10011.2.3.1.81",  # HBV血清学标志阳性项目代码表
        "CV04.50.002": "urn:oid:2.16.156.10011.2.3.1.82",  # HBV基因分型代码表
        "CV04.50.003": "urn:oid:2.16.156.10011.2.3.1.83",  # HBV血清型代码表
        "CV04.50.004": "urn:oid:2.16.156.10011.2.3.1.84",  # 耐药突变检测阳性项目代码表
        "CV04.50.005": "urn:oid:2.16.156.10011.2.3.1.85",  # ABO血型代码表
        "CV04.50.006": "urn:oid:2.16.156.10011.2.3.1.86",  # 采血方式代码表
        "CV04.50.007": "urn:oid:2.16.156.10011.2.3.1.87",  # 采血部位代码表
        "CV04.50.008": "urn:oid:2.16.156.10011.2.3.1.88",  # 新生儿疾病筛查项目代码表
        "CV04.50.009": "urn:oid:2.16.156.10011.2.3.1.89",  # 新生儿疾病筛查方法代码表
        "CV04.50.010": "urn:oid:2.16.156.10011.2.3.1.90",  # 阴道分泌物清洁度代码表
        "CV04.50.011": "urn:oid:2.16.156.10011.2.3.1.91",  # 阴道细胞学诊断结果代码表
        "CV04.50.012": "urn:oid:2.16.156.10011.2.3.1.92",  # 妊娠诊断方法代码表
        "CV04.50.013": "urn:oid:2.16.156.10011.2.3.1.93",  # 药敏试验结果代码表
        "CV04.50.014": "urn:oid:2.16.156.10011.2.3.1.94",  # 痰检培养结果代码表
        "CV04.50.015": "urn:oid:2.16.156.10011.2.3.1.95",  # 尿实验窒定性检测结果代码表
        "CV04.50.016": "urn:oid:2.16.156.10011.2.3.1.96",  # 血吸虫病虫卵检查方法代码表
        "CV04.50.017": "urn:oid:2.16.156.10011.2.3.1.97",  # 血吸虫病检测方法代码表
        "CV04.50.018": "urn:oid:2.16.156.10011.2.3.1.98",  # 血吸虫病抗体检测方法代码表
        "CV04.50.019": "urn:oid:2.16.156.10011.2.3.1.99",  # 阴道分泌物检查结果代码表
        "CV05.01.001": "urn:oid:2.16.156.10011.2.3.1.100",  # 住院者疾病状态代码表
        "CV05.01.002": "urn:oid:2.16.156.10011.2.3.1.101",  # 诊断状态代码表
        "CV05.01.003": "urn:oid:2.16.156.10011.2.3.1.102",  # 乳糜尿发作诱因代码表
        "CV05.01.004": "urn:oid:2.16.156.10011.2.3.1.103",  # 伤害性质代码表
        "CV05.01.005": "urn:oid:2.16.156.10011.2.3.1.104",  # 中医体质分类代码表
        "CV05.01.006": "urn:oid:2.16.156.10011.2.3.1.105",  # 孕产妇死亡死因分类代码表
        "CV05.01.007": "urn:oid:2.16.156.10011.2.3.1.106",  # 胎方位代码表
        "CV05.01.008": "urn:oid:2.16.156.10011.2.3.1.107",  # 胎先露代码表
        "CV05.01.009": "urn:oid:2.16.156.10011.2.3.1.108",  # 产时并发症代码表
        "CV05.01.010": "urn:oid:2.16.156.10011.2.3.1.109",  # 会阴裂伤情况代码表
        "CV05.01.011": "urn:oid:2.16.156.10011.2.3.1.110",  # 伤口愈合状况代码表
        "CV05.01.012": "urn:oid:2.16.156.10011.2.3.1.111",  # 新生儿黄疸程度代码表
        "CV05.01.013": "urn:oid:2.16.156.10011.2.3.1.112",  # 新生儿并发症代码表
        "CV05.01.014": "urn:oid:2.16.156.10011.2.3.1.113",  # 出生缺陷诊断依据代码表
        "CV05.01.015": "urn:oid:2.16.156.10011.2.3.1.114",  # 出生缺陷确诊时间类别代码表
        "CV05.01.016": "urn:oid:2.16.156.10011.2.3.1.115",  # 出生缺陷类别代码表
        "CV05.01.017": "urn:oid:2.16.156.10011.2.3.1.116",  # 传染病名称代码表
        "CV05.01.018": "urn:oid:2.16.156.10011.2.3.1.117",  # 结核病合并症代码表
        "CV05.01.019": "urn:oid:2.16.156.10011.2.3.1.118",  # 肺外结核部位代码表
        "CV05.01.020": "urn:oid:2.16.156.10011.2.3.1.119",  # 诊断结核病类型代码表
        "CV05.01.021": "urn:oid:2.16.156.10011.2.3.1.120",  # 肺结核诊断结果代码表
        "CV05.01.022": "urn:oid:2.16.156.10011.2.3.1.121",  # 血吸虫病合并症代码表
        "CV05.01.023": "urn:oid:2.16.156.10011.2.3.1.122",  # 血吸虫病感染方式代码表
        "CV05.01.024": "urn:oid:2.16.156.10011.2.3.1.123",  # 血吸虫病诊断状态代码表
        "CV05.01.025": "urn:oid:2.16.156.10011.2.3.1.124",  # 晚期血吸虫病病例类型代码表
        "CV05.01.026": "urn:oid:2.16.156.10011.2.3.1.125",  # 肿瘤临床分期代码表
        "CV05.01.027": "urn:oid:2.16.156.10011.2.3.1.126",  # 肿瘤诊断依据代码表
        "CV05.01.028": "urn:oid:2.16.156.10011.2.3.1.127",  # 病毒性肝炎类型代码表
        "CV05.01.029": "urn:oid:2.16.156.10011.2.3.1.128",  # 慢性HBV感染临床诊断分类代码表
        "CV05.01.030": "urn:oid:2.16.156.10011.2.3.1.129",  # 慢性乙型肝炎的临床分级代码表
        "CV05.01.031": "urn:oid:2.16.156.10011.2.3.1.130",  # 肝衰竭分类代码表
        "CV05.01.032": "urn:oid:2.16.156.10011.2.3.1.131",  # 预防接种后不良反应临床诊断代码表
        "CV05.01.033": "urn:oid:2.16.156.10011.2.3.1.132",  # 放射性疾病的分度代码表
        "CV05.01.034": "urn:oid:2.16.156.10011.2.3.1.133",  # 放射性疾病的分期代码表
        "CV05.01.035": "urn:oid:2.16.156.10011.2.3.1.134",  # 农药中毒原因类型代码表
        "CV05.01.036": "urn:oid:2.16.156.10011.2.3.1.135",  # 重性精神疾病名称代码表
        "CV05.01.037": "urn:oid:2.16.156.10011.2.3.1.136",  # 死亡最高诊断依据类别代码表
        "CV05.01.038": "urn:oid:2.16.156.10011.2.3.1.137",  # 过敏源代码表
        "CV05.01.039": "urn:oid:2.16.156.10011.2.3.1.138",  # 5岁以下儿童死因分类代码表
        "CV05.10.001": "urn:oid:2.16.156.10011.2.3.1.139",  # 残疾情况代码表
        "CV05.10.002": "urn:oid:2.16.156.10011.2.3.1.140",  # 心理状态代码表
        "CV05.10.003": "urn:oid:2.16.156.10011.2.3.1.141",  # 重性精神疾病患者社会功能情况分类代码表
        "CV05.10.004": "urn:oid:2.16.156.10011.2.3.1.142",  # 劳动能力评定分级代码表
        "CV05.10.005": "urn:oid:2.16.156.10011.2.3.1.143",  # 婚前医学检查结果代码表
        "CV05.10.006": "urn:oid:2.16.156.10011.2.3.1.144",  # 儿童生长发育评价结果代码表
        "CV05.10.007": "urn:oid:2.16.156.10011.2.3.1.145",  # 儿童体弱原因类别代码表
        "CV05.10.008": "urn:oid:2.16.156.10011.2.3.1.146",  # 血吸虫病患者劳动能力分级代码表
        "CV05.10.009": "urn:oid:2.16.156.10011.2.3.1.147",  # 职业健康检查结论代码表
        "CV05.10.010": "urn:oid:2.16.156.10011.2.3.1.148",  # 病情转归代码表
        "CV05.10.011": "urn:oid:2.16.156.10011.2.3.1.149",  # 伤害转归代码表
        "CV05.10.012": "urn:oid:2.16.156.10011.2.3.1.150",  # 随访评价结果代码表
        "CV05.10.013": "urn:oid:2.16.156.10011.2.3.1.151",  # 重性精神疾病患者危险性分级代码表
        "CV05.10.014": "urn:oid:2.16.156.10011.2.3.1.152",  # 乙肝抗病毒治疗的血清学应答代码表
        "CV05.10.015": "urn:oid:2.16.156.10011.2.3.1.153",  # 5岁以下儿童未治疗或未就医原因代码表
        "CV05.10.016": "urn:oid:2.16.156.10011.2.3.1.154",  # 影响孕产妇死亡的主要因素代码表
        "CV05.10.017": "urn:oid:2.16.156.10011.2.3.1.155",  # 疑似食源性异常病例(健康事件)可疑病因代码表
        "CV05.10.018": "urn:oid:2.16.156.10011.2.3.1.156",  # 疑似食源性异常病例(健康事件)报告卡上报原因代码表
        "CV06.00.101": "urn:oid:2.16.156.10011.2.3.1.157",  # 中药使用类别代码表
        "CV06.00.102": "urn:oid:2.16.156.10011.2.3.1.158",  # 用药途径代码表
        "CV06.00.103": "urn:oid:2.16.156.10011.2.3.1.159",  # 麻醉方法代码表
        "CV06.00.104": "urn:oid:2.16.156.10011.2.3.1.160",  # 宫内节育器放置时期代码表
        "CV06.00.105": "urn:oid:2.16.156.10011.2.3.1.161",  # 皮下埋植剂埋植时期代码表
        "CV06.00.106": "urn:oid:2.16.156.10011.2.3.1.162",  # 输卵管结扎手术方式代码表
        "CV06.00.107": "urn:oid:2.16.156.10011.2.3.1.163",  # 输卵管结扎部位代码表
        "CV06.00.108": "urn:oid:2.16.156.10011.2.3.1.164",  # 新生儿抢救方法代码表
        "CV06.00.109": "urn:oid:2.16.156.10011.2.3.1.165",  # 乙肝疫苗接种剂工代码表
        "CV06.00.110": "urn:oid:2.16.156.10011.2.3.1.166",  # 乙肝抗病毒治疗的基本药物代码表
        "CV06.00.111": "urn:oid:2.16.156.10011.2.3.1.167",  # 乙肝抗病毒治疗终止原因代码表
        "CV06.00.112": "urn:oid:2.16.156.10011.2.3.1.168",  # 乙肝治疗方法代码表
        "CV06.00.113": "urn:oid:2.16.156.10011.2.3.1.169",  # 更换抗HBV药物方案原因代码表
        "CV06.00.114": "urn:oid:2.16.156.10011.2.3.1.170",  # 抗结核化疗方案代码表
        "CV06.00.115": "urn:oid:2.16.156.10011.2.3.1.171",  # 抗结核治疗停止原因代码表
        "CV06.00.116": "urn:oid:2.16.156.10011.2.3.1.172",  # 结核患者发现方式代码表
        "CV06.00.117": "urn:oid:2.16.156.10011.2.3.1.173",  # 结核患者管理方式代码表
        "CV06.00.118": "urn:oid:2.16.156.10011.2.3.1.174",  # 艾滋病抗病毒治疗停药原因代码表
        "CV06.00.119": "urn:oid:2.16.156.10011.2.3.1.175",  # 艾滋病抗病毒治疗终止原因代码表
        "CV06.00.120": "urn:oid:2.16.156.10011.2.3.1.176",  # 美沙酮维持治疗终止原因代码表
        "CV06.00.201": "urn:oid:2.16.156.10011.2.3.1.177",  # 血吸虫病治疗方案代码表
        "CV06.00.202": "urn:oid:2.16.156.10011.2.3.1.178",  # 慢性丝虫病患者治疗情况代码表
        "CV06.00.203": "urn:oid:2.16.156.10011.2.3.1.179",  # 肿瘤患者治疗方式代码表
        "CV06.00.204": "urn:oid:2.16.156.10011.2.3.1.180",  # 戒烟方法类别代码表
        "CV06.00.205": "urn:oid:2.16.156.10011.2.3.1.181",  # 职业性放射性疾病处理情况代码表
        "CV06.00.206": "urn:oid:2.16.156.10011.2.3.1.182",  # 肿瘤患者指导内容代码表
        "CV06.00.207": "urn:oid:2.16.156.10011.2.3.1.183",  # 随访方式代码表
        "CV06.00.208": "urn:oid:2.16.156.10011.2.3.1.184",  # 随访周期建议代码表
        "CV06.00.209": "urn:oid:2.16.156.10011.2.3.1.185",  # 精神康复措施代码表
        "CV06.00.210": "urn:oid:2.16.156.10011.2.3.1.186",  # 婚检医学意见代码表
        "CV06.00.211": "urn:oid:2.16.156.10011.2.3.1.187",  # 避孕方式代码表
        "CV06.00.212": "urn:oid:2.16.156.10011.2.3.1.188",  # 住院原因代码表
        "CV06.00.213": "urn:oid:2.16.156.10011.2.3.1.189",  # 育龄妇女预防母婴传播干预措施代码表
        "CV06.00.214": "urn:oid:2.16.156.10011.2.3.1.190",  # 儿童预防母婴传播干预措施代码表
        "CV06.00.215": "urn:oid:2.16.156.10011.2.3.1.191",  # 撤销随访管理原因代码表
        "CV06.00.216": "urn:oid:2.16.156.10011.2.3.1.192",  # 婴幼儿添加辅食种类代码表
        "CV06.00.217": "urn:oid:2.16.156.10011.2.3.1.193",  # 儿童健康指导类别代码表
        "CV06.00.218": "urn:oid:2.16.156.10011.2.3.1.194",  # 危险因素控制建议代码表
        "CV06.00.219": "urn:oid:2.16.156.10011.2.3.1.195",  # 孕产妇健康指导类别代码表
        "CV07.10.001": "urn:oid:2.16.156.10011.2.3.1.196",  # 门诊费用分类代码表
        "CV07.10.003": "urn:oid:2.16.156.10011.2.3.1.197",  # 医疗费用来源类别代码表
        "CV07.10.004": "urn:oid:2.16.156.10011.2.3.1.198",  # 医疗费用结箅方式代码表
        "CV08.10.001": "urn:oid:2.16.156.10011.2.3.1.199",  # 卫生监督机构性质代码表
        "CV08.10.002": "urn:oid:2.16.156.10011.2.3.1.200",  # 卫生监督机构行政级别代码表
        "CV08.10.003": "urn:oid:2.16.156.10011.2.3.1.201",  # 监督机构科室代码表
        "CV08.10.004": "urn:oid:2.16.156.10011.2.3.1.202",  # 主要致死疾病的最高诊断机构级别代码表
        "CV08.10.005": "urn:oid:2.16.156.10011.2.3.1.203",  # 肿瘤诊疗机构代码表
        "CV08.10.006": "urn:oid:2.16.156.10011.2.3.1.204",  # 血吸虫病诊断(治疗)机构级别代码表
        "CV08.30.001": "urn:oid:2.16.156.10011.2.3.1.205",  # 卫生监督机构人员编制类别代码表
        "CV08.30.002": "urn:oid:2.16.156.10011.2.3.1.206",  # 卫生监督机构职工类别代码表
        "CV08.30.003": "urn:oid:2.16.156.10011.2.3.1.207",  # 监督员执业范围代码表
        "CV08.30.004": "urn:oid:2.16.156.10011.2.3.1.208",  # 助产人员类别代码表
        "CV08.30.005": "urn:oid:2.16.156.10011.2.3.1.209",  # 专业技术职务类别代码表
        "CV08.50.001": "urn:oid:2.16.156.10011.2.3.1.210",  # 疫苗名称代码表
        "CV08.50.002": "urn:oid:2.16.156.10011.2.3.1.211",  # 药物剂型代码表
        "CV08.50.003": "urn:oid:2.16.156.10011.2.3.1.212",  # 药敏试验药物代码表
        "CV08.50.101": "urn:oid:2.16.156.10011.2.3.1.213",  # 宫内节育器种类代码表
        "CV08.50.102": "urn:oid:2.16.156.10011.2.3.1.214",  # 交通工具代码表
        "CV09.00.101": "urn:oid:2.16.156.10011.2.3.1.215",  # 卫生监督对象类别代码表
        "CV09.00.102": "urn:oid:2.16.156.10011.2.3.1.216",  # 项目性质代码表
        "CV09.00.103": "urn:oid:2.16.156.10011.2.3.1.217",  # 职业病建设项目审核代码表
        "CV09.00.104": "urn:oid:2.16.156.10011.2.3.1.218",  # 饮用水类别代码表
        "CV09.00.105": "urn:oid:2.16.156.10011.2.3.1.219",  # 水源水类型代码表
        "CV09.00.106": "urn:oid:2.16.156.10011.2.3.1.220",  # 制水工艺代码表
        "CV09.00.107": "urn:oid:2.16.156.10011.2.3.1.221",  # 生活饮用水消毒方式代码表
        "CV09.00.108": "urn:oid:2.16.156.10011.2.3.1.222",  # 检验指标代码表
        "CV09.00.109": "urn:oid:2.16.156.10011.2.3.1.223",  # 职业性健康监护体检类别代码表
        "CV09.00.110": "urn:oid:2.16.156.10011.2.3.1.224",  # 职业卫生技术服务业务范围代码表
        "CV09.00.111": "urn:oid:2.16.156.10011.2.3.1.225",  # 资质等级代码表
        "CV09.00.112": "urn:oid:2.16.156.10011.2.3.1.226",  # 放射性同位素和射线装置的种类代码表
        "CV09.00.201": "urn:oid:2.16.156.10011.2.3.1.227",  # 卫生监督量化分级管理等级评定情况代码表
        "CV09.00.202": "urn:oid:2.16.156.10011.2.3.1.228",  # 卫生监督检查与行政处罚查处案件来源代码表
        "CV09.00.203": "urn:oid:2.16.156.10011.2.3.1.229",  # 卫生监督检查与行政处罚专业类别代码表
        "CV09.00.204": "urn:oid:2.16.156.10011.2.3.1.230",  # 卫生行政处罚结果及行政措施代码表
        "CV09.00.205": "urn:oid:2.16.156.10011.2.3.1.231",  # 公共场所违法事实代码表
        "CV09.00.206": "urn:oid:2.16.156.10011.2.3.1.232",  # 生活饮用水违法事实代码表
        "CV09.00.207": "urn:oid:2.16.156.10011.2.3.1.233",  # 职业卫生违法事实代码表
        "CV09.00.208": "urn:oid:2.16.156.10011.2.3.1.234",  # 放射卫生违法事实代码表
        "CV09.00.209": "urn:oid:2.16.156.10011.2.3.1.235",  # 校内辅助设施类别代码表
        "CV09.00.210": "urn:oid:2.16.156.10011.2.3.1.236",  # 学校卫生违法事实代码表
        "CV09.00.211": "urn:oid:2.16.156.10011.2.3.1.237",  # 医疗卫生违法事实代码表
        "CV09.00.212": "urn:oid:2.16.156.10011.2.3.1.238",  # 传染病防治违法事实代码表
        "CV09.00.213": "urn:oid:2.16.156.10011.2.3.1.239",  # 采供血卫生违法事实代码表
        "CV09.00.214": "urn:oid:2.16.156.10011.2.3.1.240",  # 行政复议情况代码表
        "CV09.00.215": "urn:oid:2.16.156.10011.2.3.1.241",  # 行政诉讼情况代码表
        "CV09.00.216": "urn:oid:2.16.156.10011.2.3.1.242",  # 行政处分类别代码表
        "CV09.00.217": "urn:oid:2.16.156.10011.2.3.1.243",  # 卫生监督证书类别代码表
        "CV09.00.218": "urn:oid:2.16.156.10011.2.3.1.244",  # 许可类别代码表
        "CV09.00.301": "urn:oid:2.16.156.10011.2.3.1.245",  # 检查结果通知形式代码表
        "CV09.00.401": "urn:oid:2.16.156.10011.2.3.1.246",  # 收入与支出代码表
        "CV09.00.402": "urn:oid:2.16.156.10011.2.3.1.247",  # 资产与负债代码表
        "CV02.01.204": "urn:oid:2.16.156.10011.2.3.1.248",  # 医疗保险类别代码表
        "CV02.01.205": "urn:oid:2.16.156.10011.2.3.1.249",  # 地址类别代码表
        "CV04.50.020": "urn:oid:2.16.156.10011.2.3.1.250",  # Rh（D）血型代码表
        "CV04.50.021": "urn:oid:2.16.156.10011.2.3.1.251",  # 输血品种代码表
        "CV05.01.040": "urn:oid:2.16.156.10011.2.3.1.252",  # 输血反应类型代码表
        "CV05.10.019": "urn:oid:2.16.156.10011.2.3.1.253",  # 入院病情代码表
        "CV05.10.020": "urn:oid:2.16.156.10011.2.3.1.254",  # 新生儿异常情况代码表
        "CV05.10.021": "urn:oid:2.16.156.10011.2.3.1.255",  # 美国麻醉医师协会(ASA)分级标准代码表
        "CV05.10.022": "urn:oid:2.16.156.10011.2.3.1.256",  # 手术切口类别代码表
        "CV05.10.023": "urn:oid:2.16.156.10011.2.3.1.257",  # 手术切口愈合等级代码表
        "CV05.10.024": "urn:oid:2.16.156.10011.2.3.1.258",  # 手术级别代码表
        "CV06.00.220": "urn:oid:2.16.156.10011.2.3.1.259",  # 护理等级代码表
        "CV06.00.221": "urn:oid:2.16.156.10011.2.3.1.260",  # 护理类型代码表
        "CV06.00.222": "urn:oid:2.16.156.10011.2.3.1.261",  # 隔离种类代码表
        "CV06.00.223": "urn:oid:2.16.156.10011.2.3.1.262",  # 手术体位代码表
        "CV06.00.224": "urn:oid:2.16.156.10011.2.3.1.263",  # 饮食指导代码表
        "CV06.00.225": "urn:oid:2.16.156.10011.2.3.1.264",  # 治疗类别代码表
        "CV06.00.226": "urn:oid:2.16.156.10011.2.3.1.265",  # 离院方式代码表
        "CV06.00.227": "urn:oid:2.16.156.10011.2.3.1.266",  # 操作部位代码表
        "CV06.00.228": "urn:oid:2.16.156.10011.2.3.1.267",  # 药物使用频次代码表
        "CV06.00.229": "urn:oid:2.16.156.10011.2.3.1.268",  # 医嘱项目类型代码表
        "CV07.10.005": "urn:oid:2.16.156.10011.2.3.1.269",  # 医疗付费方式代码表
        "CV09.00.403": "urn:oid:2.16.156.10011.2.3.1.270",  # 入院途径代码表
        "CV09.00.404": "urn:oid:2.16.156.10011.2.3.1.271",  # 患者类型代码表
        "DE06.00.208.00": "urn:oid:2.16.156.10011.2.3.2.1",  # 呼吸类型代码表
        "DE03.00.049.00": "urn:oid:2.16.156.10011.2.3.2.2",  # 家庭禽畜栏类别表
        "DE05.10.041.00": "urn:oid:2.16.156.10011.2.3.2.3",  # 认知功能粗筛代码表
        "DE05.10.040.00": "urn:oid:2.16.156.10011.2.3.2.4",  # 情感状态粗筛代码表
        "DE03.00.073.00": "urn:oid:2.16.156.10011.2.3.2.5",  # 吸烟状况代码表
        "DE04.10.214.00": "urn:oid:2.16.156.10011.2.3.2.6",  # 咽部检查结果代码表
        "DE04.10.190.00": "urn:oid:2.16.156.10011.2.3.2.7",  # 听力检测结果代码表
        "DE05.10.106.00": "urn:oid:2.16.156.10011.2.3.2.8",  # 运动功能状态代码表
        "DE04.10.205.00": "urn:oid:2.16.156.10011.2.3.2.9",  # 心律类别代码表
        "DE04.50.116.00": "urn:oid:2.16.156.10011.2.3.2.10",  # 乙肝病毒定性检测结果分类代码表
        "DE05.01.073.00": "urn:oid:2.16.156.10011.2.3.2.11",  # 中医体质分类判定结果代码表
        "DE06.00.027.00": "urn:oid:2.16.156.10011.2.3.2.12",  # 服药依从性代码表
        "DE06.00.051.00": "urn:oid:2.16.156.10011.2.3.2.13",  # 健康指导代码表
        "DE05.10.076.00": "urn:oid:2.16.156.10011.2.3.2.14",  # 新生儿听力筛查情况代码表
        "DE04.30.042.00": "urn:oid:2.16.156.10011.2.3.2.15",  # 新生儿听力筛查结果代码表
        "DE06.00.116.00": "urn:oid:2.16.156.10011.2.3.2.16",  # 喂养方式类别代码表
        "DE02.10.039.00": "urn:oid:2.16.156.10011.2.3.2.17",  # 家族疾病史类别代码表
        "DE04.50.041.00": "urn:oid:2.16.156.10011.2.3.2.18",  # 梅毒血清学试验结果代码表
        "DE04.50.009.00": "urn:oid:2.16.156.10011.2.3.2.19",  # HIV抗体检测结果代码表
        "DE01.00.002.00": "urn:oid:2.16.156.10011.2.3.2.20",  # 报卡类别代码表
        "DE05.10.015.00": "urn:oid:2.16.156.10011.2.3.2.21",  # 传染病发病类别代码表
        "DE05.10.016.00": "urn:oid:2.16.156.10011.2.3.2.22",  # 传染病类别代码表
        "DE03.00.060.00": "urn:oid:2.16.156.10011.2.3.2.23",  # 受照类型代码表
        "DE05.01.008.00": "urn:oid:2.16.156.10011.2.3.2.24",  # 尘肺期别代码表
        "DE03.00.046.00": "urn:oid:2.16.156.10011.2.3.2.25",  # 摄盐量分级代码表
        "DE05.10.083.00": "urn:oid:2.16.156.10011.2.3.2.26",  # 心理调整评价结果代码表
        "DE05.10.068.00": "urn:oid:2.16.156.10011.2.3.2.27",  # 随访遵医行为评价结果代码表
        "DE04.50.024.00": "urn:oid:2.16.156.10011.2.3.2.28",  # 低血糖反应代码表
        "DE09.00.103.00": "urn:oid:2.16.156.10011.2.3.2.29",  # 病案质量等级表
        "DE03.00.017.00": "urn:oid:2.16.156.10011.2.3.2.30",  # 关锁情况代码表
        "DE02.01.023.00": "urn:oid:2.16.156.10011.2.3.2.31",  # 经济状况代码表
        "DE05.10.123.00": "urn:oid:2.16.156.10011.2.3.2.32",  # 自知力评价结果代码表
        "DE04.01.070.00": "urn:oid:2.16.156.10011.2.3.2.33",  # 睡眠情况代码表
        "DE03.00.080.00": "urn:oid:2.16.156.10011.2.3.2.34",  # 饮食情况代码表
        "DE05.10.057.00": "urn:oid:2.16.156.10011.2.3.2.35",  # 社会功能情况评价代码表
        "DE02.10.091.00": "urn:oid:2.16.156.10011.2.3.2.36",  # 住院情况代码表
        "DE05.10.118.00": "urn:oid:2.16.156.10011.2.3.2.37",  # 重性精神疾病患者随访评价结果代码表
        "DE04.30.017.00": "urn:oid:2.16.156.10011.2.3.2.38",  # 检查/检验结果代码表
        "DE06.00.196.00": "urn:oid:2.16.156.10011.2.3.2.39",  # 初诊标志代码表
        "DE08.50.032.00": "urn:oid:2.16.156.10011.2.3.2.40",  # 处方类别代码表
        "DE06.00.307.00": "urn:oid:2.16.156.10011.2.3.2.41",  # 麻醉中西医标识代码表
        "DE06.00.106.00": "urn:oid:2.16.156.10011.2.3.2.42",  # 输血史标识代码表
        "DE04.50.147.00": "urn:oid:2.16.156.10011.2.3.2.43",  # 输血性质代码表
        "DE06.00.261.00": "urn:oid:2.16.156.10011.2.3.2.44",  # 受孕形式代码表
        "DE05.10.155.00": "urn:oid:2.16.156.10011.2.3.2.45",  # 胎膜情况代码表
        "DE04.10.256.00": "urn:oid:2.16.156.10011.2.3.2.46",  # 破膜方式代码表
        "DE04.50.139.00": "urn:oid:2.16.156.10011.2.3.2.47",  # 检查方式代码表
        "DE06.00.215.00": "urn:oid:2.16.156.10011.2.3.2.48",  # Apgar评分间隔时间代码表
        "DE06.00.026.00": "urn:oid:2.16.156.10011.2.3.2.49",  # 分娩结局代码表
        "DE06.00.229.00": "urn:oid:2.16.156.10011.2.3.2.50",  # 气管护理代码表
        "DE06.00.283.00": "urn:oid:2.16.156.10011.2.3.2.51",  # 心理护理代码表
        "DE06.00.178.00": "urn:oid:2.16.156.10011.2.3.2.52",  # 安全护理代码表
        "DE05.10.022.00": "urn:oid:2.16.156.10011.2.3.2.53",  # 发育程度代码表
        "DE05.10.097.00": "urn:oid:2.16.156.10011.2.3.2.54",  # 营养状态代码表
        "DE05.10.122.00": "urn:oid:2.16.156.10011.2.3.2.55",  # 自理能力代码表
        "DE06.00.314.00": "urn:oid:2.16.156.10011.2.3.2.56",  # 转科记录类型代码表
        "DE06.00.247.00": "urn:oid:2.16.156.10011.2.3.2.57",  # 实施临床路径标志代码表
        "DE06.00.286.00": "urn:oid:2.16.156.10011.2.3.2.58",  # 医嘱类别代码表
        "DE05.01.077.00": "urn:oid:2.16.156.10011.2.3.2.59",  # 麻醉合并症标志代码表
        "SD01.01.003.00": "urn:oid:2.16.156.10011.2.3.2.62",  # 医疗卫生机构业务科室分类与代码表
    }
)
"""Every value domain of the OID list under ``2.16.156.10011.2.3.1`` (WS 364 ``CV`` tables) and
``2.16.156.10011.2.3.2`` (value domains of data elements outside the CV tables, keyed by their
``DE`` identifier), as ``urn:oid:`` system URIs. Transcribed from OID.xml; a unit test checks it
against the file."""


def value_domain(table: str) -> str:
    """System URI of a WS 364 value domain by its table id, e.g. ``CV02.01.101``."""
    try:
        return WS364_VALUE_DOMAINS[table]
    except KeyError:
        raise YilianError(Category.NOT_FOUND, f"no OID is known for value domain {table!r}") from None
