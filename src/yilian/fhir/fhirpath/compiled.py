"""A compiled expression and how its results are handed to callers."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple

from yilian.fhir.fhirpath import strict_check, syntax
from yilian.fhir.fhirpath.compiler import Compiler
from yilian.fhir.fhirpath.env import Env, Expr, Resolver
from yilian.fhir.fhirpath.nodes import Node, children, infer_type
from yilian.fhir.fhirpath.parser import parse
from yilian.fhir.fhirpath.quantity import FPQuantity
from yilian.fhir.fhirpath.temporal import FPDate, FPDateTime, FPTime
from yilian.fhir.fhirpath.types import SYSTEM_NAMES


class TypedValue(NamedTuple):
    """One result with its type: a FHIR type name (``Quantity``, ``dateTime``, ``code``,
    ``Patient``, ``Patient.contact`` for a backbone element) for data from the resource,
    ``System.String``/``System.Integer``/… for values the expression computed.

    A named tuple rather than a dataclass: search extraction makes one per value of every
    parameter of every resource written, and a tuple is several times cheaper to make."""

    value: Any
    type: str


_PLAIN_TYPES = (bool, int, str, Decimal)
_TEMPORALS = (FPDate, FPDateTime, FPTime)


def plain(item: Any) -> Any:
    """The JSON-like Python value of a result item (see the package docs)."""
    if type(item) is Node:
        return item.data
    if isinstance(item, _PLAIN_TYPES):
        return item
    if isinstance(item, _TEMPORALS):
        return str(item)
    if isinstance(item, FPQuantity):
        return item.to_fhir()
    return item


def type_name(item: Any) -> str:
    if type(item) is Node:
        return item.type or "Element"
    name = SYSTEM_NAMES.get(type(item))
    return f"System.{name}" if name else "System.Any"


def _as_items(value: Any) -> list[Any]:
    values = value if isinstance(value, list) else [value]
    out: list[Any] = []
    for v in values:
        if v is None:
            continue
        if isinstance(v, dict):
            out.append(Node(v, infer_type(v)))
        elif isinstance(v, float):
            out.append(Decimal(repr(v)))
        else:
            out.append(v)
    return out


def _locate(root: Node, target: Any) -> Node | None:
    """The node of ``root``'s tree whose JSON object *is* ``target`` (with its place)."""
    stack = [root]
    while stack:
        n = stack.pop()
        if n.data is target:
            return n
        if type(n.data) is dict:
            stack.extend(children(n))
    return None


class CompiledPath:
    """A FHIRPath expression compiled once, to be evaluated many times.

    Safe to share between threads: evaluation state lives in a per-call ``Env``.
    """

    __slots__ = ("_checked", "_run", "_tree", "expression", "strict")

    def __init__(self, expression: str, run: Expr, *, tree: syntax.Expr | None = None) -> None:
        self.expression = expression
        self.strict = tree is not None
        self._run = run
        self._tree = tree  # kept in strict mode, to check against each resource type met
        self._checked: set[str | None] = set()

    def __repr__(self) -> str:
        return f"CompiledPath({self.expression!r})"

    def _env(
        self,
        resource: Any,
        context: Any | None,
        variables: dict[str, Any] | None,
        resolver: Resolver | None,
    ) -> Env:
        if type(resource) is dict:
            rt = resource.get("resourceType")
            root = [Node(resource, rt if type(rt) is str else None)]
        else:
            root = [] if resource is None else [Node(resource, infer_type(resource))]
        if context is None and not variables and self._tree is None:
            return Env(root, root, {}, resolver)
        if self._tree is not None:
            root_type = root[0].type if root else None
            if root_type not in self._checked:
                strict_check.check(self._tree, root_type, self.expression)
                self._checked.add(root_type)
        if context is None or context is resource:
            focus = root
        else:
            located = _locate(root[0], context) if root and isinstance(context, dict) else None
            focus = [located] if located is not None else _as_items(context)
        env_vars = {k: _as_items(v) for k, v in variables.items()} if variables else {}
        return Env(root, focus, env_vars, resolver)

    def evaluate_nodes(
        self,
        resource: Any,
        *,
        context: Any | None = None,
        variables: dict[str, Any] | None = None,
        resolver: Resolver | None = None,
    ) -> list[Any]:
        """The raw result: :class:`Node` for FHIR data (with parent/key/index, so callers
        such as FHIRPath Patch can change what was found) and system values otherwise."""
        return self._run(self._env(resource, context, variables, resolver))

    def evaluate(
        self,
        resource: Any,
        *,
        context: Any | None = None,
        variables: dict[str, Any] | None = None,
        resolver: Resolver | None = None,
    ) -> list[Any]:
        """The result as plain Python values (see the package documentation)."""
        items = self._run(self._env(resource, context, variables, resolver))
        return [x.data if type(x) is Node else plain(x) for x in items]

    def evaluate_typed(
        self,
        resource: Any,
        *,
        context: Any | None = None,
        variables: dict[str, Any] | None = None,
        resolver: Resolver | None = None,
    ) -> list[TypedValue]:
        """The result as :class:`TypedValue` (value as :meth:`evaluate` gives it, and type)."""
        items = self._run(self._env(resource, context, variables, resolver))
        return [TypedValue(plain(x), type_name(x)) for x in items]


@lru_cache(maxsize=4096)
def compile_path(expression: str, *, strict: bool = False) -> CompiledPath:
    """Compile ``expression`` (cached). Raises FHIRPathError for syntax errors, unknown
    functions and types, and unsupported functions.

    ``strict`` also rejects, when evaluated, element names the model does not define for
    the node's type and a leading type name that does not match the resource — useful to
    check expressions people write (invariants, ``_filter``); search extraction leaves it
    off so that an expression over several resource types just yields nothing for the others.
    """
    tree = parse(expression)
    compiler = Compiler(expression, strict=strict)
    return CompiledPath(expression, compiler.compile(tree), tree=tree if strict else None)


def evaluate(resource: Any, expression: str, **kwargs: Any) -> list[Any]:
    """``compile_path(expression).evaluate(resource, **kwargs)``."""
    return compile_path(expression).evaluate(resource, **kwargs)
