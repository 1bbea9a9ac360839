"""Extracting search-index rows from a resource.

For each resource type the parameters' FHIRPath expressions are compiled once; a resource is
evaluated against them and every value becomes rows for the ``idx_*`` table of the parameter's
type. The same conversions (``values.py``) normalise search input, so stored and searched
values compare like with like.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from yilian.fhir.fhirpath import CompiledPath, DirectPath, TypedValue, compile_path, direct_path
from yilian.fhir.model import binding_systems, model
from yilian.fhir.search.registry import SearchParam, params_for, split_union
from yilian.fhir.search.values import MAX_US, MIN_US, date_range, fold, fold_unbounded

Row = dict[str, Any]

QUANTITY_TYPES = frozenset(
    {"Quantity", "Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity"}
)
DATE_TYPES = frozenset({"date", "dateTime", "instant"})
URI_TYPES = frozenset({"uri", "url", "canonical", "oid", "uuid", "id"})
STRING_PRIMITIVES = frozenset({"string", "markdown", "code", "id", "uri", "url", "canonical", "oid", "uuid"})
_TAGS = re.compile(r"<[^>]+>")
_REF = re.compile(
    r"^(?:(?P<base>.*?)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/(?P<vid>[A-Za-z0-9\-.]{1,64}))?$"
)


@dataclass(frozen=True, slots=True)
class ParsedReference:
    type: str | None
    id: str | None
    version: str | None
    url: str | None  # set when the reference is not to a resource on this server


def parse_reference(ref: str, base_url: str | None = None) -> ParsedReference:
    """``Patient/1``, ``Patient/1/_history/2``, ``http://this-server/fhir/Patient/1`` -> local type and id.

    Anything else (another server's URL, a canonical, ``urn:``) is kept as ``url``.
    """
    if ref.startswith("#") or ref.startswith("urn:"):
        return ParsedReference(None, None, None, ref)
    m = _REF.match(ref)
    if m and model().is_resource_type(m["type"]):
        base = m["base"]
        if not base or (base_url is not None and base.rstrip("/") == base_url.rstrip("/")):
            return ParsedReference(m["type"], m["id"], m["vid"], None)
        if base_url is None and not base.startswith(("http://", "https://")):
            return ParsedReference(m["type"], m["id"], m["vid"], None)
    return ParsedReference(None, None, None, ref)


# --- value conversions, one per index table ------------------------------------------------


def string_values(tv: TypedValue) -> Iterator[str]:
    v, t = tv.value, tv.type
    if isinstance(v, str):
        yield v
    elif t == "HumanName" and isinstance(v, dict):
        family = v.get("family")
        given = v.get("given") or []
        if family:
            yield family
        yield from (g for g in given if isinstance(g, str))
        yield from (p for p in v.get("prefix") or [] if isinstance(p, str))
        yield from (s for s in v.get("suffix") or [] if isinstance(s, str))
        if v.get("text"):
            yield v["text"]
        if family and given and not family.isascii():
            # Chinese names are written family-then-given without a space: 张 + 伟 -> 张伟.
            yield family + "".join(g for g in given if isinstance(g, str))
    elif t == "Address" and isinstance(v, dict):
        yield from (line for line in v.get("line") or [] if isinstance(line, str))
        for key in ("city", "district", "state", "postalCode", "country", "text"):
            if isinstance(v.get(key), str):
                yield v[key]
    elif isinstance(v, dict):
        yield from _strings(v)


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, val in node.items():
            if key not in ("extension", "id", "url", "system", "reference"):
                yield from _strings(val)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def token_rows(tv: TypedValue) -> Iterator[tuple[str | None, str | None, str | None, str | None, str | None]]:
    """(system, code, text, type_system, type_code) for each token a value carries."""
    v, t = tv.value, tv.type
    if isinstance(v, bool):
        yield None, "true" if v else "false", None, None, None
    elif isinstance(v, str):
        yield None, v, None, None, None
    elif isinstance(v, (int, float)):
        yield None, str(v), None, None, None
    elif not isinstance(v, dict):
        return
    elif t == "Coding":
        yield v.get("system"), v.get("code"), _fold_opt(v.get("display")), None, None
    elif t == "CodeableConcept":
        text = v.get("text")
        codings = v.get("coding") or []
        for c in codings:
            if isinstance(c, dict):
                yield c.get("system"), c.get("code"), _fold_opt(c.get("display") or text), None, None
        if (text and not codings) or text:
            yield None, None, fold(text), None, None
    elif t == "Identifier":
        type_cc = v.get("type") or {}
        type_codings = [c for c in type_cc.get("coding") or [] if isinstance(c, dict)]
        text = _fold_opt(type_cc.get("text"))
        if type_codings:
            for c in type_codings:
                yield v.get("system"), v.get("value"), text, c.get("system"), c.get("code")
        else:
            yield v.get("system"), v.get("value"), text, None, None
    elif t == "ContactPoint":
        yield v.get("system"), v.get("value"), None, None, None
    elif t in QUANTITY_TYPES:
        yield v.get("system"), v.get("code"), None, None, None


def _fold_opt(text: Any) -> str | None:
    return fold(text) if isinstance(text, str) and text else None


def date_ranges(tv: TypedValue) -> Iterator[tuple[int, int]]:
    v, t = tv.value, tv.type
    if isinstance(v, str):
        r = date_range(v)
        if r:
            yield r
    elif t == "Period" and isinstance(v, dict):
        start = date_range(v["start"]) if isinstance(v.get("start"), str) else None
        end = date_range(v["end"]) if isinstance(v.get("end"), str) else None
        if start or end:
            low, high = (start[0] if start else MIN_US), (end[1] if end else MAX_US)
            # A period that ends before it starts breaks invariant per-1; it is indexed as the
            # span between its two dates, so that every stored range keeps low <= high, which
            # the search compiler's index bounds rely on.
            yield (low, high) if low <= high else (end[0] if end else low, start[1] if start else high)
    elif t == "Timing" and isinstance(v, dict):
        for event in v.get("event") or []:
            if isinstance(event, str) and (r := date_range(event)):
                yield r
        bounds = (v.get("repeat") or {}).get("boundsPeriod")
        if isinstance(bounds, dict):
            yield from date_ranges(TypedValue(bounds, "Period"))


def number_values(tv: TypedValue) -> Iterator[float]:
    v = tv.value
    if isinstance(v, bool):
        return
    if isinstance(v, (int, float)):
        yield float(v)
    elif isinstance(v, dict) and isinstance(v.get("value"), (int, float)):
        yield float(v["value"])


def quantity_rows(tv: TypedValue) -> Iterator[tuple[float, str | None, str | None, str | None]]:
    v, t = tv.value, tv.type
    if not isinstance(v, dict):
        return
    if t == "Money":
        if isinstance(v.get("value"), (int, float)):
            yield float(v["value"]), "urn:iso:std:iso:4217", v.get("currency"), v.get("currency")
    elif isinstance(v.get("value"), (int, float)) and not isinstance(v.get("value"), bool):
        yield float(v["value"]), v.get("system"), v.get("code"), v.get("unit")


def uri_values(tv: TypedValue) -> Iterator[str]:
    if isinstance(tv.value, str):
        yield tv.value


# --- compiled per resource type ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompiledParam:
    param: SearchParam
    path: CompiledPath | None
    components: tuple[CompiledPath, ...]
    implied_system: str | None = None  # for plain codes bound to one code system
    # Top-level JSON keys the expression starts from; a resource without any of them has no
    # value for the parameter, so it is not evaluated. None: always evaluate.
    keys: frozenset[str] | None = None
    # For a composite rooted at the resource itself (Observation code-value-quantity): each
    # component's keys; all must be present for the composite to have a value.
    component_keys: tuple[frozenset[str], ...] = ()
    # The expression walked over the JSON without the engine, when it is plain navigation.
    direct: DirectPath | None = None


def _typed(cp: CompiledParam, resource: dict[str, Any]) -> list[TypedValue]:
    if cp.direct is not None:
        found = cp.direct.evaluate_typed(resource)
        if found is not None:
            return found
    assert cp.path is not None
    return cp.path.evaluate_typed(resource)


@cache
def _direct_component(expression: str, node_type: str) -> DirectPath | None:
    return direct_path(expression, node_type)


# FHIRPath that yields a value even when the element is absent: such a parameter is always evaluated.
_COMPUTES = (
    "exists(",
    "empty(",
    "not(",
    "count(",
    "iif(",
    "all(",
    "hasValue(",
    "=",
    " and ",
    " or ",
    " implies ",
    "|",
)
_FILTERS = ("where(", "extension(", "ofType(", "as(")


def _without_filters(part: str) -> str:
    """The expression with the arguments of navigation filters (``where(system='phone')``) cut
    out: a filter on an absent element still yields nothing."""
    out: list[str] = []
    i = 0
    while i < len(part):
        hit = next((f for f in _FILTERS if part.startswith(f, i)), None)
        if hit is None:
            out.append(part[i])
            i += 1
            continue
        depth, j = 1, i + len(hit)
        while j < len(part) and depth:
            depth += {"(": 1, ")": -1}.get(part[j], 0)
            j += 1
        out.append(hit + ")")
        i = j
    return "".join(out)


_ROOT_ELEMENT = re.compile(r"^\(*\s*([A-Z][A-Za-z]+)\.([a-z][A-Za-z]*)")


def root_keys(resource_type: str, expression: str | None) -> frozenset[str] | None:
    """JSON keys (choice types expanded) that every union member of ``expression`` starts at."""
    if not expression:
        return None
    keys: set[str] = set()
    for part in split_union(expression):
        if any(op in _without_filters(part) for op in _COMPUTES):
            return None  # e.g. Patient.deceased.exists() and … is false for a Patient without it
        m = _ROOT_ELEMENT.match(part)
        if m is None or m.group(1) != resource_type:
            return None
        spec = model().element(resource_type, m.group(2))
        if spec is None:
            return None
        if spec.choice:
            keys.update(spec.choice_key(t) for t in spec.types)
        else:
            keys.add(spec.name)
    return frozenset(keys)


_SIMPLE_PATH = re.compile(r"^[A-Z][A-Za-z]+(\.[a-z][A-Za-z]*)+$")


def implied_system(resource_type: str, expression: str | None) -> str | None:
    """The code system of a ``code`` element reached by a plain path (``Patient.gender``)."""
    if not expression:
        return None
    systems: set[str | None] = set()
    for part in split_union(expression):
        if not _SIMPLE_PATH.match(part):
            return None
        segs = part.split(".")
        struct = segs[0]
        spec = None
        for seg in segs[1:]:
            spec = model().element(struct, seg)
            if spec is None or not spec.types:
                return None
            struct = spec.types[0]
        if spec is None or spec.types != ("code",) or not spec.binding:
            return None
        systems.add(binding_systems().get(spec.binding))
    if len(systems) == 1:
        return systems.pop()
    return None


@cache
def compiled_params(resource_type: str) -> tuple[CompiledParam, ...]:
    out: list[CompiledParam] = []
    for p in params_for(resource_type).values():
        if p.code in ("_id", "_lastUpdated"):
            continue  # columns of the resource table
        path = compile_path(p.expression) if p.expression else None
        comps = tuple(compile_path(c.expression) for c in p.components)
        implied = implied_system(resource_type, p.expression) if p.type == "token" else None
        keys = frozenset({"text"}) if p.code == "_text" else root_keys(resource_type, p.expression)
        component_keys: tuple[frozenset[str], ...] = ()
        if p.type == "composite" and p.expression == resource_type:
            found = [root_keys(resource_type, f"{resource_type}.{c.expression}") for c in p.components]
            if all(k is not None for k in found):
                component_keys = tuple(k for k in found if k is not None)
        direct = direct_path(p.expression, resource_type) if p.expression else None
        out.append(CompiledParam(p, path, comps, implied, keys, component_keys, direct))
    return tuple(out)


IndexRows = dict[str, list[Row]]


def _component_values(
    cp: CompiledPath, ptype: str, node: TypedValue, resource: dict[str, Any]
) -> list[dict[str, Any]]:
    vals = None
    if node.value is not None and not node.type.startswith("System."):
        direct = _direct_component(cp.expression, node.type)
        if direct is not None:
            vals = direct.evaluate_typed(node.value, node.type)
    if vals is None:
        vals = cp.evaluate_typed(resource, context=node.value)
    out: list[dict[str, Any]] = []
    for tv in vals:
        if ptype == "token":
            for system, code, _text, _ts, _tc in token_rows(tv):
                if code is not None:
                    out.append({"system": system, "code": code})
        elif ptype == "quantity":
            for value, system, code, unit in quantity_rows(tv):
                out.append({"num": value, "system": system, "code": code or unit, "unit": unit})
        elif ptype == "number":
            for value in number_values(tv):
                out.append({"num": value})
        elif ptype == "date":
            for low, high in date_ranges(tv):
                out.append({"dlow": low, "dhigh": high})
        elif ptype == "string":
            for s in string_values(tv):
                out.append({"code": fold(s)})
        elif ptype == "reference":
            if isinstance(tv.value, dict) and isinstance(tv.value.get("reference"), str):
                ref = parse_reference(tv.value["reference"])
                if ref.type:
                    out.append({"code": f"{ref.type}/{ref.id}"})
        elif ptype == "uri":
            for u in uri_values(tv):
                out.append({"code": u})
    return out


def extract(resource: dict[str, Any], resource_type: str, *, base_url: str | None = None) -> IndexRows:
    """Index rows for ``resource``, keyed by table kind (``string``, ``token``, …), without resource_pk."""
    rows: IndexRows = {}

    def add(kind: str, row: Row) -> None:
        rows.setdefault(kind, []).append(row)

    present = resource.keys()
    for cp in compiled_params(resource_type):
        if cp.keys is not None and cp.keys.isdisjoint(present):
            continue
        if cp.component_keys and any(k.isdisjoint(present) for k in cp.component_keys):
            continue
        p = cp.param
        code = p.code
        if p.type == "text":
            text = narrative_text(resource) if code == "_text" else content_text(resource)
            if text:
                add("text", {"res_type": resource_type, "param": code, "content_norm": text})
            continue
        if cp.path is None:
            continue
        values = _typed(cp, resource)
        if not values:
            continue
        if p.type == "string":
            seen: set[tuple[str, str]] = set()
            for tv in values:
                for s in string_values(tv):
                    key = (fold(s), s)
                    if key[0] and key not in seen:
                        seen.add(key)
                        add(
                            "string",
                            {
                                "res_type": resource_type,
                                "param": code,
                                "value_norm": key[0],
                                "value_exact": s,
                            },
                        )
        elif p.type == "token":
            tseen: set[tuple[Any, ...]] = set()
            for tv in values:
                for raw_system, tcode, ttext, ts, tc in token_rows(tv):
                    system = raw_system
                    if system is None and cp.implied_system and tv.type == "code":
                        system = cp.implied_system
                    tkey = (system, tcode, ttext, ts, tc)
                    if tkey in tseen or (tcode is None and ttext is None):
                        continue
                    tseen.add(tkey)
                    add(
                        "token",
                        {
                            "res_type": resource_type,
                            "param": code,
                            "system": system,
                            "code": tcode[:256] if tcode else tcode,
                            "text_norm": ttext,
                            "type_system": ts,
                            "type_code": tc,
                        },
                    )
        elif p.type == "reference":
            for tv in values:
                add_reference_rows(tv, resource_type, code, base_url, add)
        elif p.type == "date":
            for tv in values:
                for low, high in date_ranges(tv):
                    add("date", {"res_type": resource_type, "param": code, "low": low, "high": high})
        elif p.type == "number":
            for tv in values:
                for num in number_values(tv):
                    add("number", {"res_type": resource_type, "param": code, "value": num})
        elif p.type == "quantity":
            for tv in values:
                for value, system, qcode, unit in quantity_rows(tv):
                    add(
                        "quantity",
                        {
                            "res_type": resource_type,
                            "param": code,
                            "value": value,
                            "system": system,
                            "code": qcode,
                            "unit": unit,
                        },
                    )
        elif p.type == "uri":
            useen: set[str] = set()
            for tv in values:
                for u in uri_values(tv):
                    if u not in useen:
                        useen.add(u)
                        add("uri", {"res_type": resource_type, "param": code, "uri": u})
        elif p.type == "composite":
            for node in values:
                comp_values = [
                    _component_values(c, comp.param_type, node, resource)
                    for c, comp in zip(cp.components, p.components, strict=True)
                ]
                if not all(comp_values):
                    continue
                for first in comp_values[0]:
                    for second in comp_values[1]:
                        thirds: list[dict[str, Any] | None] = (
                            list(comp_values[2]) if len(comp_values) > 2 else [None]
                        )
                        for third in thirds:
                            add(
                                "composite",
                                {
                                    "res_type": resource_type,
                                    "param": code,
                                    "c1_system": first.get("system"),
                                    "c1_code": first.get("code"),
                                    "c2_system": second.get("system"),
                                    "c2_code": second.get("code"),
                                    "c2_num": second.get("num"),
                                    "c2_dlow": second.get("dlow"),
                                    "c2_dhigh": second.get("dhigh"),
                                    "c2_unit": second.get("unit"),
                                    "c3_num": third.get("num") if third else None,
                                },
                            )
    return rows


def add_reference_rows(
    tv: TypedValue, resource_type: str, code: str, base_url: str | None, add: Callable[[str, Row], None]
) -> None:
    v = tv.value
    if isinstance(v, str):  # canonical / uri
        url, _, version = v.partition("|")
        add("reference", _ref_row(resource_type, code, None, None, version or None, url, None, None))
        return
    if not isinstance(v, dict):
        return
    ident = v.get("identifier") if isinstance(v.get("identifier"), dict) else None
    ref = v.get("reference")
    if isinstance(ref, str):
        parsed = parse_reference(ref, base_url)
        if parsed.url and parsed.url.startswith("#"):
            parsed = ParsedReference(None, None, None, None)
        if parsed.type or parsed.url:
            add(
                "reference",
                _ref_row(
                    resource_type,
                    code,
                    parsed.type,
                    parsed.id,
                    parsed.version,
                    parsed.url,
                    ident.get("system") if ident else None,
                    ident.get("value") if ident else None,
                ),
            )
            return
    if ident:
        add(
            "reference",
            _ref_row(resource_type, code, None, None, None, None, ident.get("system"), ident.get("value")),
        )


def _ref_row(
    rt: str,
    code: str,
    ttype: str | None,
    tid: str | None,
    tver: str | None,
    url: str | None,
    isys: str | None,
    ival: str | None,
) -> Row:
    return {
        "res_type": rt,
        "param": code,
        "target_type": ttype,
        "target_id": tid,
        "target_version": tver,
        "url": url,
        "identifier_system": isys,
        "identifier_value": ival,
    }


def narrative_text(resource: dict[str, Any]) -> str:
    div = (resource.get("text") or {}).get("div")
    if not isinstance(div, str):
        return ""
    return fold_long(_TAGS.sub(" ", div))


def content_text(resource: dict[str, Any]) -> str:
    return fold_long(" ".join(_all_strings(resource)))


def _all_strings(node: Any, top: bool = True) -> Iterable[str]:
    """Every string of a resource but its narrative, meta and id (top level only: a
    CodeableConcept's or a HumanName's ``text`` is content)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        skip = ("text", "meta", "id", "resourceType") if top else ()
        for key, val in node.items():
            if key not in skip:
                yield from _all_strings(val, False)
    elif isinstance(node, list):
        for item in node:
            yield from _all_strings(item, False)


def fold_long(text: str) -> str:
    """Like ``fold`` but without the length cap, for narrative and content search."""
    return fold_unbounded(text)
