"""SIU scheduling: S12 new booking, S13 rescheduled, S14 modified, S15 cancelled, S16 discontinued,
S17 deleted (entered in error), S26 no-show."""

from __future__ import annotations

import datetime as dt
from typing import Any

from yilian.exchange.hl7 import datatypes as t
from yilian.exchange.hl7.errors import Hl7Error
from yilian.exchange.hl7.to_fhir.common import Mapping_, Origin

EVENTS = frozenset({"S12", "S13", "S14", "S15", "S16", "S17", "S26"})

# SCH-25 filler status codes (HL7 table 0278) as Appointment.status.
_FILLER_STATUS = {
    "BOOKED": "booked",
    "PENDING": "pending",
    "WAITLIST": "waitlist",
    "CANCELLED": "cancelled",
    "DELETED": "cancelled",
    "COMPLETE": "fulfilled",
    "NOSHOW": "noshow",
    "STARTED": "arrived",
    "BLOCKED": "booked",
    "OVERBOOK": "booked",
    "DC": "cancelled",
}


# Events that decide the status whatever SCH-25 says.
_EVENT_STATUS = {"S15": "cancelled", "S16": "cancelled", "S17": "entered-in-error", "S26": "noshow"}
_WITHDRAWN = frozenset({"cancelled", "entered-in-error"})


def map_siu(m: Mapping_) -> None:
    event = m.msg.trigger_event
    sch = m.msg.first("SCH")
    if sch is None:
        raise Hl7Error(f"SIU^{event} needs an SCH segment", code="100", segment="SCH")
    appt_key = m.order_key(sch.rep(2), "appointment") or m.order_key(sch.rep(1), "appointment")
    if appt_key is None:
        raise Hl7Error(
            "SCH-1 or SCH-2 (appointment id) is required", code="101", segment="SCH", sequence=1, field=2
        )
    status = _EVENT_STATUS.get(event) or _FILLER_STATUS.get(sch.get(25).upper().replace(" ", ""), "booked")
    appt: dict[str, Any] = {"resourceType": "Appointment", "status": status}
    participants: list[dict[str, Any]] = []
    pid = m.msg.first("PID")
    if pid is not None:
        patient, _ = m.patient(pid)
        participants.append(
            {"actor": {"reference": patient}, "status": "declined" if status in _WITHDRAWN else "accepted"}
        )
    for aip in m.msg.all("AIP"):
        for ref in m.practitioners(aip, 3):
            participants.append({"actor": ref, "status": "accepted"})
    for ail in m.msg.all("AIL"):
        loc = ail.rep(3)
        text = "/".join(x for x in (loc.c(4), loc.c(1), loc.c(2), loc.c(3)) if x)
        if text:
            participants.append({"actor": {"display": text}, "status": "accepted"})
    if not participants:
        raise Hl7Error(
            "an appointment needs a patient (PID) or a resource (AIP/AIL)", code="101", segment="PID"
        )
    appt["participant"] = participants
    start, end = _times(m, sch)
    if start and end:
        appt["start"], appt["end"] = start, end
    duration = sch.get(9)
    if duration.isdigit():
        minutes = int(duration) * (60 if sch.get(10, 1).lower() in ("h", "hr", "hour", "hours") else 1)
        if minutes > 0:
            appt["minutesDuration"] = minutes
    reason = t.concept(sch.rep(6)) or t.concept(sch.rep(7))
    if reason:
        appt["reasonCode"] = [reason]
    kind = t.concept(sch.rep(8))
    if kind:
        appt["appointmentType"] = kind
    services = [c for c in (t.concept(ais.rep(3)) for ais in m.msg.all("AIS")) if c]
    if services:
        appt["serviceType"] = services
    notes = [nte.get(3) for nte in m.msg.all("NTE") if nte.get(3)]
    if notes:
        appt["comment"] = "\n".join(notes)
    if status == "cancelled":
        cancel = t.concept(sch.rep(6)) if event in ("S15", "S16") else None
        if cancel:
            appt["cancelationReason"] = cancel
    pv1 = m.msg.first("PV1")
    if pid is not None and pv1 is not None:
        pass  # the visit of a booking is created when the patient arrives (ADT), not here
    m.add(appt, Origin("SCH", sch.sequence, 2), key=appt_key)


def _times(m: Mapping_, sch: Any) -> tuple[str | None, str | None]:
    """Start and end: TQ1-7/8 (v2.6+), else SCH-11 (TQ, components 4 and 5), else AIS/AIG/AIL/AIP
    start plus duration. An Appointment has both or neither."""
    tq1 = m.msg.first("TQ1")
    start = end = None
    if tq1 is not None:
        start, end = t.date_time(tq1, 7), t.date_time(tq1, 8)
    if not start:
        start, end = t.date_time(sch, 11, 4), t.date_time(sch, 11, 5)
    if not start:
        for seg_id, at, dur in (("AIS", 4, 7), ("AIG", 8, 11), ("AIL", 6, 9), ("AIP", 6, 9)):
            s = m.msg.first(seg_id)
            if s is not None and t.date_time(s, at):
                start = t.date_time(s, at)
                end = _plus(start, s.get(dur), s.get(dur + 1)) if s.get(dur).isdigit() else None
                break
    if start and not end and sch.get(9).isdigit():
        end = _plus(start, sch.get(9), sch.get(10, 1))
    if start and not end:
        end = start
    if start and "T" not in start:
        return None, None
    return start, end


def _plus(start: str | None, amount: str, unit: str) -> str | None:
    if not start or "T" not in start:
        return None
    minutes = int(amount) * (60 if unit.lower() in ("h", "hr", "hour", "hours") else 1)
    return (dt.datetime.fromisoformat(start) + dt.timedelta(minutes=minutes)).isoformat()
