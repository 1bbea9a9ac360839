"""Baseline web apps for the read benchmark: the same bytes through bare Starlette and FastAPI.

Run as ``python -m bench.baseline_app KIND BODIES_JSON PORT``: serves ``/fhir/Patient/{id}`` from
a JSON object of id → the reply body Yilian gave for it (``bench_read`` fetches them first), held
in memory, with no database access at all.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response as FastResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def load(path: str) -> dict[str, bytes]:
    bodies: dict[str, str] = orjson.loads(Path(path).read_bytes())
    return {rid: body.encode() for rid, body in bodies.items()}


def starlette_app(docs: dict[str, bytes]) -> Starlette:
    async def read(request: Request) -> Response:
        return Response(docs[request.path_params["rid"]], media_type="application/fhir+json")

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/fhir/Patient/{rid}", read), Route("/health", health)])


def fastapi_app(docs: dict[str, bytes], *, as_model: bool) -> FastAPI:
    app = FastAPI()
    parsed = {k: orjson.loads(v) for k, v in docs.items()} if as_model else {}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    if as_model:

        @app.get("/fhir/Patient/{rid}")
        async def read_model(rid: str) -> dict:  # type: ignore[type-arg]
            return parsed[rid]  # FastAPI's default path: jsonable_encoder + JSONResponse
    else:

        @app.get("/fhir/Patient/{rid}")
        async def read_bytes(rid: str) -> FastResponse:
            return FastResponse(docs[rid], media_type="application/fhir+json")

    return app


def main() -> None:
    kind, bodies, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    docs = load(bodies)
    app = {
        "starlette": lambda: starlette_app(docs),
        "fastapi-bytes": lambda: fastapi_app(docs, as_model=False),
        "fastapi-default": lambda: fastapi_app(docs, as_model=True),
    }[kind]()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
