"""Checking the chain: every sealed row from the last retention checkpoint on, recomputed.

Problems, each naming the row (``id``, ``seq``):

- ``edited``: a row's chain hash no longer matches its columns. Its event JSON repeats every
  column, so the columns that now disagree with it are named; when none does, the JSON itself
  (or the row's id) was changed.
- ``removed``: a run of seq numbers is missing, in the middle or at the end of the chain (the
  chain head remembers where the chain ended).
- ``reordered``: a row no longer sits where it was sealed (its ``prev_hash`` names another
  predecessor, or its seq was changed), or two rows' contents were exchanged.
- ``head``, ``checkpoint``: the chain head or a retention checkpoint disagrees with the rows.
- ``key``: rows sealed under a data key the keyring does not have cannot be checked.
- ``triggers``: a trigger that keeps the log append-only is missing, disabled or altered.
- ``anchor``: the chain no longer holds a head recorded earlier (``expect``).

A keyed row (``v2:…``) is checked with the data key it names; an unkeyed (legacy) row only
where the chain has no keyed row before it: an unkeyed row after a keyed one is a rewrite by
someone without the key. Whoever holds the keys could still rewrite the chain, and whoever can
write to the database can cut rows off its end and set the head to match; against both, keep the
head ``yilian audit verify`` prints (seq and chain hash) outside the database and pass it back
with ``--expect``: the chain must still hold that very hash at that seq.

Rows not sealed yet are counted, not reported as problems: they are protected by the triggers
only until the sealer reaches them (normally within a second).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, select

from yilian.db import Database, UnitOfWork
from yilian.fhir.store.sealing import keyring_for
from yilian.security.audit.chain import DATA_COLUMNS, hash_key_id, is_keyed, lock_head, matches
from yilian.security.audit.event import columns_from_event
from yilian.security.audit.tables import GENESIS_HASH, audit_checkpoint, audit_event
from yilian.security.audit.triggers import trigger_problems

_BATCH = 500
_RECENT = 4096  # chain hashes remembered to tell where a displaced row came from
_LOOKUPS = 20  # full-table searches for a predecessor further away, at most
_SWAP_WINDOW = 16
_SEQ_PROBE = 16  # how far from its current seq a moved row's original seq is looked for


@dataclass(frozen=True)
class Problem:
    kind: str  # edited | removed | reordered | head | checkpoint
    detail: str
    id: int | None = None
    seq: int | None = None


@dataclass
class VerifyReport:
    rows: int = 0  # sealed rows checked
    start_seq: int = 0  # the checkpoint the check started from (0: the beginning)
    last_seq: int = 0
    unsealed: int = 0
    oldest_unsealed_id: int | None = None
    problems: list[Problem] = field(default_factory=list)
    omitted: int = 0  # problems beyond the limit, counted only
    legacy_rows: int = 0  # rows sealed unkeyed, before the chain was keyed
    head_hash: str | None = None  # the chain hash at last_seq: the head to keep elsewhere

    @property
    def ok(self) -> bool:
        return not self.problems and not self.omitted


def latest_checkpoint(conn: Connection) -> tuple[int, str]:
    row = conn.execute(
        select(audit_checkpoint.c.up_to_seq, audit_checkpoint.c.chain_hash)
        .order_by(audit_checkpoint.c.up_to_seq.desc())
        .limit(1)
    ).first()
    return (int(row.up_to_seq), str(row.chain_hash)) if row else (0, GENESIS_HASH)


def _describe_edit(row: Mapping[Any, Any]) -> str:
    try:
        said = columns_from_event(bytes(row["content"]))
    except ValueError as exc:
        return f"its event JSON was changed ({exc})"
    wrong = []
    for name in DATA_COLUMNS:
        if name == "content":
            continue
        have = row[name]
        if name == "flagged":
            have = bool(have)
        if have != said.get(name):
            wrong.append(f"{name} is {have!r}, the event says {said.get(name)!r}")
    if wrong:
        return "changed column(s): " + "; ".join(wrong)
    return "its event JSON or its id was changed (the columns agree with the JSON)"


class _Walk:
    """Follows the chain row by row, collecting problems in ``report``."""

    def __init__(self, conn: Connection, report: VerifyReport, anchor: tuple[int, str], limit: int) -> None:
        self.conn = conn
        self.report = report
        self.limit = limit
        self.seq, self.hash = anchor
        self.keyring = keyring_for(conn.engine)
        self.keyed = is_keyed(anchor[1])  # a keyed row came before: no unkeyed one may follow
        self.unknown_keys: set[str] = set()
        self.edited: set[int] = set()  # ids already reported as edited
        self.prev_id: int | None = None
        self.recent: OrderedDict[str, tuple[int, int]] = OrderedDict()  # chain_hash -> (seq, id)
        self.failed: deque[tuple[dict[str, Any], int | None]] = deque(maxlen=_SWAP_WINDOW)
        self.displaced: set[str] = set()
        self.lookups = 0

    def add(self, problem: Problem) -> int | None:
        if problem.kind == "edited" and problem.id is not None:
            if problem.id in self.edited:
                return None  # one row, one problem: its successor's broken link says the same
            self.edited.add(problem.id)
        if len(self.report.problems) >= self.limit:
            self.report.omitted += 1
            return None
        self.report.problems.append(problem)
        return len(self.report.problems) - 1

    def _origin(self, prev_hash: str) -> tuple[int, int] | None:
        """(seq, id) of the row whose chain hash is ``prev_hash``: the row this one was sealed after."""
        if prev_hash == GENESIS_HASH:
            return (0, 0)
        if prev_hash in self.recent:
            return self.recent[prev_hash]
        if self.lookups >= _LOOKUPS:
            return None
        self.lookups += 1
        hit = self.conn.execute(
            select(audit_event.c.seq, audit_event.c.id).where(audit_event.c.chain_hash == prev_hash).limit(1)
        ).first()
        return (int(hit.seq), int(hit.id)) if hit is not None and hit.seq is not None else None

    def _original_seq(self, row: Mapping[Any, Any]) -> int | None:
        """The seq ``row`` was sealed at, when only its seq was changed."""
        here = int(row["seq"])
        for delta in range(1, _SEQ_PROBE + 1):
            for candidate in (here - delta, here + delta):
                if candidate > 0 and matches(
                    row["chain_hash"], row["prev_hash"], {**row, "seq": candidate}, self.keyring
                ):
                    return candidate
        return None

    def _swapped_with(self, row: Mapping[Any, Any]) -> tuple[dict[str, Any], int | None] | None:
        for other, index in self.failed:
            mine = {**row, **{k: other[k] for k in DATA_COLUMNS}}
            theirs = {**other, **{k: row[k] for k in DATA_COLUMNS}}
            if matches(row["chain_hash"], row["prev_hash"], mine, self.keyring) and matches(
                other["chain_hash"], other["prev_hash"], theirs, self.keyring
            ):
                return other, index
        return None

    def step(self, row: Mapping[Any, Any]) -> None:
        seq, row_id = int(row["seq"]), int(row["id"])
        where = f"id {row_id} (seq {seq})"
        gap = seq != self.seq + 1
        if gap:
            before = f"id {self.prev_id} (seq {self.seq})" if self.prev_id is not None else f"seq {self.seq}"
            self.add(
                Problem(
                    "removed",
                    f"seq {self.seq + 1}–{seq - 1} missing between {before} and {where}",
                    row_id,
                    seq,
                )
            )
        prev_hash, stored = row["prev_hash"], row["chain_hash"]
        if prev_hash is None or stored is None:
            self.add(Problem("edited", f"{where}: its sealing columns were cleared", row_id, seq))
        else:
            self._check(row, where, gap)
        self.seq, self.hash, self.prev_id = seq, str(stored), row_id
        if is_keyed(stored):
            self.keyed = True
        elif stored is not None:
            self.report.legacy_rows += 1
        if stored is not None:
            self.recent[str(stored)] = (seq, row_id)
            if len(self.recent) > _RECENT:
                self.recent.popitem(last=False)
        self.report.rows += 1
        self.report.last_seq = seq

    def _unkeyed_after_keyed(self, row: Mapping[Any, Any]) -> bool:
        """Nothing seals unkeyed once the chain is keyed: such a row was rewritten without the key."""
        return not is_keyed(row["chain_hash"]) and (self.keyed or is_keyed(row["prev_hash"]))

    def _cannot_check(self, row: Mapping[Any, Any], where: str) -> None:
        key_id = hash_key_id(str(row["chain_hash"])) or ""
        if key_id in self.unknown_keys:
            return
        self.unknown_keys.add(key_id)
        self.add(
            Problem(
                "key",
                f"{where} and every later row sealed under data key {key_id!r} cannot be checked: "
                "the keyring does not have that key (retired too early, or not this deployment's keys)",
                int(row["id"]),
                int(row["seq"]),
            )
        )

    def _check(self, row: Mapping[Any, Any], where: str, gap: bool) -> None:
        seq, row_id = int(row["seq"]), int(row["id"])
        unkeyed = self._unkeyed_after_keyed(row)
        verdict = False if unkeyed else matches(row["chain_hash"], row["prev_hash"], row, self.keyring)
        if verdict is None:
            self._cannot_check(row, where)
        hash_ok = verdict is not False
        link_ok = row["prev_hash"] == self.hash or gap  # after a removal the link names a removed row
        if not link_ok and hash_ok and row["prev_hash"] in self.displaced:
            return  # its predecessor was moved away; that row is already reported
        if unkeyed:
            text = (
                f"{where}: an unkeyed hash after keyed rows: the row was rewritten (its hash "
                f"recomputed) by someone without the audit key; {_describe_edit(row)}"
            )
            self.add(Problem("edited", text, row_id, seq))
        elif not hash_ok:
            original = self._original_seq(row)
            if original is not None:
                self.displaced.add(str(row["chain_hash"]))
                self.add(
                    Problem(
                        "reordered",
                        f"{where} was sealed at seq {original} and moved to seq {seq}",
                        row_id,
                        seq,
                    )
                )
                return
            swap = self._swapped_with(row)
            if swap is not None:
                other, index = swap
                text = f"the contents of {where} and id {other['id']} (seq {other['seq']}) were exchanged"
                problem = Problem("reordered", text, row_id, seq)
                if index is not None:
                    self.report.problems[index] = problem
                else:
                    self.add(problem)
                self.failed.remove(swap)
                return
            index = self.add(Problem("edited", f"{where}: hash mismatch, {_describe_edit(row)}", row_id, seq))
            self.failed.append((dict(row), index))
        if not link_ok:
            origin = self._origin(str(row["prev_hash"]))
            if origin is None and self.prev_id is None:
                start = (
                    "the start of the chain"
                    if self.seq == 0
                    else f"the retention checkpoint at seq {self.seq}"
                )
                self.add(
                    Problem(
                        "checkpoint" if self.seq else "edited",
                        f"{where} does not continue from {start}",
                        row_id,
                        seq,
                    )
                )
            elif origin is None:
                # Nothing carries the hash this row was sealed after: the row before it was
                # rewritten with a freshly computed hash, or another row put in its place.
                text = (
                    f"id {self.prev_id} (seq {self.seq}) is not the row {where} was sealed after: "
                    "it was rewritten (its hash recomputed) or put in another row's place"
                )
                self.add(Problem("edited", text, self.prev_id, self.seq))
            else:
                self.add(
                    Problem(
                        "reordered",
                        f"{where} was sealed after id {origin[1]} (seq {origin[0]}), not after seq {self.seq}",
                        row_id,
                        seq,
                    )
                )


def walk(
    conn: Connection,
    report: VerifyReport,
    anchor: tuple[int, str],
    *,
    limit: int = 1000,
    stop: Callable[[Mapping[Any, Any]], bool] | None = None,
) -> tuple[int, str]:
    """Check sealed rows after ``anchor`` (seq, hash) in seq order; stop before the first ``stop``
    accepts. Returns the (seq, chain_hash) of the last row checked."""
    w = _Walk(conn, report, anchor, limit)
    after = anchor[0]
    while True:
        rows = (
            conn.execute(
                select(audit_event).where(audit_event.c.seq > after).order_by(audit_event.c.seq).limit(_BATCH)
            )
            .mappings()
            .all()
        )
        for row in rows:
            if stop is not None and stop(row):
                return w.seq, w.hash
            w.step(row)
        if len(rows) < _BATCH:
            return w.seq, w.hash
        after = int(rows[-1]["seq"])


def _check_head(conn: Connection, head: dict[str, Any], report: VerifyReport, last: tuple[int, str]) -> None:
    head_seq, head_hash = int(head["seq"]), str(head["chain_hash"])
    if head_seq == last[0]:
        if head_seq > report.start_seq and head_hash != last[1]:
            report.problems.append(
                Problem("head", f"the chain head's hash differs from seq {head_seq}'s", None, head_seq)
            )
        return
    if head_seq > last[0]:
        report.problems.append(
            Problem(
                "removed",
                f"seq {last[0] + 1}–{head_seq} missing at the end of the chain (the head records seq {head_seq})",
                None,
                head_seq,
            )
        )
    else:
        report.problems.append(
            Problem(
                "head",
                f"rows up to seq {last[0]} were sealed past the chain head (seq {head_seq}), not by the sealer",
                None,
                last[0],
            )
        )


def parse_anchor(text: str) -> tuple[int, str]:
    """``SEQ:HASH`` (as :func:`format_anchor` writes it) as (seq, chain hash)."""
    seq, sep, digest = text.strip().partition(":")
    if not sep or not seq.isdigit() or not digest:
        raise ValueError(f"{text!r} is not SEQ:HASH (as `yilian audit verify` prints the head)")
    return int(seq), digest


def format_anchor(seq: int, digest: str) -> str:
    return f"{seq}:{digest}"


def _check_anchors(conn: Connection, report: VerifyReport, anchors: Sequence[tuple[int, str]]) -> None:
    """Each (seq, hash) recorded elsewhere must still be in the chain, with that very hash."""
    for seq, digest in anchors:
        said = f"the head kept elsewhere ({format_anchor(seq, digest)})"
        if seq == 0:
            continue
        if seq <= report.start_seq:
            found = conn.execute(
                select(audit_checkpoint.c.chain_hash).where(audit_checkpoint.c.up_to_seq == seq)
            ).scalar()
            if found is not None and found != digest:
                report.problems.append(
                    Problem(
                        "anchor", f"{said}: the retention checkpoint at seq {seq} has another hash", None, seq
                    )
                )
            continue  # pruned: nothing left to compare with but a checkpoint at exactly that seq
        found = conn.execute(select(audit_event.c.chain_hash).where(audit_event.c.seq == seq)).scalar()
        if found is None:
            text = f"{said}: the chain has no seq {seq} (it ends at seq {report.last_seq}): rows were removed"
            report.problems.append(Problem("anchor", text, None, seq))
        elif found != digest:
            text = f"{said}: seq {seq} now has another hash: the chain up to there was rewritten"
            report.problems.append(Problem("anchor", text, None, seq))


def verify_in(uow: UnitOfWork, *, limit: int = 1000, expect: Sequence[tuple[int, str]] = ()) -> VerifyReport:
    """:func:`verify` inside the caller's unit of work."""
    conn = uow.conn
    # A shared lock on the head keeps sealing and pruning out while the chain is read.
    head = lock_head(conn, share=True)
    report = VerifyReport()
    anchor = latest_checkpoint(conn)
    report.start_seq = report.last_seq = anchor[0]
    last = walk(conn, report, anchor, limit=limit)
    report.head_hash = last[1] if last[0] else None
    _check_head(conn, head, report, last)
    _check_anchors(conn, report, expect)
    report.problems.extend(Problem("triggers", text) for text in trigger_problems(conn))
    count, oldest = conn.execute(
        select(func.count(), func.min(audit_event.c.id)).where(audit_event.c.seq.is_(None))
    ).one()
    report.unsealed = int(count)
    report.oldest_unsealed_id = None if oldest is None else int(oldest)
    return report


def verify(db: Database, *, limit: int = 1000, expect: Sequence[tuple[int, str]] = ()) -> VerifyReport:
    """Recompute the chain from the last checkpoint (or the first row) and name every problem;
    ``expect``: (seq, chain hash) heads recorded earlier, outside the database."""
    with UnitOfWork(db) as uow:
        return verify_in(uow, limit=limit, expect=expect)
