"""Plain navigation paths walked straight over the JSON, without the expression engine.

Nineteen in twenty search-parameter expressions are navigation only: ``Patient.name``,
``(Observation.value as Quantity)``, ``Patient.telecom.where(system='phone')``,
``Observation.subject.where(resolve() is Patient)``, or a union of such paths. Extracting
index rows runs them some thirty times per resource written, and the general engine's
per-step machinery (nodes with their place in the tree, environments, closures, duplicate
removal) was most of a bulk load's time. A :class:`DirectPath` walks the same JSON with the
same model answers (``nodes.plan``, the same type matchers, the same reference stub) and
returns what :meth:`CompiledPath.evaluate_typed` returns.

Where the walk would have to reproduce the engine's rarer behaviour — a primitive's ``_x``
sibling, an element the model does not know, a contained or Bundle-local reference, ``as()``
on several items (an error), duplicates across the operands of a union — it stops and
returns ``None``, and the caller asks the engine. ``tests/unit/fhir/test_direct_paths.py``
compares the two on every official example resource and every search parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from yilian.fhir.fhirpath import syntax as s
from yilian.fhir.fhirpath.compiled import TypedValue
from yilian.fhir.fhirpath.errors import FHIRPathError
from yilian.fhir.fhirpath.functions.fhir import reference_stub_type
from yilian.fhir.fhirpath.nodes import Node, Plan, plan, type_ancestors
from yilian.fhir.fhirpath.parser import parse
from yilian.fhir.fhirpath.types import as_matcher, is_matcher, resolve
from yilian.fhir.model import model

Item = tuple[Any, str | None]  # JSON value and its FHIR type


class _Fallback(Exception):
    """The walk met something only the engine decides the same way."""


@dataclass(frozen=True, slots=True)
class _Child:
    name: str
    # nodes.plan's answer per node type, kept here: a dict lookup instead of a cached call
    plans: dict[str | None, Plan] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class _As:
    keep: Callable[[Any], bool]
    single: bool  # the function form, as(T), which refuses more than one item


@dataclass(frozen=True, slots=True)
class _WhereEquals:
    name: str
    literal: str


@dataclass(frozen=True, slots=True)
class _WhereResolvesTo:
    matches: Callable[[Any], bool]


_Op = _Child | _As | _WhereEquals | _WhereResolvesTo


@dataclass(frozen=True, slots=True)
class _Part:
    head: str | None  # the type name a path starts with (``Patient``), None for a relative path
    ops: tuple[_Op, ...]


def _is_type_name(name: str) -> bool:
    # The engine's rule for an identifier at the start of a path (Compiler.identifier).
    return name[:1].isupper() and model().structure(name) is not None


def _part(node: s.Expr) -> _Part | None:
    """The navigation steps of one union operand, or None if it is not plain navigation."""
    if isinstance(node, s.Identifier):
        if _is_type_name(node.name):
            return _Part(node.name, ())
        return _Part(None, (_Child(node.name),))
    if isinstance(node, s.Member):
        inner = _part(node.target)
        return None if inner is None else _Part(inner.head, (*inner.ops, _Child(node.name)))
    if isinstance(node, s.TypeTest) and node.op == "as":
        inner = _part(node.operand)
        if inner is None:
            return None
        return _Part(inner.head, (*inner.ops, _As(as_matcher(resolve(node.type_name)), single=False)))
    if isinstance(node, s.Call) and node.target is not None and len(node.args) == 1:
        inner = _part(node.target)
        if inner is None:
            return None
        op = _call_op(node.name, node.args[0])
        return None if op is None else _Part(inner.head, (*inner.ops, op))
    return None


def _call_op(name: str, arg: s.Expr) -> _Op | None:
    if name == "as":
        type_name = s.qualified_name(arg)
        return None if type_name is None else _As(as_matcher(resolve(type_name)), single=True)
    if name != "where":
        return None
    if (
        isinstance(arg, s.Binary)
        and arg.op == "="
        and isinstance(arg.left, s.Identifier)
        and not _is_type_name(arg.left.name)
        and isinstance(arg.right, s.Literal)
        and isinstance(arg.right.value, str)
    ):
        return _WhereEquals(arg.left.name, arg.right.value)
    if (
        isinstance(arg, s.TypeTest)
        and arg.op == "is"
        and isinstance(arg.operand, s.Call)
        and arg.operand.target is None
        and arg.operand.name == "resolve"
        and not arg.operand.args
    ):
        return _WhereResolvesTo(is_matcher(resolve(arg.type_name)))
    return None


def _operands(node: s.Expr) -> list[s.Expr]:
    if isinstance(node, s.Binary) and node.op == "|":
        return _operands(node.left) + _operands(node.right)
    return [node]


@cache
def _type_keeps(keep: Callable[[Any], bool], type_name: str | None) -> bool:
    # The matchers look at nothing but a node's type (every item here is FHIR data).
    return keep(Node(None, type_name))


def _children(items: list[Item], op: _Child) -> list[Item]:
    """``items.name``: as the engine's member navigation (Compiler.member) in non-strict mode."""
    out: list[Item] = []
    name, plans = op.name, op.plans
    for data, t in items:
        if type(data) is not dict:
            continue  # a primitive: only its `_x` sibling has children, and those are handled below
        try:
            steps = plans[t]
        except KeyError:
            steps = plans[t] = plan(t, name)
        if not steps:
            if name in data or "_" + name in data:
                raise _Fallback  # navigated by JSON shape alone (emit_untyped)
            continue
        for step in steps:
            if step.primitive and step.ext_key in data:
                raise _Fallback  # a primitive with extensions: one node of value and sibling
            value = data.get(step.key)
            if value is None:
                continue
            if type(value) is list:
                for v in value:
                    if v is not None:
                        out.append((v, _resource_type(v, step.type) if step.resource else step.type))
            else:
                out.append((value, _resource_type(value, step.type) if step.resource else step.type))
    return out


