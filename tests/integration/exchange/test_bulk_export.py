"""FHIR Bulk Data ``$export`` and ``$import`` through the ASGI app, on SQLite and PostgreSQL:
the async kick-off / status / download pattern, parameters, compartments, who may see which
job and which data, restarts, and an export loaded back by ``$import``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select, update

from tests.support.auth import bearer, system_token
from tests.support.databases import drop_database, new_database
from yilian.api.app import YilianApp, create_app
from yilian.api.wiring import install_keys, platform_settings
from yilian.db import Database
from yilian.exchange.bulk.tables import bulk_job
from yilian.security.audit.tables import audit_event

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
ORG_A, ORG_B = "bulk-org-a", "bulk-org-b"


def send(
    app: Any, method: str, path: str, *, headers: dict[str, str] | None = None, **kw: Any
) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", timeout=120
        ) as client:
            return await client.request(method, path, headers=headers or {}, **kw)

    return asyncio.run(go())


def make_app(db: Database, tmp: Path) -> YilianApp:
    return create_app(db, platform_settings(), bulk_dir=tmp)


@pytest.fixture(scope="module")
def bulk_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bulk")


@pytest.fixture(scope="module")
def app(db: Database, bulk_dir: Path) -> YilianApp:
    return make_app(db, bulk_dir)


@pytest.fixture(scope="module")
def operator(db: Database) -> dict[str, str]:
    return bearer(system_token(db, scopes="system/*.cruds", name="bulk operator"))


@pytest.fixture(scope="module")
def orgs(db: Database, app: YilianApp, operator: dict[str, str]) -> dict[str, dict[str, str]]:
    for org in (ORG_A, ORG_B):
        r = send(
            app,
            "PUT",
            f"/fhir/Organization/{org}",
            headers=operator,
            json={"resourceType": "Organization", "id": org, "name": org},
        )
        assert r.status_code in (200, 201), r.text
    return {
        org: bearer(system_token(db, scopes="system/*.cruds", org_id=org, name=f"EMR {org}"))
        for org in (ORG_A, ORG_B)
    }


def put(app: YilianApp, headers: dict[str, str], res: dict[str, Any]) -> None:
    r = send(app, "PUT", f"/fhir/{res['resourceType']}/{res['id']}", headers=headers, json=res)
    assert r.status_code in (200, 201), r.text


def patient(pid: str, family: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"family": family, "given": ["测试"]}],
        "gender": "female",
        "birthDate": "1980-01-01",
    }


def observation(oid: str, pid: str, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "valueQuantity": {"value": value, "unit": "/min"},
    }


@pytest.fixture(scope="module")
def data(app: YilianApp, orgs: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    """Two institutions, each writing (and so caring for) patients of its own."""
    made: dict[str, list[str]] = {ORG_A: [], ORG_B: []}
    for org, prefix in ((ORG_A, "bxa"), (ORG_B, "bxb")):
        for n in range(3):
            pid = f"{prefix}-p{n}"
            put(app, orgs[org], patient(pid, f"{prefix}{n}"))
            put(app, orgs[org], observation(f"{prefix}-o{n}", pid, 60 + n))
            made[org] += [f"Patient/{pid}", f"Observation/{prefix}-o{n}"]
    return made


def kick_off(app: YilianApp, path: str, headers: dict[str, str], **kw: Any) -> str:
    r = send(app, kw.pop("method", "GET"), path, headers={**ASYNC, **headers}, **kw)
    assert r.status_code == 202, r.text
    location = r.headers["content-location"]
    assert "/$bulk-status/" in location
    return location.removeprefix("http://testserver")


def finish(app: YilianApp, status_path: str, headers: dict[str, str]) -> dict[str, Any]:
    app.bulk.worker.run_pending()
    r = send(app, "GET", status_path, headers=headers)
    assert r.status_code == 200, r.text
    manifest: dict[str, Any] = r.json()
    return manifest


def download(
    app: YilianApp, manifest: dict[str, Any], headers: dict[str, str]
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for item in manifest["output"]:
        r = send(app, "GET", item["url"].removeprefix("http://testserver"), headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/fhir+ndjson")
        lines = [orjson.loads(x) for x in r.content.splitlines() if x.strip()]
        assert len(lines) == item["count"]
        assert all(doc["resourceType"] == item["type"] for doc in lines)
        out[item["type"]] = lines
    return out


def refs(files: dict[str, list[dict[str, Any]]]) -> set[str]:
    return {f"{d['resourceType']}/{d['id']}" for docs in files.values() for d in docs}


def is_outcome(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    return str(body["issue"][0].get("diagnostics", ""))


def test_kick_off_status_download_round_trip(
    app: YilianApp, db: Database, operator: dict[str, str], data: dict[str, list[str]]
) -> None:
    status = kick_off(app, "/fhir/$export", operator)
    waiting = send(app, "GET", status, headers=operator)
    assert waiting.status_code == 202
    assert "X-Progress" in waiting.headers
    manifest = finish(app, status, operator)
    assert manifest["requiresAccessToken"] is True
    assert manifest["request"].endswith("/fhir/$export")
    assert manifest["transactionTime"]
    assert manifest["error"] == []
    files = download(app, manifest, operator)
    # The operator sees the whole region: both institutions' data and the registry.
    assert set(data[ORG_A]) | set(data[ORG_B]) <= refs(files)
    assert {f"Organization/{ORG_A}", f"Organization/{ORG_B}"} <= refs(files)
    # A download needs the token.
    url = manifest["output"][0]["url"].removeprefix("http://testserver")
    is_outcome(send(app, "GET", url), 401)
    # Kick-off and downloads are in the audit log.
    job_id = status.rsplit("/", 1)[1]
    with db.engine.connect() as conn:
        entities = [
            r.entity
            for r in conn.execute(
                select(audit_event.c.entity).where(audit_event.c.entity.like(f"bulk-job/{job_id}%"))
            )
        ]
    assert f"bulk-job/{job_id}" in entities
    assert sum(1 for e in entities if e.endswith(".ndjson")) >= len(manifest["output"])


def test_type_and_since_are_honoured(
    app: YilianApp, operator: dict[str, str], data: dict[str, list[str]]
) -> None:
    files = download(
        app, finish(app, kick_off(app, "/fhir/$export?_type=Observation", operator), operator), operator
    )
    assert set(files) == {"Observation"}
    assert {r for r in data[ORG_A] + data[ORG_B] if r.startswith("Observation/")} <= refs(files)
    # The last of the fixture's writes: everything else was written before it.
    cut = send(app, "GET", "/fhir/Observation/bxb-o2", headers=operator).json()["meta"]["lastUpdated"]
    time.sleep(0.01)
    put(app, operator, observation("bxa-o0", "bxa-p0", 99))
    later = download(
        app,
        finish(
            app,
            kick_off(app, "/fhir/$export", operator, params={"_since": cut, "_type": "Observation,Patient"}),
            operator,
        ),
        operator,
    )
    # Only what changed since (the updated observation), not the rest.
    assert "Observation/bxa-o0" in refs(later)
    assert "Observation/bxb-o1" not in refs(later)
    assert not any(r.startswith("Patient/") for r in refs(later))
    # POST with Parameters says the same.
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueString": "Patient"},
            {"name": "_outputFormat", "valueString": "application/fhir+ndjson"},
        ],
    }
    posted = download(
        app,
        finish(app, kick_off(app, "/fhir/$export", operator, method="POST", json=body), operator),
        operator,
    )
    assert set(posted) == {"Patient"}


def test_patient_and_group_exports_keep_to_compartments(
    app: YilianApp, operator: dict[str, str], data: dict[str, list[str]]
) -> None:
    files = download(app, finish(app, kick_off(app, "/fhir/Patient/$export", operator), operator), operator)
    assert "Organization" not in files  # registry data is in no patient's compartment
    assert set(data[ORG_A]) | set(data[ORG_B]) <= refs(files)
    put(
        app,
        operator,
        {
            "resourceType": "Group",
            "id": "bulk-group",
            "type": "person",
            "actual": True,
            "member": [
                {"entity": {"reference": "Patient/bxa-p1"}},
                {"entity": {"reference": "Patient/bxb-p2"}},
            ],
        },
    )
    grouped = download(
        app, finish(app, kick_off(app, "/fhir/Group/bulk-group/$export", operator), operator), operator
    )
    # The members' compartments (the Group itself is in its first member's, by the definition).
    assert refs(grouped) - {"Group/bulk-group"} == {
        "Patient/bxa-p1",
        "Observation/bxa-o1",
        "Patient/bxb-p2",
        "Observation/bxb-o2",
    }
    is_outcome(send(app, "GET", "/fhir/Group/no-such-group/$export", headers={**ASYNC, **operator}), 404)


def test_an_institution_exports_only_its_own_and_polls_only_its_own(
    app: YilianApp, orgs: dict[str, dict[str, str]], data: dict[str, list[str]]
) -> None:
    a, b = orgs[ORG_A], orgs[ORG_B]
    status = kick_off(app, "/fhir/$export", a)
    manifest = finish(app, status, a)
    files = download(app, manifest, a)
    got = refs(files)
    assert set(data[ORG_A]) <= got
    assert not (set(data[ORG_B]) & got)
    # B can neither poll A's job nor fetch its files: as if there were no such job.
    is_outcome(send(app, "GET", status, headers=b), 404)
    is_outcome(
        send(app, "GET", manifest["output"][0]["url"].removeprefix("http://testserver"), headers=b), 404
    )
    is_outcome(send(app, "DELETE", status, headers=b), 404)
    assert send(app, "GET", status, headers=a).status_code == 200


def test_scopes_limit_what_may_be_exported(app: YilianApp, db: Database, data: dict[str, list[str]]) -> None:
    only_patients = bearer(system_token(db, scopes="system/Patient.rs", name="patients only"))
    is_outcome(send(app, "GET", "/fhir/$export?_type=Observation", headers={**ASYNC, **only_patients}), 403)
    files = download(
        app, finish(app, kick_off(app, "/fhir/$export", only_patients), only_patients), only_patients
    )
    assert set(files) == {"Patient"}
    no_read = bearer(system_token(db, scopes="system/Patient.c", name="create only"))
    is_outcome(send(app, "GET", "/fhir/$export", headers={**ASYNC, **no_read}), 403)
    is_outcome(send(app, "GET", "/fhir/$export", headers=ASYNC), 401)


def test_breaking_the_glass_does_not_open_a_bulk_export(
    app: YilianApp, orgs: dict[str, dict[str, str]], data: dict[str, list[str]]
) -> None:
    glass = {
        **orgs[ORG_A],
        "X-Purpose-Of-Use": "BTG",
        "X-Break-Glass-Reason": "unconscious patient in the ER",
    }
    assert "break-the-glass" in is_outcome(send(app, "GET", "/fhir/$export", headers={**ASYNC, **glass}), 403)


@pytest.mark.parametrize(
    ("query", "headers", "says"),
    [
        ("_outputFormat=text/csv", ASYNC, "_outputFormat"),
        ("_type=NoSuchType", ASYNC, "NoSuchType"),
        ("_since=yesterday", ASYNC, "_since"),
        ("_typeFilter=Observation%3Fstatus%3Dfinal", ASYNC, "_typeFilter"),
        ("", {"Accept": "application/fhir+json"}, "respond-async"),
    ],
)
def test_bad_parameters_are_refused_with_an_outcome(
    app: YilianApp, operator: dict[str, str], query: str, headers: dict[str, str], says: str
) -> None:
    message = is_outcome(send(app, "GET", f"/fhir/$export?{query}", headers={**headers, **operator}), 400)
    assert says in message


def test_lenient_handling_ignores_unknown_parameters(app: YilianApp, operator: dict[str, str]) -> None:
    headers = {**operator, "Prefer": "respond-async, handling=lenient"}
    r = send(
        app, "GET", "/fhir/$export?_typeFilter=Observation%3Fstatus%3Dfinal&_type=Patient", headers=headers
    )
    assert r.status_code == 202, r.text


def test_delete_cancels_and_removes_the_files(
    app: YilianApp, operator: dict[str, str], bulk_dir: Path, data: dict[str, list[str]]
) -> None:
    status = kick_off(app, "/fhir/$export?_type=Patient", operator)
    finish(app, status, operator)
    job_id = status.rsplit("/", 1)[1]
    assert (bulk_dir / job_id / "Patient.ndjson").is_file()
    r = send(app, "DELETE", status, headers=operator)
    assert r.status_code == 202
    is_outcome(send(app, "GET", status, headers=operator), 404)
    app.bulk.worker.run_pending()
    assert not (bulk_dir / job_id).exists()


def test_a_job_survives_a_restart(
    db: Database, operator: dict[str, str], bulk_dir: Path, data: dict[str, list[str]]
) -> None:
    first = make_app(db, bulk_dir)
    status = kick_off(first, "/fhir/$export?_type=Patient", operator)
    # The first server stops before its worker ran the job; a new one on the same database finishes it.
    second = make_app(db, bulk_dir)
    manifest = finish(second, status, operator)
    assert set(data[ORG_A]) & refs(download(second, manifest, operator))
    # A job a stopped server left running (its heartbeat stale) is taken up again.
    status2 = kick_off(first, "/fhir/$export?_type=Observation", operator)
    job_id = status2.rsplit("/", 1)[1]
    with db.engine.begin() as conn:
        conn.execute(
            update(bulk_job)
            .where(bulk_job.c.job_id == job_id)
            .values(state="running", worker="gone", updated=0)
        )
    third = make_app(db, bulk_dir)
    files = download(third, finish(third, status2, operator), operator)
    assert set(files) == {"Observation"}


def test_export_then_import_reproduces_the_resources(
    app: YilianApp,
    db: Database,
    operator: dict[str, str],
    data: dict[str, list[str]],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    files = download(app, finish(app, kick_off(app, "/fhir/$export", operator), operator), operator)
    backend = "sqlite" if db.is_sqlite else "postgresql"
    target, token = new_database(backend, tmp_path)
    try:
        install_keys(target)
        other = make_app(target, tmp_path / "bulk")
        op = bearer(system_token(target, scopes="system/*.cruds", name="importer"))
        body = b"".join(orjson.dumps(doc) + b"\n" for t in sorted(files) for doc in files[t])
        r = send(
            other,
            "POST",
            "/fhir/$import",
            headers={**ASYNC, **op, "Content-Type": "application/fhir+ndjson"},
            content=body,
        )
        assert r.status_code == 202, r.text
        manifest = finish(other, r.headers["content-location"].removeprefix("http://testserver"), op)
        assert manifest["error"] == []
        assert sum(o["count"] for o in manifest["output"]) == sum(len(v) for v in files.values())
        for t, docs in files.items():
            for doc in docs:
                got = send(other, "GET", f"/fhir/{t}/{doc['id']}", headers=op)
                assert got.status_code == 200, got.text
                mine = {k: v for k, v in got.json().items() if k != "meta"}
                theirs = {k: v for k, v in doc.items() if k != "meta"}
                assert mine == theirs
    finally:
        drop_database(backend, target, token)


def test_import_refuses_bad_lines_with_their_numbers_and_loads_the_rest(
    app: YilianApp, db: Database, operator: dict[str, str], orgs: dict[str, dict[str, str]]
) -> None:
    lines = [
        orjson.dumps(patient("imp-p1", "导入")),
        b"{not json",
        orjson.dumps(
            {"resourceType": "Observation", "id": "imp-o-bad", "subject": {"reference": "Patient/imp-p1"}}
        ),
        orjson.dumps(observation("imp-o1", "imp-p1", 70)),
        orjson.dumps(observation("imp-o2", "nobody-here", 70)),
        orjson.dumps({"resourceType": "NoSuchType", "id": "x"}),
    ]
    body = b"\n".join(lines) + b"\n"
    headers = {**ASYNC, "Content-Type": "application/fhir+ndjson"}
    # An institution may not bulk-load the region's record.
    is_outcome(send(app, "POST", "/fhir/$import", headers={**headers, **orgs[ORG_A]}, content=body), 403)
    # Nor may an operator's client that cannot create and update every type.
    reader = bearer(system_token(db, scopes="system/*.rs", name="operator reader"))
    is_outcome(send(app, "POST", "/fhir/$import", headers={**headers, **reader}, content=body), 403)
    r = send(app, "POST", "/fhir/$import", headers={**headers, **operator}, content=body)
    assert r.status_code == 202, r.text
    manifest = finish(app, r.headers["content-location"].removeprefix("http://testserver"), operator)
    assert {o["type"]: o["count"] for o in manifest["output"]} == {"Patient": 1, "Observation": 1}
    (err,) = manifest["error"]
    assert err["count"] == 4
    got = send(app, "GET", err["url"].removeprefix("http://testserver"), headers=operator)
    assert got.status_code == 200
    messages = [orjson.loads(x)["issue"][0]["diagnostics"] for x in got.content.splitlines()]
    assert [m.split(":", 1)[0] for m in messages] == [
        "body line 2",
        "body line 3",
        "body line 6",
        "body line 5",
    ]
    assert "nobody-here" in messages[3]
    assert send(app, "GET", "/fhir/Observation/imp-o1", headers=operator).status_code == 200
    assert send(app, "GET", "/fhir/Observation/imp-o-bad", headers=operator).status_code == 404


def test_the_capability_statement_lists_export(app: YilianApp) -> None:
    cap = send(app, "GET", "/fhir/metadata").json()
    rest = cap["rest"][0]
    assert "export" in {op["name"] for op in rest.get("operation", [])}
    by_type = {r["type"]: {op["name"] for op in r.get("operation", [])} for r in rest["resource"]}
    assert "export" in by_type["Patient"]
    assert "export" in by_type["Group"]


def test_since_with_an_unencoded_time_zone_is_read_as_meant(app: YilianApp, operator: dict[str, str]) -> None:
    # "+08:00" sent without percent-encoding arrives as " 08:00".
    r = send(
        app,
        "GET",
        "/fhir/$export?_since=2020-01-01T08:00:00+08:00&_type=Patient",
        headers={**ASYNC, **operator},
    )
    assert r.status_code == 202, r.text


def test_import_reads_named_files_only_under_the_import_directory(
    app: YilianApp, operator: dict[str, str], tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "2026").mkdir(parents=True)
    (inbox / "2026" / "Patient.ndjson").write_bytes(orjson.dumps(patient("file-p1", "文件")) + b"\n")
    (tmp_path / "outside.ndjson").write_bytes(orjson.dumps(patient("file-p2", "外面")) + b"\n")
    app.bulk.import_dir = inbox.resolve()

    def params(url: str) -> dict[str, Any]:
        return {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
                {
                    "name": "input",
                    "part": [{"name": "type", "valueCode": "Patient"}, {"name": "url", "valueUrl": url}],
                },
            ],
        }

    headers = {**ASYNC, **operator}
    for bad in ("../outside.ndjson", "/etc/passwd", "2026/missing.ndjson"):
        assert "not a file under the import directory" in is_outcome(
            send(app, "POST", "/fhir/$import", headers=headers, json=params(bad)), 400
        )
    r = send(app, "POST", "/fhir/$import", headers=headers, json=params("2026/Patient.ndjson"))
    assert r.status_code == 202, r.text
    manifest = finish(app, r.headers["content-location"].removeprefix("http://testserver"), operator)
    assert manifest["output"] == [{"type": "Patient", "count": 1}]
    assert send(app, "GET", "/fhir/Patient/file-p1", headers=operator).status_code == 200
    assert send(app, "GET", "/fhir/Patient/file-p2", headers=operator).status_code == 404


def test_a_cancelled_job_stops_at_its_next_heartbeat(
    db: Database, app: YilianApp, operator: dict[str, str]
) -> None:
    from yilian.exchange.bulk import jobs

    app.bulk.worker.run_pending()  # nothing else waiting: the claim below takes this test's job
    status = kick_off(app, "/fhir/$export?_type=Patient", operator)
    job_id = status.rsplit("/", 1)[1]
    claimed = jobs.claim_next(db, "test-worker", stale_after_us=30_000_000)
    assert claimed is not None and claimed.job_id == job_id
    assert jobs.heartbeat(db, job_id, "test-worker", processed=10)
    assert send(app, "DELETE", status, headers=operator).status_code == 202
    assert not jobs.heartbeat(db, job_id, "test-worker", processed=20)
    is_outcome(send(app, "GET", status, headers=operator), 404)


def test_an_import_run_again_after_a_restart_writes_nothing_twice(
    db: Database, operator: dict[str, str], bulk_dir: Path
) -> None:
    first = make_app(db, bulk_dir)
    body = b"".join(
        orjson.dumps({"resourceType": "Patient", "name": [{"family": f"重启{n}"}], "gender": "male"}) + b"\n"
        for n in range(3)
    )
    headers = {**ASYNC, **operator, "Content-Type": "application/fhir+ndjson"}
    r = send(first, "POST", "/fhir/$import", headers=headers, content=body)
    assert r.status_code == 202, r.text
    status = r.headers["content-location"].removeprefix("http://testserver")
    job_id = status.rsplit("/", 1)[1]
    # A new server finds the spooled body and loads it; then, as if that server had stopped
    # before recording the end, another runs the job again from the start.
    second = make_app(db, bulk_dir)
    assert finish(second, status, operator)["output"] == [{"type": "Patient", "count": 3}]
    with db.engine.begin() as conn:
        conn.execute(
            update(bulk_job)
            .where(bulk_job.c.job_id == job_id)
            .values(state="running", worker="gone", updated=0)
        )
    third = make_app(db, bulk_dir)
    assert finish(third, status, operator)["output"] == [{"type": "Patient", "count": 3}]
    for n in range(3):
        found = send(third, "GET", f"/fhir/Patient?family=重启{n}&_summary=count", headers=operator).json()
        assert found["total"] == 1
