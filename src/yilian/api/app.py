"""Assembling the ASGI application: FHIR at /fhir, health checks, the front page."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

import yilian.portal as portal_static
from yilian import __version__
from yilian.api import openapi
from yilian.api.auth import Authenticator
from yilian.api.auth_routes import smart_config, token_endpoint
from yilian.api.bulk_routes import BulkEndpoint
from yilian.api.fhir_endpoint import FhirEndpoint, is_fhir_path, relative_path_raw
from yilian.api.pages import front_page
from yilian.api.rest import ApiRoutes
from yilian.api.systems import system_routes
from yilian.db import Database
from yilian.fhir.interactions.context import FhirSettings
from yilian.portal.login import routes as login_routes
from yilian.portal.wallet import routes as wallet_routes
from yilian.security.audit import AuditWriter, Sealer

log = logging.getLogger("yilian.api")


class YilianApp:
    """The whole platform as one ASGI app: FHIR requests go straight to their endpoint (the hot
    path skips the router), everything else through Starlette's routes."""

    def __init__(self, fhir: FhirEndpoint, rest: Starlette, bulk: BulkEndpoint) -> None:
        self.fhir = fhir
        self.rest = rest
        self.bulk = bulk
        self.state = rest.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_fhir_path(scope):
            if "$" in scope["path"] and self.bulk.handles(relative_path_raw(scope)):
                await self.bulk(scope, receive, send)
                return
            await self.fhir(scope, receive, send)
        else:
            await self.rest(scope, receive, send)


def create_app(
    db: Database,
    settings: FhirSettings | None = None,
    *,
    extra: dict[str, Any] | None = None,
    bulk_dir: Path | None = None,
) -> YilianApp:
    authenticator = Authenticator(db)
    # The audit writer and the sealer live as long as the server: started here, closed (after
    # writing everything queued) when the server stops.
    writer = AuditWriter(db)
    sealer = Sealer(db)
    fhir = FhirEndpoint(db, settings, authenticator, writer)
    # Bulk $export / $import: jobs run in a worker thread of this process, and resume after a restart.
    bulk = BulkEndpoint(db, fhir.settings, authenticator, writer, directory=bulk_dir)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        from starlette.concurrency import run_in_threadpool

        from yilian.db.uow import transact
        from yilian.security.people import seal_totp_secrets

        # Staff TOTP secrets stored in plain text by earlier versions are sealed before serving.
        await run_in_threadpool(transact, db, seal_totp_secrets)
        sealer.start()
        bulk.worker.start()
        try:
            yield
        finally:
            bulk.worker.stop()
            sealer.stop()
            writer.close()

    async def home(request: Request) -> Response:
        return HTMLResponse(front_page(db, str(request.base_url).rstrip("/"), extra or {}))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    async def ready(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        def ping() -> None:
            with db.connect_autocommit() as conn:  # no BEGIN, no ROLLBACK: one round trip
                conn.execute(text("SELECT 1"))

        try:
            await run_in_threadpool(ping)
        except Exception as exc:  # the database is down: say so, don't crash
            # The driver's message names hosts, ports and users: for the log, not for a probe
            # that anyone may call.
            log.warning("readiness check: the database did not answer: %s", str(exc).strip()[:300])
            return JSONResponse(
                {"status": "unavailable", "database": db.dialect, "detail": "the database did not answer"},
                status_code=503,
            )
        return JSONResponse({"status": "ready", "database": db.dialect})

    api = ApiRoutes(db, authenticator, writer)
    api_routes = system_routes(api)
    # Generated once from the registrations above: the document is the routes, not a copy of them.
    spec = orjson.dumps(openapi.document(api.specs), option=orjson.OPT_INDENT_2)

    async def openapi_json(request: Request) -> Response:
        return Response(spec, media_type="application/json")

    app = Starlette(
        routes=[
            Route("/", home),
            Route("/health", health),
            Route("/health/ready", ready),
            Route("/auth/token", token_endpoint(db, writer), methods=["POST"]),
            Route("/.well-known/smart-configuration", smart_config),
            *login_routes(db, writer),
            *wallet_routes(db, writer),
            Route(openapi.PATH, openapi_json),
            *api_routes,
            Mount(
                "/static",
                StaticFiles(directory=str(Path(portal_static.__file__).parent / "static")),
                name="static",
            ),
        ],
        lifespan=lifespan,
    )
    app.state.db = db
    app.state.api_specs = api.specs
    return YilianApp(fhir, app, bulk)
