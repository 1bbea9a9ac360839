"""Allergies sent with a patient: AL1 (ADT's patient allergy information) and IAM (A60's
adverse reaction information) as AllergyIntolerance.

One AllergyIntolerance per patient and allergen, keyed by IAM-7 (the allergy's unique id) when
the sender gives one, else by the patient's identifier and the allergen's code: a message that
repeats the patient's allergies (every A08 does) updates them rather than adding more. An IAM
with action code D (delete) keeps the record as entered in error.
"""

from __future__ import annotations

from typing import Any

from yilian.exchange.hl7 import datatypes as t
from yilian.exchange.hl7.parse import Segment
from yilian.exchange.hl7.to_fhir.common import Mapping_, Origin, patient_scoped_key

_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
# HL7 table 0127 allergen type → (category, type).
_TYPE = {
    "DA": ("medication", "allergy"),
    "FA": ("food", "allergy"),
    "EA": ("environment", "allergy"),
    "AA": ("environment", "allergy"),
    "PA": ("environment", "allergy"),
    "LA": ("environment", "allergy"),
    "MA": (None, "allergy"),
    "MC": (None, "allergy"),
    "DI": ("medication", "intolerance"),
    "FI": ("food", "intolerance"),
    "EI": ("environment", "intolerance"),
}
# HL7 table 0128 severity → reaction severity, and the criticality it implies.
_SEVERITY = {"SV": ("severe", "high"), "MO": ("moderate", "low"), "MI": ("mild", "low")}


def map_allergies(m: Mapping_, patient: str, patient_key: tuple[str, str]) -> None:
    """Every AL1 and IAM of the message, for ``patient``."""
    for seg in m.msg.segments:
        if seg.id in ("AL1", "IAM"):
            _allergy(m, patient, patient_key, seg)


def _allergy(m: Mapping_, patient: str, patient_key: tuple[str, str], seg: Segment) -> None:
    code = t.concept(seg.rep(3))
    if code is None:
        return  # names no allergen: nothing to record (the message log keeps the segment)
    deleted = seg.id == "IAM" and seg.get(6).upper() == "D"
    resource: dict[str, Any] = {
        "resourceType": "AllergyIntolerance",
        "code": code,
        "patient": {"reference": patient},
    }
    if deleted:
        resource["verificationStatus"] = _concept(_VERIFICATION, "entered-in-error")
    else:
        resource["clinicalStatus"] = _concept(_CLINICAL, "active")
        resource["verificationStatus"] = _concept(_VERIFICATION, "confirmed")
    category, kind = _TYPE.get(seg.get(2).upper(), (None, None))
    if kind:
        resource["type"] = kind
    if category:
        resource["category"] = [category]
    severity, criticality = _SEVERITY.get(seg.get(4).upper(), (None, None))
    if criticality:
        resource["criticality"] = criticality
    # AL1-5 / IAM-5: the reactions, free text, repeating.
    manifestations = [{"text": r.c(1)} for r in seg.reps(5) if r.c(1)]
    if manifestations:
        reaction: dict[str, Any] = {"manifestation": manifestations}
        if severity:
            reaction["severity"] = severity
        resource["reaction"] = [reaction]
    # AL1-6 identification date; IAM-11 onset, IAM-13 reported.
    onset = t.date_time(seg, 11) if seg.id == "IAM" else None
    recorded = t.date_time(seg, 6) if seg.id == "AL1" else t.date_time(seg, 13)
    if onset:
        resource["onsetDateTime"] = onset
    if recorded:
        resource["recordedDate"] = recorded
    key = m.order_key(seg.rep(7), "allergy") if seg.id == "IAM" else None
    if key is None:
        codes = code.get("coding") or [{"code": code.get("text", "")}]
        key = patient_scoped_key("allergy", m.facility_key, patient_key, codes[0])
    m.add(resource, Origin(seg.id, seg.sequence, 3), key=key)


def _concept(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}
