"""The audit log's cost, against the same work without it, in the same run (issue 5: access decision
plus audit together at most +30% on a single create and on a patient-compartment search).

- **create**: one Patient create per transaction, with and without ``record()`` of its AuditEvent
  in the same transaction (one thread, so the numbers are the transaction's own latency);
- **read**: ``threads`` callers each reading Patients (one read transaction each); audited, each
  read waits for the :class:`AuditWriter` to commit its row before it counts as answered. The
  naive alternative (a transaction of its own per audit row) is shown for comparison;
- **seal** and **verify**: rows per second.

A :class:`Sealer` runs during the audited variants, as in the server.

    python -m bench.bench_audit [--creates 400] [--threads 8] [--reads 100] [--rounds 5] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from bench.common import console, postgres_url, sqlite_url, table
from yilian.db import Database, UnitOfWork, open_database
from yilian.db.uow import transact
from yilian.fhir import FhirContext, FhirRequest, dispatch
from yilian.migrations import upgrade
from yilian.security.audit import AuditRecord, AuditWriter, Sealer, record, seal, verify

CTX = FhirContext(base_url="http://bench/fhir")


def patient(i: int) -> dict[str, object]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": f"3305021980010{i:05d}"}],
        "name": [{"family": "王", "given": ["芳"]}],
        "gender": "female",
        "birthDate": "1980-01-01",
    }


def audit_of(kind: str, pid: str, n: int) -> AuditRecord:
    return AuditRecord(
        action="C" if kind == "create" else "R",
        subtype=kind,
        agent_kind="system",
        agent_id=f"client-{n % 7}",
        org_id="hosp-a",
        entity=f"Patient/{pid}",
        patient_keys=(pid,),
        source_ip="10.0.0.7",
        user_agent="bench/1.0",
    )


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.mean(ordered) * 1000, ordered[len(ordered) // 2] * 1000, p99 * 1000


@contextmanager
def database(backend: str) -> Iterator[Database]:
    source = sqlite_url if backend == "sqlite" else postgres_url
    with source() as url:
        db = open_database(url, pool_size=16)
        upgrade(db)
        try:
            yield db
        finally:
            db.dispose()


def bench_creates(db: Database, n: int) -> dict[str, list[float]]:
    def create(i: int, audited: bool) -> None:
        def work(uow: UnitOfWork) -> None:
            out = dispatch(uow, CTX, FhirRequest("POST", "Patient", body=patient(i)))
            if audited:
                assert out.resource is not None
                record(uow, audit_of("create", out.resource.res_id, i))

        transact(db, work)

    times: dict[str, list[float]] = {"plain": [], "audited": []}
    for i in range(n // 10):  # warm-up: validators compiled, caches and pools filled
        create(10**6 + i, i % 2 == 0)
    # Alternate the variants so drift on a shared machine hits both alike.
    for i in range(n):
        for variant in ("plain", "audited"):
            start = time.perf_counter()
            create(i * 2 + (variant == "audited"), variant == "audited")
            times[variant].append(time.perf_counter() - start)
    return times


def seed_patients(db: Database, n: int) -> list[str]:
    ids = [f"bench-{i}" for i in range(n)]
    for start in range(0, n, 200):
        entries = [
            {"resource": {**patient(i), "id": ids[i]}, "request": {"method": "PUT", "url": f"Patient/{ids[i]}"}}
            for i in range(start, min(n, start + 200))
        ]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        transact(db, lambda uow, b=bundle: dispatch(uow, CTX, FhirRequest("POST", "", body=b)))
    return ids


def run_reads(threads: int, per_thread: int, one_read: Callable[[int, int], object]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads + 1)

    def worker(t: int) -> None:
        mine: list[float] = []
        barrier.wait()
        for i in range(per_thread):
            start = time.perf_counter()
            one_read(t, i)
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for p in pool:
        p.start()
    barrier.wait()
    start = time.perf_counter()
    for p in pool:
        p.join()
    return threads * per_thread / (time.perf_counter() - start), latencies


def bench_reads(
    db: Database, ids: list[str], threads: int, per_thread: int, rounds: int
) -> dict[str, tuple[float, list[float], str]]:
    def read(t: int, i: int) -> str:
        pid = ids[(t * 7919 + i * 104729) % len(ids)]
        with UnitOfWork(db) as uow:
            assert dispatch(uow, CTX, FhirRequest("GET", f"Patient/{pid}")).status == 200
        return pid

    def own_transaction(t: int, i: int) -> None:
        rec = audit_of("read", read(t, i), i)
        transact(db, lambda uow: record(uow, rec))

    rates: dict[str, list[float]] = {}
    latencies: dict[str, list[float]] = {}
    run_reads(threads, max(10, per_thread // 10), read)  # warm-up
    with Sealer(db), AuditWriter(db) as writer:
        variants: dict[str, Callable[[int, int], object]] = {
            "plain": read,
            "audited (group commit)": lambda t, i: writer.record_sync(audit_of("read", read(t, i), i)),
            "audited (a commit per read)": own_transaction,
        }
        # Rounds of every variant in turn: load on a shared machine drifts, and hits each alike.
        for _ in range(rounds):
            for name, one_read in variants.items():
                rps, lat = run_reads(threads, per_thread, one_read)
                rates.setdefault(name, []).append(rps)
                latencies.setdefault(name, []).extend(lat)
        grouped = threads * per_thread * rounds / max(writer.batches, 1)
    notes = {"audited (group commit)": f"{grouped:.1f} rows/commit", "audited (a commit per read)": "1 row/commit"}
    return {name: (statistics.median(rates[name]), latencies[name], notes.get(name, "")) for name in rates}


def bench_chain(db: Database) -> tuple[float, float, int]:
    start = time.perf_counter()
    sealed = seal(db)
    seal_s = time.perf_counter() - start
    start = time.perf_counter()
    report = verify(db)
    verify_s = time.perf_counter() - start
    assert report.ok, report.problems[:3]
    return sealed / max(seal_s, 1e-9), report.rows / max(verify_s, 1e-9), report.rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--creates", type=int, default=400)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--reads", type=int, default=100, help="reads per thread and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--patients", type=int, default=2000)
    ap.add_argument("--backends", default="sqlite,postgresql")
    args = ap.parse_args()

    create_rows: list[list[object]] = []
    read_rows: list[list[object]] = []
    chain_rows: list[list[object]] = []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        console.print(f"[bold]{backend}[/]")
        with database(backend) as db:
            times = bench_creates(db, args.creates)
            base = statistics.mean(times["plain"])
            for variant, samples in times.items():
                mean, p50, p99 = percentiles(samples)
                create_rows.append([f"{backend} {variant}", mean, p50, p99, statistics.mean(samples) / base])
            # Unsealed rows from a transaction per create: seal them without the gap wait.
            seal(db, grace_s=0)
            ids = seed_patients(db, args.patients)
            reads = bench_reads(db, ids, args.threads, args.reads, args.rounds)
            base_rps = reads["plain"][0]
            for variant, (rps, lat, note) in reads.items():
                mean, p50, p99 = percentiles(lat)
                read_rows.append([f"{backend} {variant}", rps, mean, p50, p99, base_rps / rps, note])
            seal_rate, verify_rate, rows = bench_chain(db)
            chain_rows.append([backend, rows, seal_rate, verify_rate])

    table("create: one Patient per transaction (ms)", ["variant", "mean", "p50", "p99", "× plain"], create_rows)
    table(
        f"read: {args.threads} threads × {args.reads} reads of a Patient, {args.rounds} rounds (reads/s: median)",
        ["variant", "reads/s", "mean ms", "p50 ms", "p99 ms", "cost × plain", "batching"],
        read_rows,
    )
    table("chain", ["backend", "rows", "sealed rows/s (tail)", "verified rows/s"], chain_rows)


if __name__ == "__main__":
    main()
