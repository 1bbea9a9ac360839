"""``yilian import`` and ``yilian export`` with progress bars and readable summaries."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from yilian.cli.common import console, err_console
from yilian.db import Database
from yilian.fhir import FhirContext, FhirSettings, bulk
from yilian.fhir.model import model
from yilian.kernel.errors import Category, YilianError


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


def run_import(db: Database, settings: FhirSettings, paths: list[Path]) -> int:
    for p in paths:
        if not p.exists():
            raise YilianError(Category.NOT_FOUND, f"{p} does not exist")
    files = list(bulk.iter_inputs(paths))
    if not files:
        raise YilianError(Category.NOT_FOUND, "no .json or .ndjson files found in the given paths")
    ctx = FhirContext(base_url="urn:yilian:import", settings=settings)
    total = sum(bulk.count_units(f) for f in files)
    reports = []
    with _progress() as progress:
        task = progress.add_task("导入 importing", total=total)
        for f in files:
            progress.update(task, description=f"导入 {f.name}")
            reports.append(bulk.import_file(db, ctx, f, lambda n: progress.advance(task, n)))
    table = Table(title="导入结果 Import summary")
    table.add_column("file")
    table.add_column("read", justify="right")
    table.add_column("written", justify="right")
    table.add_column("failed", justify="right")
    for r in reports:
        table.add_row(r.path, str(r.read), str(r.written), f"[red]{r.failed}[/]" if r.failed else "0")
    table.add_row("[bold]total", *(str(sum(getattr(r, k) for r in reports)) for k in ("read", "written", "failed")))
    console.print(table)
    failed = 0
    for r in reports:
        for e in r.errors:
            err_console.print(f"[red]✗[/] {r.path} {e}")
        failed += r.failed
    return failed


def run_export(db: Database, out: Path, types: list[str] | None, since: str | None) -> None:
    for t in types or []:
        if not model().is_resource_type(t):
            raise YilianError(Category.INVALID, f"unknown resource type {t!r}")
    counts: dict[str, int] = {}
    if str(out) == "-":
        for rtype, line in bulk.export(db, types=types, since=since):
            sys.stdout.buffer.write(line + b"\n")
            counts[rtype] = counts.get(rtype, 0) + 1
        return
    out.mkdir(parents=True, exist_ok=True)
    handles: dict[str, BinaryIO] = {}
    try:
        with _progress() as progress:
            task = progress.add_task("导出 exporting", total=None)
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
    table = Table(title=f"导出结果 Export to {out}")
    table.add_column("resource type")
    table.add_column("resources", justify="right")
    for rtype in sorted(counts):
        table.add_row(rtype, str(counts[rtype]))
    table.add_row("[bold]total", str(sum(counts.values())))
    console.print(table)
