"""The hash chain: sealing committed rows in id order, and the thread that does it every second.

Each sealed row carries ``seq`` (its place in the chain), ``prev_hash`` (the chain hash of the
row before it; zeros for the first) and ``chain_hash``, computed over ``prev_hash`` and a
canonical, length-prefixed encoding of every other column. Editing, removing or reordering a
sealed row therefore breaks the chain from that row on (``verify``).

**Keyed.** A plain hash can be recomputed by anyone: whoever can write to the database could
edit a row and recompute every later hash and the head, and the chain would check. So
``chain_hash`` is an HMAC-SHA256 under a subkey of one of the deployment's data keys
(:meth:`yilian.kernel.crypto.Keyring.mac`), written ``v2:<key id>:<base64url MAC>`` (at most 63
characters: the column is unchanged). The key id travels with the row: after ``yilian keys
rotate`` new rows are sealed under the new key and older rows still check against theirs, and
each row's MAC covers the previous row's hash, so a row sealed under the new key also pins
everything before it. A data key that still seals audit rows cannot be retired
(:func:`key_usage`) until retention has pruned them. Rows sealed before the chain was keyed
keep their unkeyed SHA-256 (64 hex digits, "v1"); ``verify`` accepts such rows only before the
first keyed row, so a rewrite that falls back to the unkeyed kind is found too.

Rows are inserted unsealed by many concurrent transactions and sealed afterwards, in id order: a
sealer chains a batch from the head as it finds it (in a read transaction, holding no lock),
then writes it under the lock on the one ``audit_chain_head`` row (``SELECT … FOR UPDATE`` on
PostgreSQL; SQLite's single write lock) if the head is still the one it chained from, and
chains again otherwise. So several sealers can run at once, and the hashing never holds the
lock every other writer needs on SQLite.

**Gaps.** On SQLite writers take turns under the only write lock, drawing their ids and
committing while they hold it, so in any snapshot every id below the largest one seen is final. On PostgreSQL ids come from a sequence
and become visible in commit order, not id order: a missing id may belong to a transaction
still running, or to one that rolled back. The sealer stops at the first missing id and waits
for it; once the gap has been seen for ``GAP_GRACE_S`` seconds (five) it is taken as rolled
back and sealing goes on. Audit rows are inserted moments before their transaction commits
(``recorder``, ``writer``), so a real in-flight gap lasts milliseconds; five seconds costs
nothing but a late seal after a rollback. Should a row with such an id commit after all, it is
sealed at the end of the chain (its seq then out of id order): no committed row ever stays
outside the chain, and ``verify`` reports any row still unsealed.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from sqlalchemy import Connection, Integer, Select, bindparam, func, select, text, update

from yilian.db import Database, UnitOfWork
from yilian.db.statements import Statement
from yilian.db.uow import transact
from yilian.kernel.crypto import Keyring
from yilian.security.audit.tables import GENESIS_HASH, HEAD_ID, audit_chain_head, audit_event
from yilian.security.keys import required_keyring

log = logging.getLogger("yilian.security.audit")

GAP_GRACE_S = 5.0
SEAL_BATCH = 1000
# Every column but prev_hash and chain_hash, in a fixed order: what a chain hash covers.
SEALED_COLUMNS = (
    "id", "seq", "recorded", "action", "subtype", "outcome", "agent_kind", "agent_id", "org_id",
    "patient_keys", "entity", "purpose", "flagged", "source_ip", "content",
)  # fmt: skip
DATA_COLUMNS = SEALED_COLUMNS[2:]  # what the event says, without its place in the log
_DOMAIN = b"yilian.audit.chain.v1\x00"
_KEYED_DOMAIN = b"yilian.audit.chain.v2\x00"
KEYED_PREFIX = "v2:"
MAC_PURPOSE = "audit-chain"
_INTS = frozenset({"id", "seq", "recorded", "outcome"})


# How a row is encoded for its hash: each field as ``name=`` + a type tag + the value's length
# (8 bytes, big-endian) + the value; the tag is n (NULL), b (boolean, 1 or 0), i (integer, in
# decimal), x (bytes) or s (text, UTF-8). Drivers differ (SQLite gives 1 for a boolean, psycopg
# memoryview for bytes): values are normalised by column first, so a hash depends only on the
# values. Unrolled per column: the sealer encodes every row of the log on a thread that shares
# the interpreter lock with the requests being audited (a function call per field was half of
# its time). Rows sealed by earlier releases must still check: the tests pin the bytes.
_NULL = b"n" + bytes(8)
_LABELS = {name: name.encode() + b"=" for name in ("prev_hash", *SEALED_COLUMNS)}
_PLAN = tuple(
    (
        name,
        _LABELS[name],
        b"b" if name == "flagged" else b"i" if name in _INTS else b"x" if name == "content" else b"s",
    )
    for name in SEALED_COLUMNS
)


def _message(domain: bytes, prev_hash: str, row: Mapping[Any, Any]) -> bytes:
    prev = prev_hash.encode()
    parts = [domain, _LABELS["prev_hash"], b"s", len(prev).to_bytes(8, "big"), prev]
    for name, label, kind in _PLAN:
        value = row[name]
        if value is None:
            parts += (label, _NULL)
            continue
        if kind == b"s":
            data = str(value).encode()
        elif kind == b"i":
            data = str(int(value)).encode()
        elif kind == b"x":
            data = bytes(value)
        else:
            data = b"1" if value else b"0"
        parts += (label, kind, len(data).to_bytes(8, "big"), data)
    return b"".join(parts)


def legacy_hash(prev_hash: str, row: Mapping[Any, Any]) -> str:
    """The unkeyed SHA-256 ("v1") rows were sealed with before the chain was keyed."""
    return hashlib.sha256(_message(_DOMAIN, prev_hash, row)).hexdigest()


def keyed_hash(prev_hash: str, row: Mapping[Any, Any], keyring: Keyring, key_id: str | None = None) -> str:
    """The keyed chain hash ("v2") under data key ``key_id`` (default: the current one)."""
    kid, digest = keyring.mac(_message(_KEYED_DOMAIN, prev_hash, row), purpose=MAC_PURPOSE, key_id=key_id)
    return f"{KEYED_PREFIX}{kid}:{base64.urlsafe_b64encode(digest).rstrip(b'=').decode('ascii')}"


def chain_hash(prev_hash: str, row: Mapping[Any, Any], keyring: Keyring | None = None) -> str:
    """The chain hash of ``row`` (a mapping with every sealed column) following ``prev_hash``:
    keyed under the keyring's current data key, or without a keyring the legacy unkeyed hash."""
    return legacy_hash(prev_hash, row) if keyring is None else keyed_hash(prev_hash, row, keyring)


