"""The syntax tree the parser builds and the compiler turns into closures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Literal:
    """A constant; ``value`` is already the FHIRPath system value (``None`` for ``{}``)."""

    value: Any


@dataclass(frozen=True, slots=True)
class Identifier:
    """A name at the start of a path: an element of ``$this``, or a type name such as ``Patient``."""

    name: str


@dataclass(frozen=True, slots=True)
class Member:
    """``target.name``."""

    target: Expr
    name: str


@dataclass(frozen=True, slots=True)
class Call:
    """``target.name(args)``, or ``name(args)`` on ``$this`` when ``target`` is ``None``."""

    target: Expr | None
    name: str
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Special:
    """``$this``, ``$index`` or ``$total``."""

    name: str


@dataclass(frozen=True, slots=True)
class Variable:
    """``%name``."""

    name: str


@dataclass(frozen=True, slots=True)
class Indexer:
    """``target[index]``."""

    target: Expr
    index: Expr


@dataclass(frozen=True, slots=True)
class Unary:
    """``+x`` or ``-x``."""

    op: str
    operand: Expr


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class TypeTest:
    """``operand is Type`` or ``operand as Type`` (the operator forms)."""

    op: str
    operand: Expr
    type_name: str


Expr = Literal | Identifier | Member | Call | Special | Variable | Indexer | Unary | Binary | TypeTest


def qualified_name(expr: Expr) -> str | None:
    """The dotted name an argument spells (``FHIR.Patient``), for functions that take a type."""
    if isinstance(expr, Identifier):
        return expr.name
    if isinstance(expr, Member):
        head = qualified_name(expr.target)
        return f"{head}.{expr.name}" if head else None
    return None
