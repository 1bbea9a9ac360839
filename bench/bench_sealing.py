"""What sealing sensitive fields costs on the write and read paths, next to orjson.

    python bench/bench_sealing.py [--budget SECONDS]

For a few resources — Patients that hold ID numbers and phones, Observations that hold
nothing sensitive — prints microseconds per call of ``seal`` (write path) and ``unseal``
(read path), and of ``orjson.loads`` / ``orjson.dumps`` of the same resource in the same run,
with the ratios. Absolute numbers drift on a shared machine; the ratios are what to compare.
Results are recorded in docs/decisions/0006-field-encryption.md.
"""

from __future__ import annotations

import argparse
import os
import timeit
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from yilian.demo import build_demo_region
from yilian.fhir.store.sealing import reencrypt, seal, unseal
from yilian.kernel.crypto import Keyring

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = Path(os.environ.get("YILIAN_SHARED_DATA") or ROOT.parent / "shared" / "data") / "fhir-r4-examples"


def _time_per_call(fn: Callable[[], object], budget: float) -> float:
    """Best of seven runs of about ``budget`` seconds each, in microseconds per call."""
    timer = timeit.Timer(fn)
    number, elapsed = timer.autorange()
    number = max(1, int(number * budget / max(elapsed, 1e-9)))
    return min(timer.timeit(number) / number for _ in range(7)) * 1e6


def _demo(resource_type: str) -> dict[str, Any]:
    """The first demo resource of a type that has the most to seal (a resident with both an
    ID number and a phone), or the first at all."""
    best: dict[str, Any] | None = None
    for bundle in build_demo_region(residents=20).bundles():
        for entry in bundle["entry"]:
            resource: dict[str, Any] = entry["resource"]
            if resource["resourceType"] != resource_type:
                continue
            if best is None or len(seal(resource, KEYRING).found) > len(seal(best, KEYRING).found):
                best = resource
    assert best is not None
    return best


KEYRING = Keyring.generate()


def cases() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("Patient (official example)", orjson.loads((EXAMPLES / "patient-example.json").read_bytes())),
        ("Patient (demo resident)", _demo("Patient")),
        (
            "Observation (official BP)",
            orjson.loads((EXAMPLES / "observation-example-bloodpressure.json").read_bytes()),
        ),
        ("Observation (demo)", _demo("Observation")),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=0.2, help="seconds per timing run")
    args = parser.parse_args()
    rotated = KEYRING.with_new_current_key()

    header = (
        f"{'resource':28} {'bytes':>6} {'sealed':>6} {'loads':>7} {'dumps':>7} {'seal':>7} {'unseal':>7}"
        f" {'seal/loads':>10} {'seal/dumps':>10} {'unseal/loads':>12} {'reencrypt':>9}"
    )
    print(header)
    print("-" * len(header))
    for label, resource in cases():
        plain = orjson.dumps(resource)
        result = seal(resource, KEYRING)
        stored = orjson.dumps(result.resource)
        assert unseal(stored, KEYRING) == plain
        loads = _time_per_call(partial(orjson.loads, plain), args.budget)
        dumps = _time_per_call(partial(orjson.dumps, resource), args.budget)
        sealing = _time_per_call(partial(seal, resource, KEYRING), args.budget)
        unsealing = _time_per_call(partial(unseal, stored, KEYRING), args.budget)
        rotating = _time_per_call(partial(reencrypt, stored, rotated), args.budget)
        fields = stored.count(b"ylenc:")
        print(
            f"{label:28} {len(plain):>6} {fields:>6} {loads:>7.1f} {dumps:>7.1f} {sealing:>7.1f} {unsealing:>7.1f}"
            f" {sealing / loads:>10.1f} {sealing / dumps:>10.1f} {unsealing / loads:>12.2f} {rotating:>9.1f}"
        )
    print("\ntimes in µs per call; 'sealed' = tokens in the stored document (values and narratives)")


if __name__ == "__main__":
    main()
