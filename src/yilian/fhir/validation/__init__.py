"""Validation of every resource written, driven by the official FHIR R4 StructureDefinitions.

``validate`` lists every problem in a resource; ``check`` raises when there is an error.
What is checked: the resource type; unknown elements; the JSON shape of each element
(array exactly when it repeats, no nulls or empty values); required elements; the JSON
type, range and official regex of every primitive, ``_name`` extension siblings included;
choice types; required bindings that can be enumerated; the target types of references
and ``#id`` references; contained and nested resources (Bundle entries, Parameters) by
their own type; Extension (ext-1); the narrative's ``<div>``. Other invariants and value
sets outside FHIR itself (languages, MIME types, UCUM) are not: see
``docs/decisions/0003-compiled-validator.md``.

The validators are compiled from the model on first use (see ``compiler``); the path of
an element is built lazily and rendered only when there is something to report.
"""

from __future__ import annotations

from typing import Any

from yilian.fhir.validation.compiler import validators
from yilian.fhir.validation.context import Context, StructValidator
from yilian.fhir.validation.elements import unknown_type_message
from yilian.fhir.validation.references import resolve_local_refs
from yilian.kernel.errors import Category, Issue, YilianError

__all__ = ["check", "validate"]


def _not_a_resource(resource: Any) -> Issue:
    """The issue with ``resource`` when it is not a JSON object of a concrete FHIR R4 resource type."""
    if not isinstance(resource, dict):
        return Issue("a FHIR resource must be a JSON object", (), "error", "invalid")
    return Issue(unknown_type_message(resource.get("resourceType")), ("resourceType",), "error", "invalid")


_resources: dict[str, StructValidator] | None = None


def _validators_by_type() -> dict[str, StructValidator]:
    global _resources
    if _resources is None:
        _resources = validators().resources
    return _resources


def validate(resource: Any) -> list[Issue]:
    """Every problem in ``resource`` (errors and warnings), each naming its element's FHIRPath."""
    try:
        rt = resource["resourceType"]
        validator = (_resources or _validators_by_type())[rt]
    except (KeyError, TypeError, IndexError):
        return [_not_a_resource(resource)]
    if not isinstance(resource, dict):
        return [_not_a_resource(resource)]
    ctx = Context()
    validator(resource, rt, ctx)
    if ctx.local_refs:
        resolve_local_refs(resource, ctx.local_refs, ctx)
    return ctx


def _is_resource(resource: Any) -> bool:
    try:
        return isinstance(resource, dict) and resource["resourceType"] in _validators_by_type()
    except (KeyError, TypeError):
        return False


def check(resource: Any) -> None:
    """Raise unless ``resource`` is a valid FHIR R4 resource; warnings alone do not raise.

    ``Category.INVALID`` when it is not a resource at all (not an object, no known
    resourceType), ``Category.UNPROCESSABLE`` with every issue when its content is wrong.
    """
    if not _is_resource(resource):
        not_resource = _not_a_resource(resource)
        raise YilianError(Category.INVALID, not_resource.message, issues=[not_resource])
    issues = validate(resource)
    errors = [i for i in issues if i.severity in ("error", "fatal")]
    if errors:
        first = errors[0]
        where = f" at {first.expression[0]}" if first.expression else ""
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise YilianError(
            Category.UNPROCESSABLE,
            f"{resource['resourceType']} is not valid: {first.message}{where}{more}",
            issues=issues,
        )
