"""Batched statements (``yilian.db.statements.Batch``) and the unit of work's commit batch: run in
order, results read after the send, errors raised as SQLAlchemy's with nothing kept, on both
databases (one round trip on PostgreSQL, one statement after another on SQLite)."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, bindparam, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from yilian.db import Database, UnitOfWork
from yilian.db.statements import Batch, Family, Statement

_md = MetaData()
counter = Table("test_batch_counter", _md, Column("id", Integer, primary_key=True), Column("v", Integer))

ADD = Statement(
    lambda _: insert(counter).values(id=bindparam("id", type_=Integer), v=bindparam("v", type_=Integer))
)
BUMP = Statement(
    lambda _: (
        update(counter)
        .where(counter.c.id == bindparam("id", type_=Integer))
        .values(v=counter.c.v + bindparam("by", type_=Integer))
        .returning(counter.c.v)
    )
)
ROWS = Family(
    lambda _, n: insert(counter).values(
        [{"id": bindparam(f"id_{i}", type_=Integer), "v": bindparam("v", type_=Integer)} for i in range(n)]
    )
)


@pytest.fixture
def table(db: Database) -> Database:
    with db.engine.begin() as conn:
        counter.drop(conn, checkfirst=True)
        counter.create(conn)
    return db


def stored(db: Database) -> dict[int, int]:
    with UnitOfWork(db) as uow:
        return {int(r.id): int(r.v) for r in uow.conn.execute(select(counter))}


def test_a_batch_runs_in_order_and_its_results_are_read_after_the_send(table: Database) -> None:
    with UnitOfWork(table, write=True) as uow:
        batch = Batch(uow.conn)
        ADD.defer(batch, {"id": 1, "v": 10})
        first = BUMP.defer(batch, {"id": 1, "by": 5})  # sees the insert before it
        ROWS.defer(batch, {"v": 0}, [{"id": 2}, {"id": 3}])
        missing = BUMP.defer(batch, {"id": 99, "by": 1})
        with pytest.raises(RuntimeError, match="has not been sent"):
            first.one_or_none()
        assert len(batch) == 4
        batch.send()
        assert len(batch) == 0
        assert first.one_or_none() == (15,)
        assert missing.one_or_none() is None  # no row matched: nothing returned
        # The connection is usable as ever after the batch, in the same transaction.
        assert uow.conn.execute(select(counter.c.v).where(counter.c.id == 1)).scalar_one() == 15
    assert stored(table) == {1: 15, 2: 0, 3: 0}


def test_an_error_in_a_batch_is_sqlalchemys_and_nothing_of_the_transaction_is_kept(table: Database) -> None:
    with UnitOfWork(table, write=True) as uow:
        ADD.run(uow.conn, {"id": 1, "v": 1})
    with pytest.raises(IntegrityError), UnitOfWork(table, write=True) as uow:
        ADD.run(uow.conn, {"id": 2, "v": 2})
        batch = Batch(uow.conn)
        ADD.defer(batch, {"id": 3, "v": 3})
        ADD.defer(batch, {"id": 1, "v": 9})  # the primary key is taken
        ADD.defer(batch, {"id": 4, "v": 4})
        batch.send()
    assert stored(table) == {1: 1}


@pytest.mark.parametrize("size", [1, 3])
def test_a_batch_error_names_the_sql_but_not_the_values(table: Database, size: int) -> None:
    """Batches carry audit rows and stored replies: an error must not put them in the logs."""
    with UnitOfWork(table, write=True) as uow:
        ADD.run(uow.conn, {"id": 1, "v": 1})
    with pytest.raises(IntegrityError) as caught, UnitOfWork(table, write=True) as uow:
        batch = Batch(uow.conn)
        for i in range(size - 1):
            ADD.defer(batch, {"id": 10 + i, "v": 10})
        ADD.defer(batch, {"id": 1, "v": 987654321})
        batch.send()
    assert "test_batch_counter" in str(caught.value)
    assert "987654321" not in str(caught.value)


def test_the_commit_batch_is_sent_with_the_commit_and_dropped_with_a_rollback(table: Database) -> None:
    with UnitOfWork(table, write=True) as uow:
        ADD.defer(uow.at_commit, {"id": 1, "v": 1})
        # Hooks run first and may still add to it.
        uow.before_commit.append(lambda: ADD.defer(uow.at_commit, {"id": 2, "v": 2}) and None)
        assert uow.conn.execute(select(counter)).all() == []  # not sent before the commit
    assert stored(table) == {1: 1, 2: 2}

    class Refused(Exception):
        pass

    with pytest.raises(Refused), UnitOfWork(table, write=True) as uow:
        ADD.defer(uow.at_commit, {"id": 3, "v": 3})
        raise Refused
    assert stored(table) == {1: 1, 2: 2}


def test_a_batch_that_opens_the_transaction_is_in_it(table: Database) -> None:
    """On PostgreSQL the batch carries the transaction's BEGIN: what it wrote rolls back with it."""
    with UnitOfWork(table, write=True) as uow:
        batch = Batch(uow.conn)
        ADD.defer(batch, {"id": 1, "v": 1})
        ADD.defer(batch, {"id": 2, "v": 2})
        batch.send()
        uow.rollback()
    assert stored(table) == {}
    with UnitOfWork(table, write=True) as uow:
        batch = Batch(uow.conn)
        ADD.defer(batch, {"id": 3, "v": 3})
        ADD.defer(batch, {"id": 4, "v": 4})
        batch.send()
        assert uow.conn.execute(text("SELECT count(*) FROM test_batch_counter")).scalar_one() == 2
    assert stored(table) == {3: 3, 4: 4}


