"""The one adapter every system's JSON API (``/api/...``) goes through.

A route is a plain function ``handler(call) -> Reply`` that runs in one unit of work (the caller
owns the transaction: this module opens and commits it). Around it, every route gets the same
treatment, so no system can forget one:

- authentication (bearer token or portal session; 401 otherwise) and a scope check against the
  SMART-style permission the route declares (``("r", "Person")``…; 403 otherwise);
- the request body parsed as JSON into the route's pydantic model (400 with the field paths; a
  rule of the model with its own ``reason``, such as ``bad-amount``, gives that reason);
- every ``YilianError`` mapped to an RFC 9457 problem through the one category table, and any
  other exception turned into a 500 problem without a traceback reaching the client;
- one audit record per call, written in the same transaction as a change (so a change and its
  audit commit together) or through the group-commit writer for reads and refusals.

Every registration is also kept as a :class:`RouteSpec` (path, method, permission, body and reply
models, success status, the problem reasons it may answer): the OpenAPI document
(:mod:`yilian.api.openapi`) is generated from exactly these, so it cannot drift from the code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from yilian.api.auditing import agent_kind
from yilian.api.auth import Authenticator, headers_of
from yilian.api.problems import problem
from yilian.db import Database, UnitOfWork
from yilian.kernel.errors import Category, Issue, YilianError
from yilian.kernel.nul import refuse_nul
from yilian.security.audit import AuditRecord, AuditWriter, record
from yilian.security.principal import Principal
from yilian.security.scopes import Scopes

log = logging.getLogger(__name__)

B = TypeVar("B", bound=BaseModel)
DENIALS = frozenset({Category.FORBIDDEN, Category.UNAUTHENTICATED})
MAX_BODY = 8 * 1024 * 1024


@dataclass(frozen=True)
class Call(Generic[B]):
    """One request as a handler sees it: who, the path parameters, the query, the parsed body."""

    principal: Principal
    params: dict[str, str]
    query: dict[str, str]
    body: B | None
    headers: dict[str, str]
    raw_body: bytes = b""

    def require_body(self) -> B:
        if self.body is None:
            raise YilianError(Category.INVALID, "this request needs a JSON body")
        return self.body


@dataclass
class Reply:
    """What a handler returns: a JSON-able body, and what the audit record should say."""

    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    patients: Sequence[str] = ()  # the patients (FHIR Patient ids) the call touched
    entity: str | None = None  # what was accessed, e.g. "Person/…" or "Card/…"
    # The response body as bytes, sent as they are instead of ``body`` (a replayed idempotent reply
    # must be the first reply byte for byte, not a re-serialization of it).
    raw: bytes | None = None


@dataclass(frozen=True)
class Permission:
    """The SMART-style permission a route needs: ``("r", "Person")`` = read Person data."""

    letter: str  # c r u d s
    resource_type: str

    def allowed(self, scopes: Scopes) -> bool:
        return scopes.allows(self.letter, self.resource_type)


@dataclass(frozen=True)
class RouteSpec:
    """One registered route as the OpenAPI document describes it (see :mod:`yilian.api.openapi`)."""

    path: str
    method: str
    permission: Permission
    subtype: str
    summary: str
    body: type[BaseModel] | None = None
    reply: type[BaseModel] | None = None
    status: int = 200
    operator_only: bool = False
    query: tuple[tuple[str, str], ...] = ()  # (name, description)
    content_type: str | None = None  # a body that is not JSON (the card register's text/csv)
    idempotent: bool = False  # needs an Idempotency-Key header
    # The machine-readable ``reason`` codes its refusals may carry, with their category (→ status).
    reasons: tuple[tuple[str, Category], ...] = ()


def _action(method: str) -> str:
    return {"GET": "R", "POST": "C", "PUT": "U", "PATCH": "U", "DELETE": "D"}.get(method, "E")


class ApiRoutes:
    """Builds Starlette routes for one system's handlers, all sharing the adapter above."""

    def __init__(self, db: Database, authenticator: Authenticator, writer: AuditWriter | None) -> None:
        self.db = db
        self.authenticator = authenticator
        self.writer = writer
        self.specs: list[RouteSpec] = []

    def route(
        self,
        path: str,
        handler: Callable[[UnitOfWork, Call[Any]], Reply],
        *,
        method: str,
        permission: Permission,
        body: type[BaseModel] | None = None,
        subtype: str,
        check: Callable[[Principal], None] | None = None,
        reply: type[BaseModel] | None = None,
        status: int = 200,
        summary: str | None = None,
        query: dict[str, str] | None = None,
        content_type: str | None = None,
        idempotent: bool = False,
        reasons: Sequence[tuple[str, Category]] = (),
        changes: bool | None = None,
    ) -> Route:
        """``check`` is an extra access decision on the caller (e.g. operator-only), made after the
        scope check and before the body is read. The rest describe the route for the OpenAPI
        document: ``reply`` the model of a successful reply (sent with ``status``), ``summary``
        (default: the handler's docstring), ``query`` the query parameters it reads, ``content_type``
        a non-JSON body, ``idempotent`` whether it takes an Idempotency-Key, ``reasons`` its
        refusals' codes. ``changes=False`` marks a POST that computes and changes nothing (a
        pre-settlement): it runs in a read transaction and is audited as an execute ('E'), after
        it answers, like a read."""
        writes = method != "GET" if changes is None else changes
        doc = summary or (handler.__doc__ or "").strip().split("\n\n")[0]
        self.specs.append(
            RouteSpec(
                path=path,
                method=method,
                permission=permission,
                subtype=subtype,
                summary=" ".join(doc.split()) or subtype,
                body=body,
                reply=reply,
                status=status,
                operator_only=check is operator_only,
                query=tuple((query or {}).items()),
                content_type=content_type,
                idempotent=idempotent,
                reasons=tuple(reasons),
            )
        )

        async def endpoint(request: Request) -> Response:
            headers = headers_of(request.scope)
            principal: Principal | None = None
            base = AuditRecord(
                action=_action(method) if writes or method == "GET" else "E",
                subtype=subtype,
                agent_kind="system",
                agent_id="anonymous",
                query=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
                source_ip=request.client.host if request.client else None,
                user_agent=headers.get("user-agent"),
            )
            try:
                principal = self.authenticator.principal(headers)
                if not permission.allowed(principal.scopes):
                    raise YilianError(
                        Category.FORBIDDEN,
                        f"the token's scopes do not allow '{permission.letter}' on {permission.resource_type}",
                    )
                if check is not None:
                    check(principal)
                refuse_nul(
                    "the request",
                    [request.url.path, *(v for pair in request.query_params.multi_items() for v in pair)],
                )
                raw = await request.body()
                if len(raw) > MAX_BODY:
                    raise YilianError(Category.INVALID, f"the request body is larger than {MAX_BODY} bytes")
                parsed = _parse(body, raw) if body is not None else None
                call: Call[Any] = Call(
                    principal=principal,
                    params={k: str(v) for k, v in request.path_params.items()},
                    query=dict(request.query_params),
                    body=parsed,
                    headers=headers,
                    raw_body=raw,
                )
                audit = _with_principal(base, principal)
                reply = await run_in_threadpool(self._run, handler, call, audit if writes else None)
            except YilianError as err:
                await self._audit_refusal(base, principal, err)
                return problem(err, instance=request.url.path)
            except Exception:  # a bug must not leak a traceback (or a patient's data) to the caller
                log.exception("unhandled error in %s %s", method, path)
                internal = YilianError(
                    Category.INTERNAL, "the server could not complete the request; it has been logged"
                )
                return problem(internal, instance=request.url.path)
            if not writes and self.writer is not None:
                await self.writer.record(_finished(_with_principal(base, principal), reply))
            return Response(
                reply.raw
                if reply.raw is not None
                else orjson.dumps(reply.body, option=orjson.OPT_NON_STR_KEYS),
                status_code=reply.status,
                media_type="application/json",
                headers=reply.headers,
            )

        return Route(path, endpoint, methods=[method])

    def _run(
        self, handler: Callable[[UnitOfWork, Call[Any]], Reply], call: Call[Any], audit: AuditRecord | None
    ) -> Reply:
        with UnitOfWork(self.db, write=audit is not None) as uow:
            reply = handler(uow, call)
            if audit is not None:
                record(uow, _finished(audit, reply))
            return reply

    async def _audit_refusal(self, base: AuditRecord, principal: Principal | None, err: YilianError) -> None:
        if self.writer is None:
            return
        rec = _with_principal(base, principal) if principal is not None else base
        denied = err.category in DENIALS
        await self.writer.record(
            _replace(
                rec,
                subtype="access-denied" if denied else rec.subtype,
                outcome=8 if err.category is Category.INTERNAL else 4,
                outcome_desc=err.message[:500],
                flagged=True if denied else None,
            )
        )


