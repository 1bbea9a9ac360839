"""GET /fhir/Patient/{id}: Yilian against a bare Starlette app serving the same bytes from memory.

Target (issue 2): at least 0.35x the bare app's requests/s, p99 <= 10 ms at 32 connections.
Also measures FastAPI (returning bytes, and its default model path) for docs/decisions/0001.

    python -m bench.bench_read [--seconds 10] [--patients 2000] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import random
import sys

from bench.common import Server, console, postgres_url, sqlite_url, table, wrk, yilian_server
from yilian.db import open_database
from yilian.db.uow import transact
from yilian.fhir import FhirContext, FhirRequest, dispatch
from yilian.migrations import upgrade


def seed(url: str, n: int) -> list[str]:
    db = open_database(url)
    upgrade(db)
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
                        "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": f"33050219800101{i:04d}"}],
                        "name": [{"family": rng.choice("王李张刘陈杨黄赵吴周"), "given": [rng.choice(["伟", "芳", "娜", "敏", "静"])]}],
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
    db.dispose()
    return ids


def baseline(kind: str, url: str) -> Server:
    return Server([sys.executable, "-m", "bench.baseline_app", kind, url, "{port}"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--patients", type=int, default=2000)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--frameworks", action="store_true", help="also measure FastAPI (for the web-stack decision)")
    args = ap.parse_args()
    rows: list[list[object]] = []
    for backend in args.backends.split(","):
        ctx = sqlite_url() if backend == "sqlite" else postgres_url()
        with ctx as url:
            ids = seed(url, args.patients)
            paths = [f"/fhir/Patient/{i}" for i in random.Random(1).sample(ids, min(len(ids), 1000))]
            with baseline("starlette", url) as bare:
                wrk(bare.base, paths, seconds=2)  # warm up
                base = wrk(bare.base, paths, seconds=args.seconds)
            with yilian_server(url) as ours:
                wrk(ours.base, paths, seconds=2)
                mine = wrk(ours.base, paths, seconds=args.seconds)
            rows.append([f"{backend}: bare Starlette (bytes in memory)", base["rps"], base["p50_ms"], base["p99_ms"], 1.0])
            rows.append([f"{backend}: Yilian GET /fhir/Patient/{{id}}", mine["rps"], mine["p50_ms"], mine["p99_ms"], mine["rps"] / base["rps"]])
            if mine["non2xx"]:
                console.print(f"[red]{mine['non2xx']:.0f} non-2xx responses from Yilian")
            if args.frameworks and backend == "sqlite":
                for kind in ("fastapi-bytes", "fastapi-default"):
                    with baseline(kind, url) as srv:
                        wrk(srv.base, paths, seconds=2)
                        r = wrk(srv.base, paths, seconds=args.seconds)
                    rows.append([f"{backend}: {kind}", r["rps"], r["p50_ms"], r["p99_ms"], r["rps"] / base["rps"]])
    table("read: requests/s at 32 connections (ratio vs bare Starlette in the same run)", ["app", "req/s", "p50 ms", "p99 ms", "ratio"], rows)


if __name__ == "__main__":
    main()
