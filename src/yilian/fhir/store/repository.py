"""SQL for resources and their versions. Callers pass a unit of work; nothing here commits."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.expression import FromClause

from yilian.db.dialect import delete_matching, insert_tables
from yilian.fhir.store.sealing import open_content
from yilian.fhir.store.tables import (
    INDEX_TABLES,
    conditional_claim,
    idx_reference,
    resource,
    resource_version,
)


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One version of a resource as stored (``content`` is None for a deletion)."""

    pk: int
    res_type: str
    res_id: str
    version: int
    last_updated: int  # µs since epoch
    deleted: bool
    content: bytes | None
    method: str = ""
    patient_key: str | None = None  # whose compartment it is in (what access decisions look at)


_CURRENT = select(
    resource.c.pk,
    resource.c.version,
    resource.c.last_updated,
    resource.c.deleted,
    resource.c.content,
    resource.c.patient_key,
).where(resource.c.res_type == bindparam("t"), resource.c.res_id == bindparam("i"))
_CURRENT_FOR_UPDATE = _CURRENT.with_for_update()


def get_current(
    conn: Connection, res_type: str, res_id: str, *, for_update: bool = False
) -> StoredVersion | None:
    stmt = _CURRENT_FOR_UPDATE if for_update and conn.dialect.name == "postgresql" else _CURRENT
    row = conn.execute(stmt, {"t": res_type, "i": res_id}).first()
    if row is None:
        return None
    return StoredVersion(
        row.pk,
        res_type,
        res_id,
        row.version,
        row.last_updated,
        row.deleted,
        open_content(conn.engine, row.content),
        "",
        row.patient_key,
    )


_VERSION = select(
    resource_version.c.resource_pk,
    resource_version.c.version,
    resource_version.c.last_updated,
    resource_version.c.deleted,
    resource_version.c.content,
    resource_version.c.method,
    resource_version.c.patient_key,
).where(
    resource_version.c.res_type == bindparam("t"),
    resource_version.c.res_id == bindparam("i"),
    resource_version.c.version == bindparam("v"),
)


def get_version(conn: Connection, res_type: str, res_id: str, version: int) -> StoredVersion | None:
    row = conn.execute(_VERSION, {"t": res_type, "i": res_id, "v": version}).first()
    if row is None:
        return None
    return StoredVersion(
        row.resource_pk,
        res_type,
        res_id,
        row.version,
        row.last_updated,
        row.deleted,
        open_content(conn.engine, row.content),
        row.method,
        row.patient_key,
    )


def insert_resource(
    conn: Connection,
    *,
    res_type: str,
    res_id: str,
    last_updated: int,
    content: bytes,
    patient_key: str | None,
    method: str,
    write_version: bool = True,
) -> int:
    """Insert version 1 of a new resource; raises IntegrityError if the id is taken.

    With ``write_version=False`` the caller writes the version row itself (buffered).
    """
    pk = conn.execute(
        insert(resource).returning(resource.c.pk),
        {
            "res_type": res_type,
            "res_id": res_id,
            "version": 1,
            "last_updated": last_updated,
            "deleted": False,
            "patient_key": patient_key,
            "content": content,
        },
    ).scalar_one()
    if not write_version:
        return int(pk)
    conn.execute(
        insert(resource_version),
        {
            "resource_pk": pk,
            "version": 1,
            "res_type": res_type,
            "res_id": res_id,
            "last_updated": last_updated,
            "deleted": False,
            "method": method,
            "content": content,
            "patient_key": patient_key,
        },
    )
    return int(pk)


