"""Bulk load of the Synthea bundles (validated and indexed) against bare inserts of the same JSON.

Targets (issues 2 and 4): at least 0.5x a bare ``sqlite3`` executemany of the same rows on
SQLite, at least 0.25x a bare ``COPY`` into a jsonb table on PostgreSQL.

Two ways in are timed: each bundle as a FHIR transaction (``POST /``), and the bundles'
resources as NDJSON (``urn:uuid:`` references turned into ``Type/id``) through the bulk path
that ``$import`` and ``yilian import`` use (``yilian.exchange.bulk.load_lines``: validation,
index rows, patient index and access grants, referential integrity, chunks of 500 in one
transaction each). Every run starts from an empty, migrated database with its keyring.

A fourth line is the **storage floor**: the rows that load writes (current, version, search
index), prepared before timing and written by the driver's fastest path; only ``insert_tables``'
row-to-tuple conversion and the driver are timed. Its ratio to the bare insert is the most any
validated, indexed load into this schema could reach. It stores the 10 Organizations and
Practitioners the bundles share once but counts them as the other lines do (2,141 resources),
which if anything flatters the floor.

    python -m bench.bench_load [--rounds 3] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench.common import PG_URL, SHARED, postgres_url, sqlite_url, table
from yilian.api.wiring import install_keys, platform_settings
from yilian.db import open_database
from yilian.db.dialect import insert_tables
from yilian.db.uow import transact
from yilian.exchange.bulk import Line, load_lines
from yilian.fhir import FhirContext, FhirRequest, dispatch
from yilian.fhir.interactions import writes
from yilian.fhir.search.indexer import extract
from yilian.fhir.store.tables import INDEX_TABLES, resource, resource_version
from yilian.migrations import upgrade


def bundles() -> list[dict[str, Any]]:
    return [orjson.loads(p.read_bytes()) for p in sorted((SHARED / "synthea-fhir-r4").glob("*.json"))]


def rows_of(bs: list[dict[str, Any]]) -> list[tuple[str, str, bytes]]:
    out = []
    for b in bs:
        for e in b["entry"]:
            r = e["resource"]
            out.append((r["resourceType"], str(len(out)), orjson.dumps(r)))
    return out


BENCH_KEYS = {
    "YILIAN_DATA_KEYS": "b1:" + base64.b64encode(os.urandom(32)).decode(),
    "YILIAN_INDEX_KEY": base64.b64encode(os.urandom(32)).decode(),
}


def ndjson_of(bs: list[dict[str, Any]]) -> list[bytes]:
    """The bundles' resources as NDJSON lines, references to ``urn:uuid:`` entries made ``Type/id``."""
    lines: list[bytes] = []
    for b in bs:
        local = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in b["entry"]}

        def fix(node: Any, local: dict[str, str] = local) -> Any:
            if isinstance(node, dict):
                return {
                    k: (local.get(v, v) if k == "reference" and isinstance(v, str) else fix(v))
                    for k, v in node.items()
                }
            if isinstance(node, list):
                return [fix(x) for x in node]
            return node

        lines.extend(orjson.dumps(fix(e["resource"])) for e in b["entry"])
    return lines


def yilian_bulk(url: str, lines: list[bytes]) -> float:
    db = open_database(url)
    upgrade(db)
    install_keys(db, BENCH_KEYS)  # sealed at rest, as the server runs
    ctx = FhirContext(base_url="urn:yilian:bench", settings=platform_settings())
    # Compile validators and index extractors first, as a running server has (one-off cost).
    for line in lines[:400]:
        doc = orjson.loads(line)
        writes.check_body(doc)
        extract(doc, doc["resourceType"])
    errors = io.BytesIO()
    start = time.perf_counter()
    tally = load_lines(
        db,
        ctx,
        (Line("bench", n, t) for n, t in enumerate(lines, 1)),
        errors=errors,
        keep_going=lambda _n: True,
    )
    elapsed = time.perf_counter() - start
    assert tally is not None and tally.refused == 0, errors.getvalue()[:500]
    db.dispose()
    return elapsed


def yilian_load(url: str, bs: list[dict[str, Any]]) -> float:
    db = open_database(url)
    upgrade(db)
    ctx = FhirContext()
    # A request owns its body (ids and references are written into it): fresh copies each run.
    bs = [orjson.loads(orjson.dumps(b)) for b in bs]
    start = time.perf_counter()
    for b in bs:
        transact(
            db,
            lambda uow, body=b: dispatch(
                uow, ctx, FhirRequest("POST", "", headers={"prefer": "return=minimal"}, body=body)
            ),
        )
    elapsed = time.perf_counter() - start
    db.dispose()
    return elapsed


