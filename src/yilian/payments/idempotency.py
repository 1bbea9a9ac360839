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
from sqlalchemy import BigInteger, Integer, LargeBinary, String, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.expression import ClauseElement

from yilian.db import UnitOfWork
from yilian.db.statements import Statement
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


_i = t.idempotency


def _claim(dialect: str) -> ClauseElement:
    # One statement, no savepoint: a concurrent insert of the same key waits for the other
    # transaction to end, then skips the row if that one committed, or inserts it if it rolled
    # back. RETURNING rather than rowcount: the driver's rowcount is not dependable for a skip.
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        dialect_insert(_i)
        .values(
            caller=bindparam("caller", type_=String),
            key=bindparam("key", type_=String),
            request_hash=bindparam("request_hash", type_=String),
            status=bindparam("status", type_=Integer),
            response=bindparam("response", type_=LargeBinary),
            created=bindparam("created", type_=BigInteger),
        )
        .on_conflict_do_nothing()
        .returning(_i.c.caller)
    )


_CLAIM = Statement(_claim)
_WHERE_KEY = (_i.c.caller == bindparam("caller", type_=String), _i.c.key == bindparam("key", type_=String))
_STORED = Statement(lambda _: select(_i.c.request_hash, _i.c.status, _i.c.response).where(*_WHERE_KEY))
_REMEMBER = Statement(
    lambda _: (
        update(_i)
        .where(*_WHERE_KEY)
        .values(status=bindparam("status", type_=Integer), response=bindparam("response", type_=LargeBinary))
    )
)


def claim(uow: UnitOfWork, *, caller: str, key: str, fingerprint: str) -> StoredReply | None:
    """Claim the key for this transaction (None: go ahead), or the reply the key already has."""
    conn = uow.conn
    params = {
        "caller": caller,
        "key": key,
        "request_hash": fingerprint,
        "status": PENDING,
        "response": b"",
        "created": to_us(clock.now()),
    }
    if _CLAIM.one_or_none(conn, params) is not None:
        return None
    row = _STORED.one_or_none(conn, params)
    assert row is not None  # the conflicting key exists: the insert was skipped for it
    request_hash, status, response = row
    if request_hash != fingerprint:
        raise refuse(
            Category.UNPROCESSABLE,
            "idempotency-key-reused",
            "this Idempotency-Key was used for a different request; use a new key for a new payment",
        )
    if status == PENDING:  # cannot happen once the other transaction ended: guard anyway
        raise refuse(
            Category.CONFLICT,
            "idempotency-key-in-flight",
            "a request with this Idempotency-Key is in progress",
        )
    return StoredReply(int(status), bytes(response))


def remember(uow: UnitOfWork, *, caller: str, key: str, status: int, body: bytes) -> None:
    """Store the reply for the key's retries: written with the transaction's last writes, in its
    commit batch (nothing reads it back before the commit)."""
    _REMEMBER.defer(uow.at_commit, {"caller": caller, "key": key, "status": status, "response": body})


def purge(uow: UnitOfWork, *, older_than_s: int = RETENTION_S) -> int:
    i = t.idempotency
    cutoff = to_us(clock.now()) - max(older_than_s, RETENTION_S) * 1_000_000
    return int(uow.conn.execute(delete(i).where(i.c.created < cutoff)).rowcount)
