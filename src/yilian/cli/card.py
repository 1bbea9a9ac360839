"""``yilian card``: the resident health card from the command line.

Commands run as the platform operator (the CLI has the database itself), and record who ran
them as ``cli:<login name>`` in the card's history. ``issue-batch`` loads a population-register
CSV in chunks of rows, each chunk its own transaction, so a large register survives an
interruption: run it again and what was issued is reported as already issued.

Every change also records an AuditEvent as the operator (``card-issue``, ``card-activate``…,
``card-issue-batch`` once per chunk) in the same transaction; cards are named there by their
internal id, never by their number (usually an ID number).
"""

from __future__ import annotations

import csv
import datetime as dt
import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from yilian.cli.common import (
    EXIT_PARTIAL,
    DatabaseOption,
    console,
    err_console,
    friendly_errors,
    open_db,
    operator_record,
    settings_from_env,
)
from yilian.kernel.errors import Category, YilianError

if TYPE_CHECKING:
    from yilian.card import CardView, RegisterRow, RowOutcome
    from yilian.db import Database, UnitOfWork
    from yilian.fhir import FhirContext

card_app = typer.Typer(
    help=(
        "Resident health cards (居民健康卡): issue (one, or a population register CSV), activate, "
        "report lost, replace, suspend, resume, revoke, show, counts."
    ),
    no_args_is_help=True,
)

CHUNK = 100  # register rows per transaction: a failure or interruption loses at most this many
ReasonOption = typer.Option(
    ..., "--reason", "-r", help="Why: recorded in the card's history with who and when."
)
CardArgument = typer.Argument(
    ..., help="The card number (the ID number, ID number-NN, or a 00… platform number)."
)
ActorOption = typer.Option(
    None,
    "--actor",
    help="Who acts, as recorded in the history (default: cli:<your login name>).",
    show_default=False,
)


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name in a container
        return "cli:operator"


def _ctx() -> FhirContext:
    from yilian.fhir import FhirContext

    return FhirContext(settings=settings_from_env())


def _write(db: Database, work: Any) -> Any:
    from yilian.db.uow import transact

    return transact(db, work)


def _audit(
    uow: UnitOfWork, view: CardView, *, action: str, subtype: str, desc: str, actor: str | None
) -> None:
    """The change's AuditEvent, in its transaction; ``actor`` is --actor, when given."""
    from yilian.security.audit import record

    as_whom = f"; recorded in the card's history as {actor}" if actor else ""
    record(
        uow,
        operator_record(
            action=action,
            subtype=subtype,
            entity=f"Card/{view.card_id}",
            patient_keys=(view.patient_id,),
            outcome_desc=desc + as_whom,
        ),
    )


def _print_card(view: CardView, title: str) -> None:
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in view.to_json().items():
        table.add_row(name.replace("_", " "), escape("" if value is None else str(value)))
    console.print(table)


@card_app.command("issue")
def issue_command(
    patient: str = typer.Option(..., "--patient", "-p", help="The Patient resource id of the resident."),
    district: str | None = typer.Option(
        None,
        "--district",
        help="GB/T 2260 district code (default: from the address or the ID number).",
        show_default=False,
    ),
    residence: str | None = typer.Option(
        None, "--residence", help="urban or rural (for the indicators).", show_default=False
    ),
    reason: str | None = typer.Option(
        None, "--reason", "-r", help="Why the card is issued.", show_default=False
    ),
    actor: str | None = ActorOption,
    database: str | None = DatabaseOption,
) -> None:
    """Issue a card to one resident: their ID number, or a platform number when they have none."""
    from yilian import card

    with friendly_errors():
        db = open_db(database)
        ctx = _ctx()
        who = _actor(actor)

        def work(uow: UnitOfWork) -> CardView:
            view = card.issue_card(
                uow,
                ctx,
                patient_id=patient,
                actor=who,
                reason=reason,
                district=district,
                residence=residence,
            )
            desc = f"issued card {view.card_id} ({view.kind}) to Patient/{view.patient_id}"
            _audit(uow, view, action="C", subtype="card-issue", desc=desc, actor=actor)
            return view

        _print_card(_write(db, work), "health card issued")


