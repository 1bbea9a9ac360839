"""Credentials for tests: clients registered straight in the database, tokens issued for them."""

from __future__ import annotations

from yilian.db import Database, UnitOfWork
from yilian.security.clients import register_client
from yilian.security.principal import SYSTEM, Principal
from yilian.security.scopes import parse_scopes
from yilian.security.tokens import issue


def system_token(
    db: Database, *, scopes: str = "system/*.cruds", org_id: str | None = None, name: str = "test client"
) -> str:
    """A bearer token for a system client of ``org_id`` (None: the platform operator)."""
    with UnitOfWork(db, write=True) as uow:
        client, _secret = register_client(uow, name=name, org_id=org_id, scopes=scopes)
        principal = Principal(
            kind=SYSTEM,
            subject=client.client_id,
            scopes=parse_scopes(scopes),
            org_id=org_id,
            client_id=client.client_id,
        )
        return issue(uow, principal, lifetime_s=3600).access_token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
