"""FHIR PATCH: the official FHIRPath Patch cases (XML, converted with the test support
converter), the JSON Patch cases, and the guarantees the server relies on (the input
is never changed, errors have categories).

XML Patch (``xml-patch-tests.xml``) is not run: the server only accepts JSON.
"""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.fhir_xml import FHIR_NS, resource_from_element
from tests.support.paths import SHARED as SHARED_DATA
from yilian.fhir.patch import apply_fhirpath_patch, apply_json_patch
from yilian.kernel.errors import Category, YilianError

ROOT = Path(__file__).resolve().parents[3]
PATCH_TESTS = SHARED_DATA / "fhir-patch-tests"
IGNORED = ("meta", "text")  # SOURCE.md: compare ignoring meta; the narrative's XHTML
# differs only in serialisation between the XML case and the JSON string it is patched to


@dataclass(frozen=True)
class PatchCase:
    name: str
    input: dict[str, Any]
    patch: Any
    output: dict[str, Any] | None
    error: str | None


def _first_resource(element: ET.Element | None) -> dict[str, Any] | None:
    if element is None:
        return None
    children = [c for c in element if isinstance(c.tag, str) and c.tag.startswith(FHIR_NS)]
    return resource_from_element(children[0]) if children else None


def fhirpath_cases() -> list[PatchCase]:
    root = ET.parse(PATCH_TESTS / "fhir-patch-tests.xml").getroot()
    cases = []
    for case in root.iter("case"):
        error = case.find("error")
        resource = _first_resource(case.find("input"))
        diff = _first_resource(case.find("diff"))
        assert resource is not None and diff is not None
        cases.append(
            PatchCase(
                name=case.get("name", "?"),
                input=resource,
                patch=diff,
                output=_first_resource(case.find("output")),
                error=None if error is None else error.get("msg", "error"),
            )
        )
    return cases


def json_cases() -> list[PatchCase]:
    raw = json.loads((PATCH_TESTS / "json-patch-tests.json").read_text(encoding="utf-8"))
    return [
        PatchCase(
            name=c["comment"],
            input=c["doc"],
            patch=c["patch"],
            output=c.get("expected"),
            error=c.get("error"),
        )
        for c in raw
    ]


FHIRPATH_CASES = fhirpath_cases()
JSON_CASES = json_cases()


def _comparable(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in IGNORED}


@pytest.mark.parametrize("case", FHIRPATH_CASES, ids=[c.name for c in FHIRPATH_CASES])
def test_official_fhirpath_patch_case(case: PatchCase) -> None:
    before = copy.deepcopy(case.input)
    if case.error is not None:
        with pytest.raises(YilianError) as raised:
            apply_fhirpath_patch(case.input, case.patch)
        assert raised.value.category in (Category.INVALID, Category.UNPROCESSABLE)
    else:
        assert case.output is not None
        result = apply_fhirpath_patch(case.input, case.patch)
        assert _comparable(result) == _comparable(case.output)
    assert case.input == before, "the input resource must not be changed"


@pytest.mark.parametrize("case", JSON_CASES, ids=[c.name for c in JSON_CASES])
def test_json_patch_case(case: PatchCase) -> None:
    before = copy.deepcopy(case.input)
    if case.error is not None:
        with pytest.raises(YilianError) as raised:
            apply_json_patch(case.input, case.patch)
        assert raised.value.category in (Category.INVALID, Category.UNPROCESSABLE)
    else:
        assert apply_json_patch(case.input, case.patch) == case.output
    assert case.input == before, "the input document must not be changed"


def test_the_official_cases_are_all_there() -> None:
    assert len(FHIRPATH_CASES) == 33
    assert len(JSON_CASES) == 16


# -- FHIRPath Patch beyond the official cases -------------------------------------------------


def _operation(**parts: Any) -> dict[str, Any]:
    return {"name": "operation", "part": [{"name": name, **value} for name, value in parts.items()]}


def _patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(operations)}


def test_replace_a_choice_element_with_another_type_moves_its_json_property() -> None:
    observation = {"resourceType": "Observation", "status": "final", "valueQuantity": {"value": 1}}
    patch = _patch(
        _operation(
            type={"valueCode": "replace"},
            path={"valueString": "Observation.value"},
            value={"valueString": "x"},
        )
    )
    assert apply_fhirpath_patch(observation, patch) == {
        "resourceType": "Observation",
        "status": "final",
        "valueString": "x",
    }


