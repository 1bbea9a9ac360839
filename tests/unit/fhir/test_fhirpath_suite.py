"""The official FHIRPath test suite for FHIR R4 (shared subset, 724 cases), run against
``yilian.fhir.fhirpath``.

Every case is a test; the only skips are cases that call a function the engine
documents as unsupported (``UNSUPPORTED_FUNCTIONS``, each with its reason). Running this
file as a script prints the pass rate per group.
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.support.fhir_xml import load_resource
from tests.support.paths import SHARED as SHARED_DATA
from yilian.fhir.fhirpath import UNSUPPORTED_FUNCTIONS, FHIRPathError, TypedValue, compile_path

ROOT = Path(__file__).resolve().parents[3]
SUITE_DIR = SHARED_DATA / "fhirpath-tests"
SUITE_FILE = SUITE_DIR / "tests-fhir-r4.shared.xml"

# The suite names System types by their FHIR counterparts.
_SYSTEM_TO_SUITE = {
    "System.Boolean": "boolean",
    "System.Integer": "integer",
    "System.Decimal": "decimal",
    "System.String": "string",
    "System.Date": "date",
    "System.DateTime": "dateTime",
    "System.Time": "time",
    "System.Quantity": "Quantity",
}


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    inputfile: str | None
    expression: str
    invalid: str | None
    predicate: bool
    strict: bool
    ordered: bool
    outputs: tuple[tuple[str | None, str], ...]

    @property
    def id(self) -> str:
        return f"{self.group}/{self.name}"

    def unsupported_function(self) -> str | None:
        for name in UNSUPPORTED_FUNCTIONS:
            if re.search(rf"\b{re.escape(name)}\s*\(", self.expression):
                return name
        return None


def load_cases() -> list[Case]:
    root = ET.parse(SUITE_FILE).getroot()
    cases: list[Case] = []
    for group in root.iter("group"):
        for i, test in enumerate(group.findall("test")):
            expr = test.find("expression")
            assert expr is not None
            cases.append(
                Case(
                    group=group.get("name", "?"),
                    name=test.get("name") or f"case{i}",
                    inputfile=test.get("inputfile"),
                    expression=expr.text or "",
                    invalid=expr.get("invalid"),
                    predicate=test.get("predicate") == "true",
                    strict=test.get("mode") == "strict",
                    ordered=test.get("ordered") != "false",
                    outputs=tuple((o.get("type"), o.text or "") for o in test.findall("output")),
                )
            )
    return cases


@cache
def load_input(name: str) -> dict[str, Any]:
    path = SUITE_DIR / "input" / name
    if name.endswith(".json"):
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
        return data
    return load_resource(path)


CASES = load_cases()


# -- comparing one result with one <output> ------------------------------------------------


def _suite_type(t: str) -> str:
    return _SYSTEM_TO_SUITE.get(t, t)


def _quantity_text(value: dict[str, Any]) -> tuple[Decimal, str]:
    return Decimal(str(value["value"])), str(value.get("unit") or value.get("code") or "1")


_QUANTITY = re.compile(r"(?P<value>[-+]?\d+(?:\.\d+)?)\s*(?:'(?P<quoted>[^']*)'|(?P<word>\w+))?")


def _same_value(expected_type: str | None, text: str, actual: TypedValue) -> bool:
    value = actual.value
    kind = expected_type
    if kind is None:  # the boundary tests give no type: read it from the text
        if text in ("true", "false"):
            kind = "boolean"
        elif text.startswith("@"):
            kind = "dateTime"
        elif "'" in text:
            kind = "Quantity"
        else:
            kind = "decimal"
    if kind == "boolean":
        return value is (text == "true")
    if kind == "integer":
        return type(value) is int and value == int(text)
    if kind == "decimal":
        return (
            isinstance(value, int | Decimal | float)
            and not isinstance(value, bool)
            and Decimal(str(value)) == Decimal(text)
        )
    if kind in ("date", "dateTime", "time", "instant"):
        wanted = text[1:] if text.startswith("@") else text
        wanted = wanted[1:] if wanted.startswith("T") else wanted
        return str(value) == wanted
    if kind == "Quantity":
        m = _QUANTITY.fullmatch(text.strip())
        if not m or not isinstance(value, dict):
            return False
        number, unit = _quantity_text(value)
        return number == Decimal(m.group("value")) and unit == (m.group("quoted") or m.group("word") or "1")
    return isinstance(value, str) and value == text


def _matches(expected: tuple[str | None, str], actual: TypedValue) -> bool:
    expected_type, text = expected
    if expected_type is not None and _suite_type(actual.type) != expected_type:
        return False
    return _same_value(expected_type, text, actual)


def run_case(case: Case) -> None:
    resource = load_input(case.inputfile) if case.inputfile else None
    if case.invalid:
        with pytest.raises(FHIRPathError):
            compile_path(case.expression, strict=case.strict).evaluate(resource)
        return
    results = compile_path(case.expression, strict=case.strict).evaluate_typed(resource)
    if case.predicate:
        if len(results) == 1 and isinstance(results[0].value, bool):
            pass
        else:
            results = [TypedValue(bool(results), "System.Boolean")]
    shown = [(r.type, r.value) for r in results]
    assert len(results) == len(case.outputs), f"{case.expression!r} gave {shown}, expected {case.outputs}"
    if case.ordered:
        for expected, actual in zip(case.outputs, results, strict=True):
            assert _matches(expected, actual), f"{case.expression!r} gave {shown}, expected {case.outputs}"
    else:
        remaining = list(results)
        for expected in case.outputs:
            hit = next((r for r in remaining if _matches(expected, r)), None)
            assert hit is not None, f"{case.expression!r} gave {shown}, expected {case.outputs}"
            remaining.remove(hit)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_official_fhirpath_case(case: Case) -> None:
    unsupported = case.unsupported_function()
    if unsupported:
        pytest.skip(f"{unsupported}() is unsupported: {UNSUPPORTED_FUNCTIONS[unsupported]}")
    run_case(case)


def test_suite_is_complete() -> None:
    assert len(CASES) == 724


def _summary() -> None:  # pragma: no cover - a report for people, run as a script
    groups: dict[str, list[int]] = {}
    failures: list[str] = []
    for case in CASES:
        tally = groups.setdefault(case.group, [0, 0, 0])
        tally[1] += 1
        if case.unsupported_function():
            tally[2] += 1
            continue
        try:
            run_case(case)
            tally[0] += 1
        except (AssertionError, Exception, pytest.fail.Exception) as e:
            failures.append(f"{case.id}: {str(e).splitlines()[0][:200]}")
    total = sum(t[1] for t in groups.values())
    passed = sum(t[0] for t in groups.values())
    skipped = sum(t[2] for t in groups.values())
    for name, (ok, count, skip) in groups.items():
        print(f"{name:35s} {ok:4d}/{count:<4d}" + (f"  ({skip} unsupported)" if skip else ""))
    print(f"{'TOTAL':35s} {passed:4d}/{total:<4d} = {100 * passed / total:.1f}%  ({skipped} unsupported)")
    for f in failures:
        print("FAIL", f)


if __name__ == "__main__":  # pragma: no cover
    sys.path.insert(0, str(ROOT))
    _summary()
