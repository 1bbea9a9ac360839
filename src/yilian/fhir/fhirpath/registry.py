"""The table of FHIRPath functions and the helpers their definitions share.

A function is defined by a *builder*: given the compiler and the argument syntax, it
returns the invocation closure ``(input, env) -> output``. Builders decide how each
argument is evaluated — once, against the caller's ``$this`` (``substring(1)``), or per
input item with ``$this`` bound to it (``where(...)``) — so nothing is decided at run time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from yilian.fhir.fhirpath import syntax as s
from yilian.fhir.fhirpath.env import Invocation
from yilian.fhir.fhirpath.errors import FHIRPathError

if TYPE_CHECKING:
    from yilian.fhir.fhirpath.compiler import Compiler

Builder = Callable[["Compiler", Sequence[s.Expr]], Invocation]


@dataclass(frozen=True, slots=True)
class FunctionDef:
    name: str
    min_args: int
    max_args: int
    build: Builder


FUNCTIONS: dict[str, FunctionDef] = {}


def function(name: str, min_args: int = 0, max_args: int | None = None) -> Callable[[Builder], Builder]:
    """Register a builder under ``name`` with its number of arguments."""

    def register(build: Builder) -> Builder:
        FUNCTIONS[name] = FunctionDef(name, min_args, min_args if max_args is None else max_args, build)
        return build

    return register


EagerImpl = Callable[..., list[Any]]


def eager(name: str, min_args: int = 0, max_args: int | None = None) -> Callable[[EagerImpl], EagerImpl]:
    """Register a function whose arguments are evaluated once, against the caller's ``$this``.

    The implementation is called as ``impl(input, env, *argument_collections)``.
    """

    def register(impl: EagerImpl) -> EagerImpl:
        def build(c: Compiler, args: Sequence[s.Expr]) -> Invocation:
            compiled = [c.compile(a) for a in args]
            if not compiled:
                return lambda items, env: impl(items, env)
            if len(compiled) == 1:
                only = compiled[0]
                return lambda items, env: impl(items, env, only(env))
            return lambda items, env: impl(items, env, *[a(env) for a in compiled])

        function(name, min_args, max_args)(build)
        return impl

    return register


def argument_value(result: list[Any], what: str) -> Any:
    """The single value an argument must have (None when empty)."""
    if len(result) > 1:
        raise FHIRPathError(f"{what} must be a single value, got {len(result)}")
    return result[0] if result else None
