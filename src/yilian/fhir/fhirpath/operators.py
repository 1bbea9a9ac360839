"""Closures for FHIRPath's operators: equality, comparison, boolean logic, arithmetic,
union and membership, each with the specification's rules for empty collections."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, DivisionByZero, InvalidOperation, Overflow
from typing import Any

from yilian.fhir.fhirpath import quantity, temporal
from yilian.fhir.fhirpath.env import Env, Expr
from yilian.fhir.fhirpath.errors import FHIRPathError
from yilian.fhir.fhirpath.quantity import FPQuantity
from yilian.fhir.fhirpath.values import (
    TEMPORALS,
    Distinct,
    collections_equal,
    collections_equivalent,
    compare,
    equal,
    member_of,
    single,
    test,
    to_system,
    type_label,
)

_NUMBERS = (int, Decimal)


def binary(op: str, left: Expr, right: Expr) -> Expr:
    builder = _BUILDERS.get(op)
    if builder is None:
        raise FHIRPathError(f"unknown operator {op}", kind="syntax")
    return builder(left, right)


# -- equality -----------------------------------------------------------------------------


def _equals(left: Expr, right: Expr) -> Expr:
    def run(env: Env) -> list[Any]:
        a = left(env)
        if not a:
            return []
        b = right(env)
        if not b:
            return []
        e = equal(a[0], b[0]) if len(a) == 1 and len(b) == 1 else collections_equal(a, b)
        return [] if e is None else [e]

    return run


def _not_equals(left: Expr, right: Expr) -> Expr:
    eq = _equals(left, right)

    def run(env: Env) -> list[Any]:
        r = eq(env)
        return [not r[0]] if r else r

    return run


def _equivalent(left: Expr, right: Expr) -> Expr:
    return lambda env: [collections_equivalent(left(env), right(env))]


def _not_equivalent(left: Expr, right: Expr) -> Expr:
    return lambda env: [not collections_equivalent(left(env), right(env))]


# -- ordering -----------------------------------------------------------------------------


def _ordering(test_sign: Callable[[int], bool], symbol: str) -> Callable[[Expr, Expr], Expr]:
    def build(left: Expr, right: Expr) -> Expr:
        def run(env: Env) -> list[Any]:
            a = single(left(env), f"'{symbol}'")
            b = single(right(env), f"'{symbol}'")
            if a is None or b is None:
                return []
            c = compare(a, b)
            return [] if c is None else [test_sign(c)]

        return run

    return build


# -- boolean logic (three-valued) ---------------------------------------------------------


def _and(left: Expr, right: Expr) -> Expr:
    def run(env: Env) -> list[Any]:
        a = test(left(env), "left of 'and'")
        if a is False:
            return [False]
        b = test(right(env), "right of 'and'")
        if b is False:
            return [False]
        return [True] if a is True and b is True else []

    return run


def _or(left: Expr, right: Expr) -> Expr:
    def run(env: Env) -> list[Any]:
        a = test(left(env), "left of 'or'")
        if a is True:
            return [True]
        b = test(right(env), "right of 'or'")
        if b is True:
            return [True]
        return [False] if a is False and b is False else []

    return run


def _xor(left: Expr, right: Expr) -> Expr:
    def run(env: Env) -> list[Any]:
        a = test(left(env), "left of 'xor'")
        b = test(right(env), "right of 'xor'")
        return [] if a is None or b is None else [a != b]

    return run


def _implies(left: Expr, right: Expr) -> Expr:
    def run(env: Env) -> list[Any]:
        a = test(left(env), "left of 'implies'")
        if a is False:
            return [True]
        b = test(right(env), "right of 'implies'")
        if b is True:
            return [True]
        if a is True and b is False:
            return [False]
        return []

    return run


# -- collections --------------------------------------------------------------------------


def union(a: list[Any], b: list[Any]) -> list[Any]:
    d = Distinct()
    for item in a:
        d.add(item)
    for item in b:
        d.add(item)
    return d.items


def _union(left: Expr, right: Expr) -> Expr:
    return union_of([left, right])


def union_of(operands: list[Expr]) -> Expr:
    """``a | b | c …`` as one step: evaluate every operand, drop duplicates once.

    Search parameters over several resource types are long unions where all operands
    but one are empty; deduplicating pairwise would compare the same items again at
    every ``|``."""

    def run(env: Env) -> list[Any]:
        found = [r for r in (op(env) for op in operands) if r]
        if not found:
            return []
        if len(found) == 1 and len(found[0]) == 1:
            return found[0]
        d = Distinct()
        for items in found:
            for item in items:
                d.add(item)
        return d.items

    return run


def _in(left: Expr, right: Expr) -> Expr:
    def run(env: Env) -> list[Any]:
        item = single(left(env), "'in'")
        if item is None:
            return []
        return [member_of(item, right(env))]

    return run


def _contains(left: Expr, right: Expr) -> Expr:
    def run(env: Env) -> list[Any]:
        item = single(right(env), "'contains'")
        if item is None:
            return []
        return [member_of(item, left(env))]

    return run


# -- arithmetic ---------------------------------------------------------------------------


def _arithmetic(op: str, fn: Callable[[Any, Any], Any]) -> Callable[[Expr, Expr], Expr]:
    def build(left: Expr, right: Expr) -> Expr:
        def run(env: Env) -> list[Any]:
            a = single(left(env), f"'{op}'")
            b = single(right(env), f"'{op}'")
            if a is None or b is None:
                return []
            x, y = to_system(a), to_system(b)
            if x is None or y is None:
                return []
            try:
                result = fn(x, y)
            except (DivisionByZero, InvalidOperation, Overflow, OverflowError):
                return []  # out of range: the result is empty, as for division by zero
            return [] if result is None else [result]

        return run

    return build


def _type_error(op: str, x: Any, y: Any) -> FHIRPathError:
    return FHIRPathError(f"cannot apply '{op}' to {type_label(x)} and {type_label(y)}")


def _is_number(x: Any) -> bool:
    return type(x) in _NUMBERS


def _plus(x: Any, y: Any) -> Any:
    tx, ty = type(x), type(y)
    if tx is str and ty is str:
        return x + y
    if _is_number(x) and _is_number(y):
        return x + y
    if tx in TEMPORALS and ty is FPQuantity:
        return temporal.add(x, y.value, y.unit)
    if tx is FPQuantity and ty is FPQuantity:
        return quantity.add(x, y, 1)
    raise _type_error("+", x, y)


def _minus(x: Any, y: Any) -> Any:
    tx, ty = type(x), type(y)
    if _is_number(x) and _is_number(y):
        return x - y
    if tx in TEMPORALS and ty is FPQuantity:
        return temporal.add(x, -y.value, y.unit)
    if tx is FPQuantity and ty is FPQuantity:
        return quantity.add(x, y, -1)
    raise _type_error("-", x, y)


def _times(x: Any, y: Any) -> Any:
    tx, ty = type(x), type(y)
    if _is_number(x) and _is_number(y):
        return x * y
    if tx is FPQuantity and ty is FPQuantity:
        return quantity.multiply(x, y)
    if tx is FPQuantity and _is_number(y):
        return FPQuantity(x.value * y, x.unit)
    if _is_number(x) and ty is FPQuantity:
        return FPQuantity(x * y.value, y.unit)
    raise _type_error("*", x, y)


def _divide(x: Any, y: Any) -> Any:
    tx, ty = type(x), type(y)
    try:
        if _is_number(x) and _is_number(y):
            return None if y == 0 else Decimal(x) / Decimal(y)
        if tx is FPQuantity and ty is FPQuantity:
            return quantity.divide(x, y)
        if tx is FPQuantity and _is_number(y):
            return None if y == 0 else FPQuantity(x.value / Decimal(y), x.unit)
    except (DivisionByZero, InvalidOperation):
        return None
    raise _type_error("/", x, y)


def _div(x: Any, y: Any) -> Any:
    if not (_is_number(x) and _is_number(y)):
        raise _type_error("div", x, y)
    if y == 0:
        return None
    if type(x) is int and type(y) is int:
        q = abs(x) // abs(y)
        return q if (x >= 0) == (y >= 0) else -q
    return Decimal(x) // Decimal(y)  # Decimal's // truncates toward zero, as FHIRPath wants


def _mod(x: Any, y: Any) -> Any:
    if not (_is_number(x) and _is_number(y)):
        raise _type_error("mod", x, y)
    if y == 0:
        return None
    if type(x) is int and type(y) is int:
        r = abs(x) % abs(y)
        return r if x >= 0 else -r
    return Decimal(x) % Decimal(y)


def _concatenate(left: Expr, right: Expr) -> Expr:
    def run(env: Env) -> list[Any]:
        a = to_system(single(left(env), "'&'"))
        b = to_system(single(right(env), "'&'"))
        a = "" if a is None else a
        b = "" if b is None else b
        if type(a) is not str or type(b) is not str:
            raise _type_error("&", a, b)
        return [a + b]

    return run


def negate(items: list[Any]) -> list[Any]:
    item = single(items, "unary '-'")
    if item is None:
        return []
    x = to_system(item)
    if type(x) in _NUMBERS:
        return [-x]
    if type(x) is FPQuantity:
        return [FPQuantity(-x.value, x.unit)]
    raise FHIRPathError(f"cannot negate {type_label(item)}")


def plus_sign(items: list[Any]) -> list[Any]:
    item = single(items, "unary '+'")
    if item is None:
        return []
    x = to_system(item)
    if type(x) in _NUMBERS or type(x) is FPQuantity:
        return [x]
    raise FHIRPathError(f"cannot apply unary '+' to {type_label(item)}")


_BUILDERS: dict[str, Callable[[Expr, Expr], Expr]] = {
    "=": _equals,
    "!=": _not_equals,
    "~": _equivalent,
    "!~": _not_equivalent,
    "<": _ordering(lambda c: c < 0, "<"),
    "<=": _ordering(lambda c: c <= 0, "<="),
    ">": _ordering(lambda c: c > 0, ">"),
    ">=": _ordering(lambda c: c >= 0, ">="),
    "and": _and,
    "or": _or,
    "xor": _xor,
    "implies": _implies,
    "|": _union,
    "in": _in,
    "contains": _contains,
    "+": _arithmetic("+", _plus),
    "-": _arithmetic("-", _minus),
    "*": _arithmetic("*", _times),
    "/": _arithmetic("/", _divide),
    "div": _arithmetic("div", _div),
    "mod": _arithmetic("mod", _mod),
    "&": _concatenate,
}
