"""How fast the compiled FHIRPath engine extracts search values, next to fhirpathpy.

    python bench/bench_fhirpath.py [--repeat N]

For a mix of R4 search-parameter expressions over official example resources, prints
microseconds per evaluation for ``yilian.fhir.fhirpath`` (compiled once, as the
indexer uses it) and for fhirpathpy (also compiled once, with the R4 model), and the
ratio. Both get the same parsed JSON. Results are recorded in
docs/decisions/0002-own-fhirpath-engine.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import timeit
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = Path(os.environ.get("YILIAN_SHARED_DATA") or ROOT.parent / "shared" / "data") / "fhir-r4-examples"

# (expression, example file): what the indexer runs on a write
CASES: list[tuple[str, str]] = [
    ("Patient.name", "patient-example.json"),
    ("Patient.birthDate", "patient-example.json"),
    ("Patient.telecom.where(system='phone')", "patient-example.json"),
    ("Patient.name.family | Patient.name.given", "patient-example.json"),
    (
        "Patient.extension('http://hl7.org/fhir/StructureDefinition/patient-animal')",
        "patient-example-animal.json",
    ),
    ("Observation.code", "observation-example.json"),
    ("Observation.subject.where(resolve() is Patient)", "observation-example.json"),
    ("(Observation.value as Quantity) | (Observation.value as SampledData)", "observation-example.json"),
    (
        "(Observation.value as Quantity) | (Observation.value as SampledData)"
        " | (Observation.component.value as Quantity) | (Observation.component.value as SampledData)",
        "observation-example-bloodpressure.json",
    ),
    ("Condition.onset.as(dateTime) | Condition.onset.as(Period)", "condition-example.json"),
    ("Encounter.period", "encounter-example-home.json"),
    ("Immunization.vaccineCode", "immunization-example.json"),
    ("Bundle.entry[0].resource", "document-example-dischargesummary.json"),
    ("Resource.meta.lastUpdated", "patient-example.json"),
    ("Patient.deceased.exists() and Patient.deceased != false", "patient-example.json"),
]


_AS_OPERATOR = re.compile(r"\(([^()]+?) as (\w+)\)")


_RESOLVE_IS = re.compile(r"resolve\(\) is (\w+)")


def _reference_form(expression: str, resource_type: str | None = None) -> str:
    """The same question in a form fhirpathpy answers: it has no resolve() (it gets a test
    of the reference text), rejects ``x as T`` on a repeating x (it gets ``x.ofType(T)``,
    which is what we compute) and does not match ``Resource.`` to a concrete type."""
    text = _RESOLVE_IS.sub(lambda m: f"reference.startsWith('{m.group(1)}/')", expression)
    text = _AS_OPERATOR.sub(lambda m: f"(({m.group(1)}).ofType({m.group(2)}))", text)
    if resource_type:
        text = re.sub(r"\b(?:Domain)?Resource\.", resource_type + ".", text)
    return text


def _time_per_call(fn: Any, budget: float) -> float:
    """Best of seven runs of about ``budget`` seconds each, in microseconds per call."""
    timer = timeit.Timer(fn)
    number, elapsed = timer.autorange()
    number = max(1, int(number * budget / max(elapsed, 1e-9)))
    return min(timer.timeit(number) / number for _ in range(7)) * 1e6


# A write indexes the resource for every search parameter of its type: the cost that matters.
WRITES = [("Patient", "patient-example.json"), ("Observation", "observation-example-bloodpressure.json")]


def _whole_writes(budget: float) -> list[tuple[str, float, float]]:
    from fhirpathpy import compile as fp_compile
    from fhirpathpy.models import models

    from yilian.fhir.fhirpath import compile_path
    from yilian.fhir.model import load_definition

    params = load_definition("search-parameters")
    rows = []
    for rtype, filename in WRITES:
        resource = json.loads((EXAMPLES / filename).read_text(encoding="utf-8"))
        exprs = [p["expression"] for p in params if p.get("expression") and rtype in p["base"]]
        ours = [compile_path(e) for e in exprs]
        theirs = [fp_compile(_reference_form(e, rtype), model=models["r4"]) for e in exprs]

        def run_ours(paths: list[Any] = ours, r: Any = resource) -> None:
            for p in paths:
                p.evaluate(r)

        def run_theirs(paths: list[Any] = theirs, r: Any = resource) -> None:
            for p in paths:
                p(r, {"resource": r})

        label = f"all {len(exprs)} {rtype} search parameters ({filename})"
        rows.append((label, _time_per_call(run_ours, budget), _time_per_call(run_theirs, budget)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=0.1, help="seconds per timing run")
    args = parser.parse_args()

    from fhirpathpy import compile as fp_compile
    from fhirpathpy.models import models

    from yilian.fhir.fhirpath import compile_path

    loaded = [(e, json.loads((EXAMPLES / f).read_text(encoding="utf-8"))) for e, f in CASES]
    # all of ours first, then all of fhirpathpy, so one engine's garbage does not slow the other
    ours_us = [_time_per_call(lambda p=compile_path(e), r=r: p.evaluate(r), args.budget) for e, r in loaded]
    theirs_us = [
        _time_per_call(lambda p=fp_compile(_reference_form(e), model=models["r4"]), r=r: p(r), args.budget)
        for e, r in loaded
    ]
    rows = [(e, o, t) for (e, _), o, t in zip(loaded, ours_us, theirs_us, strict=True)]
    rows.extend(_whole_writes(args.budget))

    width = min(70, max(len(e) for e, _, _ in rows))
    print(f"{'expression':{width}}  {'ours µs':>9}  {'fhirpathpy µs':>13}  {'ratio':>6}")
    for expression, ours, theirs in rows:
        shown = expression if len(expression) <= width else expression[: width - 1] + "…"
        print(f"{shown:{width}}  {ours:9.2f}  {theirs:13.1f}  {theirs / ours:5.0f}×")
    ratios = [t / o for _, o, t in rows]
    print(f"{'median ratio':{width}}  {'':9}  {'':13}  {statistics.median(ratios):5.0f}×")
    print(f"(python {sys.version.split()[0]}; for fhirpathpy resolve() is replaced by a reference-text test)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