def insert_many(conn: Connection, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Bulk insert of version-1 resources (import); returns their surrogate keys in order."""
    pks: list[int] = []
    stmt = insert(resource).returning(resource.c.pk, sort_by_parameter_order=True)
    result = conn.execute(
        stmt,
        [
            {
                "res_type": r["res_type"],
                "res_id": r["res_id"],
                "version": 1,
                "last_updated": r["last_updated"],
                "deleted": False,
                "patient_key": r["patient_key"],
                "content": r["content"],
            }
            for r in rows
        ],
    )
    pks = [int(x) for x in result.scalars().all()]
    conn.execute(
        insert(resource_version),
        [
            {
                "resource_pk": pk,
                "version": 1,
                "res_type": r["res_type"],
                "res_id": r["res_id"],
                "last_updated": r["last_updated"],
                "deleted": False,
                "method": r.get("method", "POST"),
                "content": r["content"],
                "patient_key": r["patient_key"],
            }
            for pk, r in zip(pks, rows, strict=True)
        ],
    )
    return pks


_BUMP = (
    update(resource)
    .where(resource.c.pk == bindparam("b_pk"), resource.c.version == bindparam("b_expected"))
    .values(
        version=bindparam("b_version"),
        last_updated=bindparam("b_last_updated"),
        deleted=bindparam("b_deleted"),
        patient_key=bindparam("b_patient_key"),
        content=bindparam("b_content"),
    )
)


def write_version(
    conn: Connection,
    *,
    pk: int,
    res_type: str,
    res_id: str,
    expected_version: int,
    last_updated: int,
    content: bytes | None,
    patient_key: str | None,
    method: str,
    buffer: list[dict[str, Any]] | None = None,
) -> bool:
    """Write the next version if the current one is still ``expected_version`` (compare-and-set)."""
    new_version = expected_version + 1
    result = conn.execute(
        _BUMP,
        {
            "b_pk": pk,
            "b_expected": expected_version,
            "b_version": new_version,
            "b_last_updated": last_updated,
            "b_deleted": content is None,
            "b_patient_key": patient_key,
            "b_content": content,
        },
    )
    if result.rowcount != 1:
        return False
    row = {
        "patient_key": patient_key,
        "resource_pk": pk,
        "version": new_version,
        "res_type": res_type,
        "res_id": res_id,
        "last_updated": last_updated,
        "deleted": content is None,
        "method": method,
        "content": content,
    }
    if buffer is not None:
        buffer.append(row)
    else:
        conn.execute(insert(resource_version), row)
    return True


def version_row(
    pk: int,
    res_type: str,
    res_id: str,
    version: int,
    last_updated: int,
    content: bytes | None,
    method: str,
    patient_key: str | None,
) -> dict[str, Any]:
    return {
        "patient_key": patient_key,
        "resource_pk": pk,
        "version": version,
        "res_type": res_type,
        "res_id": res_id,
        "last_updated": last_updated,
        "deleted": content is None,
        "method": method,
        "content": content,
    }


def delete_index(conn: Connection, pk: int) -> None:
    delete_matching(conn, list(INDEX_TABLES.values()), "resource_pk", pk)


def write_rows(
    conn: Connection, versions: list[dict[str, Any]], index_rows: dict[str, list[dict[str, Any]]]
) -> None:
    """Insert buffered version rows and index rows (on PostgreSQL in one round trip)."""
    insert_tables(
        conn, [(resource_version, versions), *((INDEX_TABLES[k], r) for k, r in index_rows.items())]
    )


def replace_index(conn: Connection, pk: int, rows: dict[str, list[dict[str, Any]]], *, fresh: bool) -> None:
    """Make the index rows of resource ``pk`` exactly ``rows`` (kind -> rows without resource_pk)."""
    if not fresh:
        delete_index(conn, pk)
    for kind_rows in rows.values():
        for r in kind_rows:
            r["resource_pk"] = pk
    insert_tables(conn, [(INDEX_TABLES[k], r) for k, r in rows.items()])


def insert_index_rows(conn: Connection, rows: dict[str, list[dict[str, Any]]]) -> None:
    """Bulk insert of index rows that already carry their ``resource_pk``."""
    insert_tables(conn, [(INDEX_TABLES[k], r) for k, r in rows.items()])


def keys_by_type(keys: Iterable[tuple[str, str]], size: int = 400) -> list[tuple[str, list[str]]]:
    """(type, ids) chunks of the distinct (type, id) pairs, for ``res_type = ? AND res_id IN (…)``.

    Every lookup of a set of (type, id) pairs goes through this shape, one type per statement:
    SQLite (3.40) answers a row-value IN list (``(res_type, res_id) IN ((?, ?), …)``) by scanning
    the whole (res_type, res_id) index however selective the list is (1.3 s at a million
    Patients), but this form by seeks in that index; PostgreSQL plans either form by the index.
    """
    by_type: dict[str, list[str]] = {}
    for res_type, res_id in set(keys):
        by_type.setdefault(res_type, []).append(res_id)
    return [
        (t, sorted(ids)[i : i + size]) for t, ids in sorted(by_type.items()) for i in range(0, len(ids), size)
    ]


def existing(
    conn: Connection, keys: Iterable[tuple[str, str]], *, deleted: bool = False
) -> set[tuple[str, str]]:
    """Which of the (type, id) pairs name a current, undeleted resource (with ``deleted``: any
    resource row, a deleted one's tombstone included)."""
    found: set[tuple[str, str]] = set()
    for res_type, chunk in keys_by_type(keys):
        query = select(resource.c.res_id).where(resource.c.res_type == res_type, resource.c.res_id.in_(chunk))
        if not deleted:
            query = query.where(resource.c.deleted.is_(False))
        found.update((res_type, res_id) for res_id in conn.execute(query).scalars())
    return found


def referrers(conn: Connection, res_type: str, res_id: str, *, limit: int = 5) -> list[tuple[str, str]]:
    """Current resources whose search-indexed references point at ``res_type/res_id``."""
    rows = conn.execute(
        select(resource.c.res_type, resource.c.res_id)
        .join(idx_reference, idx_reference.c.resource_pk == resource.c.pk)
        .where(
            idx_reference.c.target_type == res_type,
            idx_reference.c.target_id == res_id,
            resource.c.deleted.is_(False),
            or_(resource.c.res_type != res_type, resource.c.res_id != res_id),
        )
        .distinct()
        .limit(limit)
    )
    return [(r.res_type, r.res_id) for r in rows]


# --- conditional-create claims -------------------------------------------------------------


def claim(conn: Connection, res_type: str, criteria_hash: str, criteria: str, pk: int) -> bool:
    """Record that ``pk`` answers these conditional-create criteria; False if another claim holds them."""
    nested = conn.begin_nested()
    try:
        conn.execute(
            insert(conditional_claim),
            {"res_type": res_type, "criteria_hash": criteria_hash, "criteria": criteria, "resource_pk": pk},
        )
    except IntegrityError:
        nested.rollback()
        return False
    nested.commit()
    return True


def take_over_claim(conn: Connection, res_type: str, criteria_hash: str, pk: int) -> None:
    conn.execute(
        update(conditional_claim)
        .where(conditional_claim.c.res_type == res_type, conditional_claim.c.criteria_hash == criteria_hash)
        .values(resource_pk=pk)
    )


def lock_claim(conn: Connection, res_type: str, criteria_hash: str) -> int | None:
    stmt = select(conditional_claim.c.resource_pk).where(
        conditional_claim.c.res_type == res_type, conditional_claim.c.criteria_hash == criteria_hash
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    value = conn.execute(stmt).scalar()
    return int(value) if value is not None else None


# --- history -------------------------------------------------------------------------------


def history(
    conn: Connection,
    *,
    res_type: str | None,
    res_id: str | None,
    since: int | None,
    at: int | None,
    before: tuple[int, int, int] | None,
    limit: int,
    visible: Any = None,
    types: list[str] | None = None,
) -> list[StoredVersion]:
    """Versions newest first; ``before`` is the keyset cursor (last_updated, resource_pk, version)."""
    rv = resource_version
    stmt = select(
        rv.c.resource_pk,
        rv.c.res_type,
        rv.c.res_id,
        rv.c.version,
        rv.c.last_updated,
        rv.c.deleted,
        rv.c.content,
        rv.c.method,
        rv.c.patient_key,
    )
    conds: list[Any] = []
    if visible is not None:
        conds.append(visible)
    if types is not None:
        conds.append(rv.c.res_type.in_(types))
    if res_type is not None:
        conds.append(rv.c.res_type == res_type)
    if res_id is not None:
        conds.append(rv.c.res_id == res_id)
    if since is not None:
        conds.append(rv.c.last_updated >= since)
    if at is not None:
        conds.append(rv.c.last_updated <= at)
    if before is not None:
        lu, pk, ver = before
        conds.append(
            or_(
                rv.c.last_updated < lu,
                and_(rv.c.last_updated == lu, rv.c.resource_pk < pk),
                and_(rv.c.last_updated == lu, rv.c.resource_pk == pk, rv.c.version < ver),
            )
        )
    if conds:
        stmt = stmt.where(*conds)
    stmt = stmt.order_by(rv.c.last_updated.desc(), rv.c.resource_pk.desc(), rv.c.version.desc()).limit(limit)
    return [
        StoredVersion(
            r.resource_pk,
            r.res_type,
            r.res_id,
            r.version,
            r.last_updated,
            r.deleted,
            open_content(conn.engine, r.content),
            r.method,
            r.patient_key,
        )
        for r in conn.execute(stmt)
    ]


def history_count(
    conn: Connection,
    *,
    res_type: str | None,
    res_id: str | None,
    since: int | None,
    at: int | None,
    visible: Any = None,
    types: list[str] | None = None,
) -> int:
    rv = resource_version
    stmt = select(func.count()).select_from(rv)
    if visible is not None:
        stmt = stmt.where(visible)
    if types is not None:
        stmt = stmt.where(rv.c.res_type.in_(types))
    if res_type is not None:
        stmt = stmt.where(rv.c.res_type == res_type)
    if res_id is not None:
        stmt = stmt.where(rv.c.res_id == res_id)
    if since is not None:
        stmt = stmt.where(rv.c.last_updated >= since)
    if at is not None:
        stmt = stmt.where(rv.c.last_updated <= at)
    return int(conn.execute(stmt).scalar_one())


def stored_columns(r: FromClause) -> tuple[Any, ...]:
    """The columns of a ``resource`` alias that ``stored_from_row`` reads, in its order."""
    c = r.c
    return (c.pk, c.res_type, c.res_id, c.version, c.last_updated, c.deleted, c.content, c.patient_key)


def stored_from_row(conn: Connection, values: Sequence[Any]) -> StoredVersion:
    """A current version from the values of ``stored_columns`` (sealed fields opened)."""
    pk, res_type, res_id, version, last_updated, deleted, content, patient_key = values
    return StoredVersion(
        pk,
        res_type,
        res_id,
        version,
        last_updated,
        deleted,
        open_content(conn.engine, content),
        "",
        patient_key,
    )


def current_by_pks(conn: Connection, pks: Sequence[int]) -> dict[int, StoredVersion]:
    out: dict[int, StoredVersion] = {}
    columns = stored_columns(resource)
    for i in range(0, len(pks), 500):
        chunk = list(pks[i : i + 500])
        for row in conn.execute(select(*columns).where(resource.c.pk.in_(chunk))).all():
            out[row[0]] = stored_from_row(conn, row)
    return out


def current_by_keys(conn: Connection, keys: Iterable[tuple[str, str]]) -> list[StoredVersion]:
    chunks = keys_by_type(keys)
    out: list[StoredVersion] = []
    for res_type, chunk in chunks:
        rows = conn.execute(
            select(
                resource.c.pk,
                resource.c.res_type,
                resource.c.res_id,
                resource.c.version,
                resource.c.last_updated,
                resource.c.deleted,
                resource.c.content,
                resource.c.patient_key,
            ).where(
                resource.c.res_type == res_type,
                resource.c.res_id.in_(chunk),
                resource.c.deleted.is_(False),
            )
        )
        out.extend(
            StoredVersion(
                r.pk,
                r.res_type,
                r.res_id,
                r.version,
                r.last_updated,
                r.deleted,
                open_content(conn.engine, r.content),
                "",
                r.patient_key,
            )
            for r in rows
        )
    return out


class FastReader:
    """Reads of one current resource by id on a dedicated autocommit DBAPI connection.

    The hottest request of a health record is "give me Patient/123". Going through the
    connection pool, an explicit transaction and SQLAlchemy's result machinery costs ten times
    the query itself, so reads by id take this short path: one prepared statement, one row.
    Each SELECT is its own snapshot (SQLite autocommit, PostgreSQL autocommit), so it never
    sees a half-written transaction. On PostgreSQL the statement is prepared once and run
    through libpq with binary results (psycopg's ``pq`` layer), half the cost of a cursor.
    Not thread-safe: one reader per thread.
    """

    _PG_NAME = b"yilian_read_current"
    _SQL = "SELECT version, last_updated, deleted, content, pk, patient_key FROM resource WHERE res_type = {0} AND res_id = {1}"

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self._conn: Any = None

    def _connect(self) -> Any:
        raw = self.engine.raw_connection()
        if self.postgres:
            driver = raw.driver_connection
            driver.autocommit = True
            res = driver.pgconn.prepare(self._PG_NAME, self._SQL.format("$1", "$2").encode())
            if res.error_message:
                raise RuntimeError(res.error_message.decode(errors="replace"))
        return raw

    def current(self, res_type: str, res_id: str) -> StoredVersion | None:
        for attempt in (0, 1):
            try:
                if self._conn is None:
                    self._conn = self._connect()
                row = self._pg_row(res_type, res_id) if self.postgres else self._sqlite_row(res_type, res_id)
                break
            except Exception:
                # A dropped connection (database restart): reconnect once, then give up.
                self.close()
                if attempt:
                    raise
        if row is None:
            return None
        version, last_updated, deleted, content, pk, pkey = row
        return StoredVersion(
            pk, res_type, res_id, version, last_updated, deleted, open_content(self.engine, content), "", pkey
        )

    def _sqlite_row(
        self, res_type: str, res_id: str
    ) -> tuple[int, int, bool, bytes | None, int, str | None] | None:
        cur = self._conn.driver_connection.execute(self._SQL.format("?", "?"), (res_type, res_id))
        row = cur.fetchone()
        cur.close()
        if row is None:
            return None
        return (
            int(row[0]),
            int(row[1]),
            bool(row[2]),
            bytes(row[3]) if row[3] is not None else None,
            int(row[4]),
            row[5],
        )

    def _pg_row(
        self, res_type: str, res_id: str
    ) -> tuple[int, int, bool, bytes | None, int, str | None] | None:
        from psycopg import pq

        pgconn = self._conn.driver_connection.pgconn
        res = pgconn.exec_prepared(self._PG_NAME, [res_type.encode(), res_id.encode()], result_format=1)
        if res.status != pq.ExecStatus.TUPLES_OK:
            raise RuntimeError((res.error_message or b"read failed").decode(errors="replace"))
        if res.ntuples == 0:
            return None
        version = int.from_bytes(res.get_value(0, 0) or b"", "big", signed=True)
        last_updated = int.from_bytes(res.get_value(0, 1) or b"", "big", signed=True)
        deleted = res.get_value(0, 2) == b"\x01"
        content = res.get_value(0, 3)
        pk = int.from_bytes(res.get_value(0, 4) or b"", "big", signed=True)
        pkey_raw = res.get_value(0, 5)
        pkey = bytes(pkey_raw).decode() if pkey_raw is not None else None
        return version, last_updated, deleted, bytes(content) if content is not None else None, pk, pkey

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate()
            except Exception:
                pass
            self._conn = None
