"""Checkers for one JSON property: its JSON shape, then the structure or value it holds.

The generated validators (``codegen``) hold the fast path of every element; what is
here runs when the fast path declines: the slow path that explains a bad value or
shape, and the checkers of what the generated code hands over whole (``_name``
siblings that carry a primitive's id and extensions, resources nested in a resource,
elements with an unusual cardinality). Every object and array must have content
(ele-1): not ``{}``, not ``[]``, not only an ``id``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from yilian.fhir.validation import primitives
from yilian.fhir.validation.context import Checker, Context, StructValidator, describe, report
from yilian.fhir.validation.paths import NO_INDEX, Path
from yilian.fhir.validation.references import walk_resource

ResourceLookup = Callable[[str], StructValidator | None]


def _cardinality(count: int, min_items: int, max_items: int, name: str, path: Path, ctx: Context) -> None:
    if count < min_items:
        report(ctx, path, f"{name} needs at least {min_items} items, found {count}", "structure")
    if max_items > 1 and count > max_items:
        report(ctx, path, f"{name} allows at most {max_items} items, found {count}", "structure")


def _shape(value: Any, repeats: bool, name: str, path: Path, ctx: Context) -> bool:
    """Whether ``value`` has the JSON shape of the element's cardinality; reports it if not."""
    if repeats:
        if not isinstance(value, list):
            report(
                ctx, path, f"{name} repeats, so it must be a JSON array; found {describe(value)}", "structure"
            )
            return False
        if not value:
            report(
                ctx,
                path,
                f"{name} is an empty array: an element must have a value or children (ele-1)",
                "invariant",
            )
            return False
        return True
    if value is None:
        report(
            ctx, path, f"{name} is null: JSON null is only allowed inside arrays of primitives", "structure"
        )
        return False
    if isinstance(value, list):
        report(ctx, path, f"{name} occurs at most once, so it must not be a JSON array", "structure")
        return False
    return True


def primitive_slow(
    rule: primitives.PrimitiveRule,
    key: str,
    seg: str,
    *,
    repeats: bool,
    codes: frozenset[str] | None = None,
    value_set: str | None = None,
    min_items: int = 0,
    max_items: int = -1,
) -> Checker:
    """The exact check of a primitive property, run when the generated fast path declined."""

    def judge(x: Any, path: Path, ctx: Context) -> None:
        found = primitives.problem(rule, x)
        if found is not None:
            report(ctx, path, f"{seg}: {found[0]}", found[1])
        elif codes is not None and x not in codes:
            report(ctx, path, f"{x!r} is not in the required value set {value_set}", "code-invalid")

    if not repeats:

        def check_one(x: Any, d: dict[str, Any], p: Path, ctx: Context) -> None:
            path = (p, seg, NO_INDEX)
            if _shape(x, False, seg, path, ctx):
                judge(x, path, ctx)

        return check_one

    sibling_key = "_" + key

    def check_many(v: Any, d: dict[str, Any], p: Path, ctx: Context) -> None:
        path = (p, seg, NO_INDEX)
        if not _shape(v, True, seg, path, ctx):
            return
        _cardinality(len(v), min_items, max_items, seg, path, ctx)
        siblings = d.get(sibling_key)
        for i, x in enumerate(v):
            if x is None:
                # A null keeps the array aligned with _name, which must then hold its extensions.
                if not (isinstance(siblings, list) and i < len(siblings) and siblings[i] is not None):
                    report(
                        ctx,
                        (p, seg, i),
                        f"{seg}[{i}] is null and has no extension in {sibling_key}",
                        "structure",
                    )
            else:
                judge(x, (p, seg, i), ctx)

    return check_many


def _complex_slow(validator: StructValidator, x: Any, name: str, path: Path, ctx: Context) -> None:
    if isinstance(x, dict):
        if not x:
            report(
                ctx, path, f"{name} is empty: an element must have a value or children (ele-1)", "invariant"
            )
        validator(
            x, path, ctx
        )  # its required elements; an object with only an id is reported by its id check
    elif isinstance(x, list):
        report(ctx, path, f"{name} occurs at most once, so it must not be a JSON array", "structure")
    else:
        report(ctx, path, f"{name} must be a JSON object, found {describe(x)}", "structure")


