"""Rows written through the driver's fast paths (``COPY`` on PostgreSQL, the driver's executemany
on SQLite) land exactly as SQLAlchemy would have written them, on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import Table, bindparam, select
from sqlalchemy.exc import DBAPIError

from yilian.db import UnitOfWork
from yilian.db.dialect import delete_matching, insert_ignore, insert_rows, insert_tables
from yilian.db.statements import Statement
from yilian.db.uow import is_transient
from yilian.fhir.store.repository import insert_resource
from yilian.fhir.store.tables import idx_number, idx_string, idx_token, resource_version
from yilian.mpi.tables import block_key


def test_insert_rows_writes_every_value_as_given(uow: UnitOfWork) -> None:
    rows = [
        {
            "resource_pk": 10**12 + i,
            "res_type": "Patient",
            "param": "name",
            "value_norm": value.lower(),
            "value_exact": value,
        }
        for i, value in enumerate(["Zhang", "张伟", 'O\'Brien\t\\ "x"', "a\nb", "ü" * 300])
    ]
    insert_rows(uow.conn, idx_string, rows)
    stored = uow.conn.execute(
        select(idx_string).where(idx_string.c.resource_pk >= 10**12).order_by(idx_string.c.resource_pk)
    ).mappings()
    assert [dict(r) for r in stored] == rows


def test_insert_rows_keeps_floats_bytes_nulls_and_column_defaults(uow: UnitOfWork) -> None:
    insert_rows(
        uow.conn,
        idx_number,
        [{"resource_pk": 7, "res_type": "RiskAssessment", "param": "probability", "value": 0.1 + 0.2}],
    )
    assert uow.conn.execute(select(idx_number.c.value).where(idx_number.c.resource_pk == 7)).scalar_one() == (
        0.1 + 0.2
    )
    pk = insert_resource(
        uow.conn,
        res_type="Patient",
        res_id="p-dialect",
        last_updated=1,
        content=b"{}",
        patient_key=None,
        method="POST",
        write_version=False,
    )
    version = {
        "resource_pk": pk,
        "version": 1,
        "res_type": "Patient",
        "res_id": "p-dialect",
        "last_updated": 1,
        "method": "POST",
        "patient_key": None,
        "content": b'{"resourceType":"Patient","id":"p-dialect"}',
    }
    # "deleted" left out: the column's default (False) applies, as it would through SQLAlchemy.
    insert_rows(
        uow.conn, resource_version, [version, {**version, "version": 2, "deleted": True, "content": None}]
    )
    stored = uow.conn.execute(
        select(resource_version.c.version, resource_version.c.deleted, resource_version.c.content)
        .where(resource_version.c.resource_pk == pk)
        .order_by(resource_version.c.version)
    ).all()
    assert [(v, bool(d), c) for v, d, c in stored] == [(1, False, version["content"]), (2, True, None)]


def test_a_key_that_is_no_column_is_refused_not_dropped(uow: UnitOfWork) -> None:
    row = {"resource_pk": 1, "res_type": "Patient", "param": "name", "value_norm": "a", "value_exact": "a"}
    with pytest.raises(ValueError, match="no_such_column"):
        insert_rows(uow.conn, idx_string, [row, {**row, "no_such_column": "x"}])


def test_a_database_error_is_raised_as_sqlalchemy_raises_it(uow: UnitOfWork) -> None:
    row = {"resource_pk": 1, "res_type": "Patient", "param": "name", "value_norm": None, "value_exact": "a"}
    with pytest.raises(DBAPIError) as caught:  # NOT NULL value_norm
        insert_rows(uow.conn, idx_string, [row])
    assert not is_transient(caught.value)


def test_insert_ignore_skips_existing_and_repeated_keys(uow: UnitOfWork) -> None:
    insert_ignore(uow.conn, block_key, [{"key": 41, "patient_id": "p1"}])
    insert_ignore(
        uow.conn,
        block_key,
        [
            {"key": 41, "patient_id": "p1"},  # already there
            {"key": 41, "patient_id": "p2"},
            {"key": -(2**63), "patient_id": "p2"},  # the whole signed 64-bit range
            {"key": -(2**63), "patient_id": "p2"},  # twice in one call
        ],
    )
    stored = uow.conn.execute(
        select(block_key.c.key, block_key.c.patient_id)
        .where(block_key.c.key.in_([41, -(2**63)]))
        .order_by(block_key.c.key, block_key.c.patient_id)
    ).all()
    assert [tuple(r) for r in stored] == [(-(2**63), "p2"), (41, "p1"), (41, "p2")]


def test_small_and_large_batches_over_several_tables_are_stored_whole(uow: UnitOfWork) -> None:
    # A create's few rows and an import chunk's thousands.
    for n in (3, 2500):
        base = 10**13 + n * 10**6
        strings = [
            {
                "resource_pk": base + i,
                "res_type": "Patient",
                "param": "name",
                "value_norm": f"wang {i}",
                "value_exact": f"王 {i}",
            }
            for i in range(n)
        ]
        numbers = [
            {"resource_pk": base + i, "res_type": "RiskAssessment", "param": "probability", "value": i / 7}
            for i in range(n)
        ]
        insert_tables(uow.conn, [(idx_string, strings), (idx_number, []), (idx_number, numbers)])
        got_strings = uow.conn.execute(
            select(idx_string)
            .where(idx_string.c.resource_pk.between(base, base + n))
            .order_by(idx_string.c.resource_pk)
        ).mappings()
        assert [dict(r) for r in got_strings] == strings
        got_numbers = uow.conn.execute(
            select(idx_number.c.value)
            .where(idx_number.c.resource_pk.between(base, base + n))
            .order_by(idx_number.c.resource_pk)
        ).scalars()
        assert list(got_numbers) == [i / 7 for i in range(n)]


def test_delete_matching_removes_one_resources_rows_from_every_table(uow: UnitOfWork) -> None:
    def rows(pk: int) -> list[tuple[Table, list[dict[str, object]]]]:
        return [
            (
                idx_string,
                [
                    {
                        "resource_pk": pk,
                        "res_type": "Patient",
                        "param": "name",
                        "value_norm": "li",
                        "value_exact": "李",
                    }
                ],
            ),
            (
                idx_number,
                [{"resource_pk": pk, "res_type": "RiskAssessment", "param": "probability", "value": 0.5}],
            ),
        ]

    gone, kept = 10**14 + 1, 10**14 + 2
    insert_tables(uow.conn, [*rows(gone), *rows(kept)])
    delete_matching(uow.conn, [idx_string, idx_number, idx_token], "resource_pk", gone)
    for table in (idx_string, idx_number):
        left = uow.conn.execute(
            select(table.c.resource_pk).where(table.c.resource_pk.in_([gone, kept]))
        ).scalars()
        assert list(left) == [kept]


def test_a_compiled_statement_keeps_the_values_written_into_it(uow: UnitOfWork) -> None:
    base = 10**15
    insert_rows(
        uow.conn,
        idx_number,
        [
            {"resource_pk": base + i, "res_type": "RiskAssessment", "param": "probability", "value": i}
            for i in range(5)
        ],
    )
    # limit(2) and the literal "RiskAssessment" are values of the statement, not of the call.
    newest = Statement(
        lambda _: (
            select(idx_number.c.resource_pk)
            .where(
                idx_number.c.res_type == "RiskAssessment", idx_number.c.resource_pk >= bindparam("from_pk")
            )
            .order_by(idx_number.c.resource_pk.desc())
            .limit(2)
        )
    )
    assert newest.all(uow.conn, {"from_pk": base}) == [(base + 4,), (base + 3,)]
    assert newest.all(uow.conn, {"from_pk": base + 4}) == [(base + 4,)]
