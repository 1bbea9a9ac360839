"""The FHIR R4 element model: what each resource and data type may contain.

Loaded once from the compact definitions generated from the official
StructureDefinitions (``scripts/gen_definitions.py``). Everything that needs to
know the shape of FHIR data — validation, FHIRPath, search indexing, ``_summary``
and ``_elements`` — asks this module rather than reading StructureDefinitions.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

FHIR_VERSION = "4.0.1"


def load_definition(name: str) -> Any:
    """One of the shipped definition files (``model``, ``bindings``, ``binding-systems``,
    ``binding-codes``, ``search-parameters``, ``compartments``)."""
    ref = resources.files("yilian.fhir") / "definitions" / f"{name}.json.gz"
    with ref.open("rb") as fh, gzip.GzipFile(fileobj=fh) as gz:
        return json.loads(gz.read())


@dataclass(frozen=True, slots=True)
class ElementSpec:
    """One element of a structure, as the StructureDefinition snapshot declares it."""

    name: str
    types: tuple[str, ...]
    min: int
    max: int  # -1 means unbounded
    choice: bool = False
    summary: bool = False
    modifier: bool = False
    binding: str | None = None
    targets: tuple[str, ...] = ()
    # Not part of FHIR 4.0.1: added by the packaging the definitions came from.
    nonstandard: bool = False
    # Position in the StructureDefinition (the canonical JSON property order).
    order: int = 0

    @property
    def repeating(self) -> bool:
        return self.max != 1

    def choice_key(self, type_name: str) -> str:
        """The JSON property of this choice element for one of its types: value + Quantity -> valueQuantity."""
        return self.name + type_name[:1].upper() + type_name[1:]


@dataclass(frozen=True, slots=True)
class StructureSpec:
    name: str
    kind: str  # resource | datatype | backbone
    base: str | None
    abstract: bool
    elements: dict[str, ElementSpec] = field(default_factory=dict)
    # JSON property -> (element, type) for every property the structure accepts,
    # choice types expanded (valueQuantity -> (value, Quantity)).
    properties: dict[str, tuple[ElementSpec, str]] = field(default_factory=dict)
    # Not part of FHIR 4.0.1 (R4B's SubscriptionStatus): see ``scripts/gen_definitions.py``.
    nonstandard: bool = False


@dataclass(frozen=True, slots=True)
class PrimitiveSpec:
    name: str
    base: str | None
    regex: str | None


class Model:
    """Lookup over every structure and primitive type of FHIR R4."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.primitives: dict[str, PrimitiveSpec] = {
            name: PrimitiveSpec(name, p.get("base"), p.get("regex")) for name, p in raw["primitives"].items()
        }
        self.structures: dict[str, StructureSpec] = {}
        for name, s in raw["types"].items():
            elements: dict[str, ElementSpec] = {}
            props: dict[str, tuple[ElementSpec, str]] = {}
            for ename, e in s["elements"].items():
                spec = ElementSpec(
                    name=ename,
                    types=tuple(e.get("types", ())),
                    min=e.get("min", 0),
                    max=e.get("max", 1),
                    choice=e.get("choice", False),
                    summary=e.get("summary", False),
                    modifier=e.get("modifier", False),
                    binding=e.get("binding"),
                    targets=tuple(e.get("targets", ())),
                    nonstandard=e.get("nonstandard", False),
                    order=e.get("order", 0),
                )
                elements[ename] = spec
                if spec.choice:
                    for t in spec.types:
                        props[spec.choice_key(t)] = (spec, t)
                else:
                    props[ename] = (spec, spec.types[0] if spec.types else "")
            self.structures[name] = StructureSpec(
                name=name,
                kind=s["kind"],
                base=s.get("base"),
                abstract=s.get("abstract", False),
                elements=elements,
                properties=props,
                nonstandard=s.get("nonstandard", False),
            )
        self.resource_types: frozenset[str] = frozenset(
            n for n, s in self.structures.items() if s.kind == "resource" and not s.abstract
        )

    def structure(self, name: str) -> StructureSpec | None:
        return self.structures.get(name)

    def is_primitive(self, type_name: str) -> bool:
        return type_name in self.primitives

    def is_resource_type(self, name: str) -> bool:
        return name in self.resource_types

    def ancestors(self, type_name: str) -> list[str]:
        """The type and its bases, nearest first: Age -> [Age, Quantity, Element]."""
        out: list[str] = []
        name: str | None = type_name
        while name and name not in out:
            out.append(name)
            if name in self.primitives:
                name = self.primitives[name].base
            elif name in self.structures:
                name = self.structures[name].base
            else:
                break
        return out

    def is_subtype(self, type_name: str, of: str) -> bool:
        return of in self.ancestors(type_name)

    def element(self, type_name: str, name: str) -> ElementSpec | None:
        s = self.structures.get(type_name)
        return s.elements.get(name) if s else None

    def property(self, type_name: str, json_key: str) -> tuple[ElementSpec, str] | None:
        """The element and concrete type behind a JSON property of ``type_name``."""
        s = self.structures.get(type_name)
        return s.properties.get(json_key) if s else None


@cache
def model() -> Model:
    """The R4 model, loaded on first use and shared by the whole process."""
    return Model(load_definition("model"))


@cache
def required_bindings() -> dict[str, frozenset[str]]:
    """Value set URL -> allowed codes, for every required binding that can be enumerated."""
    raw: dict[str, list[str]] = load_definition("bindings")
    return {url: frozenset(codes) for url, codes in raw.items()}


@cache
def required_binding_codes() -> dict[str, dict[str, frozenset[str]]]:
    """Value set URL -> code system URL -> the codes of that system the value set allows.

    The same value sets as :func:`required_bindings`, split by system, so that a Coding is
    judged by its own system's codes.
    """
    raw: dict[str, dict[str, list[str]]] = load_definition("binding-codes")
    return {
        url: {system: frozenset(codes) for system, codes in by_system.items()}
        for url, by_system in raw.items()
    }


@cache
def binding_systems() -> dict[str, str]:
    """Value set URL -> the one code system its codes come from (for implied token systems)."""
    raw: dict[str, str] = load_definition("binding-systems")
    return raw
