"""The state of one evaluation, shared by every closure of a compiled expression."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from yilian.fhir.fhirpath.nodes import Node

Resolver = Callable[[str], dict[str, Any] | None]
Expr = Callable[["Env"], list[Any]]
Invocation = Callable[[list[Any], "Env"], list[Any]]


class Env:
    """``$this``/``$index``/``$total`` change as lambdas (``where``, ``select``…) iterate;
    the rest is fixed for the evaluation. One Env is made per ``evaluate`` call, so the
    closures can swap ``this`` in place instead of allocating scopes."""

    __slots__ = ("context", "index", "moment", "resolver", "resource", "this", "total", "variables")

    def __init__(
        self,
        resource: list[Any],
        context: list[Any],
        variables: dict[str, list[Any]],
        resolver: Resolver | None,
    ) -> None:
        self.resource = resource
        self.context = context
        self.this: list[Any] = context
        self.index: int | None = None
        self.total: list[Any] = []
        self.variables = variables
        self.resolver = resolver
        self.moment: Any = None  # now(), fixed on first use so one evaluation sees one instant

    def root_resource(self) -> Node | None:
        return self.resource[0] if self.resource and type(self.resource[0]) is Node else None
