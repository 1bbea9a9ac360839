"""Conversion functions: toBoolean … toQuantity and their convertsTo… predicates."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from yilian.fhir.fhirpath import quantity, temporal
from yilian.fhir.fhirpath.env import Env
from yilian.fhir.fhirpath.quantity import FPQuantity
from yilian.fhir.fhirpath.registry import argument_value, eager
from yilian.fhir.fhirpath.temporal import FPDate, FPDateTime, FPTime
from yilian.fhir.fhirpath.values import single, to_system

_TRUE = frozenset({"true", "t", "yes", "y", "1", "1.0"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "0.0"})
_INTEGER = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?\d+(\.\d+)?")


def to_boolean(x: Any) -> bool | None:
    t = type(x)
    if t is bool:
        return bool(x)
    if t is int or t is Decimal:
        return True if x == 1 else False if x == 0 else None
    if t is str:
        low = x.lower()
        return True if low in _TRUE else False if low in _FALSE else None
    return None


def to_integer(x: Any) -> int | None:
    t = type(x)
    if t is int:
        return int(x)
    if t is bool:
        return 1 if x else 0
    if t is str and _INTEGER.fullmatch(x):
        return int(x)
    return None


def to_decimal(x: Any) -> Decimal | None:
    t = type(x)
    if t is Decimal:
        return Decimal(x)
    if t is int:
        return Decimal(x)
    if t is bool:
        return Decimal("1.0") if x else Decimal("0.0")
    if t is str and _DECIMAL.fullmatch(x):
        return Decimal(x)
    return None


def format_decimal(d: Decimal) -> str:
    return format(d, "f")


def to_string(x: Any) -> str | None:
    t = type(x)
    if t is str:
        return str(x)
    if t is bool:
        return "true" if x else "false"
    if t is int:
        return str(x)
    if t is Decimal:
        return format_decimal(x)
    if t in (FPDate, FPDateTime, FPTime, FPQuantity):
        return str(x)
    return None


def to_date(x: Any) -> FPDate | None:
    if type(x) is FPDate:
        return x
    if type(x) is FPDateTime:
        return FPDate(x.fields[:3])
    if type(x) is str:
        parsed = temporal.parse_date(x)
        if parsed is None:
            dt = temporal.parse_datetime(x)
            return FPDate(dt.fields[:3]) if dt is not None else None
        return parsed
    return None


def to_datetime(x: Any) -> FPDateTime | None:
    if type(x) is FPDateTime:
        return x
    if type(x) is FPDate:
        return FPDateTime(x.fields)
    if type(x) is str:
        return temporal.parse_datetime(x)
    return None


def to_time(x: Any) -> FPTime | None:
    if type(x) is FPTime:
        return x
    if type(x) is str:
        return temporal.parse_time(x)
    return None


def to_quantity(x: Any, unit: str | None = None) -> FPQuantity | None:
    t = type(x)
    q: FPQuantity | None
    if t is FPQuantity:
        q = x
    elif t is int or t is Decimal:
        q = FPQuantity(Decimal(x), "1")
    elif t is bool:
        q = FPQuantity(Decimal("1.0") if x else Decimal("0.0"), "1")
    elif t is str:
        q = quantity.parse(x)
    else:
        q = None
    if q is not None and unit is not None and unit != q.unit:
        return quantity.convert_to(q, unit)
    return q


def _register(name: str, convert: Callable[[Any], Any]) -> None:
    def to(items: list[Any], env: Env) -> list[Any]:
        item = single(items, f"to{name}()")
        if item is None:
            return []
        value = convert(to_system(item))
        return [] if value is None else [value]

    def converts(items: list[Any], env: Env) -> list[Any]:
        item = single(items, f"convertsTo{name}()")
        if item is None:
            return []
        return [convert(to_system(item)) is not None]

    eager(f"to{name}")(to)
    eager(f"convertsTo{name}")(converts)


for _name, _convert in (
    ("Boolean", to_boolean),
    ("Integer", to_integer),
    ("Decimal", to_decimal),
    ("String", to_string),
    ("Date", to_date),
    ("DateTime", to_datetime),
    ("Time", to_time),
):
    _register(_name, _convert)


def _unit_argument(args: tuple[list[Any], ...]) -> str | None:
    if not args:
        return None
    unit = to_system(argument_value(args[0], "unit"))
    return unit if type(unit) is str else None


@eager("toQuantity", 0, 1)
def _to_quantity(items: list[Any], env: Env, *args: list[Any]) -> list[Any]:
    item = single(items, "toQuantity()")
    if item is None:
        return []
    q = to_quantity(to_system(item), _unit_argument(args))
    return [] if q is None else [q]


@eager("convertsToQuantity", 0, 1)
def _converts_to_quantity(items: list[Any], env: Env, *args: list[Any]) -> list[Any]:
    item = single(items, "convertsToQuantity()")
    if item is None:
        return []
    return [to_quantity(to_system(item), _unit_argument(args)) is not None]