def _change(action: str, card_no: str, reason: str, actor: str | None, database: str | None) -> None:
    from yilian import card

    use_case = {
        "activate": card.activate_card,
        "report-lost": card.report_lost,
        "suspend": card.suspend_card,
        "resume": card.resume_card,
        "revoke": card.revoke_card,
        "replace": card.replace_card,
    }[action]
    with friendly_errors():
        db = open_db(database)
        ctx = _ctx()
        who = _actor(actor)

        def work(uow: UnitOfWork) -> CardView:
            view = use_case(uow, ctx, card_no=card_no, actor=who, reason=reason)
            if action == "replace":  # a new card: the old one is refused from now on
                desc = f"issued card {view.card_id} to Patient/{view.patient_id}, replacing their card"
            else:
                desc = f"card {view.card_id} of Patient/{view.patient_id} is now {view.status.value}"
            created = action == "replace"
            _audit(
                uow, view, action="C" if created else "U", subtype=f"card-{action}", desc=desc, actor=actor
            )
            return view

        view: CardView = _write(db, work)
        if action == "replace":
            _print_card(view, "replacement card issued (the old card is refused from now on)")
        else:
            console.print(f"card {escape(view.masked)} is now [bold]{view.status.value}[/]")


@card_app.command("activate")
def activate_command(
    card_no: str = CardArgument,
    reason: str = ReasonOption,
    actor: str | None = ActorOption,
    database: str | None = DatabaseOption,
) -> None:
    """Activate a newly issued card once the holder has received it."""
    _change("activate", card_no, reason, actor, database)


@card_app.command("report-lost")
def report_lost_command(
    card_no: str = CardArgument,
    reason: str = ReasonOption,
    actor: str | None = ActorOption,
    database: str | None = DatabaseOption,
) -> None:
    """Report a card lost (挂失): refused everywhere until resumed or replaced."""
    _change("report-lost", card_no, reason, actor, database)


@card_app.command("replace")
def replace_command(
    card_no: str = CardArgument,
    reason: str = ReasonOption,
    actor: str | None = ActorOption,
    database: str | None = DatabaseOption,
) -> None:
    """Replace a card (补卡): the old one is retired and a new number issued."""
    _change("replace", card_no, reason, actor, database)


@card_app.command("suspend")
def suspend_command(
    card_no: str = CardArgument,
    reason: str = ReasonOption,
    actor: str | None = ActorOption,
    database: str | None = DatabaseOption,
) -> None:
    """Suspend a card: the issuer holds it until it is resumed."""
    _change("suspend", card_no, reason, actor, database)


@card_app.command("resume")
def resume_command(
    card_no: str = CardArgument,
    reason: str = ReasonOption,
    actor: str | None = ActorOption,
    database: str | None = DatabaseOption,
) -> None:
    """Resume a suspended card, or a lost card that was found (解挂)."""
    _change("resume", card_no, reason, actor, database)


@card_app.command("revoke")
def revoke_command(
    card_no: str = CardArgument,
    reason: str = ReasonOption,
    actor: str | None = ActorOption,
    database: str | None = DatabaseOption,
) -> None:
    """Revoke a card for good (注销)."""
    _change("revoke", card_no, reason, actor, database)


@card_app.command("show")
def show_command(card_no: str = CardArgument, database: str | None = DatabaseOption) -> None:
    """Show a card in any state, whether it can be used, and its history."""
    from yilian import card
    from yilian.db import UnitOfWork

    with friendly_errors():
        db = open_db(database)
        ctx = _ctx()
        # A read of a resident's card: recorded, and committed before anything is shown.
        with UnitOfWork(db, write=True) as uow:
            view = card.get_card(uow, ctx, card_no)
            events = card.card_history(uow, ctx, card_no)
            _audit(
                uow,
                view,
                action="R",
                subtype="read",
                desc=f"card and its history ({len(events)} event(s)) shown at the console",
                actor=None,
            )
        _print_card(view, "health card")
        refusal = card.unusable_reason(view)
        console.print(
            "usable: [green]yes[/]" if refusal is None else f"usable: [red]no[/] — {escape(refusal.message)}"
        )
        table = Table(title="history")
        for name in ("when", "action", "from", "to", "who", "why"):
            table.add_column(name, overflow="fold")
        for e in events:
            table.add_row(
                e.at.isoformat(timespec="seconds"),
                e.action,
                e.from_status or "",
                e.to_status,
                escape(e.actor),
                escape(e.reason or ""),
            )
        console.print(table)


def _audit_chunk(uow: UnitOfWork, name: str, chunk: list[RegisterRow], done: list[RowOutcome]) -> None:
    """One AuditEvent per chunk, in the chunk's transaction: the cards it issued and to whom."""
    from yilian.security.audit import record

    def count(outcome: str) -> int:
        return sum(1 for r in done if r.outcome == outcome)

    record(
        uow,
        operator_record(
            action="C",
            subtype="card-issue-batch",
            entity="Card/batch",
            patient_keys=sorted({r.patient_id for r in done if r.patient_id}),
            outcome_desc=f"population register {name}, lines {chunk[0].line}-{chunk[-1].line}: "
            f"{count('issued')} cards issued, {count('already-issued')} already issued, "
            f"{count('refused')} refused",
        ),
    )


