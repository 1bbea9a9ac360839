"""``yilian mllp`` (the HL7 v2 listener on its own) and ``yilian exchange`` (its dead letters)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from yilian.cli.common import (
    EXIT_PARTIAL,
    DatabaseOption,
    audit_partial,
    console,
    friendly_errors,
    open_db,
    operator_record,
    progress_bar,
    record_alone,
    settings_from_env,
    stop_on_sigterm,
)

if TYPE_CHECKING:
    from yilian.db import Database, UnitOfWork
    from yilian.exchange import MllpServer, Outcome, Recovered
    from yilian.exchange.outbound import DeliveryWorker, Skipped
    from yilian.security.audit import AuditRecord

T = TypeVar("T")

exchange_app = typer.Typer(
    help="The exchange platform: HL7 v2 dead letters (list, replay), prune-inbox; outbound delivery (outbox, skip, prune-outbox, deliver, forward).",
    no_args_is_help=True,
)


@dataclass(frozen=True)
class MllpOptions:
    """How the listener authenticates senders (the options `yilian mllp` and `yilian serve` share)."""

    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    insecure_trust_network: bool = False
    as_client: str | None = None


def mllp_server(db: Database, *, host: str, port: int, options: MllpOptions) -> MllpServer:
    from yilian.exchange import IntakeSettings, MllpServer, tls_context
    from yilian.kernel.errors import Category, YilianError

    o = options
    if bool(o.tls_cert) != bool(o.tls_key):
        raise YilianError(Category.INVALID, "--tls-cert and --tls-key go together")
    if o.tls_client_ca and not o.tls_cert:
        raise YilianError(Category.INVALID, "--tls-client-ca needs --tls-cert and --tls-key")
    if o.as_client and not o.insecure_trust_network:
        raise YilianError(
            Category.INVALID,
            "--as-client attributes every connection to one client: it needs --insecure-trust-network "
            "(with mutual TLS each connection is the client its certificate is bound to)",
        )
    if o.insecure_trust_network:
        if o.tls_client_ca:
            raise YilianError(
                Category.INVALID, "--insecure-trust-network and --tls-client-ca exclude each other"
            )
        if not o.as_client:
            raise YilianError(
                Category.INVALID,
                "--insecure-trust-network needs --as-client CLIENT_ID: messages are still written, "
                "and audited, as a registered client",
            )
    ssl = tls_context(o.tls_cert, o.tls_key, o.tls_client_ca) if o.tls_cert and o.tls_key else None
    server = MllpServer(
        db,
        IntakeSettings(fhir=settings_from_env()),
        host=host,
        port=port,
        ssl_context=ssl,
        trusted_client=o.as_client if o.insecure_trust_network else None,
    )
    server.check_mode()  # refuse now, with a readable message, rather than in the event loop
    return server


TlsCertOption = typer.Option(None, "--tls-cert", help="PEM certificate chain: serve MLLP over TLS.")
TlsKeyOption = typer.Option(None, "--tls-key", help="PEM private key for --tls-cert.")
TlsClientCaOption = typer.Option(
    None,
    "--tls-client-ca",
    help="PEM file of the CA certificates that issue the senders client certificates: require mutual TLS. "
    "Each certificate must be bound to a client with yilian client bind-cert.",
)
InsecureOption = typer.Option(
    False,
    "--insecure-trust-network",
    help="No client certificates: trust the network itself. For a closed lab network only; "
    "needs --as-client.",
)
AsClientOption = typer.Option(
    None,
    "--as-client",
    help="With --insecure-trust-network: the registered client every message is written and audited as.",
)


def mllp_command(
    port: int = typer.Option(2575, "--port", help="Port to listen on (2575 is the registered MLLP port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    tls_cert: str | None = TlsCertOption,
    tls_key: str | None = TlsKeyOption,
    tls_client_ca: str | None = TlsClientCaOption,
    insecure_trust_network: bool = InsecureOption,
    as_client: str | None = AsClientOption,
    database: str | None = DatabaseOption,
) -> None:
    """Listen for HL7 v2 messages over MLLP (ADT, ORU, VXU, SIU, REF, ORM/OML) and store them as FHIR.

    Senders authenticate with TLS client certificates bound to registered clients
    (--tls-cert, --tls-key, --tls-client-ca); see docs/exchange.md.
    """
    from yilian.exchange.mllp import run

    with friendly_errors():
        db = open_db(database)
        options = MllpOptions(tls_cert, tls_key, tls_client_ca, insecure_trust_network, as_client)
        server = mllp_server(db, host=host, port=port, options=options)
        console.print(f"[bold green]医联 Yilian[/] HL7 v2 listener on {describe(server)} {host}:{port}")
        run(server)


def describe(server: MllpServer) -> str:
    from yilian.exchange.mllp import authenticates_clients

    if authenticates_clients(server.ssl_context):
        return "MLLP/TLS with client certificates"
    scheme = "MLLP/TLS" if server.ssl_context else "MLLP"
    return f"{scheme} [bold red](insecure: trusting the network, every sender is {server.trusted_client})[/]"


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
        db = open_db(database)
        rows = dead_letters(db, include_resolved=all_)
        _warn_stranded(db)
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


def _warn_stranded(db: Database) -> None:
    from yilian.exchange import stranded

    left = stranded(db)
    if left:
        console.print(
            f"[yellow]{len(left)} message(s) landed but never stored nor refused[/] (the process "
            f"stopped in between; the oldest received {_when(left[0].received)} UTC): "
            "`yilian exchange recover` processes them (a running listener does so by itself)"
        )


@exchange_app.command("recover")
def recover_command(
    older_than: float = typer.Option(
        300.0,
        "--older-than",
        min=0.0,
        metavar="SECONDS",
        help="Only messages landed at least this long ago (a younger one may still be in a listener's hands).",
    ),
    as_client: str | None = typer.Option(
        None,
        "--as-client",
        help="The client to write as for messages landed before senders were recorded.",
    ),
    database: str | None = DatabaseOption,
) -> None:
    """Process HL7 messages that landed but were never stored nor refused (a crash in between).

    Each is processed as the client that sent it, as a replay is: it ends stored, a duplicate of a resend already stored, or a dead letter with its reason. Exit status 1 if any failed or had no client to write as."""
    from yilian.exchange import IntakeSettings, recover

    with friendly_errors():
        db = open_db(database)
        run = _operator_run(
            db,
            subtype=RECOVER_SUBTYPE,
            title="processing",
            describe=lambda n: f"processed {n} stranded HL7 v2 messages",
        )
        with run as advance:
            done = recover(
                db,
                settings=IntakeSettings(fhir=settings_from_env()),
                older_than_s=older_than,
                as_client=as_client,
                progress=advance,
            )
            if done:
                record_alone(db, _recover_record(done))
    if not done:
        console.print("no stranded messages")
        return
    table = Table(title=f"stranded HL7 messages: {len(done)}")
    for name in ("inbox id", "received (UTC)", "peer", "client", "outcome"):
        table.add_column(name, overflow="fold")
    failed = left = 0
    for r in done:
        o = r.outcome
        if o is None:
            left += 1
            what = "[yellow]left: no sending client on record (give --as-client)[/]"
        elif o.code == "AA":
            what = "stored (AA)" + (" — a resend was stored before" if o.duplicate else "")
        else:
            failed += 1
            what = f"[red]{o.code}[/] {escape(o.error.reason if o.error else '')} (now a dead letter)"
        s = r.stranded
        table.add_row(s.inbox_id, _when(s.received), escape(s.peer or ""), escape(s.client_id or ""), what)
    console.print(table)
    console.print(
        f"processed {len(done) - left}: {len(done) - left - failed} stored, {failed} failed, {left} left"
    )
    if failed or left:
        raise typer.Exit(EXIT_PARTIAL)


@contextmanager
def _operator_run(
    db: Database, *, subtype: str, title: str, describe: Callable[[int], str]
) -> Iterator[Callable[[int, int], None]]:
    """A progress bar for messages processed one transaction each, and, should the run stop
    midway, the operator's AuditEvent saying how far it got (``describe(done)``).

    Each message is written (and audited) as the client that sent it, in a transaction of its
    own; the operator who set the run going is recorded by the caller once, after the last."""
    done = 0
    partial = audit_partial(
        db, action="E", subtype=subtype, entity=INBOX_ENTITY, done=lambda: describe(done) if done else None
    )
    with partial, progress_bar() as bar:
        task = bar.add_task(title, total=None)

        def advance(n: int, total: int) -> None:
            nonlocal done
            done = n
            bar.update(task, completed=n, total=total)

        yield advance


RECOVER_SUBTYPE = "hl7-recover"
REPLAY_SUBTYPE = "hl7-replay"


def _recover_record(done: list[Recovered]) -> AuditRecord:
    left = [r.stranded.inbox_id for r in done if r.outcome is None]
    failed = [r.stranded.inbox_id for r in done if r.outcome is not None and r.outcome.code != "AA"]
    stored = len(done) - len(left) - len(failed)
    desc = f"processed {len(done) - len(left)} stranded HL7 v2 messages: {stored} stored"
    if failed:
        desc += f", {len(failed)} failed and became dead letters ({', '.join(failed)})"
    if left:
        desc += f"; {len(left)} left without a sending client on record ({', '.join(left)})"
    return operator_record(
        action="E",
        subtype=RECOVER_SUBTYPE,
        entity=INBOX_ENTITY,
        outcome=4 if failed or left else 0,
        outcome_desc=desc,
    )


@exchange_app.command("replay")
def replay_command(
    ids: list[int] = typer.Argument(None, help="Dead-letter ids (see `yilian exchange dead-letters`)."),
    all_: bool = typer.Option(False, "--all", metavar="", help="Replay every open dead letter."),
    as_client: str | None = typer.Option(
        None,
        "--as-client",
        help="The client to write as for dead letters received before senders were recorded "
        "(others are replayed as the client that sent them).",
    ),
    database: str | None = DatabaseOption,
) -> None:
    """Process dead letters again after a fix; exit status 1 if any still fails."""
    from yilian.exchange import IntakeSettings, replay

    with friendly_errors():
        if not ids and not all_:
            from yilian.kernel.errors import Category, YilianError

            raise YilianError(Category.INVALID, "name dead-letter ids or give --all")
        db = open_db(database)
        run = _operator_run(
            db, subtype=REPLAY_SUBTYPE, title="replaying", describe=lambda n: f"replayed {n} dead letters"
        )
        with run as advance:
            results = replay(
                db,
                settings=IntakeSettings(fhir=settings_from_env()),
                ids=None if all_ else ids,
                as_client=as_client,
                progress=advance,
            )
            if results:
                record_alone(db, _replay_record(results))
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


def _replay_record(results: list[tuple[int, Outcome]]) -> AuditRecord:
    failing = [str(dead_id) for dead_id, o in results if o.code != "AA"]
    desc = (
        f"replayed dead letters {', '.join(str(dead_id) for dead_id, _ in results)}: "
        f"{len(results) - len(failing)} stored"
    )
    if failing:
        desc += f", {len(failing)} still failing ({', '.join(failing)})"
    return operator_record(
        action="E",
        subtype=REPLAY_SUBTYPE,
        entity=INBOX_ENTITY,
        outcome=4 if failing else 0,
        outcome_desc=desc,
    )


# --- outbound delivery: subscriptions and forwarding --------------------------------------------

ForwardIdOption = typer.Option(
    None,
    "--forward-client-id",
    help="Client id this node holds on the city node (default: $YILIAN_FORWARD_CLIENT_ID).",
)
ForwardSecretOption = typer.Option(
    None,
    "--forward-client-secret",
    help="Its client secret (default: $YILIAN_FORWARD_CLIENT_SECRET; prefer the variable: options show in ps).",
)


def delivery_worker(
    db: Database,
    *,
    forward_to: str | None,
    client_id: str | None,
    client_secret: str | None,
    source: str,
    base_url: str,
) -> DeliveryWorker:
    """The worker that delivers subscriptions and forwards, registering ``forward_to`` first."""
    from yilian.db.uow import transact
    from yilian.exchange.outbound import DeliveryWorker as Worker
    from yilian.exchange.outbound import (
        credentials_from_env,
        delivery_settings_from_env,
        register_forward,
    )
    from yilian.exchange.outbound.forwarding import normalize

    forward = {}
    creds = credentials_from_env(client_id, client_secret)
    if forward_to:
        url = normalize(forward_to)
        transact(db, lambda uow: register_forward(uow, url))
        if creds is None:
            from yilian.kernel.errors import Category, YilianError

            raise YilianError(
                Category.INVALID,
                "--forward-to needs the city node's client credentials: --forward-client-id and "
                "--forward-client-secret (or YILIAN_FORWARD_CLIENT_ID / YILIAN_FORWARD_CLIENT_SECRET)",
            )
        forward[url] = creds
    else:
        # Targets registered earlier keep being served when credentials are given by environment.
        from yilian.exchange.outbound import outbox_status

        if creds is not None:
            for d in outbox_status(db):
                if d.kind == "forward" and d.active:
                    forward[d.endpoint] = creds
    settings = delivery_settings_from_env(
        forward=forward,
        source=os.environ.get("YILIAN_FORWARD_SOURCE") or source,
        fhir=settings_from_env(),
        base_url=base_url,
    )
    return Worker(db, settings)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@exchange_app.command("outbox")
def outbox_command(database: str | None = DatabaseOption) -> None:
    """What waits to be delivered, per destination (subscriptions and forwarding targets)."""
    from yilian.exchange.outbound import outbox_status

    with friendly_errors():
        rows = outbox_status(open_db(database))
    if not rows:
        console.print("no subscriptions and no forwarding targets")
        return
    table = Table(title=f"Outbound destinations: {len(rows)}")
    for name in (
        "destination",
        "to",
        "state",
        "pending",
        "oldest pending",
        "delivered",
        "skipped",
        "last error",
        "next try (UTC)",
    ):
        table.add_column(
            name, overflow="fold", justify="right" if name in ("pending", "delivered", "skipped") else "left"
        )
    for r in rows:
        state = "active" if r.active else "off"
        if r.active and r.failures:
            state = f"failing ({r.failures}×)"
        table.add_row(
            escape(r.dest_id),
            escape(r.endpoint + (f"\n{r.criteria}" if r.criteria else "")),
            state,
            str(r.pending),
            _age(r.oldest_pending_age_s),
            str(r.delivered),
            str(r.skipped),
            escape(r.last_error or "-"),
            _when(r.next_try) if r.next_try and r.pending else "-",
        )
    console.print(table)


@exchange_app.command("skip")
def skip_command(
    destination: str = typer.Argument(
        ..., help="The destination, as `yilian exchange outbox` names it (Subscription/<id>, forward:<url>)."
    ),
    reason: str = typer.Option(..., "--reason", help="Why it is set aside (kept with the message)."),
    seq: int | None = typer.Option(
        None,
        "--seq",
        help="The message's sequence number (default: the next one due, which holds the rest back).",
    ),
    database: str | None = DatabaseOption,
) -> None:
    """Set aside a message the destination refuses for good, so the ones after it can go.

    The message is kept, marked skipped with who and why; nothing is deleted.
    """
    import getpass

    from yilian.db.uow import transact
    from yilian.exchange.outbound import skip_message
    from yilian.security.audit import record

    with friendly_errors():
        db = open_db(database)
        actor = f"cli:{getpass.getuser()}"

        def work(uow: UnitOfWork) -> Skipped:
            done = skip_message(uow, destination, reason=reason, actor=actor, seq=seq)
            record(
                uow,
                operator_record(
                    action="U",
                    subtype="outbox-skip",
                    entity=_no_userinfo(done.dest_id),
                    outcome_desc=f"skipped message {done.seq} of {_no_userinfo(done.dest_id)} "
                    f"({done.res_type}/{done.res_id} version {done.version}, after {done.attempts} "
                    f"attempts): {reason}",
                ),
            )
            return done

        done = transact(db, work)
    console.print(
        f"skipped message {done.seq} of {escape(done.dest_id)}: {done.res_type}/{done.res_id} version "
        f"{done.version}, after {done.attempts} attempts"
        + (f" (last error: {escape(done.last_error)})" if done.last_error else "")
    )


OUTBOX_ENTITY = "exchange outbox"
INBOX_ENTITY = "HL7 v2 inbox"


def _audited_prune(
    db: Database,
    *,
    subtype: str,
    entity: str,
    title: str,
    due: int,
    describe: Callable[[int], str],
    prune: Callable[[Callable[[int], None]], T],
) -> T:
    """Run ``prune(progress)`` behind a progress bar and record it once.

    Retention deletes in batches, each its own transaction (no long lock against writers), so
    the AuditEvent cannot share the deletions' transaction: one record follows the last batch
    (``describe(removed)``), and a prune that stops midway records how many rows it had removed
    (outcome 8)."""
    removed = 0
    partial = audit_partial(
        db, action="D", subtype=subtype, entity=entity, done=lambda: describe(removed) if removed else None
    )
    with progress_bar() as bar, partial:
        task = bar.add_task(title, total=due)

        def advance(n: int) -> None:
            nonlocal removed
            removed += n
            bar.advance(task, n)

        done = prune(advance)
        record_alone(
            db, operator_record(action="D", subtype=subtype, entity=entity, outcome_desc=describe(removed))
        )
    return done


@exchange_app.command("prune-inbox")
def prune_inbox_command(
    older_than: float = typer.Option(
        ...,
        "--older-than",
        metavar="DAYS",
        help="Remove HL7 v2 messages received more than DAYS ago (at least 1) that were stored, re-sent, or failed with their dead letter resolved.",
    ),
    database: str | None = DatabaseOption,
) -> None:
    """Remove HL7 v2 messages done with from the inbox past their retention; open dead letters' messages are kept.

    The message log (sender, control id, ACK) stays, so a late re-send is still answered the same.
    """
    from yilian.exchange.inbox_retention import MIN_RETENTION_DAYS, cutoff_us, prunable, prune_inbox
    from yilian.kernel import clock
    from yilian.kernel.errors import Category, YilianError

    with friendly_errors():
        if not older_than >= MIN_RETENTION_DAYS:
            raise YilianError(Category.INVALID, f"--older-than must be at least {MIN_RETENTION_DAYS} day")
        db = open_db(database)
        now = int(clock.now().timestamp() * 1_000_000)  # one instant for the count and the prune
        cutoff = cutoff_us(older_than, now)
        due = prunable(db, older_than_days=older_than, now_us=now)
        done = _audited_prune(
            db,
            subtype="inbox-prune",
            entity=INBOX_ENTITY,
            title="pruning the HL7 inbox",
            due=due,
            describe=lambda n: (
                f"removed {n} HL7 v2 messages received before {_when(cutoff)} UTC "
                f"(retention {older_than:g} days) from the inbox"
            ),
            prune=lambda progress: prune_inbox(db, older_than_days=older_than, now_us=now, progress=progress),
        )
    console.print(f"removed {done:,} HL7 v2 messages received more than {older_than:g} days ago")


@exchange_app.command("prune-outbox")
def prune_outbox_command(
    older_than: float = typer.Option(
        30.0,
        "--older-than",
        metavar="DAYS",
        help="Remove finished messages (delivered, withheld, cancelled) that finished more than DAYS ago (at least 1).",
    ),
    database: str | None = DatabaseOption,
) -> None:
    """Remove finished outbox messages past their retention; pending and skipped ones are kept.

    `yilian serve` does this once an hour with YILIAN_OUTBOX_RETENTION_DAYS (default 30).
    """
    from yilian.exchange.outbound import prune_outbox
    from yilian.exchange.outbound.outbox import now_us
    from yilian.exchange.outbound.retention import cutoff_us, prunable

    with friendly_errors():
        db = open_db(database)
        now = now_us()
        cutoff = cutoff_us(older_than, now)
        due = prunable(db, older_than_days=older_than, now=now)
        done = _audited_prune(
            db,
            subtype="outbox-prune",
            entity=OUTBOX_ENTITY,
            title="pruning the outbox",
            due=due,
            describe=lambda n: (
                f"removed {n} finished outbox messages (delivered, withheld, cancelled) that "
                f"finished before {_when(cutoff)} UTC (retention {older_than:g} days)"
            ),
            prune=lambda progress: prune_outbox(db, older_than_days=older_than, now=now, progress=progress),
        )
    console.print(
        f"removed {done.removed:,} finished messages that finished before {_when(done.cutoff_us)} UTC; "
        f"{done.remaining_finished:,} finished messages kept"
    )


@exchange_app.command("deliver")
def deliver_command(
    once: bool = typer.Option(
        False, "--once", metavar="", help="Deliver what is due now and exit (default: keep running)."
    ),
    forward_client_id: str | None = ForwardIdOption,
    forward_client_secret: str | None = ForwardSecretOption,
    database: str | None = DatabaseOption,
) -> None:
    """Deliver subscription notifications and forwarded writes (what `yilian serve` does in the background)."""
    with friendly_errors():
        db = open_db(database)
        worker = delivery_worker(
            db,
            forward_to=None,
            client_id=forward_client_id,
            client_secret=forward_client_secret,
            source=os.environ.get("YILIAN_FORWARD_SOURCE", "urn:yilian:node"),
            base_url=os.environ.get("YILIAN_BASE_URL", "http://localhost:8080/fhir"),
        )
        if once:
            try:
                done = worker.run_once()
            finally:
                worker.http.close()
            console.print(f"delivered {done}")
            return
        console.print(
            "[bold green]医联 Yilian[/] delivering subscriptions and forwarded writes (Ctrl-C or SIGTERM stops)"
        )
        try:
            with stop_on_sigterm():
                worker.run_forever()
        except KeyboardInterrupt:  # a requested stop: the claimed destination was given up on the way out
            pass
        finally:
            worker.http.close()


@exchange_app.command("forward")
def forward_command(
    url: str = typer.Argument(..., help="The city node's root URL, e.g. https://city.example:8080."),
    stop: bool = typer.Option(
        False, "--stop", metavar="", help="Stop forwarding there (what is still queued is dropped)."
    ),
    database: str | None = DatabaseOption,
) -> None:
    """Queue every write of this node for the city node from now on (or --stop); `yilian serve --forward-to` does the same."""
    from yilian.db.uow import transact
    from yilian.exchange.outbound import register_forward, unregister_forward
    from yilian.security.audit import record

    def stop_forwarding(uow: UnitOfWork) -> int:
        dropped = unregister_forward(uow, url)
        record(
            uow,
            operator_record(
                action="U",
                subtype="forward-stop",
                entity=_no_userinfo(f"forward:{url}"),
                outcome_desc=f"stopped forwarding to {_no_userinfo(url)}; {dropped} queued writes dropped",
            ),
        )
        return dropped

    def start_forwarding(uow: UnitOfWork) -> str:
        did = register_forward(uow, url)
        record(
            uow,
            operator_record(
                action="U",
                subtype="forward-start",
                entity=_no_userinfo(did),
                outcome_desc=f"every write of this node is queued for {_no_userinfo(did)} from now on",
            ),
        )
        return did

    with friendly_errors():
        db = open_db(database)
        if stop:
            dropped = transact(db, stop_forwarding)
            console.print(f"stopped forwarding to {escape(url)}; {dropped} queued writes dropped")
        else:
            did = transact(db, start_forwarding)
            console.print(f"every write is now queued for {escape(did)}")


def _no_userinfo(text: str) -> str:
    """A destination or URL without any user:password@ in it: what the audit log may keep."""
    import re

    return re.sub(r"(https?://)[^/@\s]*@", r"\1", text)
