"""Registered system clients (hospital HIS/EMR/LIS, district nodes): register, list, revoke."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from yilian.db import UnitOfWork
from yilian.fhir.search.values import instant_to_us
from yilian.kernel import clock
from yilian.kernel.errors import Category, YilianError
from yilian.security.client_certs import check_senders, parse_senders
from yilian.security.principal import SYSTEM, Principal
from yilian.security.scopes import Scopes, parse_scopes
from yilian.security.tables import access_token, client


@dataclass(frozen=True)
class Client:
    client_id: str
    name: str
    org_id: str | None
    scopes: Scopes
    has_secret: bool
    jwks: dict[str, Any] | None
    redirect_uris: tuple[str, ...]
    active: bool
    hl7_senders: tuple[str, ...] = ()  # HL7 v2 senders it may send as (security.client_certs)


def hash_secret(secret: str) -> str:
    # Client secrets are 256-bit random strings, so a fast hash is as good as a slow one here.
    return hashlib.sha256(secret.encode()).hexdigest()


def _row_to_client(row: Any) -> Client:
    return Client(
        client_id=row.client_id,
        name=row.name,
        org_id=row.org_id,
        scopes=parse_scopes(row.scopes),
        has_secret=row.secret_hash is not None,
        jwks=json.loads(row.jwks) if row.jwks else None,
        redirect_uris=tuple((row.redirect_uris or "").split()),
        active=bool(row.active),
        hl7_senders=parse_senders(row.hl7_senders),
    )


def register_client(
    uow: UnitOfWork,
    *,
    name: str,
    org_id: str | None,
    scopes: str,
    jwks: dict[str, Any] | None = None,
    redirect_uris: tuple[str, ...] = (),
    with_secret: bool = True,
    client_id: str | None = None,
    secret: str | None = None,
    hl7_senders: tuple[str, ...] = (),
) -> tuple[Client, str | None]:
    """Register a client; returns it and its secret (shown once, stored only as a hash)."""
    if not name.strip():
        raise YilianError(Category.INVALID, "a client needs a name")
    parsed = parse_scopes(scopes)
    if not parsed.items:
        raise YilianError(Category.INVALID, "a client needs at least one data scope, e.g. system/*.rs")
    if org_id is not None:
        _check_org(uow, org_id)
    senders = check_senders(hl7_senders, operator=org_id is None)
    if jwks is not None and not isinstance(jwks.get("keys"), list):
        raise YilianError(Category.INVALID, 'the public key set must be a JWKS ({"keys": [...]})')
    cid = client_id or "yl-" + secrets.token_hex(8)
    secret = secret or (secrets.token_urlsafe(32) if with_secret else None)
    existing = uow.conn.execute(select(client.c.client_id).where(client.c.client_id == cid)).first()
    if existing is not None:
        raise YilianError(Category.CONFLICT, f"client {cid} already exists")
    uow.conn.execute(
        client.insert().values(
            client_id=cid,
            name=name.strip(),
            org_id=org_id,
            scopes=str(parsed),
            secret_hash=hash_secret(secret) if secret else None,
            jwks=json.dumps(jwks) if jwks else None,
            redirect_uris=" ".join(redirect_uris) or None,
            hl7_senders=json.dumps(list(senders), ensure_ascii=False) if senders else None,
            active=True,
            created=instant_to_us(clock.now()),
        )
    )
    found = get_client(uow, cid)
    assert found is not None
    return found, secret


def _check_org(uow: UnitOfWork, org_id: str) -> None:
    from yilian.fhir.store.repository import get_current

    current = get_current(uow.conn, "Organization", org_id)
    if current is None or current.deleted:
        raise YilianError(
            Category.NOT_FOUND,
            f"Organization/{org_id} does not exist: --org takes the id of the institution's FHIR Organization",
        )


def get_client(uow: UnitOfWork, client_id: str) -> Client | None:
    row = uow.conn.execute(select(client).where(client.c.client_id == client_id)).first()
    return _row_to_client(row) if row is not None else None


def list_clients(uow: UnitOfWork) -> list[Client]:
    return [_row_to_client(r) for r in uow.conn.execute(select(client).order_by(client.c.created))]


def revoke_client(uow: UnitOfWork, client_id: str) -> None:
    """Deactivate a client and end its tokens now."""
    done = uow.conn.execute(update(client).where(client.c.client_id == client_id).values(active=False))
    if done.rowcount == 0:
        raise YilianError(Category.NOT_FOUND, f"no client {client_id}")
    uow.conn.execute(access_token.delete().where(access_token.c.client_id == client_id))


def system_principal(c: Client) -> Principal:
    """What a system client acts as when it calls without a token (the MLLP listener, which
    knows it by its certificate): its own scopes and institution, as a token would carry."""
    return Principal(
        kind=SYSTEM, subject=c.client_id, scopes=c.scopes, org_id=c.org_id, client_id=c.client_id
    )


def check_secret(c: Client, uow: UnitOfWork, secret: str) -> bool:
    row = uow.conn.execute(select(client.c.secret_hash).where(client.c.client_id == c.client_id)).first()
    if row is None or row.secret_hash is None:
        return False
    return hmac.compare_digest(row.secret_hash, hash_secret(secret))