def _write_report(path: Path, refused: list[RowOutcome]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["line", "name", "reason"])
        for r in refused:
            out.writerow([r.line, r.name, r.reason])


@card_app.command("issue-batch")
def issue_batch_command(
    file: Path = typer.Argument(
        ...,
        help="Population-register CSV (UTF-8): name, sex, birth_date, id_number, phone, address, district, residence.",
        exists=False,
    ),
    report: Path | None = typer.Option(
        None,
        "--report",
        help="Write every refused row (line, name, reason) to this CSV file.",
        show_default=False,
    ),
    actor: str | None = ActorOption,
    database: str | None = DatabaseOption,
) -> None:
    """Issue cards to every resident of a population register; refused rows are reported with why.

    Run it again on the same file and nothing new is issued: those rows are reported as already
    issued. Exit status 1 if any row was refused.
    """
    from yilian import card

    with friendly_errors():
        if not file.is_file():
            raise YilianError(Category.NOT_FOUND, f"there is no file {file}")
        with file.open(encoding="utf-8-sig", newline="") as fh:
            items = list(card.read_register(fh))
        db = open_db(database)
        ctx = _ctx()
        who = _actor(actor)
        rows = [i for i in items if isinstance(i, card.RegisterRow)]
        outcomes: list[RowOutcome] = [
            card.RowOutcome(i.line, "refused", i.name, i.reason) for i in items if isinstance(i, card.Refusal)
        ]
        with Progress(
            TextColumn("[bold]issuing cards"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
        ) as bar:
            task = bar.add_task("issue", total=len(items))
            bar.advance(task, len(outcomes))
            for start in range(0, len(rows), CHUNK):
                chunk = rows[start : start + CHUNK]

                def work(uow: UnitOfWork, chunk: list[card.RegisterRow] = chunk) -> list[RowOutcome]:
                    done = card.issue_from_register(uow, ctx, rows=chunk, actor=who)
                    _audit_chunk(uow, file.name, chunk, done)
                    return done

                outcomes += _write(db, work)
                bar.advance(task, len(chunk))
        outcomes.sort(key=lambda o: o.line)
        done = card.BatchReport(outcomes)
        summary = Table(title=f"population register {escape(file.name)}")
        summary.add_column("rows", style="bold")
        summary.add_column("count", justify="right")
        summary.add_row("read", f"{len(outcomes):,}")
        summary.add_row("cards issued", f"{done.count('issued'):,}")
        summary.add_row("already issued", f"{done.count('already-issued'):,}")
        summary.add_row("refused", f"[red]{len(done.refused):,}[/]" if done.refused else "0")
        console.print(summary)
        if done.refused:
            listing = Table(title="refused rows")
            listing.add_column("line", justify="right")
            listing.add_column("name")
            listing.add_column("reason", overflow="fold")
            for r in done.refused[:20]:
                listing.add_row(str(r.line), escape(r.name), escape(r.reason))
            console.print(listing)
            if len(done.refused) > 20:
                console.print(f"… and {len(done.refused) - 20:,} more")
        if report is not None:
            _write_report(report, done.refused)
            console.print(f"refused rows written to {escape(str(report))}")
        if done.refused:
            raise typer.Exit(EXIT_PARTIAL)


@card_app.command("counts")
def counts_command(
    as_of: str | None = typer.Option(
        None,
        "--as-of",
        help="Count as things stood at this ISO date-time (default: now).",
        show_default=False,
    ),
    database: str | None = DatabaseOption,
) -> None:
    """Cards issued, held and active, by district and by urban/rural residence (for the indicators)."""
    from yilian import card
    from yilian.db import UnitOfWork

    with friendly_errors():
        moment: dt.datetime | None = None
        if as_of:
            try:
                moment = dt.datetime.fromisoformat(as_of)
            except ValueError:
                raise YilianError(
                    Category.INVALID, "--as-of must be an ISO 8601 date-time, e.g. 2026-12-31T23:59:59+08:00"
                ) from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.timezone(dt.timedelta(hours=8)))  # people mean Beijing time
        db = open_db(database)
        with UnitOfWork(db) as uow:
            counts = card.card_counts(uow, as_of=moment)
        table = Table(title=f"health cards as of {counts.as_of.isoformat(timespec='seconds')}")
        for name in ("group", "issued", "held", "active"):
            table.add_column(name, justify="left" if name == "group" else "right")
        table.add_row("[bold]all[/]", *(f"{v:,}" for v in counts.total.to_json().values()))
        for district, tally in counts.by_district.items():
            table.add_row(f"district {escape(district)}", *(f"{v:,}" for v in tally.to_json().values()))
        for residence, tally in counts.by_residence.items():
            table.add_row(escape(residence), *(f"{v:,}" for v in tally.to_json().values()))
        console.print(table)
