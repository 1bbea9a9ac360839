"""The audit log on SQLite and PostgreSQL: written with the change it describes, group-committed
for reads, append-only by the database's own triggers, hash-chained so that an edited, removed
or reordered row is found and named, pruned only past retention, searchable by auditors.

Tests that tamper with the log or need an exact chain get a database of their own
(``fresh_db``); the others share the module's ``db`` and keep apart by unique agent names.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import itertools
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Connection, func, select, text, update
from sqlalchemy.exc import DataError, IntegrityError
from typer.testing import CliRunner

from tests.support.databases import BACKENDS, drop_database, new_database
from yilian.cli.audit import audit_app
from yilian.db import Database, UnitOfWork, open_database
from yilian.fhir import FhirContext, FhirRequest, dispatch
from yilian.fhir.store import sealing
from yilian.fhir.validation import check
from yilian.kernel.crypto import Keyring
from yilian.kernel.errors import Category, YilianError
from yilian.security.audit import (
    AuditRecord,
    AuditWriter,
    flush,
    prune,
    read_audit,
    record,
    seal,
    search_audit,
    to_audit_event,
    verify,
)
from yilian.security.audit import chain as chain_module
from yilian.security.audit.chain import DATA_COLUMNS, chain_hash, hash_key_id, key_usage, legacy_hash
from yilian.security.audit.event import columns_from_event
from yilian.security.audit.recorder import insert_rows, to_row
from yilian.security.audit.tables import audit_chain_head, audit_checkpoint, audit_event
from yilian.security.audit.triggers import sqlite_triggers

NOW = dt.datetime.now(dt.UTC)


def make_record(agent: str, **fields: Any) -> AuditRecord:
    values: dict[str, Any] = {"action": "R", "subtype": "read", "agent_kind": "user", "agent_id": agent}
    values.update(fields)
    return AuditRecord(**values)


def tag() -> str:
    return uuid.uuid4().hex[:10]


def rows_of(db: Database, agent: str) -> list[dict[str, Any]]:
    with db.engine.connect() as conn:
        stmt = select(audit_event).where(audit_event.c.agent_id == agent).order_by(audit_event.c.id)
        return [dict(r) for r in conn.execute(stmt).mappings()]


def all_rows(db: Database) -> list[dict[str, Any]]:
    with db.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(audit_event).order_by(audit_event.c.id)).mappings()]


def commit_records(db: Database, records: list[AuditRecord]) -> None:
    with UnitOfWork(db, write=True) as uow:
        for r in records:
            record(uow, r)


@pytest.fixture(params=BACKENDS)
def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    database, token = new_database(request.param, tmp_path)
    yield database
    drop_database(request.param, database, token)


@pytest.fixture(params=[b for b in BACKENDS if b == "postgresql"])
def concurrent_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A store where a transaction can hold an id while later ones commit: only PostgreSQL, as
    SQLite has one writer at a time and the sealer never sees an id still in flight there."""
    database, token = new_database(request.param, tmp_path)
    yield database
    drop_database(request.param, database, token)


@contextmanager
def attacker(db: Database, *, tidy: bool = True) -> Iterator[Connection]:
    """A connection with the append-only triggers out of the way: someone who can change the
    database (not the deployment's keys). ``tidy``: the triggers are put back afterwards."""
    with db.engine.begin() as conn:
        if db.is_sqlite:
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_event_no_update")
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_event_no_delete")
        else:
            conn.exec_driver_sql("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only")
        yield conn
        if tidy and db.is_sqlite:
            for name in ("audit_event_no_update", "audit_event_no_delete"):
                conn.exec_driver_sql(sqlite_triggers()[name])
        elif tidy:
            conn.exec_driver_sql("ALTER TABLE audit_event ENABLE TRIGGER audit_event_append_only")


def keyring_of(db: Database) -> Keyring:
    keyring = sealing.keyring_for(db.engine)
    assert keyring is not None
    return keyring


def sealed_log(db: Database, n: int = 6) -> list[dict[str, Any]]:
    commit_records(
        db, [make_record(f"user-{i}", patient_keys=(f"p{i}",), entity=f"Patient/p{i}") for i in range(n)]
    )
    assert seal(db) == n
    report = verify(db)
    assert report.ok and report.rows == n
    return all_rows(db)


def kinds_and_ids(db: Database) -> list[tuple[str, int | None]]:
    return [(p.kind, p.id) for p in verify(db).problems]


# -- writing in the caller's transaction -----------------------------------------------------------


def test_record_rolls_back_with_its_transaction(db: Database) -> None:
    agent = f"rollback-{tag()}"
    for flush_first in (False, True):
        with pytest.raises(RuntimeError), UnitOfWork(db, write=True) as uow:
            record(uow, make_record(agent, action="C", subtype="create"))
            if flush_first:
                flush(uow)  # the row is in the transaction, not only buffered
                assert (
                    uow.conn.execute(select(func.count()).where(audit_event.c.agent_id == agent)).scalar_one()
                    == 1
                )
            raise RuntimeError("the change failed")
    assert rows_of(db, agent) == []


def test_record_commits_with_the_change_it_describes(db: Database) -> None:
    agent = f"creator-{tag()}"
    ctx = FhirContext(base_url="http://testserver/fhir")
    patient_id = f"pt-{tag()}"

    def create(uow: UnitOfWork) -> None:
        dispatch(
            uow,
            ctx,
            FhirRequest("PUT", f"Patient/{patient_id}", body={"resourceType": "Patient", "id": patient_id}),
        )
        record(
            uow,
            make_record(
                agent,
                action="C",
                subtype="update",
                entity=f"Patient/{patient_id}",
                patient_keys=(patient_id,),
            ),
        )

    with pytest.raises(RuntimeError), UnitOfWork(db, write=True) as uow:
        create(uow)
        raise RuntimeError("rolled back: neither the patient nor its audit row")
    assert rows_of(db, agent) == []
    with UnitOfWork(db, write=True) as uow:
        create(uow)
    [row] = rows_of(db, agent)
    assert (
        row["entity"] == f"Patient/{patient_id}" and row["patient_keys"] == patient_id and row["seq"] is None
    )
    with UnitOfWork(db) as uow:
        assert dispatch(uow, ctx, FhirRequest("GET", f"Patient/{patient_id}")).status == 200


def test_malformed_records_fail_in_the_caller() -> None:
    for bad in (
        {"action": "X"},
        {"outcome": 3},
        {"agent_kind": "robot"},
        {"agent_id": ""},
        {"patient_keys": ("two words",)},
        {"subtype": "Not A Code"},
    ):
        with pytest.raises(YilianError) as err:
            make_record("someone", **bad)
        assert err.value.category is Category.INVALID


def test_id_and_phone_numbers_never_reach_the_log_in_plain_text(db: Database) -> None:
    agent = f"lookup-{tag()}"
    query = "Patient?identifier=urn:oid:2.16.156.10011.1.3%7C110105194912310021&telecom=%2B86%20138-0013-8000"
    commit_records(
        db, [make_record(agent, subtype="search-type", query=query, outcome_desc="nothing for 13800138000")]
    )
    [row] = rows_of(db, agent)
    event = orjson.loads(row["content"])
    [entity] = event["entity"]
    text_stored = row["entity"] + bytes(row["content"]).decode() + base64.b64decode(entity["query"]).decode()
    for secret in ("110105194912310021", "13800138000", "0013-8000"):
        assert secret not in text_stored
    assert (
        row["entity"]
        == "Patient?identifier=urn:oid:2.16.156.10011.1.3%7C110105********0021&telecom=138****8000"
    )
    assert event["outcomeDesc"] == "nothing for 138****8000"


