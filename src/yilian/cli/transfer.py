"""``yilian import`` and ``yilian export``: progress bars on stderr, summaries as tables.

Import reads FHIR JSON files (a resource or a Bundle), NDJSON (one resource a line) and folders
of them. Transaction and batch Bundles are processed as such (:func:`yilian.fhir.bulk.import_file`).
Every other resource is written with its own id when it has one (update-as-create, so importing
the same file again adds versions, never resources) or with a new id otherwise.

Inputs come in any order — an export writes one file per type, so ``Claim.ndjson`` sorts before
the ``Patient.ndjson`` its claims are about — while the server refuses references to resources
it does not hold. So a resource refused *only* because something it refers to is not there yet
is put aside and tried again once the rest is in, as long as each round loads something;
resources left that refer to each other in a cycle are then written together in one
transaction, whose reference check runs once at its end. Whatever still fails is reported
with its file, line and reason, and does not stop the rest.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from sqlalchemy import func, select

from yilian.cli.common import audit_partial, console, err_console, operator_record, record_alone
from yilian.db import Database, UnitOfWork
from yilian.db.uow import transact
from yilian.fhir import FhirContext, FhirRequest, FhirSettings, bulk, dispatch
from yilian.fhir.interactions import bulk_write, writes
from yilian.fhir.model import model
from yilian.fhir.search.values import date_range
from yilian.fhir.store.tables import resource as resource_table
from yilian.kernel.errors import Category, YilianError
from yilian.kernel.ids import is_valid_fhir_id

CHUNK = 500  # resources per database transaction: big enough to be fast, small enough to retry
ERRORS_SHOWN = 20  # per file; the summary table still counts them all
ERRORS_KEPT = 10_000


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


@dataclass
class FileReport:
    """What happened to one input file: the row of the summary table and its errors."""

    path: str
    read: int = 0
    written: int = 0
    failed: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line, message): shown in line order

    def fail(self, where: str, message: str, line: int = 0) -> None:
        self.failed += 1
        if len(self.errors) < ERRORS_KEPT:  # a file of a million bad lines must not fill memory
            self.errors.append((line, f"{where}: {message}" if where else message))


@dataclass
class Item:
    """One resource read from an input, with where it came from (``line 12``)."""

    report: FileReport
    line: int  # 0 for a JSON file's one resource
    resource: dict[str, Any]
    error: YilianError | None = None

    @property
    def where(self) -> str:
        return f"line {self.line}" if self.line else ""

    def fail(self, message: str) -> None:
        self.report.fail(self.where, message, self.line)


def _is_missing_reference(err: YilianError) -> bool:
    # writes.finish refuses dangling references as UNPROCESSABLE with one not-found issue per
    # missing target: the only failure another round can cure.
    return err.category is Category.UNPROCESSABLE and all(i.code == "not-found" for i in err.issues)


def _request_for(res: dict[str, Any]) -> FhirRequest:
    """PUT ``Type/id`` for a resource with an id, POST ``Type`` otherwise; a fresh copy as body
    (the request owns it, and an item may be tried more than once)."""
    rtype = res.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        raise YilianError(Category.INVALID, "the resource has no resourceType")
    if not model().is_resource_type(rtype):
        raise YilianError(Category.INVALID, f"unknown resource type {rtype!r}")
    rid = res.get("id")
    body = orjson.loads(orjson.dumps(res))
    if rid is None:
        return FhirRequest("POST", rtype, body=body)
    if not isinstance(rid, str) or not is_valid_fhir_id(rid):
        # Checked here, not left to validation: the id becomes part of the request path.
        raise YilianError(
            Category.INVALID, f"id {rid!r} is not a valid FHIR id ([A-Za-z0-9-.], 1-64 characters)"
        )
    return FhirRequest("PUT", f"{rtype}/{rid}", body=body)


def _try_write(uow: UnitOfWork, ctx: FhirContext, item: Item) -> YilianError | None:
    """Write one resource in its own savepoint, so that a bad one costs only itself."""
    try:
        req = _request_for(item.resource)
        with writes.savepoint(uow) as rollback:
            try:
                dispatch(uow, ctx, req)
            except YilianError:
                rollback()
                raise
    except YilianError as err:
        return err
    return None


def _chunks(items: list[Item]) -> Iterator[list[Item]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _load(
    db: Database, ctx: FhirContext, items: list[Item], advance: Callable[[int], None] | None
) -> list[Item]:
    """Write ``items``; returns those refused only for referring to resources not (yet) there."""
    later: list[Item] = []
    for chunk in _chunks(items):

        def work(uow: UnitOfWork, chunk: list[Item] = chunk) -> list[YilianError | None]:
            # The batched write pipeline: validated and indexed per resource, written per chunk
            # (a fresh copy each time: the writer owns its input, and an item may be retried).
            return bulk_write.write_many(uow, ctx, [orjson.loads(orjson.dumps(i.resource)) for i in chunk])

        for item, err in zip(chunk, transact(db, work), strict=True):
            if err is None:
                item.report.written += 1
            elif _is_missing_reference(err):
                item.error = err
                later.append(item)
            else:
                item.fail(err.message)
        if advance is not None:
            advance(len(chunk))
    return later


def _identity(item: Item) -> tuple[str, str] | None:
    rtype, rid = item.resource.get("resourceType"), item.resource.get("id")
    return (rtype, rid) if isinstance(rtype, str) and isinstance(rid, str) else None


def _references(item: Item) -> set[tuple[str, str]]:
    rtype = item.resource.get("resourceType")
    own = _identity(item)
    return {
        (t, i) for t, i, _raw, _path in writes.local_references(item.resource, str(rtype)) if (t, i) != own
    }


def _stored(db: Database, ctx: FhirContext, targets: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of ``targets`` the database holds (read as any client would)."""

    def work(uow: UnitOfWork) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for t, i in sorted(targets):
            try:
                dispatch(uow, ctx, FhirRequest("GET", f"{t}/{i}"))
            except YilianError:
                continue
            found.add((t, i))
        return found

    return transact(db, work, write=False) if targets else set()


