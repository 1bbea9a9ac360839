"""Pharmacy: RDE^O11/O25 (encoded order) and RDS^O13 (dispense).

Each ORC with its RXE (the pharmacy's encoding of the order; RXO, the order as placed, when there
is no RXE) is one MedicationRequest, keyed by the order number as a ServiceRequest is; each RXD
of a dispense is one MedicationDispense that names the request it fills. Observations sent along
(OBX) are kept under the order. Financial segments (FT1, BLG) stay in the message log.
"""

from __future__ import annotations

from typing import Any

from yilian.exchange.hl7 import datatypes as t
from yilian.exchange.hl7.errors import Hl7Error
from yilian.exchange.hl7.parse import Segment
from yilian.exchange.hl7.to_fhir.common import V2_SID, Mapping_, Origin
from yilian.exchange.hl7.to_fhir.orders import unnumbered_order_key

# ORC-1 order control (table 0119) and ORC-5 order status (table 0038) as MedicationRequest.status.
_CONTROL = {
    "NW": "active",
    "XO": "active",
    "RP": "active",
    "RL": "active",
    "CA": "cancelled",
    "OC": "cancelled",
    "CR": "cancelled",
    "DC": "stopped",
    "HD": "on-hold",
}
_STATUS = {
    "A": "active",
    "IP": "active",
    "SC": "active",
    "CM": "completed",
    "CA": "cancelled",
    "DC": "stopped",
    "HD": "on-hold",
    "ER": "entered-in-error",
}
_GROUP_PARTS = frozenset({"RXO", "RXE", "RXD", "RXR", "RXC", "TQ1", "OBX", "NTE"})


def map_pharmacy(m: Mapping_) -> None:
    code, event = m.msg.message_code, m.msg.trigger_event
    pid = m.msg.first("PID")
    if pid is None:
        raise Hl7Error(f"{code}^{event} needs a PID segment", code="100", segment="PID")
    patient, _ = m.patient(pid)
    pv1 = m.msg.first("PV1")
    encounter = m.encounter(pv1, patient) if pv1 is not None else None
    groups: list[tuple[Segment, list[Segment]]] = []
    for seg in m.msg.segments:
        if seg.id == "ORC":
            groups.append((seg, []))
        elif seg.id in _GROUP_PARTS and groups:
            groups[-1][1].append(seg)
    if not groups:
        raise Hl7Error(f"{code}^{event} needs at least one ORC", code="100", segment="ORC")
    for orc, rest in groups:
        request, scope = _request(m, patient, orc, rest, encounter)
        for rxd in (s for s in rest if s.id == "RXD"):
            _dispense(m, patient, request, rxd, encounter)
        for obx in (s for s in rest if s.id == "OBX"):
            m.observation(obx, patient, scope=scope, encounter=encounter, fallback_time=t.date_time(orc, 9))


def _order_key(m: Mapping_, orc: Segment) -> tuple[str, str]:
    return m.order_key(orc.rep(2)) or m.order_key(orc.rep(3)) or unnumbered_order_key(m, orc)


def _request(
    m: Mapping_, patient: str, orc: Segment, rest: list[Segment], encounter: str | None
) -> tuple[str, str]:
    rxe = next((s for s in rest if s.id == "RXE"), None)
    rxo = next((s for s in rest if s.id == "RXO"), None)
    # RXE-2 give code; RXO-1 requested give code.
    medication = (t.concept(rxe.rep(2)) if rxe is not None else None) or (
        t.concept(rxo.rep(1)) if rxo is not None else None
    )
    if medication is None:
        seg = rxe or rxo
        raise Hl7Error(
            "the order names no medication (RXE-2 give code or RXO-1 requested give code)",
            code="101",
            segment=seg.id if seg is not None else "RXE",
            sequence=seg.sequence if seg is not None else 1,
            field=2 if seg is None or seg.id == "RXE" else 1,
        )
    status = _CONTROL.get(orc.get(1).upper()) or _STATUS.get(orc.get(5).upper(), "active")
    request: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": medication,
        "subject": {"reference": patient},
    }
    if encounter:
        request["encounter"] = {"reference": encounter}
    authored = t.date_time(orc, 9)
    if authored:
        request["authoredOn"] = authored
    requester = m.practitioners(orc, 12)
    if requester:
        request["requester"] = requester[0]
    dosage = _dosage(rxe, rxo, rest)
    if dosage:
        request["dosageInstruction"] = [dosage]
    dispense = _dispense_request(rxe, rxo)
    if dispense:
        request["dispenseRequest"] = dispense
    notes = [{"text": s.get(3)} for s in rest if s.id == "NTE" and s.get(3)]
    if notes:
        request["note"] = notes
    key = _order_key(m, orc)
    return m.add(request, Origin("ORC", orc.sequence, 2), key=key), key[1]


