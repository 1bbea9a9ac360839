"""References: the target type a ``Reference.reference`` names, and ``#id`` references.

A literal reference names its target's type when it is RESTful: ``Patient/123``,
``Patient/123/_history/2``, an absolute URL ending in one of those, or a conditional
reference ``Patient?identifier=...`` (resolved by a transaction). That type must be one
the element allows (``targets``; ``Resource`` allows any). ``urn:uuid:`` and
``urn:oid:`` references name no type: a transaction resolves them. ``#id`` must be the
id of a resource contained in the same resource; those are resolved once that resource
has been walked, because contained resources may come after the reference.
"""

from __future__ import annotations

import re
from typing import Any

from yilian.fhir.validation.context import Checker, Context, StructValidator, report
from yilian.fhir.validation.paths import NO_INDEX, Path

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}").fullmatch
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:").match
_SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"


def referenced_type(ref: str, resource_types: frozenset[str]) -> tuple[str | None, str | None]:
    """(type named by the reference or None, problem or None) for a non-local, non-urn reference."""
    first, slash, rest = ref.partition("/")
    query = first.find("?")
    if query >= 0:
        # Patient?identifier=...: a conditional reference (a transaction resolves it).
        target = first[:query]
        if target not in resource_types:
            return None, f"conditional reference {ref!r} does not start with a resource type"
        return target, None
    if ":" in first:
        # An absolute URL: any may be a reference; only a RESTful FHIR one tells the type.
        for mark in "?#":
            if mark in ref:
                ref = ref.split(mark, 1)[0]
        head, _, res_id = ref.rpartition("/")
        head, _, target = head.rpartition("/")
        if target == "_history":
            head, _, res_id = head.rpartition("/")
            head, _, target = head.rpartition("/")
        if target in resource_types and _ID(res_id):
            return target, None
        return None, None
    if not slash:
        return None, f"relative reference {ref!r} is not of the form Type/id"
    res_id, slash, history = rest.partition("/")
    if slash:
        marker, _, version = history.partition("/")
        if marker != "_history" or not _ID(version):
            return None, f"relative reference {ref!r} is not of the form Type/id or Type/id/_history/version"
    if first not in resource_types:
        return None, f"reference {ref!r} does not name a FHIR R4 resource type"
    if not _ID(res_id):
        return None, f"reference {ref!r} has an invalid id"
    return first, None


def reference_checks(
    allowed: frozenset[str] | None, resource_types: frozenset[str]
) -> tuple[Checker, Checker]:
    """Checks of ``Reference.reference`` and ``Reference.type`` for an element allowing ``allowed`` (None: any).

    Both run after the value passed its primitive check (a non-empty string); the
    generated Reference validator skips the first for ``urn:`` references.
    """
    allowed_text = ", ".join(sorted(allowed)) if allowed is not None else ""

    def check_reference(ref: str, d: dict[str, Any], p: Path, ctx: Context) -> None:
        if ref[0] == "#":
            if ctx.local_refs is None:
                ctx.local_refs = []
            ctx.local_refs.append((ref, (p, "reference", NO_INDEX)))
            return
        # The common relative form, Type/id, without the general parse.
        target, slash, res_id = ref.partition("/")
        if slash and target in resource_types and "/" not in res_id:
            if not ((res_id.isalnum() and res_id.isascii() and len(res_id) <= 64) or _ID(res_id)):
                report(ctx, (p, "reference", NO_INDEX), f"reference {ref!r} has an invalid id", "value")
                return
        else:
            found, problem = referenced_type(ref, resource_types)
            if found is None:
                if problem is not None:
                    report(ctx, (p, "reference", NO_INDEX), problem, "value")
                return
            target = found
        if allowed is not None and target not in allowed:
            # A warning, not an error: the official R4 examples themselves point four references
            # at types their elements do not list (docs/decisions/0003-compiled-validator.md),
            # and the data stays interpretable; $validate and the write response still say so.
            report(
                ctx,
                (p, "reference", NO_INDEX),
                f"a reference to {target} is not allowed here (allowed: {allowed_text})",
                "value",
                "warning",
            )

    def check_type(declared: str, d: dict[str, Any], p: Path, ctx: Context) -> None:
        if declared.startswith(_SD_PREFIX):
            name = declared[len(_SD_PREFIX) :]
        elif _SCHEME(declared) is None:
            name = declared
        else:
            return  # a profile or logical model URL: nothing to compare with
        path = (p, "type", NO_INDEX)
        ref = d.get("reference")
        target = None
        if isinstance(ref, str) and ref and ref[0] != "#" and not ref.startswith("urn:"):
            target = referenced_type(ref, resource_types)[0]
        if name not in resource_types:
            report(ctx, path, f"{declared!r} is not a FHIR R4 resource type", "value")
        elif allowed is not None and name not in allowed:
            report(ctx, path, f"a reference to {name} is not allowed here (allowed: {allowed_text})", "value")
        elif target is not None and target != name:
            report(ctx, path, f"type {name} does not match the reference, which is to a {target}", "value")

    return check_reference, check_type


def walk_resource(validator: StructValidator, resource: dict[str, Any], path: Path, ctx: Context) -> None:
    """Validate a resource that is its own container (top level, Bundle entry, Parameters part)."""
    saved = ctx.local_refs
    ctx.local_refs = None
    validator(resource, path, ctx)
    if ctx.local_refs:
        resolve_local_refs(resource, ctx.local_refs, ctx)
    ctx.local_refs = saved


def resolve_local_refs(resource: dict[str, Any], refs: list[tuple[str, Path]], ctx: Context) -> None:
    """Report each ``#id`` reference made in ``resource`` that names none of its contained resources."""
    contained = resource.get("contained")
    ids = {c.get("id") for c in (contained if isinstance(contained, list) else ()) if isinstance(c, dict)}
    for ref, path in refs:
        # "#" alone is a contained resource's reference to its container.
        if ref != "#" and ref[1:] not in ids:
            report(ctx, path, f"{ref!r} does not match the id of a contained resource", "value")
