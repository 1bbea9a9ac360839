"""The audit record of a notification: a subscription's rest-hook carried a resource away.

Every access is audited (issue 5), and a notification with a payload is a disclosure like a
read: it names the subscription's owner as the agent, the resource version sent and the
patient whose record it is. It is written in the transaction that marks the message
delivered, so the log and the delivery state never disagree. A withheld message (the owner
may no longer see the resource) disclosed nothing and is not recorded; forwarding to the city
node is the platform's own replication and is not a disclosure to a member.
"""

from __future__ import annotations

import json
from typing import Any

from yilian.security.audit import AuditRecord
from yilian.security.principal import RESIDENT, STAFF, SYSTEM

_AGENT_KINDS = {SYSTEM: "system", STAFF: "user", RESIDENT: "patient"}


def notification_record(
    owner: str | None,
    subscription: str,
    res_type: str,
    res_id: str,
    version: int | None,
    patient_keys: tuple[str, ...],
    *,
    payload: bool,
) -> AuditRecord:
    """``subscription`` is the destination id (``Subscription/<id>``)."""
    stored: dict[str, Any] = json.loads(owner) if owner else {"kind": "trusted"}
    kind = _AGENT_KINDS.get(str(stored.get("kind")), "operator")
    agent = stored.get("client_id") or stored.get("user_id") or stored.get("subject") or "platform"
    entity = f"{res_type}/{res_id}" + (f"/_history/{version}" if version is not None else "")
    return AuditRecord(
        action="R" if payload else "E",
        subtype="subscription-notification",
        agent_kind=kind,
        agent_id=str(agent)[:128],
        org_id=stored.get("org_id"),
        patient_keys=patient_keys,
        entity=entity,
        resource_types=(res_type,),
        outcome_desc=f"notified {subscription}" + ("" if payload else " (no payload: id only)"),
        details=(("subscription", subscription),),
    )