def test_add_a_choice_element_takes_the_type_from_the_value() -> None:
    patient = {"resourceType": "Patient"}
    patch = _patch(
        _operation(
            type={"valueCode": "add"},
            path={"valueString": "Patient"},
            name={"valueString": "deceased"},
            value={"valueBoolean": True},
        )
    )
    assert apply_fhirpath_patch(patient, patch) == {"resourceType": "Patient", "deceasedBoolean": True}


def test_delete_a_repeating_primitive_keeps_its_extensions_aligned() -> None:
    patient = {
        "resourceType": "Patient",
        "name": [{"given": ["A", "B"], "_given": [None, {"extension": [{"url": "u", "valueString": "x"}]}]}],
    }
    patch = _patch(_operation(type={"valueCode": "delete"}, path={"valueString": "Patient.name.given[0]"}))
    assert apply_fhirpath_patch(patient, patch)["name"] == [
        {"given": ["B"], "_given": [{"extension": [{"url": "u", "valueString": "x"}]}]}
    ]


def test_extensions_of_a_primitive_are_added_and_deleted_in_its_sibling() -> None:
    url = "http://hl7.org/fhir/StructureDefinition/patient-birthTime"
    patient = {"resourceType": "Patient", "birthDate": "1974-12-25"}
    extension = {"url": url, "valueDateTime": "1974-12-25T14:35:45-05:00"}
    add = _patch(
        _operation(
            type={"valueCode": "add"},
            path={"valueString": "Patient.birthDate"},
            name={"valueString": "extension"},
            # an extension is given as parts (R4 Parameters has no valueExtension)
            value={
                "part": [
                    {"name": "url", "valueUri": url},
                    {"name": "value", "valueDateTime": extension["valueDateTime"]},
                ]
            },
        )
    )
    added = apply_fhirpath_patch(patient, add)
    assert added == {**patient, "_birthDate": {"extension": [extension]}}
    delete = _patch(
        _operation(
            type={"valueCode": "delete"}, path={"valueString": f"Patient.birthDate.extension('{url}')"}
        )
    )
    assert apply_fhirpath_patch(added, delete) == patient


def test_delete_of_nothing_is_not_an_error() -> None:
    patient = {"resourceType": "Patient", "active": True}
    patch = _patch(_operation(type={"valueCode": "delete"}, path={"valueString": "Patient.birthDate"}))
    assert apply_fhirpath_patch(patient, patch) == patient


def test_replace_of_nothing_is_unprocessable() -> None:
    patch = _patch(
        _operation(
            type={"valueCode": "replace"},
            path={"valueString": "Patient.birthDate"},
            value={"valueDate": "2000"},
        )
    )
    with pytest.raises(YilianError) as raised:
        apply_fhirpath_patch({"resourceType": "Patient"}, patch)
    assert raised.value.category is Category.UNPROCESSABLE


def test_malformed_patches_are_invalid() -> None:
    for bad in (
        {"resourceType": "Bundle"},
        _patch({"name": "op"}),
        _patch(_operation(type={"valueCode": "explode"}, path={"valueString": "Patient"})),
        _patch(_operation(type={"valueCode": "delete"}, path={"valueString": "Patient.name.where("})),
    ):
        with pytest.raises(YilianError) as raised:
            apply_fhirpath_patch({"resourceType": "Patient"}, bad)
        assert raised.value.category is Category.INVALID


def test_json_patch_errors_are_categorised() -> None:
    with pytest.raises(YilianError) as raised:
        apply_json_patch({"a": 1}, [{"op": "frobnicate", "path": "/a"}])
    assert raised.value.category is Category.INVALID
    with pytest.raises(YilianError) as raised:
        apply_json_patch({"a": 1}, [{"op": "remove", "path": "/b"}])
    assert raised.value.category is Category.UNPROCESSABLE
    with pytest.raises(YilianError):
        apply_json_patch({"a": [1]}, [{"op": "add", "path": "/a/01", "value": 2}])
    with pytest.raises(YilianError):
        apply_json_patch({"a": {"b": 1}}, [{"op": "move", "from": "/a", "path": "/a/b/c"}])


def test_json_patch_test_does_not_confuse_booleans_and_numbers() -> None:
    with pytest.raises(YilianError):
        apply_json_patch({"a": True}, [{"op": "test", "path": "/a", "value": 1}])
    assert apply_json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 1.0}]) == {"a": 1}
