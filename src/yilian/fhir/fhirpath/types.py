"""Type specifiers (``Quantity``, ``System.Integer``, ``FHIR.code``) and the tests ``is``,
``as`` and ``ofType`` make with them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from yilian.fhir.fhirpath.errors import semantic_error
from yilian.fhir.fhirpath.nodes import Node, type_ancestors
from yilian.fhir.fhirpath.quantity import FPQuantity
from yilian.fhir.fhirpath.temporal import FPDate, FPDateTime, FPTime
from yilian.fhir.model import model

SYSTEM_TYPES: dict[str, type] = {
    "Boolean": bool,
    "Integer": int,
    "Decimal": Decimal,
    "String": str,
    "Date": FPDate,
    "DateTime": FPDateTime,
    "Time": FPTime,
    "Quantity": FPQuantity,
}
SYSTEM_NAMES: dict[type, str] = {py: name for name, py in SYSTEM_TYPES.items()}

# Profiles of Quantity the model does not list as structures of their own.
_QUANTITY_PROFILES = {"SimpleQuantity": "Quantity", "MoneyQuantity": "Quantity"}

Matcher = Callable[[Any], bool]


@dataclass(frozen=True, slots=True)
class TypeSpec:
    namespace: str  # System | FHIR
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}.{self.name}"


def _is_fhir_type(name: str) -> bool:
    m = model()
    return m.structure(name) is not None or m.is_primitive(name)


def resolve(spec: str, expression: str | None = None) -> TypeSpec:
    """The type a specifier names; FHIR types win over System types of the same name."""
    namespace, _, name = spec.rpartition(".")
    name = _QUANTITY_PROFILES.get(name, name)
    if namespace in ("System", "FHIR"):
        # a qualified name that names nothing simply matches nothing (Patient.is(System.Patient))
        return TypeSpec(namespace, name)
    if namespace == "":
        if _is_fhir_type(name):
            return TypeSpec("FHIR", name)
        if name in SYSTEM_TYPES:
            return TypeSpec("System", name)
    elif _is_fhir_type(spec):  # a backbone element named by path: Patient.contact
        return TypeSpec("FHIR", spec)
    raise semantic_error(f"unknown type '{spec}'", expression)


def is_matcher(t: TypeSpec) -> Matcher:
    """``x is T``: the item is of type T or a specialisation of it."""
    if t.namespace == "System":
        py = SYSTEM_TYPES.get(t.name)
        if py is None:
            return lambda x: False
        return lambda x: type(x) is py
    name = t.name

    def fhir(x: Any) -> bool:
        return type(x) is Node and x.type is not None and name in type_ancestors(x.type)

    return fhir


def as_matcher(t: TypeSpec) -> Matcher:
    """``x as T`` / ``ofType(T)``: like ``is``, but a FHIR primitive must be exactly T
    (``code`` is a specialised ``string``, yet ``gender.as(string)`` is empty)."""
    if t.namespace == "FHIR" and model().is_primitive(t.name):
        name = t.name
        return lambda x: type(x) is Node and x.type == name
    return is_matcher(t)


def type_info(item: Any) -> dict[str, str]:
    """What ``type()`` reports: namespace and name."""
    if type(item) is Node:
        return {"namespace": "FHIR", "name": item.type or "Element"}
    return {"namespace": "System", "name": SYSTEM_NAMES.get(type(item), "Any")}
