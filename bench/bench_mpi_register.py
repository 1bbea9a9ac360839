"""What the live patient index costs a Patient create, against the same create without it, in
the same run (decision 0007: matching runs in the database, in the write's transaction).

An index of ``--persons`` generated Chinese residents (their duplicates included) is loaded
through the FHIR core with the index on; then ``--creates`` new registrations (duplicate-kind
records of known persons and new persons) are timed one per transaction, with the index and —
into a second database loaded the same way without it — without. Reported: per-create latency
p50/p95 of each and the ratio.

    python -m bench.bench_mpi_register [--persons 3000] [--creates 300] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import text

from bench.common import console, postgres_url, sqlite_url, table
from tests.support.chinese_people import generate
from yilian.api.wiring import install_keys
from yilian.db import Database, UnitOfWork, open_database
from yilian.fhir import FhirContext, FhirRequest, FhirSettings, dispatch
from yilian.fhir.interactions.writes import flush
from yilian.migrations import upgrade
from yilian.mpi import PatientIndexObserver
from yilian.mpi.matching import PersonRecord


def patient(r: PersonRecord) -> dict[str, Any]:
    name: dict[str, Any] = (
        {"family": r.family_name, "given": [r.given_name]}
        if r.family_name and r.given_name
        else {"text": r.display_name}
    )
    body: dict[str, Any] = {"resourceType": "Patient", "name": [name]}
    if r.birth_date:
        body["birthDate"] = r.birth_date.isoformat()
    if r.sex:
        body["gender"] = r.sex
    if r.phone:
        body["telecom"] = [{"system": "phone", "value": r.phone}]
    address = {k: v for k, v in (("district", r.district), ("postalCode", r.postcode)) if v}
    if address:
        body["address"] = [address]
    return body


@contextmanager
def database(backend: str) -> Iterator[Database]:
    ctx = sqlite_url() if backend == "sqlite" else postgres_url()
    with ctx as url:
        db = open_database(url)
        upgrade(db)
        install_keys(db, {"YILIAN_DATA_KEYS": "b1:" + "A" * 43 + "=", "YILIAN_INDEX_KEY": "B" * 43 + "="})
        try:
            yield db
        finally:
            db.dispose()


def create(db: Database, ctx: FhirContext, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    with UnitOfWork(db, write=True) as uow:
        dispatch(uow, ctx, FhirRequest("POST", "Patient", body=body))
        flush(uow)
        uow.commit()
    return time.perf_counter() - started


def run(backend: str, persons: int, creates: int) -> list[object]:
    population = generate(persons, seed=4242)
    records = [lr.record for lr in population.records]
    base, queries = records[:-creates], records[-creates:]
    results = {}
    for label, settings in (
        ("without index", FhirSettings()),
        ("with index", FhirSettings(observers=(PatientIndexObserver(),))),
    ):
        ctx = FhirContext(settings=settings)
        with database(backend) as db:
            with UnitOfWork(db, write=True) as uow:
                for r in base:
                    dispatch(uow, ctx, FhirRequest("POST", "Patient", body=patient(r)))
                flush(uow)
                uow.commit()
            if not db.is_sqlite:
                # A bulk load is followed by fresh planner statistics (autovacuum does it within a
                # minute in production); without them PostgreSQL scans the new tables.
                with db.engine.begin() as conn:
                    conn.execute(text("ANALYZE"))
            times = sorted(create(db, ctx, patient(r)) for r in queries)
        results[label] = (statistics.median(times) * 1000, times[int(len(times) * 0.95) - 1] * 1000)
    (p50a, p95a), (p50b, p95b) = results["without index"], results["with index"]
    return [
        backend,
        len(base),
        f"{p50a:.2f}",
        f"{p95a:.2f}",
        f"{p50b:.2f}",
        f"{p95b:.2f}",
        f"{p50b / p50a:.2f}×",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--persons", type=int, default=3000)
    ap.add_argument("--creates", type=int, default=300)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.persons, args.creates = 300, 50
    rows = [run(b, args.persons, args.creates) for b in args.backends.split(",")]
    table(
        "Patient create with the live patient index vs without (one create per transaction)",
        [
            "backend",
            "records indexed",
            "without p50 ms",
            "without p95 ms",
            "with p50 ms",
            "with p95 ms",
            "with ÷ without (p50)",
        ],
        rows,
    )
    console.print(
        "target: none set by the issue; the index's own latency target is measured by bench_mpi_speed"
    )


if __name__ == "__main__":
    main()
