"""Functions that shape evaluation itself: iif, aggregate, sort, defineVariable, trace,
now/today/timeOfDay, type reflection and the function forms of is/as."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from yilian.fhir.fhirpath import syntax as s
from yilian.fhir.fhirpath import temporal
from yilian.fhir.fhirpath import types as fp_types
from yilian.fhir.fhirpath.env import Env, Expr, Invocation
from yilian.fhir.fhirpath.errors import FHIRPathError
from yilian.fhir.fhirpath.nodes import Node
from yilian.fhir.fhirpath.registry import eager, function
from yilian.fhir.fhirpath.values import boolean_of, compare, single
from yilian.kernel import clock

if TYPE_CHECKING:
    from yilian.fhir.fhirpath.compiler import Compiler

trace_log = logging.getLogger("yilian.fhir.fhirpath.trace")


@function("iif", 2, 3)
def _iif(c: Compiler, args: Sequence[s.Expr]) -> Invocation:
    criterion = c.compile(args[0])
    when_true = c.compile(args[1])
    otherwise = c.compile(args[2]) if len(args) > 2 else None

    def run(items: list[Any], env: Env) -> list[Any]:
        if len(items) > 1:
            raise FHIRPathError(f"iif() called on {len(items)} items")
        # invoked on an item, iif evaluates its arguments with that item as $this
        saved = env.this
        env.this = items
        cond = criterion(env)
        if len(cond) > 1:
            raise FHIRPathError("iif() criterion gave more than one item")
        value = boolean_of(cond[0]) if cond else False
        if value is not True and value is not False:
            raise FHIRPathError("iif() criterion must be a boolean")
        branch = when_true if value else otherwise
        result = branch(env) if branch is not None else []
        env.this = saved
        return result

    return run


@function("aggregate", 1, 2)
def _aggregate(c: Compiler, args: Sequence[s.Expr]) -> Invocation:
    aggregator = c.compile(args[0])
    init = c.compile(args[1]) if len(args) > 1 else None

    def run(items: list[Any], env: Env) -> list[Any]:
        total = init(env) if init is not None else []
        saved = env.this, env.index, env.total
        for i, item in enumerate(items):
            env.this = [item]
            env.index = i
            env.total = total
            total = aggregator(env)
        env.this, env.index, env.total = saved
        return total

    return run


def _order(a: Any, b: Any) -> int:
    # an item without a key sorts after every item with one
    if a is None or b is None:
        return 0 if a is b else (1 if a is None else -1)
    c = compare(a, b)
    return 0 if c is None else c


@function("sort", 0, 99)
def _sort(c: Compiler, args: Sequence[s.Expr]) -> Invocation:
    # a leading minus on a key means "descending", also for strings (sort(-family))
    keys: list[tuple[Expr, bool]] = []
    for arg in args:
        if isinstance(arg, s.Unary) and arg.op == "-":
            keys.append((c.compile(arg.operand), True))
        else:
            keys.append((c.compile(arg), False))

    def run(items: list[Any], env: Env) -> list[Any]:
        if not keys:
            return sorted(items, key=functools.cmp_to_key(_order))
        saved_this, saved_index = env.this, env.index
        decorated = []
        for i, item in enumerate(items):
            env.this = [item]
            env.index = i
            decorated.append((item, [single(k(env), "sort() key") for k, _ in keys]))
        env.this, env.index = saved_this, saved_index

        def cmp(x: tuple[Any, list[Any]], y: tuple[Any, list[Any]]) -> int:
            for (_, descending), a, b in zip(keys, x[1], y[1], strict=True):
                r = _order(a, b)
                if r:
                    return -r if descending else r
            return 0

        return [item for item, _ in sorted(decorated, key=functools.cmp_to_key(cmp))]

    return run


_RESERVED_VARIABLES = frozenset({"resource", "rootResource", "context", "ucum", "sct", "loinc"})


@function("defineVariable", 1, 2)
def _define_variable(c: Compiler, args: Sequence[s.Expr]) -> Invocation:
    name_arg = args[0]
    if not (isinstance(name_arg, s.Literal) and isinstance(name_arg.value, str)):
        raise c.error("defineVariable() needs the variable name as a string literal")
    name = name_arg.value
    if name in _RESERVED_VARIABLES:
        raise c.error(f"%{name} is a built-in variable")
    value_expr = c.compile(args[1]) if len(args) > 1 else None

    def run(items: list[Any], env: Env) -> list[Any]:
        if name in env.variables:
            raise FHIRPathError(f"variable %{name} is already defined")
        if value_expr is None:
            value = items
        else:
            saved = env.this
            env.this = items
            value = value_expr(env)
            env.this = saved
        # copy on write: an enclosing scope restores the dict it had
        env.variables = {**env.variables, name: value}
        return items

    return run


@function("trace", 1, 2)
def _trace(c: Compiler, args: Sequence[s.Expr]) -> Invocation:
    label = c.compile(args[0])
    projection = c.compile(args[1]) if len(args) > 1 else None

    def run(items: list[Any], env: Env) -> list[Any]:
        if trace_log.isEnabledFor(logging.DEBUG):
            shown = items
            if projection is not None:
                saved = env.this
                env.this = items
                shown = projection(env)
                env.this = saved
            trace_log.debug("%s: %r", label(env), shown)
        return items

    return run


def _moment(env: Env) -> tuple[temporal.FPDateTime, temporal.FPDate, temporal.FPTime]:
    if env.moment is None:
        env.moment = temporal.now_values(clock.now().astimezone())
    return env.moment  # type: ignore[no-any-return]


@eager("now")
def _now(items: list[Any], env: Env) -> list[Any]:
    return [_moment(env)[0]]


@eager("today")
def _today(items: list[Any], env: Env) -> list[Any]:
    return [_moment(env)[1]]


@eager("timeOfDay")
def _time_of_day(items: list[Any], env: Env) -> list[Any]:
    return [_moment(env)[2]]


@eager("type")
def _type(items: list[Any], env: Env) -> list[Any]:
    return [Node(fp_types.type_info(x), None) for x in items]


@function("is", 1)
def _is(c: Compiler, args: Sequence[s.Expr]) -> Invocation:
    matches = fp_types.is_matcher(c.type_spec(args[0]))

    def run(items: list[Any], env: Env) -> list[Any]:
        item = single(items, "is()")
        return [] if item is None else [matches(item)]

    return run


@function("as", 1)
def _as(c: Compiler, args: Sequence[s.Expr]) -> Invocation:
    keep = fp_types.as_matcher(c.type_spec(args[0]))

    def run(items: list[Any], env: Env) -> list[Any]:
        item = single(items, "as()")
        return [item] if item is not None and keep(item) else []

    return run
