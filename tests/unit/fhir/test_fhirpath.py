"""Focused tests of the FHIRPath engine: what search extraction and FHIRPath Patch rely on
beyond the official suite."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from yilian.fhir.fhirpath import (
    UNSUPPORTED_FUNCTIONS,
    FHIRPathError,
    Node,
    TypedValue,
    compile_path,
    evaluate,
)
from yilian.kernel.errors import Category, YilianError

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "bp",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
    "subject": {"reference": "Patient/p1"},
    "performer": [
        {"reference": "http://example.org/fhir/Practitioner/x/_history/2"},
        {"reference": "#org"},
        {"reference": "urn:uuid:0b7f1ac2-64cc-4b87-8a8b-9d3bd2f4b5a5"},
    ],
    "contained": [{"resourceType": "Organization", "id": "org", "name": "Clinic"}],
    "effectivePeriod": {"start": "2015-02", "end": "2015-02-07T13:28:17-05:00"},
    "valueQuantity": {"value": 185, "unit": "lbs", "system": "http://unitsofmeasure.org", "code": "[lb_av]"},
    "component": [
        {"code": {"text": "systolic"}, "valueQuantity": {"value": 120, "code": "mm[Hg]"}},
        {"code": {"text": "note"}, "valueString": "ok"},
    ],
}

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "birthDate": "1974-12-25",
    "_birthDate": {
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                "valueDateTime": "1974-12-25T14:35:45-05:00",
            }
        ]
    },
    "_active": {"extension": [{"url": "http://example.org/reason", "valueString": "unknown"}]},
    "name": [
        {"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
        {
            "use": "usual",
            "given": [None, "Jim"],
            "_given": [{"extension": [{"url": "x", "valueCode": "a"}]}, None],
        },
    ],
    "deceasedBoolean": False,
    "contact": [{"name": {"family": "du Marché"}, "gender": "female"}],
}


def typed(resource: dict[str, Any], expression: str) -> list[tuple[str, Any]]:
    return [(t.type, t.value) for t in compile_path(expression).evaluate_typed(resource)]


# -- choice types -----------------------------------------------------------------------------


def test_choice_element_is_found_by_its_name_and_typed_by_its_json_property() -> None:
    assert typed(OBSERVATION, "Observation.value") == [("Quantity", OBSERVATION["valueQuantity"])]
    assert typed(OBSERVATION, "Observation.effective") == [("Period", OBSERVATION["effectivePeriod"])]
    assert typed(OBSERVATION, "Observation.component.value") == [
        ("Quantity", {"value": 120, "code": "mm[Hg]"}),
        ("string", "ok"),
    ]


def test_as_and_oftype_select_one_type_of_a_choice() -> None:
    assert evaluate(OBSERVATION, "(Observation.component.value as Quantity).value") == [120]
    assert evaluate(OBSERVATION, "Observation.component.value.ofType(string)") == ["ok"]
    assert evaluate(OBSERVATION, "Observation.value.as(Period)") == []
    assert evaluate(OBSERVATION, "Observation.value is Quantity") == [True]


def test_json_name_of_a_choice_is_accepted_except_in_strict_mode() -> None:
    assert evaluate(OBSERVATION, "Observation.valueQuantity.unit") == ["lbs"]
    with pytest.raises(FHIRPathError):
        compile_path("Observation.valueQuantity.unit", strict=True).evaluate(OBSERVATION)


def test_type_hierarchy() -> None:
    age = {"resourceType": "Observation", "extension": [{"url": "a", "valueAge": {"value": 41, "code": "a"}}]}
    assert evaluate(age, "Observation.extension('a').value is Quantity") == [True]
    assert evaluate(age, "Observation.extension('a').value is Duration") == [False]
    assert evaluate(PATIENT, "Patient is DomainResource") == [True]
    assert evaluate(PATIENT, "Resource.id") == ["p1"]
    assert evaluate(PATIENT, "Observation.id") == []


# -- primitives and their `_x` siblings ----------------------------------------------------------


def test_primitive_and_its_extensions_are_one_node() -> None:
    url = "http://hl7.org/fhir/StructureDefinition/patient-birthTime"
    assert evaluate(PATIENT, f"Patient.birthDate.extension('{url}').value") == ["1974-12-25T14:35:45-05:00"]
    assert evaluate(PATIENT, "Patient.birthDate") == ["1974-12-25"]
    assert evaluate(PATIENT, "Patient.birthDate.hasValue()") == [True]


def test_element_with_only_extensions_exists_without_a_value() -> None:
    assert evaluate(PATIENT, "Patient.active.exists()") == [True]
    assert evaluate(PATIENT, "Patient.active.hasValue()") == [False]
    assert evaluate(PATIENT, "Patient.active.extension('http://example.org/reason').value") == ["unknown"]
    assert typed(PATIENT, "Patient.active") == [("boolean", None)]


def test_repeating_primitive_extensions_stay_aligned() -> None:
    assert evaluate(PATIENT, "Patient.name[1].given") == [None, "Jim"]
    assert evaluate(PATIENT, "Patient.name[1].given[0].extension('x').value") == ["a"]
    assert evaluate(PATIENT, "Patient.name[1].given.where(hasValue())") == ["Jim"]


# -- resolve() ----------------------------------------------------------------------------------


def test_resolve_is_type_works_without_a_resolver() -> None:
    assert evaluate(OBSERVATION, "Observation.subject.where(resolve() is Patient)") == [
        {"reference": "Patient/p1"}
    ]
    assert evaluate(OBSERVATION, "Observation.subject.where(resolve() is Group)") == []
    # absolute and versioned references, contained references
    assert evaluate(OBSERVATION, "Observation.performer.where(resolve() is Practitioner).reference") == [
        "http://example.org/fhir/Practitioner/x/_history/2"
    ]
    assert evaluate(OBSERVATION, "Observation.performer.where(resolve() is Organization).reference") == [
        "#org"
    ]
    assert evaluate(OBSERVATION, "Observation.performer[1].resolve().name") == ["Clinic"]


def test_resolve_uses_the_resolver_when_given() -> None:
    calls: list[str] = []

    def resolver(reference: str) -> dict[str, Any] | None:
        calls.append(reference)
        return (
            {"resourceType": "Patient", "id": "p1", "gender": "male"} if reference == "Patient/p1" else None
        )

    path = compile_path("Observation.subject.resolve().gender")
    assert path.evaluate(OBSERVATION, resolver=resolver) == ["male"]
    assert calls == ["Patient/p1"]
    # unresolvable and typeless: nothing
    assert evaluate(OBSERVATION, "Observation.performer[2].resolve()", resolver=resolver) == []


def test_resolve_inside_a_bundle_finds_the_entry() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "document",
        "entry": [
            {
                "fullUrl": "urn:uuid:1",
                "resource": {"resourceType": "Composition", "subject": {"reference": "urn:uuid:2"}},
            },
            {"fullUrl": "urn:uuid:2", "resource": {"resourceType": "Patient", "id": "x", "gender": "other"}},
        ],
    }
    assert evaluate(bundle, "Bundle.entry[0].resource.subject.resolve().gender") == ["other"]
    assert evaluate(bundle, "Bundle.entry[0].resource is Composition") == [True]


# -- typed results and value representations ------------------------------------------------------


def test_typed_results_name_fhir_and_system_types() -> None:
    assert typed(PATIENT, "Patient.name.given.first()") == [("string", "Peter")]
    assert typed(PATIENT, "Patient.contact") == [("Patient.contact", PATIENT["contact"][0])]
    assert typed(PATIENT, "Patient.deceased") == [("boolean", False)]
    assert typed(PATIENT, "'a' | 1 | 1.50 | true") == [
        ("System.String", "a"),
        ("System.Integer", 1),
        ("System.Decimal", Decimal("1.50")),
        ("System.Boolean", True),
    ]
    assert all(isinstance(t, TypedValue) for t in compile_path("Patient").evaluate_typed(PATIENT))


def test_dates_keep_their_precision() -> None:
    assert typed(OBSERVATION, "Observation.effective.start") == [("dateTime", "2015-02")]
    assert typed(PATIENT, "@2015-02 + 1 month") == [("System.Date", "2015-03")]
    assert evaluate(PATIENT, "@2015-02-04T14:34:28.123+10:00") == ["2015-02-04T14:34:28.123+10:00"]
    assert evaluate(PATIENT, "@T14:34") == ["14:34"]
    # comparing a month with a day: unknown, not false
    assert evaluate(OBSERVATION, "Observation.effective.start < @2015-02-01") == []
    assert evaluate(OBSERVATION, "Observation.effective.start < @2015-03-01") == [True]


@pytest.mark.parametrize(
    ("expression", "result"),
    [
        # Calendar steps are whole: the decimal part of 7.7 days or 0.1 's' is ignored.
        ("@1973-12-25T00:00:00.000+10:00 + 7.7 days", "1974-01-01T00:00:00.000+10:00"),
        ("@1973-12-25T00:00:00.000+10:00 + 0.1 's'", "1973-12-25T00:00:00.000+10:00"),
        ("@1973-12-25T00:00:00.000+10:00 + 10 'ms'", "1973-12-25T00:00:00.010+10:00"),
        ("@1973-12-25 + 1 'wk'", "1974-01-01"),
        ("@1973-12-25 + 1 month", "1974-01-25"),
    ],
)
def test_date_arithmetic_moves_by_whole_calendar_units(expression: str, result: str) -> None:
    assert [str(v) for v in evaluate(PATIENT, expression)] == [result]


@pytest.mark.parametrize("expression", ["@1973-12-25 + 1 'mo'", "@1975-12-25 + 1 'a'"])
def test_ucum_month_and_year_are_not_calendar_steps(expression: str) -> None:
    with pytest.raises(FHIRPathError):
        evaluate(PATIENT, expression)


def test_a_resource_id_is_typed_id() -> None:
    assert typed({**PATIENT, "id": "example"}, "Patient.id") == [("id", "example")]
    assert typed({**PATIENT, "name": [{"id": "n1", "family": "x"}]}, "Patient.name.id") == [("string", "n1")]


def test_decimals_are_decimal_and_quantities_are_fhir_quantities() -> None:
    assert evaluate(PATIENT, "1.10 * 1") == [Decimal("1.10")]
    assert evaluate(PATIENT, "1.5 'mg'") == [
        {"value": Decimal("1.5"), "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}
    ]
    assert evaluate(OBSERVATION, "Observation.value > 80 'kg'") == [True]  # 185 [lb_av] is 83.9 kg
    assert evaluate(OBSERVATION, "Observation.value.value") == [185]  # as stored in the JSON


def test_results_are_the_resources_own_objects() -> None:
    [name] = evaluate(PATIENT, "Patient.name.first()")
    assert name is PATIENT["name"][0]


# -- nodes know where they are (FHIRPath Patch needs this) ------------------------------------------


def test_nodes_carry_their_location() -> None:
    [node] = compile_path("Patient.name[1].given[1]").evaluate_nodes(PATIENT)
    assert isinstance(node, Node)
    assert (node.key, node.index, node.data) == ("given", 1, "Jim")
    assert node.parent is not None and node.parent.data is PATIENT["name"][1]
    assert node.path() == "Patient.name[1].given[1]"


# -- context and variables ---------------------------------------------------------------------------


def test_context_and_variables() -> None:
    contact = PATIENT["contact"][0]
    path = compile_path("name.family | %resource.id | %context.gender | %who")
    assert path.evaluate(PATIENT, context=contact, variables={"who": "me"}) == [
        "du Marché",
        "p1",
        "female",
        "me",
    ]
    with pytest.raises(FHIRPathError, match="%nobody"):
        evaluate(PATIENT, "%nobody")
    assert evaluate(PATIENT, "%loinc") == ["http://loinc.org"]


def test_three_valued_logic_and_empty_propagation() -> None:
    assert evaluate(PATIENT, "Patient.gender = 'male'") == []
    assert evaluate(PATIENT, "Patient.gender.empty() or Patient.gender = 'male'") == [True]
    assert evaluate(PATIENT, "(Patient.gender = 'male') and false") == [False]
    assert evaluate(PATIENT, "Patient.deceased.exists() and Patient.deceased != false") == [False]


# -- errors ------------------------------------------------------------------------------------------


def test_syntax_errors_are_raised_at_compile_time() -> None:
    with pytest.raises(FHIRPathError) as raised:
        compile_path("Patient.name.where(")
    assert raised.value.kind == "syntax"
    assert isinstance(raised.value, YilianError)
    assert raised.value.category is Category.INVALID


def test_unknown_and_unsupported_functions_are_named() -> None:
    with pytest.raises(FHIRPathError, match=r"unknown function frobnicate\(\)"):
        compile_path("Patient.frobnicate()")
    assert "memberOf" in UNSUPPORTED_FUNCTIONS
    with pytest.raises(FHIRPathError, match=r"memberOf\(\) is not supported"):
        compile_path("Patient.maritalStatus.memberOf('http://hl7.org/fhir/ValueSet/marital-status')")
    with pytest.raises(FHIRPathError, match="takes 1 argument"):
        compile_path("Patient.name.where()")


def test_execution_errors() -> None:
    with pytest.raises(FHIRPathError, match="single"):
        evaluate(PATIENT, "Patient.name.single()")
    with pytest.raises(FHIRPathError):
        evaluate(PATIENT, "Patient.name.given.first() + 1")


def test_strict_mode_checks_element_names_against_the_model() -> None:
    with pytest.raises(FHIRPathError, match="given1"):
        compile_path("Patient.name.given1", strict=True).evaluate(PATIENT)
    with pytest.raises(FHIRPathError):
        compile_path("Encounter.status", strict=True).evaluate(PATIENT)
    assert compile_path("Patient.name.given1").evaluate(PATIENT) == []


def test_compiled_expressions_are_cached() -> None:
    assert compile_path("Patient.name") is compile_path("Patient.name")
