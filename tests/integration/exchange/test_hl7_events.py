"""What each HL7 v2 event does to the stored FHIR resources: transfers, pre-admissions, person
updates, reschedules, referrals and their changes, orders, and the practitioners they name —
sent by a real MLLP client to the listener, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from tests.support.mllp import MESSAGES, ack_fields, patient, pv1, search, send, send_at_once, written
from yilian.db import Database
from yilian.kernel import naming

V2 = naming.PLATFORM_SID + "v2/"


def accepted(port: int, raw: str | bytes) -> None:
    message = raw.encode() if isinstance(raw, str) else raw
    ack = ack_fields(send(port, message))
    assert ack["MSA"][1] == "AA", ack


def one(db: Database, kind: str, system: str, value: str) -> dict[str, Any]:
    found = search(db, kind, identifier=f"{system}|{value}")
    assert len(found) == 1, found
    return found[0]


def ref(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def adt(event: str, control: str, facility: str, pid: str, *segments: str) -> str:
    return (
        f"MSH|^~\\&|HIS|{facility}|Y|C|20261203101500||ADT^{event}|{control}|P|2.5\r"
        f"EVN|{event}|20261203101500\r{pid}" + "".join(segments)
    )


# --- ADT ------------------------------------------------------------------------------------------


def test_a02_moves_the_encounter_to_its_new_location(db: Database, port: int) -> None:
    pid = "PID|1||TR1^^^TR^MR||Zhao^Lei||19750101|M\r"
    visit = {19: "TV1^^^TR^VN", 7: "D01^Qian^Yi"}
    accepted(port, adt("A01", "TR-1", "TR", pid, pv1({**visit, 3: "W5^501^1", 44: "20261201080000"})))
    before = one(db, "Encounter", naming.visit_number_system("TR"), "TV1")
    # The transfer: the new bed in PV1-3, the one left in PV1-6; no admission time this time.
    accepted(port, adt("A02", "TR-2", "TR", pid, pv1({**visit, 3: "W7^702^3", 6: "W5^501^1"})))
    after = one(db, "Encounter", naming.visit_number_system("TR"), "TV1")
    assert after["id"] == before["id"]
    assert after["meta"]["versionId"] == "2"
    assert after["status"] == "in-progress"
    active = [loc["location"]["display"] for loc in after["location"] if loc.get("status") == "active"]
    assert active == ["W7/702/3"]
    assert after["period"] == {"start": "2026-12-01T08:00:00+08:00"}  # kept from the admission
    assert after["participant"] == before["participant"]


def test_a05_pre_admits_a_planned_visit_that_the_admission_starts(db: Database, port: int) -> None:
    pid = "PID|1||PA1^^^PA^MR||Sun^Quan||19600101|M\r"
    accepted(port, adt("A05", "PA-1", "PA", pid, pv1({2: "P", 3: "W2^201^1", 19: "PV5^^^PA^VN"})))
    planned = one(db, "Encounter", naming.visit_number_system("PA"), "PV5")
    assert planned["status"] == "planned"
    assert planned["class"] == {"system": naming.V3_ACT_CODE, "code": "PRENC"}
    person = patient(db, naming.mrn_system("PA"), "PA1")
    assert planned["subject"]["reference"] == ref(person)
    accepted(
        port, adt("A01", "PA-2", "PA", pid, pv1({3: "W2^201^1", 19: "PV5^^^PA^VN", 44: "20261203090000"}))
    )
    admitted = one(db, "Encounter", naming.visit_number_system("PA"), "PV5")
    assert admitted["id"] == planned["id"]
    assert admitted["status"] == "in-progress" and admitted["class"]["code"] == "IMP"
    assert admitted["period"]["start"] == "2026-12-03T09:00:00+08:00"


def test_a31_updates_the_person_and_nothing_else(db: Database, port: int) -> None:
    accepted(port, adt("A28", "UP-1", "UP", "PID|1||UP1^^^UP^MR||Wu^Gang||19700101|M\r"))
    first = patient(db, naming.mrn_system("UP"), "UP1")
    update = adt(
        "A31",
        "UP-2",
        "UP",
        "PID|1||UP1^^^UP^MR||Wu^Gangqiang||19700102|M|||中山路8号^^杭州市^浙江省^310000^CHN^H||13800001111^PRN^CP\r",
        pv1({19: "UV1^^^UP^VN", 44: "20261203080000"}),
        "OBX|1|NM|8867-4^Heart rate^LN||72|/min\r",
    )
    accepted(port, update)
    now = patient(db, naming.mrn_system("UP"), "UP1")
    assert now["id"] == first["id"] and now["meta"]["versionId"] == "2"
    assert now["name"][0]["family"] == "Wu" and now["name"][0]["given"] == ["Gangqiang"]
    assert now["birthDate"] == "1970-01-02"
    assert now["address"][0]["city"] == "杭州市" and now["address"][0]["postalCode"] == "310000"
    assert now["telecom"][0]["value"] == "13800001111"
    # A person update is not a visit: its PV1 and OBX are not stored.
    assert not search(db, "Encounter", identifier=f"{naming.visit_number_system('UP')}|UV1")
    assert not search(db, "Observation", subject=ref(now))
    # The shared A31 does the same: the Patient (and its sender) only, although it has PV1 and OBX.
    shared = (MESSAGES / "ADT-A31-01.hl7").read_bytes()
    accepted(port, shared)
    kinds = {r["resourceType"] for r in written(db, shared)}
    assert "Patient" in kinds and not kinds & {"Encounter", "Observation", "Practitioner"}
    person = patient(db, naming.mrn_system("test1"), "PATID1234")
    assert person["name"][0]["family"] == "EVERYMAN" and person["birthDate"] == "1988-08-18"


# --- SIU ------------------------------------------------------------------------------------------


def test_s13_reschedules_the_appointment(db: Database, port: int) -> None:
    booked = (MESSAGES / "SIU-S12-01.hl7").read_bytes().replace(b"SCH|12345|36996|", b"SCH|RS-1|RS-13|")
    accepted(port, booked)
    system = f"{V2}appointment/GHHSFacility"
    first = one(db, "Appointment", system, "RS-13")
    assert (first["start"], first["end"]) == ("2021-09-24T09:30:00+02:15", "2021-09-24T10:20:00+02:15")
    moved = (
        booked.replace(b"SIU^S12^SIU_S12|MSG00012|", b"SIU^S13^SIU_S13|RS-MOVE-1|")
        .replace(b"TQ1|||||||20210924093000+0215|20210924102000+0215", b"TQ1|||||||20211001140000+0215|20211001145000+0215")
    )  # fmt: skip
    accepted(port, moved)
    now = one(db, "Appointment", system, "RS-13")
    assert now["id"] == first["id"]
    assert (now["start"], now["end"]) == ("2021-10-01T14:00:00+02:15", "2021-10-01T14:50:00+02:15")
    assert now["status"] == "booked"
    person = patient(db, naming.mrn_system("test1"), "PATID1234")
    assert {"actor": {"reference": ref(person)}, "status": "accepted"} in now["participant"]


# --- REF ------------------------------------------------------------------------------------------


def test_the_shared_ref_i12_makes_a_referral_request_and_its_task(db: Database, port: int) -> None:
    """SOURCE.md item 6: REF^I12 creates a ServiceRequest (the referral) and a Task."""
    raw = (MESSAGES / "REF-I12-01.hl7").read_bytes()
    accepted(port, raw)
    person = patient(db, naming.mrn_system("ADT1"), "PATID1234")
    referral = one(db, "ServiceRequest", f"{V2}referral/EPIC", "226839")  # RF1-6
    referring = one(db, "Practitioner", f"{V2}staff/GHHSFacility", "PLN1001")  # PRD RP
    referred_to = one(db, "Practitioner", f"{V2}staff/GHHSFacility", "PLN5010")  # PRD RT
    assert referring["name"][0]["family"] == "POWELL" and referred_to["name"][0]["family"] == "McWILLIAMS"
    assert referral["category"][0]["coding"][0]["code"] == "3457005"  # SNOMED: patient referral
    assert (referral["status"], referral["intent"], referral["priority"]) == ("active", "order", "routine")
    assert referral["subject"] == {"reference": ref(person)}
    assert referral["requester"] == {"reference": ref(referring)}
    assert referral["performer"] == [{"reference": ref(referred_to)}]
    assert referral["authoredOn"] == "2022-01-25"
    assert referral["reasonCode"][0]["coding"][0]["code"] == "O"  # RF1-10, provider ordered
    task = one(db, "Task", f"{V2}referral-task/EPIC", "226839")
    assert (task["status"], task["intent"]) == ("requested", "order")
    assert task["code"]["coding"][0]["code"] == "fulfill"
    assert task["focus"] == {"reference": ref(referral)} and task["basedOn"] == [{"reference": ref(referral)}]
    assert task["for"] == {"reference": ref(person)}
    assert task["requester"] == {"reference": ref(referring)} and task["owner"] == {
        "reference": ref(referred_to)
    }
    # The test sent along (OBR/OBX) is reported as an ORU's would be; OBR-32 is an NDL, whose
    # name is "005454&MARK" and whose "LABUnit02^Room02" is a place, not the person's name.
    (report,) = search(db, "DiagnosticReport", subject=ref(person), code="http://loinc.org|22310-7")
    (interpreter,) = report["resultsInterpreter"]
    reader = search(db, "Practitioner", _id=interpreter["reference"].split("/")[1])[0]
    assert reader["name"] == [{"family": "MARK"}]
    assert reader["identifier"][0] == {"system": f"{V2}staff/GHHSFacility", "value": "005454"}
    (result,) = report["result"]
    found = search(db, "Observation", _id=result["reference"].split("/")[1])[0]
    assert found["valueString"] == "Positive" and found["code"]["coding"][0]["code"] == "22310-7"


def test_ref_i13_changes_and_i14_cancels_the_same_referral(db: Database, port: int) -> None:
    new = (MESSAGES / "REF-I12-01.hl7").read_bytes().replace(b"|226839^EPIC|", b"|R-613^EPIC|")
    new = new.replace(b"|MSG00112|", b"|REF-613-1|")
    accepted(port, new)
    first = one(db, "ServiceRequest", f"{V2}referral/EPIC", "R-613")
    task = one(db, "Task", f"{V2}referral-task/EPIC", "R-613")
    # I13: the referral is now urgent (RF1-2 S, stat).
    changed = new.replace(b"REF^I12^REF_I12|REF-613-1|", b"REF^I13^REF_I13|REF-613-2|")
    changed = changed.replace(
        b"RF1|P^Pending^HL70283|R^Routine^HL70280|", b"RF1|P^Pending^HL70283|S^Stat^HL70280|"
    )
    accepted(port, changed)
    now = one(db, "ServiceRequest", f"{V2}referral/EPIC", "R-613")
    assert now["id"] == first["id"] and now["meta"]["versionId"] == "2"
    assert (now["priority"], now["status"]) == ("stat", "active")
    assert one(db, "Task", f"{V2}referral-task/EPIC", "R-613")["id"] == task["id"]
    # I14 (the shared one, under this referral's number): cancelled, and its Task with it.
    cancel = (MESSAGES / "REF-I14-01.hl7").read_bytes().replace(b"|226839^EPIC|", b"|R-613^EPIC|")
    accepted(port, cancel.replace(b"|MSG00112|", b"|REF-613-3|"))
    assert one(db, "ServiceRequest", f"{V2}referral/EPIC", "R-613")["status"] == "revoked"
    cancelled = one(db, "Task", f"{V2}referral-task/EPIC", "R-613")
    assert cancelled["id"] == task["id"] and cancelled["status"] == "cancelled"
    assert len(search(db, "ServiceRequest", identifier=f"{V2}referral/EPIC|R-613")) == 1


# --- orders ---------------------------------------------------------------------------------------


def test_orm_and_oml_orders_are_service_requests(db: Database, port: int) -> None:
    accepted(port, (MESSAGES / "ORM-O01-01.hl7").read_bytes())
    person = patient(db, naming.mrn_system("test1"), "PATID1234")
    orderer = one(db, "Practitioner", f"{V2}staff/GHHSFacility", "3850")  # ORC-12
    assert orderer["name"][0]["family"] == "ORDPROVIDER"
    visit = one(db, "Encounter", naming.visit_number_system("AccMgr"), "5001")
    ct = one(db, "ServiceRequest", f"{V2}order/GHHPlacer", "1101")  # ORC-2
    assert ct["code"]["coding"][0] == {"code": "24725-4", "system": "http://loinc.org", "display": "CT Head"}
    assert (ct["status"], ct["intent"]) == ("active", "order")  # ORC-1 NW
    assert ct["subject"] == {"reference": ref(person)} and ct["encounter"] == {"reference": ref(visit)}
    assert ct["requester"]["reference"] == ref(orderer)
    assert ct["authoredOn"] == "2021-10-20T11:26:00+02:15"
    assert ct["reasonCode"][0]["coding"][0]["code"] == "S06.9"  # DG1
    # The shared OML reuses the ORM's placer number (1101 of GHHPlacer), which would make it the
    # same order: sent under its own number it is a second ServiceRequest.
    oml = (MESSAGES / "OML-O21-01.hl7").read_bytes().replace(b"|1101^GHHPlacer|", b"|2101^GHHPlacer|")
    accepted(port, oml)
    lipids = one(db, "ServiceRequest", f"{V2}order/GHHPlacer", "2101")
    assert lipids["code"]["coding"][0]["code"] == "57698-3"
    assert lipids["subject"] == {"reference": ref(person)}
    assert lipids["requester"]["reference"] == ref(orderer)  # the same person, not a copy
    assert lipids["priority"] == "routine"  # TQ1-9 R
    assert lipids["note"][0]["text"] == "Urgent"
    assert lipids["reasonCode"][0]["coding"][0]["code"] == "E10.9"
    assert len(lipids["supportingInfo"]) == 4  # its OBX
    assert one(db, "ServiceRequest", f"{V2}order/GHHPlacer", "1101")["code"]["coding"][0]["code"] == "24725-4"
    for staff in ("3850", "0210", "0310", "03410"):  # ORC-12, PV1-7, PV1-8, PV1-17 of both messages
        assert len(search(db, "Practitioner", identifier=f"{V2}staff/GHHSFacility|{staff}")) == 1, staff


def test_a_practitioner_named_by_several_messages_is_one_practitioner(db: Database, port: int) -> None:
    doctor = "D77^Lin^Hui^^^Dr"
    pid = "PID|1||PR{n}^^^PR^MR||Ma^Li{n}||19800101|F\r"
    admit = adt("A01", "PR-1", "PR", pid.format(n=1), pv1({7: doctor, 19: "PRV1^^^PR^VN"}))
    accepted(port, admit)
    order = (
        "MSH|^~\\&|HIS|PR|Y|C|20261203||ORM^O01|PR-2|P|2.5\r" + pid.format(n=1)
        + f"ORC|NW|PO-1^PR||||||||||{doctor}\rOBR|1|PO-1^PR||GLU^Glucose^L\r"
    )  # fmt: skip
    accepted(port, order)
    (lin,) = search(db, "Practitioner", identifier=f"{V2}staff/PR|D77")
    assert lin["name"][0] == {"family": "Lin", "given": ["Hui"], "prefix": ["Dr"]}
    visit = one(db, "Encounter", naming.visit_number_system("PR"), "PRV1")
    assert visit["participant"][0]["individual"]["reference"] == ref(lin)
    assert one(db, "ServiceRequest", f"{V2}order/PR", "PO-1")["requester"]["reference"] == ref(lin)
    # Four messages at once naming a doctor the platform has never seen: still one Practitioner.
    racing = [
        adt(
            "A04",
            f"PR-RACE-{n}",
            "PR",
            pid.format(n=n + 10),
            pv1({7: "D78^Xu^Fang", 19: f"PRV{n + 10}^^^PR^VN"}),
        )
        for n in range(4)
    ]
    replies = send_at_once(port, [raw.encode() for raw in racing])
    assert sorted(ack_fields(r)["MSA"][1] for r in replies) == ["AA"] * 4
    assert len(search(db, "Practitioner", identifier=f"{V2}staff/PR|D78")) == 1


# --- results --------------------------------------------------------------------------------------


def test_a_repeated_result_value_keeps_every_repetition(db: Database, port: int) -> None:
    """OBX-5 repeats (three blood-pressure readings, two coded findings): one Observation of the
    OBX-3 code whose components hold every value in order; a single value stays value[x]."""
    message = (
        "MSH|^~\\&|LIS|RV|Y|C|20261203101500||ORU^R01|RV-1|P|2.5\r"
        "PID|1||RV1^^^RV^MR||Qin^Yu||19800101|F\r"
        "OBR|1|RV-O1|RV-F1|8480-6^Systolic BP^LN|||20261203100000\r"
        "OBX|1|NM|8480-6^Systolic BP^LN||128~131~125|mm[Hg]^mmHg^UCUM|||||F\r"
        "OBX|2|CWE|29308-4^Diagnosis^LN||I10^Hypertension^I10~E11^Diabetes^I10||||||F\r"
        "OBX|3|NM|8867-4^Heart rate^LN||72|/min^per minute^UCUM|||||F\r"
    )
    accepted(port, message)
    person = patient(db, naming.mrn_system("RV"), "RV1")
    found = {o["code"]["coding"][0]["code"]: o for o in search(db, "Observation", subject=ref(person))}
    systolic = found["8480-6"]
    assert "valueQuantity" not in systolic
    assert [c["valueQuantity"]["value"] for c in systolic["component"]] == [128, 131, 125]
    assert all(
        c["code"] == systolic["code"] and c["valueQuantity"]["code"] == "mm[Hg]"
        for c in systolic["component"]
    )
    findings = [c["valueCodeableConcept"]["coding"][0]["code"] for c in found["29308-4"]["component"]]
    assert findings == ["I10", "E11"]
    assert found["8867-4"]["valueQuantity"]["value"] == 72 and "component" not in found["8867-4"]


def test_results_before_the_first_obr_are_the_patients_own_observations(db: Database, port: int) -> None:
    """v2.7+ ORU^R01 may carry the patient's own observations (OBX after PID, before any order):
    they are stored, under no report, and the ordered results still go under theirs."""
    message = (
        "MSH|^~\\&|LIS|PO|Y|C|20261203101500||ORU^R01|PO-1|P|2.7\r"
        "PID|1||PO1^^^PO^MR||Lu^Xin||19850505|F\r"
        "OBX|1|NM|29463-7^Body weight^LN||61.5|kg^kilogram^UCUM|||||F\r"
        "OBR|1|PO-O1|PO-F1|2345-7^Glucose^LN|||20261203100000\r"
        "OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L^mmol/L^UCUM|||||F\r"
    )
    accepted(port, message)
    person = patient(db, naming.mrn_system("PO"), "PO1")
    found = {o["code"]["coding"][0]["code"]: o for o in search(db, "Observation", subject=ref(person))}
    assert set(found) == {"29463-7", "2345-7"}
    assert found["29463-7"]["valueQuantity"]["value"] == 61.5
    assert found["29463-7"]["effectiveDateTime"].startswith("2026-12-03T10:15:00")
    [report] = search(db, "DiagnosticReport", subject=ref(person))
    assert [r["reference"] for r in report["result"]] == [f"Observation/{found['2345-7']['id']}"]
    accepted(port, message.replace("|PO-1|", "|PO-2|"))  # sent again under a new number: nothing new
    assert len(search(db, "Observation", subject=ref(person))) == 2
