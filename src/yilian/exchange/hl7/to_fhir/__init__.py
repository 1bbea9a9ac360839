"""HL7 v2 messages as FHIR transaction Bundles, one module per message family."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from yilian.exchange.hl7.errors import Hl7Error
from yilian.exchange.hl7.parse import Message
from yilian.exchange.hl7.to_fhir import adt, orders, oru, pharmacy, problems, ref, siu, vxu
from yilian.exchange.hl7.to_fhir.common import Mapping_, Origin

__all__ = ["SUPPORTED", "Mapping_", "Origin", "to_fhir"]

# message code -> (trigger events, mapper); None accepts every event of the code.
SUPPORTED: dict[str, tuple[frozenset[str] | None, Callable[[Mapping_], None]]] = {
    "ADT": (adt.EVENTS, adt.map_adt),
    "ORU": (frozenset({"R01", "R30", "R31", "R32"}), oru.map_oru),
    "VXU": (frozenset({"V04"}), vxu.map_vxu),
    "SIU": (siu.EVENTS, siu.map_siu),
    "REF": (ref.EVENTS, ref.map_ref),
    "ORM": (frozenset({"O01"}), orders.map_order),
    "OML": (frozenset({"O21", "O33", "O35"}), orders.map_order),
    "OMG": (frozenset({"O19"}), orders.map_order),
    # Specimen-oriented results (OUL): observations grouped by order, as ORU's are.
    "OUL": (frozenset({"R22", "R23", "R24"}), oru.map_oru),
    "RDE": (frozenset({"O11", "O25"}), pharmacy.map_pharmacy),
    "RDS": (frozenset({"O13"}), pharmacy.map_pharmacy),
    "PPR": (problems.EVENTS, problems.map_problems),
    # Financial and document messages: the platform keeps their patient and visit current;
    # the rest of the message stays in the message log.
    "BAR": (None, adt.map_demographics),
    "DFT": (None, adt.map_demographics),
    "MDM": (None, adt.map_demographics),
}


def to_fhir(msg: Message, *, authorities: Mapping[str, str] | None = None) -> Mapping_:
    """The FHIR writes for ``msg``; raises :class:`Hl7Error` (AR for what we do not take)."""
    code, event = msg.message_code, msg.trigger_event
    if not code:
        raise Hl7Error(
            "MSH-9 (message type) is empty", code="101", segment="MSH", sequence=1, field=9, reject=True
        )
    entry = SUPPORTED.get(code)
    if entry is None:
        raise Hl7Error(
            f"message type {code} is not accepted here",
            code="200",
            segment="MSH",
            sequence=1,
            field=9,
            reject=True,
        )
    events, mapper = entry
    if events is not None and event not in events:
        raise Hl7Error(
            f"{code}^{event or '?'} is not accepted here (accepted: {', '.join(sorted(events))})",
            code="201",
            segment="MSH",
            sequence=1,
            field=9,
            reject=True,
        )
    mapping = Mapping_(msg, dict(authorities or {}))
    mapper(mapping)
    return mapping
