"""The HL7 v2 events beyond the core set that hospital systems send every day: the rest of the
ADT visit and person events, appointment discontinuation and deletion, problem lists (PPR),
pharmacy orders and dispenses (RDE, RDS), general and specimen orders without an order number
(OMG, OUL), and results without an observation identifier — sent by a real MLLP client to the
listener, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.mllp import ack_fields, patient, pv1, search, send
from yilian.db import Database
from yilian.kernel import naming

V2 = naming.PLATFORM_SID + "v2/"


def accepted(port: int, raw: str) -> None:
    ack = ack_fields(send(port, raw.encode()))
    assert ack["MSA"][1] == "AA", ack


def one(db: Database, kind: str, system: str, value: str) -> dict[str, Any]:
    found = search(db, kind, identifier=f"{system}|{value}")
    assert len(found) == 1, found
    return found[0]


def msh(kind: str, control: str, facility: str) -> str:
    return f"MSH|^~\\&|HIS|{facility}|Y|C|20261205101500||{kind}|{control}|P|2.5\r"


def adt(event: str, control: str, facility: str, pid: str, *segments: str) -> str:
    return msh(f"ADT^{event}", control, facility) + f"EVN|{event}|20261205101500\r{pid}" + "".join(segments)


# --- ADT visit events ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "klass", "status"),
    [
        ("A06", "I", "in-progress"),  # outpatient to inpatient
        ("A07", "O", "in-progress"),  # inpatient to outpatient
        ("A09", "I", "in-progress"),  # patient departing (tracking)
        ("A10", "I", "in-progress"),  # patient arriving (tracking)
        ("A12", "I", "in-progress"),  # cancel transfer
        ("A14", "I", "planned"),  # pending admit
        ("A15", "I", "in-progress"),  # pending transfer: not made yet
        ("A16", "I", "in-progress"),  # pending discharge: not made yet
        ("A25", "I", "in-progress"),  # cancel pending discharge
        ("A26", "I", "in-progress"),  # cancel pending transfer
        ("A27", "I", "cancelled"),  # cancel pending admit
        ("A45", "I", "in-progress"),  # move visit information
    ],
)
def test_visit_events_keep_the_visit_as_the_event_says(
    db: Database, port: int, event: str, klass: str, status: str
) -> None:
    fac = f"V{event}"
    pid = f"PID|1||{event}-P^^^{fac}^MR||Li^Na||19800202|F\r"
    visit = pv1({2: klass, 3: "W3^301^2", 19: f"{event}-V^^^{fac}^VN"})
    accepted(port, adt(event, f"{event}-1", fac, pid, visit))
    encounter = one(db, "Encounter", naming.visit_number_system(fac), f"{event}-V")
    assert encounter["status"] == status
    assert encounter["class"]["code"] == {"I": "IMP", "O": "AMB"}[klass]
    person = patient(db, naming.mrn_system(fac), f"{event}-P")
    assert encounter["subject"]["reference"] == f"Patient/{person['id']}"


def test_a06_changes_an_outpatient_visit_to_an_inpatient_one(db: Database, port: int) -> None:
    pid = "PID|1||CV1^^^CV^MR||Zhou^Min||19660606|M\r"
    accepted(port, adt("A04", "CV-1", "CV", pid, pv1({2: "O", 19: "CVV^^^CV^VN"})))
    before = one(db, "Encounter", naming.visit_number_system("CV"), "CVV")
    accepted(port, adt("A06", "CV-2", "CV", pid, pv1({2: "I", 3: "W9^901^1", 19: "CVV^^^CV^VN"})))
    after = one(db, "Encounter", naming.visit_number_system("CV"), "CVV")
    assert after["id"] == before["id"] and before["class"]["code"] == "AMB"
    assert after["class"]["code"] == "IMP" and after["status"] == "in-progress"


def test_a29_takes_the_person_out_of_use_without_deleting_anything(db: Database, port: int) -> None:
    pid = "PID|1||DP1^^^DP^MR||Qin^Hao||19900909|M\r"
    accepted(port, adt("A28", "DP-1", "DP", pid))
    created = patient(db, naming.mrn_system("DP"), "DP1")
    assert created["active"] is True
    accepted(port, adt("A29", "DP-2", "DP", pid))
    kept = patient(db, naming.mrn_system("DP"), "DP1")
    assert kept["id"] == created["id"] and kept["active"] is False


def test_a41_and_a60_update_the_person(db: Database, port: int) -> None:
    accepted(port, adt("A28", "PU-1", "PU", "PID|1||PU1^^^PU^MR||Fang^Yu||19850505|F\r"))
    accepted(
        port,
        adt("A41", "PU-2", "PU", "PID|1||PU1^^^PU^MR||Fang^Yuting||19850505|F\r", "MRG|PU1^^^PU^MR||AC-9\r"),
    )
    assert patient(db, naming.mrn_system("PU"), "PU1")["name"][0]["given"] == ["Yuting"]
    accepted(
        port,
        adt(
            "A60",
            "PU-3",
            "PU",
            "PID|1||PU1^^^PU^MR||Fang^Yuting||19850506|F\r",
            "IAM|1|DA|70618^Penicillin^RXNORM|SV|hives|A\r",
        ),
    )
    assert patient(db, naming.mrn_system("PU"), "PU1")["birthDate"] == "1985-05-06"


def test_a47_moves_the_record_to_its_corrected_identifier(db: Database, port: int) -> None:
    """The record under the wrong number (MRG-1) becomes the one under the right number (PID-3):
    kept, inactive, replaced-by it, and what referred to it follows."""
    accepted(
        port,
        adt("A04", "CI-1", "CI", "PID|1||WRONG1^^^CI^MR||Tang^Li||19710707|F\r", pv1({19: "CIV^^^CI^VN"})),
    )
    old = patient(db, naming.mrn_system("CI"), "WRONG1")
    accepted(
        port,
        adt("A47", "CI-2", "CI", "PID|1||RIGHT1^^^CI^MR||Tang^Li||19710707|F\r", "MRG|WRONG1^^^CI^MR\r"),
    )
    new = patient(db, naming.mrn_system("CI"), "RIGHT1")
    (old,) = search(db, "Patient", _id=old["id"])
    assert new["id"] != old["id"] and new["active"] is True
    assert old["active"] is False
    assert {"other": {"reference": f"Patient/{new['id']}"}, "type": "replaced-by"} in old["link"]
    visit = one(db, "Encounter", naming.visit_number_system("CI"), "CIV")
    assert visit["subject"]["reference"] == f"Patient/{new['id']}"


# --- SIU ------------------------------------------------------------------------------------------


def siu(event: str, control: str, appointment: str) -> str:
    return (
        msh(f"SIU^{event}", control, "AP")
        + f"SCH|{appointment}^AP|{appointment}^AP||||CANCEL^Patient request|||30|min|^^30^20261210090000^20261210093000\r"
        + "PID|1||AP1^^^AP^MR||Gao^Jing||19920202|F\r"
        + "AIP|1||D01^Sun^Li\r"
    )


@pytest.mark.parametrize(("event", "status"), [("S16", "cancelled"), ("S17", "entered-in-error")])
def test_an_appointment_discontinued_or_deleted(db: Database, port: int, event: str, status: str) -> None:
    number = f"AP-{event}"
    accepted(port, siu("S12", f"{number}-1", number))
    booked = one(db, "Appointment", f"{V2}appointment/AP", number)
    assert booked["status"] == "booked"
    accepted(port, siu(event, f"{number}-2", number))
    changed = one(db, "Appointment", f"{V2}appointment/AP", number)
    assert changed["id"] == booked["id"] and changed["status"] == status
    patient_part = next(
        p for p in changed["participant"] if p["actor"].get("reference", "").startswith("Patient/")
    )
    assert patient_part["status"] == "declined"


# --- PPR problem lists ------------------------------------------------------------------------------


def segment(name: str, fields: dict[int, str]) -> str:
    values = [name] + [""] * max(fields)
    for n, v in fields.items():
        values[n] = v
    return "|".join(values) + "\r"


def ppr(event: str, control: str, action: str, status: str, note: str = "", resolved: str = "") -> str:
    prb = {1: action, 2: "20261205100000", 3: "E11.9^2型糖尿病^I10", 4: "PRB-77^PR", 7: "20261201"}
    prb.update({9: resolved, 14: status, 16: "20200101"})
    return (
        msh(f"PPR^{event}", control, "PR")
        + "PID|1||PR1^^^PR^MR||He^Jun||19580303|M\r"
        + segment("PRB", prb)
        + (f"NTE|1||{note}\r" if note else "")
    )


def test_a_problem_is_added_updated_and_deleted_as_one_condition(db: Database, port: int) -> None:
    accepted(port, ppr("PC1", "PR-1", "AD", "ACTIVE"))
    added = one(db, "Condition", f"{V2}problem/PR", "PRB-77")
    assert added["clinicalStatus"]["coding"][0]["code"] == "active"
    assert added["code"]["coding"][0]["code"] == "E11.9" and added["onsetDateTime"] == "2020-01-01"
    assert added["category"][0]["coding"][0]["code"] == "problem-list-item"
    accepted(port, ppr("PC2", "PR-2", "UP", "", note="resolved after treatment", resolved="20261204"))
    updated = one(db, "Condition", f"{V2}problem/PR", "PRB-77")
    assert updated["id"] == added["id"]
    assert updated["clinicalStatus"]["coding"][0]["code"] == "resolved"
    assert updated["abatementDateTime"] == "2026-12-04" and updated["note"] == [
        {"text": "resolved after treatment"}
    ]
    accepted(port, ppr("PC3", "PR-3", "DE", "Deleted", note="recorded on the wrong patient"))
    deleted = one(db, "Condition", f"{V2}problem/PR", "PRB-77")
    assert deleted["id"] == added["id"] and "clinicalStatus" not in deleted
    assert deleted["verificationStatus"]["coding"][0]["code"] == "entered-in-error"


# --- pharmacy ------------------------------------------------------------------------------------


PHARMACY_PID = "PID|1||RX1^^^RX^MR||Ma^Lan||19770707|F\r"
ORDER = "ORC|NW|RX-ORD-1^RX||||||||20261205090000|||D07^Xu^Feng\r"
# RXE-2 give code, -3 amount, -5 units, -6 dosage form, -7 instructions, -10/-11 dispense amount
# and units, -12 refills.
RXE = segment(
    "RXE",
    {
        2: "0093-1049^阿莫西林胶囊 0.25g^NDC",
        3: "0.5",
        5: "g^g",
        6: "CAP^capsule",
        7: "^每日三次，饭后口服",
        10: "21",
        11: "CAP^capsule",
        12: "2",
    },
)


def test_a_pharmacy_order_and_its_dispense(db: Database, port: int) -> None:
    accepted(port, msh("RDE^O11", "RX-1", "RX") + PHARMACY_PID + ORDER + RXE + "RXR|PO^口服^HL70162\r")
    request = one(db, "MedicationRequest", f"{V2}order/RX", "RX-ORD-1")
    assert request["status"] == "active" and request["intent"] == "order"
    assert request["medicationCodeableConcept"]["coding"][0]["code"] == "0093-1049"
    dosage = request["dosageInstruction"][0]
    assert dosage["text"] == "每日三次，饭后口服" and dosage["route"]["coding"][0]["code"] == "PO"
    assert dosage["doseAndRate"][0]["doseQuantity"] == {"value": 0.5, "unit": "g"}
    assert request["dispenseRequest"] == {
        "quantity": {"value": 21, "unit": "capsule"},
        "numberOfRepeatsAllowed": 2,
    }
    person = patient(db, naming.mrn_system("RX"), "RX1")
    assert request["subject"]["reference"] == f"Patient/{person['id']}"
    dispense = (
        msh("RDS^O13", "RX-2", "RX")
        + PHARMACY_PID
        + ORDER
        + RXE
        + "RXD|1|0093-1049^阿莫西林胶囊 0.25g^NDC|20261205103000|21|CAP^capsule||RX-ORD-1\r"
    )
    accepted(port, dispense)
    assert one(db, "MedicationRequest", f"{V2}order/RX", "RX-ORD-1")["id"] == request["id"]
    handed = one(db, "MedicationDispense", f"{V2}dispense/RX", "RX-ORD-1/1")
    assert handed["status"] == "completed"
    assert handed["authorizingPrescription"] == [{"reference": f"MedicationRequest/{request['id']}"}]
    assert handed["quantity"] == {"value": 21, "unit": "capsule"}
    assert handed["whenHandedOver"] == "2026-12-05T10:30:00+08:00"


# --- orders without numbers, specimen results, results without an identifier ----------------------


def test_an_order_without_a_number_is_kept_under_its_message(db: Database, port: int) -> None:
    message = (
        msh("OMG^O19", "NN-1", "NN")
        + "PID|1||NN1^^^NN^MR||Lu^Bo||19880808|M\r"
        + "ORC|NW|||GRP-1^NN\r"
        + "OBR|1|||24627-2^Chest CT^LN\r"
        + "ORC|NW|||GRP-1^NN\r"
        + "OBR|2|||30746-2^Chest X-ray^LN\r"
    )
    accepted(port, message)
    requests = search(db, "ServiceRequest", identifier=f"{V2}order/NN/message|")
    codes = {
        r["code"]["coding"][0]["code"] for r in requests if r["subject"]["reference"].startswith("Patient/")
    }
    assert {"24627-2", "30746-2"} <= codes
    ours = [r for r in requests if any(i["value"].startswith("NN-1/") for i in r["identifier"])]
    assert len(ours) == 2
    accepted(port, message)  # the same message again: a re-send, nothing new
    again = [
        r
        for r in search(db, "ServiceRequest", identifier=f"{V2}order/NN/message|")
        if any(i["value"].startswith("NN-1/") for i in r["identifier"])
    ]
    assert sorted(r["id"] for r in again) == sorted(r["id"] for r in ours)


def test_specimen_results_and_a_result_without_an_identifier(db: Database, port: int) -> None:
    message = (
        msh("OUL^R22", "SP-1", "SP")
        + "PID|1||SP1^^^SP^MR||Yu^Xin||19950505|F\r"
        + "SPM|1|SPC-1&SP||BLD^Blood^HL70487\r"
        + "OBR|1|SP-ORD-1^SP||57021-8^CBC panel^LN\r"
        + "ORC|SC|SP-ORD-1^SP\r"
        + "OBX|1|NM|718-7^Hemoglobin^LN||132|g/L|115-150|N|||F\r"
        + "OBX|2|ED|||^AP^PDF^Base64^JVBERi0xLjQK||||||F\r"
        + "OBX|3|ST|||||||||F\r"
    )
    accepted(port, message)
    found = search(db, "Observation", subject=f"Patient/{patient(db, naming.mrn_system('SP'), 'SP1')['id']}")
    coded = [o for o in found if (o["code"].get("coding") or [{}])[0].get("code") == "718-7"]
    assert len(coded) == 1 and coded[0]["valueQuantity"]["value"] == 132
    # The attachment had no OBX-3: kept, its code marked unknown; the empty OBX-3 made nothing.
    unknown = [o for o in found if "coding" not in o["code"]]
    assert len(unknown) == 1 and len(found) == 2
    assert unknown[0]["code"]["extension"][0]["valueCode"] == "unknown"


def test_an_order_whose_obr_has_no_orc(db: Database, port: int) -> None:
    """Older senders (or an ORC lost to a missing segment separator) give an OBR on its own:
    the order its OBR-2 placer number names."""
    message = (
        msh("OML^O21", "NO-1", "NO")
        + "PID|1||NO1^^^NO^MR||Pan^Yue||19930303|F\r"
        + "GT1|1||Pan^Hua\r"
        + "OBR|1|NO-ORD-9^NO||6532-6^Rabies Ab^LN|||20261205090000\r"
        + "NTE|1||urgent\r"
    )
    accepted(port, message)
    order = one(db, "ServiceRequest", f"{V2}order/NO", "NO-ORD-9")
    assert order["code"]["coding"][0]["code"] == "6532-6" and order["note"] == [{"text": "urgent"}]


def test_allergies_sent_with_the_patient(db: Database, port: int) -> None:
    """AL1 (with an admission, an update) and IAM (A60) as AllergyIntolerance: one per patient
    and allergen however often the message repeats it; an IAM delete keeps it, entered in error."""
    pid = "PID|1||AL1P^^^AL^MR||Wen^Jing||19810101|F\r"
    al1 = "AL1|1|DA^Drug allergy^HL70127|Z01^青霉素^L|SV^Severe^HL70128|皮疹~呼吸困难|20200301\r"
    accepted(port, adt("A04", "AL-1", "AL", pid, pv1({19: "ALV^^^AL^VN"}), al1))
    accepted(port, adt("A08", "AL-2", "AL", pid, pv1({19: "ALV^^^AL^VN"}), al1))
    person = patient(db, naming.mrn_system("AL"), "AL1P")
    [allergy] = search(db, "AllergyIntolerance", patient=f"Patient/{person['id']}")
    assert allergy["code"]["coding"][0]["code"] == "Z01" and allergy["category"] == ["medication"]
    assert allergy["criticality"] == "high" and allergy["clinicalStatus"]["coding"][0]["code"] == "active"
    assert allergy["reaction"] == [
        {"manifestation": [{"text": "皮疹"}, {"text": "呼吸困难"}], "severity": "severe"}
    ]
    assert allergy["recordedDate"] == "2020-03-01" and allergy["meta"]["versionId"] == "2"
    # A60 with IAM: the allergy the sender identifies, then deleted by it.
    iam = "IAM|1|FA^Food allergy^HL70127|P01^花生^L|MO|荨麻疹|{action}|ALG-7^AL||||20190101||20190105\r"
    accepted(port, adt("A60", "AL-3", "AL", pid, iam.format(action="A")))
    food = one(db, "AllergyIntolerance", f"{V2}allergy/AL", "ALG-7")
    assert food["category"] == ["food"] and food["onsetDateTime"] == "2019-01-01"
    accepted(port, adt("A60", "AL-4", "AL", pid, iam.format(action="D")))
    gone = one(db, "AllergyIntolerance", f"{V2}allergy/AL", "ALG-7")
    assert gone["id"] == food["id"] and "clinicalStatus" not in gone
    assert gone["verificationStatus"]["coding"][0]["code"] == "entered-in-error"
    assert len(search(db, "AllergyIntolerance", patient=f"Patient/{person['id']}")) == 2


def test_a_problem_without_an_instance_id_is_one_condition_per_code(db: Database, port: int) -> None:
    prb = {1: "AD", 2: "20261205100000", 3: "I10^高血压^I10", 14: "ACTIVE"}
    message = msh("PPR^PC1", "PN-1", "PN") + "PID|1||PN1^^^PN^MR||Du^Fu||19500101|M\r" + segment("PRB", prb)
    accepted(port, message)
    accepted(port, message.replace("|PN-1|", "|PN-2|").replace("ACTIVE", "INACTIVE"))
    person = patient(db, naming.mrn_system("PN"), "PN1")
    [condition] = search(db, "Condition", patient=f"Patient/{person['id']}")
    assert condition["clinicalStatus"]["coding"][0]["code"] == "inactive"
