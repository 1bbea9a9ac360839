"""Loading many resources (``yilian import``) and streaming them out (``yilian export``).

Import reads FHIR JSON files (a resource, or a Bundle), and NDJSON (one resource a line).
Transaction and batch Bundles are processed as such; every other resource is written with its
own id when it has one (update-as-create, so re-importing the same file changes nothing but the
version) or a new one otherwise. Each resource that fails is reported with where it came from
and why, and does not stop the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select

from yilian.db import Database, UnitOfWork
from yilian.db.uow import transact
from yilian.fhir.interactions import create as create_i
from yilian.fhir.interactions import update as update_i
from yilian.fhir.interactions import writes
from yilian.fhir.interactions.context import FhirContext
from yilian.fhir.router import FhirRequest, dispatch
from yilian.fhir.search.values import date_range
from yilian.fhir.store.sealing import open_content
from yilian.fhir.store.tables import resource
from yilian.kernel.errors import Category, YilianError

CHUNK = 200


@dataclass
class FileReport:
    path: str
    read: int = 0
    written: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def fail(self, where: str, message: str) -> None:
        self.failed += 1
        if len(self.errors) < 50:
            self.errors.append(f"{where}: {message}")


def iter_inputs(paths: Iterable[Path]) -> Iterator[Path]:
    for p in paths:
        if p.is_dir():
            yield from sorted(x for x in p.rglob("*") if x.suffix in (".json", ".ndjson") and x.is_file())
        else:
            yield p


def _write_one(uow: UnitOfWork, ctx: FhirContext, res: dict[str, Any]) -> None:
    rtype = res.get("resourceType")
    if not isinstance(rtype, str):
        raise YilianError(Category.INVALID, "no resourceType")
    if isinstance(res.get("id"), str):
        update_i.update(uow, ctx, res, res_type=rtype, res_id=res["id"])
    else:
        create_i.create(uow, ctx, res, res_type=rtype)


def _load_resources(
    db: Database,
    ctx: FhirContext,
    report: FileReport,
    items: list[tuple[str, Any]],
    progress: Callable[[int], None],
) -> None:
    """Write ``items`` in chunks; each resource in its own savepoint so one bad line costs only itself."""
    for start in range(0, len(items), CHUNK):
        chunk = items[start : start + CHUNK]

        def work(uow: UnitOfWork, chunk: list[tuple[str, Any]] = chunk) -> tuple[int, list[tuple[str, str]]]:
            ok = 0
            failures: list[tuple[str, str]] = []
            for where, res in chunk:
                try:
                    with writes.savepoint(uow) as rollback:
                        try:
                            _write_one(uow, ctx, res)
                            writes.finish(uow, ctx)
                        except YilianError:
                            rollback()
                            raise
                    ok += 1
                except YilianError as err:
                    failures.append((where, err.message))
            return ok, failures

        ok, failures = transact(db, work)
        report.written += ok
        for where, message in failures:
            report.fail(where, message)
        progress(len(chunk))


def import_file(db: Database, ctx: FhirContext, path: Path, progress: Callable[[int], None]) -> FileReport:
    report = FileReport(str(path))
    try:
        raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    except OSError as exc:
        report.fail(str(path), f"cannot read: {exc.strerror}")
        return report
    if path.suffix == ".ndjson":
        items: list[tuple[str, Any]] = []
        for n, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            report.read += 1
            try:
                items.append((f"line {n}", orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                report.fail(f"line {n}", f"not JSON: {exc}")
        _load_resources(db, ctx, report, items, progress)
        return report
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        report.read = 1
        report.fail(str(path), f"not JSON: {exc}")
        return report
    if (
        isinstance(doc, dict)
        and doc.get("resourceType") == "Bundle"
        and doc.get("type") in ("transaction", "batch")
    ):
        entries = doc.get("entry") or []
        report.read = len(entries)
        try:
            resp = transact(db, lambda uow: dispatch(uow, ctx, FhirRequest("POST", "", body=doc)))
        except YilianError as err:
            report.fail(str(path), err.message)
            progress(len(entries))
            return report
        if doc["type"] == "batch" and resp.body is not None:
            for i, e in enumerate(orjson.loads(resp.body).get("entry", [])):
                status = e.get("response", {}).get("status", "")
                if status[:1] in ("2",):
                    report.written += 1
                else:
                    issues = (e.get("response", {}).get("outcome") or {}).get("issue") or [{}]
                    report.fail(f"entry {i}", issues[0].get("diagnostics", status))
        else:
            report.written = len(entries)
        progress(len(entries))
        return report
    report.read = 1
    _load_resources(db, ctx, report, [(str(path), doc)], progress)
    return report


def count_units(path: Path) -> int:
    """How many resources a file holds, for the progress bar (cheap estimate)."""
    try:
        if path.suffix == ".ndjson":
            with path.open("rb") as fh:
                return sum(1 for line in fh if line.strip())
        doc = orjson.loads(path.read_bytes().removeprefix(b"\xef\xbb\xbf"))
        if (
            isinstance(doc, dict)
            and doc.get("resourceType") == "Bundle"
            and doc.get("type") in ("transaction", "batch")
        ):
            return len(doc.get("entry") or [])
    except (OSError, orjson.JSONDecodeError):
        return 1
    return 1


def export(
    db: Database, *, types: list[str] | None, since: str | None, batch: int = 1000
) -> Iterator[tuple[str, bytes]]:
    """(resource type, NDJSON line) for every current resource, streamed in pk order."""
    since_us = None
    if since:
        r = date_range(since)
        if r is None:
            raise YilianError(Category.INVALID, f"--since must be a FHIR date or instant, not {since!r}")
        since_us = r[0]
    last = 0
    while True:
        with db.engine.connect() as conn:
            stmt = (
                select(resource.c.pk, resource.c.res_type, resource.c.content)
                .where(resource.c.pk > last, resource.c.deleted.is_(False))
                .order_by(resource.c.pk)
                .limit(batch)
            )
            if types:
                stmt = stmt.where(resource.c.res_type.in_(types))
            if since_us is not None:
                stmt = stmt.where(resource.c.last_updated >= since_us)
            rows = conn.execute(stmt).all()
        if not rows:
            return
        for row in rows:
            content = open_content(db.engine, bytes(row.content))
            assert content is not None
            yield row.res_type, content
        last = rows[-1].pk
