"""ADT: admissions, transfers, discharges, registrations, person updates and merges; the
allergies sent along (AL1, IAM) as AllergyIntolerance (``allergies``).

| event | what changes |
|---|---|
| A01 admit, A04 register, A05 pre-admit, A08 update, A28 add person, A31 update person | Patient (and the visit, when PV1 has one) |
| A02 transfer, A09 patient departing, A10 patient arriving, A12 cancel transfer | the visit, at its (new) location |
| A06 outpatient to inpatient, A07 inpatient to outpatient | the visit, with its new class (PV1-2) |
| A03 discharge | the visit is finished (PV1-45 or EVN-2 as its end) |
| A11 cancel admit/visit, A27 cancel pending admit | the visit is cancelled |
| A13 cancel discharge | the visit is in progress again, without an end |
| A14 pending admit | the visit, planned |
| A15 pending transfer, A16 pending discharge, A25 cancel pending discharge, A26 cancel pending transfer | Patient and visit as the message states them (a pending change is not made yet) |
| A29 delete person information | the Patient is kept, inactive (nothing is deleted from the shared record) |
| A41 merge account | Patient (accounts stay in the message log) |
| A60 update allergy information | Patient and its allergies (IAM) |
| A45 move visit information | Patient and the visit under its new number (PV1-19) |
| A40 merge, A47 change patient identifier list | each MRG record is kept, inactive, ``replaced-by`` the PID record (see ``intake``) |
"""

from __future__ import annotations

from yilian.exchange.hl7 import datatypes as t
from yilian.exchange.hl7.errors import Hl7Error
from yilian.exchange.hl7.to_fhir.allergies import map_allergies
from yilian.exchange.hl7.to_fhir.common import Mapping_, Origin

EVENTS = frozenset(
    {
        "A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A09", "A10", "A11", "A12", "A13",
        "A14", "A15", "A16", "A25", "A26", "A27", "A28", "A29", "A31", "A40", "A41", "A45", "A47",
        "A60",
    }
)  # fmt: skip
_PERSON_ONLY = frozenset({"A28", "A29", "A31", "A41", "A60"})
_MERGES = frozenset({"A40", "A47"})
# The visit's status an event sets; other events leave it to PV1 (finished with PV1-45, planned
# for a pre-admission class, else in progress).
_VISIT_STATUS = {
    "A03": "finished",
    "A05": "planned",
    "A11": "cancelled",
    "A13": "in-progress",
    "A14": "planned",
    "A27": "cancelled",
}


def map_adt(m: Mapping_) -> None:
    event = m.msg.trigger_event
    if event in _MERGES:
        _merge(m)
        return
    pid = m.msg.first("PID")
    if pid is None:
        raise Hl7Error(f"ADT^{event} needs a PID segment", code="100", segment="PID")
    patient, key = m.patient(pid)
    if event == "A29":
        # Taken out of use, not deleted: what others recorded about the person stays theirs.
        m.resource_of(patient)["active"] = False
    else:
        map_allergies(m, patient, key)
    if event in _PERSON_ONLY:
        return
    pv1 = m.msg.first("PV1")
    encounter = None
    if pv1 is not None:
        status = _VISIT_STATUS.get(event)
        if event in ("A01", "A02", "A04"):
            status = "in-progress" if not t.date_time(pv1, 45) else "finished"
        encounter = m.encounter(pv1, patient, status=status, pv2=m.msg.first("PV2"))
        if encounter is not None and event == "A03" and not t.date_time(pv1, 45):
            # The discharge time is PV1-45; senders that leave it empty mean "now", i.e. EVN-2.
            evn = m.msg.first("EVN")
            end = t.date_time(evn, 2) if evn is not None else None
            if end:
                m.entries[-1]["resource"].setdefault("period", {})["end"] = end
    when = _event_time(m)
    for obx in m.msg.all("OBX"):
        m.observation(
            obx,
            patient,
            scope=f"{key[1]}/{pv1.get(19) if pv1 else ''}",
            encounter=encounter,
            fallback_time=when,
        )


def _event_time(m: Mapping_) -> str | None:
    evn = m.msg.first("EVN")
    return t.date_time(evn, 2) if evn is not None else None


def _merge(m: Mapping_) -> None:
    """A40 (and A47): one or more PID/MRG pairs; each PID is the surviving record, its MRG the
    one merged away. A47 changes a record's identifier: the record under the old identifier
    (MRG-1) becomes the one under the new (PID-3), as a merge makes it."""
    pairs = 0
    segments = m.msg.segments
    for i, seg in enumerate(segments):
        if seg.id != "PID":
            continue
        mrg = next((s for s in segments[i + 1 :] if s.id in ("MRG", "PID")), None)
        if mrg is None or mrg.id != "MRG":
            raise Hl7Error(
                f"ADT^{m.msg.trigger_event}: every PID must be followed by the MRG of the record merged into it",
                code="100",
                segment="MRG",
            )
        _survivor_url, survivor_key = m.patient(seg)
        old_ident = next((x for x in (m.identifier(r, patient_list=True) for r in mrg.reps(1)) if x), None)
        if old_ident is None:
            raise Hl7Error(
                "MRG-1 (prior patient identifier list) is empty",
                code="101",
                segment="MRG",
                sequence=mrg.sequence,
                field=1,
            )
        m.merges.append(
            ({"system": survivor_key[0], "value": survivor_key[1]}, old_ident, Origin("MRG", mrg.sequence, 1))
        )
        pairs += 1
    if not pairs:
        raise Hl7Error(
            f"ADT^{m.msg.trigger_event} needs at least one PID/MRG pair", code="100", segment="PID"
        )


def map_demographics(m: Mapping_) -> None:
    """The patient (and visit) of a message whose main content the platform does not store."""
    pid = m.msg.first("PID")
    if pid is None:
        raise Hl7Error(f"{m.msg.message_code} needs a PID segment", code="100", segment="PID")
    patient, _ = m.patient(pid)
    pv1 = m.msg.first("PV1")
    if pv1 is not None:
        m.encounter(pv1, patient)
