"""VXU^V04 immunizations: one Immunization per RXA (with its ORC, RXR and OBX)."""

from __future__ import annotations

from typing import Any

from yilian.exchange.hl7 import datatypes as t
from yilian.exchange.hl7.errors import Hl7Error
from yilian.exchange.hl7.parse import Segment
from yilian.exchange.hl7.to_fhir.common import V2_SID, Mapping_, Origin
from yilian.exchange.hl7.to_fhir.orders import order_request

_MVX = "http://terminology.hl7.org/CodeSystem/MVX"


def map_vxu(m: Mapping_) -> None:
    pid = m.msg.first("PID")
    if pid is None:
        raise Hl7Error("VXU^V04 needs a PID segment", code="100", segment="PID")
    patient, key = m.patient(pid)
    # Each dose is an RXA, optionally after its ORC; RXR and OBX follow the RXA they describe.
    orc: Segment | None = None
    rxa: Segment | None = None
    groups: list[tuple[Segment | None, Segment, list[Segment]]] = []
    for seg in m.msg.segments:
        if seg.id == "ORC":
            orc, rxa = seg, None
        elif seg.id == "RXA":
            rxa = seg
            groups.append((orc, seg, []))
            orc = None
        elif seg.id in ("RXR", "OBX", "NTE") and rxa is not None:
            groups[-1][2].append(seg)
    if not groups:
        raise Hl7Error("VXU^V04 needs at least one RXA", code="100", segment="RXA")
    for order, dose, rest in groups:
        if order is not None:
            order_request(
                m,
                patient,
                order,
                None,
                [],
                status="completed" if dose.get(20).upper() in ("CP", "PA", "") else "revoked",
            )
        url, scope = _immunization(m, patient, key, order, dose, rest)
        for obx in (s for s in rest if s.id == "OBX"):
            m.observation(obx, patient, scope=scope, fallback_time=t.date_time(dose, 3))
        del url


def _immunization(
    m: Mapping_, patient: str, key: tuple[str, str], orc: Segment | None, rxa: Segment, rest: list[Segment]
) -> tuple[str, str]:
    vaccine = t.concept(rxa.rep(5))
    if vaccine is None:
        raise Hl7Error(
            "RXA-5 (administered code) is empty", code="101", segment="RXA", sequence=rxa.sequence, field=5
        )
    when = t.date_time(rxa, 3)
    if when is None:
        raise Hl7Error(
            "RXA-3 (date/time start of administration) is empty",
            code="101",
            segment="RXA",
            sequence=rxa.sequence,
            field=3,
        )
    completion = rxa.get(20).upper()
    action = rxa.get(21).upper()
    status = "completed"
    if completion in ("RE", "NA"):
        status = "not-done"
    if action == "D":
        status = "entered-in-error"
    source = rxa.rep(9)
    imm: dict[str, Any] = {
        "resourceType": "Immunization",
        "status": status,
        "vaccineCode": vaccine,
        "patient": {"reference": patient},
        "occurrenceDateTime": when,
        # NIP001 "00" is a new record (given here); any other code is a historical report.
        "primarySource": source.c(1) in ("", "00"),
    }
    if source.c(1) not in ("", "00"):
        origin = t.concept(source)
        if origin:
            imm["reportOrigin"] = origin
    if completion == "RE":
        reason = t.concept(rxa.rep(18))
        if reason:
            imm["statusReason"] = reason
    amount = rxa.get(6)
    if amount and amount != "999":
        try:
            dose: dict[str, Any] = {"value": float(amount) if "." in amount else int(amount)}
        except ValueError:
            raise Hl7Error(
                f"RXA-6 (administered amount) is not a number: {amount!r}",
                code="102",
                segment="RXA",
                sequence=rxa.sequence,
                field=6,
            ) from None
        unit = rxa.rep(7)
        if unit.c(1):
            dose.update(
                {"unit": unit.c(2) or unit.c(1), "system": "http://unitsofmeasure.org", "code": unit.c(1)}
            )
        imm["doseQuantity"] = dose
    lots = [r.c(1) for r in rxa.reps(15) if r.c(1)]
    if lots:
        imm["lotNumber"] = lots[0]
    expires = t.date_only(rxa, 16)
    if expires:
        imm["expirationDate"] = expires
    maker = rxa.rep(17)
    if maker.c(1):
        org = {"resourceType": "Organization", "active": True, "name": maker.c(2) or maker.c(1)}
        system = _MVX if maker.c(3).upper() in ("MVX", "") else f"{V2_SID}manufacturer/{t.key(maker.c(3))}"
        imm["manufacturer"] = {
            "reference": m.add(
                org, Origin("RXA", rxa.sequence, 17), key=(system, maker.c(1)), create_only=True
            )
        }
    performers = [
        {
            "actor": ref,
            "function": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0443", "code": "AP"}]
            },
        }
        for ref in m.practitioners(rxa, 10)
    ]
    if orc is not None:
        performers += [
            {
                "actor": ref,
                "function": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0443", "code": "OP"}]
                },
            }
            for ref in m.practitioners(orc, 12)
        ]
    if performers:
        imm["performer"] = performers
    rxr = next((s for s in rest if s.id == "RXR"), None)
    if rxr is not None:
        route = t.concept(rxr.rep(1))
        if route:
            imm["route"] = route
        site = t.concept(rxr.rep(2))
        if site:
            imm["site"] = site
    order = m.order_key(orc.rep(3)) if orc is not None else None
    if order is None:
        # No filler order number: the same vaccine on the same day for the same person is the
        # same dose, which keeps a re-sent history (RXA-9 "01") from being recorded twice.
        codes = vaccine.get("coding") or [{"code": vaccine.get("text", "")}]
        order = (f"{V2_SID}immunization/{m.facility_key}", f"{key[1]}/{codes[0]['code']}/{when[:10]}")
    url = m.add(
        imm, Origin("RXA", rxa.sequence, 5), key=(order[0].replace("/order/", "/immunization/"), order[1])
    )
    return url, order[1]
