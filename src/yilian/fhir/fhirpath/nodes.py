"""FHIR data as FHIRPath sees it: typed nodes that know where they live in the JSON.

A :class:`Node` wraps one element of a resource with its FHIR type (from
``yilian.fhir.model``) and its place (parent node, JSON key, array index), so that
FHIRPath Patch can change the element an expression found. A primitive and its
``_name`` sibling (extensions, id) are one node: ``data`` is the JSON value (``None``
when only the sibling exists) and ``ext`` the sibling object.

Navigation asks the model once per (type, name) which JSON properties can hold the
element — a choice element ``value`` on Observation means ``valueQuantity``,
``valueString``, … — and caches the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

from yilian.fhir.model import model


class Node:
    """One FHIR element (or resource) found by an expression."""

    __slots__ = ("data", "ext", "index", "key", "parent", "type")

    def __init__(
        self,
        data: Any,
        type_: str | None,
        parent: Node | None = None,
        key: str | None = None,
        index: int | None = None,
        ext: dict[str, Any] | None = None,
    ) -> None:
        self.data = data
        self.type = type_
        self.parent = parent
        self.key = key
        self.index = index
        self.ext = ext

    def __repr__(self) -> str:
        return f"Node({self.type}, {self.data!r})"

    def path(self) -> str:
        """Where the node lives, for messages: ``Patient.name[1].given[0]``."""
        if self.parent is None:
            return self.type or "$"
        text = f"{self.parent.path()}.{self.key}"
        return text if self.index is None else f"{text}[{self.index}]"


@dataclass(frozen=True, slots=True)
class Step:
    """One JSON property an element name can be stored in, and what it holds."""

    key: str
    ext_key: str
    type: str | None
    primitive: bool
    resource: bool  # holds a resource: the concrete type is its resourceType


# None means "not described by the model": navigate by JSON shape alone.
Plan = tuple[Step, ...] | None

_RESOURCE_TYPES = frozenset({"Resource", "DomainResource"})


def _step(key: str, type_name: str | None) -> Step:
    m = model()
    primitive = type_name is not None and m.is_primitive(type_name)
    return Step(key, "_" + key, type_name, primitive, type_name in _RESOURCE_TYPES)


def _structure_name(type_name: str) -> str:
    # children of a primitive (its id and extensions) are those of Element
    return "Element" if model().is_primitive(type_name) else type_name


@cache
def plan(type_name: str | None, name: str, *, json_names: bool = True) -> Plan:
    """The JSON properties the FHIRPath element ``name`` of ``type_name`` may be in.

    ``()`` when the type is known and has no such element; ``None`` when the type is
    unknown to the model. With ``json_names`` a choice element may also be named as in
    JSON (``valueQuantity``), which FHIRPath proper does not allow.
    """
    if type_name is None:
        return None
    structure = model().structure(_structure_name(type_name))
    if structure is None:
        return None
    element = structure.elements.get(name)
    if element is not None:
        if element.choice:
            return tuple(_step(element.choice_key(t), t) for t in element.types)
        return (_step(name, element.types[0] if element.types else None),)
    prop = structure.properties.get(name) if json_names else None
    if prop is not None:
        return (_step(name, prop[1]),)
    return ()


@cache
def json_step(type_name: str | None, key: str) -> Step | None:
    """What the JSON property ``key`` of ``type_name`` holds (None if the model does not say)."""
    if type_name is None:
        return None
    structure = model().structure(_structure_name(type_name))
    if structure is None:
        return None
    prop = structure.properties.get(key)
    return None if prop is None else _step(key, prop[1])


def infer_type(value: Any) -> str | None:
    """The FHIR type of JSON data the model does not describe."""
    if type(value) is dict:
        rt = value.get("resourceType")
        return rt if isinstance(rt, str) else None
    if type(value) is str:
        return "string"
    if type(value) is bool:
        return "boolean"
    if type(value) is int:
        return "integer"
    if type(value) in (float, Decimal):
        return "decimal"
    return None


def emit(out: list[Any], parent: Node, step: Step, src: dict[str, Any]) -> None:
    """Append the node(s) stored under ``step.key`` of ``src`` (the parent's JSON)."""
    value = src.get(step.key)
    if step.primitive:
        ext = src.get(step.ext_key)
        if value is None and ext is None:
            return
        if type(value) is list or type(ext) is list:
            values = value if type(value) is list else []
            exts = ext if type(ext) is list else []
            for i in range(max(len(values), len(exts))):
                v = values[i] if i < len(values) else None
                e = exts[i] if i < len(exts) else None
                if v is not None or e is not None:
                    out.append(Node(v, step.type, parent, step.key, i, e))
            return
        out.append(Node(value, step.type, parent, step.key, None, ext))
        return
    if value is None:
        return
    if type(value) is list:
        for i, item in enumerate(value):
            if item is None:
                continue
            t = item.get("resourceType", step.type) if step.resource and type(item) is dict else step.type
            out.append(Node(item, t, parent, step.key, i, None))
        return
    t = value.get("resourceType", step.type) if step.resource and type(value) is dict else step.type
    out.append(Node(value, t, parent, step.key, None, None))


def emit_untyped(out: list[Any], parent: Node, key: str, src: dict[str, Any]) -> None:
    """Like :func:`emit` for JSON the model does not describe: types come from the values."""
    value = src.get(key)
    ext = src.get("_" + key)
    if value is None and ext is None:
        return
    if type(value) is list or type(ext) is list:
        values = value if type(value) is list else []
        exts = ext if type(ext) is list else []
        for i in range(max(len(values), len(exts))):
            v = values[i] if i < len(values) else None
            e = exts[i] if i < len(exts) else None
            if v is not None or e is not None:
                out.append(Node(v, infer_type(v), parent, key, i, e if type(e) is dict else None))
        return
    out.append(Node(value, infer_type(value), parent, key, None, ext if type(ext) is dict else None))


def source(node: Node) -> dict[str, Any] | None:
    """The JSON object a node's children are read from (a primitive's ``_x`` sibling)."""
    data = node.data
    if type(data) is dict:
        return data
    return node.ext


_SKIPPED_KEYS = frozenset({"resourceType", "fhir_comments"})


def children(node: Node) -> list[Node]:
    """Every child element, in document order (FHIRPath ``children()``)."""
    src = source(node)
    if not src:
        return []
    out: list[Node] = []
    for key in src:
        if key in _SKIPPED_KEYS:
            continue
        if key[0] == "_":
            base = key[1:]
            if base in src:
                continue  # emitted together with its value
            key = base
        step = json_step(node.type, key)
        if step is None:
            emit_untyped(out, node, key, src)
        else:
            emit(out, node, step, src)
    return out


def descendants(node: Node) -> list[Node]:
    out: list[Node] = []
    stack = children(node)
    stack.reverse()
    while stack:
        n = stack.pop()
        out.append(n)
        kids = children(n)
        kids.reverse()
        stack.extend(kids)
    return out


@cache
def type_ancestors(type_name: str) -> frozenset[str]:
    """The type and every type it specialises (Age -> Age, Quantity, Element)."""
    return frozenset(model().ancestors(type_name))