def storage_floor(url: str, lines: list[bytes]) -> float:
    """The database's own share of a validated, indexed load: no parsing, validation or indexing timed.

    The rows Yilian's write path stores for these resources (the current row, its version 1 in
    the history, the search-index rows the server's indexer extracts) are all prepared before
    the clock starts, then written in one transaction through the fastest path the driver has
    (``COPY`` on PostgreSQL, executemany on SQLite; ``insert_tables``). Validation, parsing,
    sealing, the patient index and access grants cost nothing here: this is the ceiling of any
    loader that keeps version history and a search index on this schema, whatever its language.
    """
    db = open_database(url)
    upgrade(db)
    stamp = time.time_ns() // 1000
    current: list[dict[str, Any]] = []
    versions: list[dict[str, Any]] = []
    index: dict[str, list[dict[str, Any]]] = {}
    seen: set[tuple[str, str]] = set()
    for line in lines:
        doc = orjson.loads(line)
        if (doc["resourceType"], doc["id"]) in seen:
            continue  # an Organization or Practitioner that several bundles share: stored once
        seen.add((doc["resourceType"], doc["id"]))
        pk = len(seen)
        common = {
            "res_type": doc["resourceType"],
            "res_id": doc["id"],
            "last_updated": stamp,
            "deleted": False,
        }
        current.append({"pk": pk, "version": 1, "patient_key": None, "content": line, **common})
        versions.append({"resource_pk": pk, "version": 1, "method": "POST", "content": line, **common})
        for kind, rows in extract(doc, doc["resourceType"]).items():
            for row in rows:
                row["resource_pk"] = pk
            index.setdefault(kind, []).extend(rows)
    tables = [
        (resource, current),
        (resource_version, versions),
        *((INDEX_TABLES[k], r) for k, r in index.items()),
    ]
    start = time.perf_counter()
    with db.engine.begin() as conn:
        insert_tables(conn, tables)
    elapsed = time.perf_counter() - start
    db.dispose()
    return elapsed


def sqlite_bare(rows: list[tuple[str, str, bytes]]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "bare.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE resource (res_type TEXT, res_id TEXT, content BLOB, PRIMARY KEY (res_type, res_id))"
        )
        start = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO resource VALUES (?, ?, ?)", rows)
        conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        conn.close()
    return elapsed


def postgres_copy(rows: list[tuple[str, str, bytes]]) -> float:
    with psycopg.connect(PG_URL) as conn:
        conn.execute(
            "CREATE TEMP TABLE bench_copy (res_type text, res_id text, content jsonb, PRIMARY KEY (res_type, res_id))"
        )
        conn.commit()
        start = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY bench_copy (res_type, res_id, content) FROM STDIN") as copy:
            for t, i, c in rows:
                copy.write_row((t, i, c.decode()))
        conn.commit()
        return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backends", default="sqlite,postgresql")
    args = ap.parse_args()
    bs = bundles()
    rows = rows_of(bs)
    lines = ndjson_of(bs)
    n = len(rows)
    out: list[list[object]] = []
    for backend in args.backends.split(","):
        ours, bulk, bare, floor = [], [], [], []
        for _ in range(args.rounds):
            ctx = sqlite_url() if backend == "sqlite" else postgres_url()
            with ctx as url:
                ours.append(yilian_load(url, bs))
            ctx = sqlite_url() if backend == "sqlite" else postgres_url()
            with ctx as url:
                bulk.append(yilian_bulk(url, lines))
            ctx = sqlite_url() if backend == "sqlite" else postgres_url()
            with ctx as url:
                floor.append(storage_floor(url, lines))
            bare.append(sqlite_bare(rows) if backend == "sqlite" else postgres_copy(rows))
        o, k, b, f = min(ours), min(bulk), min(bare), min(floor)
        label = "sqlite3 executemany" if backend == "sqlite" else "COPY into jsonb"
        out.append([f"{backend}: bare {label}", n / b, "1.000"])
        out.append([f"{backend}: Yilian transactions (validated, indexed)", n / o, f"{b / o:.3f}"])
        out.append([f"{backend}: Yilian bulk NDJSON ($import path)", n / k, f"{b / k:.3f}"])
        out.append(
            [
                f"{backend}: storage floor (rows prepared untimed, only the insert timed)",
                n / f,
                f"{b / f:.3f}",
            ]
        )
    table(
        f"bulk load of {n} Synthea resources: resources/s (best of {args.rounds}), ratio vs bare",
        ["load", "resources/s", "ratio"],
        out,
    )


if __name__ == "__main__":
    main()
