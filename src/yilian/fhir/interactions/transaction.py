"""batch and transaction Bundles.

A transaction runs every entry in the caller's unit of work: any failure raises and the caller
rolls back all of it. Entries are processed in the order the specification sets (DELETE, POST,
PUT/PATCH, GET/HEAD) whatever order they were written in; ids for created resources are chosen
first so that ``urn:uuid:`` and conditional references can be rewritten before anything is
written, and reference integrity is checked once, at the end. A batch runs each entry in its
own savepoint: one entry's failure is reported in its response and does not affect the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from yilian.db import UnitOfWork
from yilian.fhir import bundles, outcomes
from yilian.fhir.interactions import create as create_i
from yilian.fhir.interactions import update as update_i
from yilian.fhir.interactions import writes
from yilian.fhir.interactions.context import FhirContext
from yilian.fhir.interactions.outcome import WriteResult
from yilian.fhir.interactions.search import find
from yilian.fhir.model import model
from yilian.kernel.errors import Category, Issue, YilianError
from yilian.kernel.ids import new_id

METHOD_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}

Dispatcher = Callable[..., Any]


def _bad(message: str, path: str | None = None) -> YilianError:
    return YilianError(Category.INVALID, message, issues=[Issue(message, (path,) if path else ())])


def _entry_error(index: int, method: str, url: str, err: YilianError) -> YilianError:
    prefix = f"Bundle.entry[{index}] ({method} {url}): "
    issues = [
        Issue(
            prefix + i.message,
            tuple(
                f"Bundle.entry[{index}].resource.{e.split('.', 1)[1]}" if "." in e else e
                for e in i.expression
            )
            or (f"Bundle.entry[{index}]",),
            i.severity,
            i.code,
        )
        for i in err.issues
    ]
    return YilianError(err.category, prefix + err.message, issues=issues)


def _check_shape(body: Any, ctx: FhirContext) -> tuple[str, list[dict[str, Any]]]:
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise _bad("POST to the FHIR base takes a Bundle of type batch or transaction")
    kind = body.get("type")
    if kind is None:
        raise _bad(
            "the Bundle has no type; POST to the FHIR base takes type batch or transaction", "Bundle.type"
        )
    if kind not in ("batch", "transaction"):
        raise _bad(
            f"a Bundle of type {kind!r} cannot be processed here: POST it to /Bundle to store it, "
            "or send a batch or transaction",
            "Bundle.type",
        )
    entries = body.get("entry") or []
    if not isinstance(entries, list):
        raise _bad("Bundle.entry must be an array", "Bundle.entry")
    if len(entries) > ctx.settings.max_bundle_entries:
        raise YilianError(
            Category.TOO_LARGE,
            f"the Bundle has {len(entries)} entries; at most {ctx.settings.max_bundle_entries} are accepted",
        )
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise _bad(f"Bundle.entry[{i}] is not an object", f"Bundle.entry[{i}]")
        req = e.get("request")
        if not isinstance(req, dict):
            raise _bad(f"Bundle.entry[{i}] has no request", f"Bundle.entry[{i}].request")
        method = req.get("method")
        if method not in METHOD_ORDER:
            raise _bad(
                f"Bundle.entry[{i}].request.method {method!r} is not one of GET HEAD POST PUT PATCH DELETE",
                f"Bundle.entry[{i}].request.method",
            )
        if not isinstance(req.get("url"), str) or not req["url"].strip():
            raise _bad(f"Bundle.entry[{i}].request.url is missing", f"Bundle.entry[{i}].request.url")
        if method in ("POST", "PUT") and not isinstance(e.get("resource"), dict):
            raise _bad(f"Bundle.entry[{i}] ({method}) has no resource", f"Bundle.entry[{i}].resource")
    return kind, entries


def _relative(url: str, ctx: FhirContext) -> tuple[str, list[tuple[str, str]]]:
    """Entry URL -> (path relative to the base, query pairs)."""
    text = url.strip()
    if text.startswith(ctx.base_url):
        text = text[len(ctx.base_url) :]
    elif text.startswith(("http://", "https://")):
        raise _bad(f"request.url {url!r} is not on this server")
    parts = urlsplit(text)
    return parts.path.strip("/"), parse_qsl(parts.query, keep_blank_values=True)


def process(uow: UnitOfWork, ctx: FhirContext, body: Any, *, dispatcher: Dispatcher) -> Any:
    from yilian.fhir.router import FhirResponse

    kind, entries = _check_shape(body, ctx)
    if kind == "batch":
        out = [_batch_entry(uow, ctx, i, e, dispatcher) for i, e in enumerate(entries)]
        return FhirResponse(200, bundles.response_bundle("batch-response", out))
    return FhirResponse(
        200, bundles.response_bundle("transaction-response", _transaction(uow, ctx, entries, dispatcher))
    )


def _request_of(ctx: FhirContext, entry: dict[str, Any], body: Any) -> Any:
    from yilian.fhir.router import FhirRequest

    req = entry["request"]
    path, query = _relative(req["url"], ctx)
    headers: dict[str, str] = {}
    for field, header in (
        ("ifMatch", "if-match"),
        ("ifNoneMatch", "if-none-match"),
        ("ifNoneExist", "if-none-exist"),
        ("ifModifiedSince", "if-modified-since"),
    ):
        if isinstance(req.get(field), str):
            headers[header] = req[field]
    content_type = "application/fhir+json"
    if (
        req["method"] == "PATCH"
        and isinstance(entry.get("resource"), dict)
        and entry["resource"].get("resourceType") == "Binary"
    ):
        # JSON Patch travels in a Binary (contentType application/json-patch+json, data base64).
        import base64

        binary = entry["resource"]
        content_type = binary.get("contentType", "")
        try:
            body = orjson.loads(base64.b64decode(binary.get("data", "")))
        except (ValueError, orjson.JSONDecodeError):
            raise _bad("the PATCH entry's Binary does not hold a JSON Patch document") from None
    return FhirRequest(req["method"], path, query, headers, body, content_type)


def _response_entry(resp: Any, ctx: FhirContext) -> bytes:
    response: dict[str, Any] = {"status": outcomes.status_line(resp.status)}
    r = resp.resource
    if r is not None:
        if (resp.status in (200, 201) and resp.headers.get("Location")) or resp.status == 201:
            response["location"] = f"{r.res_type}/{r.res_id}/_history/{r.version}"
        response["etag"] = r.etag
        response["lastModified"] = r.last_updated_text
    entry = b"{"
    if r is not None and not r.deleted:
        entry += b'"fullUrl":' + orjson.dumps(ctx.url_for(r.res_type, r.res_id)) + b","
    if resp.body is not None:
        entry += b'"resource":' + resp.body + b","
    entry += b'"response":' + orjson.dumps(response) + b"}"
    return entry


def _batch_entry(
    uow: UnitOfWork, ctx: FhirContext, i: int, entry: dict[str, Any], dispatcher: Dispatcher
) -> bytes:
    req = entry["request"]
    try:
        with writes.savepoint(uow) as rollback:
            try:
                resp = dispatcher(uow, ctx, _request_of(ctx, entry, entry.get("resource")))
            except YilianError:
                rollback()
                raise
        return _response_entry(resp, ctx)
    except YilianError as err:
        status = outcomes.status_of(err.category)
        oo = outcomes.outcome(_entry_error(i, req["method"], req["url"], err))
        return b'{"response":' + orjson.dumps({"status": outcomes.status_line(status), "outcome": oo}) + b"}"


def _rewrite(node: Any, mapping: dict[str, str]) -> Any:
    if isinstance(node, dict):
        for key, val in node.items():
            if key == "reference" and isinstance(val, str) and val in mapping:
                node[key] = mapping[val]
            elif isinstance(val, (dict, list)):
                _rewrite(val, mapping)
    elif isinstance(node, list):
        for item in node:
            _rewrite(item, mapping)
    return node


def _conditional_refs(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        for key, val in node.items():
            if (
                key == "reference"
                and isinstance(val, str)
                and "?" in val
                and not val.startswith(("http", "urn:"))
            ):
                out.add(val)
            elif isinstance(val, (dict, list)):
                _conditional_refs(val, out)
    elif isinstance(node, list):
        for item in node:
            _conditional_refs(item, out)


def _claim(targets_seen: dict[str, int], key: str, i: int) -> None:
    """Entry ``i`` deletes, writes or (by a conditional create that matched) names ``key``:
    refused if another entry already does (FHIR R4 transaction rules: resolved identities,
    conditional ones included, must not overlap)."""
    if key in targets_seen:
        raise YilianError(
            Category.INVALID, f"{key} is written by more than one entry (also entry {targets_seen[key]})"
        )
    targets_seen[key] = i


def _transaction(
    uow: UnitOfWork, ctx: FhirContext, entries: list[dict[str, Any]], dispatcher: Dispatcher
) -> list[bytes]:
    n = len(entries)
    order = sorted(range(n), key=lambda i: (METHOD_ORDER[entries[i]["request"]["method"]], i))
    # The Bundle belongs to this request (parsed from its body): entries are rewritten in place.
    bodies: list[Any] = [e.get("resource") for e in entries]
    results: list[bytes | None] = [None] * n
    mapping: dict[str, str] = {}
    assigned: dict[int, str] = {}  # entry -> id to write (POST, conditional PUT)
    existing_match: dict[int, WriteResult] = {}
    targets_seen: dict[str, int] = {}

    def fail(i: int, err: YilianError) -> YilianError:
        req = entries[i]["request"]
        return _entry_error(i, req["method"], req["url"], err)

    with writes.deferred_checks(uow):
        # 1. Deletes first.
        for i in order:
            if entries[i]["request"]["method"] != "DELETE":
                continue
            try:
                resp = dispatcher(uow, ctx, _request_of(ctx, entries[i], None))
                path, query = _relative(entries[i]["request"]["url"], ctx)
            except YilianError as err:
                raise fail(i, err) from None
            results[i] = _response_entry(resp, ctx)
            if not query and path.count("/") == 1:
                # What an entry deletes no other entry may write (the spec: identities must
                # not overlap across deletes, creates and updates).
                targets_seen.setdefault(path, i)

        # 2. Decide the identity of every created or conditionally updated resource.
        for i in order:
            e = entries[i]
            method = e["request"]["method"]
            full_url = e.get("fullUrl")
            try:
                if method == "POST":
                    path, _q = _relative(e["request"]["url"], ctx)
                    rtype = path.split("/")[0]
                    if not model().is_resource_type(rtype) or "/" in path:
                        raise YilianError(
                            Category.INVALID, f"POST in a transaction goes to a resource type, not {path!r}"
                        )
                    ine = e["request"].get("ifNoneExist")
                    rid = new_id()
                    if isinstance(ine, str) and ine:
                        matches = find(uow, ctx, rtype, create_i.normalize_criteria(ine))
                        if len(matches) > 1:
                            raise YilianError(
                                Category.PRECONDITION_FAILED,
                                f"ifNoneExist {ine!r} matches more than one {rtype}",
                            )
                        if matches:
                            existing_match[i] = WriteResult(matches[0], created=False, noop=True)
                            rid = matches[0].res_id
                            _claim(targets_seen, f"{rtype}/{rid}", i)
                    assigned[i] = rid
                    if isinstance(full_url, str) and full_url:
                        mapping[full_url] = f"{rtype}/{rid}"
                elif method in ("PUT", "PATCH"):
                    path, query = _relative(e["request"]["url"], ctx)
                    segs = path.split("/")
                    rtype = segs[0]
                    if not model().is_resource_type(rtype):
                        raise YilianError(Category.NOT_FOUND, f"unknown resource type {rtype!r}")
                    if len(segs) == 1 and query:
                        crit = create_i.normalize_criteria("&".join(f"{k}={v}" for k, v in query))
                        matches = find(uow, ctx, rtype, crit)
                        if len(matches) > 1:
                            raise YilianError(
                                Category.PRECONDITION_FAILED,
                                f"conditional {method} matches more than one {rtype}",
                            )
                        if matches:
                            rid = matches[0].res_id
                        elif method == "PATCH":
                            raise YilianError(Category.NOT_FOUND, f"conditional PATCH matched no {rtype}")
                        else:
                            body = bodies[i]
                            rid = str(body["id"]) if isinstance(body, dict) and body.get("id") else new_id()
                        assigned[i] = rid
                    elif len(segs) == 2:
                        rid = segs[1]
                    else:
                        raise YilianError(
                            Category.INVALID, f"{method} goes to Type/id or Type?criteria, not {path!r}"
                        )
                    key = f"{rtype}/{rid}"
                    _claim(targets_seen, key, i)
                    if isinstance(full_url, str) and full_url:
                        mapping[full_url] = key
            except YilianError as err:
                raise fail(i, err) from None

        # 3. Conditional references (Patient?identifier=…) resolve to exactly one resource.
        conditional: set[str] = set()
        for body in bodies:
            _conditional_refs(body, conditional)
        for ref in sorted(conditional):
            rtype, _, crit = ref.partition("?")
            if not model().is_resource_type(rtype):
                raise _bad(f"conditional reference {ref!r} names unknown type {rtype!r}")
            matches = find(uow, ctx, rtype, crit)
            if len(matches) != 1:
                raise YilianError(
                    Category.PRECONDITION_FAILED,
                    f"conditional reference {ref!r} matched {len(matches) if matches else 'no'} resources; it must match exactly one",
                )
            mapping[ref] = f"{rtype}/{matches[0].res_id}"
        for body in bodies:
            _rewrite(body, mapping)

        # 4. Creates, then updates and patches, then reads.
        for i in order:
            e = entries[i]
            method = e["request"]["method"]
            if method == "DELETE":
                continue
            try:
                if method == "POST":
                    path, _q = _relative(e["request"]["url"], ctx)
                    rtype = path
                    if i in existing_match:
                        result = existing_match[i]
                    else:
                        ine = e["request"].get("ifNoneExist")
                        result = create_i.create(
                            uow, ctx, bodies[i], res_type=rtype, if_none_exist=ine or None, res_id=assigned[i]
                        )
                    req = _request_of(ctx, e, bodies[i])
                    from yilian.fhir.router import _write_response

                    resp = _write_response(req, ctx, result)
                elif method == "PUT" and i in assigned:
                    path, _q = _relative(e["request"]["url"], ctx)
                    body = bodies[i]
                    if isinstance(body, dict):
                        body["id"] = assigned[i]
                    result = update_i.update(uow, ctx, body, res_type=path, res_id=assigned[i])
                    from yilian.fhir.router import _write_response

                    resp = _write_response(_request_of(ctx, e, body), ctx, result)
                elif method == "PATCH" and i in assigned:
                    req = _request_of(ctx, e, bodies[i])
                    req.path = f"{req.path}/{assigned[i]}"
                    req.query = []
                    resp = dispatcher(uow, ctx, req)
                else:
                    resp = dispatcher(uow, ctx, _request_of(ctx, e, bodies[i]))
            except YilianError as err:
                raise fail(i, err) from None
            results[i] = _response_entry(resp, ctx)
    try:
        writes.finish(uow, ctx)
    except YilianError as err:
        raise YilianError(err.category, "transaction failed: " + err.message, issues=err.issues) from None
    return [r for r in results if r is not None]
