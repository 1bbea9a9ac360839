"""A condition whose cache key is worked out once (``Prebuilt``) gives every statement it is placed
in the rows the plain condition gives, on both databases: another caller's values reach a cached
compiled statement, and the same condition on two different aliases never shares compiled SQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, and_, exists, literal, or_, select
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import FromClause

from yilian.db import Database, UnitOfWork
from yilian.db.prebuilt import Prebuilt

meta = MetaData()
item = Table("t_prebuilt_item", meta, Column("pk", Integer, primary_key=True), Column("owner", String(20)))
grant = Table(
    "t_prebuilt_grant",
    meta,
    Column("org", String(20), primary_key=True),
    Column("owner", String(20), primary_key=True),
)
ITEMS = [(1, "ann"), (2, "bob"), (3, "cat"), (4, None)]
GRANTS = [("org-a", "ann"), ("org-a", "cat"), ("org-b", "bob")]


@pytest.fixture(scope="module")
def tables(db: Database) -> Iterator[Database]:
    meta.create_all(db.engine)
    with db.engine.begin() as conn:
        conn.execute(item.insert(), [{"pk": pk, "owner": o} for pk, o in ITEMS])
        conn.execute(grant.insert(), [{"org": g, "owner": o} for g, o in GRANTS])
    yield db
    meta.drop_all(db.engine)


def visible(r: FromClause, org: str) -> ColumnElement[bool]:
    """What an access filter looks like: a correlated EXISTS probe with values bound."""
    probe = select(literal(1)).where(grant.c.org == org, grant.c.owner == r.c.owner).offset(0)
    return or_(r.c.owner.is_(None), exists(probe))


def pks(db: Database, stmt: object) -> list[int]:
    with UnitOfWork(db) as uow:
        return sorted(uow.conn.execute(stmt).scalars())  # type: ignore[call-overload]


def test_each_callers_values_reach_the_cached_statement(tables: Database) -> None:
    # Built once per org, as the policy keeps them; the compiled SQL is shared through the cache.
    filters = {org: Prebuilt(visible(item, org), item) for org in ("org-a", "org-b", "org-c")}
    for _ in range(2):  # the second round runs entirely from the compiled cache
        for org, cond in filters.items():
            assert pks(tables, select(item.c.pk).where(cond)) == pks(
                tables, select(item.c.pk).where(visible(item, org))
            )
    assert pks(tables, select(item.c.pk).where(filters["org-a"])) == [1, 3, 4]
    assert pks(tables, select(item.c.pk).where(filters["org-b"])) == [2, 4]
    assert pks(tables, select(item.c.pk).where(filters["org-c"])) == [4]


def test_the_same_condition_on_another_alias_is_compiled_for_that_alias(tables: Database) -> None:
    left, right = item.alias(), item.alias()
    base = select(left.c.pk, right.c.pk).where(left.c.pk == right.c.pk + 1)
    on_left = base.where(Prebuilt(visible(left, "org-a"), left))
    on_right = base.where(Prebuilt(visible(right, "org-a"), right))
    # Same shape, same values; only which alias the filter guards differs.
    with UnitOfWork(tables) as uow:
        got_left = sorted(map(tuple, uow.conn.execute(on_left)))
        got_right = sorted(map(tuple, uow.conn.execute(on_right)))
        want_left = sorted(map(tuple, uow.conn.execute(base.where(visible(left, "org-a")))))
        want_right = sorted(map(tuple, uow.conn.execute(base.where(visible(right, "org-a")))))
    assert got_left == want_left == [(3, 2), (4, 3)]
    assert got_right == want_right == [(2, 1), (4, 3)]


def test_it_combines_with_other_conditions_in_parentheses(tables: Database) -> None:
    cond = Prebuilt(visible(item, "org-b"), item)
    # OR binds looser than AND: without its parentheses "owner IS NULL OR …" would escape the AND.
    assert pks(tables, select(item.c.pk).where(and_(item.c.pk < 4, cond))) == [2]
    assert pks(tables, select(item.c.pk).where(or_(item.c.pk == 1, cond))) == [1, 2, 4]
    assert pks(tables, select(item.c.pk).where(~cond)) == [1, 3]


def test_a_condition_used_twice_in_one_statement_binds_its_values_once(tables: Database) -> None:
    cond = Prebuilt(visible(item, "org-a"), item)
    stmt = select(item.c.pk).where(cond, or_(cond, item.c.pk == 2))
    for _ in range(2):
        assert pks(tables, stmt) == [1, 3, 4]
    other = Prebuilt(visible(item, "org-b"), item)
    assert pks(tables, select(item.c.pk).where(other, or_(other, item.c.pk == 2))) == [2, 4]
