"""Running the server."""

from __future__ import annotations

import signal
from typing import Any

from yilian.cli.common import console, settings_from_env
from yilian.cli.exchange import MllpOptions
from yilian.db import Database


def serve(
    db: Database,
    *,
    host: str,
    port: int,
    extra: dict[str, Any] | None = None,
    log_level: str = "info",
    mllp_port: int | None = None,
    mllp: MllpOptions | None = None,
    deliver: bool = True,
    publish: bool = True,
    forward_to: str | None = None,
    forward_client_id: str | None = None,
    forward_client_secret: str | None = None,
    workers: int = 1,
) -> None:
    import os

    import uvicorn

    from yilian.api import create_app
    from yilian.security.oauth import BASE_URL_VAR

    # The public URL the token endpoint expects client assertions for (and the SMART
    # configuration advertises): configured, or else the address served on. Set in the
    # environment so that worker processes and background workers agree on it.
    os.environ.setdefault(BASE_URL_VAR, f"http://{host}:{port}/fhir")

    if mllp_port is not None:
        # The HL7 listener gets its own event loop in a daemon thread: uvicorn owns the main
        # loop, and the listener's database work runs in its own worker threads anyway.
        import asyncio
        import threading

        from yilian.cli.exchange import describe, mllp_server

        server = mllp_server(db, host=host, port=mllp_port, options=mllp or MllpOptions())
        threading.Thread(target=asyncio.run, args=(server.serve_forever(),), name="mllp", daemon=True).start()
        console.print(f"HL7 v2 over {describe(server)} on {host}:{mllp_port}")

    worker = None
    if forward_to and not deliver:
        # Queue for the city even when another process delivers (`yilian exchange deliver`).
        from yilian.db.uow import transact
        from yilian.exchange.outbound import register_forward

        transact(db, lambda uow: register_forward(uow, forward_to))
    if deliver:
        # Subscriptions and forwarding: a thread delivering from the outbox. Its state is all in
        # the database, so stopping here (or a crash) loses nothing; the next start continues.
        from yilian.cli.exchange import delivery_worker

        worker = delivery_worker(
            db,
            forward_to=forward_to,
            client_id=forward_client_id,
            client_secret=forward_client_secret,
            source=f"http://{host}:{port}/fhir",
            base_url=f"http://{host}:{port}/fhir",
        )
        worker.start()
        if forward_to:
            console.print(f"forwarding every write to {forward_to}")

    # A scheme whose last reimbursement policy runs out soon: its insured residents' charges
    # would be refused from that day, so say it at every start (docs/payments.md).
    from rich.markup import escape

    from yilian.payments import policy_files, policy_warnings

    for line in policy_files.summary(policy_warnings()):
        console.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True)

    publisher = None
    if publish:
        # The payments' FHIR views: a thread writing what the ledger queued. Like delivery, its
        # state is the queue in the database; the HTTP worker processes never run it.
        from yilian.payments import PublicationWorker

        publisher = PublicationWorker(db, settings_from_env(), base_url=f"http://{host}:{port}/fhir")
        publisher.start()

    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": False,
        "loop": "uvloop",
        "http": "httptools",
    }
    if workers > 1:
        # Python runs one thread at a time per process: a worker process per core is what lets
        # the API use the machine. Each builds the same app from the environment (api/asgi.py);
        # the HL7 listener and the delivery worker stay in this process.
        import orjson

        from yilian.api.asgi import DATABASE_VAR, FRONT_PAGE_VAR

        settings_from_env()  # a bad setting stops the start here, once, with its reason
        os.environ[DATABASE_VAR] = db.url.render_as_string(hide_password=False)
        os.environ[FRONT_PAGE_VAR] = orjson.dumps(extra or {}).decode()
        target: Any = "yilian.api.asgi:app_from_env"
        options.update(factory=True, workers=workers)
    else:
        target = create_app(db, settings_from_env(), extra=extra)
    console.print(
        f"[bold green]医联 Yilian[/] serving on [link]http://{host}:{port}/[/]  (FHIR: http://{host}:{port}/fhir)"
        + (f" with {workers} worker processes" if workers > 1 else "")
    )
    # uvicorn shuts down gracefully on SIGTERM and then raises the signal again with the handler
    # that was there before it: make that handler end the process through SystemExit, so the
    # `finally` below stops the delivery worker and gives up its lease (otherwise forwarding and
    # subscriptions wait out the lease, a minute, after a restart by a process manager).
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        uvicorn.run(target, **options)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if publisher is not None:
            publisher.stop()
        if worker is not None:
            worker.stop()


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)
