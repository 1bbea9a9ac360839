"""Existence functions: empty, exists, all, allTrue…, subsetOf, count, distinct, not."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from yilian.fhir.fhirpath import syntax as s
from yilian.fhir.fhirpath.env import Env, Invocation
from yilian.fhir.fhirpath.registry import eager, function
from yilian.fhir.fhirpath.values import Distinct, distinct, member_of, strict_boolean, test

if TYPE_CHECKING:
    from yilian.fhir.fhirpath.compiler import Compiler


@eager("empty")
def _empty(items: list[Any], env: Env) -> list[Any]:
    return [not items]


@function("exists", 0, 1)
def _exists(c: Compiler, args: Sequence[s.Expr]) -> Invocation:
    if not args:
        return lambda items, env: [bool(items)]
    criteria = c.compile(args[0])

    def run(items: list[Any], env: Env) -> list[Any]:
        saved_this, saved_index = env.this, env.index
        found = False
        for i, item in enumerate(items):
            env.this = [item]
            env.index = i
            if test(criteria(env), "exists() criteria") is True:
                found = True
                break
        env.this, env.index = saved_this, saved_index
        return [found]

    return run


@function("all", 1)
def _all(c: Compiler, args: Sequence[s.Expr]) -> Invocation:
    criteria = c.compile(args[0])

    def run(items: list[Any], env: Env) -> list[Any]:
        saved_this, saved_index = env.this, env.index
        ok = True
        for i, item in enumerate(items):
            env.this = [item]
            env.index = i
            if test(criteria(env), "all() criteria") is not True:
                ok = False
                break
        env.this, env.index = saved_this, saved_index
        return [ok]

    return run


def _booleans(items: list[Any], name: str) -> list[bool]:
    # every item is checked, not just up to the first decisive one: a non-boolean is an error
    return [strict_boolean(x, name) for x in items]


@eager("allTrue")
def _all_true(items: list[Any], env: Env) -> list[Any]:
    return [all(_booleans(items, "allTrue()"))]


@eager("anyTrue")
def _any_true(items: list[Any], env: Env) -> list[Any]:
    return [any(_booleans(items, "anyTrue()"))]


@eager("allFalse")
def _all_false(items: list[Any], env: Env) -> list[Any]:
    return [not any(_booleans(items, "allFalse()"))]


@eager("anyFalse")
def _any_false(items: list[Any], env: Env) -> list[Any]:
    return [not all(_booleans(items, "anyFalse()"))]


@eager("subsetOf", 1)
def _subset_of(items: list[Any], env: Env, other: list[Any]) -> list[Any]:
    return [all(member_of(x, other) for x in items)]


@eager("supersetOf", 1)
def _superset_of(items: list[Any], env: Env, other: list[Any]) -> list[Any]:
    return [all(member_of(x, items) for x in other)]


@eager("count")
def _count(items: list[Any], env: Env) -> list[Any]:
    return [len(items)]


@eager("distinct")
def _distinct(items: list[Any], env: Env) -> list[Any]:
    return distinct(items)


@eager("isDistinct")
def _is_distinct(items: list[Any], env: Env) -> list[Any]:
    seen = Distinct()
    return [all(seen.add(x) for x in items)]


@eager("not")
def _not(items: list[Any], env: Env) -> list[Any]:
    value = test(items, "not()")
    return [] if value is None else [not value]
