"""The 444 official R4 examples: accepted, read back equal, and found by their search parameters."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import SHARED
from tests.support.fhir_calls import call, ids
from yilian.db import Database, UnitOfWork
from yilian.db.uow import transact
from yilian.fhir import FhirContext, FhirRequest, FhirSettings, dispatch
from yilian.fhir.search.indexer import extract
from yilian.fhir.search.registry import params_for
from yilian.fhir.search.values import us_to_instant

EXAMPLES = SHARED / "fhir-r4-examples"
INDEX = list(csv.DictReader((EXAMPLES / "INDEX.csv").open(encoding="utf-8")))
CTX = FhirContext(
    base_url="http://testserver/fhir",
    settings=FhirSettings(enforce_referential_integrity=False, enforce_delete_integrity=False),
)


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((EXAMPLES / name).read_bytes())
    return data


@pytest.fixture(scope="module")
def loaded(db: Database) -> dict[str, tuple[str, str]]:
    """file -> (type, id) of every example, written through the FHIR API."""
    out: dict[str, tuple[str, str]] = {}
    for row in INDEX:
        res = load(row["file"])
        rtype = res["resourceType"]
        if res.get("id"):
            req = FhirRequest("PUT", f"{rtype}/{res['id']}", body=res)
        else:
            req = FhirRequest("POST", rtype, body=res)
        resp = transact(db, lambda uow, r=req: dispatch(uow, CTX, r))
        assert resp.status in (200, 201), (row["file"], resp.status)
        body = orjson.loads(resp.body or b"{}")
        out[row["file"]] = (rtype, body["id"])
    return out


def _strip_meta(res: dict[str, Any]) -> dict[str, Any]:
    res = dict(res)
    meta = {k: v for k, v in (res.pop("meta", None) or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        res["meta"] = meta
    return res


@pytest.mark.parametrize("name", [r["file"] for r in INDEX])
def test_round_trip(db: Database, loaded: dict[str, tuple[str, str]], name: str) -> None:
    original = load(name)
    rtype, rid = loaded[name]
    with UnitOfWork(db) as uow:
        got = call(uow, CTX, "GET", f"{rtype}/{rid}")
    assert got.status == 200
    expected = _strip_meta(original)
    expected.pop("id", None)
    actual = _strip_meta(got.json)
    actual.pop("id", None)
    assert actual == expected


def _queries(resource: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(parameter, value) pairs built from what the resource holds, one per indexed parameter."""
    rtype = resource["resourceType"]
    rows = extract(resource, rtype, base_url=CTX.base_url)
    params = params_for(rtype)
    done: set[str] = set()
    for kind, kind_rows in rows.items():
        for row in kind_rows:
            code = row["param"]
            if code in done or params[code].type != kind:
                continue
            value: str | None = None
            if kind == "string":
                value = row["value_exact"].replace("\\", "\\\\").replace(",", "\\,").replace("$", "\\$")
            elif kind == "token" and row["code"]:
                code_v = (
                    row["code"]
                    .replace("\\", "\\\\")
                    .replace(",", "\\,")
                    .replace("|", "\\|")
                    .replace("$", "\\$")
                )
                value = f"{row['system']}|{code_v}" if row["system"] else code_v
            elif kind == "reference" and row["target_id"]:
                value = f"{row['target_type']}/{row['target_id']}"
            elif kind == "date":
                yield code, "ge" + us_to_instant(row["low"] // 1000 * 1000)
                value = "le" + us_to_instant(row["high"])
            elif kind == "number" or kind == "quantity":
                value = repr(row["value"])
            elif kind == "uri":
                value = row["uri"].replace(",", "\\,")
            if value is not None:
                done.add(code)
                yield code, value


@pytest.mark.parametrize("name", [r["file"] for r in INDEX])
def test_found_by_its_search_parameters(db: Database, loaded: dict[str, tuple[str, str]], name: str) -> None:
    rtype, rid = loaded[name]
    with UnitOfWork(db) as uow:
        stored = call(uow, CTX, "GET", f"{rtype}/{rid}").json
        queries = list(_queries(stored))
        misses = []
        for code, value in queries:
            from urllib.parse import urlencode

            q = urlencode([(code, value), ("_id", rid), ("_total", "none")])
            found = call(uow, CTX, "GET", f"{rtype}?{q}")
            if found.status != 200 or rid not in ids(found.json):
                misses.append((code, value, found.status))
    assert not misses, misses


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Patient?name=Chalmers", {"example"}),
        ("Observation?code=http://loinc.org|29463-7", {"example"}),
        ("Immunization?patient=Patient/example", {"example"}),
        ("Patient?name=Chalmers&birthdate=1974-12-25", {"example"}),
        ("Patient?family=chalmers&gender=male", {"example"}),
        ("Observation?code-value-quantity=http://loinc.org|29463-7$gt180", {"example"}),
        ("Observation?code-value-quantity=http://loinc.org|29463-7$ge185", {"example"}),
        ("Observation?code-value-quantity=http://loinc.org|29463-7$gt185", set()),
        ("Observation?code-value-quantity=http://loinc.org|29463-7$lt180", set()),
        ("Observation?subject:Patient.name=Chalmers&code=29463-7", {"example"}),
        ("Patient?_has:Observation:patient:code=29463-7&_id=example", {"example"}),
    ],
)
def test_spec_searches(
    db: Database, loaded: dict[str, tuple[str, str]], query: str, expected: set[str]
) -> None:
    with UnitOfWork(db) as uow:
        got = call(uow, CTX, "GET", query)
    assert got.status == 200, got
    assert expected <= ids(got.json) if expected else not (ids(got.json) & {"example"})


def test_every_example_file_is_listed() -> None:
    files = {p.name for p in Path(EXAMPLES).glob("*.json")}
    assert files == {r["file"] for r in INDEX}
