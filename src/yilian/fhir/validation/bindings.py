"""Required bindings on Coding, CodeableConcept and Quantity elements.

A ``code`` element's value set check is pasted into its checker (``x in codes``). A
Coding carries its system, so it is judged by the codes its own system contributes to
the value set. On a CodeableConcept, codings from other systems are translations and
are left alone; the binding is met by a coding from the value set, and a concept with
none (only text, or only other systems) draws a warning, not an error: the server
cannot tell a translation-only concept from a mistake. Quantity, bound by its unit, is
judged like a Coding (``system`` + ``code``).
"""

from __future__ import annotations

from typing import Any

from yilian.fhir.validation.context import Context, StructValidator, report
from yilian.fhir.validation.paths import NO_INDEX, Path


def _judge(
    coding: dict[str, Any], by_system: dict[str, frozenset[str]], url: str, path: Path, ctx: Context
) -> bool:
    """Whether the coding is from the value set; reports a code its system does not allow there."""
    system = coding.get("system")
    codes = by_system.get(system) if system.__class__ is str else None
    if codes is None:
        return False
    code = coding.get("code")
    if code.__class__ is str and code not in codes:
        report(
            ctx,
            (path, "code", NO_INDEX),
            f"{code!r} from {system} is not in the required value set {url}",
            "code-invalid",
        )
    return True


def binding_post(type_name: str, url: str, by_system: dict[str, frozenset[str]]) -> StructValidator:
    """The whole-object check of a Coding, CodeableConcept or Quantity bound (required) to ``url``."""

    def none_from_value_set(p: Path, ctx: Context) -> None:
        report(ctx, p, f"no coding from the required value set {url}", "code-invalid", "warning")

    if type_name == "CodeableConcept":

        def check_concept(d: dict[str, Any], p: Path, ctx: Context) -> None:
            codings = d.get("coding")
            found = False
            if codings.__class__ is list:
                for i, coding in enumerate(codings):
                    if coding.__class__ is dict and _judge(coding, by_system, url, (p, "coding", i), ctx):
                        found = True
            if not found:
                none_from_value_set(p, ctx)

        return check_concept

    def check_coding(d: dict[str, Any], p: Path, ctx: Context) -> None:
        if not _judge(d, by_system, url, p, ctx) and (type_name == "Coding" or "code" in d):
            none_from_value_set(p, ctx)

    return check_coding