# -- the AuditEvent --------------------------------------------------------------------------------

SAMPLES = [
    make_record("dr-wang", org_id="hosp-a", entity="Observation/o1", patient_keys=("p1",), source_ip="10.1.2.3", user_agent="HIS/2.1"),
    make_record(
        "client-his", agent_kind="system", subtype="search-type", org_id="hosp-a", patient_keys=("p1", "p2"),
        query="Observation?code=http://loinc.org|8867-4&patient=p1,p2", resource_types=("Observation",),
    ),
    make_record("ops", agent_kind="operator", action="E", subtype="operation", entity="Patient/p1/$everything", patient_keys=("p1",)),
    make_record("dr-li", action="C", subtype="create", org_id="clinic-b", entity="Encounter/e9", patient_keys=("p3",)),
    make_record("dr-li", action="D", subtype="delete", org_id="clinic-b", entity="Encounter/e9/_history/2", patient_keys=("p3",)),
    make_record("dr-zhao", org_id="clinic-b", entity="Patient/p1", patient_keys=("p1",), purpose="BTG", subtype="break-glass",
                outcome_desc="chest pain, unconscious"),
    make_record("dr-zhao", org_id="clinic-b", entity="Patient/p2", outcome=4, subtype="access-denied", outcome_desc="no treatment relationship"),
    make_record("resident-7", agent_kind="patient", action="E", subtype="login", source_ip="2001:db8::7"),
    make_record("resident-7", agent_kind="patient", action="E", subtype="logout"),
    make_record("client-lis", agent_kind="system", action="E", subtype="token", org_id="lab-c"),
    make_record("ops", agent_kind="operator", subtype="search-system", query="_lastUpdated=gt2026-01-01", resource_types=("Patient", "Encounter")),
]  # fmt: skip


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda r: f"{r.agent_id}-{r.subtype}")
def test_audit_events_are_valid_fhir_and_say_what_the_columns_say(sample: AuditRecord) -> None:
    event = to_audit_event(sample)
    check(event)
    row = to_row(sample)
    said = columns_from_event(row["content"])
    assert {k: row[k] for k in said} == said
    assert event["agent"][0]["requestor"] is True and event["agent"][0]["altId"] == sample.agent_id
    assert event["source"]["observer"]
    if sample.query:
        [query] = [e for e in event["entity"] if e["role"]["code"] == "24"]
        assert base64.b64decode(query["query"]).decode() == sample.query
    patients = [e["what"]["reference"] for e in event.get("entity", []) if e["role"]["code"] == "1"]
    assert patients == [f"Patient/{k}" for k in sample.patient_keys]


def test_read_shape_follows_the_basic_audit_log_patterns() -> None:
    event = to_audit_event(SAMPLES[0])
    assert event["type"] == {
        "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
        "code": "rest",
        "display": "Restful Operation",
    }
    assert event["subtype"] == [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}]
    assert event["action"] == "R" and event["outcome"] == "0"
    assert event["agent"][0]["network"] == {"address": "10.1.2.3", "type": "2"}
    assert event["agent"][1]["who"] == {"reference": "Organization/hosp-a"}
    flagged = to_audit_event(SAMPLES[5])
    assert flagged["purposeOfEvent"][0]["coding"][0]["code"] == "BTG"
    assert (
        to_row(SAMPLES[5])["flagged"] and to_row(SAMPLES[6])["flagged"] and not to_row(SAMPLES[0])["flagged"]
    )


# -- group commit for reads ------------------------------------------------------------------------


