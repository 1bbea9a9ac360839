"""``yilian payments``: the card issuer's and the platform operator's view of the ledger.

``close-day`` runs the daily clearing of a finished business day (Beijing time) and prints its
batch; a day closes once (a second run is refused, exit status 2). ``day`` shows a day's batch
with its reconciliation against the ledger; ``wallet`` and ``statement`` look at one card;
``payout`` records the transfer that paid a closed day's batch line; ``trial-balance`` checks the
whole ledger; ``expire-holds`` releases deposits past their expiry;
``publish`` writes the queued FHIR views now and ``publication`` shows what waits or failed;
``policies`` lists the reimbursement policies and warns of a scheme whose last one runs out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from yilian.cli.common import DatabaseOption, console, friendly_errors, open_db, operator_record
from yilian.db import UnitOfWork
from yilian.kernel.errors import Category, YilianError
from yilian.kernel.money import format_fen

if TYPE_CHECKING:
    import datetime as dt

    from yilian.db import Database
    from yilian.payments import Match, Payout

payments_app = typer.Typer(
    help="Card payments and settlement (一卡通 结算): close a day, wallets, statements, trial balance, reimbursement policies. Contract: docs/payments.md.",
    no_args_is_help=True,
)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name in a container
        return "cli:operator"


def _lines_table(title: str, lines: list[dict[str, Any]]) -> Table:
    table = Table(title=title)
    closed = any("line_id" in line for line in lines)
    if closed:
        table.add_column("line", justify="right")
    table.add_column("payer 付款方")
    table.add_column("payee 收款方")
    table.add_column("transactions", justify="right")
    table.add_column("amount 金额", justify="right")
    if closed:
        table.add_column("paid 划拨")
        table.add_column("transfer code 附言")
    for line in lines:
        row = [line["payer"], line["payee"], str(line["txn_count"]), format_fen(line["amount_fen"])]
        if closed:
            paid = line.get("payout")
            row = [
                str(line["line_id"]),
                *row,
                escape(paid["reference"]) if paid else "owed 未付",
                line.get("transfer_code", ""),
            ]
        table.add_row(*row)
    return table


def close_and_record(uow: UnitOfWork, day: dt.date, actor: str) -> dict[str, Any]:
    """Close ``day`` and record the close's AuditEvent in the same transaction (the subtype the
    API records); the day's report."""
    from yilian import payments
    from yilian.security.audit import record

    report = payments.close_day(uow, day=day, closed_by=actor)
    record(
        uow,
        operator_record(
            action="C",
            subtype="payment-close-day",
            entity=f"PaymentReconciliation/{day}",
            outcome_desc=(
                f"closed business day {day}: {report['transactions']} transactions "
                f"in {len(report['lines'])} batch lines"
            ),
        ),
    )
    return report


@payments_app.command("close-day")
def close_day(
    date: str = typer.Argument(
        ..., help="The business day to close, YYYY-MM-DD (Beijing time); it must be over."
    ),
    database: str | None = DatabaseOption,
) -> None:
    """Clear a finished business day: the issuer's and each fund's positions towards each institution."""
    from yilian import payments
    from yilian.db.uow import transact

    with friendly_errors():
        db = open_db(database)
        day = payments.parse_day(date)
        # One set-based transaction: nothing to count while it runs, so a spinner and the clock.
        with console.status(f"日终清算 closing business day {day} (one transaction)…"):
            report = transact(db, lambda uow: close_and_record(uow, day, _actor()))
        console.print(
            _lines_table(
                f"清算 settlement {report['business_date']} — {report['transactions']} transactions",
                report["lines"],
            )
        )
        for payer, amount in report["totals"]["by_payer"].items():
            console.print(f"{payer}: {format_fen(amount)}")


@payments_app.command("day")
def day_report(
    date: str = typer.Argument(..., help="The business day, YYYY-MM-DD."),
    database: str | None = DatabaseOption,
) -> None:
    """A day's batch (or, for an open day, its positions so far) and its reconciliation."""
    from yilian import payments
    from yilian.db.uow import read

    with friendly_errors():
        db = open_db(database)
        with read(db) as uow:
            report = payments.day_report(uow, day=payments.parse_day(date))
        console.print(_lines_table(f"{report['business_date']} ({report['status']})", report["lines"]))
        if report.get("outstanding_fen") is not None:
            console.print(f"still owed 未划拨: {format_fen(report['outstanding_fen'])}")
        recon = report.get("reconciliation")
        if recon is not None:
            console.print("reconciled 对账一致" if recon["reconciled"] else "[bold red]NOT reconciled[/]")
            for problem in recon["problems"]:
                console.print(f"  - {problem}")
            if not recon["reconciled"]:
                raise typer.Exit(1)


