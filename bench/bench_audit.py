"""The audit log's cost, against the same work without it, in the same run (issue 5: access decision
plus audit together at most +30% on a single create and on a patient-compartment search).

- **create**: one Patient create per transaction, as an institution's client (its access
  policy's write check) with ``record()`` of its AuditEvent in the same transaction, and the same
  create with neither (one thread, so the numbers are the transaction's own latency);
- **compartment search**: ``Patient/{id}/Observation`` by ``threads`` callers, direct, with the
  access decision, and with the decision and its audit row, in many short rounds (16 × 60 a
  thread); the cost is given as the ratio of the rounds' median rates and as the median of
  each round's own ratio, with that ratio's quartiles (steadier: the machine's drift between
  rounds cancels out of a round's own ratio);
- **read**: ``threads`` callers each reading Patients (one read transaction each); audited, each
  read waits for the :class:`AuditWriter` to commit its row before it counts as answered. The
  naive alternative (a transaction of its own per audit row) is shown for comparison;
- **seal** and **verify**: rows per second;
- **CPU a search, one caller**: the process's CPU (every thread: the writer's and the sealer's
  too) a compartment search costs direct, with the decision, with the decision and its audit row,
  and with the decision followed by a one-row commit to an unrelated table (what any write costs
  the reads after it). Further variants take that commit apart: on SQLite the same commit
  unsynced, and synced into another database file (in WAL mode a commit empties every other
  connection's page cache; another file's commit does not); on PostgreSQL a round trip that
  writes nothing. A caller that waits (a sync, a round trip) leaves its core idle, and on a
  virtual machine the work after the wait runs measurably slower: one caller overstates what
  a wait costs a loaded server.

A :class:`Sealer` runs during the audited variants, as in the server.

    python -m bench.bench_audit [--creates 400] [--threads 8] [--reads 100] [--rounds 5]
        [--search-reads 60] [--search-rounds 16]
        [--cpu-searches 1000] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import resource
import sqlite3
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import insert

from bench.common import console, postgres_url, sqlite_url, table
from yilian.api.wiring import install_keys
from yilian.db import Database, UnitOfWork, open_database
from yilian.db.uow import transact
from yilian.fhir import FhirContext, FhirRequest, dispatch
from yilian.migrations import upgrade
from yilian.security.audit import AuditRecord, AuditWriter, Sealer, record, seal, verify
from yilian.security.audit.recorder import insert_rows, to_row
from yilian.security.policy import policy_for
from yilian.security.principal import Principal
from yilian.security.scopes import parse_scopes
from yilian.security.tables import access_grant

CTX = FhirContext(base_url="http://bench/fhir")


def patient(i: int) -> dict[str, object]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": f"3305021980010{i:05d}"}],
        "name": [{"family": "王", "given": ["芳"]}],
        "gender": "female",
        "birthDate": "1980-01-01",
    }


OBSERVATIONS_PER_PATIENT = 5
BENCH_ORG = "bench-org"


def observation(oid: str, pid: str, k: int) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": f"2024-0{1 + k}-15T08:00:00+08:00",
        "valueQuantity": {
            "value": 120 + k,
            "unit": "mmHg",
            "system": "http://unitsofmeasure.org",
            "code": "mm[Hg]",
        },
    }


def grant_treatment(db: Database, ids: list[str]) -> None:
    """The bench institution treats every seeded patient (what an Encounter there would grant)."""
    rows = [
        {
            "patient_key": pid,
            "org_id": BENCH_ORG,
            "reason": "treatment",
            "source_type": "Encounter",
            "source_id": f"e-{pid}",
        }
        for pid in ids
    ]
    with db.engine.begin() as conn:
        conn.execute(insert(access_grant), rows)


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
        # The chain is sealed with the deployment's keys (keyed MACs), as the server runs.
        install_keys(db, {"YILIAN_DATA_KEYS": "b1:" + "A" * 43 + "=", "YILIAN_INDEX_KEY": "B" * 43 + "="})
        try:
            yield db
        finally:
            db.dispose()


INSTITUTION = Principal(
    kind="system", subject="bench-client", scopes=parse_scopes("system/*.cruds"), org_id=BENCH_ORG
)


def bench_creates(db: Database, n: int) -> dict[str, list[float]]:
    """Issue 5's other measure: a create under an institution's access decision (its write check)
    with its AuditEvent in the same transaction, against the same create with neither."""

    def create(i: int, secured: bool) -> None:
        def work(uow: UnitOfWork) -> None:
            ctx = (
                FhirContext(base_url=CTX.base_url, settings=CTX.settings, policy=policy_for(INSTITUTION, db))
                if secured
                else CTX
            )
            out = dispatch(uow, ctx, FhirRequest("POST", "Patient", body=patient(i)))
            assert out.status == 201, out.body
            if secured:
                assert out.resource is not None
                record(uow, audit_of("create", out.resource.res_id, i))

        transact(db, work)

    times: dict[str, list[float]] = {"direct": [], "access decision + audit": []}
    for i in range(n // 10):  # warm-up: validators compiled, caches and pools filled
        create(10**6 + i, i % 2 == 0)
    # Alternate the variants so drift on a shared machine hits both alike.
    for i in range(n):
        for variant in times:
            secured = variant != "direct"
            start = time.perf_counter()
            create(i * 2 + secured, secured)
            times[variant].append(time.perf_counter() - start)
    return times


def seed_patients(db: Database, n: int) -> list[str]:
    ids = [f"bench-{i}" for i in range(n)]
    for start in range(0, n, 200):
        entries: list[dict[str, object]] = []
        for i in range(start, min(n, start + 200)):
            entries.append(
                {
                    "resource": {**patient(i), "id": ids[i]},
                    "request": {"method": "PUT", "url": f"Patient/{ids[i]}"},
                }
            )
            for k in range(OBSERVATIONS_PER_PATIENT):
                oid = f"{ids[i]}-o{k}"
                entries.append(
                    {
                        "resource": observation(oid, ids[i], k),
                        "request": {"method": "PUT", "url": f"Observation/{oid}"},
                    }
                )
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        transact(db, lambda uow, b=bundle: dispatch(uow, CTX, FhirRequest("POST", "", body=b)))
    return ids


def run_reads(
    threads: int, per_thread: int, one_read: Callable[[int, int], object]
) -> tuple[float, list[float]]:
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
    notes = {
        "audited (group commit)": f"{grouped:.1f} rows/commit",
        "audited (a commit per read)": "1 row/commit",
    }
    return {name: (statistics.median(rates[name]), latencies[name], notes.get(name, "")) for name in rates}


def bench_compartment(
    db: Database, ids: list[str], threads: int, per_thread: int, rounds: int
) -> dict[str, tuple[float, list[float], str, str]]:
    """Issue 5's measure: a patient-compartment search with the access decision and its audit row,
    against the same search straight through the FHIR core with neither."""
    principal = Principal(
        kind="system", subject="bench-client", scopes=parse_scopes("system/*.rs"), org_id=BENCH_ORG
    )

    def search(t: int, i: int, ctx: FhirContext) -> str:
        pid = ids[(t * 7919 + i * 104729) % len(ids)]
        with UnitOfWork(db) as uow:
            out = dispatch(uow, ctx, FhirRequest("GET", f"Patient/{pid}/Observation"))
            assert (
                out.status == 200
                and out.body is not None
                and out.body.count(b'"mode":"match"') == OBSERVATIONS_PER_PATIENT
            )
        return pid

    def direct(t: int, i: int) -> str:
        return search(t, i, CTX)

    def decided(t: int, i: int) -> str:
        ctx = FhirContext(base_url=CTX.base_url, settings=CTX.settings, policy=policy_for(principal, db))
        return search(t, i, ctx)

    def secured(writer: AuditWriter, t: int, i: int) -> None:
        writer.record_sync(audit_of("search-type", decided(t, i), i))

    rates: dict[str, list[float]] = {}
    latencies: dict[str, list[float]] = {}
    run_reads(threads, max(10, per_thread // 10), direct)  # warm-up
    with Sealer(db), AuditWriter(db) as writer:
        variants: dict[str, Callable[[int, int], object]] = {
            "direct (no access decision, no audit)": direct,
            "access decision only": decided,
            "access decision + audit": lambda t, i: secured(writer, t, i),
        }
        for _ in range(rounds):
            for name, one in variants.items():
                rps, lat = run_reads(threads, per_thread, one)
                rates.setdefault(name, []).append(rps)
                latencies.setdefault(name, []).extend(lat)
    # Also each round's own ratio (its direct rate over the variant's), then their median: the
    # variants of one round run minutes apart at most, so the machine's drift between rounds
    # cancels out of it. Either figure is quoted; this one moves less from run to run.
    base = rates["direct (no access decision, no audit)"]
    out: dict[str, tuple[float, list[float], str, str]] = {}
    for name in rates:
        paired = [b / r for b, r in zip(base, rates[name], strict=True)]
        low, _, high = statistics.quantiles(paired, n=4) if len(paired) > 1 else (paired[0],) * 3
        out[name] = (
            statistics.median(rates[name]),
            latencies[name],
            f"{statistics.median(paired):.2f}",
            f"{low:.2f}–{high:.2f}",
        )
    return out


def _cpu_s() -> float:
    """The process's CPU time, every thread, user and system (SQLite's reads and fsyncs included)."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def bench_search_cpu(db: Database, ids: list[str], n: int, rounds: int) -> dict[str, float]:
    """CPU milliseconds a compartment search, one caller, variants interleaved; median of rounds."""
    principal = Principal(
        kind="system", subject="bench-client", scopes=parse_scopes("system/*.rs"), org_id=BENCH_ORG
    )

    def search(i: int, ctx: FhirContext) -> str:
        pid = ids[(i * 104729) % len(ids)]
        with UnitOfWork(db) as uow:
            assert dispatch(uow, ctx, FhirRequest("GET", f"Patient/{pid}/Observation")).status == 200
        return pid

    def decided(i: int) -> str:
        ctx = FhirContext(base_url=CTX.base_url, settings=CTX.settings, policy=policy_for(principal, db))
        return search(i, ctx)

    # The cheapest write there is: one row, its own autocommit transaction, on the driver.
    conn = db.engine.connect()
    if not db.is_sqlite:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
    driver = conn.connection.driver_connection
    assert driver is not None
    driver.execute("CREATE TABLE bench_scratch (n INTEGER)")
    mark = "?" if db.is_sqlite else "%s"

    def unrelated_commit(i: int) -> None:
        decided(i)
        driver.execute(f"INSERT INTO bench_scratch (n) VALUES ({mark})", (i,))

    # What that commit's cost is made of. A caller that waits (an fsync, a round trip) leaves
    # its core idle, and on this kind of virtual machine the work after the wait runs slower
    # (user time, not system time): SQLite's same commit unsynced, or synced into another
    # file (no page cache to reload), and PostgreSQL's round trip that writes nothing, tell
    # the wait, the write and the reload apart.
    apart: dict[str, Callable[[int], object]] = {}
    others: list[sqlite3.Connection] = []
    if db.is_sqlite:
        path = str(db.url.database)
        unsynced = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        unsynced.execute("PRAGMA synchronous=NORMAL")
        elsewhere = sqlite3.connect(f"{path}.other", isolation_level=None, check_same_thread=False)
        elsewhere.execute("PRAGMA journal_mode=WAL")
        elsewhere.execute("PRAGMA synchronous=FULL")
        elsewhere.execute("CREATE TABLE bench_scratch (n INTEGER)")
        others += [unsynced, elsewhere]
        insert_n = "INSERT INTO bench_scratch (n) VALUES (?)"

        def unsynced_commit(i: int) -> None:
            decided(i)
            unsynced.execute(insert_n, (i,))

        def commit_elsewhere(i: int) -> None:
            decided(i)
            elsewhere.execute(insert_n, (i,))

        apart["… the same commit, not synced (synchronous=NORMAL)"] = unsynced_commit
        apart["… the same commit, synced, to another database file"] = commit_elsewhere
    else:

        def round_trip(i: int) -> None:
            decided(i)
            driver.execute("SELECT 1")

        apart["… a round trip that writes nothing (SELECT 1)"] = round_trip

    samples: dict[str, list[float]] = {}
    with Sealer(db), AuditWriter(db) as writer:
        variants: dict[str, Callable[[int], object]] = {
            "direct": lambda i: search(i, CTX),
            "access decision": decided,
            "access decision + audit": lambda i: writer.record_sync(audit_of("search-type", decided(i), i)),
            "access decision + an unrelated one-row commit": unrelated_commit,
            **apart,
        }
        for one in variants.values():  # warm-up
            for i in range(max(10, n // 10)):
                one(i)
        for _ in range(rounds):
            for name, one in variants.items():
                start = _cpu_s()
                for i in range(n):
                    one(i)
                samples.setdefault(name, []).append((_cpu_s() - start) * 1000 / n)
    conn.close()
    for other in others:
        other.close()
    return {name: statistics.median(values) for name, values in samples.items()}


def bench_chain(db: Database, rows: int = 5000) -> tuple[float, float, int]:
    """Rows sealed a second (``rows`` fresh unsealed ones: the server's sealer has already chained
    everything the runs before wrote) and rows verified a second (the whole log)."""
    with db.engine.begin() as conn:
        for start in range(0, rows, 500):
            insert_rows(conn, [to_row(audit_of("read", f"bench-{i}", i)) for i in range(start, start + 500)])
    start = time.perf_counter()
    sealed = seal(db)
    seal_s = time.perf_counter() - start
    assert sealed == rows, f"sealed {sealed} rows, expected {rows}"
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
    # Many short rounds for the compartment search: each round's own ratio cancels the machine's
    # drift, and their median over many rounds moves far less from run to run than five long ones.
    ap.add_argument("--search-reads", type=int, default=60, help="searches per thread and round")
    ap.add_argument("--search-rounds", type=int, default=16)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument(
        "--cpu-searches", type=int, default=1000, help="searches per variant and round, one caller"
    )
    args = ap.parse_args()

    create_rows: list[list[object]] = []
    read_rows: list[list[object]] = []
    chain_rows: list[list[object]] = []
    search_rows: list[list[object]] = []
    cpu_rows: list[list[object]] = []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        console.print(f"[bold]{backend}[/]")
        with database(backend) as db:
            times = bench_creates(db, args.creates)
            base = statistics.mean(times["direct"])
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
            grant_treatment(db, ids)
            searches = bench_compartment(db, ids, args.threads, args.search_reads, args.search_rounds)
            base_rps = searches["direct (no access decision, no audit)"][0]
            for variant, (rps, lat, paired, spread) in searches.items():
                mean, p50, p99 = percentiles(lat)
                search_rows.append(
                    [f"{backend} {variant}", rps, mean, p50, p99, base_rps / rps, paired, spread]
                )
            cpu = bench_search_cpu(db, ids, args.cpu_searches, args.rounds)
            for variant, ms in cpu.items():
                cpu_rows.append([f"{backend} {variant}", ms, ms / cpu["direct"]])
            seal_rate, verify_rate, rows = bench_chain(db)
            chain_rows.append([backend, rows, seal_rate, verify_rate])

    table(
        "create: one Patient per transaction (ms) — issue 5's target: cost ≤ 1.30× direct",
        ["variant", "mean", "p50", "p99", "cost × direct"],
        create_rows,
    )
    table(
        f"read: {args.threads} threads × {args.reads} reads of a Patient, {args.rounds} rounds (reads/s: median)",
        ["variant", "reads/s", "mean ms", "p50 ms", "p99 ms", "cost × plain", "batching"],
        read_rows,
    )
    table(
        f"compartment search Patient/{{id}}/Observation ({OBSERVATIONS_PER_PATIENT} matches): {args.threads} threads × "
        f"{args.search_reads}, {args.search_rounds} rounds — issue 5's target: cost ≤ 1.30× direct",
        [
            "variant",
            "searches/s",
            "mean ms",
            "p50 ms",
            "p99 ms",
            "cost × direct",
            "median of rounds' ×",
            "rounds' × (quartiles)",
        ],
        search_rows,
    )
    table(
        f"CPU a compartment search, one caller ({args.cpu_searches} × {args.rounds} rounds, median; every "
        "thread of the process, user + system)",
        ["variant", "CPU ms", "× direct"],
        cpu_rows,
    )
    table("chain", ["backend", "rows", "sealed rows/s (5,000 new)", "verified rows/s"], chain_rows)


if __name__ == "__main__":
    main()
