"""GET /fhir/Patient/{id}: Yilian against a bare Starlette app serving the same bytes from memory.

Target (issue 2): at least 0.35x the bare app's requests/s, p99 <= 10 ms at 32 connections.
Also measures FastAPI (returning bytes, and its default model path) for docs/decisions/0001.

Yilian's reads are what a member hospital's system makes: a bearer token of an institution's
client (``system/Patient.rs``) that treats every seeded patient, so each read passes the access
decision and is audited (its row committed before the reply), as on any running platform. The
bare app serves the very bytes Yilian answers with (fetched from it before the runs: the stored
rows hold the ID and phone numbers sealed, the replies hold them readable). Any reply other than
200 fails the benchmark: refusals are not reads.

    python -m bench.bench_read [--seconds 10] [--patients 2000] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import httpx
import orjson

from bench.bench_audit import BENCH_ORG, grant_treatment
from bench.common import Server, console, postgres_url, sqlite_url, table, wrk, yilian_server
from yilian.api.wiring import install_keys
from yilian.db import open_database
from yilian.db.uow import transact
from yilian.fhir import FhirContext, FhirRequest, dispatch
from yilian.migrations import upgrade

# Throwaway at-rest keys, the same for the seeding here and the server started below.
KEYS = {"YILIAN_DATA_KEYS": "b1:" + "A" * 43 + "=", "YILIAN_INDEX_KEY": "B" * 43 + "="}


def seed(url: str, n: int) -> tuple[list[str], str]:
    """``n`` Patients, the institution that treats them all, and its client's bearer token."""
    from tests.support.auth import system_token

    db = open_database(url)
    upgrade(db)
    install_keys(db, KEYS)
    organization = {"resourceType": "Organization", "id": BENCH_ORG, "name": "湖州市第一人民医院"}
    transact(
        db,
        lambda uow: dispatch(
            uow, FhirContext(), FhirRequest("PUT", f"Organization/{BENCH_ORG}", body=organization)
        ),
    )
    rng = random.Random(7)
    ctx = FhirContext()
    ids: list[str] = []
    for start in range(0, n, 200):
        entries = []
        for i in range(start, min(n, start + 200)):
            pid = f"bench-{i}"
            ids.append(pid)
            entries.append(
                {
                    "resource": {
                        "resourceType": "Patient",
                        "id": pid,
                        "identifier": [
                            {"system": "urn:oid:2.16.156.10011.1.3", "value": f"33050219800101{i:04d}"}
                        ],
                        "name": [
                            {
                                "family": rng.choice("王李张刘陈杨黄赵吴周"),
                                "given": [rng.choice(["伟", "芳", "娜", "敏", "静"])],
                            }
                        ],
                        "gender": rng.choice(["male", "female"]),
                        "birthDate": f"19{rng.randint(40, 99)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
                        "address": [{"city": "湖州市", "district": "吴兴区", "line": [f"人民路{i}号"]}],
                        "telecom": [{"system": "phone", "value": f"138{i:08d}"}],
                    },
                    "request": {"method": "PUT", "url": f"Patient/{pid}"},
                }
            )
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        transact(db, lambda uow, b=bundle: dispatch(uow, ctx, FhirRequest("POST", "", body=b)))
    grant_treatment(db, ids)
    token = system_token(db, scopes="system/Patient.rs", org_id=BENCH_ORG, name="bench_read HIS")
    db.dispose()
    return ids, token


def served_bytes(base: str, paths: list[str], token: str, out: Path) -> None:
    """What Yilian answers for each path, written for the bare app to serve (every reply a 200)."""
    bodies: dict[str, str] = {}
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        for path in paths:
            reply = client.get(path, headers={"Accept": "application/fhir+json"})
            if reply.status_code != 200:
                raise RuntimeError(f"GET {path}: {reply.status_code} {reply.text[:200]}")
            bodies[path.rsplit("/", 1)[1]] = reply.text
    out.write_bytes(orjson.dumps(bodies))


def baseline(kind: str, bodies: Path) -> Server:
    return Server([sys.executable, "-m", "bench.baseline_app", kind, str(bodies), "{port}"])


def checked(result: dict[str, float], what: str) -> dict[str, float]:
    if result["non2xx"]:
        raise RuntimeError(f"{what}: {result['non2xx']:.0f} replies were not 200: not reads")
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--patients", type=int, default=2000)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument(
        "--frameworks", action="store_true", help="also measure FastAPI (for the web-stack decision)"
    )
    args = ap.parse_args()

    rows: list[list[object]] = []
    for backend in args.backends.split(","):
        ctx = sqlite_url() if backend == "sqlite" else postgres_url()
        with ctx as url, tempfile.TemporaryDirectory(prefix="yl-read-") as tmp:
            console.print(f"[bold]{backend}[/]: seeding {args.patients} patients")
            ids, token = seed(url, args.patients)
            paths = [f"/fhir/Patient/{i}" for i in random.Random(1).sample(ids, min(len(ids), 1000))]
            bodies = Path(tmp) / "bodies.json"
            with yilian_server(url, 1, env=KEYS) as ours:
                served_bytes(ours.base, paths, token, bodies)
            with baseline("starlette", bodies) as bare:
                wrk(bare.base, paths, seconds=2)  # warm up
                base = checked(wrk(bare.base, paths, seconds=args.seconds), "bare Starlette")
            with yilian_server(url, 1, env=KEYS) as ours:
                wrk(ours.base, paths, seconds=2, token=token)
                mine = checked(wrk(ours.base, paths, seconds=args.seconds, token=token), "Yilian")
            rows.append(
                [
                    f"{backend}: bare Starlette (the same bytes, in memory)",
                    base["rps"],
                    base["p50_ms"],
                    base["p99_ms"],
                    1.0,
                ]
            )
            rows.append(
                [
                    f"{backend}: Yilian GET /fhir/Patient/{{id}} (decided, audited)",
                    mine["rps"],
                    mine["p50_ms"],
                    mine["p99_ms"],
                    mine["rps"] / base["rps"],
                ]
            )
            if args.frameworks and backend == "sqlite":
                for kind in ("fastapi-bytes", "fastapi-default"):
                    with baseline(kind, bodies) as srv:
                        wrk(srv.base, paths, seconds=2)
                        r = checked(wrk(srv.base, paths, seconds=args.seconds), kind)
                    rows.append(
                        [f"{backend}: {kind}", r["rps"], r["p50_ms"], r["p99_ms"], r["rps"] / base["rps"]]
                    )
    table(
        "read: requests/s at 32 connections (ratio vs bare Starlette in the same run)",
        ["app", "req/s", "p50 ms", "p99 ms", "ratio"],
        rows,
    )


if __name__ == "__main__":
    main()
