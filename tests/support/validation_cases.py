"""Test material for ``yilian.fhir.validation``: the shared data sets and systematic corruptions.

A corruption takes a valid resource, breaks one rule at one element found by walking the
resource along the element model (the same model the validator is compiled from, but
walked here the slow, obvious way), and says which FHIRPath expression the validator
must name for it. ``None`` means the resource has no element the corruption applies to.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from tests.support.paths import SHARED as SHARED_DATA
from yilian.fhir.model import ElementSpec, model, required_bindings

ROOT = Path(__file__).resolve().parents[2]
DATA = SHARED_DATA
EXAMPLES = DATA / "fhir-r4-examples"
SYNTHEA = DATA / "synthea-fhir-r4"
MICROSOFT = DATA / "fhir-server-peer-tests" / "microsoft-fhir-server"
JSON_SCHEMA = DATA / "fhir-r4-definitions" / "fhir.schema.json"

UNKNOWN = "yilianUnknownElement"
DATE_TYPES = frozenset({"date", "dateTime", "instant"})


def read_json(path: Path) -> Any:
    """A JSON file as the server would parse it (orjson), tolerating a UTF-8 byte order mark."""
    raw = path.read_bytes()
    return orjson.loads(raw.removeprefix(b"\xef\xbb\xbf"))


def example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*.json"))


def synthea_files() -> list[Path]:
    return sorted(SYNTHEA.glob("*.json"))


@cache
def example(name: str) -> dict[str, Any]:
    resource: dict[str, Any] = read_json(EXAMPLES / name)
    return resource


def fresh(resource: dict[str, Any]) -> dict[str, Any]:
    """A deep copy to corrupt."""
    return copy.deepcopy(resource)


@dataclass
class Site:
    """One property of one JSON object in a resource, with what the model says it is."""

    holder: dict[str, Any]
    key: str
    element: ElementSpec
    type: str
    expression: str  # FHIRPath of the element, without an index

    @property
    def value(self) -> Any:
        return self.holder[self.key]

    def items(self) -> list[tuple[str, Any]]:
        """(FHIRPath, value) of each occurrence: one per array item for a repeating element."""
        if self.element.repeating and isinstance(self.value, list):
            return [(f"{self.expression}[{i}]", v) for i, v in enumerate(self.value)]
        return [(self.expression, self.value)]


def sites(resource: dict[str, Any]) -> Iterator[Site]:
    """Every element occurrence in ``resource``, contained and nested resources included, in document order."""
    yield from _walk(resource, resource["resourceType"], resource["resourceType"])


def _walk(obj: dict[str, Any], type_name: str, expression: str) -> Iterator[Site]:
    m = model()
    is_resource = m.is_resource_type(type_name)
    for key in list(obj):
        if key.startswith("_") or (is_resource and key == "resourceType"):
            continue
        found = m.property(type_name, key)
        if found is None:
            continue
        element, declared = found
        actual = "id" if is_resource and element.name == "id" else declared
        seg = f"{element.name}.ofType({declared})" if element.choice else element.name
        site = Site(obj, key, element, actual, f"{expression}.{seg}")
        yield site
        for item_expression, item in site.items():
            if not isinstance(item, dict):
                continue
            structure = m.structure(actual)
            if actual == "Resource" or (structure is not None and structure.kind == "resource"):
                nested = item.get("resourceType")
                if isinstance(nested, str) and m.is_resource_type(nested):
                    yield from _walk(item, nested, item_expression)
            elif structure is not None:
                yield from _walk(item, actual, item_expression)


def _pick(resource: dict[str, Any], wanted: Callable[[Site], bool], last: bool) -> Site | None:
    """The first (or last, usually the deepest) element occurrence that ``wanted`` accepts."""
    chosen = None
    for site in sites(resource):
        if wanted(site):
            chosen = site
            if not last:
                break
    return chosen


def _is_primitive(site: Site) -> bool:
    return model().is_primitive(site.type)


# -- corruptions: each breaks one rule in place and returns the expression to expect -----


def unknown_at_root(r: dict[str, Any], last: bool = False) -> str | None:
    r[UNKNOWN] = "x"
    return f"{r['resourceType']}.{UNKNOWN}"


def unknown_nested(r: dict[str, Any], last: bool = False) -> str | None:
    site = _pick(
        r, lambda s: not _is_primitive(s) and s.type not in ("Resource",) and _holds_objects(s), last
    )
    if site is None:
        return None
    expression, item = site.items()[0]
    item[UNKNOWN] = "x"
    return f"{expression}.{UNKNOWN}"


def _holds_objects(site: Site) -> bool:
    structure = model().structure(site.type)
    if structure is None or structure.kind == "resource":
        return False
    return all(isinstance(v, dict) for _, v in site.items())


_WRONG_JSON = {"boolean": "true", "integer": "1", "positiveInt": "1", "unsignedInt": "1", "decimal": "1.5"}


def wrong_json_type(r: dict[str, Any], last: bool = False) -> str | None:
    site = _pick(r, lambda s: _is_primitive(s) and not s.element.repeating and s.value is not None, last)
    if site is None:
        return None
    site.holder[site.key] = _WRONG_JSON.get(site.type, 12345)
    return site.expression


def array_for_single(r: dict[str, Any], last: bool = False) -> str | None:
    site = _pick(r, lambda s: not s.element.repeating, last)
    if site is None:
        return None
    site.holder[site.key] = [site.value]
    return site.expression


def single_for_array(r: dict[str, Any], last: bool = False) -> str | None:
    site = _pick(r, lambda s: s.element.repeating and isinstance(s.value, list) and len(s.value) > 0, last)
    if site is None:
        return None
    site.holder[site.key] = site.value[0]
    return site.expression


def remove_required(r: dict[str, Any], last: bool = False) -> str | None:
    site = _pick(
        r, lambda s: s.element.min > 0 and not s.element.choice and "_" + s.key not in s.holder, last
    )
    if site is None:
        return None
    del site.holder[site.key]
    return site.expression


_SAMPLE_VALUES = {
    "boolean": True,
    "string": "x",
    "integer": 1,
    "code": "x",
    "dateTime": "2020-01-01",
    "uri": "http://example.org",
    "decimal": 1.5,
    "Quantity": {"value": 1},
    "CodeableConcept": {"text": "x"},
    "Reference": {"display": "x"},
    "Period": {"start": "2020-01-01"},
}


def two_choice_types(r: dict[str, Any], last: bool = False) -> str | None:
    def fits(s: Site) -> bool:
        return s.element.choice and any(t != s.type and t in _SAMPLE_VALUES for t in s.element.types)

    site = _pick(r, fits, last)
    if site is None:
        return None
    other = next(t for t in site.element.types if t != site.type and t in _SAMPLE_VALUES)
    site.holder[site.element.choice_key(other)] = _SAMPLE_VALUES[other]
    return site.expression.rsplit(".ofType(", 1)[0]


def bad_required_code(r: dict[str, Any], last: bool = False) -> str | None:
    bound = required_bindings()

    def fits(s: Site) -> bool:
        return s.type == "code" and s.element.binding in bound and s.value is not None

    site = _pick(r, fits, last)
    if site is None:
        return None
    expression, _ = site.items()[0]
    if site.element.repeating and isinstance(site.value, list):
        site.value[0] = "not-a-code-of-this-value-set"
    else:
        site.holder[site.key] = "not-a-code-of-this-value-set"
    return expression


def disallowed_target(r: dict[str, Any], last: bool = False) -> str | None:
    def fits(s: Site) -> bool:
        targets = set(s.element.targets)
        return (
            s.type == "Reference"
            and bool(targets)
            and not targets & {"Resource", "Any"}
            and any(isinstance(v, dict) and "reference" in v for _, v in s.items())
        )

    site = _pick(r, fits, last)
    if site is None:
        return None
    expression, item = next((e, v) for e, v in site.items() if isinstance(v, dict) and "reference" in v)
    wrong = next(t for t in ("Basic", "Bundle", "Binary", "Linkage") if t not in site.element.targets)
    item["reference"] = f"{wrong}/x1"
    item.pop("type", None)
    return f"{expression}.reference"


def invalid_date(r: dict[str, Any], last: bool = False) -> str | None:
    site = _pick(r, lambda s: s.type in DATE_TYPES and s.value is not None, last)
    if site is None:
        return None
    expression, _ = site.items()[0]
    if site.element.repeating and isinstance(site.value, list):
        site.value[0] = "2020-13-45"
    else:
        site.holder[site.key] = "2020-13-45"
    return expression


# Each takes the resource to corrupt in place and whether to pick the last fitting
# element instead of the first.
CORRUPTIONS: dict[str, Callable[[dict[str, Any], bool], str | None]] = {
    "unknown element at the root": unknown_at_root,
    "unknown element nested": unknown_nested,
    "wrong JSON type for a primitive": wrong_json_type,
    "array where max=1": array_for_single,
    "single value where max>1": single_for_array,
    "required element removed": remove_required,
    "two types of one choice element": two_choice_types,
    "code outside its required value set": bad_required_code,
    "reference to a type the element does not allow": disallowed_target,
    "invalid date": invalid_date,
}
