"""How a registration finds the records worth scoring (``mpi_block``) and reads them, on
SQLite and PostgreSQL.

At a million persons some blocking keys are shared by thousands of records and a record can
share keys with several hundred: the search skips keys over the real-time cap without reading
them whole, scores at most a budget of candidates (the most telling first), reaches every
block by its index whatever the planner's estimates, and reads the candidates' Patients by key.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, insert

from tests.support.fhir_calls import call
from yilian.db import UnitOfWork
from yilian.fhir import FhirContext, FhirSettings
from yilian.mpi import service
from yilian.mpi.matching.index import REALTIME_MAX_BLOCK
from yilian.mpi.tables import block_key, record_link

COMMON, WIDE, RARE, OTHER = 11, 22, 33, 44  # blocking-key hashes


def _index(uow: UnitOfWork, keys_of: dict[str, list[int]]) -> None:
    uow.conn.execute(
        insert(record_link),
        [
            {"patient_id": p, "person_id": f"person-{p}", "how": "new", "source": None, "updated": 0}
            for p in keys_of
        ],
    )
    uow.conn.execute(
        insert(block_key), [{"key": k, "patient_id": p} for p, ks in keys_of.items() for k in ks]
    )


def test_keys_over_the_cap_are_skipped_and_the_budget_keeps_the_most_telling(uow: UnitOfWork) -> None:
    keys_of: dict[str, list[int]] = {}
    for i in range(REALTIME_MAX_BLOCK + 1):  # a surname in one postcode: one record too many
        keys_of[f"common-{i:03d}"] = [COMMON]
    for i in range(80):  # a name and birth year: under the cap, more than the budget
        keys_of[f"wide-{i:03d}"] = [WIDE]
    keys_of["wide-079"] = [WIDE, RARE]  # also shares the ID number
    keys_of["rare-2"] = [RARE, COMMON]
    keys_of["the-record-itself"] = [RARE, WIDE]
    keys_of["elsewhere"] = [OTHER]
    _index(uow, keys_of)

    found = service._candidates(
        uow, [COMMON, WIDE, RARE], exclude="the-record-itself", exclude_person="person-rare-2", budget=10
    )
    assert len(found) == 10
    # The ID number's block (3 records) outweighs the 81-record one; the common key counts for
    # nothing (its 202 records are not read), the excluded record and person are left out.
    assert found[0] == ("wide-079", "person-wide-079")
    assert all(p.startswith("wide-") for p, _ in found)
    assert found[1:] == [(f"wide-{i:03d}", f"person-wide-{i:03d}") for i in range(9)]

    everything = service._candidates(
        uow, [COMMON, WIDE, RARE, OTHER], exclude="", exclude_person=None, budget=500
    )
    assert {p for p, _ in everything} == {p for p in keys_of if not p.startswith("common-")}
    assert service._candidates(uow, [], exclude="", exclude_person=None, budget=10) == []


def _plan(uow: UnitOfWork, statement: service.Statement, params: dict[str, Any]) -> str:
    sql, names, own = statement.compiled(uow.conn.dialect)
    values = {**own, **params}
    return _explain(uow, sql, values if names is None else tuple(values[n] for n in names))


def _explain(uow: UnitOfWork, sql: str, args: Any) -> str:
    cur = uow.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    if uow.conn.dialect.name == "sqlite":
        cur.execute("EXPLAIN QUERY PLAN " + sql, args)
        return "\n".join(str(row[-1]) for row in cur.fetchall())
    cur.execute("SET LOCAL enable_seqscan = off")  # a test table is small enough to read whole
    cur.execute("EXPLAIN " + sql, args)
    return "\n".join(str(row[0]) for row in cur.fetchall())


def test_every_block_is_counted_and_read_through_the_key_index(uow: UnitOfWork) -> None:
    _index(uow, {f"p{i}": [COMMON, WIDE] for i in range(30)})
    keys = [COMMON, WIDE, RARE]
    params: dict[str, Any] = {f"k{i}": k for i, k in enumerate(keys)}
    params.update(exclude="", exclude_person="", budget=50)
    plan = _plan(uow, service._candidates_statement(len(keys)), params)
    if uow.conn.dialect.name == "sqlite":
        # Each key's count and rows are a range of the (key, patient_id) primary key.
        assert plan.count("USING COVERING INDEX sqlite_autoindex_mpi_block_1 (key=?)") == 2 * len(keys), plan
        assert "SCAN mpi_block" not in plan and "SCAN b" not in plan, plan
    else:
        assert "Seq Scan on mpi_block" not in plan and "Seq Scan on b" not in plan, plan
        assert plan.count("Limit") >= len(keys) + 1, plan  # each count stops one past the cap
        assert plan.count("Index Cond: (key = ") >= 2 * len(keys), plan  # pk_mpi_block's range


def test_the_candidates_patients_are_read_by_their_key(uow: UnitOfWork) -> None:
    ctx = FhirContext(settings=FhirSettings())
    for pid in ("c1", "c2", "c3"):
        assert call(uow, ctx, "PUT", f"Patient/{pid}", {"resourceType": "Patient", "id": pid}).status == 201
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, sql: str, params: Any, _context: Any, _many: bool) -> None:
        seen.append((sql, params))

    event.listen(uow.conn, "before_cursor_execute", record)
    try:
        assert set(service._load_features(uow, ["c1", "c2", "c3", "nobody"])) == {"c1", "c2", "c3"}
    finally:
        event.remove(uow.conn, "before_cursor_execute", record)
    [(sql, params)] = [(q, p) for q, p in seen if "FROM resource" in q]
    plan = _explain(uow, sql, params)
    if uow.conn.dialect.name == "sqlite":
        # Not a row-value IN list, which SQLite answers by reading every resource (1.3 s at a
        # million Patients).
        assert "USING INDEX sqlite_autoindex_resource_1 (res_type=? AND res_id=?)" in plan, plan
        assert "SCAN resource" not in plan, plan
    else:  # an index either way (at a million Patients: uq_resource_res_type_res_id, = ANY)
        assert "Seq Scan" not in plan, plan