def test_writer_under_many_threads_writes_every_row_once_and_answers_after_commit(db: Database) -> None:
    agent = f"reader-{tag()}"
    threads, per_thread = 16, 25
    ids: list[int] = []
    visible_at_answer: list[bool] = []
    lock = threading.Lock()
    writer = AuditWriter(db)

    def check_visible(future: Future[int]) -> None:
        # Runs in the writer thread as the future resolves, before the caller is answered: from
        # another connection, the row must already be committed.
        with db.engine.connect() as conn:
            found = conn.execute(select(audit_event.c.id).where(audit_event.c.id == future.result())).first()
        with lock:
            visible_at_answer.append(found is not None)

    def reader(n: int) -> None:
        for i in range(per_thread):
            future = writer.submit(
                make_record(agent, entity=f"Patient/t{n}-{i}", patient_keys=(f"t{n}-{i}",))
            )
            if i % 5 == 0:
                future.add_done_callback(check_visible)
            row_id = future.result(30)
            with lock:
                ids.append(row_id)

    workers = [threading.Thread(target=reader, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    writer.close()
    assert len(ids) == len(set(ids)) == threads * per_thread
    assert all(visible_at_answer) and len(visible_at_answer) == threads * per_thread // 5
    assert writer.batches < threads * per_thread  # rows shared transactions
    # Kill-safety: what was acknowledged is in the table for a fresh engine after this one is gone.
    url = db.url.render_as_string(hide_password=False)
    db.dispose()
    reopened = open_database(url)
    try:
        rows = rows_of(reopened, agent)
        assert sorted(r["id"] for r in rows) == sorted(ids)
        assert {r["entity"] for r in rows} == {
            f"Patient/t{n}-{i}" for n in range(threads) for i in range(per_thread)
        }
    finally:
        reopened.dispose()


def test_writer_serves_asyncio_callers(db: Database) -> None:
    agent = f"async-{tag()}"

    async def main() -> list[int]:
        writer = AuditWriter(db)
        try:
            return list(
                await asyncio.gather(
                    *(writer.record(make_record(agent, entity=f"Patient/a{i}")) for i in range(300))
                )
            )
        finally:
            await asyncio.to_thread(writer.close)

    ids = asyncio.run(main())
    assert len(set(ids)) == 300
    assert sorted(r["id"] for r in rows_of(db, agent)) == sorted(ids)


def test_writer_close_flushes_everything_queued(db: Database) -> None:
    agent = f"closing-{tag()}"
    writer = AuditWriter(db)
    futures = [writer.submit(make_record(agent, entity=f"Patient/c{i}")) for i in range(200)]
    writer.close()
    assert all(f.done() and f.exception() is None for f in futures)
    assert len(rows_of(db, agent)) == 200
    with pytest.raises(YilianError):
        writer.submit(make_record(agent))


def test_writer_survives_database_errors(fresh_db: Database) -> None:
    db = fresh_db
    writer = AuditWriter(db, backoff=(0.01, 0.05))
    try:
        assert writer.record_sync(make_record("before")) > 0
        with db.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE audit_event RENAME TO audit_event_away")
        # The log is unusable: a caller whose row cannot be written in time gets an error, no answer.
        with pytest.raises(YilianError) as err:
            writer.record_sync(make_record("lost"), timeout=0.3)
        assert err.value.category is Category.UNAVAILABLE
        # A caller with time to spare is served once the database is back.
        late = writer.submit(make_record("late"), timeout=30)
        threading.Event().wait(0.3)
        assert not late.done()
        with db.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE audit_event_away RENAME TO audit_event")
        assert late.result(30) > 0
        assert writer.record_sync(make_record("after")) > 0
    finally:
        writer.close()
    assert [r["agent_id"] for r in all_rows(db)] == ["before", "late", "after"]


def test_writer_answers_each_caller_with_its_own_row(db: Database) -> None:
    # Rows queued together share one INSERT; each caller must get the id of the row it asked for
    # (an auditor follows that id from the request to the event).
    agent = f"pairs-{tag()}"
    with AuditWriter(db) as writer:
        futures = {
            f"Patient/p{i}": writer.submit(make_record(agent, entity=f"Patient/p{i}")) for i in range(120)
        }
        answered = {entity: f.result(30) for entity, f in futures.items()}
    assert writer.batches < len(futures)  # some rows did share a transaction
    assert {r["id"]: r["entity"] for r in rows_of(db, agent)} == {i: e for e, i in answered.items()}


@pytest.fixture
def refusing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer builds the row of a record of ``Patient/bad`` so that the database refuses it."""
    real = to_row

    def broken(rec: AuditRecord) -> dict[str, Any]:
        row = real(rec)
        if rec.entity == "Patient/bad":
            row["action"] = None  # NOT NULL: the database refuses the whole statement
        return row

    monkeypatch.setattr("yilian.security.audit.writer.to_row", broken)


@pytest.mark.usefixtures("refusing")
def test_a_row_the_database_refuses_fails_only_its_own_caller(db: Database) -> None:
    agent = f"refused-{tag()}"
    with AuditWriter(db, backoff=(0.01, 0.02)) as writer:
        futures = [writer.submit(make_record(agent, entity=f"Patient/ok{i}")) for i in range(5)]
        bad = writer.submit(make_record(agent, entity="Patient/bad"))
        futures += [writer.submit(make_record(agent, entity=f"Patient/ok{i}")) for i in range(5, 10)]
        with pytest.raises(YilianError) as err:
            bad.result(30)
        ids = [f.result(30) for f in futures]
    assert err.value.category is Category.INTERNAL
    assert sorted(r["id"] for r in rows_of(db, agent)) == sorted(ids)


@pytest.mark.usefixtures("refusing")
def test_a_refused_row_fails_its_waiting_caller_whether_thread_or_coroutine(db: Database) -> None:
    agent = f"refused-wait-{tag()}"
    with AuditWriter(db, backoff=(0.01, 0.02)) as writer:
        with pytest.raises(YilianError) as in_thread:
            writer.record_sync(make_record(agent, entity="Patient/bad"))

        async def main() -> tuple[BaseException | int, int]:
            bad, good = await asyncio.gather(
                writer.record(make_record(agent, entity="Patient/bad")),
                writer.record(make_record(agent, entity="Patient/ok")),
                return_exceptions=True,
            )
            assert isinstance(good, int)
            return bad, good

        bad, good = asyncio.run(main())
    assert in_thread.value.category is Category.INTERNAL
    assert isinstance(bad, YilianError) and bad.category is Category.INTERNAL
    assert [r["id"] for r in rows_of(db, agent)] == [good]


def test_a_coroutine_that_stops_waiting_leaves_its_row_written_and_the_writer_working(db: Database) -> None:
    agent = f"cancelled-{tag()}"
    release = threading.Event()

    class Slow(AuditWriter):
        def _commit(self, rows: list[dict[str, Any]]) -> list[int]:
            release.wait(30)
            return super()._commit(rows)

    with Slow(db) as writer:

        async def main() -> int:
            waiting = asyncio.ensure_future(writer.record(make_record(agent, entity="Patient/gone")))
            await asyncio.sleep(0.05)
            waiting.cancel()  # the client hung up while its row was being committed
            with pytest.raises(asyncio.CancelledError):
                await waiting
            release.set()
            return await writer.record(make_record(agent, entity="Patient/next"))

        after = asyncio.run(main())
    assert [r["entity"] for r in rows_of(db, agent)] == ["Patient/gone", "Patient/next"]
    assert rows_of(db, agent)[1]["id"] == after


def test_coroutines_on_several_loops_in_one_batch_each_get_their_own_row(db: Database) -> None:
    # One commit answers the coroutines of one event loop together: each must still get the id
    # of its own row, a coroutine that stopped waiting must not hold the others up, and another
    # loop's coroutines in the same batch are answered on their own loop.
    agent = f"loops-{tag()}"
    release = threading.Event()
    queued = {name: threading.Event() for name in ("a", "b")}
    results: dict[str, list[Any]] = {}

    class Gated(AuditWriter):  # the first commit waits, so the rest queue up into one batch
        def _commit(self, rows: list[dict[str, Any]]) -> list[int]:
            release.wait(30)
            return super()._commit(rows)

    def on_its_own_loop(writer: AuditWriter, name: str) -> None:
        async def main() -> list[Any]:
            tasks = [
                asyncio.ensure_future(writer.record(make_record(agent, entity=f"Patient/{name}{i}")))
                for i in range(20)
            ]
            await asyncio.sleep(0.05)
            tasks[3].cancel()  # this client hung up
            queued[name].set()
            return await asyncio.gather(*tasks, return_exceptions=True)

        results[name] = asyncio.run(main())

    with Gated(db) as writer:
        loops = [threading.Thread(target=on_its_own_loop, args=(writer, name)) for name in queued]
        for thread in loops:
            thread.start()
        assert all(event.wait(30) for event in queued.values())
        release.set()
        for thread in loops:
            thread.join(30)
    assert writer.batches <= 3  # the first row or two, then the rest together
    stored = {r["entity"]: r["id"] for r in rows_of(db, agent)}
    assert len(stored) == 40  # the cancelled callers' rows too
    for name, answers in results.items():
        for i, answer in enumerate(answers):
            if i == 3:
                assert isinstance(answer, asyncio.CancelledError)
            else:
                assert answer == stored[f"Patient/{name}{i}"]


def test_a_caller_gives_up_on_a_writer_that_never_answers(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A database call that never returns: the writer cannot meet any deadline, and its callers
    # must not wait forever (they answer 503 rather than unaudited).
    monkeypatch.setattr("yilian.security.audit.writer._STUCK_S", 0.1)
    release = threading.Event()

    class Hung(AuditWriter):
        def _commit(self, rows: list[dict[str, Any]]) -> list[int]:
            release.wait(30)
            return super()._commit(rows)

    writer = Hung(db, timeout=0.1)
    try:
        with pytest.raises(YilianError) as in_thread:
            writer.record_sync(make_record(f"hung-{tag()}"))
        with pytest.raises(YilianError) as in_loop:
            asyncio.run(writer.record(make_record(f"hung-{tag()}")))
    finally:
        release.set()
        writer.close()
    for err in (in_thread.value, in_loop.value):
        assert err.category is Category.UNAVAILABLE and "did not answer in time" in err.message


def test_insert_rows_reports_a_refused_row_as_an_integrity_error(db: Database) -> None:
    # The writer tells a row the database refuses (fail that caller) from a failed commit (retry)
    # by SQLAlchemy's error classes, whichever way the rows reach the driver: in a unit of work,
    # and on an autocommit connection like the writer's (straight to libpq on PostgreSQL).
    agent = f"bad-{tag()}"
    row = {**to_row(make_record(agent)), "agent_id": None}
    with UnitOfWork(db, write=True) as uow, pytest.raises(IntegrityError):
        insert_rows(uow.conn, [to_row(make_record(agent)), row])
    with db.connect_autocommit() as conn:  # as the audit writer holds one
        with pytest.raises(IntegrityError):
            insert_rows(conn, [to_row(make_record(agent)), row])
        if not db.is_sqlite:
            # PostgreSQL's text has no NUL, and libpq would cut the value at it. (A record's own
            # text never has one: the model replaces it.)
            cut = {**to_row(make_record(agent)), "entity": "Patient/a\x00cut"}
            with pytest.raises(DataError):
                insert_rows(conn, [to_row(make_record(agent)), cut])
    assert rows_of(db, agent) == []


def test_insert_rows_stays_inside_the_callers_transaction(db: Database) -> None:
    # On a connection with a transaction of its own, the rows go with it: rolled back, nothing.
    agent = f"rolled-{tag()}"
    with db.engine.connect() as conn, conn.begin() as trans:
        ids = insert_rows(conn, [to_row(make_record(agent)) for _ in range(3)])
        assert len(ids) == 3 == len(set(ids))
        trans.rollback()
    assert rows_of(db, agent) == []
    with db.connect_autocommit() as conn:  # as the audit writer holds one
        ids = insert_rows(conn, [to_row(make_record(agent, entity=f"Patient/p{i}")) for i in range(3)])
    assert [(r["id"], r["entity"]) for r in rows_of(db, agent)] == [
        (row_id, f"Patient/p{i}") for i, row_id in enumerate(ids)
    ]


def test_writer_reconnects_when_its_connection_is_lost(concurrent_db: Database) -> None:
    # The server closes the writer's connection (a restart, an administrator, a failover): the
    # next rows are written on a new one, each once.
    db = concurrent_db
    agent = f"reconnect-{tag()}"
    with AuditWriter(db, backoff=(0.01, 0.02)) as writer:
        first = writer.record_sync(make_record(agent, entity="Patient/before"))
        assert writer._conn is not None
        pid = writer._conn.connection.driver_connection.info.backend_pid  # type: ignore[union-attr]
        with db.engine.begin() as admin:
            assert admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        after = [writer.record_sync(make_record(agent, entity=f"Patient/after{i}")) for i in range(3)]
    assert [(r["id"], r["entity"]) for r in rows_of(db, agent)] == [
        (first, "Patient/before"),
        *[(row_id, f"Patient/after{i}") for i, row_id in enumerate(after)],
    ]


def test_writer_writes_a_row_once_when_a_commit_outcome_is_unknown(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = f"unsure-{tag()}"
    real = AuditWriter._commit
    calls: list[str] = []

    def flaky(self: AuditWriter, rows: list[dict[str, Any]]) -> list[int]:
        calls.append(rows[0]["entity"])
        if len(calls) == 1:
            real(self, rows)
            raise ConnectionError("connection lost after the commit")
        if len(calls) == 2:
            self._committing = True
            raise ConnectionError("connection lost before anything was written")
        return real(self, rows)

    monkeypatch.setattr(AuditWriter, "_commit", flaky)
    with AuditWriter(db, backoff=(0.01, 0.02)) as writer:
        first = writer.record_sync(make_record(agent, entity="Patient/u1"))  # found, not written again
        second = writer.record_sync(make_record(agent, entity="Patient/u2"))  # not found, written again
    assert calls == ["Patient/u1", "Patient/u2", "Patient/u2"]
    assert [(r["id"], r["entity"]) for r in rows_of(db, agent)] == [
        (first, "Patient/u1"),
        (second, "Patient/u2"),
    ]


# -- the database keeps the log append-only ---------------------------------------------------------


def refused(db: Database, sql: str, **params: Any) -> bool:
    try:
        with db.engine.begin() as conn:
            conn.execute(text(sql), params)
    except IntegrityError:
        return True
    return False


def test_triggers_refuse_updates_and_deletes(db: Database) -> None:
    agent = f"guarded-{tag()}"
    old = NOW - dt.timedelta(days=400)
    commit_records(
        db, [make_record(agent, entity="Patient/g1"), make_record(agent, entity="Patient/g2", recorded=old)]
    )
    seal(db, grace_s=0)
    assert refused(db, "UPDATE audit_event SET agent_id = 'x'")
    assert refused(db, "DELETE FROM audit_event")
    assert refused(db, "UPDATE audit_event SET agent_id = 'x' WHERE agent_id = :a", a=agent)
    assert refused(db, "UPDATE audit_event SET seq = seq + 1000000 WHERE agent_id = :a", a=agent)  # resealing
    assert refused(
        db,
        "UPDATE audit_event SET seq = NULL, prev_hash = NULL, chain_hash = NULL WHERE agent_id = :a",
        a=agent,
    )
    # Even a row past retention goes only through prune: no checkpoint covers it.
    assert refused(
        db,
        "DELETE FROM audit_event WHERE agent_id = :a AND recorded < :t",
        a=agent,
        t=int(NOW.timestamp() * 1e6) - 10**12,
    )
    if not db.is_sqlite:
        assert refused(db, "TRUNCATE audit_event")
    # An unsealed row may be sealed, but not edited while being sealed.
    commit_records(db, [make_record(agent, entity="Patient/g3")])
    fresh = rows_of(db, agent)[-1]["id"]
    assert refused(
        db,
        "UPDATE audit_event SET seq = -5, prev_hash = 'a', chain_hash = 'b', entity = 'Patient/zz' WHERE id = :i",
        i=fresh,
    )
    rows = rows_of(db, agent)
    assert [r["entity"] for r in rows] == ["Patient/g1", "Patient/g2", "Patient/g3"]
    assert rows[2]["seq"] is None


# -- sealing ---------------------------------------------------------------------------------------


def test_sealing_chains_rows_in_id_order(fresh_db: Database) -> None:
    db = fresh_db
    commit_records(db, [make_record(f"u{i}") for i in range(5)])
    with AuditWriter(db) as writer:
        for i in range(5):
            writer.record_sync(make_record(f"w{i}"))
    assert seal(db, batch=3) == 10  # several batches
    assert seal(db) == 0
    rows = all_rows(db)
    assert [r["seq"] for r in rows] == list(range(1, 11))
    assert rows[0]["prev_hash"] == "0" * 64
    for before, row in itertools.pairwise(rows):
        assert row["prev_hash"] == before["chain_hash"]
        assert row["chain_hash"] == chain_hash(row["prev_hash"], row, keyring_of(db))
        assert hash_key_id(row["chain_hash"]) == keyring_of(db).current_key_id
    report = verify(db)
    assert report.ok and report.rows == 10 and report.unsealed == 0 and report.legacy_rows == 0
    commit_records(db, [make_record("later")])
    report = verify(db)
    assert report.ok and report.unsealed == 1


def test_several_sealers_at_once_build_one_chain(fresh_db: Database) -> None:
    db = fresh_db
    stop = threading.Event()
    errors: list[BaseException] = []

    def sealer() -> None:
        while not stop.is_set():
            try:
                seal(db, grace_s=0.5)
                stop.wait(0.005)
            except BaseException as exc:
                errors.append(exc)
                return

    sealers = [threading.Thread(target=sealer) for _ in range(4)]
    for s in sealers:
        s.start()
    with AuditWriter(db) as writer:
        futures = [writer.submit(make_record(f"r{i}")) for i in range(300)]
        for f in futures:
            f.result(30)
    commit_records(db, [make_record("in-a-change")])
    stop.set()
    for s in sealers:
        s.join()
    assert errors == []
    seal(db)
    rows = all_rows(db)
    assert [r["seq"] for r in rows] == list(range(1, 302))
    assert verify(db).ok


def test_sealing_does_not_hold_other_writers_back_while_it_chains(
    fresh_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Chaining (an HMAC a row) happens before the sealer's write transaction: on SQLite that
    # transaction holds the only write lock, and every audited request waits on a write.
    db = fresh_db
    commit_records(db, [make_record(f"s{i}") for i in range(20)])
    chaining, go_on = threading.Event(), threading.Event()
    real = chain_module.keyed_hash

    def slow(*args: Any, **kwargs: Any) -> str:
        chaining.set()
        assert go_on.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(chain_module, "keyed_hash", slow)
    sealed: list[int] = []
    sealer = threading.Thread(target=lambda: sealed.append(seal(db, grace_s=0)))
    sealer.start()
    try:
        assert chaining.wait(30)
        writer = threading.Thread(target=commit_records, args=(db, [make_record("meanwhile")]))
        writer.start()
        writer.join(15)
        written = not writer.is_alive()
    finally:
        go_on.set()
        sealer.join(30)
        writer.join(30)
    assert written, "a write waited for the sealer to finish chaining"
    assert sealed == [20]  # what it had read; the row written meanwhile is the next round's
    assert seal(db, grace_s=0) == 1
    rows = all_rows(db)
    assert [r["agent_id"] for r in rows][-1] == "meanwhile" and [r["seq"] for r in rows] == list(range(1, 22))
    assert verify(db).ok


def test_sealer_waits_for_a_gap_that_may_still_commit(concurrent_db: Database) -> None:
    db = concurrent_db
    commit_records(db, [make_record("first")])
    with db.engine.connect() as slow:
        with slow.begin():
            [in_flight] = insert_rows(slow, [to_row(make_record("slow"))])
            commit_records(db, [make_record("fast")])
            assert seal(db, grace_s=60) == 1  # "first"; "fast" waits behind the gap
            assert seal(db, grace_s=60) == 0
        # The slow transaction commits: the gap fills and the chain stays in id order.
        assert seal(db, grace_s=60) == 2
    rows = all_rows(db)
    assert [(r["agent_id"], r["seq"]) for r in rows] == [("first", 1), ("slow", 2), ("fast", 3)]
    assert rows[1]["id"] == in_flight

    # A rolled-back transaction leaves a gap for good: after the grace period it is passed.
    with db.engine.connect() as conn, conn.begin() as trans:
        insert_rows(conn, [to_row(make_record("rolled-back"))])
        trans.rollback()
    commit_records(db, [make_record("after-rollback")])
    assert seal(db, grace_s=60) == 0
    assert seal(db, grace_s=0) == 1

    # A transaction slower than the grace period is sealed at the end when it commits: late, not lost.
    with db.engine.connect() as slow:
        with slow.begin():
            insert_rows(slow, [to_row(make_record("very-slow"))])
            commit_records(db, [make_record("overtakes")])
            assert seal(db, grace_s=0) == 1
        assert seal(db, grace_s=0) == 1
    rows = {r["agent_id"]: r for r in all_rows(db)}
    assert rows["very-slow"]["seq"] == rows["overtakes"]["seq"] + 1
    assert rows["very-slow"]["id"] < rows["overtakes"]["id"]
    report = verify(db)
    assert report.ok and report.rows == 6 and report.unsealed == 0


# -- verify finds and names tampering --------------------------------------------------------------


def test_verify_passes_on_an_intact_log(fresh_db: Database) -> None:
    sealed_log(fresh_db, 20)
    assert kinds_and_ids(fresh_db) == []


def test_verify_names_an_edited_row(fresh_db: Database) -> None:
    db = fresh_db
    rows = sealed_log(db)
    with attacker(db) as conn:
        conn.execute(update(audit_event).where(audit_event.c.id == rows[2]["id"]).values(agent_id="mallory"))
    [problem] = verify(db).problems
    assert (problem.kind, problem.id, problem.seq) == ("edited", rows[2]["id"], 3)
    assert "agent_id is 'mallory'" in problem.detail and "'user-2'" in problem.detail


def test_verify_names_a_row_whose_event_json_was_edited(fresh_db: Database) -> None:
    db = fresh_db
    rows = sealed_log(db)
    event = orjson.loads(rows[4]["content"])
    event["entity"][0]["what"]["reference"] = "Patient/someone-else"
    with attacker(db) as conn:
        conn.execute(
            update(audit_event).where(audit_event.c.id == rows[4]["id"]).values(content=orjson.dumps(event))
        )
    [problem] = verify(db).problems
    assert (problem.kind, problem.id) == ("edited", rows[4]["id"])
    assert "patient_keys" in problem.detail


def test_verify_names_a_removed_row(fresh_db: Database) -> None:
    db = fresh_db
    rows = sealed_log(db)
    with attacker(db) as conn:
        conn.execute(audit_event.delete().where(audit_event.c.id == rows[3]["id"]))
    [problem] = verify(db).problems
    assert (problem.kind, problem.id, problem.seq) == ("removed", rows[4]["id"], 5)
    assert f"id {rows[2]['id']} (seq 3)" in problem.detail and "seq 4–4 missing" in problem.detail
    # Removing the newest rows leaves no gap in the chain: the chain head knows where it ended.
    with attacker(db) as conn:
        conn.execute(audit_event.delete().where(audit_event.c.seq >= 5))
    [tail] = verify(db).problems
    assert tail.kind == "removed" and "seq 4–6 missing at the end" in tail.detail


def test_verify_names_rows_whose_contents_were_swapped(fresh_db: Database) -> None:
    db = fresh_db
    rows = sealed_log(db)
    a, b = rows[1], rows[3]
    with attacker(db) as conn:
        for mine, theirs in ((a, b), (b, a)):
            conn.execute(
                update(audit_event)
                .where(audit_event.c.id == mine["id"])
                .values(**{k: theirs[k] for k in DATA_COLUMNS})
            )
    [problem] = verify(db).problems
    assert problem.kind == "reordered"
    assert f"id {a['id']} (seq 2)" in problem.detail and f"id {b['id']} (seq 4)" in problem.detail


def test_verify_names_rows_moved_to_another_place(fresh_db: Database) -> None:
    db = fresh_db
    rows = sealed_log(db)
    a, b = rows[1], rows[2]
    with attacker(db) as conn:
        conn.execute(update(audit_event).where(audit_event.c.id == a["id"]).values(seq=-1))
        conn.execute(update(audit_event).where(audit_event.c.id == b["id"]).values(seq=2))
        conn.execute(update(audit_event).where(audit_event.c.id == a["id"]).values(seq=3))
    problems = verify(db).problems
    assert {(p.kind, p.id) for p in problems} == {("reordered", a["id"]), ("reordered", b["id"])}
    assert any("sealed at seq 2 and moved to seq 3" in p.detail for p in problems)


def test_verify_names_a_row_rewritten_with_a_fresh_hash(fresh_db: Database) -> None:
    """A hash recomputed without the key: of the old unkeyed kind, or keyed under a guessed key."""
    db = fresh_db
    rows = sealed_log(db)
    guessed = Keyring.generate(key_id=keyring_of(db).current_key_id)
    for n, keyring in ((2, None), (4, guessed)):
        forged = {**rows[n], "agent_id": "mallory"}
        forged["chain_hash"] = chain_hash(forged["prev_hash"], forged, keyring)
        with attacker(db) as conn:
            conn.execute(
                update(audit_event)
                .where(audit_event.c.id == forged["id"])
                .values(agent_id="mallory", chain_hash=forged["chain_hash"])
            )
    unkeyed, guess = verify(db).problems
    assert (unkeyed.kind, unkeyed.id, unkeyed.seq) == ("edited", rows[2]["id"], 3)
    assert "unkeyed hash after keyed rows" in unkeyed.detail and "without the audit key" in unkeyed.detail
    assert (guess.kind, guess.id, guess.seq) == ("edited", rows[4]["id"], 5)
    assert "hash mismatch" in guess.detail and "agent_id is 'mallory'" in guess.detail


@pytest.mark.parametrize("forger", ["unkeyed", "guessed key"])
def test_a_row_edited_and_the_chain_recomputed_after_it_is_found(fresh_db: Database, forger: str) -> None:
    """The audit's attack: drop the update trigger, change one row, recompute every later hash and
    the chain head. Without the deployment's key the recomputed hashes do not check."""
    db = fresh_db
    rows = sealed_log(db)
    keyring = None if forger == "unkeyed" else Keyring.generate(key_id=keyring_of(db).current_key_id)
    prev = rows[1]["chain_hash"]
    with attacker(db, tidy=False) as conn:
        for row in rows[2:]:
            forged = {**row, "prev_hash": prev}
            if row["id"] == rows[2]["id"]:
                forged["outcome"] = 4
            forged["chain_hash"] = chain_hash(prev, forged, keyring)
            conn.execute(
                update(audit_event)
                .where(audit_event.c.id == row["id"])
                .values(outcome=forged["outcome"], prev_hash=prev, chain_hash=forged["chain_hash"])
            )
            prev = forged["chain_hash"]
        conn.execute(update(audit_chain_head).values(chain_hash=prev))
    problems = verify(db).problems
    edits = [p for p in problems if p.kind == "edited"]
    assert edits[0].id == rows[2]["id"] and "outcome is 4" in edits[0].detail
    assert {p.id for p in edits} == {r["id"] for r in rows[2:]}  # every rewritten row is named
    # The trigger the attacker dropped (SQLite) or disabled (PostgreSQL) is missed too.
    triggers = " ".join(p.detail for p in problems if p.kind == "triggers")
    assert (
        "audit_event_no_update is missing" in triggers
        or "audit_event_append_only on audit_event is disabled" in triggers
    )


def seal_unkeyed(db: Database) -> int:
    """Seal the unsealed rows the way the sealer did before the chain was keyed (plain SHA-256)."""
    with UnitOfWork(db, write=True) as uow:
        head = uow.conn.execute(select(audit_chain_head)).mappings().one()
        seq, prev, last_id = int(head["seq"]), str(head["chain_hash"]), int(head["last_id"])
        rows = uow.conn.execute(
            select(audit_event).where(audit_event.c.seq.is_(None)).order_by(audit_event.c.id)
        ).mappings()
        for row in rows:
            seq += 1
            digest = legacy_hash(prev, {**row, "seq": seq})
            uow.conn.execute(
                update(audit_event)
                .where(audit_event.c.id == row["id"])
                .values(seq=seq, prev_hash=prev, chain_hash=digest)
            )
            prev, last_id = digest, int(row["id"])
        uow.conn.execute(update(audit_chain_head).values(seq=seq, chain_hash=prev, last_id=last_id))
        uow.commit()
    return seq


def test_a_log_sealed_before_the_chain_was_keyed_still_verifies(fresh_db: Database) -> None:
    db = fresh_db
    commit_records(db, [make_record(f"old-{i}") for i in range(4)])
    assert seal_unkeyed(db) == 4
    report = verify(db)
    assert report.ok and report.rows == 4 and report.legacy_rows == 4
    commit_records(db, [make_record(f"new-{i}") for i in range(3)])
    assert seal(db) == 3  # the upgraded sealer goes on from the unkeyed head, keyed
    rows = all_rows(db)
    assert [hash_key_id(r["chain_hash"]) for r in rows] == [None] * 4 + [keyring_of(db).current_key_id] * 3
    report = verify(db)
    assert report.ok and report.rows == 7 and report.legacy_rows == 4
    # The unkeyed part can be recomputed by anyone, but the first keyed row pins it.
    prev = rows[0]["chain_hash"]
    with attacker(db) as conn:
        for row in rows[1:4]:
            forged = {**row, "prev_hash": prev, "agent_id": "mallory" if row is rows[1] else row["agent_id"]}
            forged["chain_hash"] = legacy_hash(prev, forged)
            conn.execute(
                update(audit_event)
                .where(audit_event.c.id == row["id"])
                .values(agent_id=forged["agent_id"], prev_hash=prev, chain_hash=forged["chain_hash"])
            )
            prev = forged["chain_hash"]
    [problem] = verify(db).problems
    assert (problem.kind, problem.id) == ("edited", rows[3]["id"]) and "rewritten" in problem.detail


def test_key_rotation_keeps_older_rows_verifiable(fresh_db: Database) -> None:
    db = fresh_db
    old = keyring_of(db)
    try:
        commit_records(db, [make_record(f"before-{i}") for i in range(3)])
        seal(db)
        rotated = old.with_new_current_key("k7")
        sealing.install(db.engine, rotated)  # `yilian keys rotate` and a restart
        commit_records(db, [make_record(f"after-{i}") for i in range(3)])
        seal(db)
        assert [hash_key_id(r["chain_hash"]) for r in all_rows(db)] == [old.current_key_id] * 3 + ["k7"] * 3
        report = verify(db)
        assert report.ok and report.rows == 6
        with db.engine.connect() as conn:  # what `yilian keys retire` refuses to strand
            assert (key_usage(conn, old.current_key_id), key_usage(conn, "k7")) == (3, 3)
        # A keyring without the old key cannot check the old rows, and says so.
        sealing.install(db.engine, rotated.without_key(old.current_key_id))
        [problem] = verify(db).problems
        assert problem.kind == "key" and f"data key {old.current_key_id!r}" in problem.detail
        assert problem.seq == 1
    finally:
        sealing.install(db.engine, old)


def test_verify_names_missing_disabled_or_replaced_triggers(fresh_db: Database) -> None:
    db = fresh_db
    sealed_log(db, 2)
    with attacker(db, tidy=False):
        pass
    problems = verify(db).problems
    assert {p.kind for p in problems} == {"triggers"}
    if db.is_sqlite:
        assert [p.detail.split()[3] for p in problems] == ["audit_event_no_update", "audit_event_no_delete"]
    else:
        [problem] = problems
        assert "audit_event_append_only on audit_event is disabled" in problem.detail
    with db.engine.begin() as conn:
        if db.is_sqlite:
            # A harmless stand-in under the same name lets every edit through.
            conn.exec_driver_sql(
                "CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event "
                "BEGIN SELECT RAISE(ABORT, 'no') WHERE 0; END"
            )
            conn.exec_driver_sql(sqlite_triggers()["audit_event_no_delete"])
        else:
            conn.exec_driver_sql("ALTER TABLE audit_event ENABLE TRIGGER audit_event_append_only")
            conn.exec_driver_sql(
                "CREATE OR REPLACE FUNCTION audit_event_guard() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RETURN NEW; END $$"
            )
    [problem] = verify(db).problems
    assert problem.kind == "triggers" and "replaced" in problem.detail
    assert "audit_event_no_update" in problem.detail or "audit_event_append_only" in problem.detail


def test_a_head_kept_elsewhere_catches_a_cut_off_end_and_a_rewrite_with_the_key(fresh_db: Database) -> None:
    db = fresh_db
    sealed_log(db, 5)
    report = verify(db)
    head = (report.last_seq, report.head_hash)
    assert head[1] == all_rows(db)[-1]["chain_hash"]
    commit_records(db, [make_record(f"later-{i}") for i in range(2)])
    seal(db)
    assert verify(db, expect=[head]).ok  # the chain grew, and still holds the head
    rows = all_rows(db)
    # Someone cuts the last three rows off and sets the chain head to match: the chain itself is
    # intact, only the head kept elsewhere knows it went further.
    with attacker(db) as conn:
        conn.execute(audit_event.delete().where(audit_event.c.seq >= 5))
        conn.execute(
            update(audit_chain_head).values(seq=4, chain_hash=rows[3]["chain_hash"], last_id=rows[3]["id"])
        )
    assert verify(db).ok
    [problem] = verify(db, expect=[head]).problems
    assert problem.kind == "anchor" and "no seq 5" in problem.detail
    # Whoever holds the keys could rewrite the chain so that it checks; not so the kept head.
    rows = all_rows(db)
    prev = rows[1]["chain_hash"]
    with attacker(db) as conn:
        for row in rows[2:]:
            forged = {**row, "prev_hash": prev, "outcome": 12}
            forged["chain_hash"] = chain_hash(prev, forged, keyring_of(db))
            conn.execute(
                update(audit_event)
                .where(audit_event.c.id == row["id"])
                .values(outcome=12, prev_hash=prev, chain_hash=forged["chain_hash"])
            )
            prev = forged["chain_hash"]
        conn.execute(update(audit_chain_head).values(chain_hash=prev))
    early = (3, rows[2]["chain_hash"])
    assert verify(db).ok
    [problem] = verify(db, expect=[early]).problems
    assert problem.kind == "anchor" and "seq 3 now has another hash" in problem.detail


# -- retention -------------------------------------------------------------------------------------


def test_prune_refuses_anything_younger_than_183_days(fresh_db: Database) -> None:
    db = fresh_db
    sealed_log(db, 3)
    for days in (0, 30, 182):
        with pytest.raises(YilianError) as err:
            prune(db, NOW - dt.timedelta(days=days))
        assert err.value.category is Category.INVALID and "183 days" in err.value.message
    assert prune(db, NOW - dt.timedelta(days=200)).rows == 0  # every row is young
    assert len(all_rows(db)) == 3 and verify(db).ok


def test_prune_removes_old_rows_behind_a_checkpoint(fresh_db: Database) -> None:
    db = fresh_db
    commit_records(db, [make_record(f"old-{i}", recorded=NOW - dt.timedelta(days=300 - i)) for i in range(5)])
    commit_records(db, [make_record(f"young-{i}") for i in range(3)])
    seal(db)
    result = prune(db, (NOW - dt.timedelta(days=250)).date())
    assert (result.rows, result.up_to_seq) == (5, 5)
    assert [r["agent_id"] for r in all_rows(db)] == ["young-0", "young-1", "young-2"]
    report = verify(db)
    assert report.ok and report.start_seq == 5 and report.rows == 3
    assert prune(db, NOW - dt.timedelta(days=250)).rows == 0
    # The checkpoint is as append-only as the log; the young rows are still guarded.
    assert refused(db, "DELETE FROM audit_checkpoint")
    assert refused(db, "UPDATE audit_checkpoint SET up_to_seq = 1000")
    assert refused(db, "DELETE FROM audit_event")
    with db.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_checkpoint)).scalar_one() == 1
    # The chain must go on from the checkpoint: a first row re-chained onto something else is found.
    first = all_rows(db)[0]
    forged = {**first, "prev_hash": "f" * 64}
    with attacker(db) as conn:
        conn.execute(
            update(audit_event)
            .where(audit_event.c.id == first["id"])
            .values(prev_hash=forged["prev_hash"], chain_hash=chain_hash(forged["prev_hash"], forged))
        )
    problems = verify(db).problems
    assert [(p.kind, p.id) for p in problems] == [("edited", first["id"]), ("checkpoint", first["id"])]
    assert "rewritten" in problems[0].detail and "checkpoint at seq 5" in problems[1].detail


