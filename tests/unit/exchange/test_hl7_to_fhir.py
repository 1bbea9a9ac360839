"""Messages to FHIR transaction Bundles, without a database."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.support.paths import SHARED
from yilian.exchange.hl7.errors import Hl7Error
from yilian.exchange.hl7.parse import parse
from yilian.exchange.hl7.to_fhir import Mapping_, to_fhir
from yilian.kernel import naming

MESSAGES = SHARED / "hl7v2" / "microsoft-fhir-converter" / "messages"
HEAD = "MSH|^~\\&|HIS|H1|YILIAN|CITY|20261203101500||{type}|X-1|P|2.5\r"


def resources(m: Mapping_, kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in m.entries if e["resource"]["resourceType"] == kind]


def mapped(*segments: str, type_: str = "ADT^A04") -> Mapping_:
    return to_fhir(parse((HEAD.format(type=type_) + "\r".join(segments) + "\r").encode()))


def test_every_shared_message_maps() -> None:
    for path in sorted(MESSAGES.glob("*.hl7")):
        m = to_fhir(parse(path.read_bytes()))
        assert m.entries or m.merges, path.name


def test_vxu_one_immunization_per_rxa() -> None:
    m = to_fhir(parse((MESSAGES / "VXU.hl7").read_bytes()))
    doses = resources(m, "Immunization")
    assert len(doses) == 3 and [d["primarySource"] for d in doses] == [True, False, False]
    assert doses[1]["reportOrigin"]["coding"][0]["code"] == "01"
    assert "doseQuantity" not in doses[1]  # 999 means the amount is unknown
    assert len(resources(m, "Observation")) == 4
    counts = Counter(e["request"]["method"] for e in m.entries)
    assert set(counts) <= {"PUT", "POST"}


def test_patient_identifiers_by_type_and_authority() -> None:
    m = mapped(
        "PID|1||A1^^^HOSP^MR~11010519491231002X^^^CHN^NNCHN~E1234567^^^CHN^PPN~B2^^^^MR~C3^^^LAB&2.16.840.1.1&ISO^XX||Li^Lei||19491231|F"
    )
    (p,) = resources(m, "Patient")
    systems = {i["value"]: i["system"] for i in p["identifier"]}
    assert systems["A1"] == naming.mrn_system("HOSP")
    assert systems["11010519491231002X"] == naming.PRC_RESIDENT_ID
    assert systems["E1234567"] == naming.passport_system("CHN")
    assert systems["B2"] == naming.mrn_system("H1")  # no authority: the sending facility's MRN
    assert systems["C3"] == "urn:oid:2.16.840.1.1"
    put = next(e for e in m.entries if e["resource"] is p)["request"]
    assert put == {"method": "PUT", "url": f"Patient?identifier={naming.mrn_system('HOSP')}|A1"}


def test_null_values_and_comparators() -> None:
    m = mapped(
        'PID|1||A1^^^HOSP^MR||Li^Lei||""|""',
        "OBR|1|P1|F1|GLU^Glucose^L|||20261203",
        "OBX|1|NM|GLU^Glucose^L||<0.5|mmol/L|3.9-6.1|L|||F",
        type_="ORU^R01",
    )
    (p,) = resources(m, "Patient")
    assert "birthDate" not in p and "gender" not in p
    (obs,) = resources(m, "Observation")
    assert obs["valueQuantity"] == {
        "value": 0.5,
        "comparator": "<",
        "unit": "mmol/L",
        "system": naming.UCUM,
        "code": "mmol/L",
    }
    assert obs["referenceRange"][0]["low"] == {"value": 3.9}
    assert obs["effectiveDateTime"] == "2026-12-03"
    (report,) = resources(m, "DiagnosticReport")
    assert report["result"] == [{"reference": next(e["fullUrl"] for e in m.entries if e["resource"] is obs)}]


@pytest.mark.parametrize(
    ("segments", "type_", "where", "code"),
    [
        (["PID|1||A1^^^H^MR||X||19881332"], "ADT^A04", ("PID", 7), "102"),
        (["PID|1"], "ADT^A08", ("PID", 3), "101"),
        (["PID|1||A1^^^H^MR", "OBR|1|P1||GLU^G^L", "OBX|1|NM|GLU^G^L||abc"], "ORU^R01", ("OBX", 5), "102"),
        (["PID|1||A1^^^H^MR", "ORC|RE", "RXA|0|1|20260101||^^CVX"], "VXU^V04", ("RXA", 5), "101"),
    ],
)
def test_content_errors_are_located(
    segments: list[str], type_: str, where: tuple[str, int], code: str
) -> None:
    with pytest.raises(Hl7Error) as info:
        mapped(*segments, type_=type_)
    assert (info.value.segment, info.value.field) == where and info.value.code == code
    assert info.value.ack_code == "AE"


@pytest.mark.parametrize(("type_", "code"), [("QRY^Q01", "200"), ("ADT^A99", "201"), ("", "101")])
def test_unsupported_types_are_rejected(type_: str, code: str) -> None:
    with pytest.raises(Hl7Error) as info:
        mapped("PID|1||A1^^^H^MR", type_=type_)
    assert info.value.code == code and info.value.ack_code == "AR"


def test_merge_pairs() -> None:
    m = to_fhir(parse((MESSAGES / "ADT-A40-01.hl7").read_bytes()))
    ((survivor, old, _),) = m.merges
    assert survivor == {"system": naming.mrn_system("BCBS"), "value": "12345"}
    assert old["system"] == naming.mrn_system("BCBS") and old["value"] == "56789"


def test_cancel_events_set_status() -> None:
    pv1 = "PV1|1|I|||||||||||||||||V1^^^H^VN"
    for event, status in (
        ("A11", "cancelled"),
        ("A13", "in-progress"),
        ("A05", "planned"),
        ("A03", "finished"),
    ):
        (enc,) = resources(mapped("PID|1||A1^^^H^MR", pv1, type_=f"ADT^{event}"), "Encounter")
        assert enc["status"] == status, event
    sch = "SCH|S1|S2||||Routine^Routine|||30|min|^^^20261204090000^20261204093000"
    (appt,) = resources(mapped(sch, "PID|1||A1^^^H^MR", type_="SIU^S15"), "Appointment")
    assert appt["status"] == "cancelled" and appt["start"] == "2026-12-04T09:00:00+08:00"
    (sr,) = resources(mapped("RF1|A|R|Med||O|R1^HIS", "PID|1||A1^^^H^MR", type_="REF^I14"), "ServiceRequest")
    assert sr["status"] == "revoked"
