"""Search parameters, from the official R4 SearchParameter definitions.

For each resource type: which parameters exist, their type, the part of their FHIRPath
expression that applies to that type, their reference targets and composite components.
The CapabilityStatement, the indexer and the query compiler all read this one registry,
so the server claims exactly the parameters it indexes and answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from yilian.fhir.model import load_definition, model

# Parameters every resource has, handled from resource columns or meta.
COMMON_PARAMS = ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source", "_content")
# Only DomainResources have a narrative.
DOMAIN_PARAMS = ("_text",)
# Types whose search parameters we index; "special" (Location near) is not supported.
SUPPORTED_TYPES = frozenset(
    {"string", "token", "reference", "date", "number", "quantity", "uri", "composite"}
)

# Modifiers each parameter type accepts (FHIR R4 search, 3.1.1.5.5 and per-type sections).
MODIFIERS: dict[str, frozenset[str]] = {
    "string": frozenset({"exact", "contains", "missing", "not"}),
    "token": frozenset({"text", "not", "missing", "of-type", "in", "not-in", "above", "below"}),
    "reference": frozenset({"missing", "identifier", "not"}),  # plus :[type]
    "date": frozenset({"missing", "not"}),
    "number": frozenset({"missing", "not"}),
    "quantity": frozenset({"missing", "not"}),
    "uri": frozenset({"missing", "below", "above", "not"}),
    "composite": frozenset({"missing"}),
    "text": frozenset({"missing"}),
}
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


@dataclass(frozen=True, slots=True)
class Component:
    param_type: str
    expression: str


@dataclass(frozen=True, slots=True)
class SearchParam:
    code: str
    type: str  # string token reference date number quantity uri composite text special
    resource_type: str
    expression: str | None  # the part of the official expression that applies to resource_type
    url: str = ""
    targets: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()
    definition_id: str = ""

    @property
    def table_kind(self) -> str:
        return self.type


@dataclass
class TypeParams:
    resource_type: str
    params: dict[str, SearchParam] = field(default_factory=dict)


def split_union(expression: str) -> list[str]:
    """Split ``A | B | C`` at the top level (not inside parentheses or strings)."""
    parts: list[str] = []
    depth = 0
    quote = False
    start = 0
    i = 0
    while i < len(expression):
        ch = expression[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == "'":
                quote = False
        elif ch == "'":
            quote = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
        i += 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def _root(part: str) -> str:
    text = part.lstrip("( ")
    end = 0
    while end < len(text) and (text[end].isalnum() or text[end] == "_"):
        end += 1
    return text[:end]


def expression_for(expression: str | None, resource_type: str) -> str | None:
    """Keep only the union members that start at ``resource_type`` (or at Resource/DomainResource)."""
    if not expression:
        return None
    ancestors = set(model().ancestors(resource_type))
    kept: list[str] = []
    for part in split_union(expression):
        root = _root(part)
        if root == resource_type:
            kept.append(part)
        elif root in ancestors:
            # Resource.meta.tag on a Patient: root the path at the concrete type.
            idx = part.index(root)
            kept.append(part[:idx] + resource_type + part[idx + len(root) :])
    return " | ".join(kept) if kept else None


_FITS: dict[str, frozenset[str]] = {
    "reference": frozenset({"Reference", "canonical", "uri", "url"}),
    "token": frozenset(
        {"code", "Coding", "CodeableConcept", "Identifier", "boolean", "string", "ContactPoint", "uri", "id"}
    ),
    "quantity": frozenset(
        {"Quantity", "Age", "Count", "Distance", "Duration", "Money", "Range", "SampledData"}
    ),
    "date": frozenset({"date", "dateTime", "instant", "Period", "Timing"}),
    "string": frozenset({"string", "markdown", "HumanName", "Address"}),
    "number": frozenset({"integer", "decimal", "positiveInt", "unsignedInt"}),
    "uri": frozenset({"uri", "url", "canonical", "oid", "uuid"}),
}


def _static_types(struct: str, path: str) -> set[str] | None:
    """FHIR types a plain relative path (``code``, ``target``) reaches from ``struct``; None if not plain."""
    types: set[str] = set()
    current = [struct]
    for seg in path.split("."):
        if not seg.isidentifier():
            return None
        nxt: list[str] = []
        for st in current:
            spec = model().element(st, seg)
            if spec is None:
                return None
            nxt.extend(spec.types)
        current = nxt
    types.update(current)
    return types


def _aligned(base_expr: str, components: list[Component]) -> list[Component]:
    """Pair each component expression with the definition whose type it fits.

    R4's DocumentReference-relationship lists its components with the expressions swapped
    (the reference component reads ``code``); checking types statically puts them right.
    """
    if len(components) != 2:
        return components
    base = split_union(base_expr)[0]
    if not all(seg.isidentifier() for seg in base.split(".")):
        return components
    struct = base if "." not in base else None
    if struct is None:
        root, *rest = base.split(".")
        struct = root
        for seg in rest:
            spec = model().element(struct, seg)
            if spec is None or not spec.types:
                return components
            struct = spec.types[0]
    a, b = components
    ta, tb = _static_types(struct, a.expression), _static_types(struct, b.expression)
    if ta is None or tb is None:
        return components

    def fits(kind: str, types: set[str]) -> bool:
        return bool(types & _FITS.get(kind, frozenset()))

    if (
        not (fits(a.param_type, ta) and fits(b.param_type, tb))
        and fits(a.param_type, tb)
        and fits(b.param_type, ta)
    ):
        return [Component(a.param_type, b.expression), Component(b.param_type, a.expression)]
    return components


@cache
def registry() -> dict[str, TypeParams]:
    raw = load_definition("search-parameters")
    by_url = {p["url"]: p for p in raw}
    out: dict[str, TypeParams] = {t: TypeParams(t) for t in sorted(model().resource_types)}
    for p in raw:
        ptype = p["type"]
        for base in p["base"]:
            if base in ("Resource", "DomainResource"):
                continue
            if base not in out:
                continue
            expr = expression_for(p.get("expression"), base)
            if ptype not in SUPPORTED_TYPES or expr is None:
                continue
            components: list[Component] = []
            if ptype == "composite":
                ok = True
                for comp in p.get("component", []):
                    target = by_url.get(comp["definition"])
                    if target is None or target["type"] not in SUPPORTED_TYPES - {"composite"}:
                        ok = False
                        break
                    components.append(Component(target["type"], comp["expression"]))
                components = _aligned(expr, components)
                # Component 1 is stored as a (system, code) key: token, reference, string or uri.
                if (
                    not ok
                    or not components
                    or components[0].param_type not in ("token", "reference", "string", "uri")
                ):
                    continue
            targets = tuple(p.get("target", ()))
            if ptype == "reference" and not targets:
                targets = ()
            out[base].params[p["code"]] = SearchParam(
                code=p["code"],
                type=ptype,
                resource_type=base,
                expression=expr,
                url=p["url"],
                targets=targets,
                components=tuple(components),
                definition_id=p["id"],
            )
    # Parameters of every resource.
    for rtype, tp in out.items():
        is_domain = model().is_subtype(rtype, "DomainResource")
        for code in COMMON_PARAMS + (DOMAIN_PARAMS if is_domain else ()):
            tp.params[code] = _common_param(code, rtype)
    return out


def _common_param(code: str, rtype: str) -> SearchParam:
    base_url = "http://hl7.org/fhir/SearchParameter/"
    kinds = {
        "_id": ("token", f"{rtype}.id", "Resource-id"),
        "_lastUpdated": ("date", f"{rtype}.meta.lastUpdated", "Resource-lastUpdated"),
        "_tag": ("token", f"{rtype}.meta.tag", "Resource-tag"),
        "_profile": ("uri", f"{rtype}.meta.profile", "Resource-profile"),
        "_security": ("token", f"{rtype}.meta.security", "Resource-security"),
        "_source": ("uri", f"{rtype}.meta.source", "Resource-source"),
        "_text": ("text", None, "DomainResource-text"),
        "_content": ("text", None, "Resource-content"),
    }
    ptype, expr, def_id = kinds[code]
    return SearchParam(
        code=code,
        type=ptype,
        resource_type=rtype,
        expression=expr,
        url=base_url + def_id,
        definition_id=def_id,
    )


def params_for(resource_type: str) -> dict[str, SearchParam]:
    tp = registry().get(resource_type)
    return tp.params if tp else {}


def param(resource_type: str, code: str) -> SearchParam | None:
    return params_for(resource_type).get(code)
