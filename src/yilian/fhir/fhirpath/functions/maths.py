"""Math functions: abs, ceiling, exp, floor, ln, log, power, round, sqrt, truncate."""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from yilian.fhir.fhirpath.env import Env
from yilian.fhir.fhirpath.errors import FHIRPathError
from yilian.fhir.fhirpath.quantity import FPQuantity
from yilian.fhir.fhirpath.registry import eager
from yilian.fhir.fhirpath.values import single, to_system, type_label


def _number(items: list[Any], name: str) -> int | Decimal | FPQuantity | None:
    item = single(items, f"{name}()")
    if item is None:
        return None
    value = to_system(item)
    if type(value) not in (int, Decimal, FPQuantity):
        raise FHIRPathError(f"{name}() expects a number, got {type_label(item)}")
    return value  # type: ignore[no-any-return]


def _math(name: str, fn: Callable[[Decimal], Any], *, keep_int: bool = False) -> None:
    def impl(items: list[Any], env: Env) -> list[Any]:
        x = _number(items, name)
        if x is None:
            return []
        if type(x) is FPQuantity:
            raise FHIRPathError(f"{name}() expects a number, got a Quantity")
        if keep_int and type(x) is int:
            return [x]
        try:
            result = fn(Decimal(x))  # type: ignore[arg-type]
        except (ArithmeticError, ValueError):  # Decimal overflow/invalid, domain errors
            return []
        return [] if result is None else [result]

    eager(name)(impl)


def _sqrt(x: Decimal) -> Decimal | None:
    return None if x < 0 else x.sqrt()


def _ln(x: Decimal) -> Decimal | None:
    return None if x <= 0 else x.ln()


_math("ceiling", lambda x: int(x.to_integral_value(rounding=ROUND_CEILING)), keep_int=True)
_math("floor", lambda x: int(x.to_integral_value(rounding=ROUND_FLOOR)), keep_int=True)
_math("truncate", lambda x: int(x), keep_int=True)
_math("exp", lambda x: x.exp())
_math("ln", _ln)
_math("sqrt", _sqrt)


@eager("abs")
def _abs(items: list[Any], env: Env) -> list[Any]:
    x = _number(items, "abs")
    if x is None:
        return []
    if type(x) is FPQuantity:
        return [FPQuantity(abs(x.value), x.unit)]
    return [abs(x)]  # type: ignore[arg-type]


def _plain_number(arg: list[Any], name: str) -> int | Decimal | None:
    value = to_system(single(arg, f"argument of {name}()"))
    if value is None:
        return None
    if type(value) not in (int, Decimal):
        raise FHIRPathError(f"{name}() expects a number argument")
    return value  # type: ignore[no-any-return]


@eager("log", 1)
def _log(items: list[Any], env: Env, base_arg: list[Any]) -> list[Any]:
    x = _number(items, "log")
    base = _plain_number(base_arg, "log")
    if x is None or base is None or type(x) is FPQuantity:
        return []
    value, b = Decimal(x), Decimal(base)  # type: ignore[arg-type]
    if value <= 0 or b <= 0 or b == 1:
        return []
    # ln ratios carry noise in their last digits (16.log(2) would be 3.99…9): work with
    # extra digits, then round back to the context's precision
    with localcontext() as ctx:
        ctx.prec += 20
        ratio = value.ln() / b.ln()
    return [+ratio]


@eager("power", 1)
def _power(items: list[Any], env: Env, exponent_arg: list[Any]) -> list[Any]:
    x = _number(items, "power")
    e = _plain_number(exponent_arg, "power")
    if x is None or e is None or type(x) is FPQuantity:
        return []
    if type(x) is int and type(e) is int and e >= 0:
        return [x**e]
    try:
        result = Decimal(x) ** Decimal(e)  # type: ignore[arg-type]
    except ArithmeticError:
        return []
    return [] if result.is_nan() else [result]


@eager("round", 0, 1)
def _round(items: list[Any], env: Env, *precision_arg: list[Any]) -> list[Any]:
    x = _number(items, "round")
    if x is None or type(x) is FPQuantity:
        return []
    digits = _plain_number(precision_arg[0], "round") if precision_arg else 0
    if digits is None:
        digits = 0
    if type(digits) is not int or digits < 0:
        raise FHIRPathError("round() expects a non-negative integer precision")
    return [Decimal(x).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)]  # type: ignore[arg-type]