def is_keyed(stored: str | None) -> bool:
    return stored is not None and stored.startswith(KEYED_PREFIX)


def hash_key_id(stored: str) -> str | None:
    """The data key a keyed chain hash was made with (None for a legacy one)."""
    if not is_keyed(stored):
        return None
    return stored[len(KEYED_PREFIX) :].partition(":")[0]


def recompute(stored: str, prev_hash: str, row: Mapping[Any, Any], keyring: Keyring | None) -> str | None:
    """``row``'s chain hash of the kind ``stored`` is (legacy, or keyed under the same data key);
    None when that needs a key ``keyring`` does not have."""
    kid = hash_key_id(stored)
    if kid is None:
        return legacy_hash(prev_hash, row)
    if keyring is None or kid not in keyring.key_ids:
        return None
    return keyed_hash(prev_hash, row, keyring, kid)


def matches(stored: str, prev_hash: str, row: Mapping[Any, Any], keyring: Keyring | None) -> bool | None:
    """Whether ``stored`` is ``row``'s chain hash after ``prev_hash``; None when it cannot be told."""
    expected = recompute(stored, prev_hash, row, keyring)
    return None if expected is None else hmac.compare_digest(expected, stored)


def audit_keyring(db: Database) -> Keyring:
    """The keys the chain is sealed with: the deployment's keyring, installed on the database."""
    return required_keyring(db.engine, "the audit log cannot be sealed (its chain is keyed)")


