"""PPR^PC1/PC2/PC3 (problem add, update, delete): one Condition per PRB on the patient's problem list.

A problem is keyed by PRB-4 (its instance id, per assigning authority), else by the patient and
PRB-3 (the problem's code), so an update or a delete of the same problem changes one Condition.
A delete (PC3, or PRB-1 ``DE``) keeps the Condition as entered in error: what others read from
it stays explained, and nothing is removed from the shared record.
"""

from __future__ import annotations

from typing import Any

from yilian.exchange.hl7 import datatypes as t
from yilian.exchange.hl7.errors import Hl7Error
from yilian.exchange.hl7.parse import Segment
from yilian.exchange.hl7.to_fhir.common import Mapping_, Origin, patient_scoped_key

EVENTS = frozenset({"PC1", "PC2", "PC3"})

_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
# PRB-14 life cycle status as sent (free text or a local code) → clinicalStatus.
_LIFE_CYCLE = {
    "ACTIVE": "active",
    "A": "active",
    "RECURRENCE": "recurrence",
    "RELAPSE": "relapse",
    "INACTIVE": "inactive",
    "I": "inactive",
    "REMISSION": "remission",
    "RESOLVED": "resolved",
    "R": "resolved",
}


def map_problems(m: Mapping_) -> None:
    pid = m.msg.first("PID")
    if pid is None:
        raise Hl7Error(f"PPR^{m.msg.trigger_event} needs a PID segment", code="100", segment="PID")
    patient, key = m.patient(pid)
    segments = m.msg.segments
    problems = [(i, s) for i, s in enumerate(segments) if s.id == "PRB"]
    if not problems:
        raise Hl7Error(f"PPR^{m.msg.trigger_event} needs at least one PRB segment", code="100", segment="PRB")
    for i, prb in problems:
        notes = []
        for seg in segments[i + 1 :]:
            if seg.id == "PRB":
                break
            if seg.id == "NTE" and seg.get(3):
                notes.append({"text": seg.get(3)})
        _condition(m, patient, key, prb, notes)


def _condition(
    m: Mapping_, patient: str, patient_key: tuple[str, str], prb: Segment, notes: list[dict[str, str]]
) -> None:
    code = t.concept(prb.rep(3))
    if code is None:
        raise Hl7Error(
            "PRB-3 (problem id) is empty", code="101", segment="PRB", sequence=prb.sequence, field=3
        )
    problem_key = m.order_key(prb.rep(4), "problem")
    if problem_key is None:
        codes = code.get("coding") or [{"code": code.get("text", "")}]
        problem_key = patient_scoped_key("problem", m.facility_key, patient_key, codes[0])
    condition: dict[str, Any] = {
        "resourceType": "Condition",
        "category": [{"coding": [{"system": _CATEGORY, "code": "problem-list-item"}]}],
        "code": code,
        "subject": {"reference": patient},
    }
    deleted = m.msg.trigger_event == "PC3" or prb.get(1).upper() == "DE"
    if deleted:
        condition["verificationStatus"] = _concept(_VERIFICATION, "entered-in-error")
    else:
        resolved_at = t.date_time(prb, 9)
        status = "resolved" if resolved_at else _LIFE_CYCLE.get(prb.get(14).strip().upper(), "active")
        condition["clinicalStatus"] = _concept(_CLINICAL, status)
        if resolved_at and status in ("resolved", "inactive", "remission"):
            condition["abatementDateTime"] = resolved_at
    # PRB-16 onset; PRB-7 established, else PRB-2 the action's time, as when it was recorded.
    optional: tuple[tuple[str, Any], ...] = (
        ("onsetDateTime", t.date_time(prb, 16)),
        ("recordedDate", t.date_time(prb, 7) or t.date_time(prb, 2)),
        ("note", notes),
    )
    condition.update((element, value) for element, value in optional if value)
    m.add(condition, Origin("PRB", prb.sequence, 4), key=problem_key)


def _concept(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}
