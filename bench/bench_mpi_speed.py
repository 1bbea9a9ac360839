"""Speed and memory of the MPI matcher, with Splink (DuckDB) measured in the same run.

    .venv/bin/python -m bench.bench_mpi_speed [--sizes 100000,1000000] [--bulk-persons 50000]

1. Real-time match: an index of N generated persons (``tests/support/chinese_people.py``:
   originals and relatives), queried with 1,000 duplicate registrations of indexed persons
   (every corruption kind): p50/p95/p99 latency of ``MatchIndex.match`` and top-1 accuracy.
   Memory: RSS growth while building the index (the process's own counter) and, for an index of
   ``--trace-size`` persons (default 100,000), tracemalloc's count of Python allocations.
2. The same queries through Splink's single-record prediction (``predict_between`` of the
   query against the indexed table, Splink 5; the model trained once on a sample), fewer
   of them, with its top-1 accuracy.
3. Bulk dedupe of one generated file, end to end (prepare, train, block, score, cluster)
   for ours and Splink (train, predict, cluster), with the F1 of both.
"""

from __future__ import annotations

import argparse
import gc
import logging
import random
import statistics
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.bench_mpi_quality import _pairs_from_groups, frame, prf, splink_settings, splink_train
from tests.support import chinese_people
from yilian.mpi.matching import bulk
from yilian.mpi.matching.index import MatchIndex
from yilian.mpi.matching.matcher import Matcher
from yilian.mpi.matching.record import PersonRecord
from yilian.mpi.matching.training import train


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def population(
    persons: int, queries: int, seed: int
) -> tuple[list[tuple[str, PersonRecord]], list[tuple[PersonRecord, str]]]:
    share = min(1.0, queries * 1.6 / persons)
    pop = chinese_people.generate(persons, seed=seed, duplicate_share=share)
    indexed = [
        (f"p{r.person}", r.record)
        for r in pop.records
        if r.kind in ("original", *chinese_people.HOUSEHOLD_KINDS)
    ]
    dups = [(r.record, f"p{r.person}") for r in pop.records if r.kind in chinese_people.KINDS]
    random.Random(seed).shuffle(dups)
    return indexed, dups[:queries]


def realtime(size: int, queries: int, splink_queries: int, model_sample: int) -> dict[str, Any]:
    t = time.perf_counter()
    indexed, probes = population(size, queries, seed=size)
    gen_s = time.perf_counter() - t
    # Both models learn from a separate registration list that has duplicates in it, as the
    # index's own history would; an index of distinct persons alone has no matches to learn m from.
    sample = chinese_people.generate(model_sample, seed=99).person_records()
    t = time.perf_counter()
    model = train(sample)
    train_s = time.perf_counter() - t
    gc.collect()
    before = rss_mb()
    t = time.perf_counter()
    index = MatchIndex.build(indexed, Matcher(model))
    build_s = time.perf_counter() - t
    gc.collect()
    grown = rss_mb() - before
    for record, _ in probes[:20]:  # warm caches (name normalisation, numpy)
        index.match(record)
    latencies = []
    hits = 0
    for record, person in probes:
        t0 = time.perf_counter()
        found = index.match(record, limit=5)
        latencies.append((time.perf_counter() - t0) * 1000)
        hits += bool(found) and found[0].person_id == person
    out: dict[str, Any] = {
        "size": size,
        "records": len(index),
        "generate_s": gen_s,
        "train_s": train_s,
        "build_s": build_s,
        "rss_growth_mb": grown,
        "p50": percentile(latencies, 0.5),
        "p95": percentile(latencies, 0.95),
        "p99": percentile(latencies, 0.99),
        "mean": statistics.fmean(latencies),
        "top1": hits / len(probes),
        "queries": len(probes),
    }
    if splink_queries:
        out.update(splink_realtime(indexed, probes[:splink_queries], sample))
    del index
    gc.collect()
    return out


def traced_memory(size: int) -> float:
    """MB of Python allocations held by an index of ``size`` persons (tracemalloc)."""
    indexed, _ = population(size, 10, seed=size + 1)
    matcher = Matcher()
    gc.collect()
    tracemalloc.start()
    index = MatchIndex.build(indexed, matcher)
    current, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del index
    return current / 1e6


