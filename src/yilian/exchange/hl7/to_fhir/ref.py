"""REF referrals (I12 new, I13 modified, I14 cancelled): a referral ServiceRequest and the Task
that carries it through the receiving institution's workflow (双向转诊)."""

from __future__ import annotations

from typing import Any

from yilian.exchange.hl7 import datatypes as t
from yilian.exchange.hl7.errors import Hl7Error
from yilian.exchange.hl7.parse import split_groups
from yilian.exchange.hl7.to_fhir.common import V2_SID, Mapping_, Origin
from yilian.exchange.hl7.to_fhir.oru import report

EVENTS = frozenset({"I12", "I13", "I14", "I15"})
_STATUS = {"A": "active", "P": "active", "R": "revoked", "E": "completed", "C": "completed"}
_PRIORITY = {"S": "stat", "A": "asap", "R": "routine", "U": "urgent"}


def map_ref(m: Mapping_) -> None:
    event = m.msg.trigger_event
    rf1 = m.msg.first("RF1")
    if rf1 is None:
        raise Hl7Error(f"REF^{event} needs an RF1 segment", code="100", segment="RF1")
    pid = m.msg.first("PID")
    if pid is None:
        raise Hl7Error(f"REF^{event} needs a PID segment", code="100", segment="PID")
    patient, key = m.patient(pid)
    ref_key = m.order_key(rf1.rep(6), "referral") or m.order_key(rf1.rep(11), "referral")
    if ref_key is None:
        # A referral without a referral number can still be received; only this message can
        # then change it, so the message control id stands in for the number.
        ref_key = (f"{V2_SID}referral/{m.facility_key}", f"msh10/{m.msg.control_id}")
    status = "revoked" if event == "I14" else _STATUS.get(rf1.get(1).upper(), "active")
    sr: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": status,
        "intent": "order",
        "category": [
            {
                "coding": [
                    {"system": "http://snomed.info/sct", "code": "3457005", "display": "Patient referral"}
                ]
            }
        ],
        "subject": {"reference": patient},
    }
    code = t.concept(rf1.rep(3)) or t.concept(rf1.rep(5))
    if code:
        sr["code"] = code
    priority = _PRIORITY.get(rf1.get(2).upper())
    if priority:
        sr["priority"] = priority
    reasons = t.concepts(rf1, 10)
    if reasons:
        sr["reasonCode"] = reasons
    authored = t.date_time(rf1, 9) or t.date_time(rf1, 7)
    if authored:
        sr["authoredOn"] = authored
    requester = performer = None
    for prd in m.msg.all("PRD"):
        role = prd.get(1).upper()
        name = t.human_name(prd.rep(2))
        staff_id = prd.get(7)
        ref: dict[str, Any] | None = None
        if staff_id:
            resource: dict[str, Any] = {"resourceType": "Practitioner", "active": True}
            if name:
                resource["name"] = [name]
            url = m.add(
                resource,
                Origin("PRD", prd.sequence, 7),
                key=(f"{V2_SID}staff/{m.facility_key}", staff_id),
                create_only=True,
            )
            ref = {"reference": url}
        elif name:
            ref = {"display": " ".join([name.get("family", ""), *name.get("given", [])]).strip()}
        if ref is None:
            continue
        if role in ("RP", "PP", "RF") and requester is None:
            requester = ref
        elif role in ("RT", "CP", "RC") and performer is None:
            performer = ref
    if requester:
        sr["requester"] = requester
    if performer:
        sr["performer"] = [performer]
    notes = [{"text": nte.get(3)} for nte in m.msg.all("NTE") if nte.get(3)]
    if notes:
        sr["note"] = notes
    sr_url = m.add(sr, Origin("RF1", rf1.sequence, 6), key=ref_key)
    task: dict[str, Any] = {
        "resourceType": "Task",
        "status": {"active": "requested", "revoked": "cancelled", "completed": "completed"}[status],
        "intent": "order",
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
        "focus": {"reference": sr_url},
        "for": {"reference": patient},
        "basedOn": [{"reference": sr_url}],
    }
    if authored:
        task["authoredOn"] = authored
    if requester and "reference" in requester:
        task["requester"] = requester
    if performer and "reference" in performer:
        task["owner"] = performer
    m.add(
        task,
        Origin("RF1", rf1.sequence, 6),
        key=(ref_key[0].replace("/referral/", "/referral-task/"), ref_key[1]),
    )
    # Tests and results sent with the referral (OBR with its OBX) are reported as an ORU's are.
    for group in split_groups(m.msg.segments, "OBR", frozenset({"OBX", "NTE", "TQ1"})):
        report(m, patient, key, group)
    del key
