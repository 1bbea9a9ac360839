"""The live patient index (decision 0007: matching in the database) at a million persons, with
Splink's single-record prediction on the same records in the same run.

    python -m bench.bench_mpi_live [--persons 1000000] [--queries 1000] [--splink-queries 30]
                                   [--backends postgresql,sqlite]

One backend per run keeps a run near a quarter of an hour at a million persons (most of it
generating and loading): ``--backends postgresql``, then ``--backends sqlite``.

1. ``--persons`` generated Chinese residents (``bench_mpi_speed.population``: originals and
   relatives; duplicates of indexed persons are the queries) become FHIR Patients
   (``patient_body``). What the store and the index would hold after registering each of
   them is loaded in bulk — the Patient row (stamped and sealed by the write path's own
   functions), its person, its link and its blocking-key hashes (``service.blocking_hashes``,
   the function registration uses) — because registering a million Patients one by one
   through the FHIR create would take hours. The model in use is trained on a separate
   registration list (``--model-sample`` persons, as ``bench_mpi_speed``) and stored as
   ``yilian mpi train`` stores one. Search-index rows and version history are not loaded
   (matching does not read them). PostgreSQL is then vacuumed and analysed, as autovacuum
   does after a bulk insert; SQLite is left as the platform leaves it (no ANALYZE).
2. In a fresh process (so that its memory is the matcher's alone), ``--queries`` duplicate
   registrations of indexed persons are timed one at a time through
   ``service.find_candidates`` (what ``Patient/$match`` and registration call) and through
   ``service.register`` (the whole registration: locks, candidates, decision, rows; each in a
   transaction rolled back afterwards). Reported: p50/p95/p99, top-1 accuracy (match: the
   best candidate is the true person; register: linked to the true person, or a review opened
   for it), candidates scored per query and the process's RSS.
3. Splink 5 ``predict_between`` of one query against the same indexed records (the model
   trained once on the same sample), ``--splink-queries`` of them, and its top-1.

ID numbers the platform would refuse (bad check character, or contradicting the birth date or
sex: the generator's ``id-typo`` kind) are left out of the Patient, as a front desk whose
registration was refused would do; every matcher sees the same records.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.bench_mpi_speed import percentile, population, rss_mb, splink_realtime
from bench.common import postgres_url, sqlite_url
from tests.support import chinese_people
from yilian.api.wiring import install_keys
from yilian.db import Database, UnitOfWork, open_database
from yilian.db.dialect import insert_tables
from yilian.fhir.interactions import writes
from yilian.fhir.store.sealing import keyring_for
from yilian.fhir.store.tables import resource
from yilian.kernel import ids, naming
from yilian.kernel.crypto import Keyring
from yilian.kernel.errors import YilianError
from yilian.migrations import upgrade
from yilian.mpi import service
from yilian.mpi.fhir_map import check_identifiers, record_from_patient
from yilian.mpi.matching import PersonRecord, prepare
from yilian.mpi.matching.index import REALTIME_MAX_BLOCK
from yilian.mpi.matching.training import train
from yilian.mpi.tables import block_key, model, person, record_link

KEYS = {"YILIAN_DATA_KEYS": "b1:" + "A" * 43 + "=", "YILIAN_INDEX_KEY": "B" * 43 + "="}
CHUNK = 20_000


def patient_body(r: PersonRecord) -> dict[str, Any]:
    """The FHIR Patient a hospital would send for ``r`` (``record_from_patient`` reads it back)."""
    name: dict[str, Any] = {"use": "official"}
    if r.family_name:
        name["family"] = r.family_name
    if r.given_name:
        name["given"] = [r.given_name]
    if r.full_name and not (r.family_name or r.given_name):
        name["text"] = r.full_name
    body: dict[str, Any] = {"resourceType": "Patient", "name": [name]}
    if r.birth_date:
        body["birthDate"] = r.birth_date.isoformat()
    elif r.birth_year:
        body["birthDate"] = str(r.birth_year)
    if r.sex:
        body["gender"] = r.sex
    if r.prc_id:
        body["identifier"] = [{"system": naming.PRC_RESIDENT_ID, "value": r.prc_id}]
        try:
            check_identifiers(body)
        except YilianError:
            del body["identifier"]  # refused at the desk: registered without it
    idents = body.setdefault("identifier", [])
    if r.mrn and r.source:
        idents.append({"system": naming.mrn_system(r.source), "value": r.mrn})
    idents.extend({"system": i.system, "value": i.value} for i in r.identifiers)
    if not idents:
        del body["identifier"]
    if r.phone:
        body["telecom"] = [{"system": "phone", "value": r.phone}]
    address: dict[str, Any] = {"use": "home"}
    if r.address_lines:
        address["line"] = list(r.address_lines)
    for key, value in (("city", r.city), ("district", r.district), ("postalCode", r.postcode)):
        if value:
            address[key] = value
    if len(address) > 1:
        body["address"] = [address]
    return body


@contextmanager
def database(backend: str) -> Iterator[tuple[Database, str]]:
    ctx = sqlite_url() if backend == "sqlite" else postgres_url()
    with ctx as url:
        db = open_database(url)
        upgrade(db)
        install_keys(db, KEYS)
        try:
            yield db, url
        finally:
            db.dispose()


# --------------------------------------------------------------------------- loading


def load(
    db: Database, indexed: Sequence[tuple[str, dict[str, Any]]], model_json: str
) -> tuple[dict[str, list[int]], float]:
    """Write what registering every ``(person id, Patient)`` would leave in the store and the
    index, in bulk. Returns each record's blocking hashes and the seconds taken."""
    started = time.perf_counter()
    hashes_of: dict[str, list[int]] = {}
    now = int(time.time() * 1_000_000)
    with UnitOfWork(db, write=True) as uow:
        keyring = keyring_for(db.engine)
        assert keyring is not None
        if db.is_sqlite:
            # The loader's connection only (the timed process opens its own): with the platform's
            # 64 MB page cache, ten million random-order key inserts take most of an hour.
            uow.conn.exec_driver_sql("PRAGMA cache_size = -3000000")
        uow.conn.execute(
            model.insert().values(
                model_id=ids.new_id(), created=now, created_by="bench", records=0, body=model_json
            )
        )
        seen_persons: set[str] = set()
        for start in range(0, len(indexed), CHUNK):
            resources, persons, links, keys = [], [], [], []
            for person_id, body in indexed[start : start + CHUNK]:
                res_id = body["id"]
                f = prepare(record_from_patient(res_id, body))
                hashes = service.blocking_hashes(keyring, f)
                hashes_of[res_id] = hashes
                stored = dict(body)
                content = writes.stamp(stored, res_id, 1, now)
                resources.append(
                    {
                        "res_type": "Patient",
                        "res_id": res_id,
                        "version": 1,
                        "last_updated": now,
                        "deleted": False,
                        "patient_key": res_id,
                        "content": writes.for_storage(uow, stored, content, {}),
                    }
                )
                if person_id not in seen_persons:
                    seen_persons.add(person_id)
                    persons.append(
                        {
                            "person_id": person_id,
                            "status": "active",
                            "merged_into": None,
                            "created": now,
                            "updated": now,
                        }
                    )
                links.append(
                    {
                        "patient_id": res_id,
                        "person_id": person_id,
                        "how": service.NEW,
                        "probability": None,
                        "source": f.source or None,
                        "updated": now,
                    }
                )
                keys.extend({"key": h, "patient_id": res_id} for h in hashes)
            insert_tables(
                uow.conn, [(resource, resources), (person, persons), (record_link, links), (block_key, keys)]
            )
            done = min(start + CHUNK, len(indexed))
            if done % 200_000 == 0 or done == len(indexed):
                print(f"  loaded {done:,} records ({time.perf_counter() - started:.0f} s)", flush=True)
        uow.commit()
    if not db.is_sqlite:
        # What autovacuum does after a bulk insert (statistics, visibility map): without it the
        # planner guesses and index-only scans read the table. SQLite gets nothing: the
        # platform never runs ANALYZE there.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    return hashes_of, time.perf_counter() - started