def test_prune_refuses_to_destroy_evidence(fresh_db: Database) -> None:
    db = fresh_db
    commit_records(db, [make_record(f"old-{i}", recorded=NOW - dt.timedelta(days=300)) for i in range(4)])
    seal(db)
    with attacker(db) as conn:
        conn.execute(update(audit_event).where(audit_event.c.seq == 2).values(agent_id="mallory"))
    with pytest.raises(YilianError) as err:
        prune(db, NOW - dt.timedelta(days=200))
    assert err.value.category is Category.CONFLICT
    assert len(all_rows(db)) == 4


# -- search, for auditors ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded(db: Database) -> dict[str, Any]:
    """A small log: two institutions, the operator, a resident; reads, writes, a denial, a break-glass."""
    t = tag()
    day = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)
    org_a, org_b = f"hosp-a-{t}", f"clinic-b-{t}"
    p1, p2 = f"p1-{t}", f"p2-{t}"
    recs = [
        make_record(f"dr-wang-{t}", org_id=org_a, entity=f"Patient/{p1}", patient_keys=(p1,), recorded=day),
        make_record(f"dr-wang-{t}", org_id=org_a, subtype="search-type", query=f"Observation?patient={p1}",
                    patient_keys=(p1,), recorded=day + dt.timedelta(hours=1)),
        make_record(f"dr-wang-{t}", org_id=org_a, action="C", subtype="create", entity=f"Observation/o-{t}",
                    patient_keys=(p1,), recorded=day + dt.timedelta(days=1)),
        make_record(f"dr-li-{t}", org_id=org_b, entity=f"Patient/{p2}", patient_keys=(p2,), recorded=day + dt.timedelta(days=2)),
        make_record(f"dr-li-{t}", org_id=org_b, entity=f"Patient/{p1}", outcome=4, subtype="access-denied",
                    recorded=day + dt.timedelta(days=2, hours=1)),
        make_record(f"dr-li-{t}", org_id=org_b, entity=f"Patient/{p1}", patient_keys=(p1,), purpose="BTG",
                    recorded=day + dt.timedelta(days=2, hours=2)),
        make_record(f"ops-{t}", agent_kind="operator", subtype="search-type", query="Patient?birthdate=1980",
                    patient_keys=(p1, p2), recorded=day + dt.timedelta(days=3)),
        make_record(f"client-{t}", agent_kind="system", org_id=org_a, action="E", subtype="token", recorded=day + dt.timedelta(days=4)),
    ]  # fmt: skip
    commit_records(db, recs)
    return {"t": t, "org_a": org_a, "org_b": org_b, "p1": p1, "p2": p2}


