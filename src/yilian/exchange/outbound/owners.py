"""Who a subscription belongs to, kept so that their access can be decided again later.

A subscription is matched when other callers write, and delivered by a worker with no request
at all; what it may carry is still what its creator may see. The creator's principal (kind,
institution, scopes granted with the token, a resident's patients) is stored with it and turned
back into the same :class:`SecurityPolicy` the creator's own searches run under. A revoked
client or deactivated person owns nothing any more: their subscriptions deliver nothing.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from yilian.db import Database, UnitOfWork
from yilian.fhir.access import ALLOW_ALL, AccessPolicy
from yilian.security.policy import SecurityPolicy, policy_for
from yilian.security.principal import SYSTEM, Principal
from yilian.security.scopes import parse_scopes
from yilian.security.tables import client, user_account

TRUSTED = {"kind": "trusted"}  # written by an in-process caller (the CLI's loaders): no restriction


def owner_of(policy: AccessPolicy) -> dict[str, Any]:
    """The stored form of the caller behind ``policy``."""
    if not isinstance(policy, SecurityPolicy):
        return dict(TRUSTED)
    p = policy.principal
    return {
        "kind": p.kind,
        "subject": p.subject,
        "org_id": p.org_id,
        "client_id": p.client_id,
        "user_id": p.user_id,
        "scopes": str(p.scopes),
        "patient_keys": sorted(p.patient_keys) if p.patient_keys is not None else None,
    }


def same_owner(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("kind", "client_id", "user_id", "org_id")
    return all(a.get(k) == b.get(k) for k in keys)


def is_operator(owner: dict[str, Any]) -> bool:
    return owner.get("kind") == "trusted" or (owner.get("org_id") is None and owner.get("kind") != "resident")


def describe(owner: dict[str, Any]) -> str:
    if owner.get("kind") == "trusted":
        return "platform (trusted)"
    org = owner.get("org_id")
    return f"{owner.get('kind')}:{owner.get('subject')}" + (f" (Organization/{org})" if org else "")


def policy_of(uow: UnitOfWork, db: Database, stored: str | None) -> AccessPolicy | None:
    """The owner's access policy now, or None when the owner may no longer act (revoked)."""
    owner: dict[str, Any] = json.loads(stored) if stored else dict(TRUSTED)
    if owner.get("kind") == "trusted":
        return ALLOW_ALL
    if owner.get("kind") == SYSTEM:
        row = uow.conn.execute(
            select(client.c.active, client.c.org_id).where(client.c.client_id == owner.get("client_id"))
        ).first()
    else:
        row = uow.conn.execute(
            select(user_account.c.active, user_account.c.org_id).where(
                user_account.c.user_id == owner.get("user_id")
            )
        ).first()
    if row is None or not row.active:
        return None
    keys = owner.get("patient_keys")
    principal = Principal(
        kind=str(owner["kind"]),
        subject=str(owner.get("subject") or ""),
        scopes=parse_scopes(str(owner.get("scopes") or "")),
        # The institution as it is registered now: a client moved to another hospital takes
        # its subscriptions' view with it, never keeps the old one.
        org_id=row.org_id,
        client_id=owner.get("client_id"),
        user_id=owner.get("user_id"),
        patient_keys=frozenset(keys) if keys is not None else None,
    )
    return policy_for(principal, db)
