"""Direct paths give exactly what the FHIRPath engine gives, or step aside.

The search indexer walks plain navigation expressions over the JSON instead of running the
engine (``yilian.fhir.fhirpath.direct``). Every index row depends on that walk agreeing with
the engine, so it is compared on every official example resource and every Synthea resource,
for every search parameter of the resource's type, and the whole ``extract`` output is
compared with an engine-only extraction. The cases the walk leaves to the engine are checked
to be left, and the share it handles is held up so that a silent fall-back to the slow path
would fail here too.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest

from tests.support.paths import SHARED
from yilian.fhir.fhirpath import compile_path, direct_path
from yilian.fhir.search import indexer
from yilian.fhir.search.registry import params_for


@cache
def corpus() -> tuple[dict[str, Any], ...]:
    """Official examples (and the resources of example Bundles), then Synthea's resources."""
    out: list[dict[str, Any]] = []
    for path in sorted((SHARED / "fhir-r4-examples").glob("*.json")):
        resource = json.loads(path.read_text(encoding="utf-8"))
        out.append(resource)
        if resource.get("resourceType") == "Bundle":
            out.extend(
                e["resource"] for e in resource.get("entry") or () if isinstance(e.get("resource"), dict)
            )
    for path in sorted((SHARED / "synthea-fhir-r4").glob("*.json")):
        bundle = json.loads(path.read_text(encoding="utf-8"))
        out.extend(e["resource"] for e in bundle.get("entry") or () if isinstance(e.get("resource"), dict))
    return tuple(r for r in out if isinstance(r.get("resourceType"), str))


def _expressions(resource_type: str) -> Iterator[str]:
    for p in params_for(resource_type).values():
        if p.expression:
            yield p.expression


def test_every_parameter_on_every_example_gives_what_the_engine_gives() -> None:
    walked = left = not_plain = 0
    for resource in corpus():
        rt = resource["resourceType"]
        for expression in _expressions(rt):
            path = direct_path(expression, rt)
            if path is None:
                not_plain += 1
                continue
            got = path.evaluate_typed(resource)
            if got is None:
                left += 1
                continue
            walked += 1
            want = compile_path(expression).evaluate_typed(resource)
            assert got == want, (rt, resource.get("id"), expression)
            # The same objects, not equal copies: callers rely on the values being the resource's.
            assert all(g.value is w.value for g, w in zip(got, want, strict=True))
    total = walked + left + not_plain
    assert total > 50_000
    assert walked / total > 0.9, (walked, left, not_plain)


def _engine_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(indexer, "direct_path", lambda expression, root_type: None)
    indexer.compiled_params.cache_clear()
    indexer._direct_component.cache_clear()


def test_index_rows_are_the_engine_only_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    resources = corpus()
    indexer.compiled_params.cache_clear()
    indexer._direct_component.cache_clear()
    direct = [indexer.extract(r, r["resourceType"]) for r in resources]
    try:
        _engine_only(monkeypatch)
        engine = [indexer.extract(r, r["resourceType"]) for r in resources]
    finally:
        monkeypatch.undo()
        indexer.compiled_params.cache_clear()
        indexer._direct_component.cache_clear()
    assert sum(len(rows) for d in direct for rows in d.values()) > 30_000
    for resource, a, b in zip(resources, direct, engine, strict=True):
        assert a == b, (resource["resourceType"], resource.get("id"))


PATIENT = {
    "resourceType": "Patient",
    "id": "p",
    "birthDate": "1980-02-03",
    "name": [{"family": "张", "given": ["伟"]}],
    "telecom": [{"system": "phone", "value": "13800138000"}, {"system": "email", "value": "a@b.cn"}],
    "generalPractitioner": [{"reference": "Practitioner/1"}, {"reference": "Organization/2"}],
}


def _both(expression: str, resource: dict[str, Any]) -> tuple[Any, Any]:
    path = direct_path(expression, resource["resourceType"])
    assert path is not None
    return path.evaluate_typed(resource), compile_path(expression).evaluate_typed(resource)


def test_plain_forms_are_walked() -> None:
    for expression in (
        "Patient.birthDate",
        "Patient.name.given",
        "Patient.telecom.where(system='phone')",
        "Patient.generalPractitioner.where(resolve() is Practitioner)",
        "Resource.id",
    ):
        got, want = _both(expression, PATIENT)
        assert got is not None and got == want and got, expression


def test_what_only_the_engine_decides_is_left_to_it() -> None:
    with_extension = copy.deepcopy(PATIENT)
    with_extension["_birthDate"] = {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}
    assert _both("Patient.birthDate", with_extension)[0] is None  # one node of value and sibling
    with_contained = {**PATIENT, "generalPractitioner": [{"reference": "#org"}]}
    contained = _both("Patient.generalPractitioner.where(resolve() is Organization)", with_contained)
    assert contained[0] is None  # '#org' is a contained resource: its own type decides
    unknown = copy.deepcopy(PATIENT)
    unknown["nickname"] = "小伟"
    assert direct_path("Patient.nickname", "Patient") is not None
    assert _both("Patient.nickname", unknown)[0] is None  # navigated by JSON shape alone
    location = {"resourceType": "Location", "name": "门诊部", "alias": ["门诊部"]}
    got, want = _both("Location.name | Location.alias", location)
    assert got is None and len(want) == 1  # the union removes the duplicate
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "component": [
            {"code": {"text": "a"}, "valueQuantity": {"value": 1}},
            {"code": {"text": "b"}, "valueQuantity": {"value": 2}},
        ],
    }
    path = direct_path("Observation.component.value.as(Quantity)", "Observation")
    assert path is not None and path.evaluate_typed(observation) is None  # as() on two items: an error
    assert direct_path("Patient.name.first()", "Patient") is None  # not navigation
    assert direct_path("Bundle.entry[0].resource", "Bundle") is None
    assert (
        direct_path("Patient.birthDate", "Patient").evaluate_typed({**PATIENT, "resourceType": "Person"})
        is None
    )  # type: ignore[union-attr]


def test_operands_for_other_types_give_nothing() -> None:
    path = direct_path("Account.subject | Patient.link.other", "Patient")
    assert path is not None
    linked = {**PATIENT, "link": [{"other": {"reference": "Patient/2"}, "type": "seealso"}]}
    got, want = _both("Account.subject | Patient.link.other", linked)
    assert got == want and len(got) == 1  # type: ignore[arg-type]
