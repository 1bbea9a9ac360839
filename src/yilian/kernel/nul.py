"""The NUL character in caller input: refused at the edges, never stored.

PostgreSQL cannot hold U+0000 in text (the insert or even the query fails) and SQLite would keep
it, so the same request would fail on one database and pass on the other. Both HTTP adapters
refuse it in a path, a query value or a JSON string with one clear message; the audit log writes
it as U+FFFD where a refused request quotes it. Paths that reach the FHIR core without HTTP
(``yilian import``, CSV migration, HL7 v2 intake) meet the same rule in the validator, which
refuses U+0000 in every FHIR string value and names the element.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from yilian.kernel.errors import Category, YilianError

NUL = "\x00"


def contains_nul(value: Any) -> bool:
    """Whether a parsed JSON value (or a string) holds U+0000 in any string, key included."""
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, dict):
        return any(NUL in k or contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(contains_nul(v) for v in value)
    return False


def refuse_nul(where: str, values: Iterable[Any]) -> None:
    """Raise INVALID when any of ``values`` holds U+0000 (``where``: "the path", "the body"…)."""
    for value in values:
        if contains_nul(value):
            raise YilianError(
                Category.INVALID, f"{where} contains a NUL character (U+0000), which is not allowed"
            )


def visible_nul(text: str | None) -> str | None:
    """``text`` with U+0000 shown as U+FFFD, for records that quote what a caller sent."""
    return text.replace(NUL, "\ufffd") if text and NUL in text else text
