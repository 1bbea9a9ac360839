"""Turns a syntax tree into nested closures ``env -> collection``.

Everything that can be decided from the text alone is decided here, once: which
function a name means and how its arguments are evaluated, what a type specifier
names, which variables are built in. What is left for run time is the data: which
JSON properties a name is stored in depends on the type of each node, and is cached
per type inside the closure that navigates.
"""

from __future__ import annotations

from typing import Any

from yilian.fhir.fhirpath import operators
from yilian.fhir.fhirpath import syntax as s
from yilian.fhir.fhirpath import types as fp_types
from yilian.fhir.fhirpath.env import Env, Expr, Invocation
from yilian.fhir.fhirpath.errors import FHIRPathError, semantic_error
from yilian.fhir.fhirpath.functions import FUNCTIONS, UNSUPPORTED
from yilian.fhir.fhirpath.nodes import Node, Plan, emit, emit_untyped, plan, type_ancestors
from yilian.fhir.fhirpath.values import single
from yilian.fhir.model import model

# Variables every FHIR evaluation defines (FHIR R4 §2.1.9.1 "FHIR-specific variables").
_CONSTANTS = {
    "ucum": "http://unitsofmeasure.org",
    "sct": "http://snomed.info/sct",
    "loinc": "http://loinc.org",
}
_PREFIXED_CONSTANTS = {
    "vs-": "http://hl7.org/fhir/ValueSet/",
    "ext-": "http://hl7.org/fhir/StructureDefinition/",
}
# Functions whose result depends on input order; strict mode rejects them after
# children()/descendants(), whose order is not defined.
_ORDERED = frozenset({"skip", "take", "first", "last", "tail", "single"})
_UNORDERED = frozenset({"children", "descendants"})


