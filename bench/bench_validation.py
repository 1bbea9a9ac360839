"""How much validation costs next to parsing: validate() time / orjson.loads() time.

For every official R4 example (../shared/data/fhir-r4-examples) and every resource in
the Synthea bundles (../shared/data/synthea-fhir-r4), the resource is serialised with
orjson and both ``orjson.loads(bytes)`` and ``validate(resource)`` are timed on it (best
of several rounds, each round repeating the call enough times to be measurable). The
requirement (docs/decisions/0003-compiled-validator.md) is a ratio of at most 3.

Prints what the validators cost to plan and compile; the overall ratio (total validate
time / total loads time), the per-resource median and spread, the ratio per resource
type, worst first, and where the time goes; the ratio for the 20 Synthea bundles taken
whole, as a transaction receives them; and, if ``fhir.resources`` is installed, what
parsing into its pydantic models costs on the same resources.

Usage:  python bench/bench_validation.py [--rounds N] [--top N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("YILIAN_SHARED_DATA") or ROOT.parent / "shared" / "data")
sys.path.insert(0, str(ROOT / "src"))

from yilian.fhir.validation import validate  # noqa: E402
from yilian.fhir.validation.compiler import validators  # noqa: E402

TARGET_RATIO = 3.0
# Each timed sample repeats the call until it covers about this long.
SAMPLE_SECONDS = 0.0005


def corpus() -> list[tuple[str, dict[str, Any]]]:
    """(source, resource) for every official example and every Synthea bundle entry."""
    out: list[tuple[str, dict[str, Any]]] = []
    for path in sorted((DATA / "fhir-r4-examples").glob("*.json")):
        out.append(("example", orjson.loads(path.read_bytes())))
    for path in sorted((DATA / "synthea-fhir-r4").glob("*.json")):
        bundle = orjson.loads(path.read_bytes())
        out.extend(("synthea", entry["resource"]) for entry in bundle["entry"])
    return out


def best_time(fn: Callable[[], object], repeat: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best


def repeats_for(fn: Callable[[], object]) -> int:
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    return max(1, int(SAMPLE_SECONDS / once))


def fhir_resources_parser() -> Callable[[dict[str, Any]], object] | None:
    try:
        from fhir.resources import construct_fhir_element  # type: ignore[import-not-found]
    except ImportError:
        return None

    def parse(resource: dict[str, Any]) -> object:
        return construct_fhir_element(resource["resourceType"], resource)

    return parse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--top", type=int, default=15, help="how many resource types to list")
    args = ap.parse_args()

    start = time.perf_counter()
    compiled = validators()
    planned = time.perf_counter() - start
    start = time.perf_counter()
    for name in compiled.resource_types:
        compiled.struct(name)  # compile every resource type now
    print(
        f"validators: planned in {planned * 1000:.0f} ms, all {len(compiled.resource_types)} resource types "
        f"compiled in {(time.perf_counter() - start) * 1000:.0f} ms (each at its first use, once per process)"
    )

    resources = corpus()
    errors = sum(1 for _, r in resources if any(i.severity == "error" for i in validate(r)))
    blobs = [orjson.dumps(r) for _, r in resources]
    print(f"{len(resources)} resources, {sum(map(len, blobs)) / 1e6:.1f} MB as JSON, {errors} with errors")

    by_type: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    ratios: list[float] = []
    total_load = total_validate = 0.0
    for (_, resource), blob in zip(resources, blobs, strict=True):
        load = best_time(
            lambda b=blob: orjson.loads(b), repeats_for(lambda b=blob: orjson.loads(b)), args.rounds
        )
        check = best_time(
            lambda r=resource: validate(r), repeats_for(lambda r=resource: validate(r)), args.rounds
        )
        total_load += load
        total_validate += check
        ratios.append(check / load)
        row = by_type[resource["resourceType"]]
        row[0] += load
        row[1] += check
        row[2] += 1

    overall = total_validate / total_load
    print(
        f"\noverall validate/loads: {overall:.2f}x  (target <= {TARGET_RATIO:g}x; "
        f"loads {total_load * 1000:.1f} ms, validate {total_validate * 1000:.1f} ms per pass)"
    )
    print(
        f"per resource: median {statistics.median(ratios):.2f}x, 90th percentile "
        f"{statistics.quantiles(ratios, n=10)[-1]:.2f}x, max {max(ratios):.2f}x"
    )
    print(f"\n{'resource type':<32}{'count':>7}{'loads us':>11}{'validate us':>13}{'ratio':>8}")
    rows = sorted(by_type.items(), key=lambda kv: kv[1][1] / kv[1][0], reverse=True)
    for name, (load, check, count) in rows[: args.top]:
        print(
            f"{name:<32}{int(count):>7}{load / count * 1e6:>11.1f}{check / count * 1e6:>13.1f}{check / load:>8.2f}"
        )
    heavy = sorted(by_type.items(), key=lambda kv: kv[1][1], reverse=True)[:6]
    print(
        "\nwhere the time goes: "
        + ", ".join(f"{n} {v[1] / total_validate:.0%} ({v[1] / v[0]:.2f}x)" for n, v in heavy)
    )

    # What a transaction costs: the whole Synthea bundle parsed, then validated with its entries.
    bundle_load = bundle_validate = 0.0
    for path in sorted((DATA / "synthea-fhir-r4").glob("*.json")):
        raw = path.read_bytes()
        bundle = orjson.loads(raw)
        bundle_load += best_time(lambda b=raw: orjson.loads(b), 1, args.rounds)
        bundle_validate += best_time(lambda b=bundle: validate(b), 1, args.rounds)
    print(
        f"whole Synthea bundles (20, as sent in a transaction): validate/loads {bundle_validate / bundle_load:.2f}x "
        f"(loads {bundle_load * 1000:.1f} ms, validate {bundle_validate * 1000:.1f} ms)"
    )

    parse = fhir_resources_parser()
    if parse is None:
        print("\nfhir.resources is not installed: skipping the pydantic comparison")
        return
    total_parse = 0.0
    for _, resource in resources:
        try:
            total_parse += best_time(lambda r=resource: parse(r), 1, max(1, args.rounds // 2))
        except Exception:  # fhir.resources rejects some valid resources; leave them out
            continue
    print(f"\nfhir.resources (pydantic) parse/loads: {total_parse / total_load:.1f}x")


if __name__ == "__main__":
    main()