def _closed_group(db: Database, ctx: FhirContext, items: list[Item]) -> list[Item]:
    """The part of ``items`` whose references all lead to each other or to stored resources.

    A resource referring to something neither stored nor among them can never be written;
    leaving it (and whatever refers to it, and so on) out lets the rest load together.
    """
    refs = {id(item): _references(item) for item in items}
    stored = _stored(db, ctx, set().union(*refs.values()))
    group = items
    while True:
        ids = {_identity(item) for item in group}
        keep = [item for item in group if all(t in ids or t in stored for t in refs[id(item)])]
        if len(keep) == len(group):
            return keep
        group = keep


def _load_together(db: Database, ctx: FhirContext, items: list[Item]) -> bool:
    """Write ``items`` in one transaction with the reference check at its end (cycles)."""

    def work(uow: UnitOfWork) -> None:
        with writes.deferred_checks(uow):
            for item in items:
                err = _try_write(uow, ctx, item)
                if err is not None:
                    raise err
        writes.finish(uow, ctx)

    try:
        transact(db, work)
    except YilianError:
        return False
    for item in items:
        item.report.written += 1
    return True


def _read_items(path: Path, report: FileReport) -> list[Item] | None:
    """The resources in an NDJSON or JSON file; None for a transaction or batch Bundle."""
    raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    items: list[Item] = []
    if path.suffix == ".ndjson":
        for n, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            report.read += 1
            _parse_into(items, report, n, line)
        return items
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        report.read = 1
        report.fail("", f"not JSON: {exc}")
        return items
    if (
        isinstance(doc, dict)
        and doc.get("resourceType") == "Bundle"
        and doc.get("type") in ("transaction", "batch")
    ):
        return None
    report.read = 1
    _add(items, report, 0, doc)
    return items


def _parse_into(items: list[Item], report: FileReport, line: int, text: bytes) -> None:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        report.fail(f"line {line}", f"not JSON: {exc}", line)
        return
    _add(items, report, line, doc)


def _add(items: list[Item], report: FileReport, line: int, doc: Any) -> None:
    item = Item(report, line, doc if isinstance(doc, dict) else {})
    if isinstance(doc, dict):
        items.append(item)
    else:
        item.fail(f"not a FHIR resource (a JSON object) but a JSON {type(doc).__name__}")


