"""Orders: ORM^O01 and OML^O21 — a ServiceRequest per ORC/OBR, with any results sent along."""

from __future__ import annotations

from typing import Any

from yilian.exchange.hl7 import datatypes as t
from yilian.exchange.hl7.errors import Hl7Error
from yilian.exchange.hl7.parse import Segment
from yilian.exchange.hl7.to_fhir.common import V2_SID, Mapping_, Origin

# ORC-1 order control (HL7 table 0119) and ORC-5 order status (table 0038) as ServiceRequest.status.
_CONTROL = {
    "NW": "active",
    "XO": "active",
    "RP": "active",
    "CA": "revoked",
    "DC": "revoked",
    "OC": "revoked",
    "CR": "revoked",
    "HD": "on-hold",
    "RL": "active",
    "SC": None,
    "RE": "completed",  # observations to follow: the order has been carried out
}
_STATUS = {
    "A": "active",
    "IP": "active",
    "SC": "active",
    "CM": "completed",
    "CA": "revoked",
    "DC": "revoked",
    "HD": "on-hold",
    "ER": "entered-in-error",
}
_PRIORITY = {"S": "stat", "A": "asap", "R": "routine", "P": "urgent", "T": "urgent"}


def map_order(m: Mapping_) -> None:
    pid = m.msg.first("PID")
    if pid is None:
        raise Hl7Error(
            f"{m.msg.message_code}^{m.msg.trigger_event} needs a PID segment", code="100", segment="PID"
        )
    patient, key = m.patient(pid)
    pv1 = m.msg.first("PV1")
    encounter = m.encounter(pv1, patient) if pv1 is not None else None
    groups: list[tuple[Segment | None, Segment | None, list[Segment]]] = []
    for seg in m.msg.segments:
        if seg.id == "ORC":
            groups.append((seg, None, []))
        elif seg.id in ("OBR", "RXO") and groups and groups[-1][1] is None:
            orc, _, rest = groups[-1]
            groups[-1] = (orc, seg, rest)
        elif seg.id == "OBR":
            # An OBR with no ORC of its own (older senders, or an ORC lost to a missing segment
            # separator): the order its OBR-2/OBR-3 number names.
            groups.append((None, seg, []))
        elif seg.id in ("OBX", "TQ1", "NTE", "DG1") and groups:
            groups[-1][2].append(seg)
    if not groups:
        raise Hl7Error("an order message needs at least one ORC or OBR", code="100", segment="ORC")
    for orc, detail, rest in groups:
        order_request(m, patient, orc, detail, rest, encounter=encounter, observations=True, required=True)
    del key


def unnumbered_order_key(m: Mapping_, orc: Segment) -> tuple[str, str]:
    """The key of an order that carries no number (some LIS send only the placer group, ORC-4):
    the message's own control id and the ORC's place in it, so a re-send of the message updates
    it rather than adding another. Results cannot find it later, having nothing to name it by."""
    if not m.msg.control_id:
        raise Hl7Error(
            "ORC-2 or ORC-3 (placer or filler order number) is required",
            code="101",
            segment="ORC",
            sequence=orc.sequence,
            field=2,
        )
    return f"{V2_SID}order/{m.facility_key}/message", f"{m.msg.control_id}/{orc.sequence}"


def order_request(
    m: Mapping_,
    patient: str,
    orc: Segment | None,
    detail: Segment | None,
    rest: list[Segment],
    *,
    encounter: str | None = None,
    status: str | None = None,
    observations: bool = False,
    required: bool = False,
) -> str | None:
    """The ServiceRequest of an ORC (and its OBR), keyed by the placer order number (else the
    filler's), so the order message and the results that fulfil it update one request.
    None when neither carries an order number (nothing to key a re-send on)."""
    order = None
    if orc is not None:
        order = m.order_key(orc.rep(2)) or m.order_key(orc.rep(3))
    if order is None and detail is not None and detail.id == "OBR":
        order = m.order_key(detail.rep(2)) or m.order_key(detail.rep(3))
    if order is None:
        if not (required and orc is not None):
            return None
        order = unnumbered_order_key(m, orc)
    if status is None and orc is not None:
        status = _CONTROL.get(orc.get(1).upper()) or _STATUS.get(orc.get(5).upper(), "active")
    sr: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": status or "active",
        "intent": "order",
        "subject": {"reference": patient},
    }
    code = t.concept(detail.rep(4)) if detail is not None and detail.id == "OBR" else None
    code = code or (t.concept(orc.rep(16)) if orc is not None else None)
    if code:
        sr["code"] = code
    if encounter:
        sr["encounter"] = {"reference": encounter}
    authored = t.date_time(orc, 9) if orc is not None else None
    if authored:
        sr["authoredOn"] = authored
    requester = m.practitioners(orc, 12) if orc is not None else []
    if not requester and detail is not None and detail.id == "OBR":
        requester = m.practitioners(detail, 16)
    if requester:
        sr["requester"] = requester[0]
    tq1 = next((s for s in rest if s.id == "TQ1"), None)
    priority = _PRIORITY.get((tq1.get(9) if tq1 is not None else "").upper())
    if priority:
        sr["priority"] = priority
    notes = [{"text": s.get(3)} for s in rest if s.id == "NTE" and s.get(3)]
    if notes:
        sr["note"] = notes
    reasons = [c for c in (t.concept(s.rep(3)) for s in rest if s.id == "DG1") if c]
    if reasons:
        sr["reasonCode"] = reasons
    seg = orc if orc is not None else detail
    assert seg is not None
    url = m.add(sr, Origin(seg.id, seg.sequence, 2), key=order)
    if observations:
        info = []
        for obx in (s for s in rest if s.id == "OBX"):
            obs = m.observation(obx, patient, scope=order[1], encounter=encounter, fallback_time=authored)
            if obs:
                info.append({"reference": obs})
        if info:
            sr["supportingInfo"] = info
    return url
