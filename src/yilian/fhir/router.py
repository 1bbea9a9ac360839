"""Routing a FHIR RESTful request (method, path, query, headers, body) to its interaction.

The HTTP adapter and the batch/transaction processor both come through here, so an entry of
a transaction behaves exactly like the same request sent on its own.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from yilian.db import UnitOfWork
from yilian.fhir import bundles, outcomes
from yilian.fhir.interactions import create as create_i
from yilian.fhir.interactions import delete as delete_i
from yilian.fhir.interactions import everything as everything_i
from yilian.fhir.interactions import history as history_i
from yilian.fhir.interactions import patch as patch_i
from yilian.fhir.interactions import read as read_i
from yilian.fhir.interactions import search as search_i
from yilian.fhir.interactions import update as update_i
from yilian.fhir.interactions import validate as validate_i
from yilian.fhir.interactions import writes
from yilian.fhir.interactions.context import FhirContext
from yilian.fhir.interactions.outcome import Resource, WriteResult
from yilian.fhir.model import model
from yilian.fhir.store.repository import FastReader
from yilian.kernel.errors import Category, YilianError

READ_METHODS = frozenset({"GET", "HEAD"})


@dataclass
class FhirRequest:
    """One FHIR request. The ``body`` belongs to the request: interactions stamp ids and meta
    into it and rewrite references in place, so callers pass a fresh object."""

    method: str
    path: str  # relative to the FHIR base, without a leading slash: "Patient/1/_history/2"
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: Any = None  # parsed JSON
    content_type: str = "application/fhir+json"

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def segments(self) -> list[str]:
        return [s for s in self.path.strip("/").split("/") if s]


@dataclass
class FhirResponse:
    status: int
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    resource: Resource | None = None
    # The patients whose records the response shows (what the audit log says was accessed).
    patients: frozenset[str] = frozenset()

    def touched(self) -> frozenset[str]:
        if self.resource is not None and self.resource.patient_key:
            return self.patients | {self.resource.patient_key}
        return self.patients


def is_write(method: str, path: str) -> bool:
    """Whether the request changes data (SQLite then takes its write lock up front)."""
    method = method.upper()
    if method in READ_METHODS:
        return False
    segs = [s for s in path.strip("/").split("/") if s]
    # POSTs that only read: searches and read-only operations.
    return not (method == "POST" and segs and segs[-1] in ("_search", "$validate", "$everything", "$match"))


def http_date(us: int) -> str:
    return email.utils.formatdate(us / 1_000_000, usegmt=True)


def _version_header(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    try:
        return int(text)
    except ValueError:
        raise YilianError(
            Category.INVALID, f'{name} must be a version ETag like W/"3", not {value!r}'
        ) from None


def _prefer(req: FhirRequest, key: str) -> str | None:
    prefer = req.header("prefer")
    if not prefer:
        return None
    for part in prefer.split(";") + prefer.split(","):
        k, _, v = part.strip().partition("=")
        if k.strip() == key:
            return v.strip().strip('"')
    return None


def resource_headers(r: Resource, ctx: FhirContext, *, location: bool = False) -> dict[str, str]:
    headers = {"ETag": r.etag, "Last-Modified": http_date(r.last_updated)}
    if location:
        headers["Location"] = ctx.url_for(r.res_type, r.res_id, r.version)
    return headers


def _write_response(req: FhirRequest, ctx: FhirContext, result: WriteResult) -> FhirResponse:
    r = result.resource
    status = 201 if result.created else 200
    headers = resource_headers(r, ctx, location=result.created or req.method == "POST")
    ret = _prefer(req, "return") or "representation"
    if ret == "minimal":
        return FhirResponse(status, None, headers, r)
    if ret == "OperationOutcome":
        text = "created" if result.created else ("matched an existing resource" if result.noop else "updated")
        return FhirResponse(
            status, orjson.dumps(outcomes.information(f"{r.res_type}/{r.res_id} {text}")), headers, r
        )
    return FhirResponse(status, r.content, headers, r)


def _type(seg: str) -> str:
    if not model().is_resource_type(seg):
        raise YilianError(Category.NOT_FOUND, f"unknown resource type {seg!r}")
    return seg


def _query_string(req: FhirRequest) -> str:
    from urllib.parse import urlencode

    return urlencode([(k, v) for k, v in req.query if k not in ("_format", "_pretty")])


def _not_allowed(req: FhirRequest) -> YilianError:
    return YilianError(Category.NOT_ALLOWED, f"{req.method} is not allowed on /{req.path}")


_PLAIN_READ = re.compile(r"^[A-Z][A-Za-z]{1,63}/[A-Za-z0-9\-.]{1,64}$")
_CONDITIONAL_HEADERS = ("if-none-match", "if-modified-since", "prefer")


def fast_read(reader: FastReader, ctx: FhirContext, req: FhirRequest) -> FhirResponse | None:
    """A plain ``GET Type/id`` answered on the short read path; None when the request needs more."""
    if req.method not in READ_METHODS or not _PLAIN_READ.match(req.path):
        return None
    if any(k not in ("_format", "_pretty") for k, _ in req.query) or any(
        h in req.headers for h in _CONDITIONAL_HEADERS
    ):
        return None
    rtype, _, rid = req.path.partition("/")
    if rtype in ctx.settings.virtual_types:
        return None  # computed by another system (Person, AuditEvent): not in the resource table
    r = read_i.read_fast(reader, ctx, rtype, rid)
    return FhirResponse(200, r.content, resource_headers(r, ctx), r)


def dispatch(uow: UnitOfWork, ctx: FhirContext, req: FhirRequest) -> FhirResponse:
    """Run one request inside ``uow`` (the caller commits). Raises YilianError for failures."""
    method = req.method.upper()
    segs = req.segments
    strict = _prefer(req, "handling") == "strict"
    if not segs:
        if method == "POST":
            from yilian.fhir.interactions import transaction

            response: FhirResponse = transaction.process(uow, ctx, req.body, dispatcher=dispatch)
            return response
        if method in READ_METHODS:
            return _search(uow, ctx, req, None, req.query, strict)
        raise _not_allowed(req)
    head = segs[0]
    if head == "metadata" and len(segs) == 1:
        if method not in READ_METHODS:
            raise _not_allowed(req)
        from yilian.fhir.interactions import capabilities

        return FhirResponse(200, orjson.dumps(capabilities.capability_statement(ctx)))
    if head == "_history" and len(segs) == 1:
        return _history(uow, ctx, req, None, None)
    if head == "_search" and len(segs) == 1:
        if method != "POST":
            raise _not_allowed(req)
        return _search(uow, ctx, req, None, req.query, strict)
    if head.startswith("$"):
        sys_op = ctx.settings.operation(None, head[1:], instance=False)
        if sys_op is None or len(segs) != 1:
            raise YilianError(Category.UNSUPPORTED, f"system operation {head} is not supported")
        done: FhirResponse = sys_op.run(uow, ctx, req, None)
        return done
    virtual = ctx.settings.virtual_types.get(head)
    if virtual is not None:
        if method not in READ_METHODS and not (method == "POST" and segs[-1] == "_search"):
            raise YilianError(
                Category.NOT_ALLOWED,
                f"{head} is written by the platform itself; it can only be read and searched",
            )
        if len(segs) == 1 or (len(segs) == 2 and segs[1] == "_search"):
            found: FhirResponse = virtual.search(uow, ctx, req.query, path=head)
            return found
        if len(segs) == 2:
            one: FhirResponse = virtual.read(uow, ctx, segs[1])
            return one
        raise YilianError(Category.NOT_FOUND, f"no route for {method} /{req.path}")
    rtype = _type(head)
    if len(segs) == 1:
        if method in READ_METHODS:
            return _search(uow, ctx, req, rtype, req.query, strict)
        if method == "POST":
            result = create_i.create(
                uow, ctx, req.body, res_type=rtype, if_none_exist=req.header("if-none-exist")
            )
            writes.finish(uow, ctx)
            return _write_response(req, ctx, result)
        criteria = _query_string(req)
        if not criteria:
            # The interaction exists (a conditional update or delete); the request lacks what it
            # needs, so it is a bad request (400), not a method the type does not allow (405).
            raise YilianError(
                Category.INVALID,
                f"{method} on /{rtype} needs search criteria (a conditional {method.lower()})",
            )
        if method == "PUT":
            result = update_i.conditional_update(
                uow,
                ctx,
                req.body,
                res_type=rtype,
                criteria=criteria,
                if_match=_version_header(req.header("if-match"), "If-Match"),
            )
            writes.finish(uow, ctx)
            return _write_response(req, ctx, result)
        if method == "DELETE":
            deleted = delete_i.conditional_delete(uow, ctx, res_type=rtype, criteria=criteria)
            writes.finish(uow, ctx)
            return _deleted(deleted, ctx)
        if method == "PATCH":
            result = patch_i.conditional_patch(
                uow, ctx, req.body, res_type=rtype, criteria=criteria, json_patch=_is_json_patch(req)
            )
            writes.finish(uow, ctx)
            return _write_response(req, ctx, result)
        raise _not_allowed(req)
    second = segs[1]
    if second == "_search" and len(segs) == 2:
        if method != "POST":
            raise _not_allowed(req)
        return _search(uow, ctx, req, rtype, req.query, strict)
    if second == "_history" and len(segs) == 2:
        return _history(uow, ctx, req, rtype, None)
    if second.startswith("$"):
        return _type_operation(uow, ctx, req, rtype, second)
    rid = second
    if len(segs) == 2:
        return _instance(uow, ctx, req, method, rtype, rid)
    third = segs[2]
    if third == "_history":
        if len(segs) == 3:
            return _history(uow, ctx, req, rtype, rid)
        if len(segs) == 4 and method in READ_METHODS:
            r = read_i.vread(uow, ctx, rtype, rid, segs[3])
            return FhirResponse(200, r.content, resource_headers(r, ctx), r)
        raise _not_allowed(req)
    if third.startswith("$") and len(segs) == 3:
        return _instance_operation(uow, ctx, req, rtype, rid, third)
    if len(segs) == 3 and method in READ_METHODS:
        # Compartment search: Patient/123/Observation
        ctype = _type(third) if third != "*" else None
        if rtype not in ("Patient", "Encounter", "Practitioner", "RelatedPerson", "Device"):
            raise YilianError(Category.NOT_FOUND, f"{rtype} is not a compartment")
        return _search(
            uow, ctx, req, ctype, req.query, strict, compartment=(rtype, rid), path=f"{rtype}/{rid}/{third}"
        )
    raise YilianError(Category.NOT_FOUND, f"no route for {method} /{req.path}")


def _is_json_patch(req: FhirRequest) -> bool:
    return req.content_type.split(";")[0].strip().lower() == patch_i.JSON_PATCH


def _modified_since(value: str | None) -> int | None:
    """An If-Modified-Since value in seconds since the epoch, or None to ignore it.

    The header carries an HTTP date (``Sat, 05 Dec 2026 08:00:00 GMT``); a transaction entry's
    ``request.ifModifiedSince`` a FHIR instant. A value that is neither is ignored, as RFC 9110
    (13.1.3) says, and the resource is sent; a date without a zone is taken as UTC.
    """
    if not value or not value.strip():
        return None
    parsed: dt.datetime | None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:
        return int(parsed.timestamp())
    except (OverflowError, ValueError, OSError):
        return None


def _instance(
    uow: UnitOfWork, ctx: FhirContext, req: FhirRequest, method: str, rtype: str, rid: str
) -> FhirResponse:
    if method in READ_METHODS:
        r = read_i.read(uow, ctx, rtype, rid)
        inm = req.header("if-none-match")
        if inm is not None and inm.strip() != "*" and _version_header(inm, "If-None-Match") == r.version:
            return FhirResponse(304, None, resource_headers(r, ctx), r)
        since = _modified_since(req.header("if-modified-since"))
        if since is not None and r.last_updated // 1_000_000 <= since:
            return FhirResponse(304, None, resource_headers(r, ctx), r)
        return FhirResponse(200, r.content, resource_headers(r, ctx), r)
    if method == "PUT":
        result = update_i.update(
            uow,
            ctx,
            req.body,
            res_type=rtype,
            res_id=rid,
            if_match=_version_header(req.header("if-match"), "If-Match"),
        )
        writes.finish(uow, ctx)
        return _write_response(req, ctx, result)
    if method == "DELETE":
        if req.header("if-match"):
            current = read_i.read(uow, ctx, rtype, rid)
            expected = _version_header(req.header("if-match"), "If-Match")
            if current.version != expected:
                raise YilianError(
                    Category.PRECONDITION_FAILED,
                    f"If-Match expected version {expected} but {rtype}/{rid} is at version {current.version}",
                )
        deleted = delete_i.delete(uow, ctx, res_type=rtype, res_id=rid)
        writes.finish(uow, ctx)
        return _deleted(deleted, ctx)
    if method == "PATCH":
        result = patch_i.patch(
            uow,
            ctx,
            req.body,
            res_type=rtype,
            res_id=rid,
            json_patch=_is_json_patch(req),
            if_match=_version_header(req.header("if-match"), "If-Match"),
        )
        writes.finish(uow, ctx)
        return _write_response(req, ctx, result)
    raise _not_allowed(req)


def _deleted(deleted: Resource | None, ctx: FhirContext) -> FhirResponse:
    if deleted is None:
        return FhirResponse(204)
    return FhirResponse(204, None, {"ETag": deleted.etag}, deleted)


def _search(
    uow: UnitOfWork,
    ctx: FhirContext,
    req: FhirRequest,
    rtype: str | None,
    pairs: list[tuple[str, str]],
    strict: bool,
    *,
    compartment: tuple[str, str] | None = None,
    path: str | None = None,
) -> FhirResponse:
    result = search_i.search(uow, ctx, rtype, pairs, strict=strict, compartment=compartment)
    body = bundles.searchset(
        ctx,
        path=path if path is not None else (rtype or ""),
        used=result.request.used,
        matches=result.matches,
        included=result.included,
        total=result.total,
        next_cursor=result.next_cursor,
        summary=result.request.summary,
        elements=result.request.elements,
        outcome=outcomes.warnings(result.warnings) if result.warnings else None,
    )
    return FhirResponse(200, body, patients=_patients_of(result.matches, result.included))


def _patients_of(*groups: list[Resource]) -> frozenset[str]:
    return frozenset(r.patient_key for g in groups for r in g if r.patient_key)


def _history(
    uow: UnitOfWork, ctx: FhirContext, req: FhirRequest, rtype: str | None, rid: str | None
) -> FhirResponse:
    if req.method.upper() not in READ_METHODS:
        raise _not_allowed(req)
    page = history_i.history(
        uow,
        res_type=rtype,
        res_id=rid,
        pairs=req.query,
        default_count=ctx.settings.default_page_size,
        policy=ctx.policy,
    )
    path = "/".join(p for p in (rtype, rid, "_history") if p)
    body = bundles.history_bundle(
        ctx, path=path, used=page.used, entries=page.entries, total=page.total, next_cursor=page.next_cursor
    )
    return FhirResponse(200, body, patients=_patients_of(page.entries))


def _type_operation(uow: UnitOfWork, ctx: FhirContext, req: FhirRequest, rtype: str, op: str) -> FhirResponse:
    provided = ctx.settings.operation(rtype, op[1:], instance=False)
    if provided is not None:
        done: FhirResponse = provided.run(uow, ctx, req, None)
        return done
    if op == "$validate":
        if req.method.upper() != "POST":
            raise _not_allowed(req)
        return FhirResponse(200, orjson.dumps(validate_i.validate(req.body, rtype)))
    raise YilianError(Category.UNSUPPORTED, f"operation {op} is not supported on {rtype}")


def _instance_operation(
    uow: UnitOfWork, ctx: FhirContext, req: FhirRequest, rtype: str, rid: str, op: str
) -> FhirResponse:
    provided = ctx.settings.operation(rtype, op[1:], instance=True)
    if provided is not None:
        done: FhirResponse = provided.run(uow, ctx, req, rid)
        return done
    if op == "$everything" and rtype == "Patient":
        if req.method.upper() not in ("GET", "POST"):
            raise _not_allowed(req)
        page = everything_i.everything(uow, ctx, rid, req.query)
        body = bundles.searchset(
            ctx,
            path=f"Patient/{rid}/$everything",
            used=page.used,
            matches=page.matches,
            included=page.included,
            total=page.total,
            next_cursor=page.next_cursor,
        )
        return FhirResponse(200, body, patients=_patients_of(page.matches, page.included))
    if op == "$validate":
        if req.method.upper() != "POST":
            raise _not_allowed(req)
        read_i.check_type(rtype)
        return FhirResponse(200, orjson.dumps(validate_i.validate(req.body, rtype, res_id=rid)))
    raise YilianError(Category.UNSUPPORTED, f"operation {op} is not supported on {rtype}/{{id}}")
