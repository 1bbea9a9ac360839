"""Running a mapping over a folder of CSV files: every row lands in the FHIR core or is reported.

Writes go through the FHIR core's create interaction (:func:`yilian.fhir.dispatch`) with the
settings the caller gives (the platform's, from the CLI), so validation, referential
integrity, the patient index and access grants apply exactly as to a REST client's write.

**Idempotency: conditional create on the source key.** Each resource carries the identifier
``<table's system>|<source key>`` and is created with ``If-None-Exist: identifier=…``. The FHIR
core backs conditional create with a unique claim (``conditional_claim``), so a second run —
or two runs at once — finds the resource the first made and creates nothing. This was chosen
over deterministic ids (a hash of the key as ``Patient/<id>``, written by update-as-create)
because an update writes a new version each run (history grows, observers run again, and the
patient index would re-decide a steward's link), while a conditional create that matches is a
read. The identifier also keeps the legacy key searchable (``Encounter?identifier=…``), which
people reconciling the migration ask for, and lets a chunk find its rows already loaded with one
search (:func:`_already_there`), so a re-run skips them cheaply. What it does not do: a row whose content changed in
the legacy system since the last run is *not* updated (it counts as unchanged).

Rows are written in chunks of :data:`CHUNK`, one transaction each, every row in a savepoint of
its own: a row the server refuses costs only itself, and a chunk retried after a transient
database error repeats exactly (counts are taken after commit).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlencode

import orjson

from yilian import mpi
from yilian.db import Database, UnitOfWork
from yilian.db.uow import transact
from yilian.exchange.migrate import source
from yilian.exchange.migrate.plan import Plan, TablePlan
from yilian.exchange.migrate.report import MigrationReport, Problem, TableReport
from yilian.exchange.migrate.source import SourceRow
from yilian.exchange.migrate.transform import RowProblem, column_for, source_key, transform
from yilian.fhir import FhirContext, FhirRequest, FhirSettings, dispatch
from yilian.fhir.interactions import writes
from yilian.fhir.interactions.search import find
from yilian.kernel.errors import Category, Issue, YilianError

CHUNK = 200  # rows per transaction: large enough to be fast, small enough to retry cheaply


class Listener(Protocol):
    """Told how the run goes (the CLI draws a progress bar per table)."""

    def table_started(self, table: TablePlan, rows: int) -> None: ...

    def advance(self, rows: int) -> None: ...

    def table_finished(self, report: TableReport) -> None: ...


class _Quiet:
    def table_started(self, table: TablePlan, rows: int) -> None:
        pass

    def advance(self, rows: int) -> None:
        pass

    def table_finished(self, report: TableReport) -> None:
        pass


@dataclass
class _Pending:
    row: SourceRow
    key: str
    problems: list[RowProblem] = field(default_factory=list)


@dataclass(frozen=True)
class _Outcome:
    status: str  # written | unchanged | rejected
    res_id: str = ""
    merged: bool = False
    problems: tuple[RowProblem, ...] = ()


def _escape(value: str) -> str:
    # Search-value escaping (FHIR search §escaping): a key may hold | , $ or \.
    return value.replace("\\", "\\\\").replace("|", "\\|").replace(",", "\\,").replace("$", "\\$")


def criteria(system: str, key: str) -> str:
    return urlencode([("identifier", f"{system}|{_escape(key)}")])


@dataclass
class _Ids:
    """Source key → resource id per table: this run's writes, else looked up in the database
    (rows loaded by an earlier run of the mapping)."""

    plan: Plan
    known: dict[str, dict[str, str]]
    absent: dict[str, set[str]]

    def resolver(self, uow: UnitOfWork, ctx: FhirContext) -> Callable[[str, str], str | None]:
        tables = {t.name: t for t in self.plan.tables}

        def resolve(table: str, key: str) -> str | None:
            found = self.known[table].get(key)
            if found is not None or key in self.absent[table]:
                return found
            target = tables[table]
            writes.flush(uow)
            matches = find(uow, ctx, target.resource, criteria(target.identifier_system, key), limit=1)
            if not matches:
                # Parents load before children, so a key missing now stays missing in this run.
                self.absent[table].add(key)
                return None
            self.known[table][key] = matches[0].res_id
            return matches[0].res_id

        return resolve


def migrate(
    db: Database,
    plan: Plan,
    data_dir: Path,
    *,
    settings: FhirSettings,
    base_url: str = "urn:yilian:migrate",
    listener: Listener | None = None,
    chunk: int = CHUNK,
) -> MigrationReport:
    """Load every table of ``plan`` from ``data_dir`` in dependency order; the report says what
    landed and lists every row that did not. Raises before writing anything when a file or a
    column the mapping needs is missing."""
    started = time.perf_counter()
    if not data_dir.is_dir():
        raise YilianError(Category.NOT_FOUND, f"there is no folder {data_dir}")
    issues = source.check(plan, data_dir)
    if issues:
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        raise YilianError(
            Category.INVALID,
            f"the files in {data_dir} do not fit the mapping: {issues[0].message}{more}",
            issues=issues,
        )
    listener = listener or _Quiet()
    ctx = FhirContext(base_url=base_url, settings=settings)
    report = MigrationReport(plan.source, plan.origin, str(data_dir))
    mapped = {t.file for t in plan.tables}
    report.unmapped_files = sorted(p.name for p in data_dir.glob("*.csv") if p.name not in mapped)
    ids = _Ids(plan, {t.name: {} for t in plan.tables}, {t.name: set() for t in plan.tables})
    for table in plan.tables:
        report.tables.append(_load_table(db, ctx, plan, table, data_dir, ids, report, listener, chunk))
    report.seconds = time.perf_counter() - started
    return report


def _load_table(
    db: Database,
    ctx: FhirContext,
    plan: Plan,
    table: TablePlan,
    data_dir: Path,
    ids: _Ids,
    report: MigrationReport,
    listener: Listener,
    chunk: int,
) -> TableReport:
    path = data_dir / table.file
    tr = TableReport(table.name, table.file, table.resource)
    listener.table_started(table, source.count(path, table))
    seen: dict[str, int] = {}
    batch: list[_Pending] = []
    for srow in source.rows(path, table):
        tr.read += 1
        batch.append(_pending(table, srow, seen))
        if len(batch) >= chunk:
            _write_batch(db, ctx, plan, table, batch, ids, tr, report)
            listener.advance(len(batch))
            batch = []
    if batch:
        _write_batch(db, ctx, plan, table, batch, ids, tr, report)
        listener.advance(len(batch))
    listener.table_finished(tr)
    return tr


def _pending(table: TablePlan, srow: SourceRow, seen: dict[str, int]) -> _Pending:
    if srow.problem is not None:
        return _Pending(srow, "", [RowProblem("", srow.problem)])
    key = source_key(table, srow.values)
    if isinstance(key, RowProblem):
        return _Pending(srow, "", [key])
    n = seen.get(key, 0) + 1
    seen[key] = n
    if n > 1:
        if table.duplicates == "reject":
            return _Pending(
                srow,
                key,
                [
                    RowProblem(
                        ",".join(table.key_columns), f"the key {key!r} is already used by an earlier row"
                    )
                ],
            )
        key = f"{key}#{n}"
    return _Pending(srow, key)


def _write_batch(
    db: Database,
    ctx: FhirContext,
    plan: Plan,
    table: TablePlan,
    batch: list[_Pending],
    ids: _Ids,
    tr: TableReport,
    report: MigrationReport,
) -> None:
    def work(uow: UnitOfWork, deferred: bool) -> list[_Outcome]:
        resolve = ids.resolver(uow, ctx)
        there = _already_there(uow, ctx, table, [p.key for p in batch if not p.problems])
        out = []
        with writes.deferred_checks(uow) if deferred else nullcontext():
            for p in batch:
                if p.problems:
                    out.append(_Outcome("rejected", problems=tuple(p.problems)))
                    continue
                if p.key in there:
                    out.append(_Outcome("unchanged", there[p.key]))
                    continue
                t = transform(table, p.row.values, p.key, resolve=resolve, tz=plan.timezone)
                if t.resource is None:
                    out.append(_Outcome("rejected", problems=tuple(t.problems)))
                    continue
                out.append(_create(uow, ctx, table, p.key, t.resource))
        if deferred:
            writes.finish(uow, ctx)
        return out

    # References come from ids the server gave this run (or found by search), so checking them
    # once per chunk rather than once per row almost never fails; when it does (a resource
    # deleted meanwhile), the chunk is rolled back and written again row by row, so that the
    # one bad row is reported and the rest land.
    try:
        outcomes = transact(db, lambda uow: work(uow, True))
    except YilianError:
        outcomes = transact(db, lambda uow: work(uow, False))
    for p, o in zip(batch, outcomes, strict=True):
        if o.status == "rejected":
            tr.rejected += 1
            for prob in o.problems:
                report.problems.append(
                    Problem(table.file, p.row.line, p.row.row, table.name, p.key, prob.column, prob.reason)
                )
            continue
        ids.known[table.name][p.key] = o.res_id
        if o.status == "written":
            tr.written += 1
            tr.merged += int(o.merged)
        else:
            tr.unchanged += 1


def _already_there(uow: UnitOfWork, ctx: FhirContext, table: TablePlan, keys: list[str]) -> dict[str, str]:
    """Which of a chunk's keys an earlier run loaded (key → resource id), in one search.

    Only a shortcut: a re-run then costs one search per chunk instead of one conditional create
    per row. Rows not found still go through the conditional create, which is what guarantees
    that nothing is created twice (two runs at once included).
    """
    if not keys:
        return {}
    writes.flush(uow)
    wanted = ",".join(f"{table.identifier_system}|{_escape(k)}" for k in keys)
    query = [
        ("identifier", wanted),
        ("_elements", "identifier"),
        ("_count", str(len(keys))),
        ("_total", "none"),
    ]
    body = orjson.loads(dispatch(uow, ctx, FhirRequest("GET", table.resource, query=query)).body or b"{}")
    found: dict[str, str] = {}
    for entry in body.get("entry") or []:
        res = entry.get("resource") or {}
        if entry.get("search", {}).get("mode", "match") != "match":
            continue
        for ident in res.get("identifier") or []:
            if ident.get("system") == table.identifier_system and isinstance(ident.get("value"), str):
                found[ident["value"]] = res["id"]
    return found


def _create(
    uow: UnitOfWork, ctx: FhirContext, table: TablePlan, key: str, resource: dict[str, object]
) -> _Outcome:
    req = FhirRequest(
        "POST",
        table.resource,
        headers={"if-none-exist": criteria(table.identifier_system, key), "prefer": "return=minimal"},
        body=resource,
    )
    # No savepoint of our own: a conditional create validates before it writes, and writes (and
    # runs the observers) inside a savepoint that it rolls back when anything fails.
    try:
        resp = dispatch(uow, ctx, req)
        assert resp.resource is not None
        res_id = resp.resource.res_id
        created = resp.status == 201
        merged = created and table.resource == "Patient" and _joined_a_person(uow, res_id)
    except YilianError as err:
        return _Outcome("rejected", problems=tuple(_problems(table, err)))
    return _Outcome("written" if created else "unchanged", res_id, merged)


def _joined_a_person(uow: UnitOfWork, patient_id: str) -> bool:
    """Did the patient index link this new record to a person who already had a record?"""
    person = mpi.person_of(uow, patient_id)
    return person is not None and len(mpi.records_of(uow, person)) > 1


def _problems(table: TablePlan, err: YilianError) -> list[RowProblem]:
    issues = [i for i in err.issues if i.severity in ("error", "fatal")] or [Issue(err.message)]
    out = []
    for issue in issues[:5]:
        column = next((c for e in issue.expression if (c := column_for(table, e))), "")
        where = f" ({', '.join(issue.expression)})" if issue.expression else ""
        reason = issue.message if issue.message.strip() else err.message
        out.append(RowProblem(column, f"refused by the server: {reason}{where}"))
    return out
