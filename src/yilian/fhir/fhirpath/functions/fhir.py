"""Functions FHIR adds to FHIRPath: extension, hasValue, getValue, resolve, conformsTo,
and the tree functions children and descendants."""

from __future__ import annotations

import re
from typing import Any

from yilian.fhir.fhirpath.env import Env
from yilian.fhir.fhirpath.errors import FHIRPathError
from yilian.fhir.fhirpath.nodes import Node, children, descendants, infer_type, source, type_ancestors
from yilian.fhir.fhirpath.registry import argument_value, eager
from yilian.fhir.fhirpath.values import single, to_system
from yilian.fhir.model import model

_CORE_PROFILE = "http://hl7.org/fhir/StructureDefinition/"
# [base/]Type/id[/_history/vid]: the form of a literal reference (FHIR R4 §2.3.0.1)
_REFERENCE = re.compile(
    r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)


@eager("extension", 1)
def _extension(items: list[Any], env: Env, url_arg: list[Any]) -> list[Any]:
    url = to_system(argument_value(url_arg, "extension() url"))
    if url is None:
        return []
    out: list[Any] = []
    for n in items:
        if type(n) is not Node:
            continue
        src = source(n)
        extensions = src.get("extension") if src else None
        if type(extensions) is not list:
            continue
        for i, e in enumerate(extensions):
            if type(e) is dict and e.get("url") == url:
                out.append(Node(e, "Extension", n, "extension", i))
    return out


@eager("hasValue")
def _has_value(items: list[Any], env: Env) -> list[Any]:
    if len(items) != 1:
        return [False]
    item = items[0]
    return [type(item) is Node and item.data is not None and type(item.data) is not dict]


@eager("getValue")
def _get_value(items: list[Any], env: Env) -> list[Any]:
    if len(items) != 1:
        return []
    item = items[0]
    if type(item) is not Node or item.data is None or type(item.data) is dict:
        return []
    return [to_system(item)]


@eager("children")
def _children(items: list[Any], env: Env) -> list[Any]:
    out: list[Any] = []
    for n in items:
        if type(n) is Node:
            out.extend(children(n))
    return out


@eager("descendants")
def _descendants(items: list[Any], env: Env) -> list[Any]:
    out: list[Any] = []
    for n in items:
        if type(n) is Node:
            out.extend(descendants(n))
    return out


def _reference_text(item: Any) -> str | None:
    if type(item) is Node:
        if type(item.data) is dict:
            ref = item.data.get("reference")
            return ref if isinstance(ref, str) else None
        return item.data if isinstance(item.data, str) else None
    return item if isinstance(item, str) else None


def _contained(env: Env, local_id: str) -> Node | None:
    root = env.root_resource()
    if root is None or type(root.data) is not dict:
        return None
    for i, c in enumerate(root.data.get("contained") or ()):
        if type(c) is dict and c.get("id") == local_id:
            return Node(c, infer_type(c), root, "contained", i)
    return None


def _bundle_entry(env: Env, reference: str) -> Node | None:
    root = env.root_resource()
    if root is None or root.type != "Bundle" or type(root.data) is not dict:
        return None
    for entry in root.data.get("entry") or ():
        if type(entry) is not dict:
            continue
        resource = entry.get("resource")
        full_url = entry.get("fullUrl")
        if type(resource) is not dict:
            continue
        rt, rid = resource.get("resourceType"), resource.get("id")
        if (
            reference == full_url
            or (full_url and full_url.endswith("/" + reference))
            or reference == f"{rt}/{rid}"
        ):
            return Node(resource, infer_type(resource))
    return None


def resolve_reference(reference: str, env: Env) -> Node | None:
    """The resource a reference points at: contained, in the same Bundle, from the resolver,
    or — when nothing can fetch it — a stub ``{resourceType, id}`` read from the reference,
    which is all ``resolve() is Patient`` needs."""
    if reference.startswith("#"):
        return _contained(env, reference[1:])
    found = _bundle_entry(env, reference)
    if found is not None:
        return found
    if env.resolver is not None:
        resource = env.resolver(reference)
        if isinstance(resource, dict):
            return Node(resource, infer_type(resource))
    m = _REFERENCE.search(reference)
    if m and model().is_resource_type(m.group("type")):
        return Node({"resourceType": m.group("type"), "id": m.group("id")}, m.group("type"))
    return None


def reference_stub_type(reference: str) -> str | None:
    """The resource type ``resolve()`` gives a reference it cannot fetch (see above)."""
    m = _REFERENCE.search(reference)
    return m.group("type") if m and model().is_resource_type(m.group("type")) else None


@eager("resolve")
def _resolve(items: list[Any], env: Env) -> list[Any]:
    out: list[Any] = []
    for item in items:
        reference = _reference_text(item)
        if reference:
            found = resolve_reference(reference, env)
            if found is not None:
                out.append(found)
    return out


@eager("conformsTo", 1)
def _conforms_to(items: list[Any], env: Env, url_arg: list[Any]) -> list[Any]:
    item = single(items, "conformsTo()")
    url = to_system(argument_value(url_arg, "conformsTo() url"))
    if item is None or url is None:
        return []
    if not (isinstance(url, str) and url.startswith(_CORE_PROFILE)):
        raise FHIRPathError(f"conformsTo() only knows the core FHIR structures, not {url}")
    name = url[len(_CORE_PROFILE) :]
    if model().structure(name) is None and not model().is_primitive(name):
        raise FHIRPathError(f"conformsTo(): {url} is not a core FHIR structure")
    return [type(item) is Node and item.type is not None and name in type_ancestors(item.type)]
