"""``yilian migrate MAPPING DATA_DIR``: legacy CSV tables into the shared health record.

The engine is :mod:`yilian.exchange.migrate`; this module gives it the platform's FHIR settings
(patient index, access grants — exchange may not import the api layer that assembles them),
draws a progress bar per table on stderr, and prints the summary table and the first problems.
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from yilian.cli.common import console, err_console, operator_record, record_alone
from yilian.db import Database
from yilian.exchange.migrate import MigrationReport, TablePlan, TableReport, load_mapping, migrate
from yilian.fhir import FhirSettings

PROBLEMS_SHOWN = 20


class _Bars:
    """One progress bar per table, each kept on screen once done (the run's log)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def table_started(self, table: TablePlan, rows: int) -> None:
        self.task = self.progress.add_task(
            f"{escape(table.name)} → {table.resource}", total=rows or None, completed=0
        )

    def advance(self, rows: int) -> None:
        if self.task is not None:
            self.progress.advance(self.task, rows)

    def table_finished(self, report: TableReport) -> None:
        if self.task is not None:
            self.progress.update(self.task, total=report.read, completed=report.read)


def run_migrate(
    db: Database, settings: FhirSettings, mapping: str, data_dir: Path, report_path: Path | None
) -> MigrationReport:
    plan = load_mapping(mapping)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
    )
    with progress:
        report = migrate(db, plan, data_dir, settings=settings, listener=_Bars(progress))
    if report.total("written"):
        # The rows committed in many transactions: one AuditEvent for the whole run.
        record_alone(
            db,
            operator_record(
                action="C",
                subtype="migrate",
                outcome_desc=(
                    f"migrated {report.total('read')} rows of {report.source} from {data_dir}: "
                    f"{report.total('written')} resources written, {report.total('rejected')} rows rejected"
                ),
            ),
        )
    if report_path is not None:
        report.write(report_path)
    print_summary(report, report_path)
    return report


def print_summary(report: MigrationReport, report_path: Path | None) -> None:
    table = Table(title=f"迁移结果 Migration summary — {escape(report.source)}")
    table.add_column("table")
    table.add_column("resource")
    names = ("read", "written", "unchanged", "rejected", "merged")
    headers = ("rows read", "written", "unchanged", "rejected", "merged")
    for h in headers:
        table.add_column(h, justify="right")
    for t in report.tables:
        cells = [str(getattr(t, n)) for n in names]
        if t.rejected:
            cells[3] = f"[red]{t.rejected}[/]"
        table.add_row(escape(t.table), t.resource, *cells)
    table.add_row("[bold]total", "", *(f"[bold]{report.total(n)}" for n in names))
    console.print(table)
    console.print(
        f"{report.total('read')} rows in {report.seconds:.1f} s ({report.rows_per_second:,.0f} rows/s); "
        "unchanged = already there from an earlier run; merged = Patients the patient index "
        "linked to a person who already had a record"
    )
    if report.unmapped_files:
        console.print(f"not in the mapping (not read): {escape(', '.join(report.unmapped_files))}")
    for p in report.problems[:PROBLEMS_SHOWN]:
        column = f" {p.column}" if p.column else ""
        err_console.print(
            f"[red]✗[/] {escape(p.file)} line {p.line}{escape(column)}: {escape(p.reason)}", soft_wrap=True
        )
    hidden = len(report.problems) - PROBLEMS_SHOWN
    if hidden > 0:
        where = f"in {report_path}" if report_path else "with --report PATH"
        err_console.print(f"  … and {hidden} more ({where})")
    elif report.problems and report_path is not None:
        err_console.print(f"data-quality report: {report_path}")
