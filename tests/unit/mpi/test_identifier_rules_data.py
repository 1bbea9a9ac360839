"""The identifier rules (docs/identifiers.md) against the material the platform must keep loading:
every Patient of the Synthea bundles, the official R4 examples, the shared HL7 v2 messages as the
intake maps them, and the demo region passes ``check_identifiers`` — systems we do not define
stay accepted, and what we generate follows our own rules. No database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.paths import SHARED
from yilian.demo import build_demo_region
from yilian.exchange.hl7.parse import parse
from yilian.exchange.hl7.to_fhir import to_fhir
from yilian.kernel import identifiers
from yilian.mpi.fhir_map import check_identifiers

Json = dict[str, Any]


def _patients(node: Any) -> Iterator[Json]:
    """Every Patient in a resource, a Bundle's entries and contained resources."""
    if isinstance(node, dict):
        if node.get("resourceType") == "Patient":
            yield node
        for value in node.values():
            yield from _patients(value)
    elif isinstance(node, list):
        for item in node:
            yield from _patients(item)


def _check(patients: list[Json]) -> int:
    refused = []
    for p in patients:
        try:
            check_identifiers(p)
        except Exception as err:  # collected to show them all at once
            refused.append((p.get("id"), str(err)))
    assert not refused, refused
    return sum(
        1
        for p in patients
        for i in p.get("identifier") or []
        if isinstance(i.get("system"), str) and identifiers.rule_for(i["system"])
    )


def _json_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        pytest.skip(f"test material missing: {folder}")
    return sorted(folder.glob("*.json"))


def test_synthea_patients_load() -> None:
    patients = [
        p for f in _json_files(SHARED / "synthea-fhir-r4") for p in _patients(orjson.loads(f.read_bytes()))
    ]
    assert len(patients) >= 20
    _check(patients)


def test_official_example_patients_load() -> None:
    patients = [
        p for f in _json_files(SHARED / "fhir-r4-examples") for p in _patients(orjson.loads(f.read_bytes()))
    ]
    assert len(patients) >= 10
    _check(patients)


def test_shared_hl7_messages_load() -> None:
    folder = SHARED / "hl7v2" / "microsoft-fhir-converter" / "messages"
    if not folder.is_dir():
        pytest.skip(f"test material missing: {folder}")
    patients = []
    for f in sorted(folder.glob("*.hl7")):
        try:
            mapping = to_fhir(parse(f.read_bytes()))
        except Exception:  # messages the intake refuses for other reasons are not ours here
            continue
        patients += list(_patients(mapping.bundle()))
    assert patients
    _check(patients)


def test_demo_region_follows_the_rules() -> None:
    patients = [p for b in build_demo_region().bundles() for p in _patients(b)]
    # The demo carries ID numbers, insurance numbers and MRNs: checked, not only skipped.
    assert _check(patients) > len(patients)
