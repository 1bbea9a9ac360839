"""The one exception the FHIRPath engine raises."""

from __future__ import annotations

from yilian.kernel.errors import Category, Issue, YilianError


class FHIRPathError(YilianError):
    """A FHIRPath expression is malformed (raised by ``compile_path``) or cannot be evaluated.

    ``kind`` says which: ``syntax`` (the text does not parse), ``semantic`` (it parses but
    names an unknown function, type or element in strict mode) or ``execution`` (the data
    made an operation impossible, e.g. ``single()`` on two items).
    """

    def __init__(self, message: str, *, kind: str = "execution", expression: str | None = None) -> None:
        where = (expression,) if expression else ()
        super().__init__(Category.INVALID, message, issues=[Issue(message, where)])
        self.kind = kind
        self.expression = expression


def syntax_error(message: str, expression: str | None = None) -> FHIRPathError:
    return FHIRPathError(message, kind="syntax", expression=expression)


def semantic_error(message: str, expression: str | None = None) -> FHIRPathError:
    return FHIRPathError(message, kind="semantic", expression=expression)
