"""ext-1: an Extension has either a value or nested extensions, never both and never neither."""

from __future__ import annotations

from typing import Any

from yilian.fhir.validation.context import Context, StructValidator, report


def extension_post(value_keys: frozenset[str]) -> StructValidator:
    """``value_keys``: every ``value[x]`` property of Extension, ``_valueString`` and the like included."""

    def check_extension(d: dict[str, Any], p: Any, ctx: Context) -> None:
        has_value = not value_keys.isdisjoint(d)
        if has_value == ("extension" in d):
            if has_value:
                message = "an extension has either a value[x] or nested extensions, not both (ext-1)"
            else:
                message = "an extension must have a value[x] or nested extensions (ext-1)"
            report(ctx, p, message, "invariant")

    return check_extension
