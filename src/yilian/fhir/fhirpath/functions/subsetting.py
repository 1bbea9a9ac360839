"""Subsetting and combining: single, first, last, tail, skip, take, intersect, exclude,
union, combine."""

from __future__ import annotations

from typing import Any

from yilian.fhir.fhirpath.env import Env
from yilian.fhir.fhirpath.errors import FHIRPathError
from yilian.fhir.fhirpath.operators import union
from yilian.fhir.fhirpath.registry import argument_value, eager
from yilian.fhir.fhirpath.values import Distinct


@eager("single")
def _single(items: list[Any], env: Env) -> list[Any]:
    if len(items) > 1:
        raise FHIRPathError(f"single() found {len(items)} items")
    return items


@eager("first")
def _first(items: list[Any], env: Env) -> list[Any]:
    return items[:1]


@eager("last")
def _last(items: list[Any], env: Env) -> list[Any]:
    return items[-1:]


@eager("tail")
def _tail(items: list[Any], env: Env) -> list[Any]:
    return items[1:]


def _count_argument(arg: list[Any], name: str) -> int | None:
    n = argument_value(arg, f"{name}() argument")
    if n is None:
        return None
    if type(n) is not int:
        raise FHIRPathError(f"{name}() needs an integer")
    return n


@eager("skip", 1)
def _skip(items: list[Any], env: Env, arg: list[Any]) -> list[Any]:
    n = _count_argument(arg, "skip")
    if n is None:
        return []
    return items[max(n, 0) :]


@eager("take", 1)
def _take(items: list[Any], env: Env, arg: list[Any]) -> list[Any]:
    n = _count_argument(arg, "take")
    if n is None or n <= 0:
        return []
    return items[:n]


@eager("intersect", 1)
def _intersect(items: list[Any], env: Env, other: list[Any]) -> list[Any]:
    theirs = Distinct()
    for x in other:
        theirs.add(x)
    out = Distinct()
    for x in items:
        if theirs.contains(x):
            out.add(x)
    return out.items


@eager("exclude", 1)
def _exclude(items: list[Any], env: Env, other: list[Any]) -> list[Any]:
    theirs = Distinct()
    for x in other:
        theirs.add(x)
    return [x for x in items if not theirs.contains(x)]


@eager("union", 1)
def _union(items: list[Any], env: Env, other: list[Any]) -> list[Any]:
    return union(items, other)


@eager("combine", 1)
def _combine(items: list[Any], env: Env, other: list[Any]) -> list[Any]:
    return items + other