def complex_checker(
    validator: StructValidator, seg: str, *, repeats: bool, min_items: int = 0, max_items: int = -1
) -> Checker:
    """A property holding a data type or backbone element (or an array of them)."""
    if not repeats:

        def check_one(x: Any, d: dict[str, Any], p: Path, ctx: Context) -> None:
            if x.__class__ is dict and x:
                validator(x, (p, seg, NO_INDEX), ctx)
            else:
                _complex_slow(validator, x, seg, (p, seg, NO_INDEX), ctx)

        return check_one

    bounded = min_items > 1 or max_items > 1

    def check_many(v: Any, d: dict[str, Any], p: Path, ctx: Context) -> None:
        if v.__class__ is list and v:
            for i, x in enumerate(v):
                if x.__class__ is dict and x:
                    validator(x, (p, seg, i), ctx)
                elif x is None:
                    report(ctx, (p, seg, i), f"{seg}[{i}] is null", "structure")
                else:
                    _complex_slow(validator, x, f"{seg}[{i}]", (p, seg, i), ctx)
            if bounded:
                _cardinality(len(v), min_items, max_items, seg, (p, seg, NO_INDEX), ctx)
        elif _shape(v, True, seg, (p, seg, NO_INDEX), ctx):
            check_many(list(v), d, p, ctx)

    return check_many


def complex_rest(validator: StructValidator, seg: str) -> Callable[[list[Any], int, Path, Context], None]:
    """Finishes an array of data types from the first item that is not a non-empty object."""

    def rest(v: list[Any], start: int, p: Path, ctx: Context) -> None:
        for i in range(start, len(v)):
            x = v[i]
            if x.__class__ is dict and x:
                validator(x, (p, seg, i), ctx)
            elif x is None:
                report(ctx, (p, seg, i), f"{seg}[{i}] is null", "structure")
            else:
                _complex_slow(validator, x, f"{seg}[{i}]", (p, seg, i), ctx)

    return rest


def sibling_checker(element: StructValidator, key: str, seg: str, *, repeats: bool) -> Checker:
    """``_name``: the id and extensions of primitive ``name``, validated as an Element.

    For a repeating primitive both arrays are aligned: same length, null where an
    item has no value (or no extensions), never null on both sides.
    """
    sibling = "_" + key
    if not repeats:

        def check_one(x: Any, d: dict[str, Any], p: Path, ctx: Context) -> None:
            if x.__class__ is dict and x:
                element(x, (p, seg, NO_INDEX), ctx)
            else:
                _complex_slow(element, x, sibling, (p, seg, NO_INDEX), ctx)

        return check_one

    def check_many(v: Any, d: dict[str, Any], p: Path, ctx: Context) -> None:
        if not _shape(v, True, sibling, (p, seg, NO_INDEX), ctx):
            return
        values = d.get(key)
        if isinstance(values, list) and len(values) != len(v):
            report(
                ctx,
                (p, seg, NO_INDEX),
                f"{sibling} has {len(v)} items but {key} has {len(values)}: the arrays must be aligned",
                "structure",
            )
        for i, x in enumerate(v):
            if x is None:
                has_value = isinstance(values, list) and i < len(values)
                if not has_value:
                    report(
                        ctx, (p, seg, i), f"{sibling}[{i}] is null and {key} has no value there", "structure"
                    )
            else:
                _complex_slow(element, x, f"{sibling}[{i}]", (p, seg, i), ctx)

    return check_many


