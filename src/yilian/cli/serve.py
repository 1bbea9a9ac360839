"""Running the server."""

from __future__ import annotations

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
) -> None:
    import uvicorn

    from yilian.api import create_app

    if mllp_port is not None:
        # The HL7 listener gets its own event loop in a daemon thread: uvicorn owns the main
        # loop, and the listener's database work runs in its own worker threads anyway.
        import asyncio
        import threading

        from yilian.cli.exchange import describe, mllp_server

        server = mllp_server(db, host=host, port=mllp_port, options=mllp or MllpOptions())
        threading.Thread(target=asyncio.run, args=(server.serve_forever(),), name="mllp", daemon=True).start()
        console.print(f"HL7 v2 over {describe(server)} on {host}:{mllp_port}")

    app = create_app(db, settings_from_env(), extra=extra)
    console.print(
        f"[bold green]医联 Yilian[/] serving on [link]http://{host}:{port}/[/]  (FHIR: http://{host}:{port}/fhir)"
    )
    uvicorn.run(
        app, host=host, port=port, log_level=log_level, access_log=False, loop="uvloop", http="httptools"
    )
