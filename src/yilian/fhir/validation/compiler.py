"""Compile the R4 element model into one generated validator per structure.

Planned once per process (about 0.2 s) for every FHIR R4 resource type and every data
type and backbone element they reach; each validator's source is compiled at its first
use (``codegen`` explains the shape of the generated code and why).
For each structure the compiler decides, element by element, how its JSON properties
are checked: the primitive's fast test and its exact slow path, the validator of a
data type or backbone element, a nested resource, a ``_name`` sibling; it pastes the
required elements and the choice-type bookkeeping into the function, and adds the one
whole-object rule a structure may have: the target types of a Reference, a required
binding on a Coding or CodeableConcept, ext-1 on Extension. A Reference element with
its own targets, or a bound CodeableConcept, gets its own variant of the validator.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Any

from yilian.fhir.model import (
    ElementSpec,
    Model,
    StructureSpec,
    model,
    required_binding_codes,
    required_bindings,
)
from yilian.fhir.validation import primitives
from yilian.fhir.validation.bindings import binding_post
from yilian.fhir.validation.codegen import Namespace, StructSource
from yilian.fhir.validation.context import Checker, Context, StructValidator
from yilian.fhir.validation.elements import (
    complex_checker,
    complex_rest,
    conflict_reporter,
    missing_reporter,
    only_id,
    primitive_slow,
    resource_checker,
    sibling_checker,
    unknown_reporter,
)
from yilian.fhir.validation.extensions import extension_post
from yilian.fhir.validation.paths import Path
from yilian.fhir.validation.references import reference_checks

_ANY_TARGET = frozenset({"Resource", "Any"})
_CODED = frozenset({"Coding", "CodeableConcept", "Quantity"})
# Elements that exist everywhere but are seldom used in a data type.
_RARE = frozenset({"id", "extension", "modifierExtension", "implicitRules", "language", "contained"})
_COMMON_IN_RESOURCES = frozenset({"id", "meta", "text"})


def _sibling_allowed(element: ElementSpec, type_name: str) -> bool:
    # Element.id and Resource.id are plain strings in JSON (XML attributes) and the
    # narrative's div is XHTML: none of them has a ``_`` sibling.
    return element.name != "id" and type_name != "xhtml"


def _rank(spec: StructureSpec, element: ElementSpec) -> tuple[bool, int]:
    """Order of the tests: the definition's own order (the likeliest first), the rarely used last."""
    rare = element.name in _RARE and not (
        (spec.kind == "resource" and element.name in _COMMON_IN_RESOURCES)
        or (spec.name == "Extension" and element.name == "extension")
    )
    return rare, element.order


def _bounded(element: ElementSpec) -> bool:
    """An array with a cardinality other than 0..* or 1..*: checked by the table closure."""
    return element.repeating and (element.min > 1 or element.max > 1)


