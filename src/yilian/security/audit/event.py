"""An :class:`AuditRecord` as a FHIR R4 AuditEvent (IHE BALP shape), and back to its columns.

The JSON carries every column of the row except the surrogate id and the sealing columns, so
``verify`` can tell which column of an edited row disagrees with the event it was sealed with.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from typing import Any

import orjson

from yilian.fhir.search.values import date_range, instant_to_us
from yilian.kernel import clock
from yilian.security.audit import codes as c
from yilian.security.audit.model import AuditRecord

OBSERVER = {"display": "Yilian 医联 FHIR server"}
_REFERENCE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}(/_history/[A-Za-z0-9\-.]{1,64})?$")


def recorded_us(record: AuditRecord) -> int:
    return instant_to_us(record.recorded or clock.now())


# The last second formatted: audited requests arrive many to a second. One tuple, replaced
# whole, so threads that race here at worst format the same second twice.
_last_second: tuple[int, str] = (0, "1970-01-01T00:00:00.")


def _instant(us: int) -> str:
    # Microseconds, not FHIR's usual milliseconds: the JSON must say exactly what the column says.
    # By hand and cached per second: strftime was a third of building an audited read's event.
    global _last_second
    sec, micro = divmod(us, 1_000_000)
    last = _last_second
    if last[0] != sec:
        t = time.gmtime(sec)
        text = (
            f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}."
        )
        last = _last_second = (sec, text)
    return f"{last[1]}{micro:06d}Z"


def _concept(*codings: dict[str, Any]) -> dict[str, Any]:
    return {"coding": list(codings)}


def _requestor(record: AuditRecord) -> dict[str, Any]:
    system = record.agent_kind == "system"
    agent: dict[str, Any] = {}
    if record.user_agent:
        agent["extension"] = [{"url": c.EXT_USER_AGENT, "valueString": record.user_agent}]
    agent["type"] = _concept(
        c.coding(c.DICOM, "110153", "Source Role ID")
        if system
        else c.coding(c.PARTICIPATION_TYPE, "IRCP", "information recipient")
    )
    agent["role"] = [_concept(c.coding(c.AGENT_KIND, record.agent_kind))]
    agent["who"] = {
        "identifier": {"system": c.CLIENT_SID if system else c.USER_SID, "value": record.agent_id}
    }
    agent["altId"] = record.agent_id
    if record.agent_name:
        agent["name"] = record.agent_name
    agent["requestor"] = True
    if record.source_ip:
        agent["network"] = {"address": record.source_ip, "type": "2"}  # 2 = IP address
    if record.purpose:
        agent["purposeOfUse"] = [_concept(c.coding(c.PURPOSE_OF_USE, record.purpose))]
    return agent


def _entities(record: AuditRecord) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "what": {"reference": f"Patient/{key}"},
            "type": c.coding(c.ENTITY_TYPE, "1", "Person"),
            "role": c.coding(c.OBJECT_ROLE, "1", "Patient"),
        }
        for key in record.patient_keys
    ]
    details = [{"type": c.DETAIL_RESOURCE_TYPE, "valueString": t} for t in record.resource_types] + [
        {"type": k, "valueString": v} for k, v in record.details
    ]
    if record.entity:
        data: dict[str, Any] = {}
        # A reference when it is one (Type/id, Type/id/_history/v); a name otherwise
        # (Patient/1/$everything, a batch).
        if _REFERENCE.match(record.entity):
            data["what"] = {"reference": record.entity}
        else:
            data["name"] = record.entity
        data["type"] = c.coding(c.ENTITY_TYPE, "2", "System Object")
        data["role"] = c.coding(c.OBJECT_ROLE, "4", "Domain Resource")
        if details and not record.query:
            data["detail"] = details
        out.append(data)
    if record.query:
        query: dict[str, Any] = {
            "type": c.coding(c.ENTITY_TYPE, "2", "System Object"),
            "role": c.coding(c.OBJECT_ROLE, "24", "Query"),
            "query": base64.b64encode(record.query.encode()).decode(),
        }
        if details:
            query["detail"] = details
        out.append(query)
    return out


def to_audit_event(record: AuditRecord, recorded: int | None = None) -> dict[str, Any]:
    """The FHIR R4 AuditEvent for ``record`` (no id: the log assigns it), recorded at ``recorded`` µs."""
    at = recorded_us(record) if recorded is None else recorded
    event: dict[str, Any] = {"resourceType": "AuditEvent"}
    if record.is_flagged:
        event["extension"] = [{"url": c.EXT_FLAGGED, "valueBoolean": True}]
    event["type"] = c.event_type(record.subtype)
    event["subtype"] = [c.subtype_coding(record.subtype)]
    event["action"] = record.action
    event["recorded"] = _instant(at)
    event["outcome"] = str(record.outcome)
    if record.outcome_desc:
        event["outcomeDesc"] = record.outcome_desc
    if record.purpose:
        event["purposeOfEvent"] = [_concept(c.coding(c.PURPOSE_OF_USE, record.purpose))]
    agents = [_requestor(record)]
    if record.org_id:
        agents.append(
            {
                "type": _concept(c.coding(c.ROLE_CLASS, "PROV", "healthcare provider")),
                "who": {"reference": f"Organization/{record.org_id}"},
                "requestor": False,
            }
        )
    event["agent"] = agents
    event["source"] = {
        "site": "yilian",
        "observer": OBSERVER,
        "type": [c.coding(c.SOURCE_TYPE, "4", "Application Server")],
    }
    entities = _entities(record)
    if entities:
        event["entity"] = entities
    return event


def _role(entity: dict[str, Any]) -> str | None:
    role = entity.get("role") or {}
    return str(role.get("code")) if role.get("system") == c.OBJECT_ROLE else None


def _entity_column(entities: list[dict[str, Any]]) -> str | None:
    for e in entities:
        if _role(e) == "4":
            return (e.get("what") or {}).get("reference") or e.get("name")
    for e in entities:
        if _role(e) == "24" and e.get("query"):
            try:
                return base64.b64decode(e["query"]).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
    return None


def columns_from_event(content: bytes) -> dict[str, Any]:
    """The column values the stored AuditEvent JSON implies (what sealing saw, when untouched).

    Raises ``ValueError`` when ``content`` is not an AuditEvent this module wrote.
    """
    try:
        event = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise ValueError("content is not JSON") from None
    if not isinstance(event, dict) or event.get("resourceType") != "AuditEvent":
        raise ValueError("content is not an AuditEvent")
    agents = event.get("agent") or []
    me: dict[str, Any] = next((a for a in agents if a.get("requestor")), {})
    role: dict[str, Any] = next(iter(me.get("role") or []), {})
    kind = next((cd.get("code") for cd in role.get("coding", []) if cd.get("system") == c.AGENT_KIND), None)
    org_ref = next(
        (
            str(a["who"]["reference"]).removeprefix("Organization/")
            for a in agents
            if str((a.get("who") or {}).get("reference", "")).startswith("Organization/")
        ),
        None,
    )
    entities = event.get("entity") or []
    patients = [
        str((e.get("what") or {}).get("reference", "")).removeprefix("Patient/")
        for e in entities
        if _role(e) == "1"
    ]
    purposes: list[dict[str, Any]] = event.get("purposeOfEvent") or [{}]
    purpose = (purposes[0].get("coding") or [{}])[0].get("code")
    span = date_range(str(event.get("recorded", "")))
    flagged = any(
        x.get("url") == c.EXT_FLAGGED and x.get("valueBoolean") is True for x in event.get("extension", [])
    )
    return {
        "recorded": span[0] if span else None,
        "action": event.get("action"),
        "subtype": c.subtype_of(next(iter(event.get("subtype") or []), {})),
        "outcome": int(event["outcome"]) if str(event.get("outcome", "")).isdigit() else None,
        "agent_kind": kind,
        "agent_id": me.get("altId"),
        "org_id": org_ref,
        "patient_keys": " ".join(patients) or None,
        "entity": _entity_column(entities),
        "purpose": purpose,
        "flagged": flagged,
        "source_ip": (me.get("network") or {}).get("address"),
    }