def splink_realtime(
    indexed: list[tuple[str, PersonRecord]],
    probes: list[tuple[PersonRecord, str]],
    sample: list[PersonRecord],
) -> dict[str, Any]:
    from splink import Linker
    from splink.backends.duckdb import DuckDBAPI

    logging.getLogger("splink").setLevel(logging.ERROR)
    person_of = {r.record_id: p for p, r in indexed}
    db = DuckDBAPI()
    df_sample = frame(sample, normalised=False)
    trainer = Linker(
        db.register(df_sample), splink_settings(df_sample, "dedupe_only"), log_level=logging.ERROR
    )
    splink_train(trainer)
    model = trainer.misc.save_model_to_json()
    df = frame([r for _, r in indexed], normalised=False)
    t = time.perf_counter()
    table = db.register(df)
    linker = Linker(table, model, log_level=logging.ERROR)
    setup_s = time.perf_counter() - t
    latencies = []
    hits = 0
    columns = list(df.columns)
    for record, person in probes:
        query = frame([record], normalised=False).reindex(columns=columns).astype("string")
        t0 = time.perf_counter()
        new = db.register(query)
        result = linker.inference.predict_between(table, new, warning_mode="never").as_pandas_dataframe()  # type: ignore[no-untyped-call]
        latencies.append((time.perf_counter() - t0) * 1000)
        if len(result):
            best = result.sort_values("match_probability", ascending=False).iloc[0]
            hits += person_of.get(str(best["unique_id_l"])) == person
    return {
        "splink_setup_s": setup_s,
        "splink_p50": percentile(latencies, 0.5),
        "splink_p95": percentile(latencies, 0.95),
        "splink_mean": statistics.fmean(latencies),
        "splink_top1": hits / len(probes),
        "splink_queries": len(probes),
    }


def bulk_dedupe(persons: int) -> dict[str, Any]:
    from splink import Linker
    from splink.backends.duckdb import DuckDBAPI

    pop = chinese_people.generate(persons, seed=7)
    records = pop.person_records()
    groups: dict[int, list[str]] = {}
    for rid, person in pop.truth().items():
        groups.setdefault(person, []).append(rid)
    truth = _pairs_from_groups(groups.values())
    t = time.perf_counter()
    result = bulk.dedupe(records)
    ours_s = time.perf_counter() - t
    ours_f1 = prf(_pairs_from_groups(result.cluster_members().values()), truth)[2]

    logging.getLogger("splink").setLevel(logging.ERROR)
    t = time.perf_counter()
    df = frame(records, normalised=False)
    db = DuckDBAPI()
    linker = Linker(db.register(df), splink_settings(df, "dedupe_only"), log_level=logging.ERROR)
    splink_train(linker)
    predictions = linker.inference.predict(threshold_match_probability=0.5)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, 0.99
    ).as_pandas_dataframe()  # type: ignore[no-untyped-call]
    splink_s = time.perf_counter() - t
    sgroups: dict[Any, list[str]] = {}
    for uid, cid in zip(clusters["unique_id"], clusters["cluster_id"], strict=True):
        sgroups.setdefault(cid, []).append(str(uid))
    splink_f1 = prf(_pairs_from_groups(sgroups.values()), truth)[2]
    return {
        "records": len(records),
        "ours_s": ours_s,
        "ours_f1": ours_f1,
        "splink_s": splink_s,
        "splink_f1": splink_f1,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--splink-queries", type=int, default=100)
    parser.add_argument("--model-sample", type=int, default=30_000, help="persons in the training list")
    parser.add_argument("--bulk-persons", type=int, default=50_000, help="0: skip the bulk comparison")
    parser.add_argument("--trace-size", type=int, default=100_000, help="persons for tracemalloc; 0: skip")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]

    print("## Real-time match (MatchIndex.match) vs Splink predict_between\n")
    print(
        "| persons | records | build s | RSS growth MB | p50 ms | p95 ms | p99 ms | top-1 | Splink p50 ms | Splink p95 ms | Splink top-1 | Splink/ours (mean) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        r = realtime(size, args.queries, args.splink_queries, args.model_sample)
        ratio = r["splink_mean"] / r["mean"] if "splink_mean" in r else float("nan")
        print(
            f"| {size:,} | {r['records']:,} | {r['build_s']:.0f} | {r['rss_growth_mb']:.0f} | {r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | {r['top1']:.3f} | "
            f"{r.get('splink_p50', float('nan')):.0f} | {r.get('splink_p95', float('nan')):.0f} | {r.get('splink_top1', float('nan')):.3f} | {ratio:.0f}× |",
            flush=True,
        )
    if args.trace_size:
        mb = traced_memory(args.trace_size)
        print(
            f"\ntracemalloc: an index of {args.trace_size:,} persons holds {mb:.0f} MB of Python objects\n",
            flush=True,
        )

    if args.bulk_persons:
        b = bulk_dedupe(args.bulk_persons)
        print("## Bulk dedupe, end to end, same file\n")
        print("| records | ours s | ours F1 | Splink s | Splink F1 (p≥0.99) | ours/Splink time |")
        print("|---|---|---|---|---|---|")
        print(
            f"| {b['records']:,} | {b['ours_s']:.1f} | {b['ours_f1']:.4f} | {b['splink_s']:.1f} | {b['splink_f1']:.4f} | {b['ours_s'] / b['splink_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