def _resource_type(value: Any, declared: str | None) -> str | None:
    if type(value) is dict:
        rt = value.get("resourceType", declared)
        if rt is not None and type(rt) is not str:
            raise _Fallback
        return rt
    return declared


def _apply(op: _Op, items: list[Item]) -> list[Item]:
    if type(op) is _Child:
        return _children(items, op)
    if type(op) is _As:
        if op.single and len(items) > 1:
            raise _Fallback  # as() on several items is an error the engine reports
        return [it for it in items if _type_keeps(op.keep, it[1])]
    if type(op) is _WhereEquals:
        out = []
        for data, t in items:
            if type(data) is not dict:
                raise _Fallback
            steps = plan(t, op.name)
            if not steps or len(steps) != 1 or steps[0].ext_key in data:
                raise _Fallback
            value = data.get(steps[0].key)
            if value is None:
                continue
            if type(value) is not str:
                raise _Fallback
            if value == op.literal:
                out.append((data, t))
        return out
    assert type(op) is _WhereResolvesTo
    out = []
    for data, t in items:
        if type(data) is dict:
            ref = data.get("reference")
            if "_reference" in data:
                raise _Fallback
        else:
            ref = data
        if not isinstance(ref, str) or not ref:
            continue
        if ref.startswith("#"):
            raise _Fallback  # a contained resource: its own type decides
        target = reference_stub_type(ref)
        if target is not None and _type_keeps(op.matches, target):
            out.append((data, t))
    return out


class DirectPath:
    """A plain navigation expression for one resource type (see the module docs)."""

    __slots__ = ("_parts", "_union", "expression", "root_type")

    def __init__(self, expression: str, root_type: str, parts: tuple[_Part, ...], *, union: bool) -> None:
        self.expression = expression
        self.root_type = root_type
        self._parts = parts
        self._union = union  # the expression is a union (even if one operand is left here)

    def __repr__(self) -> str:
        return f"DirectPath({self.expression!r}, {self.root_type})"

    def evaluate_typed(self, data: Any, type_name: str | None = None) -> list[TypedValue] | None:
        """What ``compile_path(expression).evaluate_typed(resource)`` gives (no resolver), or
        with ``context`` a node of type ``type_name`` inside it; None when only the engine can
        tell. ``data`` is the resource, or that node when ``type_name`` is given."""
        if type_name is None:
            if type(data) is not dict or data.get("resourceType") != self.root_type:
                return None
            t: str = self.root_type
        else:
            t = type_name
        start: list[Item] = [(data, t)]
        found: list[list[Item]] = []
        try:
            for part in self._parts:
                if part.head is not None and part.head not in type_ancestors(t):
                    continue
                items = start
                for op in part.ops:
                    items = _apply(op, items)
                    if not items:
                        break
                if items:
                    found.append(items)
        except _Fallback:
            return None
        if not found:
            return []
        if self._union and (len(found) > 1 or len(found[0]) > 1):
            return None  # a union removes duplicates by FHIRPath equality: the engine's work
        return [TypedValue(v, vt or "Element") for v, vt in found[0]]


def direct_path(expression: str, root_type: str) -> DirectPath | None:
    """A :class:`DirectPath` for ``expression`` evaluated on a ``root_type`` (a resource or a
    backbone type such as ``Observation.component``), or None if it is not plain navigation.

    Operands of a union that start at another resource type are dropped: on a ``root_type``
    they give nothing. Bundles are left to the engine (``resolve()`` looks inside them)."""
    if root_type == "Bundle" or model().structure(root_type) is None:
        return None
    try:
        tree = parse(expression)
        parts = []
        operands = _operands(tree)
        for operand in operands:
            part = _part(operand)
            if part is None:
                return None
            if part.head is None or part.head in type_ancestors(root_type):
                parts.append(part)
    except FHIRPathError:
        return None
    # A union removes duplicates even when one operand is left for this type.
    return DirectPath(expression, root_type, tuple(parts), union=len(operands) > 1)