def storage_mb(db: Database, url: str) -> dict[str, float]:
    with db.engine.connect() as conn:
        if db.is_sqlite:
            path = Path(url.removeprefix("sqlite:///"))
            return {"database file": path.stat().st_size / 1e6}
        out = {}
        for name in ("mpi_block", "mpi_link", "mpi_person", "resource"):
            out[name] = conn.execute(text(f"SELECT pg_total_relation_size('{name}')")).scalar_one() / 1e6
        return out


# --------------------------------------------------------------------------- querying


def probe(url: str, queries: Sequence[tuple[dict[str, Any], str]], warmup: int) -> dict[str, Any]:
    """Run in a fresh process: time ``find_candidates`` and ``register`` for every query."""
    db = open_database(url)
    install_keys(db, KEYS)
    rss_start = rss_mb()
    records = [(record_from_patient("q", body), truth) for body, truth in queries]

    def match(uow: UnitOfWork, record: PersonRecord) -> list[service.Candidate]:
        return service.find_candidates(uow, record, limit=5, min_grade="possible")

    with UnitOfWork(db) as uow:
        for record, _ in records[:warmup]:
            match(uow, record)
    match_ms, cpu_ms, hits, scored = [], [], [], []
    original = service._load_features

    def counting(uow: UnitOfWork, patient_ids: Any) -> Any:
        found = original(uow, patient_ids)
        scored.append(len(found))
        return found

    for record, truth in records:
        with UnitOfWork(db) as uow:
            t0, c0 = time.perf_counter(), time.thread_time()
            found = match(uow, record)
            match_ms.append((time.perf_counter() - t0) * 1000)
            cpu_ms.append((time.thread_time() - c0) * 1000)
        hits.append(bool(found) and found[0].person_id == truth)
    # Counted in a second pass, so that the timed one runs the code as shipped.
    service._load_features = counting  # type: ignore[assignment]
    try:
        with UnitOfWork(db) as uow:
            for record, _ in records:
                match(uow, record)
    finally:
        service._load_features = original  # type: ignore[assignment]
    register_ms, linked, reviewed = [], 0, 0
    for body, truth in queries:
        conn = db.engine.connect()
        if db.is_sqlite:
            conn = conn.execution_options(yilian_write=True)
        trans = conn.begin()
        try:
            uow = UnitOfWork(db, write=True, connection=conn)
            t0 = time.perf_counter()
            done = service.register(uow, patient_id=ids.new_id(), resource=body, actor="bench", first=True)
            register_ms.append((time.perf_counter() - t0) * 1000)
        finally:
            trans.rollback()
            conn.close()
        linked += done.outcome == "linked" and done.person_id == truth
        reviewed += (
            done.outcome == "review" and done.candidate is not None and done.candidate.person_id == truth
        )
    db.dispose()
    return {
        "match_ms": match_ms,
        "cpu_ms": cpu_ms,
        "hits": hits,
        "top1": sum(hits) / len(records),
        "load_avg": os.getloadavg()[0],
        "scored": scored,
        "register_ms": register_ms,
        "linked": linked / len(queries),
        "reviewed": reviewed / len(queries),
        "rss_start_mb": rss_start,
        "rss_end_mb": rss_mb(),
    }


