"""Every R4 search-parameter expression compiles, and extracts from the official examples
what the reference engine (fhirpathpy) extracts.

This is what the search indexer relies on: each write runs these expressions over the
resource. fhirpathpy is the oracle where it can answer; three gaps of its own are bridged
by rewriting the expression it is given (never ours):

- it has no ``resolve()``: ``resolve() is T`` becomes a test of the reference text
  (``T/id``, ``…/T/id``, or ``#id`` of a contained T) — what a server does without fetching;
- it rejects ``x as T`` when x repeats (``Observation.component.value as Quantity``),
  which R4 search parameters rely on: there it is given ``x.ofType(T)``;
- it does not match a leading ``Resource.``/``DomainResource.`` to a concrete resource:
  there it is given the concrete type.

Representations are normalised before comparing (numbers as Decimal); a primitive that
has only extensions is a node for us (value None) and nothing for fhirpathpy.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from fhirpathpy import compile as reference_compile
from fhirpathpy.models import models

from tests.support.paths import SHARED as SHARED_DATA
from yilian.fhir.fhirpath import compile_path
from yilian.fhir.model import load_definition

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = SHARED_DATA / "fhir-r4-examples"

SEARCH_PARAMETERS: list[dict[str, Any]] = [
    p for p in load_definition("search-parameters") if p.get("expression")
]
_ABSTRACT_BASES = frozenset({"Resource", "DomainResource"})


@cache
def examples() -> tuple[tuple[str, dict[str, Any]], ...]:
    """Every example resource, and every resource inside an example Bundle."""
    out: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(EXAMPLES.glob("*.json")):
        resource = json.loads(path.read_text(encoding="utf-8"))
        out.append((path.name, resource))
        if resource.get("resourceType") == "Bundle":
            for i, entry in enumerate(resource.get("entry") or ()):
                if isinstance(entry.get("resource"), dict):
                    out.append((f"{path.name}#entry{i}", entry["resource"]))
    return tuple(out)


def examples_of(base: str) -> list[tuple[str, dict[str, Any]]]:
    if base in _ABSTRACT_BASES:
        return list(examples())
    return [(name, r) for name, r in examples() if r.get("resourceType") == base]


_RESOLVE_IS = re.compile(r"resolve\(\) is (\w+)")
_AS_OPERATOR = re.compile(r"\(([^()]+?) as (\w+)\)")
_ABSTRACT_PREFIX = re.compile(r"\b(?:Domain)?Resource\.")


def oracle_expression(expression: str, resource_type: str) -> str:
    text = _RESOLVE_IS.sub(
        lambda m: (
            f"(reference.startsWith('{m.group(1)}/') or reference.contains('/{m.group(1)}/')"
            f" or (reference.startsWith('#') and %resource.contained"
            f".where(resourceType = '{m.group(1)}').select('#' + id) contains reference))"
        ),
        expression,
    )
    text = _AS_OPERATOR.sub(lambda m: f"(({m.group(1)}).ofType({m.group(2)}))", text)
    return _ABSTRACT_PREFIX.sub(resource_type + ".", text)


@cache
def oracle(expression: str, resource_type: str) -> Any:
    return reference_compile(oracle_expression(expression, resource_type), model=models["r4"])


def normal(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float | Decimal):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normal(v) for v in value]
    return value if isinstance(value, str) else str(value)


def test_every_search_expression_compiles() -> None:
    failures = []
    for p in load_definition("search-parameters"):
        if p.get("expression"):
            try:
                compile_path(p["expression"])
            except Exception as e:  # report them all, not just the first
                failures.append(f"{p['id']}: {e}")
    assert not failures, "\n".join(failures)
    assert len(SEARCH_PARAMETERS) > 1300


@pytest.mark.parametrize("param", SEARCH_PARAMETERS, ids=[p["id"] for p in SEARCH_PARAMETERS])
def test_search_expression_agrees_with_reference(param: dict[str, Any]) -> None:
    expression = param["expression"]
    ours = compile_path(expression)
    for base in param["base"]:
        for name, resource in examples_of(base):
            got = [v for v in ours.evaluate(resource) if v is not None]
            try:
                expected = oracle(expression, resource["resourceType"])(resource, {"resource": resource})
            except Exception:  # the oracle cannot answer this one; ours must still not fail
                continue
            assert normal(got) == normal(expected), f"{expression} on {name}"
