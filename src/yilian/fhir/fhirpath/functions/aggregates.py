"""Aggregates over a whole collection (FHIRPath 2.1 draft): sum, min, max, avg."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from yilian.fhir.fhirpath import quantity
from yilian.fhir.fhirpath.env import Env
from yilian.fhir.fhirpath.errors import FHIRPathError
from yilian.fhir.fhirpath.quantity import FPQuantity
from yilian.fhir.fhirpath.registry import eager
from yilian.fhir.fhirpath.values import compare, to_system, type_label


def _numbers(items: list[Any], name: str) -> list[Any]:
    values = [to_system(x) for x in items]
    for v, item in zip(values, items, strict=True):
        if type(v) not in (int, Decimal, FPQuantity):
            raise FHIRPathError(f"{name}() expects numbers or quantities, got {type_label(item)}")
    return values


@eager("sum")
def _sum(items: list[Any], env: Env) -> list[Any]:
    values = _numbers(items, "sum")
    if not values:
        return [0]
    total = values[0]
    for v in values[1:]:
        if type(total) is FPQuantity or type(v) is FPQuantity:
            if type(total) is not FPQuantity or type(v) is not FPQuantity:
                raise FHIRPathError("sum() cannot add numbers and quantities")
            total = quantity.add(total, v, 1)
            if total is None:
                return []
        else:
            total = total + v
    return [total]


@eager("avg")
def _avg(items: list[Any], env: Env) -> list[Any]:
    values = _numbers(items, "avg")
    if not values:
        return []
    if any(type(v) is FPQuantity for v in values):
        raise FHIRPathError("avg() works on numbers")
    return [sum((Decimal(v) for v in values), Decimal(0)) / len(values)]


def _extreme(items: list[Any], name: str, sign: int) -> list[Any]:
    best: Any = None
    for item in items:
        value = to_system(item)
        if best is None:
            best = value
            continue
        c = compare(value, best)
        if c is None:
            return []
        if c * sign > 0:
            best = value
    return [] if best is None else [best]


@eager("min")
def _min(items: list[Any], env: Env) -> list[Any]:
    return _extreme(items, "min", -1)


@eager("max")
def _max(items: list[Any], env: Env) -> list[Any]:
    return _extreme(items, "max", 1)