class Compiler:
    def __init__(self, expression: str, *, strict: bool = False) -> None:
        self.expression = expression
        self.strict = strict
        # defineVariable() adds variables that must not outlive the sub-expression that
        # defined them; only expressions that use it pay for the bookkeeping
        self.scoped = "defineVariable" in expression

    def error(self, message: str) -> FHIRPathError:
        return semantic_error(message, self.expression)

    def compile(self, node: s.Expr) -> Expr:
        """A sub-expression evaluated on its own: an operand or a function argument."""
        expr = self._compile(node)
        if not self.scoped:
            return expr

        def scoped(env: Env) -> list[Any]:
            saved = env.variables
            result = expr(env)
            env.variables = saved
            return result

        return scoped

    def _compile(self, node: s.Expr) -> Expr:
        if isinstance(node, s.Literal):
            return _constant(node.value)
        if isinstance(node, s.Identifier):
            return self.identifier(node.name)
        if isinstance(node, s.Member):
            return self.member(self._compile(node.target), node.name)
        if isinstance(node, s.Call):
            return self.call(node)
        if isinstance(node, s.Special):
            return self.special(node.name)
        if isinstance(node, s.Variable):
            return self.variable(node.name)
        if isinstance(node, s.Indexer):
            return self.indexer(node)
        if isinstance(node, s.Unary):
            operand = self._compile(node.operand)
            if node.op == "-":
                return lambda env: operators.negate(operand(env))
            return lambda env: operators.plus_sign(operand(env))
        if isinstance(node, s.Binary):
            if node.op == "|":
                return operators.union_of([self.compile(n) for n in _union_operands(node)])
            return operators.binary(node.op, self.compile(node.left), self.compile(node.right))
        return self.type_test(node)

    # -- paths ---------------------------------------------------------------------------

    def identifier(self, name: str) -> Expr:
        if name[:1].isupper() and model().structure(name) is not None:
            return self.type_head(name)
        return self.member(None, name)

    def type_head(self, name: str) -> Expr:
        """``Patient`` at the start of a path: keeps ``$this`` if it is a Patient."""
        strict = self.strict
        expression = self.expression
        matches: dict[str | None, bool] = {}  # node type -> is it a `name`?

        def run(env: Env) -> list[Any]:
            out = []
            for n in env.this:
                if type(n) is Node:
                    t = n.type
                    ok = matches.get(t)
                    if ok is None:
                        ok = matches[t] = t is not None and name in type_ancestors(t)
                    if ok:
                        out.append(n)
            if strict and not out and env.this:
                raise semantic_error(f"the context is not of type {name}", expression)
            return out

        return run

    def member(self, target: Expr | None, name: str) -> Expr:
        """``target.name`` (``name`` on ``$this`` when there is no target).

        The hot path of search extraction, so the common case — one JSON property that
        holds an object or a list of objects — is handled inline, without helper calls.
        """
        strict = self.strict
        expression = self.expression
        plans: dict[str | None, Plan] = {}
        choice_keys: dict[str | None, frozenset[str]] = {}

        def run(env: Env) -> list[Any]:
            items = env.this if target is None else target(env)
            out: list[Any] = []
            for n in items:
                if type(n) is not Node:
                    continue
                src = n.data if type(n.data) is dict else n.ext
                if src is None:
                    continue
                t = n.type
                try:
                    p = plans[t]
                except KeyError:
                    p = plans[t] = plan(t, name, json_names=not strict)
                if p:
                    if len(p) == 1 and not p[0].resource:
                        step = p[0]
                        # common case inline: no `_name` sibling to merge
                        if not step.primitive or step.ext_key not in src:
                            value = src.get(step.key)
                            if value is None:
                                continue
                            if type(value) is list:
                                key, st = step.key, step.type
                                for i, v in enumerate(value):
                                    if v is not None:
                                        out.append(Node(v, st, n, key, i))
                            else:
                                out.append(Node(value, step.type, n, step.key))
                            continue
                    if len(p) == 1:
                        emit(out, n, p[0], src)
                        continue
                    # a choice element (Extension.value has 50 types): intersect the keys
                    # the object has with the keys it could have, in C, rather than probe each
                    keys = choice_keys.get(t)
                    if keys is None:
                        keys = choice_keys[t] = frozenset(k for st in p for k in (st.key, st.ext_key))
                    present = src.keys() & keys
                    if present:
                        for step in p:
                            if step.key in present or step.ext_key in present:
                                emit(out, n, step, src)
                    continue
                elif p is None or not strict:
                    emit_untyped(out, n, name, src)
                else:
                    raise semantic_error(f"{t} has no element '{name}'", expression)
            return out

        return run

    def call(self, node: s.Call) -> Expr:
        name = node.name
        definition = FUNCTIONS.get(name)
        if definition is None:
            if name in UNSUPPORTED:
                raise self.error(f"the function {name}() is not supported: {UNSUPPORTED[name]}")
            raise self.error(f"unknown function {name}()")
        if not definition.min_args <= len(node.args) <= definition.max_args:
            raise self.error(
                f"{name}() takes {_arity(definition.min_args, definition.max_args)}, got {len(node.args)}"
            )
        if (
            self.strict
            and name in _ORDERED
            and isinstance(node.target, s.Call)
            and node.target.name in _UNORDERED
        ):
            raise self.error(f"{name}() needs an ordered collection, {node.target.name}() is not ordered")
        invocation = definition.build(self, node.args)
        if node.target is None:
            return lambda env: invocation(env.this, env)
        return _chain(self._compile(node.target), invocation)

    def indexer(self, node: s.Indexer) -> Expr:
        target = self._compile(node.target)
        index = self.compile(node.index)

        def run(env: Env) -> list[Any]:
            items = target(env)
            i = single(index(env), "an index")
            if i is None or not items:
                return []
            if type(i) is not int:
                raise FHIRPathError("an index must be an integer")
            return [items[i]] if 0 <= i < len(items) else []

        return run

    # -- names ---------------------------------------------------------------------------

    def special(self, name: str) -> Expr:
        if name == "$this":
            return lambda env: env.this
        if name == "$index":
            return lambda env: [] if env.index is None else [env.index]
        return lambda env: env.total

    def variable(self, name: str) -> Expr:
        if name in ("resource", "rootResource"):
            return lambda env: env.resource
        if name == "context":
            return lambda env: env.context
        if name in _CONSTANTS:
            return _constant(_CONSTANTS[name])
        for prefix, base in _PREFIXED_CONSTANTS.items():
            if name.startswith(prefix):
                return _constant(base + name[len(prefix) :])
        expression = self.expression

        def run(env: Env) -> list[Any]:
            try:
                return env.variables[name]
            except KeyError:
                raise FHIRPathError(f"undefined variable %{name}", expression=expression) from None

        return run

    # -- types ---------------------------------------------------------------------------

    def type_spec(self, arg: s.Expr) -> fp_types.TypeSpec:
        name = s.qualified_name(arg)
        if name is None:
            raise self.error("expected a type name")
        return fp_types.resolve(name, self.expression)

    def type_test(self, node: s.TypeTest) -> Expr:
        operand = self._compile(node.operand)
        spec = fp_types.resolve(node.type_name, self.expression)
        if node.op == "is":
            matches = fp_types.is_matcher(spec)

            def is_(env: Env) -> list[Any]:
                item = single(operand(env), "'is'")
                return [] if item is None else [matches(item)]

            return is_
        keep = fp_types.as_matcher(spec)
        # The operator form filters (R4 search parameters apply it to repeating elements).
        return lambda env: [x for x in operand(env) if keep(x)]


def _union_operands(node: s.Expr) -> list[s.Expr]:
    """The operands of ``a | b | c`` (parsed as ``(a | b) | c``), in order."""
    if isinstance(node, s.Binary) and node.op == "|":
        return _union_operands(node.left) + _union_operands(node.right)
    return [node]


def _chain(target: Expr, invocation: Invocation) -> Expr:
    return lambda env: invocation(target(env), env)


def _constant(value: Any) -> Expr:
    # Closures never change the lists they are given, so one list can serve every call.
    result: list[Any] = [] if value is None else [value]
    return lambda env: result


def _arity(lo: int, hi: int) -> str:
    if lo == hi:
        return f"{lo} argument{'s' if lo != 1 else ''}"
    return f"{lo} to {hi} arguments"
