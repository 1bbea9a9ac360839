"""Bearer access tokens: issued after authentication, looked up on every request.

Tokens are random and opaque; only their SHA-256 is stored, so a copy of the database gives
no usable token. A lookup is one primary-key read. A system client's token is cached for a few
seconds per process, so revoking a client takes effect within that time; a person's token is
checked against their account on every request (it is read with the account's ``active`` flag),
so a deactivated account's tokens stop working at once.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import delete, select

from yilian.db import Database, UnitOfWork
from yilian.fhir.search.values import instant_to_us
from yilian.kernel import clock
from yilian.security.principal import Principal
from yilian.security.scopes import Scopes, parse_scopes
from yilian.security.tables import access_token, user_account

TOKEN_LIFETIME_S = 300  # SMART backend services: short-lived tokens
PEOPLE_TOKEN_LIFETIME_S = 3600
CACHE_SECONDS = 3.0


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scopes: Scopes
    patient: str | None = None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(uow: UnitOfWork, principal: Principal, *, lifetime_s: int = TOKEN_LIFETIME_S) -> IssuedToken:
    token = "yl_" + secrets.token_urlsafe(32)
    now = instant_to_us(clock.now())
    uow.conn.execute(
        access_token.insert().values(
            token_hash=token_hash(token),
            client_id=principal.client_id,
            user_id=principal.user_id,
            kind=principal.kind,
            org_id=principal.org_id,
            scopes=str(principal.scopes),
            patient_keys=" ".join(sorted(principal.patient_keys))
            if principal.patient_keys is not None
            else None,
            expires=now + lifetime_s * 1_000_000,
            created=now,
        )
    )
    # Expired tokens are of no use to anyone: clear them out as new ones are made.
    uow.conn.execute(delete(access_token).where(access_token.c.expires < now))
    patient = next(iter(sorted(principal.patient_keys)), None) if principal.patient_keys else None
    return IssuedToken(token, lifetime_s, principal.scopes, patient)


class TokenVerifier:
    """Bearer token -> Principal, with a short per-process cache."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, tuple[float, Principal | None, int]] = {}
        self._lock = threading.Lock()

    def verify(self, token: str) -> Principal | None:
        key = token_hash(token)
        now_mono = time.monotonic()
        now_us = instant_to_us(clock.now())
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now_mono - hit[0] < CACHE_SECONDS:
            principal, expires = hit[1], hit[2]
            return principal if principal is not None and expires > now_us else None
        with self.db.connect_autocommit() as conn:  # one statement: no transaction around it
            row = conn.execute(
                select(access_token, user_account.c.active.label("account_active"))
                .outerjoin(user_account, user_account.c.user_id == access_token.c.user_id)
                .where(access_token.c.token_hash == key)
            ).first()
        principal = None
        expires = 0
        person = row is not None and row.user_id is not None
        if person and row is not None and not row.account_active:
            row = None  # the person's account was deactivated (or removed)
        if row is not None:
            expires = int(row.expires)
            principal = Principal(
                kind=row.kind,
                subject=row.client_id if row.kind == "system" else (row.user_id or ""),
                scopes=parse_scopes(row.scopes),
                org_id=row.org_id,
                client_id=row.client_id,
                user_id=row.user_id,
                patient_keys=frozenset(row.patient_keys.split()) if row.patient_keys is not None else None,
            )
        if not person:
            # People's tokens are not cached: their account's state is read on every request.
            with self._lock:
                if len(self._cache) > 50_000:
                    self._cache.clear()
                self._cache[key] = (now_mono, principal, expires)
        return principal if principal is not None and expires > now_us else None

    def forget(self, token: str) -> None:
        with self._lock:
            self._cache.pop(token_hash(token), None)