@payments_app.command("payout")
def payout(
    date: str = typer.Argument(..., help="The closed business day, YYYY-MM-DD."),
    line_id: int = typer.Argument(
        ..., help="The batch line paid (the 'line' column of `yilian payments day`)."
    ),
    reference: str = typer.Option(..., "--reference", "-r", help="The transfer's reference (bank or payer)."),
    database: str | None = DatabaseOption,
) -> None:
    """Record the transfer that paid one batch line of a closed day (清算划拨); a line is paid once."""
    from yilian import payments

    with friendly_errors():
        db = open_db(database)
        paid = _audited_payout(db, payments.parse_day(date), line_id, reference)
        console.print(
            f"paid 已划拨: line {paid.line_id} of {paid.business_date}, {escape(paid.payer)} → "
            f"{escape(paid.payee)} {format_fen(paid.amount_fen)} (transfer {escape(paid.reference)}, "
            f"ledger transaction {paid.txn_id})"
        )


@payments_app.command("bank-statement")
def bank_statement(
    file: Path = typer.Argument(
        ...,
        exists=True,
        dir_okay=False,
        help="The bank statement, CSV (UTF-8 or GB18030) with columns reference/流水号, memo/附言 and "
        "amount/金额 (yuan; or amount_fen), date optional.",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Match and report; record nothing."),
    database: str | None = DatabaseOption,
) -> None:
    """Match a bank statement to the batch lines it pays and record their payouts (银行流水对账).

    A row pays the line whose transfer code (YLyyyymmddLn, the `code` column of `yilian payments
    day`) its memo carries, if the amount is the line's to the fen. Each payout is its own
    transaction and audit record; a row that cannot be matched is listed with the reason and
    records nothing. Reading the same statement again records nothing new. Exit status 1 if any
    row is unmatched."""
    from yilian import payments
    from yilian.cli.common import EXIT_PARTIAL, progress_bar
    from yilian.db.uow import read

    with friendly_errors():
        db = open_db(database)
        rows = payments.read_statement(file)
        with read(db) as uow:
            matches = payments.match_statement(uow, rows)
        due = [m for m in matches if m.outcome == "paid"]
        done: list[payments.Match] = []
        if not dry_run:
            with progress_bar() as bar:
                task = bar.add_task("recording payouts 记录划拨", total=len(due))
                for m in matches:
                    if m.outcome != "paid":
                        done.append(m)
                        continue
                    done.append(_pay_from_statement(db, m, file.name))
                    bar.advance(task)
            matches = done
    table = Table(
        title=f"{file.name}: {len(matches)} rows" + (" (dry run: nothing recorded)" if dry_run else "")
    )
    for name in ("line", "date", "amount 金额", "reference 流水号", "batch line", "outcome"):
        table.add_column(name, overflow="fold")
    for m in matches:
        what = {
            "paid": "[green]would pay[/]" if dry_run else "[green]paid 已划拨[/]",
            "already": "recorded before",
        }.get(m.outcome, f"[red]unmatched[/] {escape(m.reason)}")
        if m.outcome == "already":
            what = escape(m.reason)
        target = payments.transfer_code(m.target.business_date, m.target.line_id) if m.target else ""
        table.add_row(
            str(m.row.line),
            escape(m.row.booked),
            format_fen(m.row.amount_fen),
            escape(m.row.reference),
            target,
            what,
        )
    console.print(table)
    counts = {k: sum(1 for m in matches if m.outcome == k) for k in ("paid", "already", "unmatched")}
    paid_fen = sum(m.row.amount_fen for m in matches if m.outcome == "paid")
    verb = "to record" if dry_run else "recorded"
    console.print(
        f"{counts['paid']} {verb} ({format_fen(paid_fen)}), {counts['already']} recorded before, "
        f"{counts['unmatched']} unmatched"
    )
    if counts["unmatched"]:
        raise typer.Exit(EXIT_PARTIAL)


def _pay_from_statement(db: Database, m: Match, source: str) -> Match:
    """Record one matched row's payout with its audit record; a line paid meanwhile (another
    operator, a second run) is reported as unmatched with the reason, not raised."""
    from yilian import payments

    target = m.target
    assert target is not None
    note = f" (bank statement {source}, line {m.row.line})"
    try:
        _audited_payout(db, payments.parse_day(target.business_date), target.line_id, m.row.reference, note)
    except payments.PaymentError as err:
        return dataclasses.replace(m, outcome="unmatched", reason=err.message)
    return m


def _audited_payout(db: Database, day: dt.date, line_id: int, reference: str, note: str = "") -> Payout:
    """Record a line's payout and its AuditEvent (by the operator at the console) in one transaction."""
    from yilian import payments
    from yilian.db.uow import transact
    from yilian.security.audit import record

    def pay(uow: UnitOfWork) -> Payout:
        paid = payments.record_payout(uow, day=day, line_id=line_id, reference=reference, paid_by=_actor())
        record(
            uow,
            operator_record(
                action="C",
                subtype="payment-payout",
                entity=f"PaymentReconciliation/{day}",
                outcome_desc=f"paid batch line {line_id} of {day}: {paid.amount_fen} fen, transfer "
                f"{paid.reference}{note}",
            ),
        )
        return paid

    return transact(db, pay)


@payments_app.command("wallet")
def wallet(
    card_no: str = typer.Argument(..., help="The health card number."), database: str | None = DatabaseOption
) -> None:
    """A card's stored value: balance, held for deposits, available."""
    from yilian import payments
    from yilian.db.uow import read

    with friendly_errors():
        db = open_db(database)
        with read(db) as uow:
            view = payments.wallet(uow, card_no=card_no)
        table = Table(title="钱包 wallet")
        for column in ("balance 余额", "held 冻结", "available 可用"):
            table.add_column(column, justify="right")
        table.add_row(format_fen(view.balance_fen), format_fen(view.held_fen), format_fen(view.available_fen))
        console.print(table)


@payments_app.command("statement")
def statement(
    card_no: str = typer.Argument(..., help="The health card number."),
    limit: int = typer.Option(50, help="How many of the newest entries."),
    database: str | None = DatabaseOption,
) -> None:
    """A card's newest wallet movements, each with the balance it left."""
    from yilian import payments
    from yilian.db.uow import read

    with friendly_errors():
        db = open_db(database)
        with read(db) as uow:
            view, lines = payments.statement(uow, card_no=card_no, limit=limit)
        table = Table(title=f"对账单 statement — balance {format_fen(view.balance_fen)}")
        for column in ("time 时间", "kind", "amount 金额", "balance 余额", "institution"):
            table.add_column(column, justify="right" if column.startswith(("amount", "balance")) else "left")
        for line in lines:
            table.add_row(
                f"{line.as_json()['at'][:19]}",
                line.kind,
                format_fen(line.amount_fen),
                format_fen(line.balance_after_fen) if line.balance_after_fen is not None else "",
                line.org or "",
            )
        console.print(table)


@payments_app.command("policies")
def policy_list(
    on: str | None = typer.Option(
        None, "--on", metavar="YYYY-MM-DD", help="the day to look from (default: today, Beijing time)"
    ),
    within: int = typer.Option(
        45,
        "--within",
        min=0,
        metavar="DAYS",
        help="warn of schemes whose policies run out within this many days",
    ),
    check: bool = typer.Option(
        False, "--check", help="exit with status 1 when a warning is printed (for a monitoring job)"
    ),
) -> None:
    """The reimbursement policies loaded (shipped, and YILIAN_POLICY_DIR's); warns of each scheme whose last one runs out soon.

    From the day a scheme's last policy ends, its enrolled residents' charges are refused (no-policy-in-force) until next year's file is added to YILIAN_POLICY_DIR and the server restarted.
    """
    from yilian.kernel import clock
    from yilian.payments import parse_day, policy_files
    from yilian.payments.model import business_date

    with friendly_errors():
        day = parse_day(on) if on is not None else business_date(clock.now())
        policies = policy_files.load()
        table = Table(title=f"报销政策 reimbursement policies, on {day.isoformat()}")
        table.add_column("scheme")
        table.add_column("region")
        table.add_column("version", no_wrap=True)
        table.add_column("valid", no_wrap=True)
        table.add_column("that day")
        table.add_column("source")
        for p in policies:
            if p.valid_from <= day <= p.valid_to:
                state = "[green]in force[/]"
            else:
                state = "ended" if p.valid_to < day else "to come"
            table.add_row(
                f"{escape(p.scheme)} {escape(p.name)}",
                p.region,
                f"{p.year} v{p.version}",
                f"{p.valid_from.isoformat()} → {p.valid_to.isoformat()}",
                state,
                "shipped" if "/" not in p.source else policy_files.ENV,
            )
        console.print(table)
        dirs = policy_files.directories()
        console.print(
            f"from {', '.join(escape(str(d)) for d in dirs)}"
            + ("" if len(dirs) > 1 else f" ({policy_files.ENV} not set)")
        )
        warnings = policy_files.ending(policies, today=day, within_days=within)
        for w in warnings:
            console.print(f"[yellow]warning:[/] {escape(w.message)}", soft_wrap=True)
        if not warnings:
            console.print(f"every scheme is covered for at least {within} days from {day.isoformat()}")
    if check and warnings:
        raise typer.Exit(1)


@payments_app.command("trial-balance")
def trial_balance(database: str | None = DatabaseOption) -> None:
    """Every account's balance; checks debits equal credits and balances equal their postings."""
    from yilian import payments
    from yilian.db.uow import read

    with friendly_errors():
        db = open_db(database)
        with read(db) as uow:
            tb = payments.trial_balance(uow)
        table = Table(title="试算平衡 trial balance")
        table.add_column("account")
        table.add_column("kind")
        table.add_column("balance", justify="right")
        table.add_column("held", justify="right")
        for account in tb.accounts:
            table.add_row(
                str(account["account"]),
                str(account["kind"]),
                format_fen(int(str(account["balance_fen"]))),
                format_fen(int(str(account["held_fen"]))),
            )
        console.print(table)
        console.print(
            f"debits {format_fen(tb.debits_fen)}  credits {format_fen(tb.credits_fen)}  sum {format_fen(tb.total_fen)}"
        )
        if not tb.balanced:
            raise YilianError(
                Category.INTERNAL,
                f"the ledger does not balance; mismatched accounts: {', '.join(tb.mismatched) or 'none'}",
            )
        console.print("balanced 平衡")


@payments_app.command("expire-holds")
def expire_holds(database: str | None = DatabaseOption) -> None:
    """Release every deposit hold past its expiry."""
    from yilian import payments
    from yilian.db.uow import transact
    from yilian.security.audit import record

    with friendly_errors():
        db = open_db(database)

        def expire(uow: UnitOfWork) -> int:
            done = payments.expire_holds(uow)
            if done:
                record(
                    uow,
                    operator_record(
                        action="U",
                        subtype="payment-hold-expire",
                        outcome_desc=f"released {done} deposit hold(s) past their expiry",
                    ),
                )
            return done

        done = transact(db, expire)
        console.print(f"{done} hold(s) expired")


@payments_app.command("publish")
def publish(
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="Try at once what failed before, instead of waiting out its back-off."
    ),
    follow: bool = typer.Option(
        False,
        "--follow",
        help="Keep publishing as changes come (a publisher process beside `yilian serve --no-publish`).",
    ),
    base_url: str | None = typer.Option(
        None,
        "--base-url",
        help="The FHIR base the resources' links are written for (default: $YILIAN_BASE_URL or http://localhost:8080/fhir).",
    ),
    database: str | None = DatabaseOption,
) -> None:
    """Write the queued FHIR views (Claim, ClaimResponse, Account, PaymentReconciliation) now.

    The server does this by itself every second (`yilian serve --no-publish` leaves it to this
    command); exit status 1 when something could not be published (`yilian payments publication`
    says what)."""
    import os

    from yilian import payments
    from yilian.cli.common import progress_bar, settings_from_env, stop_on_sigterm

    with friendly_errors():
        db = open_db(database)
        settings = settings_from_env()
        url = base_url or os.environ.get("YILIAN_BASE_URL") or "http://localhost:8080/fhir"
        if retry_failed:
            payments.retry_publication(db)
        if follow:
            console.print(
                "[bold green]医联 Yilian[/] publishing the payments' FHIR views (Ctrl-C or SIGTERM stops)"
            )
            try:
                with stop_on_sigterm():
                    payments.PublicationWorker(db, settings, base_url=url).run_forever()
            except KeyboardInterrupt:  # the queue is in the database: stopping loses nothing
                pass
            return
        status = payments.publication_status(db)
        written = unchanged = failed = 0
        with progress_bar() as progress:
            task = progress.add_task("发布 publishing", total=status.subjects)
            while True:
                done = payments.publish_pending(db, settings, base_url=url, limit=200)
                if done.subjects == 0:
                    break
                written, unchanged, failed = (
                    written + done.written,
                    unchanged + done.unchanged,
                    failed + done.failed,
                )
                progress.advance(task, done.subjects)
                if done.failed == done.subjects:
                    break  # only failures left, each now backing off
        console.print(f"{written} written, {unchanged} already up to date, {failed} failed")
        if failed or payments.publication_status(db).failing:
            raise typer.Exit(1)


@payments_app.command("publication")
def publication_status(database: str | None = DatabaseOption) -> None:
    """What waits to be published as FHIR, and what failed with its error."""
    from yilian import payments

    with friendly_errors():
        status = payments.publication_status(open_db(database))
        console.print(f"{status.pending} change(s) of {status.subjects} subject(s) waiting")
        if status.oldest_us is not None:
            from yilian.kernel import clock
            from yilian.payments.model import to_us

            lag = max(0.0, (to_us(clock.now()) - status.oldest_us) / 1_000_000)
            console.print(f"the oldest waiting change was made {lag:,.0f} s ago")
        if not status.failing:
            return
        table = Table(title=f"failing 发布失败: {len(status.failing)}")
        for column in ("subject", "changes", "attempts", "last error"):
            table.add_column(
                column, overflow="fold", justify="right" if column in ("changes", "attempts") else "left"
            )
        for w in status.failing:
            table.add_row(escape(w.subject), str(w.queued), str(w.attempts), escape(w.last_error or ""))
        console.print(table)
