"""FHIR XML -> FHIR JSON (as Python data), for test material published only as XML.

The mapping is the one the FHIR specification defines between its two formats
(R4 §2.6.2 / §2.6.3), driven by ``yilian.fhir.model``:

- an element that may repeat (max != 1) becomes an array, others a single value;
- ``value`` attributes are primitives, typed by the element's FHIR type (boolean ->
  bool, integer types -> int, decimal -> ``Decimal`` so that ``1.50`` keeps its digits,
  everything else -> str);
- a primitive's ``id`` attribute and ``extension`` children go to the ``_name`` sibling
  (aligned arrays with ``None`` for repeating primitives);
- choice elements keep their typed name (``valueQuantity``);
- resource-typed elements (``contained``, ``Bundle.entry.resource``…) wrap one resource;
- the XHTML ``div`` is serialised back to a string.

Unknown elements (not in the model) are converted by shape, so malformed input still
yields something to assert on.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from decimal import Decimal
from pathlib import Path
from typing import Any

from yilian.fhir.model import model

FHIR_NS = "{http://hl7.org/fhir}"
XHTML_NS = "http://www.w3.org/1999/xhtml"
_INTEGERS = frozenset({"integer", "positiveInt", "unsignedInt", "integer64"})
_RESOURCE_TYPES = frozenset({"Resource", "DomainResource"})


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _primitive(value: str, fhir_type: str | None) -> Any:
    if fhir_type == "boolean":
        return value == "true"
    if fhir_type in _INTEGERS:
        return int(value)
    if fhir_type == "decimal":
        return Decimal(value)
    return value


def _xhtml(element: ET.Element) -> str:
    ET.register_namespace("", XHTML_NS)
    return ET.tostring(element, encoding="unicode", short_empty_elements=True).strip()


def _fhir_children(element: ET.Element) -> list[ET.Element]:
    return [c for c in element if isinstance(c.tag, str)]


def resource_from_element(element: ET.Element) -> dict[str, Any]:
    """The JSON form of a resource element (``<Patient xmlns="http://hl7.org/fhir">``)."""
    rtype = _local(element.tag)
    out: dict[str, Any] = {"resourceType": rtype}
    _fill(out, element, rtype)
    return out


def _element_type(parent_type: str | None, name: str) -> tuple[str | None, bool | None]:
    """(FHIR type, repeats) of a child element; (None, None) when the model does not know it."""
    if parent_type is None:
        return None, None
    m = model()
    structure = m.structure("Element" if m.is_primitive(parent_type) else parent_type)
    if structure is None:
        return None, None
    prop = structure.properties.get(name)
    if prop is None:
        return None, None
    spec, type_name = prop
    return type_name or None, spec.repeating


def _fill(out: dict[str, Any], element: ET.Element, type_name: str | None) -> None:
    if element.get("id") is not None:
        out["id"] = element.get("id")
    if element.get("url") is not None:  # Extension.url is an attribute in XML
        out["url"] = element.get("url")
    groups: dict[str, list[ET.Element]] = {}
    for child in _fhir_children(element):
        groups.setdefault(_local(child.tag), []).append(child)
    for name, elements in groups.items():
        child_type, repeats = _element_type(type_name, name)
        if repeats is None:
            repeats = len(elements) > 1
        if name == "div" and (child_type == "xhtml" or elements[0].tag.startswith("{" + XHTML_NS)):
            out["div"] = _xhtml(elements[0])
            continue
        if child_type in _RESOURCE_TYPES:
            resources = [resource_from_element(_fhir_children(e)[0]) for e in elements if _fhir_children(e)]
            out[name] = resources if repeats else resources[0]
            continue
        is_primitive = child_type is not None and model().is_primitive(child_type)
        if child_type is None:
            # unknown to the model: a value attribute and no children means a primitive
            is_primitive = all(e.get("value") is not None and not _fhir_children(e) for e in elements)
        if is_primitive:
            _fill_primitive(out, name, elements, child_type, repeats)
        else:
            values = []
            for e in elements:
                obj: dict[str, Any] = {}
                _fill(obj, e, child_type)
                values.append(obj)
            out[name] = values if repeats else values[0]


def _fill_primitive(
    out: dict[str, Any], name: str, elements: list[ET.Element], fhir_type: str | None, repeats: bool
) -> None:
    values: list[Any] = []
    extras: list[dict[str, Any] | None] = []
    for e in elements:
        raw = e.get("value")
        values.append(None if raw is None else _primitive(raw, fhir_type))
        extra: dict[str, Any] = {}
        _fill(extra, e, "Element")
        extras.append(extra or None)
    if repeats:
        if any(v is not None for v in values):
            out[name] = values
        if any(x is not None for x in extras):
            out["_" + name] = extras
        return
    if values[0] is not None:
        out[name] = values[0]
    if extras[0] is not None:
        out["_" + name] = extras[0]


def parse_resource(text: str | bytes) -> dict[str, Any]:
    return resource_from_element(ET.fromstring(text))


def load_resource(path: Path) -> dict[str, Any]:
    return resource_from_element(ET.parse(path).getroot())