class Compiler:
    """Builds and holds the validators. Use :func:`validators` for the shared instance."""

    def __init__(self, m: Model) -> None:
        self.model = m
        self.rules = primitives.rules()
        self.resource_types = frozenset(n for n in m.resource_types if not m.structures[n].nonstandard)
        self.codes = required_bindings()
        self.codes_by_system = required_binding_codes()
        self.resources: dict[str, StructValidator] = {}
        self.ns = Namespace()
        self._sources: dict[tuple[str, Hashable], StructSource] = {}
        self._pending: list[tuple[str, Hashable, StructSource]] = []
        self.element = self._late(self.source("Element").function_name)
        names = {rt: self.source(rt).function_name for rt in sorted(self.resource_types)}
        while self._pending:
            self._generate(*self._pending.pop())
        for source in self._sources.values():
            self.ns.add(source)
        for rt, name in names.items():
            self.ns.refer(name, self.resources, rt)

    def resource(self, name: str) -> StructValidator | None:
        """The validator of a concrete FHIR R4 resource type, or None for any other name."""
        return self.resources.get(name)

    def struct(self, name: str, variant: Hashable = None) -> StructValidator:
        """The compiled validator of a structure (for tests and tools)."""
        return self.ns.get(self._sources[(name, variant)].function_name)

    # -- naming and ordering ---------------------------------------------------------

    def source(self, struct: str, variant: Hashable = None) -> StructSource:
        """The source of a structure's validator; queued to be filled in on first mention."""
        key = (struct, variant)
        found = self._sources.get(key)
        if found is None:
            suffix = f"_{len(self._sources)}" if variant is not None else ""
            found = StructSource("v_" + struct.replace(".", "_") + suffix)
            self._sources[key] = found
            self._pending.append((struct, variant, found))
        return found

    def _late(self, name: str) -> StructValidator:
        """A validator looked up when called: for slow paths built before their target exists."""
        get = self.ns.get

        def late(d: dict[str, Any], p: Path, ctx: Context) -> None:
            get(name)(d, p, ctx)

        return late

    @staticmethod
    def _keys(element: ElementSpec) -> list[tuple[str, str]]:
        """(JSON property, type) for each way the element can appear."""
        if element.choice:
            return [(element.choice_key(t), t) for t in element.types]
        return [(element.name, element.types[0])]

    def _carriers(self, element: ElementSpec) -> frozenset[str]:
        """Every JSON property whose presence means the element is present."""
        keys = set()
        for key, type_name in self._keys(element):
            keys.add(key)
            if type_name in self.rules:
                keys.add("_" + key)
        return frozenset(keys)

    # -- generation -------------------------------------------------------------------

    def _generate(self, struct: str, variant: Hashable, src: StructSource) -> None:
        spec = self.model.structures[struct]
        elements = sorted(
            (e for e in spec.elements.values() if not e.nonstandard), key=lambda e: _rank(spec, e)
        )
        table: dict[str, Checker] = {}
        choice_bits = {e.name: 1 << i for i, e in enumerate(e for e in elements if e.choice)}
        fallback_bits: dict[str, int] = {}
        if spec.kind == "resource":
            src.skip("resourceType")  # it chose this validator
        for element in elements:
            bit = choice_bits.get(element.name, 0)
            for json_key, declared in self._keys(element):
                seg = f"{element.name}.ofType({declared})" if element.choice else element.name
                type_name = "id" if spec.kind == "resource" and element.name == "id" else declared
                inline = not _bounded(element)
                self._property(src, table, spec, element, type_name, json_key, seg, inline, bit)
                if not inline and bit:
                    fallback_bits[json_key] = bit
                if type_name in self.rules and _sibling_allowed(element, type_name):
                    table["_" + json_key] = sibling_checker(
                        self.element, json_key, seg, repeats=element.repeating
                    )
                    if bit:
                        fallback_bits["_" + json_key] = bit
        src.fallback(
            table,
            unknown_reporter(
                struct,
                frozenset(k for e in elements for k, t in self._keys(e) if t in self.rules),
                frozenset(k for e in elements for k, t in self._keys(e) if t not in self.rules),
                frozenset(k for e in spec.elements.values() if e.nonstandard for k, _ in self._keys(e)),
            ),
            fallback_bits,
        )
        required = [e for e in elements if e.min > 0]
        src.required(
            [tuple(sorted(self._carriers(e))) for e in required],
            missing_reporter(tuple((e.name, e.min, self._carriers(e)) for e in required)),
        )
        src.choices(
            conflict_reporter(
                {
                    k: (e.name, key)
                    for e in elements
                    if e.choice
                    for key, _ in self._keys(e)
                    for k in (key, "_" + key)
                }
            )
        )
        if spec.kind != "resource" and any(b.key == "id" for b in src.branches):
            src.then("id", only_id)
        self._whole_object_rules(src, spec, variant, elements)

    def _whole_object_rules(
        self, src: StructSource, spec: StructureSpec, variant: Hashable, elements: list[ElementSpec]
    ) -> None:
        if spec.name == "Extension":
            value_keys = frozenset(k for e in elements if e.choice for k in self._carriers(e))
            src.post(extension_post(value_keys), "({m} != 0) == ('extension' in {d})")
        elif isinstance(variant, tuple) and variant[0] == "targets":
            check_reference, check_type = reference_checks(variant[1], self.resource_types)
            src.then("reference", check_reference, "not {x}.startswith('urn:')")
            src.then("type", check_type)
        elif isinstance(variant, tuple) and variant[0] == "binding":
            url = variant[1]
            src.post(binding_post(spec.name, url, self.codes_by_system[url]))

    def _property(
        self,
        src: StructSource,
        table: dict[str, Checker],
        spec: StructureSpec,
        element: ElementSpec,
        type_name: str,
        key: str,
        seg: str,
        inline: bool,
        bit: int,
    ) -> None:
        repeats = element.repeating
        rule = self.rules.get(type_name)
        if rule is not None:
            codes = self.codes.get(element.binding) if element.binding and type_name == "code" else None
            slow = primitive_slow(
                rule,
                key,
                seg,
                repeats=repeats,
                codes=codes,
                value_set=element.binding,
                min_items=element.min,
                max_items=element.max,
            )
            if not inline:
                table[key] = slow
            elif codes is not None:
                src.primitive(key, primitives.FAST_BOUND_CODE, slow, codes, repeats=repeats, bit=bit)
            else:
                src.primitive(
                    key, rule.fast, slow, rule.aux, repeats=repeats, bit=bit, shortcut=rule.shortcut
                )
            return
        target = self.model.structures[type_name]
        if target.kind == "resource":
            checker = resource_checker(
                self.resources.get,
                seg,
                repeats=repeats,
                contained=element.name == "contained" and spec.kind == "resource",
                required_type=None if target.abstract else type_name,
            )
            if inline:
                src.call(key, checker, bit=bit)
            else:
                table[key] = checker
            return
        variant: Hashable = None
        if type_name == "Reference":
            targets = set(element.targets)
            allowed = (
                None if not targets or targets & _ANY_TARGET else frozenset(targets & self.resource_types)
            )
            variant = ("targets", allowed)
        elif type_name in _CODED and element.binding in self.codes_by_system:
            variant = ("binding", element.binding)
        child = self.source(type_name, variant)
        late = self._late(child.function_name)
        checker = complex_checker(late, seg, repeats=repeats, min_items=element.min, max_items=element.max)
        if inline:
            src.complex(key, seg, child, checker, complex_rest(late, seg), repeats=repeats, bit=bit)
        else:
            table[key] = checker


_lock = threading.Lock()
_compiled: Compiler | None = None


def validators() -> Compiler:
    """The validators, planned by the first caller and shared by the process.

    Each validator is compiled at its first use: about 20 ms for a resource type with
    the data types pasted into it, 2.5 s for all 146.
    """
    global _compiled
    compiled = _compiled
    if compiled is None:
        with _lock:
            if _compiled is None:
                _compiled = Compiler(model())
            compiled = _compiled
    return compiled
