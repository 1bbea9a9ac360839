"""The FHIR REST endpoint at ``/fhir``: HTTP in, :func:`yilian.fhir.router.dispatch` in a worker thread, HTTP out.

A raw ASGI application rather than a FastAPI route: FHIR bodies are JSON documents we already
hold as bytes, and FastAPI's validation/serialization layer would only add cost on the hottest
path of the platform (see docs/decisions/0001-web-stack.md).
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from yilian.api.auditing import record_for, writes_data
from yilian.api.auth import Authenticator
from yilian.db import Database, UnitOfWork
from yilian.db.uow import transact
from yilian.fhir import outcomes
from yilian.fhir.access import ALLOW_ALL
from yilian.fhir.interactions.context import FhirContext, FhirSettings
from yilian.fhir.interactions.writes import TOUCHED
from yilian.fhir.router import FhirRequest, FhirResponse, dispatch, fast_read, is_write
from yilian.fhir.store.repository import FastReader
from yilian.kernel.errors import Category, YilianError
from yilian.kernel.nul import refuse_nul
from yilian.security.audit import AuditRecord, AuditWriter
from yilian.security.audit import record as audit_record
from yilian.security.oauth import public_root
from yilian.security.policy import policy_for
from yilian.security.principal import Principal

log = logging.getLogger("yilian.api.fhir")

FHIR_JSON = "application/fhir+json; charset=utf-8"
JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir", "text/json"})
PATCH_TYPES = frozenset({"application/json-patch+json"})
FORMAT_ALIASES = frozenset({"json", "application/json", "application/fhir+json", "application/json+fhir"})
MAX_BODY = 64 * 1024 * 1024
PREFIX = "/fhir"


def relative_path(scope: Scope) -> str:
    """The request path below ``/fhir`` (the ASGI path includes any proxy ``root_path``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path[len(PREFIX) :] if path.startswith(PREFIX) else path


def is_fhir_path(scope: Scope) -> bool:
    path = relative_path_raw(scope)
    return path == PREFIX or path.startswith(PREFIX + "/")


def relative_path_raw(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _error_response(err: YilianError) -> tuple[int, bytes]:
    return outcomes.status_of(err.category), orjson.dumps(outcomes.outcome(err))


class FhirEndpoint:
    """ASGI app serving the FHIR API for one database."""

    def __init__(
        self,
        db: Database,
        settings: FhirSettings | None = None,
        authenticator: Authenticator | None = None,
        audit_writer: AuditWriter | None = None,
    ) -> None:
        self.db = db
        self.settings = settings or FhirSettings()
        self.auth = authenticator or Authenticator(db)
        # Reads and refusals are recorded through the group-commit writer (a read changes
        # nothing, so its record cannot ride on a transaction of its own); writes record in
        # the very transaction that makes the change.
        self.audit = audit_writer
        # Reads by id run on the event loop's thread (no worker-thread hop): its own connection.
        self.reader = FastReader(db.engine)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        status, body, headers = await self._handle(scope, receive)
        raw_headers = [(b"content-type", FHIR_JSON.encode())] if body is not None else []
        for k, v in headers.items():
            raw_headers.append((k.lower().encode(), v.encode("latin-1")))
        send_body = body if body is not None and scope["method"] != "HEAD" else b""
        raw_headers.append((b"content-length", str(len(send_body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": send_body})

    def _base_url(self, scope: Scope) -> str:
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"localhost").decode("latin-1")
        scheme = headers.get(b"x-forwarded-proto", scope.get("scheme", "http").encode()).decode()
        root = scope.get("root_path", "")
        return f"{scheme}://{host}{root}{PREFIX}"

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raise YilianError(
                    Category.TOO_LARGE, f"request body larger than {MAX_BODY // (1024 * 1024)} MB"
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, bytes | None, dict[str, str]]:
        req: FhirRequest | None = None
        principal: Principal | None = None
        try:
            req = await self._request(scope, receive)
            refuse_nul("the request", [req.path, *(v for pair in req.query for v in pair)])
            refuse_nul("the body", [req.body])
            base = self._base_url(scope)
            if req.path == ".well-known/smart-configuration" and req.method in ("GET", "HEAD"):
                # The configured public address, as at the root and as the token endpoint checks
                # audiences: never the Host header, which the caller chooses (a client that
                # trusted it would send its credentials where the header pointed).
                return 200, orjson.dumps(smart_configuration(f"{public_root(os.environ)}/fhir")), {}
            if req.path == "metadata":
                ctx = FhirContext(base_url=base, settings=self.settings, policy=ALLOW_ALL)
                resp = await run_in_threadpool(self._execute, ctx, req, None, None)
                return resp.status, resp.body, resp.headers
            principal = self.auth.principal(req.headers)
            ctx = FhirContext(base_url=base, settings=self.settings, policy=policy_for(principal, self.db))
            ip = _client_ip(scope)
            quick = fast_read(self.reader, ctx, req)
            resp = (
                quick
                if quick is not None
                else await run_in_threadpool(self._execute, ctx, req, principal, ip)
            )
            if not writes_data(req):
                await self._record(
                    record_for(req, principal, status=resp.status, patients=resp.touched(), source_ip=ip)
                )
            body = resp.body
            if body is not None and any(k == "_pretty" and v == "true" for k, v in req.query):
                body = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2)
            return resp.status, body, resp.headers
        except YilianError as err:
            status, body = _error_response(err)
            extra = (
                {"WWW-Authenticate": 'Bearer realm="yilian"'}
                if err.category is Category.UNAUTHENTICATED
                else {}
            )
            if req is not None and req.path != "metadata":
                # The refused and the failed are accesses too (a write's own record went with its rollback).
                try:
                    await self._record(
                        record_for(req, principal, status=status, error=err, source_ip=_client_ip(scope))
                    )
                except Exception:  # the refusal stands even if the log is down; say so loudly
                    log.exception("could not record a refused request in the audit log")
            return status, body, extra
        except Exception:
            incident = uuid.uuid4().hex[:12]
            log.exception("unhandled error in FHIR request (incident %s)", incident)
            internal = YilianError(Category.INTERNAL, f"internal error; incident {incident} has been logged")
            status, body = _error_response(internal)
            return status, body, {}

    async def _record(self, rec: AuditRecord) -> None:
        if self.audit is not None:
            await self.audit.record(rec)

    def _execute(
        self, ctx: FhirContext, req: FhirRequest, principal: Principal | None, ip: str | None
    ) -> FhirResponse:
        writing = is_write(req.method, req.path)

        def work(uow: UnitOfWork) -> FhirResponse:
            resp = dispatch(uow, ctx, req)
            if writing and principal is not None:
                touched = set(uow.state.get(TOUCHED, ())) | resp.touched()
                audit_record(
                    uow, record_for(req, principal, status=resp.status, patients=touched, source_ip=ip)
                )
            return resp

        return transact(self.db, work, write=writing)

    async def _request(self, scope: Scope, receive: Receive) -> FhirRequest:
        method = scope["method"].upper()
        path = relative_path(scope)
        query = parse_qsl(scope.get("query_string", b"").decode("utf-8", "replace"), keep_blank_values=True)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        fmt = next((v for k, v in query if k == "_format"), None)
        if fmt is not None and fmt not in FORMAT_ALIASES:
            raise YilianError(
                Category.UNSUPPORTED, f"_format={fmt} is not supported: this server speaks FHIR JSON only"
            )
        accept = headers.get("accept", "")
        if fmt is None and accept and not _accepts_json(accept):
            raise YilianError(
                Category.UNSUPPORTED, f"cannot answer in {accept}: this server speaks FHIR JSON only"
            )
        content_type = headers.get("content-type", "application/fhir+json").split(";")[0].strip().lower()
        body: Any = None
        if method in ("POST", "PUT", "PATCH"):
            raw = await self._read_body(receive)
            if content_type == "application/x-www-form-urlencoded":
                query = query + parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
            elif raw.strip():
                if content_type not in JSON_TYPES and content_type not in PATCH_TYPES:
                    raise YilianError(
                        Category.UNSUPPORTED,
                        f"content type {content_type} is not supported: send application/fhir+json"
                        + (" or application/json-patch+json" if method == "PATCH" else ""),
                    )
                try:
                    # A UTF-8 byte-order mark (Windows tools write one) is not part of the JSON.
                    body = orjson.loads(raw.removeprefix(b"\xef\xbb\xbf"))
                except orjson.JSONDecodeError as exc:
                    raise YilianError(Category.INVALID, f"the body is not valid JSON: {exc}") from None
            elif method in ("PUT", "PATCH") or (
                method == "POST" and not path.rstrip("/").endswith("_search")
            ):
                raise YilianError(Category.INVALID, "the request has no body")
        return FhirRequest(method, path.strip("/"), query, headers, body, content_type)


def _accepts_json(accept: str) -> bool:
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in JSON_TYPES or media in ("*/*", "application/*", "") or media.endswith("+json"):
            return True
    return False


def response_for(resp: FhirResponse) -> dict[str, Any]:
    return {"status": resp.status, "headers": resp.headers}


def smart_configuration(fhir_base: str) -> dict[str, Any]:
    """``/.well-known/smart-configuration``: how clients get tokens here (SMART App Launch 2.0)."""
    root = fhir_base[: -len(PREFIX)] if fhir_base.endswith(PREFIX) else fhir_base
    return {
        "issuer": root,
        "token_endpoint": f"{root}/auth/token",
        "authorization_endpoint": f"{root}/auth/authorize",
        "token_endpoint_auth_methods_supported": [
            "private_key_jwt",
            "client_secret_basic",
            "client_secret_post",
        ],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384", "RS256", "ES256"],
        "grant_types_supported": ["client_credentials", "authorization_code"],
        "scopes_supported": [
            "system/*.cruds",
            "user/*.cruds",
            "patient/*.rs",
            "openid",
            "fhirUser",
            "launch/patient",
        ],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": [
            "client-confidential-asymmetric",
            "client-confidential-symmetric",
            "client-public",
            "launch-standalone",
            "context-standalone-patient",
            "permission-v1",
            "permission-v2",
            "permission-patient",
            "permission-user",
        ],
    }


def _client_ip(scope: Scope) -> str | None:
    headers = dict(scope["headers"])
    forwarded = headers.get(b"x-forwarded-for")
    if forwarded:
        return str(forwarded.decode("latin-1").split(",")[0].strip()[:64])
    client = scope.get("client")
    return str(client[0])[:64] if client else None
