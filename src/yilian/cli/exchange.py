"""``yilian mllp`` (the HL7 v2 listener on its own) and ``yilian exchange`` (its dead letters)."""

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
    friendly_errors,
    open_db,
    settings_from_env,
)

if TYPE_CHECKING:
    from yilian.db import Database
    from yilian.exchange import MllpServer

exchange_app = typer.Typer(
    help="The exchange platform: HL7 v2 dead letters (list, replay).",
    no_args_is_help=True,
)


def mllp_server(
    db: Database, *, host: str, port: int, tls_cert: str | None, tls_key: str | None
) -> MllpServer:
    from yilian.exchange import IntakeSettings, MllpServer, tls_context

    if bool(tls_cert) != bool(tls_key):
        from yilian.kernel.errors import Category, YilianError

        raise YilianError(Category.INVALID, "--tls-cert and --tls-key go together")
    ssl = tls_context(tls_cert, tls_key) if tls_cert and tls_key else None
    return MllpServer(db, IntakeSettings(fhir=settings_from_env()), host=host, port=port, ssl_context=ssl)


def mllp_command(
    port: int = typer.Option(2575, "--port", help="Port to listen on (2575 is the registered MLLP port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    tls_cert: str | None = typer.Option(
        None, "--tls-cert", help="PEM certificate chain: serve MLLP over TLS."
    ),
    tls_key: str | None = typer.Option(None, "--tls-key", help="PEM private key for --tls-cert."),
    database: str | None = DatabaseOption,
) -> None:
    """Listen for HL7 v2 messages over MLLP (ADT, ORU, VXU, SIU, REF, ORM/OML) and store them as FHIR."""
    from yilian.exchange.mllp import run

    with friendly_errors():
        db = open_db(database)
        server = mllp_server(db, host=host, port=port, tls_cert=tls_cert, tls_key=tls_key)
        scheme = "MLLP/TLS" if server.ssl_context else "MLLP"
        console.print(f"[bold green]医联 Yilian[/] HL7 v2 listener on {scheme} {host}:{port}")
        run(server)


def _when(us: int) -> str:
    return dt.datetime.fromtimestamp(us / 1_000_000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@exchange_app.command("dead-letters")
def dead_letters_command(
    all_: bool = typer.Option(False, "--all", metavar="", help="Include resolved ones."),
    database: str | None = DatabaseOption,
) -> None:
    """List HL7 messages that failed, with the reason and where in the message."""
    from yilian.exchange import dead_letters

    with friendly_errors():
        rows = dead_letters(open_db(database), include_resolved=all_)
        if not rows:
            console.print("no dead letters")
            return
        table = Table(title=f"HL7 dead letters: {len(rows)}")
        for name in (
            "id",
            "failed (UTC)",
            "sender",
            "MSH-10",
            "type",
            "ack",
            "where",
            "reason",
            "tries",
            "status",
        ):
            table.add_column(name, overflow="fold", justify="right" if name in ("id", "tries") else "left")
        for r in rows:
            table.add_row(
                str(r.dead_id),
                _when(r.failed),
                escape(r.sender),
                escape(r.control_id),
                escape(r.message_type),
                f"{r.ack_code} {r.error_code}",
                escape(r.location),
                escape(r.reason),
                str(r.attempts),
                r.status,
            )
        console.print(table)


@exchange_app.command("replay")
def replay_command(
    ids: list[int] = typer.Argument(None, help="Dead-letter ids (see `yilian exchange dead-letters`)."),
    all_: bool = typer.Option(False, "--all", metavar="", help="Replay every open dead letter."),
    database: str | None = DatabaseOption,
) -> None:
    """Process dead letters again after a fix; exit status 1 if any still fails."""
    from yilian.exchange import IntakeSettings, replay

    with friendly_errors():
        if not ids and not all_:
            from yilian.kernel.errors import Category, YilianError

            raise YilianError(Category.INVALID, "name dead-letter ids or give --all")
        results = replay(
            open_db(database), settings=IntakeSettings(fhir=settings_from_env()), ids=None if all_ else ids
        )
    failed = 0
    for dead_id, outcome in results:
        if outcome.code == "AA":
            console.print(f"{dead_id}: stored (AA){' — already stored before' if outcome.duplicate else ''}")
        else:
            failed += 1
            reason = outcome.error.reason if outcome.error else ""
            console.print(f"{dead_id}: {outcome.code} {escape(reason)}")
    console.print(f"replayed {len(results)}: {len(results) - failed} stored, {failed} still failing")
    if failed:
        raise typer.Exit(EXIT_PARTIAL)
