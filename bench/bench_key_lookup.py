"""Looking up a chunk of (type, id) pairs as the bulk load and the transaction paths do, at scale.

Every write path asks "which of these (type, id) pairs exist?" once per chunk of up to 400
resources (:func:`yilian.fhir.store.repository.existing`: the ids a bulk load is about to
write, the references it must check, the patient keys of referenced resources). Written as a
row-value IN list, ``(res_type, res_id) IN ((?, ?), …)``, SQLite 3.40 answers it by scanning
the whole (res_type, res_id) index, so each chunk costs time proportional to the table and a
long load slows down as it goes. The repository writes it per type instead
(``res_type = ? AND res_id IN (…)``), which both databases answer by index seeks.

This benchmark fills the ``resource`` table with N generated rows (as ``bench_export`` does),
then times ``existing`` of 400 random pairs (half Patients, half Observations, a tenth of them
absent) against the row-value form of the same question on the same connection, and checks
that both find the same pairs. The ratio is the row-value form's time over ours.

    python -m bench.bench_key_lookup [--sizes 100000,500000] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from sqlalchemy import select, tuple_

from bench.bench_export import PATIENTS, generate
from bench.common import postgres_url, sqlite_url, table
from yilian.db import open_database
from yilian.fhir.store import repository as repo
from yilian.fhir.store.tables import resource


def pairs(n: int, rng: random.Random) -> list[tuple[str, str]]:
    patients = min(n, PATIENTS)
    out: list[tuple[str, str]] = []
    for k in range(400):
        if k % 10 == 0:
            out.append(("Observation", f"absent{k}"))
        elif k % 2:
            out.append(("Patient", f"bp{rng.randrange(patients)}"))
        else:
            out.append(("Observation", f"bo{rng.randrange(patients, max(n, patients + 1))}"))
    return out


def measure(url: str, n: int, rounds: int) -> list[object]:
    generate(url, n)
    db = open_database(url)
    rng = random.Random(7)
    ours: list[float] = []
    row_value: list[float] = []
    try:
        with db.engine.connect() as conn:
            for _ in range(rounds):
                keys = pairs(n, rng)
                start = time.perf_counter()
                found = repo.existing(conn, keys)
                ours.append(time.perf_counter() - start)
                start = time.perf_counter()
                rows = conn.execute(
                    select(resource.c.res_type, resource.c.res_id).where(
                        tuple_(resource.c.res_type, resource.c.res_id).in_(keys),
                        resource.c.deleted.is_(False),
                    )
                )
                baseline = {(r.res_type, r.res_id) for r in rows}
                row_value.append(time.perf_counter() - start)
                if found != baseline:
                    raise SystemExit(f"the two forms disagree at {n} rows: {len(found)} vs {len(baseline)}")
    finally:
        db.dispose()
    ours_ms = statistics.median(ours) * 1000
    row_ms = statistics.median(row_value) * 1000
    return [f"{n:,}", f"{row_ms:.2f}", f"{ours_ms:.2f}", f"{row_ms / ours_ms:.1f}×"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="100000,500000", help="rows in the resource table, comma-separated"
    )
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--rounds", type=int, default=15, help="lookups timed per size (median reported)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    for backend in [b for b in args.backends.split(",") if b]:
        out: list[list[object]] = []
        for n in sizes:
            with sqlite_url() if backend == "sqlite" else postgres_url() as url:
                out.append(measure(url, n, args.rounds))
        table(
            f"{backend}: which of 400 (type, id) pairs exist (median of {args.rounds})",
            ["rows", "row-value IN ms", "per-type IN ms (ours)", "ratio"],
            out,
        )


if __name__ == "__main__":
    main()