def found(db: Database, s: dict[str, Any], params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(agent, subtype) of the matches among the seeded rows, newest first."""
    with UnitOfWork(db) as uow:
        rows = search_audit(uow, [*params, ("_count", "1000")])
    return [(r.agent_id.removesuffix(f"-{s['t']}"), r.subtype) for r in rows if s["t"] in r.agent_id]


def test_search_by_patient_user_institution_time_and_action(db: Database, seeded: dict[str, Any]) -> None:
    s = seeded
    t = s["t"]
    assert found(db, s, [("patient", f"Patient/{s['p1']}")]) == [
        ("ops", "search-type"), ("dr-li", "read"), ("dr-wang", "create"), ("dr-wang", "search-type"), ("dr-wang", "read"),
    ]  # fmt: skip
    assert found(db, s, [("patient", s["p2"])]) == [("ops", "search-type"), ("dr-li", "read")]
    assert found(db, s, [("patient", s["p1"][:-1])]) == []  # a prefix of an id is another patient
    # entity=Patient/… covers the events about the Patient resource and those that touched the patient
    assert ("dr-li", "access-denied") in found(db, s, [("entity", f"Patient/{s['p1']}")])
    assert found(db, s, [("entity", f"Observation/o-{t}")]) == [("dr-wang", "create")]
    assert found(db, s, [("agent", f"dr-li-{t}")]) == [
        ("dr-li", "read"),
        ("dr-li", "access-denied"),
        ("dr-li", "read"),
    ]
    assert found(db, s, [("altid", f"dr-wang-{t}"), ("action", "C")]) == [("dr-wang", "create")]
    assert found(db, s, [("agent:identifier", f"https://yilian.example.cn/fhir/sid/client|client-{t}")]) == [
        ("client", "token")
    ]
    assert found(db, s, [("agent:identifier", f"https://yilian.example.cn/fhir/sid/user|client-{t}")]) == []
    assert [a for a, _ in found(db, s, [("agent", f"Organization/{s['org_a']}")])] == [
        "client",
        "dr-wang",
        "dr-wang",
        "dr-wang",
    ]
    assert found(db, s, [("org", s["org_b"]), ("subtype", "read")]) == [("dr-li", "read"), ("dr-li", "read")]
    assert found(db, s, [("org:missing", "true"), ("agent", f"ops-{t}")]) == [("ops", "search-type")]
    assert found(db, s, [("agent", f"dr-wang-{t}"), ("date", "2026-11-02")]) == [
        ("dr-wang", "search-type"),
        ("dr-wang", "read"),
    ]
    assert found(db, s, [("agent", f"dr-wang-{t}"), ("date", "gt2026-11-02T08:00:00Z")]) == [
        ("dr-wang", "create"),
        ("dr-wang", "search-type"),
    ]
    assert found(db, s, [("agent", f"dr-wang-{t}"), ("date", "le2026-11-02T08:00")]) == [("dr-wang", "read")]
    assert found(db, s, [("date", "ge2026-11-05"), ("date", "lt2026-11-06")]) == [("ops", "search-type")]
    assert found(db, s, [("date", "2026-11-05,2026-11-06")]) == [("client", "token"), ("ops", "search-type")]
    assert found(db, s, [("outcome", "4")]) == [("dr-li", "access-denied")]
    assert found(db, s, [("flagged", "true")]) == [("dr-li", "read"), ("dr-li", "access-denied")]
    assert found(db, s, [("purpose", "BTG")]) == [("dr-li", "read")]
    assert found(db, s, [("action", "http://hl7.org/fhir/audit-event-action|E")]) == [("client", "token")]
    assert found(db, s, [("subtype", "http://hl7.org/fhir/restful-interaction|create,search-type"), ("agent", f"dr-wang-{t}")]) == [
        ("dr-wang", "create"), ("dr-wang", "search-type"),
    ]  # fmt: skip


def test_search_pages_newest_first_with_signed_cursors(db: Database, seeded: dict[str, Any]) -> None:
    s = seeded
    params = [("patient", s["p1"])]
    seen: list[int] = []
    cursor: str | None = None
    with UnitOfWork(db) as uow:
        while True:
            page = search_audit(
                uow, [*params, ("_count", "2"), *([("_cursor", cursor)] if cursor else [])], who="auditor-1"
            )
            assert len(page) <= 2
            seen.extend(r.id for r in page)
            cursor = page.next_cursor
            if cursor is None:
                break
        everything = search_audit(uow, params, who="auditor-1")
        assert seen == [r.id for r in everything] and len(seen) == 5
        recorded = [r.recorded for r in everything]
        assert recorded == sorted(recorded, reverse=True)
        first = search_audit(uow, [*params, ("_count", "2")], who="auditor-1")
        assert first.next_cursor is not None
        # A cursor continues its own query for its own auditor only.
        for other, who in (
            ([("patient", s["p2"]), ("_cursor", first.next_cursor)], "auditor-1"),
            ([*params, ("_cursor", first.next_cursor)], "auditor-2"),
            ([*params, ("_cursor", first.next_cursor[:-2] + "xx")], "auditor-1"),
        ):
            with pytest.raises(YilianError) as err:
                search_audit(uow, other, who=who)
            assert err.value.category is Category.INVALID


def test_search_refuses_what_it_does_not_understand(db: Database) -> None:
    with UnitOfWork(db) as uow:
        for params in (
            [("user", "x")],
            [("date", "yesterday")],
            [("flagged", "maybe")],
            [("agent:contains", "x")],
            [("_count", "x")],
        ):
            with pytest.raises(YilianError) as err:
                search_audit(uow, params)
            assert err.value.category is Category.INVALID


def test_read_audit_serves_a_valid_audit_event(db: Database, seeded: dict[str, Any]) -> None:
    with UnitOfWork(db) as uow:
        [row] = search_audit(uow, [("agent", f"client-{seeded['t']}")])
        again = read_audit(uow, str(row.id))
        assert again == row
        resource = row.resource()
        check(resource)
        assert resource["id"] == str(row.id) and resource["subtype"][0]["code"] == "token"
        for missing in ("999999999", "abc"):
            with pytest.raises(YilianError) as err:
                read_audit(uow, missing)
            assert err.value.category is Category.NOT_FOUND


# -- the command -------------------------------------------------------------------------------------


def test_cli_verify_seal_and_prune(fresh_db: Database) -> None:
    db = fresh_db
    url = db.url.set(drivername=db.url.get_backend_name()).render_as_string(hide_password=False)
    commit_records(db, [make_record(f"cli-{i}") for i in range(4)])
    runner = CliRunner()
    result = runner.invoke(audit_app, ["verify", "--no-seal", "--database", url])
    assert (
        result.exit_code == 0
        and "chain intact: 0 rows" in result.output
        and "4 not sealed yet" in result.output
    )
    result = runner.invoke(audit_app, ["seal", "--database", url])
    assert result.exit_code == 0 and "sealed 4 rows" in result.output
    result = runner.invoke(audit_app, ["verify", "--database", url], env={"COLUMNS": "300"})
    assert result.exit_code == 0 and "chain intact: 4 rows" in result.output
    head = next(line.split()[1] for line in result.output.splitlines() if line.startswith("head "))
    assert head.startswith("4:v2:")
    result = runner.invoke(audit_app, ["verify", "--expect", head, "--database", url])
    assert result.exit_code == 0 and "chain intact: 4 rows" in result.output
    result = runner.invoke(audit_app, ["verify", "--expect", "7:" + head.split(":", 1)[1], "--database", url])
    assert result.exit_code == 1 and "anchor" in result.output
    result = runner.invoke(audit_app, ["verify", "--expect", "not-a-head", "--database", url])
    assert result.exit_code == 2 and "SEQ:HASH" in result.output
    with attacker(db) as conn:
        conn.execute(update(audit_event).where(audit_event.c.seq == 2).values(outcome=8))
    result = runner.invoke(audit_app, ["verify", "--database", url])
    assert result.exit_code == 1 and "edited" in result.output and "outcome" in result.output
    soon = (NOW - dt.timedelta(days=10)).date().isoformat()
    result = runner.invoke(audit_app, ["prune", "--before", soon, "--database", url])
    assert result.exit_code == 2 and "183 days" in result.output
    assert len(all_rows(db)) == 4


def test_cli_prune_records_itself_in_the_pruning_transaction(fresh_db: Database) -> None:
    """The log never loses rows without saying who removed them: `yilian audit prune` writes its
    own AuditEvent (as the operator at the console) in the transaction that deletes them."""
    from tests.support.audit import audits, by_the_operator

    db = fresh_db
    url = db.url.set(drivername=db.url.get_backend_name()).render_as_string(hide_password=False)
    commit_records(db, [make_record(f"old-{i}", recorded=NOW - dt.timedelta(days=300 - i)) for i in range(3)])
    commit_records(db, [make_record("young-0")])
    seal(db)
    before = (NOW - dt.timedelta(days=250)).date().isoformat()
    result = CliRunner().invoke(audit_app, ["prune", "--before", before, "--database", url])
    assert result.exit_code == 0, result.output
    (pruned,) = audits(db, "audit-prune")
    said = by_the_operator(pruned, "D")
    assert said == f"removed 3 audit records recorded before {before}; the chain continues after seq 3"
    assert [r["agent_id"] for r in all_rows(db)] == ["young-0", pruned.agent_id]
    seal(db)
    assert verify(db).ok
    # A refused prune removes nothing and records nothing.
    soon = (NOW - dt.timedelta(days=10)).date().isoformat()
    assert CliRunner().invoke(audit_app, ["prune", "--before", soon, "--database", url]).exit_code == 2
    assert len(audits(db, "audit-prune")) == 1
