"""Filtering and projection: where, select, repeat, ofType."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from yilian.fhir.fhirpath import syntax as s
from yilian.fhir.fhirpath import types as fp_types
from yilian.fhir.fhirpath.env import Env, Invocation
from yilian.fhir.fhirpath.nodes import Node
from yilian.fhir.fhirpath.registry import function
from yilian.fhir.fhirpath.values import Distinct, test

if TYPE_CHECKING:
    from yilian.fhir.fhirpath.compiler import Compiler


@function("where", 1)
def _where(c: Compiler, args: Sequence[s.Expr]) -> Invocation:
    criteria = c.compile(args[0])

    def run(items: list[Any], env: Env) -> list[Any]:
        if not items:
            return items
        saved_this, saved_index = env.this, env.index
        out = []
        for i, item in enumerate(items):
            env.this = [item]
            env.index = i
            if test(criteria(env), "where() criteria") is True:
                out.append(item)
        env.this, env.index = saved_this, saved_index
        return out

    return run


@function("select", 1)
def _select(c: Compiler, args: Sequence[s.Expr]) -> Invocation:
    projection = c.compile(args[0])

    def run(items: list[Any], env: Env) -> list[Any]:
        saved_this, saved_index = env.this, env.index
        out: list[Any] = []
        for i, item in enumerate(items):
            env.this = [item]
            env.index = i
            out.extend(projection(env))
        env.this, env.index = saved_this, saved_index
        return out

    return run


def _identity(item: Any) -> Any:
    # nodes are the same element when they are the same JSON object at the same place
    if type(item) is Node:
        if type(item.data) is dict:
            return ("node", id(item.data))
        return ("leaf", id(item.parent.data) if item.parent else 0, item.key, item.index)
    return None


@function("repeat", 1)
def _repeat(c: Compiler, args: Sequence[s.Expr]) -> Invocation:
    projection = c.compile(args[0])

    def run(items: list[Any], env: Env) -> list[Any]:
        saved_this, saved_index = env.this, env.index
        seen_nodes: set[Any] = set()
        values = Distinct()  # system values repeat forever unless equal ones are dropped
        out: list[Any] = []
        queue = deque(items)
        while queue:
            item = queue.popleft()
            env.this = [item]
            env.index = None
            for produced in projection(env):
                key = _identity(produced)
                if key is not None:
                    if key in seen_nodes:
                        continue
                    seen_nodes.add(key)
                elif not values.add(produced):
                    continue
                out.append(produced)
                queue.append(produced)
        env.this, env.index = saved_this, saved_index
        return out

    return run


@function("ofType", 1)
def _of_type(c: Compiler, args: Sequence[s.Expr]) -> Invocation:
    keep = fp_types.as_matcher(c.type_spec(args[0]))
    return lambda items, env: [x for x in items if keep(x)]
