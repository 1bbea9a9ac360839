"""Precision-aware functions (FHIRPath 2.0): precision, lowBoundary, highBoundary,
comparable, and the component accessors yearOf … millisecondOf."""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from yilian.fhir.fhirpath import quantity, temporal
from yilian.fhir.fhirpath.env import Env
from yilian.fhir.fhirpath.errors import FHIRPathError
from yilian.fhir.fhirpath.quantity import FPQuantity
from yilian.fhir.fhirpath.registry import eager
from yilian.fhir.fhirpath.temporal import FPDate, FPDateTime, FPTime
from yilian.fhir.fhirpath.values import single, to_system, type_label

_MAX_DECIMAL_DIGITS = 31


def _scale(d: Decimal) -> int:
    exp = d.as_tuple().exponent
    return -exp if isinstance(exp, int) and exp < 0 else 0


def _decimal_boundary(value: Decimal, digits: int, *, high: bool) -> Decimal:
    """The lowest/highest value a decimal written with its digits can stand for.

    1.587 stands for [1.5865, 1.5875); the result is cut to ``digits`` decimal places
    (the low end truncated, the high end rounded), mirrored for negative values.
    """
    if value < 0:
        return -_decimal_boundary(-value, digits, high=not high)
    with localcontext() as ctx:
        ctx.prec = 80
        half = Decimal(5).scaleb(-(_scale(value) + 1))
        places = Decimal(1).scaleb(-digits)
        if high:
            return (value + half).quantize(places, rounding=ROUND_HALF_UP)
        return (value - half).quantize(places, rounding=ROUND_DOWN)


def _digits_argument(args: tuple[list[Any], ...]) -> int | None:
    if not args:
        return None
    value = to_system(single(args[0], "precision argument"))
    if value is not None and type(value) is not int:
        raise FHIRPathError("the precision argument must be an integer")
    return value


def _boundary(items: list[Any], args: tuple[list[Any], ...], *, high: bool) -> list[Any]:
    name = "highBoundary()" if high else "lowBoundary()"
    item = single(items, name)
    if item is None:
        return []
    x = to_system(item)
    digits = _digits_argument(args)
    if type(x) in (FPDate, FPDateTime, FPTime):
        b = temporal.boundary(x, digits, high=high)
        return [] if b is None else [b]
    if type(x) in (int, Decimal, FPQuantity):
        number = x.value if type(x) is FPQuantity else Decimal(x)
        d = 8 if digits is None else digits
        if not 0 <= d <= _MAX_DECIMAL_DIGITS:
            return []
        result = _decimal_boundary(number, d, high=high)
        return [FPQuantity(result, x.unit) if type(x) is FPQuantity else result]
    raise FHIRPathError(f"{name} expects a number, quantity or date/time, got {type_label(item)}")


@eager("lowBoundary", 0, 1)
def _low_boundary(items: list[Any], env: Env, *args: list[Any]) -> list[Any]:
    return _boundary(items, args, high=False)


@eager("highBoundary", 0, 1)
def _high_boundary(items: list[Any], env: Env, *args: list[Any]) -> list[Any]:
    return _boundary(items, args, high=True)


@eager("precision")
def _precision(items: list[Any], env: Env) -> list[Any]:
    item = single(items, "precision()")
    if item is None:
        return []
    x = to_system(item)
    if type(x) in (FPDate, FPDateTime, FPTime):
        return [temporal.boundary_precision(x)]
    if type(x) is Decimal:
        return [_scale(x)]
    if type(x) is int:
        return [0]
    if type(x) is FPQuantity:
        return [_scale(x.value)]
    raise FHIRPathError(f"precision() expects a number or date/time, got {type_label(item)}")


@eager("comparable", 1)
def _comparable(items: list[Any], env: Env, other: list[Any]) -> list[Any]:
    a = to_system(single(items, "comparable()"))
    b = to_system(single(other, "comparable() argument"))
    if a is None or b is None:
        return []
    if type(a) is not FPQuantity or type(b) is not FPQuantity:
        raise FHIRPathError("comparable() works on quantities")
    return [quantity.compare(a, b) is not None]


def _component(name: str, index: int, kinds: tuple[type, ...]) -> None:
    def impl(items: list[Any], env: Env) -> list[Any]:
        x = to_system(single(items, f"{name}()"))
        if x is None:
            return []
        if type(x) not in kinds:
            raise FHIRPathError(f"{name}() expects a {'/'.join(k.__name__[2:] for k in kinds)}")
        offset = 3 if type(x) is FPTime else 0
        fields = x.fields
        i = index - offset
        if index == 6:  # milliseconds live in the fraction
            frac = x.frac if type(x) in (FPDateTime, FPTime) else None
            return [int((frac + "000")[:3])] if frac else []
        return [fields[i]] if 0 <= i < len(fields) else []

    eager(name)(impl)


_DATES = (FPDate, FPDateTime)
_TIMES = (FPDateTime, FPTime)
_component("yearOf", 0, _DATES)
_component("monthOf", 1, _DATES)
_component("dayOf", 2, _DATES)
_component("hourOf", 3, _TIMES)
_component("minuteOf", 4, _TIMES)
_component("secondOf", 5, _TIMES)
_component("millisecondOf", 6, _TIMES)


@eager("dateOf")
def _date_of(items: list[Any], env: Env) -> list[Any]:
    x = to_system(single(items, "dateOf()"))
    if type(x) in _DATES:
        return [FPDate(x.fields[:3])]
    return []


@eager("timeOf")
def _time_of(items: list[Any], env: Env) -> list[Any]:
    x = to_system(single(items, "timeOf()"))
    if type(x) is FPDateTime and len(x.fields) > 3:
        return [FPTime(x.fields[3:], x.frac)]
    return []


@eager("timezoneOffsetOf")
def _timezone_offset_of(items: list[Any], env: Env) -> list[Any]:
    x = to_system(single(items, "timezoneOffsetOf()"))
    if type(x) is FPDateTime and x.tz is not None:
        return [Decimal(temporal.tz_minutes(x.tz)) / 60]
    return []
