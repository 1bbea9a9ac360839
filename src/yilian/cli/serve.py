"""Running the server."""

from __future__ import annotations

from typing import Any

from yilian.cli.common import console, settings_from_env
from yilian.db import Database


def serve(db: Database, *, host: str, port: int, extra: dict[str, Any] | None = None, log_level: str = "info") -> None:
    import uvicorn

    from yilian.api import create_app

    app = create_app(db, settings_from_env(), extra=extra)
    console.print(f"[bold green]医联 Yilian[/] serving on [link]http://{host}:{port}/[/]  (FHIR: http://{host}:{port}/fhir)")
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, loop="uvloop", http="httptools")