def blocked(
    queries: Sequence[tuple[dict[str, Any], str]],
    true_record: dict[str, str],
    hashes_of: dict[str, list[int]],
    sizes: Counter[int],
) -> tuple[float, float]:
    """Shares of queries whose true record shares a blocking key with them at all, and only
    through keys the real-time cap skips."""
    keyring = Keyring.from_config(KEYS, key_file=None)  # the databases' keys
    shares = capped_only = 0
    for body, truth in queries:
        mine = set(service.blocking_hashes(keyring, prepare(record_from_patient("q", body))))
        shared = mine & set(hashes_of[true_record[truth]])
        if shared:
            shares += 1
            if all(sizes[h] > REALTIME_MAX_BLOCK for h in shared):
                capped_only += 1
    return shares / len(queries), capped_only / len(queries)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--persons", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--splink-queries", type=int, default=30, help="0: skip Splink")
    ap.add_argument("--model-sample", type=int, default=30_000)
    ap.add_argument("--backends", default="postgresql,sqlite")
    ap.add_argument("--warmup", type=int, default=20)
    args = ap.parse_args(argv)
    print(f"bench_mpi_live {dt.date.today().isoformat()}: {' '.join(sys.argv[1:])}", flush=True)

    t = time.perf_counter()
    indexed_records, probes = population(args.persons, args.queries, seed=args.persons)
    indexed = [(person_id, {**patient_body(r), "id": r.record_id}) for person_id, r in indexed_records]
    queries = [(patient_body(r), person_id) for r, person_id in probes]
    true_record = {person_id: body["id"] for person_id, body in indexed}
    del indexed_records
    print(f"generated {len(indexed):,} records, {len(queries)} queries ({time.perf_counter() - t:.0f} s)")
    t = time.perf_counter()
    sample = chinese_people.generate(args.model_sample, seed=99).person_records()
    model_json = train(sample).to_json()
    print(f"trained on {len(sample):,} records ({time.perf_counter() - t:.0f} s)", flush=True)

    rows = []
    hashes_of: dict[str, list[int]] = {}
    for backend in args.backends.split(","):
        with database(backend) as (db, url):
            hashes_of, load_s = load(db, indexed, model_json)
            sizes = storage_mb(db, url)
            print(f"{backend}: loaded in {load_s:.0f} s; storage MB {sizes}", flush=True)
            gc.collect()
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                r = pool.submit(probe, url, queries, args.warmup).result()
        rows.append((backend, r, load_s, sizes))
        m, g = r["match_ms"], r["register_ms"]
        print(
            f"{backend}: match p50 {percentile(m, 0.5):.2f} p95 {percentile(m, 0.95):.2f} "
            f"p99 {percentile(m, 0.99):.2f} ms, top-1 {r['top1']:.3f}; register p95 {percentile(g, 0.95):.2f} ms",
            flush=True,
        )

    block_sizes: Counter[int] = Counter(h for hs in hashes_of.values() for h in hs)
    reach, capped = blocked(queries, true_record, hashes_of, block_sizes)
    big = sum(1 for n in block_sizes.values() if n > REALTIME_MAX_BLOCK)
    del block_sizes

    splink: dict[str, Any] = {}
    if args.splink_queries:
        t = time.perf_counter()
        records = [(p, record_from_patient(b["id"], b)) for p, b in indexed]
        asked = [
            (record_from_patient(f"q{i}", b), p) for i, (b, p) in enumerate(queries[: args.splink_queries])
        ]
        splink = splink_realtime(records, asked, sample)
        print(f"Splink: {time.perf_counter() - t:.0f} s", flush=True)

    print(f"\n## Live patient index at {len(indexed):,} records ({args.persons:,} persons)\n")
    print(
        "| backend | load s | match p50 ms | p95 ms | p99 ms | mean ms | top-1 | match CPU p50 / p95 ms (this process) | candidates scored p50 / p95 | register p50 / p95 ms | register: linked / review to the true person | matcher RSS MB (start → end) | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for backend, r, load_s, _sizes in rows:
        m, c, g, s = r["match_ms"], r["cpu_ms"], r["register_ms"], r["scored"]
        print(
            f"| {backend} | {load_s:.0f} | {percentile(m, 0.5):.2f} | {percentile(m, 0.95):.2f} | {percentile(m, 0.99):.2f} | "
            f"{statistics.fmean(m):.2f} | {r['top1']:.3f} | {percentile(c, 0.5):.2f} / {percentile(c, 0.95):.2f} | "
            f"{percentile(s, 0.5)} / {percentile(s, 0.95)} | "
            f"{percentile(g, 0.5):.2f} / {percentile(g, 0.95):.2f} | {r['linked']:.3f} / {r['reviewed']:.3f} | "
            f"{r['rss_start_mb']:.0f} → {r['rss_end_mb']:.0f} | {r['load_avg']:.1f} |"
        )
    print()
    for backend, _r, _load_s, sizes in rows:
        print(f"{backend} storage MB: " + ", ".join(f"{k} {v:,.0f}" for k, v in sizes.items()))
    print(
        f"\nblocking: true record shares a key with the query in {reach:.3f} of queries; only through keys "
        f"over the real-time cap ({REALTIME_MAX_BLOCK}) in {capped:.3f}; {big:,} keys are over the cap"
    )
    if splink:
        print(
            f"\nSplink predict_between ({splink['splink_queries']} queries): p50 {splink['splink_p50']:.0f} ms, "
            f"p95 {splink['splink_p95']:.0f} ms, mean {splink['splink_mean']:.0f} ms, top-1 {splink['splink_top1']:.3f}"
        )
        for backend, r, _l, _s in rows:
            n = splink["splink_queries"]
            head = r["match_ms"][:n]
            print(
                f"  Splink mean ÷ {backend} mean: {splink['splink_mean'] / statistics.fmean(r['match_ms']):.0f}× "
                f"(the same {n} queries: {splink['splink_mean'] / statistics.fmean(head):.0f}×; "
                f"our top-1 on them {sum(r['hits'][:n]) / n:.3f})"
            )


if __name__ == "__main__":
    main()