def resource_checker(
    lookup: ResourceLookup,
    seg: str,
    *,
    repeats: bool,
    contained: bool,
    required_type: str | None = None,
) -> Checker:
    """A property holding whole resources (``contained``, ``Bundle.entry.resource``, ...).

    Each is validated by its own ``resourceType``. A contained resource shares the
    container's local references; any other nested resource is a container of its own.
    """

    def one(x: Any, path: Path, ctx: Context) -> None:
        if not isinstance(x, dict):
            report(ctx, path, f"{seg} must be a resource (a JSON object), found {describe(x)}", "structure")
            return
        rt = x.get("resourceType")
        validator = lookup(rt) if isinstance(rt, str) else None
        if validator is None:
            report(ctx, (path, "resourceType", NO_INDEX), unknown_type_message(rt), "invalid")
        elif required_type is not None and rt != required_type:
            report(
                ctx,
                (path, "resourceType", NO_INDEX),
                f"{seg} must be a {required_type}, found {rt}",
                "invalid",
            )
        elif contained:
            validator(x, path, ctx)
        else:
            walk_resource(validator, x, path, ctx)

    if not repeats:

        def check_one(x: Any, d: dict[str, Any], p: Path, ctx: Context) -> None:
            path = (p, seg, NO_INDEX)
            if _shape(x, False, seg, path, ctx):
                one(x, path, ctx)

        return check_one

    def check_many(v: Any, d: dict[str, Any], p: Path, ctx: Context) -> None:
        if _shape(v, True, seg, (p, seg, NO_INDEX), ctx):
            for i, x in enumerate(v):
                one(x, (p, seg, i), ctx)

    return check_many


def unknown_type_message(rt: Any) -> str:
    """Why ``rt`` does not select a resource validator."""
    if rt is None:
        return "a resource must have a resourceType"
    if not isinstance(rt, str) or not rt:
        return f"resourceType must be a resource type name, found {describe(rt)}"
    return f"{rt!r} is not a FHIR R4 resource type"


def only_id(x: Any, d: dict[str, Any], p: Path, ctx: Context) -> None:
    """Run when an element's id was checked: an element with nothing but an id breaks ele-1."""
    if len(d) == 1:
        report(
            ctx,
            p,
            "the element has only an id: an element must have a value or children (ele-1)",
            "invariant",
        )


def unknown_reporter(
    struct_name: str,
    primitive_keys: frozenset[str],
    complex_keys: frozenset[str],
    nonstandard: frozenset[str],
) -> Callable[[Any, dict[str, Any], Path, Context], None]:
    """Reports a property the structure does not define, saying why when it can."""

    def unknown(k: Any, d: dict[str, Any], p: Path, ctx: Context) -> None:
        name = k if isinstance(k, str) else repr(k)
        if name in nonstandard:
            message = f"{name} is not an element of {struct_name} in FHIR R4 (it belongs to another FHIR version or server)"
        elif name.startswith("_") and name[1:] in complex_keys:
            message = f"{name}: only primitive elements have a _ sibling; put extensions inside {name[1:]}"
        elif name.startswith("_") and name[1:] in primitive_keys:
            message = f"{name}: {name[1:]} cannot carry extensions in JSON"
        else:
            message = f"unknown element {name!r} in {struct_name}"
        report(ctx, (p, name, NO_INDEX), message, "structure")

    return unknown


def missing_reporter(required: tuple[tuple[str, int, frozenset[str]], ...]) -> StructValidator:
    """Reports each required element (name, min, the JSON properties that carry it) that is absent."""

    def missing(d: dict[str, Any], p: Path, ctx: Context) -> None:
        for name, minimum, keys in required:
            if keys.isdisjoint(d):
                report(
                    ctx,
                    (p, name, NO_INDEX),
                    f"missing required element {name} (min cardinality {minimum})",
                    "required",
                )

    return missing


def conflict_reporter(variants: dict[str, tuple[str, str]]) -> StructValidator:
    """Reports a choice element given in two types (``valueString`` and ``valueQuantity``)."""

    def conflict(d: dict[str, Any], p: Path, ctx: Context) -> None:
        seen: dict[str, str] = {}
        for k in d:
            found = variants.get(k)
            if found is None:
                continue
            name, variant = found
            first = seen.setdefault(name, variant)
            if first != variant and first != "":
                seen[name] = ""  # report each choice element once
                report(
                    ctx,
                    (p, name, NO_INDEX),
                    f"{name}[x] has more than one type: {first} and {variant}; only one is allowed",
                    "structure",
                )

    return conflict
