"""ORU^R01 results: a DiagnosticReport per OBR, an Observation per OBX under it."""

from __future__ import annotations

from typing import Any

from yilian.exchange.hl7 import datatypes as t
from yilian.exchange.hl7.errors import Hl7Error
from yilian.exchange.hl7.parse import Segment, split_groups
from yilian.exchange.hl7.to_fhir.common import Mapping_, Origin
from yilian.exchange.hl7.to_fhir.orders import order_request

_REPORT_STATUS = {
    "O": "registered",
    "I": "registered",
    "S": "registered",
    "A": "partial",
    "P": "preliminary",
    "R": "preliminary",
    "C": "corrected",
    "F": "final",
    "X": "cancelled",
    "Y": "final",
    "Z": "final",
}


# A result's status says how far its order has got.
_ORDER_STATUS = {"F": "completed", "C": "completed", "X": "revoked", "Y": "completed", "Z": "completed"}


def map_oru(m: Mapping_) -> None:
    pid = m.msg.first("PID")
    if pid is None:
        raise Hl7Error("ORU^R01 needs a PID segment", code="100", segment="PID")
    patient, key = m.patient(pid)
    pv1 = m.msg.first("PV1")
    encounter = m.encounter(pv1, patient) if pv1 is not None else None
    groups = split_groups(m.msg.segments, "OBR", frozenset({"OBX", "NTE", "SPM", "TQ1"}))
    if not groups:
        raise Hl7Error("ORU^R01 needs at least one OBR", code="100", segment="OBR")
    for group in groups:
        report(m, patient, key, group, encounter=encounter)
    # OBX before the first OBR: the patient's own observations (v2.7+ PATIENT_OBSERVATION, after
    # PID; some senders put one after the ORC). Under no report, but every one kept.
    first_obr = next(i for i, s in enumerate(m.msg.segments) if s.id == "OBR")
    msh = m.msg.first("MSH")
    for obx in (s for s in m.msg.segments[:first_obr] if s.id == "OBX"):
        m.observation(
            obx,
            patient,
            scope=f"{key[1]}/patient-observation",
            encounter=encounter,
            fallback_time=t.date_time(msh, 7) if msh is not None else None,
        )


def report(
    m: Mapping_, patient: str, key: tuple[str, str], group: list[Segment], *, encounter: str | None = None
) -> None:
    """One OBR with its OBX: the order it fulfils, the Observations, and the report over them."""
    obr = group[0]
    orc = _orc_of(m, obr)
    order = (
        m.order_key(obr.rep(3))
        or m.order_key(obr.rep(2))
        or (m.order_key(orc.rep(3)) if orc is not None else None)
    )
    code = t.concept(obr.rep(4))
    if code is None:
        raise Hl7Error(
            "OBR-4 (universal service identifier) is empty",
            code="101",
            segment="OBR",
            sequence=obr.sequence,
            field=4,
        )
    when = t.date_time(obr, 7)
    scope = order[1] if order else f"{key[1]}/{obr.get(4)}/{obr.get(7)}"
    based_on = order_request(
        m,
        patient,
        orc,
        obr,
        group[1:],
        encounter=encounter,
        status=_ORDER_STATUS.get(obr.get(25).upper(), "active"),
    )
    results = []
    for obx in (s for s in group if s.id == "OBX"):
        url = m.observation(
            obx, patient, scope=scope, encounter=encounter, fallback_time=when, category="laboratory"
        )
        if url:
            results.append({"reference": url})
    diagnostic: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "status": _REPORT_STATUS.get(obr.get(25).upper(), "final"),
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                        "code": obr.get(24) or "LAB",
                    }
                ]
            }
        ],
        "code": code,
        "subject": {"reference": patient},
    }
    if based_on:
        diagnostic["basedOn"] = [{"reference": based_on}]
    if encounter:
        diagnostic["encounter"] = {"reference": encounter}
    if when:
        diagnostic["effectiveDateTime"] = when
    issued = t.instant(obr, 22)
    if issued:
        diagnostic["issued"] = issued
    performers = m.practitioners_ndl(obr, 32) or m.practitioners(obr, 16)
    if performers:
        diagnostic["resultsInterpreter" if obr.get(32) else "performer"] = performers
    if results:
        diagnostic["result"] = results
    origin = Origin("OBR", obr.sequence, 3)
    if order:
        m.add(diagnostic, origin, key=(order[0].replace("/order/", "/report/"), order[1]))
    else:
        m.add(diagnostic, origin)


def _orc_of(m: Mapping_, obr: Segment) -> Segment | None:
    """The ORC of an OBR: the nearest one before it, unless another OBR comes in between."""
    found: Segment | None = None
    for seg in m.msg.segments:
        if seg is obr:
            return found
        if seg.id == "ORC":
            found = seg
        elif seg.id == "OBR":
            found = None
    return None
