"""Rewriting one column of every row of a table, a batch at a time (key rotation's re-encryption),
and deleting rows a batch at a time (retention).

The rows are read in key order (keyset paging, never OFFSET) and each changed value is written
back only if the row still holds the value that was read (compare-and-set on the column): a
write that changed the row meanwhile wins, and since a concurrent writer already uses the
current key there is nothing left to redo. Each batch is its own short transaction, so a
rewrite of millions of rows never holds locks that writers would wait on for long, and an
interrupted run simply starts again (rows already rewritten are left as they are).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, and_, delete, or_, select, update

from yilian.db.engine import Database
from yilian.db.uow import UnitOfWork, transact


@dataclass
class RewriteCount:
    rows: int = 0  # rows read
    changed: int = 0  # rows whose value was rewritten
    skipped: int = 0  # rows changed by someone else between the read and the write


def _after(key_cols: list[Any], last: tuple[Any, ...]) -> Any:
    """Rows strictly after ``last`` in the order of ``key_cols`` (a composite keyset condition)."""
    terms = []
    for i, col in enumerate(key_cols):
        terms.append(and_(*(c == v for c, v in zip(key_cols[:i], last[:i], strict=True)), col > last[i]))
    return or_(*terms)


def rewrite_column(
    db: Database,
    table: Table,
    column: str,
    transform: Callable[[Any], Any | None],
    *,
    batch: int = 500,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
    into: RewriteCount | None = None,
) -> RewriteCount:
    """Apply ``transform`` to ``column`` of every row; ``transform`` returns the new value, or
    None for a row to leave alone. With ``dry_run`` nothing is written (``changed`` counts what
    would be). The counts are added to ``into`` (returned) as each batch commits, so a caller
    whose run stops midway knows how much was rewritten."""
    keys = list(table.primary_key.columns)
    value = table.c[column]
    count = into if into is not None else RewriteCount()
    last: tuple[Any, ...] | None = None
    while True:

        def one_batch(
            uow: UnitOfWork, after: tuple[Any, ...] | None = last
        ) -> tuple[tuple[Any, ...] | None, int, int, int]:
            # Counts are returned, not accumulated here: transact() may run this again.
            query = select(*keys, value).where(value.is_not(None)).order_by(*keys).limit(batch)
            if after is not None:
                query = query.where(_after(keys, after))
            rows = uow.conn.execute(query).all()
            changed = skipped = 0
            for row in rows:
                new = transform(row[-1])
                if new is None:
                    continue
                if dry_run:
                    changed += 1
                    continue
                done = uow.conn.execute(
                    update(table)
                    .where(*(k == v for k, v in zip(keys, row[:-1], strict=True)), value == row[-1])
                    .values({column: new})
                ).rowcount
                if done == 1:
                    changed += 1
                else:
                    skipped += 1
            nxt = tuple(rows[-1][:-1]) if len(rows) == batch else None
            return nxt, len(rows), changed, skipped

        last, n, changed, skipped = transact(db, one_batch, write=not dry_run)
        count.rows += n
        count.changed += changed
        count.skipped += skipped
        if progress is not None and n:
            progress(n)
        if last is None:
            return count


def delete_where(
    db: Database,
    table: Table,
    conditions: Sequence[Any],
    *,
    batch: int = 5000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Delete the rows matching ``conditions``, ``batch`` at a time, each batch its own short
    transaction (retention pruning beside a running server); how many were deleted.

    A batch of keys is read, then exactly those rows are deleted if they still match: portable
    (SQLite has no ``DELETE … LIMIT`` by default), and a row changed meanwhile is left alone.
    """
    (key,) = table.primary_key.columns
    removed = 0
    while True:

        def one_batch(uow: UnitOfWork) -> tuple[int, int]:
            ids = [r[0] for r in uow.conn.execute(select(key).where(*conditions).order_by(key).limit(batch))]
            if not ids:
                return 0, 0
            return len(ids), int(uow.conn.execute(delete(table).where(key.in_(ids), *conditions)).rowcount)

        seen, n = transact(db, one_batch)
        removed += n
        if progress is not None and n:
            progress(n)
        if seen < batch:
            return removed
