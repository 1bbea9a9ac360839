"""What a collection item means as a value: conversion of FHIR primitives to FHIRPath
system values, and the equality, equivalence and ordering rules of the specification.

Items in a collection are either :class:`~yilian.fhir.fhirpath.nodes.Node` (FHIR data)
or system values: ``bool``, ``int``, ``Decimal``, ``str``, :class:`FPDate`,
:class:`FPDateTime`, :class:`FPTime`, :class:`FPQuantity`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from yilian.fhir.fhirpath import quantity, temporal
from yilian.fhir.fhirpath.errors import FHIRPathError
from yilian.fhir.fhirpath.nodes import Node, type_ancestors
from yilian.fhir.fhirpath.quantity import FPQuantity
from yilian.fhir.fhirpath.temporal import FPDate, FPDateTime, FPTime

STRING_TYPES = frozenset(
    {"string", "code", "id", "uri", "url", "canonical", "oid", "uuid", "markdown", "base64Binary", "xhtml"}
)
INTEGER_TYPES = frozenset({"integer", "positiveInt", "unsignedInt", "integer64"})
TEMPORALS = (FPDate, FPDateTime, FPTime)


def _decimal(value: Any) -> Any:
    try:
        return quantity.to_decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        return value


def _date(value: Any) -> Any:
    return (temporal.parse_date(value) if type(value) is str else None) or value


def _datetime(value: Any) -> Any:
    return (temporal.parse_datetime(value) if type(value) is str else None) or value


def _time(value: Any) -> Any:
    return (temporal.parse_time(value) if type(value) is str else None) or value


def _same(value: Any) -> Any:
    return value


_CONVERTERS: dict[str | None, Callable[[Any], Any]] = {
    **dict.fromkeys(STRING_TYPES, _same),
    **dict.fromkeys(INTEGER_TYPES, _same),
    "boolean": _same,
    "decimal": _decimal,
    "date": _date,
    "dateTime": _datetime,
    "instant": _datetime,
    "time": _time,
}


def is_quantity_type(type_name: str | None) -> bool:
    return type_name is not None and "Quantity" in type_ancestors(type_name)


def to_system(item: Any) -> Any:
    """The system value of an item: FHIR primitives and Quantities convert, other nodes stay.

    A primitive node that has only extensions converts to ``None``.
    """
    if type(item) is not Node:
        return item
    data = item.data
    conv = _CONVERTERS.get(item.type)
    if conv is not None:
        return None if data is None else conv(data)
    if type(data) is dict:
        if is_quantity_type(item.type):
            return quantity.from_fhir(data) or item
        return item
    if data is None:
        return None
    if type(data) is float:
        return _decimal(data)
    return data


def type_label(value: Any) -> str:
    """A short name of the value's type, for error messages."""
    if type(value) is Node:
        return value.type or "element"
    return _SYSTEM_NAMES.get(type(value), type(value).__name__)


_SYSTEM_NAMES: dict[type, str] = {
    bool: "Boolean",
    int: "Integer",
    Decimal: "Decimal",
    str: "String",
    FPDate: "Date",
    FPDateTime: "DateTime",
    FPTime: "Time",
    FPQuantity: "Quantity",
}


# -- equality -----------------------------------------------------------------------------


def equal(a: Any, b: Any) -> bool | None:
    """FHIRPath ``=`` on two items; None when the answer is unknown (precision, units)."""
    if type(a) is Node and type(b) is Node and type(a.data) is dict and type(b.data) is dict:
        # two FHIR elements: every property must match (two Quantities differing only in
        # their comparator are different elements)
        return bool(a.data == b.data)
    x, y = to_system(a), to_system(b)
    if x is None or y is None:
        return None
    tx, ty = type(x), type(y)
    if tx is str or ty is str:
        return tx is ty and x == y
    if tx is bool or ty is bool:
        return tx is ty and x == y
    if tx in (int, Decimal) and ty in (int, Decimal):
        return bool(x == y)
    if tx in TEMPORALS and ty in TEMPORALS:
        if not temporal.same_kind(x, y):
            return False
        c = temporal.compare(x, y)
        return None if c is None else c == 0
    if tx is FPQuantity and ty is FPQuantity:
        c = quantity.compare(x, y)
        return None if c is None else c == 0
    if tx is Node and ty is Node:
        return bool(x.data == y.data)
    return False


def equivalent(a: Any, b: Any) -> bool:
    """FHIRPath ``~`` on two items."""
    if type(a) is Node and type(b) is Node and type(a.data) is dict and type(b.data) is dict:
        return _json_equivalent(a.data, b.data)
    x, y = to_system(a), to_system(b)
    if x is None or y is None:
        return x is None and y is None
    tx, ty = type(x), type(y)
    if tx is str and ty is str:
        return _normal_text(x) == _normal_text(y)
    if tx is bool or ty is bool:
        return tx is ty and x == y
    if tx in (int, Decimal) and ty in (int, Decimal):
        return _decimal_equivalent(Decimal(x), Decimal(y))
    if tx in TEMPORALS and ty in TEMPORALS:
        if not temporal.same_kind(x, y) or temporal.precision(x) != temporal.precision(y):
            return False
        return temporal.compare(x, y) == 0
    if tx is FPQuantity and ty is FPQuantity:
        return quantity.equivalent(x, y)
    if tx is Node and ty is Node:
        return _json_equivalent(x.data, y.data)
    return False


_SPACES = re.compile(r"\s+")


def _normal_text(text: str) -> str:
    return _SPACES.sub(" ", text.strip()).lower()