def key_usage(conn: Connection, key_id: str) -> int:
    """How many audit rows are sealed under data key ``key_id`` (they need it to be checked)."""
    prefix = f"{KEYED_PREFIX}{key_id}:"
    return int(
        conn.execute(
            select(func.count()).where(audit_event.c.chain_hash.startswith(prefix, autoescape=True))
        ).scalar_one()
    )


_HEAD_STATE = ("seq", "chain_hash", "last_id", "gap_id", "gap_since")


def lock_head(conn: Connection, *, share: bool = False) -> dict[str, Any]:
    """The chain head, locked for this transaction (shared: for readers that need it to stay put)."""
    stmt = select(audit_chain_head).where(audit_chain_head.c.id == HEAD_ID).with_for_update(read=share)
    return _head(conn, stmt, store_rebuilt=not share)


def _peek_head(conn: Connection) -> dict[str, Any]:
    """The chain head as it is now, unlocked (what a sealer chains from before it takes the lock)."""
    return _head(conn, select(audit_chain_head).where(audit_chain_head.c.id == HEAD_ID), store_rebuilt=False)


def _head(conn: Connection, stmt: Select[Any], *, store_rebuilt: bool) -> dict[str, Any]:
    row = conn.execute(stmt).mappings().first()
    if row is not None:
        return dict(row)
    # Someone removed the head: rebuild it from the chain itself rather than restart at seq 1.
    tail = conn.execute(
        select(audit_event.c.seq, audit_event.c.chain_hash).order_by(audit_event.c.seq.desc()).limit(1)
    ).first()
    last_id = conn.execute(select(func.max(audit_event.c.id)).where(audit_event.c.seq.is_not(None))).scalar()
    head = {
        "id": HEAD_ID,
        "seq": int(tail.seq) if tail and tail.seq is not None else 0,
        "chain_hash": tail.chain_hash if tail and tail.seq is not None else GENESIS_HASH,
        "last_id": int(last_id or 0),
        "gap_id": None,
        "gap_since": None,
    }
    if store_rebuilt:
        conn.execute(audit_chain_head.insert().values(**head))
    return head


# The sealer's two statements, compiled once and sent to the driver: they run on a thread that
# shares the interpreter lock with the requests being audited, for every row of the log.
_UNSEALED = Statement(
    lambda _: (
        select(audit_event)
        .where(audit_event.c.seq.is_(None))
        .order_by(audit_event.c.id)
        .limit(bindparam("limit", type_=Integer))
    )
)
_SEAL = Statement(
    lambda _: (
        update(audit_event)
        .where(audit_event.c.id == bindparam("b_id"), audit_event.c.seq.is_(None))
        .values(seq=bindparam("b_seq"), prev_hash=bindparam("b_prev"), chain_hash=bindparam("b_hash"))
    )
)


# PostgreSQL: the whole batch in one statement, its values as four arrays. An UPDATE a row sent
# through the driver's pipeline cost ~30 µs of the driver's Python a row, on the sealer's thread
# (which shares the interpreter lock with the requests being audited); SQLite's executemany
# loops in C and stays as it is.
_SEAL_ARRAYS = Statement(
    lambda _: text(
        f"UPDATE {audit_event.name} SET seq = v.seq, prev_hash = v.prev, chain_hash = v.hash"
        " FROM unnest(CAST(:ids AS bigint[]), CAST(:seqs AS bigint[]), CAST(:prevs AS text[]),"
        " CAST(:hashes AS text[])) AS v(id, seq, prev, hash)"
        f" WHERE {audit_event.name}.id = v.id AND {audit_event.name}.seq IS NULL"
    )
)


@dataclass(frozen=True)
class _Plan:
    """A batch chained from ``head``: the rows' seals and the head after them."""

    head: dict[str, Any]
    sealed: list[dict[str, Any]]
    changed: dict[str, Any]
    full: bool  # as many rows as asked for: there may be more

    @property
    def writes(self) -> bool:
        return bool(self.sealed) or any(self.head[k] != v for k, v in self.changed.items())


