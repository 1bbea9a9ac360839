"""``yilian audit``: check, seal and prune the tamper-evident audit log.

``verify`` exits 1 when the chain is broken — the same status as "some of the data failed" —
so a nightly job can alert on it; 2 as every command when the database cannot be used. It
prints the chain's head (``SEQ:HASH``, a keyed MAC over the whole chain up to there): kept
outside the database and passed back with ``--expect``, it catches what a keyed chain alone
cannot — rows cut off the end with the head set to match, or a rewrite by someone holding
the keys.
``prune`` records its own AuditEvent (``audit-prune``, as the operator) in the transaction that
removes the rows.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from yilian.cli.common import (
    EXIT_PARTIAL,
    DatabaseOption,
    console,
    describe,
    friendly_errors,
    open_db,
    operator_record,
    sqlite_file,
)
from yilian.kernel.errors import Category, YilianError

if TYPE_CHECKING:
    from yilian.db import Database
    from yilian.security.audit import VerifyReport

audit_app = typer.Typer(
    help="The tamper-evident audit log: verify its hash chain, seal new rows, prune past retention.",
    no_args_is_help=True,
)


def _open(database: str | None) -> Database:
    """The database, which must already hold the audit log (these commands never migrate it)."""
    from sqlalchemy import inspect

    path = sqlite_file(database)
    if path is not None and not path.exists():
        # Opening it would create an empty file: a typo in the path must not leave one behind.
        raise YilianError(Category.NOT_FOUND, f"there is no database file {path}")
    db = open_db(database, upgrade=False)
    with db.engine.connect() as conn:
        if not inspect(conn).has_table("audit_event"):
            raise YilianError(
                Category.NOT_FOUND, f"{describe(db)} has no audit log yet (`yilian db upgrade` creates it)"
            )
    return db


def _print_report(report: VerifyReport) -> None:
    from yilian.security.audit.verify import format_anchor

    since = f" after checkpoint seq {report.start_seq}" if report.start_seq else ""
    pending = ""
    if report.unsealed:
        pending = f"; {report.unsealed} not sealed yet (oldest id {report.oldest_unsealed_id})"
    if report.legacy_rows:
        pending += f"; {report.legacy_rows} sealed unkeyed, before the chain was keyed"
    if report.ok:
        console.print(f"chain intact: {report.rows} rows{since}{pending}")
        if report.head_hash is not None:
            anchor = format_anchor(report.last_seq, report.head_hash)
            console.print(f"head {anchor}", soft_wrap=True)
            console.print(
                f"keep that line outside the database; `yilian audit verify --expect {anchor}` "
                "checks that the log still holds it",
                soft_wrap=True,
            )
        return
    table = Table(title=f"audit chain broken: {len(report.problems) + report.omitted} problem(s)")
    for name in ("problem", "id", "seq", "detail"):
        table.add_column(name, justify="right" if name in ("id", "seq") else "left", overflow="fold")
    for p in report.problems:
        table.add_row(
            p.kind, "" if p.id is None else str(p.id), "" if p.seq is None else str(p.seq), escape(p.detail)
        )
    console.print(table)
    if report.omitted:
        console.print(f"… and {report.omitted} more problem(s) not listed")
    console.print(f"{report.rows} sealed rows checked{since}{pending}")


@audit_app.command("verify")
def verify_command(
    database: str | None = DatabaseOption,
    seal_first: bool = typer.Option(True, "--seal/--no-seal", help="Seal committed rows before checking."),
    expect: list[str] = typer.Option(
        [],
        "--expect",
        metavar="SEQ:HASH",
        help="A head printed by an earlier verify and kept outside the database: the chain must still hold it (repeatable).",
    ),
) -> None:
    """Recompute the hash chain and name every edited, removed or reordered row (exit status 1 if any).

    Also checks that the append-only triggers are in place, and prints the chain's head to keep
    elsewhere (see --expect).
    """
    from yilian.security.audit import seal, verify
    from yilian.security.audit.verify import parse_anchor

    with friendly_errors():
        try:
            anchors = [parse_anchor(text) for text in expect]
        except ValueError as exc:
            raise YilianError(Category.INVALID, f"--expect: {exc}") from None
        db = _open(database)
        if seal_first:
            seal(db)
        report = verify(db, expect=anchors)
        db.dispose()
    _print_report(report)
    if not report.ok:
        raise typer.Exit(EXIT_PARTIAL)


@audit_app.command("seal")
def seal_command(database: str | None = DatabaseOption) -> None:
    """Chain every committed row not sealed yet (the server does this every second)."""
    from yilian.security.audit import seal

    with friendly_errors():
        db = _open(database)
        count = seal(db)
        db.dispose()
    console.print(f"sealed {count} rows")


def _cutoff(text: str) -> dt.datetime:
    try:
        if "T" not in text:
            day = dt.date.fromisoformat(text)
            return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise YilianError(Category.INVALID, f"--before {text!r} is not a date (YYYY-MM-DD)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


@audit_app.command("prune")
def prune_command(
    before: str = typer.Option(
        ...,
        "--before",
        help="Remove sealed rows recorded before this date (YYYY-MM-DD), at least 183 days ago.",
    ),
    database: str | None = DatabaseOption,
) -> None:
    """Remove audit rows past retention, behind a checkpoint the chain continues from."""
    from yilian.security.audit import check_cutoff, prune

    with friendly_errors():
        cutoff = check_cutoff(_cutoff(before))  # refused before the database is even opened
        db = _open(database)
        day = cutoff.date().isoformat()
        result = prune(
            db,
            cutoff,
            audit=lambda r: operator_record(
                action="D",
                subtype="audit-prune",
                entity="audit log",
                outcome_desc=f"removed {r.rows} audit records recorded before {day}; "
                f"the chain continues after seq {r.up_to_seq}",
            ),
        )
        db.dispose()
    if result.rows:
        console.print(
            f"pruned {result.rows} rows recorded before {cutoff.date().isoformat()}; the chain continues after seq {result.up_to_seq}"
        )
    else:
        console.print(f"nothing to prune before {cutoff.date().isoformat()}")