def _scale(d: Decimal) -> int:
    exp = d.as_tuple().exponent
    return -exp if isinstance(exp, int) and exp < 0 else 0


def _decimal_equivalent(x: Decimal, y: Decimal) -> bool:
    # equal when rounded to the precision of the less precise operand
    places = Decimal(1).scaleb(-min(_scale(x), _scale(y)))
    try:
        return x.quantize(places) == y.quantize(places)
    except InvalidOperation:
        return x == y


def _json_equivalent(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = (set(a) | set(b)) - {"id"}
        return all(_json_equivalent(a.get(k), b.get(k)) for k in keys)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(any(_json_equivalent(x, y) for y in b) for x in a)
    if isinstance(a, str) and isinstance(b, str):
        return _normal_text(a) == _normal_text(b)
    return bool(a == b)


def collections_equal(left: list[Any], right: list[Any]) -> bool | None:
    if len(left) != len(right):
        return False
    unknown = False
    for a, b in zip(left, right, strict=True):
        e = equal(a, b)
        if e is False:
            return False
        if e is None:
            unknown = True
    return None if unknown else True


def collections_equivalent(left: list[Any], right: list[Any]) -> bool:
    if len(left) != len(right):
        return False
    remaining = list(right)
    for a in left:
        for i, b in enumerate(remaining):
            if equivalent(a, b):
                del remaining[i]
                break
        else:
            return False
    return True


# -- ordering -----------------------------------------------------------------------------


def compare(a: Any, b: Any) -> int | None:
    """-1/0/1 for ``<``/``>``; None when unknown; FHIRPathError when the types have no order."""
    x, y = to_system(a), to_system(b)
    if x is None or y is None:
        return None
    tx, ty = type(x), type(y)
    if tx in (int, Decimal) and ty in (int, Decimal):
        return 0 if x == y else (-1 if x < y else 1)
    if tx is str and ty is str:
        return 0 if x == y else (-1 if x < y else 1)
    if tx in TEMPORALS and ty in TEMPORALS:
        return temporal.compare(x, y)
    if tx is FPQuantity and ty is FPQuantity:
        return quantity.compare(x, y)
    raise FHIRPathError(f"cannot compare {type_label(a)} with {type_label(b)}")


# -- distinctness -------------------------------------------------------------------------


def _hash_key(item: Any) -> Hashable | None:
    if type(item) is Node:
        data = item.data
        if type(data) is dict:
            return None  # compared property by property
        if type(data) is str and item.type in STRING_TYPES:
            return ("s", data)
    x = to_system(item)
    t = type(x)
    if t is str:
        return ("s", x)
    if t is bool:
        return ("b", x)
    if t is int or t is Decimal:
        return ("n", x)
    return None


class Distinct:
    """Collects items, dropping any equal to one already kept (union, distinct, repeat).

    Primitives are kept in a hash set; FHIR elements (JSON objects) are compared property
    by property, which has no hash, so only against the other elements kept so far —
    after an identity check, since the same element often arrives twice."""

    __slots__ = ("_ids", "_keys", "_objects", "_slow", "items")

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._keys: set[Hashable] = set()
        self._ids: set[int] = set()
        self._objects: list[dict[str, Any]] = []
        self._slow: list[Any] = []

    def add(self, item: Any) -> bool:
        if type(item) is Node and type(item.data) is dict:
            data = item.data
            if id(data) in self._ids or data in self._objects:
                return False
            self._ids.add(id(data))
            self._objects.append(data)
            self.items.append(item)
            return True
        key = _hash_key(item)
        if key is not None:
            if key in self._keys:
                return False
            self._keys.add(key)
        else:
            for seen in self._slow:
                if equal(item, seen) is True:
                    return False
            self._slow.append(item)
        self.items.append(item)
        return True

    def contains(self, item: Any) -> bool:
        if type(item) is Node and type(item.data) is dict:
            return id(item.data) in self._ids or item.data in self._objects
        key = _hash_key(item)
        if key is not None:
            return key in self._keys
        return any(equal(item, seen) is True for seen in self._slow)


def distinct(items: Iterable[Any]) -> list[Any]:
    d = Distinct()
    for item in items:
        d.add(item)
    return d.items


def member_of(item: Any, collection: list[Any]) -> bool:
    return any(equal(item, other) is True for other in collection)


# -- booleans -----------------------------------------------------------------------------


def boolean_of(item: Any) -> Any:
    """The item as a system value if it is a boolean, else the item itself."""
    if type(item) is Node and item.type == "boolean":
        return item.data
    return item


def test(result: list[Any], what: str = "condition") -> bool | None:
    """Singleton evaluation of a collection where a boolean is expected.

    Empty is unknown (None); one boolean is itself; one other item counts as true; more
    than one item is an error.
    """
    if not result:
        return None
    if len(result) == 1:
        v = result[0]
        if v is True or v is False:
            return v
        v = boolean_of(v)
        if v is True or v is False:
            return v
        return True
    raise FHIRPathError(f"{what} gave {len(result)} items where one boolean was expected")


def strict_boolean(item: Any, what: str) -> bool:
    v = boolean_of(item)
    if v is True or v is False:
        return v
    raise FHIRPathError(f"{what} expects booleans, found {type_label(item)}")


def single(items: list[Any], what: str) -> Any:
    """The only item of a collection that must hold at most one (None if empty)."""
    if not items:
        return None
    if len(items) > 1:
        raise FHIRPathError(f"{what} expects a single item, got {len(items)}")
    return items[0]