def _units(path: Path) -> int:
    """How many resources a file holds, for the progress bar.

    Like ``bulk.count_units``, but past a UTF-8 byte-order mark (Windows tools write one, and
    the import reads such files), which would otherwise make a whole Bundle count as one.
    """
    try:
        raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
        if path.suffix == ".ndjson":
            return sum(1 for line in raw.splitlines() if line.strip())
        doc = orjson.loads(raw)
    except (OSError, orjson.JSONDecodeError):
        return 1
    if (
        isinstance(doc, dict)
        and doc.get("resourceType") == "Bundle"
        and doc.get("type") in ("transaction", "batch")
    ):
        return len(doc.get("entry") or [])
    return 1


def _import_bundle(
    db: Database, ctx: FhirContext, path: Path, report: FileReport, advance: Callable[[int], None]
) -> None:
    done = bulk.import_file(db, ctx, path, advance)
    report.read, report.written, report.failed = done.read, done.written, done.failed
    # bulk names the file in a whole-Bundle failure; the summary already does.
    report.errors = [(0, e.removeprefix(f"{path}: ")) for e in done.errors]
    if done.failed and report.written == 0:
        # A transaction is all or nothing: every entry of a failed one is a resource not loaded.
        report.failed = max(report.failed, report.read)


def run_import(db: Database, settings: FhirSettings, paths: list[Path]) -> int:
    """Load ``paths``; print the summary; return how many resources failed."""
    for p in paths:
        if not p.exists():
            raise YilianError(Category.NOT_FOUND, f"{p} does not exist")
    files = list(bulk.iter_inputs(paths))
    if not files:
        raise YilianError(
            Category.NOT_FOUND, f"no .json or .ndjson files in {', '.join(str(p) for p in paths)}"
        )
    ctx = FhirContext(base_url="urn:yilian:import", settings=settings)
    reports: list[FileReport] = []
    later: list[Item] = []

    def loaded() -> str | None:
        written = sum(r.written for r in reports)
        if not written:
            return None
        return (
            f"imported {written} resources from {len(reports)} of {len(files)} file(s) "
            f"({sum(r.read for r in reports)} read, {sum(r.failed for r in reports)} failed)"
        )

    # The load commits in many transactions: one AuditEvent for it all, after the last, or
    # one saying how far it got if it stops midway.
    with audit_partial(db, action="C", subtype="import", entity=None, done=loaded):
        _import_files(db, ctx, files, reports, later)
    summary = loaded()
    if summary is not None:
        record_alone(db, operator_record(action="C", subtype="import", outcome_desc=summary))
    _print_import_summary(reports)
    return sum(r.failed for r in reports)


def _import_files(
    db: Database, ctx: FhirContext, files: list[Path], reports: list[FileReport], later: list[Item]
) -> None:
    with _progress() as progress:
        task = progress.add_task("导入 importing", total=sum(_units(f) for f in files))

        def advance(n: int) -> None:
            progress.advance(task, n)

        for f in files:
            progress.update(task, description=f"导入 {escape(f.name)}")
            report = FileReport(str(f))
            reports.append(report)
            try:
                items = _read_items(f, report)
            except OSError as exc:
                report.fail("", f"cannot read: {exc.strerror}")
                advance(_units(f))
                continue
            if items is None:
                _import_bundle(db, ctx, f, report, advance)
                continue
            advance(report.failed)  # lines that were not even JSON count as done
            later.extend(_load(db, ctx, items, advance))
        # Rounds: each loads what the previous one made possible; stop when one loads nothing.
        while later:
            progress.update(task, description=f"导入 {len(later)} resources referring to others")
            remaining = _load(db, ctx, later, None)
            if len(remaining) == len(later):
                break
            later = remaining
        if later:
            # What is left refers to what is not there; only cycles among it can still load.
            group = _closed_group(db, ctx, later)
            loaded = {id(item) for item in group} if group and _load_together(db, ctx, group) else set()
            for item in later:
                if id(item) not in loaded:
                    assert item.error is not None
                    item.fail(item.error.message)
        progress.update(task, description="导入 imported")