def _parse(model: type[BaseModel], raw: bytes) -> BaseModel:
    if not raw.strip():
        raise YilianError(Category.INVALID, "this request needs a JSON body")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise YilianError(Category.INVALID, f"the body is not valid JSON: {exc}") from None
    refuse_nul("the body", [data])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        issues = [
            Issue(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}",
                expression=(".".join(str(p) for p in e["loc"]),),
            )
            for e in errors
        ]
        # A rule of the body that names its own refusal (``body_rule``): the first one broken
        # gives the problem its reason and its detail; every other broken rule is still listed.
        for error, issue in zip(errors, issues, strict=True):
            reason = (error.get("ctx") or {}).get("reason")
            if isinstance(reason, str):
                raise BodyRefusal(reason, issue.message, issues=issues) from None
        raise YilianError(Category.INVALID, "the request body is not valid", issues=issues) from None


class BodyRefusal(YilianError):
    """A body broke a rule that has its own machine-readable ``reason`` (``bad-amount``): the
    same refusal, with the same reason, as the system's own check would give further in."""

    def __init__(self, reason: str, message: str, *, issues: Sequence[Issue]) -> None:
        super().__init__(Category.INVALID, message, issues=issues)
        self.reason = reason


def body_rule(reason: str, message: str, **context: Any) -> PydanticCustomError:
    """The error a body model's validator raises for a rule with its own ``reason``: the
    adapter answers it as :class:`BodyRefusal` (400, ``reason`` in the problem)."""
    return PydanticCustomError(reason.replace("-", "_"), message, {**context, "reason": reason})


def _with_principal(base: AuditRecord, principal: Principal) -> AuditRecord:
    return _replace(
        base,
        agent_kind=agent_kind(principal),
        agent_id=principal.subject[:128] or "anonymous",
        org_id=principal.org_id,
        purpose=principal.purpose,
    )


def _finished(rec: AuditRecord, reply: Reply) -> AuditRecord:
    return _replace(
        rec,
        outcome=0 if reply.status < 400 else 4,
        patient_keys=tuple(reply.patients),
        entity=reply.entity,
    )


def _replace(rec: AuditRecord, **changes: Any) -> AuditRecord:
    return replace(rec, **changes)


def operator_only(principal: Principal) -> None:
    """Region-wide actions (merging persons, clearing a day) belong to the platform operator."""
    if not principal.is_operator:
        raise YilianError(
            Category.FORBIDDEN,
            "only the platform operator (a client or user without an institution) may do this",
        )
