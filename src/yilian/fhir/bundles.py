"""Building response Bundles (searchset, history, batch/transaction-response) from stored bytes.

Stored resources are spliced into the Bundle as the bytes they were saved as; only
``_summary``/``_elements`` make us parse and re-serialize one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import orjson

from yilian.fhir.interactions.context import FhirContext
from yilian.fhir.interactions.outcome import Resource
from yilian.fhir.model import model
from yilian.fhir.search.values import us_to_instant
from yilian.kernel import clock
from yilian.kernel.ids import new_id

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
MANDATORY_TOP = ("resourceType", "id", "meta")


def _dump(value: Any) -> bytes:
    return orjson.dumps(value)


def _tag_subsetted(resource: dict[str, Any]) -> None:
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"]
    tags.append(dict(SUBSETTED))
    meta["tag"] = tags
    resource["meta"] = meta


def summarize(content: bytes, summary: str | None, elements: list[str] | None) -> bytes:
    """Apply ``_summary`` / ``_elements`` to one resource."""
    if (summary in (None, "false")) and not elements:
        return content
    res: dict[str, Any] = orjson.loads(content)
    rtype = res.get("resourceType", "")
    struct = model().structure(rtype)
    if elements:
        keep = set(elements) | set(MANDATORY_TOP)
        if struct:
            keep |= {n for n, e in struct.elements.items() if e.min > 0}
        out = {}
        for key, val in res.items():
            base = key[1:] if key.startswith("_") else key
            name = _element_name(struct, base)
            if base in keep or name in keep:
                out[key] = val
        _tag_subsetted(out)
        return _dump(out)
    if summary == "data":
        res.pop("text", None)
        _tag_subsetted(res)
        return _dump(res)
    if summary == "text":
        out = {k: v for k, v in res.items() if k in ("resourceType", "id", "meta", "text")}
        if struct:
            for n, e in struct.elements.items():
                if e.min > 0 and n in res:
                    out[n] = res[n]
        _tag_subsetted(out)
        return _dump(out)
    # _summary=true: the elements marked isSummary (top level; children kept whole).
    out = {}
    for key, val in res.items():
        base = key[1:] if key.startswith("_") else key
        name = _element_name(struct, base)
        if key in MANDATORY_TOP or (struct and name in struct.elements and struct.elements[name].summary):
            out[key] = val
    _tag_subsetted(out)
    return _dump(out)


def _element_name(struct: Any, json_key: str) -> str:
    if struct is None:
        return json_key
    prop = struct.properties.get(json_key)
    return prop[0].name if prop else json_key


def _links(
    ctx: FhirContext, path: str, used: Sequence[tuple[str, str]], next_cursor: str | None
) -> list[dict[str, str]]:
    base = f"{ctx.base_url}/{path}" if path else ctx.base_url
    query = urlencode(list(used))
    # self is this page (with its cursor); first and next are the same query without it.
    links = [{"relation": "self", "url": f"{base}?{query}" if query else base}]
    unpaged = [(k, v) for k, v in used if k != "_cursor"]
    first_query = urlencode(unpaged)
    links.append({"relation": "first", "url": f"{base}?{first_query}" if first_query else base})
    if next_cursor:
        nq = urlencode([*unpaged, ("_cursor", next_cursor)])
        links.append({"relation": "next", "url": f"{base}?{nq}"})
    return links


def searchset(
    ctx: FhirContext,
    *,
    path: str,
    used: Sequence[tuple[str, str]],
    matches: Sequence[Resource],
    included: Sequence[Resource],
    total: int | None,
    next_cursor: str | None,
    summary: str | None = None,
    elements: list[str] | None = None,
    outcome: dict[str, Any] | None = None,
) -> bytes:
    head: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": us_to_instant(_now_us())},
        "type": "searchset",
    }
    if total is not None:
        head["total"] = total
    head["link"] = _links(ctx, path, used, next_cursor)
    parts: list[bytes] = []
    for r in matches:
        parts.append(_entry(ctx, r, b'{"mode":"match"}', summary, elements))
    for r in included:
        parts.append(_entry(ctx, r, b'{"mode":"include"}', summary, elements))
    if outcome is not None:
        parts.append(b'{"resource":' + _dump(outcome) + b',"search":{"mode":"outcome"}}')
    return _assemble(head, parts)


def _entry(
    ctx: FhirContext, r: Resource, search: bytes, summary: str | None, elements: list[str] | None
) -> bytes:
    assert r.content is not None
    content = summarize(r.content, summary, elements)
    return (
        b'{"fullUrl":'
        + _dump(ctx.url_for(r.res_type, r.res_id))
        + b',"resource":'
        + content
        + b',"search":'
        + search
        + b"}"
    )


def _assemble(head: dict[str, Any], entries: list[bytes]) -> bytes:
    body = _dump(head)
    if not entries:
        return body
    return body[:-1] + b',"entry":[' + b",".join(entries) + b"]}"


def history_bundle(
    ctx: FhirContext,
    *,
    path: str,
    used: Sequence[tuple[str, str]],
    entries: Sequence[Resource],
    total: int,
    next_cursor: str | None,
) -> bytes:
    head: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": us_to_instant(_now_us())},
        "type": "history",
        "total": total,
        "link": _links(ctx, path, used, next_cursor),
    }
    parts: list[bytes] = []
    for r in entries:
        method = r.method or ("DELETE" if r.deleted else "PUT")
        url = f"{r.res_type}/{r.res_id}" if method != "POST" else r.res_type
        request = _dump({"method": method, "url": url})
        status = b'"204 No Content"' if r.deleted else (b'"201 Created"' if r.version == 1 else b'"200 OK"')
        response = (
            b'{"status":'
            + status
            + b',"etag":'
            + _dump(r.etag)
            + b',"lastModified":'
            + _dump(r.last_updated_text)
            + b"}"
        )
        entry = b'{"fullUrl":' + _dump(ctx.url_for(r.res_type, r.res_id))
        if not r.deleted and r.content is not None:
            entry += b',"resource":' + r.content
        entry += b',"request":' + request + b',"response":' + response + b"}"
        parts.append(entry)
    return _assemble(head, parts)


def response_bundle(kind: str, entries: list[bytes]) -> bytes:
    head = {
        "resourceType": "Bundle",
        "id": new_id(),
        "type": kind,
        "meta": {"lastUpdated": us_to_instant(_now_us())},
    }
    return _assemble(head, entries)


def _now_us() -> int:
    from yilian.fhir.search.values import instant_to_us

    return instant_to_us(clock.now())
