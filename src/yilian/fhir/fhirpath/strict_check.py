"""Strict mode: reject element names the model does not define, before evaluating.

Given the type of the resource an expression starts from, this follows the possible
types of each path step through the model (a choice element has several; ``as``/
``ofType`` narrow them; filters keep them) and reports a name that no possible type
has — ``name.given1``, ``(Observation.value as Period).unit``, ``Encounter.name`` on a
Patient — as a semantic error. Where the types cannot be known (functions that compute
values, ``resolve()``, variables, resource-typed elements) it stops checking rather than
guess, so it never rejects an expression that could be right.
"""

from __future__ import annotations

from yilian.fhir.fhirpath import syntax as s
from yilian.fhir.fhirpath import types as fp_types
from yilian.fhir.fhirpath.errors import semantic_error
from yilian.fhir.fhirpath.nodes import plan, type_ancestors
from yilian.fhir.model import model

Types = frozenset[str] | None  # None: unknown, do not check

_KEEPS_TYPE = frozenset(
    {"where", "first", "last", "tail", "skip", "take", "single", "distinct", "trace", "exclude", "intersect"}
)
_LAMBDAS = frozenset({"where", "select", "exists", "all", "repeat", "aggregate", "sort", "iif", "trace"})
_OPEN_TYPES = frozenset({"Resource", "DomainResource"})
_TYPE_ARGUMENT = frozenset({"ofType", "as", "is"})


def check(node: s.Expr, root_type: str | None, expression: str) -> None:
    """Raise FHIRPathError (semantic) if ``node`` names an element no possible type has."""
    focus: Types = frozenset({root_type}) if root_type else None
    _Checker(expression).infer(node, focus, focus)


class _Checker:
    def __init__(self, expression: str) -> None:
        self.expression = expression

    def infer(self, node: s.Expr, focus: Types, scope: Types) -> Types:
        """Possible types of ``node`` evaluated with ``$this`` of types ``focus``."""
        if isinstance(node, s.Identifier):
            if node.name[:1].isupper() and model().structure(node.name) is not None:
                if focus is not None and not any(node.name in type_ancestors(t) for t in focus):
                    raise semantic_error(f"the context is not of type {node.name}", self.expression)
                return frozenset({node.name})
            return self.member(focus, node.name)
        if isinstance(node, s.Member):
            return self.member(self.infer(node.target, focus, scope), node.name)
        if isinstance(node, s.Call):
            return self.call(node, focus, scope)
        if isinstance(node, s.Indexer):
            self.infer(node.index, scope, scope)
            return self.infer(node.target, focus, scope)
        if isinstance(node, s.Special):
            return focus if node.name == "$this" else None
        if isinstance(node, s.Binary):
            left = self.infer(node.left, focus, scope)
            right = self.infer(node.right, focus, scope)
            if node.op == "|":
                return None if left is None or right is None else left | right
            return None
        if isinstance(node, s.Unary):
            self.infer(node.operand, focus, scope)
            return None
        if isinstance(node, s.TypeTest):
            self.infer(node.operand, focus, scope)
            return self.named(node.type_name) if node.op == "as" else None
        return None  # literals, variables

    def named(self, type_name: str) -> Types:
        spec = fp_types.resolve(type_name, self.expression)
        return frozenset({spec.name}) if spec.namespace == "FHIR" else None

    def member(self, types: Types, name: str) -> Types:
        if types is None or types & _OPEN_TYPES:
            return None
        out: set[str] = set()
        found = False
        for t in types:
            steps = plan(t, name, json_names=False)
            if steps is None:
                return None  # a type the model does not describe
            if steps:
                found = True
                out.update(step.type for step in steps if step.type)
        if not found and types:
            raise semantic_error(f"{' | '.join(sorted(types))} has no element '{name}'", self.expression)
        return frozenset(out)

    def call(self, node: s.Call, focus: Types, scope: Types) -> Types:
        source = self.infer(node.target, focus, scope) if node.target is not None else focus
        if node.name in _TYPE_ARGUMENT:
            name = s.qualified_name(node.args[0]) if node.args else None
            return self.named(name) if name and node.name != "is" else None
        lambda_ = node.name in _LAMBDAS
        results = [
            self.infer(a, source if lambda_ else scope, source if lambda_ else scope) for a in node.args
        ]
        if node.name == "select" and results:
            return results[0]
        if node.name == "extension":
            return frozenset({"Extension"})
        if node.name in ("union", "combine") and results:
            other = results[0]
            return None if source is None or other is None else source | other
        if node.name == "iif" and len(results) > 1:
            branches = results[1:]
            if any(b is None for b in branches):
                return None
            return frozenset().union(*[b for b in branches if b is not None])
        if node.name in _KEEPS_TYPE:
            return source
        return None
