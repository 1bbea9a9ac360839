"""``$export`` at scale: resources/s and peak memory at 100k and 1M resources.

Loading a million resources through the validated write path would take hours on this
machine, so the rows are generated straight into the ``resource`` table (PostgreSQL ``COPY``,
SQLite ``executemany``): Observations of 20,000 patients plus the Patients, ~600 bytes of JSON
each, with their ``patient_key`` set as the write path sets it. The export then runs exactly
as a job does (:func:`yilian.exchange.bulk.write_export`: keyset pages of 1,000 rows under the
caller's access policy — the platform operator's here — into one NDJSON file per type) in a
child process of its own, whose peak RSS (``VmHWM``) is reported next to its RSS before the
export started: the same peak at 100k and 1M is what streaming in constant memory means.

    python -m bench.bench_export [--sizes 100000,1000000] [--backends postgresql,sqlite]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg

from bench.common import postgres_url, sqlite_url, table
from yilian.db import open_database
from yilian.migrations import upgrade

PATIENTS = 20_000
LAST_UPDATED = 1_764_000_000_000_000


def rows(n: int) -> Iterator[tuple[str, str, int, int, bool, str, bytes]]:
    """(res_type, res_id, version, last_updated, deleted, patient_key, content) for n resources."""
    for i in range(n):
        p = f"bp{i % PATIENTS}"
        if i < PATIENTS:
            doc = {
                "resourceType": "Patient",
                "id": p,
                "meta": {"versionId": "1"},
                "gender": "female",
                "name": [{"family": f"家{i}", "given": ["测试"]}],
                "birthDate": "1980-01-01",
            }
            yield "Patient", p, 1, LAST_UPDATED + i, False, p, orjson.dumps(doc)
            continue
        doc = {
            "resourceType": "Observation",
            "id": f"bo{i}",
            "meta": {"versionId": "1"},
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "vital-signs",
                        }
                    ]
                }
            ],
            "code": {
                "coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}],
                "text": "Heart rate",
            },
            "subject": {"reference": f"Patient/{p}"},
            "effectiveDateTime": "2024-05-01T08:00:00+08:00",
            "valueQuantity": {
                "value": 60 + i % 40,
                "unit": "/min",
                "system": "http://unitsofmeasure.org",
                "code": "/min",
            },
        }
        yield "Observation", f"bo{i}", 1, LAST_UPDATED + i, False, p, orjson.dumps(doc)


COLUMNS = "res_type, res_id, version, last_updated, deleted, patient_key, content"


def generate(url: str, n: int) -> float:
    db = open_database(url)
    upgrade(db)
    db.dispose()
    start = time.perf_counter()
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        conn.execute("BEGIN")
        batch: list[tuple[object, ...]] = []
        for r in rows(n):
            batch.append(r)
            if len(batch) == 50_000:
                conn.executemany(f"INSERT INTO resource ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
                batch = []
        conn.executemany(f"INSERT INTO resource ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
        conn.execute("COMMIT")
        conn.close()
    else:
        with psycopg.connect(url) as pg:
            with pg.cursor() as cur, cur.copy(f"COPY resource ({COLUMNS}) FROM STDIN") as copy:
                for r in rows(n):
                    copy.write_row(r)
            pg.execute("ANALYZE resource")
    return time.perf_counter() - start


def _status_kb(field: str) -> int:
    """A memory figure of this process from /proc (VmHWM: peak RSS of this program image;
    ``ru_maxrss`` would carry the parent's peak across the fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(url: str) -> None:
    """Run one export in this process and print what it cost (JSON)."""
    from yilian.exchange.bulk import SYSTEM, ExportRequest, write_export
    from yilian.fhir.access import ALLOW_ALL

    db = open_database(url)
    before = _status_kb("VmHWM")
    with tempfile.TemporaryDirectory(prefix="yl-export-") as out:
        start = time.perf_counter()
        result = write_export(db, ExportRequest(SYSTEM), ALLOW_ALL, Path(out), keep_going=lambda _n: True)
        elapsed = time.perf_counter() - start
        size = sum(p.stat().st_size for p in Path(out).iterdir())
    assert result is not None
    peak = _status_kb("VmHWM")
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "exported": result.exported,
                "rss_before_kb": before,
                "peak_kb": peak,
                "bytes": size,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--backends", default="postgresql,sqlite")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    out: list[list[object]] = []
    for backend in args.backends.split(","):
        for n in (int(s) for s in args.sizes.split(",")):
            with sqlite_url() if backend == "sqlite" else postgres_url() as url:
                gen = generate(url, n)
                run = subprocess.run(
                    [sys.executable, "-m", "bench.bench_export", "--child", url],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                r = json.loads(run.stdout.strip().splitlines()[-1])
                assert r["exported"] == n, r
                out.append(
                    [
                        backend,
                        f"{n:,}",
                        f"{gen:.1f}",
                        f"{r['seconds']:.1f}",
                        f"{n / r['seconds']:,.0f}",
                        f"{r['bytes'] / 1e6:,.0f}",
                        f"{r['rss_before_kb'] / 1024:.0f}",
                        f"{r['peak_kb'] / 1024:.0f}",
                    ]
                )
                print(out[-1], flush=True)
    table(
        "$export of generated resources (system level, operator's policy)",
        [
            "backend",
            "resources",
            "generate s",
            "export s",
            "resources/s",
            "NDJSON MB",
            "RSS before MB",
            "peak RSS MB",
        ],
        out,
    )


if __name__ == "__main__":
    main()
