"""How the patient index reads what it matches against, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from tests.support.fhir_calls import call
from yilian.db import UnitOfWork
from yilian.fhir import FhirContext, FhirSettings
from yilian.mpi import service


def _explain(uow: UnitOfWork, sql: str, args: Any) -> str:
    cur = uow.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    if uow.conn.dialect.name == "sqlite":
        cur.execute("EXPLAIN QUERY PLAN " + sql, args)
        return "\n".join(str(row[-1]) for row in cur.fetchall())
    cur.execute("SET LOCAL enable_seqscan = off")  # a test table is small enough to read whole
    cur.execute("EXPLAIN " + sql, args)
    return "\n".join(str(row[0]) for row in cur.fetchall())


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
