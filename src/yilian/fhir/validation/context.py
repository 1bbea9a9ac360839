"""What one validation run carries along: the issues found and the local references seen."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

from yilian.fhir.validation.paths import Path, render
from yilian.kernel.errors import Issue


class Context(list[Issue]):
    """The issues found so far (the list itself), and the ``#id`` references of the resource being walked.

    A list so that starting a run costs no Python ``__init__``. Local references are
    only recorded here; they are resolved against the ``contained`` ids once the whole
    resource (its contained resources included) is walked.
    """

    local_refs: list[tuple[str, Path]] | None = None  # set on the instance at the first one


# Checks one JSON property: (value, the object holding it, that object's path, context).
# The holder is passed so that a primitive can look at its ``_name`` sibling and back.
Checker: TypeAlias = Callable[[Any, dict[str, Any], Path, Context], None]
# Checks one JSON object against a structure: (object, its path, context).
StructValidator: TypeAlias = Callable[[dict[str, Any], Path, Context], None]


def report(ctx: Context, path: Path, message: str, code: str, severity: str = "error") -> None:
    """Record a problem; the path is rendered to FHIRPath text only now."""
    ctx.append(Issue(message, (render(path),), severity, code))


def describe(value: Any) -> str:
    """How a JSON value reads in a message: its JSON kind, and the value when short."""
    if value is None:
        return "null"
    if value is True or value is False:
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"the string {shown!r}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"