def _dosage(rxe: Segment | None, rxo: Segment | None, rest: list[Segment]) -> dict[str, Any]:
    dosage: dict[str, Any] = {}
    # RXE-7 / RXO-7: the provider's administration instructions (CWE: the text is component 2).
    for seg in (rxe, rxo):
        if seg is not None:
            text = seg.get(7, 2) or seg.get(7, 1)
            if text:
                dosage["text"] = text
                break
    route = next((t.concept(s.rep(1)) for s in rest if s.id == "RXR" and t.concept(s.rep(1))), None)
    if route:
        dosage["route"] = route
    # RXE-3 give amount, RXE-5 give units.
    if rxe is not None and _is_number(rxe.get(3)):
        dose: dict[str, Any] = {"value": _number(rxe.get(3))}
        unit = rxe.get(5, 2) or rxe.get(5, 1)
        if unit:
            dose["unit"] = unit
        dosage["doseAndRate"] = [{"doseQuantity": dose}]
    return dosage


def _dispense_request(rxe: Segment | None, rxo: Segment | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # RXE-10 dispense amount, RXE-11 its units, RXE-12 refills; RXO-11/12/13 likewise.
    amount, unit, refills = "", "", ""
    if rxe is not None:
        amount, unit, refills = rxe.get(10), rxe.get(11, 2) or rxe.get(11, 1), rxe.get(12)
    elif rxo is not None:
        amount, unit, refills = rxo.get(11), rxo.get(12, 2) or rxo.get(12, 1), rxo.get(13)
    if _is_number(amount):
        quantity: dict[str, Any] = {"value": _number(amount)}
        if unit:
            quantity["unit"] = unit
        out["quantity"] = quantity
    if refills.isdigit():
        out["numberOfRepeatsAllowed"] = int(refills)
    return out


def _dispense(m: Mapping_, patient: str, request: str, rxd: Segment, encounter: str | None) -> None:
    medication = t.concept(rxd.rep(2))
    if medication is None:
        raise Hl7Error(
            "RXD-2 (dispense/give code) is empty", code="101", segment="RXD", sequence=rxd.sequence, field=2
        )
    dispense: dict[str, Any] = {
        "resourceType": "MedicationDispense",
        "status": "completed",
        "medicationCodeableConcept": medication,
        "subject": {"reference": patient},
        "authorizingPrescription": [{"reference": request}],
    }
    if encounter:
        dispense["context"] = {"reference": encounter}
    when = t.date_time(rxd, 3)
    if when:
        dispense["whenHandedOver"] = when
    if _is_number(rxd.get(4)):
        quantity: dict[str, Any] = {"value": _number(rxd.get(4))}
        unit = rxd.get(5, 2) or rxd.get(5, 1)
        if unit:
            quantity["unit"] = unit
        dispense["quantity"] = quantity
    # RXD-7 prescription number, RXD-1 the dispense's sequence: a re-sent dispense updates one.
    number = rxd.get(7) or m.msg.control_id
    key = (f"{V2_SID}dispense/{m.facility_key}", f"{number}/{rxd.get(1) or rxd.sequence}"[:256])
    m.add(dispense, Origin("RXD", rxd.sequence, 2), key=key)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip() != "" and text.strip().lower() not in ("nan", "inf", "-inf", "infinity")


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text else value
