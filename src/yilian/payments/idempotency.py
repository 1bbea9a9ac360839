"""Idempotency keys: a retried payment returns the first reply, byte for byte, and changes nothing.

The key row is inserted *first* (``INSERT … ON CONFLICT DO NOTHING``, one statement), in the same
transaction as the payment it guards. A concurrent retry with the same key then blocks on that
row's unique index until the first transaction ends:
if it committed, the retry finds the stored reply; if it rolled back (the payment was refused),
the retry runs as if it were the first. So exactly one ledger transaction is ever written per
key, on PostgreSQL by the unique index and on SQLite by its single writer.

Refusals are not stored: a charge refused for insufficient balance may be retried with the same
key after a top-up. Keys are scoped to the caller (two hospitals may both use key "1"), bound to a
hash of method, path and body (canonical JSON, so whitespace and key order do not matter), and
kept at least :data:`RETENTION_S` seconds; :func:`purge` removes older ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson
from sqlalchemy import delete, select, update

from yilian.db import UnitOfWork
from yilian.db.dialect import insert_new
from yilian.kernel import clock
from yilian.kernel.errors import Category
from yilian.payments import tables as t
from yilian.payments.model import refuse, to_us

RETENTION_S = 48 * 3600  # the contract promises 24 h; twice that leaves room for late retries
MAX_KEY = 255
PENDING = 0  # status of a key whose transaction has not finished (only ever seen by itself)


@dataclass(frozen=True, slots=True)
class StoredReply:
    status: int
    body: bytes


def request_hash(method: str, path: str, body: bytes) -> str:
    canonical = b""
    if body.strip():
        try:
            canonical = orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
        except orjson.JSONDecodeError:
            canonical = body
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def check_key(key: str | None) -> str:
    if key is None or not key.strip():
        raise refuse(
            Category.INVALID, "idempotency-key-missing", "this request needs an Idempotency-Key header"
        )
    key = key.strip()
    if len(key) > MAX_KEY:
        raise refuse(
            Category.INVALID, "idempotency-key-invalid", f"an Idempotency-Key is at most {MAX_KEY} characters"
        )
    return key


def claim(uow: UnitOfWork, *, caller: str, key: str, fingerprint: str) -> StoredReply | None:
    """Claim the key for this transaction (None: go ahead), or the reply the key already has."""
    conn = uow.conn
    i = t.idempotency
    claimed = insert_new(
        conn,
        i,
        {
            "caller": caller,
            "key": key,
            "request_hash": fingerprint,
            "status": PENDING,
            "response": b"",
            "created": to_us(clock.now()),
        },
    )
    if claimed:
        return None
    row = conn.execute(
        select(i.c.request_hash, i.c.status, i.c.response).where(i.c.caller == caller, i.c.key == key)
    ).one()
    if row.request_hash != fingerprint:
        raise refuse(
            Category.UNPROCESSABLE,
            "idempotency-key-reused",
            "this Idempotency-Key was used for a different request; use a new key for a new payment",
        )
    if row.status == PENDING:  # cannot happen once the other transaction ended: guard anyway
        raise refuse(
            Category.CONFLICT,
            "idempotency-key-in-flight",
            "a request with this Idempotency-Key is in progress",
        )
    return StoredReply(int(row.status), bytes(row.response))


def remember(uow: UnitOfWork, *, caller: str, key: str, status: int, body: bytes) -> None:
    i = t.idempotency
    uow.conn.execute(
        update(i).where(i.c.caller == caller, i.c.key == key).values(status=status, response=body)
    )


def purge(uow: UnitOfWork, *, older_than_s: int = RETENTION_S) -> int:
    i = t.idempotency
    cutoff = to_us(clock.now()) - max(older_than_s, RETENTION_S) * 1_000_000
    return int(uow.conn.execute(delete(i).where(i.c.created < cutoff)).rowcount)