def _plan_batch(uow: UnitOfWork, limit: int, grace_s: float) -> _Plan:
    """Chain up to ``limit`` unsealed rows after the head as it is now, in a read transaction."""
    keyring = audit_keyring(uow.db)
    conn = uow.conn
    head = _peek_head(conn)
    rows = _UNSEALED.rows(conn, {"limit": limit})
    seq, last_hash, last_id = int(head["seq"]), str(head["chain_hash"]), int(head["last_id"])
    gap_id, gap_since = head["gap_id"], head["gap_since"]
    now_us = time.time_ns() // 1000
    sealed: list[dict[str, Any]] = []
    waiting = False
    for row in rows:
        row_id = int(row["id"])
        if row_id > last_id + 1 and not uow.db.is_sqlite:
            if gap_id != last_id + 1:
                gap_id, gap_since = last_id + 1, now_us
            if now_us - int(gap_since) < grace_s * 1_000_000:
                waiting = True
                break
        seq += 1
        digest = keyed_hash(last_hash, {**row, "seq": seq}, keyring)
        sealed.append({"b_id": row_id, "b_seq": seq, "b_prev": last_hash, "b_hash": digest})
        last_hash = digest
        last_id = max(last_id, row_id)
        if gap_id is not None and last_id >= int(gap_id):
            gap_id = gap_since = None
    changed = {
        "seq": seq,
        "chain_hash": last_hash,
        "last_id": last_id,
        "gap_id": gap_id,
        "gap_since": gap_since,
    }
    return _Plan(head, sealed, changed, len(rows) == limit and not waiting)


def _apply(uow: UnitOfWork, plan: _Plan) -> bool:
    """Write ``plan`` if the head is still the one it was chained from; False when another
    sealer moved it in between (the rows are then chained again from the new head)."""
    conn = uow.conn
    head = lock_head(conn)
    if any(head[k] != plan.head[k] for k in _HEAD_STATE):
        return False
    if conn.dialect.name == "postgresql":
        _SEAL_ARRAYS.run(
            conn,
            {
                "ids": [r["b_id"] for r in plan.sealed],
                "seqs": [r["b_seq"] for r in plan.sealed],
                "prevs": [r["b_prev"] for r in plan.sealed],
                "hashes": [r["b_hash"] for r in plan.sealed],
            },
        )
    else:
        _SEAL.run_many(conn, plan.sealed)
    if any(head[k] != v for k, v in plan.changed.items()):
        conn.execute(update(audit_chain_head).where(audit_chain_head.c.id == HEAD_ID).values(**plan.changed))
    return True


def seal(db: Database, *, batch: int = SEAL_BATCH, grace_s: float = GAP_GRACE_S) -> int:
    """Chain every committed unsealed row that can be chained now; how many were sealed.

    Each batch is chained (read, hashed) in a read transaction and written in a short write
    transaction that first checks nobody sealed since: on SQLite a write transaction holds the
    database's only write lock, and hashing a second's worth of rows inside it (~70 ms for
    2,500 rows) stalled every audited request behind the audit writer, whose INSERT waited for
    that lock in SQLite's busy handler (its sleeps grow to 100 ms): under load it doubled the
    reads' p99 (~110 ms against ~55 ms).
    """
    total = 0
    while True:
        plan = transact(db, lambda uow: _plan_batch(uow, batch, grace_s), write=False)
        if not plan.writes:
            return total
        if transact(db, functools.partial(_apply, plan=plan)):
            total += len(plan.sealed)
            if not plan.full:
                return total


class Sealer:
    """A thread running :func:`seal` every ``interval`` seconds until stopped (the server runs one)."""

    def __init__(self, db: Database, *, interval: float = 1.0, grace_s: float = GAP_GRACE_S) -> None:
        self.db = db
        self.interval = interval
        self.grace_s = grace_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-sealer", daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                seal(self.db, grace_s=self.grace_s)
            except Exception as exc:  # the database may be down for a while; the next round tries again
                log.warning("audit sealer: sealing failed: %s", str(getattr(exc, "orig", exc)).strip()[:200])
            self._stop.wait(self.interval)
