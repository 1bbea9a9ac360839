"""The official FHIR R4 TestScripts (``../shared/data/fhir-r4-testscripts``) against ``yilian serve``.

Every TestScript in the folder runs, on both databases, through :mod:`tests.support.testscript`
over HTTP against a real server process with an operator's bearer token. Every assert must
pass, warning-only ones included, except:

- asserts that need a feature the server's CapabilityStatement does not claim (the XML format):
  skipped with that feature named, and this test fails if the server does claim it;
- the script defects in :data:`ERRATA`, each checked to fail exactly as described and the
  server's behaviour shown right by a test of its own.

What the scripts leave to the tester, and what this test supplies:

- **The known patient.** ``readtest`` and ``multisystem`` read ``Patient/example``
  (``KnownPatientResourceId``, ``Dest1PatientResourceId``…) and never create it: the official
  ``patient-example.json`` is put on the server before each script.
- **Typed-in values.** ``search`` asks the tester for a family and a given name
  (``hint``-only variables): Chalmers and Peter, the Patient its own first test creates.
- **Fixtures.** The scripts' fixtures are ``Patient/example`` and ``Patient/pat1``; the folder
  holds no fixture files, so they are the official examples of that type and id
  (``patient-example.json``, ``patient-example-a.json``, found through the examples' INDEX.csv).
- **Referential integrity.** Those examples refer to ``Organization/1`` and ``Patient/pat2``,
  which the published examples do not include; the server runs with
  ``YILIAN_REFERENTIAL_INTEGRITY=off``, the documented setting for a deployment that must accept
  references to resources it does not hold.
- **Destinations.** ``multisystem`` reads from destinations 1 and 2: both are this server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support.auth import bearer, system_token
from tests.support.paths import SHARED
from tests.support.server import RunningServer, database_url
from tests.support.testscript import (
    FAIL,
    PASS,
    SKIP,
    WARNING,
    Feature,
    Report,
    TestScriptRunner,
    claims,
)
from yilian.db import Database
from yilian.kernel.ids import is_valid_fhir_id

TESTSCRIPTS = SHARED / "fhir-r4-testscripts"
EXAMPLES = SHARED / "fhir-r4-examples"
KNOWN_PATIENT = EXAMPLES / "patient-example.json"
TYPED_IN = {"PatientSearchFamilyName": "Chalmers", "PatientSearchGivenName": "Peter"}

# (script id, section, action number) -> why the script, not the server, is wrong.
CAPITALS_ID = "ID-may-not-contain-CAPITALS"
ERRATA: dict[tuple[str, str, int], str] = {
    ("testscript-example-readtest", "test R004", 2): (
        f"expects 400 Bad Request for reading Patient/{CAPITALS_ID} as a badly formatted id, but FHIR R4 ids "
        "may contain capitals ([A-Za-z0-9\\-\\.]{1,64}): the id is valid and no such patient exists, so the "
        "server's 404 is what the specification asks for"
    ),
}


def _documents() -> dict[Path, dict[str, Any]]:
    return {p: orjson.loads(p.read_bytes()) for p in sorted(TESTSCRIPTS.glob("*.json"))}


SCRIPTS = [p for p, doc in _documents().items() if doc.get("resourceType") == "TestScript"]


def test_the_folder_holds_the_scripts_this_test_knows() -> None:
    """A new file in the folder is either a TestScript (and runs) or known not to be one."""
    others = {p.name: doc.get("resourceType") for p, doc in _documents().items() if p not in SCRIPTS}
    assert others == {"testreport-example.json": "TestReport"}
    assert len(SCRIPTS) == 6


@pytest.fixture(scope="module")
def fhir_server(db: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    log = tmp_path_factory.mktemp("testscripts") / "server.log"
    with RunningServer(database_url(db), env={"YILIAN_REFERENTIAL_INTEGRITY": "off"}, log=log) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(db: Database, fhir_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(headers=bearer(system_token(db, name="testscript runner")), timeout=30.0) as c:
        yield c


@pytest.fixture(scope="module")
def base(fhir_server: RunningServer) -> str:
    return f"{fhir_server.base}/fhir"


def _put_known_patient(client: httpx.Client, base: str) -> None:
    resp = client.put(
        f"{base}/Patient/example",
        content=KNOWN_PATIENT.read_bytes(),
        headers={"Content-Type": "application/fhir+json"},
    )
    assert resp.status_code in (200, 201), resp.text


def _run(client: httpx.Client, base: str, path: Path) -> Report:
    _put_known_patient(client, base)
    runner = TestScriptRunner(client, base, examples=EXAMPLES, variables=TYPED_IN)
    return runner.run(orjson.loads(path.read_bytes()), folder=path.parent)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_testscript(path: Path, client: httpx.Client, base: str) -> None:
    report = _run(client, base, path)
    print(report)  # the whole account, shown with -s or -rA
    errata = {(s, n): why for (sid, s, n), why in ERRATA.items() if sid == report.script}

    wrong = [
        r
        for r in report.with_outcome(FAIL) + report.with_outcome(WARNING)
        if (r.section, r.number) not in errata
    ]
    assert not wrong, "asserts that did not pass:\n" + "\n".join(map(str, wrong)) + f"\n\n{report}"

    for (section, number), why in errata.items():
        hits = [r for r in report.results if (r.section, r.number) == (section, number)]
        assert [r.outcome for r in hits] == [FAIL], f"erratum no longer fails as described ({why}): {hits}"

    # A skip is only honest for what the server does not claim, asked fresh (not the runner's copy).
    metadata = client.get(f"{base}/metadata").json()
    for r in report.with_outcome(SKIP):
        assert r.feature is not None, f"skipped without naming the feature: {r}"
        assert r.feature.kind == "format" and r.feature.code == "xml", f"unexpected skip: {r}"
        assert not claims(metadata, r.feature), f"skipped, yet the server claims {r.feature}: {r}"
    assert report.with_outcome(PASS)


def test_xml_is_refused_as_the_capability_statement_says(client: httpx.Client, base: str) -> None:
    """The skipped asserts are about XML; the server does not claim it, and indeed refuses it."""
    _put_known_patient(client, base)
    metadata = client.get(f"{base}/metadata").json()
    assert not claims(metadata, Feature("format", "xml"))
    assert claims(metadata, Feature("format", "json"))
    for resp in (
        client.get(f"{base}/Patient/example", headers={"Accept": "application/fhir+xml"}),
        client.get(f"{base}/Patient/example", params={"_format": "xml"}),
    ):
        assert resp.status_code in (400, 406, 415), resp.text
        assert resp.json()["resourceType"] == "OperationOutcome"


def test_erratum_ids_with_capitals_are_valid(client: httpx.Client, base: str) -> None:
    """``readtest`` R004 expects 400 for a capitalised id; R4 allows it, and so does the server."""
    assert is_valid_fhir_id(CAPITALS_ID)
    url = f"{base}/Patient/{CAPITALS_ID}"
    client.delete(url)
    assert client.get(url).status_code in (404, 410)
    patient = {**orjson.loads(KNOWN_PATIENT.read_bytes()), "id": CAPITALS_ID}
    assert (
        client.put(
            url, content=orjson.dumps(patient), headers={"Content-Type": "application/fhir+json"}
        ).status_code
        == 201
    )
    assert client.get(url).json()["id"] == CAPITALS_ID
    assert client.delete(url).status_code in (200, 204)


def test_capability_statement_tells_unenforced_references(client: httpx.Client, base: str) -> None:
    metadata = client.get(f"{base}/metadata").json()
    patient = next(r for r in metadata["rest"][0]["resource"] if r["type"] == "Patient")
    assert "enforced" not in patient.get("referencePolicy", [])


def test_runner_reports_what_fails(client: httpx.Client, base: str) -> None:
    """The runner is not a rubber stamp: a script whose every assert is wrong fails every one."""
    _put_known_patient(client, base)
    op = "http://terminology.hl7.org/CodeSystem/testscript-operation-codes"
    script: dict[str, Any] = {
        "resourceType": "TestScript",
        "id": "runner-self-test",
        "contained": [
            {"resourceType": "Patient", "id": "p1", "name": [{"family": "Nobody"}], "gender": "other"}
        ],
        "fixture": [
            {"id": "other", "autocreate": False, "autodelete": False, "resource": {"reference": "#p1"}}
        ],
        "profile": [{"id": "bundle", "reference": "http://hl7.org/fhir/StructureDefinition/Bundle"}],
        "variable": [{"name": "known", "defaultValue": "example"}],
        "test": [
            {
                "id": "wrong",
                "action": [
                    {
                        "operation": {
                            "type": {"system": op, "code": "read"},
                            "resource": "Patient",
                            "params": "/${known}",
                        }
                    },
                    {"assert": {"description": "response", "response": "notFound"}},
                    {"assert": {"description": "responseCode", "responseCode": "201,204", "operator": "in"}},
                    {"assert": {"description": "resource", "resource": "Observation"}},
                    {"assert": {"description": "profile", "validateProfileId": "bundle"}},
                    {"assert": {"description": "header", "headerField": "ETag", "operator": "empty"}},
                    {
                        "assert": {
                            "description": "contentType",
                            "contentType": "json",
                            "operator": "notEquals",
                        }
                    },
                    {"assert": {"description": "expression", "expression": "Patient.gender = 'other'"}},
                    {
                        "assert": {
                            "description": "path",
                            "path": "fhir:Patient/fhir:name/fhir:family/@value",
                            "value": "Nobody",
                        }
                    },
                    {
                        "assert": {
                            "description": "compareToSource",
                            "compareToSourceId": "other",
                            "compareToSourceExpression": "Patient.name.family",
                        }
                    },
                    {"assert": {"description": "minimum", "minimumId": "other"}},
                    {"assert": {"description": "links", "navigationLinks": True}},
                    {"assert": {"description": "warning only", "response": "gone", "warningOnly": True}},
                    {
                        "operation": {
                            "type": {"system": op, "code": "read"},
                            "resource": "Patient",
                            "params": "/${unknown}",
                        }
                    },
                ],
            }
        ],
    }
    report = TestScriptRunner(client, base, examples=EXAMPLES).run(script, folder=TESTSCRIPTS)
    outcomes = [(r.label, r.outcome) for r in report.results]
    assert outcomes == [
        ("response", FAIL),
        ("responseCode", FAIL),
        ("resource", FAIL),
        ("profile", FAIL),
        ("header", FAIL),
        ("contentType", FAIL),
        ("expression", FAIL),
        ("path", FAIL),
        ("compareToSource", FAIL),
        ("minimum", FAIL),
        ("links", FAIL),
        ("warning only", WARNING),
        ("operation: operation", FAIL),
    ], str(report)


def test_runner_finds_fixtures_in_every_form(client: httpx.Client, base: str, tmp_path: Path) -> None:
    runner = TestScriptRunner(client, base, examples=EXAMPLES)
    example = orjson.loads(KNOWN_PATIENT.read_bytes())
    contained = [{"resourceType": "Patient", "id": "c1"}]
    (tmp_path / "local.json").write_bytes(orjson.dumps({**example, "id": "local"}))
    assert runner.load_fixture("#c1", folder=tmp_path, contained=contained) == contained[0]
    assert runner.load_fixture("local.json", folder=tmp_path)["id"] == "local"  # next to the script
    assert runner.load_fixture("patient-example.json", folder=tmp_path) == example  # else among the examples
    assert runner.load_fixture("Patient/example", folder=tmp_path) == example  # by type and id
    script: dict[str, Any] = {
        "resourceType": "TestScript",
        "id": "missing-fixture",
        "fixture": [
            {
                "id": "f",
                "autocreate": False,
                "autodelete": False,
                "resource": {"reference": "Patient/no-such-example"},
            }
        ],
    }
    (result,) = runner.run(script, folder=tmp_path).results
    assert result.outcome == FAIL and "not among the official examples" in result.detail


def _read_script(accept: str) -> dict[str, Any]:
    op = {"system": "http://terminology.hl7.org/CodeSystem/testscript-operation-codes", "code": "read"}
    return {
        "resourceType": "TestScript",
        "id": "skips",
        "test": [
            {
                "id": "t",
                "action": [
                    {
                        "operation": {
                            "type": op,
                            "resource": "Patient",
                            "accept": accept,
                            "params": "/example",
                        }
                    },
                    {"assert": {"label": "status", "response": "okay"}},
                    {"assert": {"label": "format", "contentType": accept}},
                ],
            }
        ],
    }


def test_runner_skips_only_what_the_server_does_not_claim(client: httpx.Client, base: str) -> None:
    _put_known_patient(client, base)
    actual = client.get(f"{base}/metadata").json()

    runner = TestScriptRunner(client, base, examples=EXAMPLES)
    outcomes = {
        r.label: (r.outcome, r.feature) for r in runner.run(_read_script("xml"), folder=TESTSCRIPTS).results
    }
    assert outcomes == {"status": (PASS, None), "format": (SKIP, Feature("format", "xml"))}

    # Were XML claimed, nothing about it would be skipped: the request asks for XML and fails.
    claiming = TestScriptRunner(client, base, examples=EXAMPLES)
    claiming.__dict__["capability"] = {**actual, "format": [*actual["format"], "xml"]}
    claimed = {r.label: r.outcome for r in claiming.run(_read_script("xml"), folder=TESTSCRIPTS).results}
    assert claimed == {"status": FAIL, "format": FAIL}

    # An interaction the statement does not list: the asserts on its response are skipped, naming it.
    no_read = orjson.loads(orjson.dumps(actual))
    for r in no_read["rest"][0]["resource"]:
        r["interaction"] = [i for i in r["interaction"] if i["code"] != "read"]
    unread = TestScriptRunner(client, base, examples=EXAMPLES)
    unread.__dict__["capability"] = no_read
    results = unread.run(_read_script("json"), folder=TESTSCRIPTS).results
    assert {(r.outcome, r.feature) for r in results} == {(SKIP, Feature("interaction", "read", "Patient"))}