# --------------------------------------------------------------------- the connection's cursor

ALL = Statement(lambda _: select(counter.c.id, counter.c.v).order_by(counter.c.id))


def test_statements_on_one_connection_each_return_their_own_rows(table: Database) -> None:
    """The statements may share the connection's driver cursor: each result is read whole before
    the next statement, and a failed statement leaves the next one working."""
    with UnitOfWork(table, write=True) as uow:
        for i in range(1, 4):
            ADD.run(uow.conn, {"id": i, "v": i * 10})
        everything = ALL.all(uow.conn, {})
        bumped = BUMP.one_or_none(uow.conn, {"id": 2, "by": 1})
        assert everything == [(1, 10), (2, 20), (3, 30)]
        assert bumped == (21,)
        assert BUMP.one_or_none(uow.conn, {"id": 99, "by": 1}) is None
        assert ALL.rows(uow.conn, {})[1] == {"id": 2, "v": 21}
    with UnitOfWork(table, write=True) as uow, pytest.raises(IntegrityError):
        ADD.run(uow.conn, {"id": 1, "v": 0})  # a duplicate key: the transaction is lost
    with UnitOfWork(table, write=True) as uow:  # the same pooled connection, its cursor reused
        assert BUMP.one_or_none(uow.conn, {"id": 3, "by": 2}) == (32,)
    assert stored(table) == {1: 10, 2: 21, 3: 32}


def test_an_invalidated_connection_takes_its_cursor_with_it(table: Database) -> None:
    with UnitOfWork(table, write=True) as uow:
        ADD.run(uow.conn, {"id": 1, "v": 1})
    with table.engine.connect() as conn:
        assert ALL.all(conn, {}) == [(1, 1)]
        conn.invalidate()  # as after a lost connection: the pool closes the DBAPI connection
    with UnitOfWork(table) as uow:
        assert ALL.all(uow.conn, {}) == [(1, 1)]


def test_a_statement_read_in_part_leaves_no_old_snapshot_on_the_connection(table: Database) -> None:
    """``one_or_none`` reads one row of a result that has more. On SQLite a statement left
    unfinished keeps its read snapshot open: the connection's next transaction, after it is back
    in the pool, would still see the database as it was then."""
    with UnitOfWork(table, write=True) as uow:
        for i in range(1, 4):
            ADD.run(uow.conn, {"id": i, "v": i})
    with table.engine.connect() as reader:
        with reader.begin():
            assert ALL.one_or_none(reader, {}) == (1, 1)
        with UnitOfWork(table, write=True) as uow:  # another connection commits meanwhile
            ADD.run(uow.conn, {"id": 4, "v": 4})
        with reader.begin():
            assert ALL.all(reader, {}) == [(1, 1), (2, 2), (3, 3), (4, 4)]
            assert reader.execute(select(func.count()).select_from(counter)).scalar_one() == 4