def _print_import_summary(reports: list[FileReport]) -> None:
    table = Table(title="导入结果 Import summary")
    table.add_column("file", overflow="fold")  # the whole name, wrapped if need be, never cut
    table.add_column("read", justify="right")
    table.add_column("written", justify="right")
    table.add_column("failed", justify="right")
    for r in reports:
        table.add_row(escape(r.path), str(r.read), str(r.written), f"[red]{r.failed}[/]" if r.failed else "0")
    table.add_row(
        "[bold]total", *(str(sum(getattr(r, k) for r in reports)) for k in ("read", "written", "failed"))
    )
    console.print(table)
    for r in reports:
        for _line, e in sorted(r.errors, key=lambda e: e[0])[:ERRORS_SHOWN]:
            err_console.print(f"[red]✗[/] {escape(r.path)} {escape(e)}", soft_wrap=True)
        if len(r.errors) > ERRORS_SHOWN:
            err_console.print(
                f"  … and {len(r.errors) - ERRORS_SHOWN} more in {escape(r.path)}", soft_wrap=True
            )


def _since_us(since: str | None) -> int | None:
    if not since:
        return None
    r = date_range(since)
    if r is None:
        raise YilianError(
            Category.INVALID,
            f"--since must be a FHIR date or instant (2024-01-31, 2024-01-31T08:00:00+08:00), not {since!r}",
        )
    return r[0]


def _count(db: Database, types: list[str] | None, since_us: int | None) -> int:
    """How many resources the export will write (the same conditions as ``bulk.export``)."""
    stmt = select(func.count()).select_from(resource_table).where(resource_table.c.deleted.is_(False))
    if types:
        stmt = stmt.where(resource_table.c.res_type.in_(types))
    if since_us is not None:
        stmt = stmt.where(resource_table.c.last_updated >= since_us)
    with db.engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def run_export(db: Database, out: Path, types: list[str] | None, since: str | None) -> None:
    # Every argument is checked before anything is written or any progress shown.
    for t in types or []:
        if not model().is_resource_type(t):
            raise YilianError(Category.INVALID, f"unknown resource type {t!r}")
    since_us = _since_us(since)
    total = _count(db, types, since_us)
    counts: dict[str, int] = {}
    where = "standard output" if str(out) == "-" else str(out)

    def exported() -> str | None:
        if not counts:
            return None
        scope = f"types {', '.join(types)}" if types else "every type"
        return (
            f"exported {sum(counts.values())} resources ({scope}"
            + (f", changed since {since}" if since else "")
            + f") to {where}"
        )

    # An export reads everyone's record: recorded once, when it is done (or as far as it got).
    with audit_partial(db, action="E", subtype="export", entity="$export", done=exported):
        _export(db, out, types, since, total, counts)
    summary = exported()
    if summary is not None:
        record_alone(
            db,
            operator_record(action="E", subtype="export", entity="$export", outcome_desc=summary),
        )


def _export(
    db: Database, out: Path, types: list[str] | None, since: str | None, total: int, counts: dict[str, int]
) -> None:
    if str(out) == "-":
        _export_to_stdout(db, types, since, counts)
        # Standard output is the data: the summary goes with the progress, to stderr.
        _print_export_summary(err_console, "standard output", counts)
        return
    out.mkdir(parents=True, exist_ok=True)
    handles: dict[str, BinaryIO] = {}
    try:
        with _progress() as progress:
            task = progress.add_task("导出 exporting", total=total)
            for rtype, line in bulk.export(db, types=types, since=since):
                fh = handles.get(rtype)
                if fh is None:
                    fh = handles[rtype] = (out / f"{rtype}.ndjson").open("wb")
                fh.write(line + b"\n")
                counts[rtype] = counts.get(rtype, 0) + 1
                progress.advance(task)
    finally:
        for fh in handles.values():
            fh.close()
    _print_export_summary(console, str(out), counts)


def _export_to_stdout(
    db: Database, types: list[str] | None, since: str | None, counts: dict[str, int]
) -> None:
    out = sys.stdout.buffer
    try:
        for rtype, line in bulk.export(db, types=types, since=since):
            out.write(line + b"\n")
            counts[rtype] = counts.get(rtype, 0) + 1
        out.flush()
    except BrokenPipeError:
        # The reader has had enough (`yilian export -o - | head`): stop quietly, and keep
        # Python's own flush at exit from complaining about the closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _print_export_summary(target: Console, where: str, counts: dict[str, int]) -> None:
    table = Table(title=f"导出结果 Export to {escape(where)}")
    table.add_column("resource type")
    table.add_column("resources", justify="right")
    for rtype in sorted(counts):
        table.add_row(rtype, str(counts[rtype]))
    table.add_row("[bold]total", str(sum(counts.values())))
    target.print(table)
