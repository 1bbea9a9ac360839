"""Match quality of the MPI matcher against Splink (DuckDB) and recordlinkage, same data, same run.

    .venv/bin/python -m bench.bench_mpi_quality [--persons 5000]

Data: FEBRL dataset1 and dataset2 (``../shared/data/record-linkage/febrl``), de-duplicated and
linked (originals ⇄ duplicates), and the generated Chinese population
(``tests/support/chinese_people.py``). All three systems learn their weights unsupervised from
the same records (EM); none sees the labels. Splink and recordlinkage get the same columns;
for the Chinese set Splink runs twice: on the names as registered (split naively, as a user
would), and on our pinyin normalisation (to separate the normaliser from the model).

F1 is pairwise on the output clusters (dedupe) or links (link). Each system is scored at its
auto-link threshold (ours: ``certain``; baselines: match probability 0.99) and, for the
baselines, also at the best threshold in hindsight (an oracle choice they would not have).
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import pandas as pd  # type: ignore[import-untyped]

from tests.support import chinese_people
from tests.support.paths import SHARED
from yilian.mpi.matching import bulk
from yilian.mpi.matching.column_map import load_column_map, shipped_map
from yilian.mpi.matching.names import hanzi_only, has_hanzi, latin_tokens, normalise_name
from yilian.mpi.matching.record import PersonRecord

FEBRL = SHARED / "record-linkage" / "febrl"
THRESHOLDS = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999)
Pairs = set[tuple[str, str]]


@dataclass(frozen=True)
class Task:
    name: str
    records: list[PersonRecord]  # dedupe: all; link: left + right
    right_ids: frozenset[str]  # empty for dedupe
    truth: Pairs
    kind: str  # "dedupe" | "link"


def _pairs_from_groups(groups: Iterable[Sequence[str]]) -> Pairs:
    out: Pairs = set()
    for g in groups:
        out.update((a, b) if a < b else (b, a) for a, b in combinations(g, 2))
    return out


def _truth_from(entity: dict[str, Any], right: frozenset[str] = frozenset()) -> Pairs:
    groups: dict[Any, list[str]] = {}
    for rid, e in entity.items():
        groups.setdefault(e, []).append(rid)
    pairs = _pairs_from_groups(groups.values())
    if right:
        pairs = {(a, b) for a, b in pairs if (a in right) != (b in right)}
    return pairs


def febrl_tasks() -> list[Task]:
    cmap = load_column_map(shipped_map("febrl"))
    tasks = []
    for ds in ("dataset1", "dataset2"):
        recs = cmap.read_csv(FEBRL / f"{ds}.csv")
        entity = {r.record_id: r.record_id.split("-")[1] for r in recs}
        tasks.append(Task(f"FEBRL {ds[-1]} dedupe", recs, frozenset(), _truth_from(entity), "dedupe"))
        right = frozenset(r.record_id for r in recs if "-dup-" in r.record_id)
        tasks.append(Task(f"FEBRL {ds[-1]} link", recs, right, _truth_from(entity, right), "link"))
    return tasks


def chinese_task(persons: int) -> Task:
    pop = chinese_people.generate(persons)
    return Task(
        f"Chinese {len(pop.records)} dedupe",
        pop.person_records(),
        frozenset(),
        _truth_from(pop.truth()),
        "dedupe",
    )


def prf(pred: Pairs, truth: Pairs) -> tuple[float, float, float]:
    tp = len(pred & truth)
    p = tp / len(pred) if pred else 1.0
    r = tp / len(truth) if truth else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def components(edges: Iterable[tuple[str, str]], nodes: Iterable[str]) -> Pairs:
    parent = {n: n for n in nodes}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, list[str]] = {}
    for n in parent:
        groups.setdefault(find(n), []).append(n)
    return _pairs_from_groups(groups.values())


# --------------------------------------------------------------------------- ours


def run_ours(task: Task) -> tuple[Pairs, float]:
    t = time.perf_counter()
    if task.kind == "dedupe":
        result = bulk.dedupe(task.records)
        pred = _pairs_from_groups(result.cluster_members().values())
    else:
        left = [r for r in task.records if r.record_id not in task.right_ids]
        right = [r for r in task.records if r.record_id in task.right_ids]
        links = bulk.link(left, right, min_grade="certain")
        pred = {(a, b) if a < b else (b, a) for a, b in ((x.left_id, x.right_id) for x in links)}
    return pred, time.perf_counter() - t


# --------------------------------------------------------------------------- baselines' input


def _naive_split(r: PersonRecord) -> tuple[str, str]:
    """What a user feeding a generic linker would do: characters split after the first one,
    Latin text split at the first space. No pinyin, no romanisation tables."""
    if r.family_name or r.given_name:
        return (r.family_name or "").strip().lower(), (r.given_name or "").strip().lower()
    full = r.full_name or ""
    if has_hanzi(full):
        chars = hanzi_only(full)
        return chars[:1], chars[1:]
    tokens = latin_tokens(full)
    return (tokens[0] if tokens else ""), "".join(tokens[1:])


def frame(records: Sequence[PersonRecord], *, normalised: bool) -> pd.DataFrame:
    rows = []
    for r in records:
        if normalised:
            n = normalise_name(r.family_name, r.given_name, r.full_name)
            family, given = n.family_key, n.given
        else:
            family, given = _naive_split(r)
        other = r.identifiers[0].value if r.identifiers else None
        rows.append(
            {
                "unique_id": r.record_id,
                "first_name": given or None,
                "surname": family or None,
                "dob": r.birth_date.isoformat() if r.birth_date else None,
                "sex": r.sex,
                "id_number": (r.prc_id or other or None),
                "phone": r.phone or None,
                "address": " ".join(r.address_lines) or None,
                "city": r.city or None,
                "postcode": r.postcode or None,
            }
        )
    df = pd.DataFrame(rows)
    # Splink refuses all-null columns in comparisons; FEBRL has no sex or phone.
    # Typed as strings even when a column is all null (a one-record query frame), so that
    # DuckDB does not infer a numeric column and refuse the string comparisons.
    return df[[c for c in df.columns if c == "unique_id" or df[c].notna().any()]].astype("string")


# --------------------------------------------------------------------------- Splink


def splink_settings(df: pd.DataFrame, link_type: Any) -> Any:
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    comparisons: list[Any] = [
        cl.JaroWinklerAtThresholds("first_name", [0.92, 0.8]),
        cl.JaroWinklerAtThresholds("surname", [0.92, 0.8]),
        cl.DateOfBirthComparison("dob", input_is_string=True),
        cl.DamerauLevenshteinAtThresholds("id_number", [1, 2]),
        cl.JaroWinklerAtThresholds("address", [0.9, 0.8]),
        cl.ExactMatch("postcode"),
    ]
    if "sex" in df:
        comparisons.append(cl.ExactMatch("sex"))
    if "phone" in df:
        comparisons.append(cl.DamerauLevenshteinAtThresholds("phone", [1]))
    if "city" in df:
        comparisons.append(cl.JaroWinklerAtThresholds("city", [0.9]))
    blocking: list[Any] = [
        block_on("surname", "dob"),
        block_on("first_name", "dob"),
        block_on("first_name", "surname"),
        block_on("id_number"),
        block_on("postcode", "surname"),
    ]
    if "phone" in df:
        blocking.append(block_on("phone"))
    return SettingsCreator(
        link_type=link_type,
        comparisons=comparisons,
        blocking_rules_to_generate_predictions=blocking,
        retain_intermediate_calculation_columns=False,
    )


def splink_train(linker: Any) -> None:
    from splink import block_on

    linker.training.estimate_probability_two_random_records_match(
        [block_on("first_name", "surname", "dob"), block_on("id_number")], recall=0.7
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("surname", "dob"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("first_name", "postcode"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("id_number"))


def _quiet() -> None:
    logging.getLogger("splink").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def run_splink(task: Task, *, normalised: bool) -> tuple[dict[float, Pairs], float]:
    from splink import Linker
    from splink.backends.duckdb import DuckDBAPI

    _quiet()
    t = time.perf_counter()
    db = DuckDBAPI()
    if task.kind == "dedupe":
        df = frame(task.records, normalised=normalised)
        linker = Linker(db.register(df), splink_settings(df, "dedupe_only"), log_level=logging.ERROR)
    else:
        left = frame([r for r in task.records if r.record_id not in task.right_ids], normalised=normalised)
        right = frame([r for r in task.records if r.record_id in task.right_ids], normalised=normalised)
        cols = [c for c in left.columns if c in right.columns]
        left, right = left[cols], right[cols]
        linker = Linker(
            [db.register(left), db.register(right)],
            splink_settings(left, "link_only"),
            log_level=logging.ERROR,
        )
    splink_train(linker)
    predictions = linker.inference.predict(threshold_match_probability=min(THRESHOLDS))
    pred_df = predictions.as_pandas_dataframe()  # type: ignore[no-untyped-call]
    out: dict[float, Pairs] = {}
    for threshold in THRESHOLDS:
        if task.kind == "dedupe":
            clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
                predictions, threshold
            ).as_pandas_dataframe()  # type: ignore[no-untyped-call]
            groups: dict[Any, list[str]] = {}
            for uid, cid in zip(clusters["unique_id"], clusters["cluster_id"], strict=True):
                groups.setdefault(cid, []).append(str(uid))
            out[threshold] = _pairs_from_groups(groups.values())
        else:
            kept = pred_df[pred_df["match_probability"] >= threshold]
            out[threshold] = {
                (a, b) if a < b else (b, a)
                for a, b in zip(kept["unique_id_l"].astype(str), kept["unique_id_r"].astype(str), strict=True)
            }
    return out, time.perf_counter() - t


# --------------------------------------------------------------------------- recordlinkage


def run_recordlinkage(task: Task) -> tuple[dict[float, Pairs], float]:
    import recordlinkage as rl  # type: ignore[import-untyped]

    _quiet()
    t = time.perf_counter()
    if task.kind == "dedupe":
        left = frame(task.records, normalised=False).set_index("unique_id")
        right = left
    else:
        left = frame(
            [r for r in task.records if r.record_id not in task.right_ids], normalised=False
        ).set_index("unique_id")
        right = frame([r for r in task.records if r.record_id in task.right_ids], normalised=False).set_index(
            "unique_id"
        )
        cols = [c for c in left.columns if c in right.columns]
        left, right = left[cols], right[cols]
    indexer = rl.Index()
    for cols in (
        ["surname", "dob"],
        ["first_name", "dob"],
        ["first_name", "surname"],
        ["id_number"],
        ["postcode", "surname"],
    ):
        indexer.block(cols)
    if "phone" in left:
        indexer.block(["phone"])
    candidates = indexer.index(left) if task.kind == "dedupe" else indexer.index(left, right)
    compare = rl.Compare()
    compare.string("first_name", "first_name", method="jarowinkler", threshold=0.85, label="first_name")
    compare.string("surname", "surname", method="jarowinkler", threshold=0.85, label="surname")
    compare.exact("dob", "dob", label="dob")
    compare.exact("id_number", "id_number", label="id_number")
    compare.string("address", "address", method="jarowinkler", threshold=0.85, label="address")
    compare.exact("postcode", "postcode", label="postcode")
    if "phone" in left:
        compare.exact("phone", "phone", label="phone")
    if "sex" in left:
        compare.exact("sex", "sex", label="sex")
    features = (
        compare.compute(candidates, left)
        if task.kind == "dedupe"
        else compare.compute(candidates, left, right)
    )
    ecm = rl.ECMClassifier(binarize=0.5)
    ecm.fit(features)
    probability = ecm.prob(features)
    out: dict[float, Pairs] = {}
    for threshold in THRESHOLDS:
        kept = probability[probability >= threshold].index
        edges = [(str(a), str(b)) for a, b in kept]
        if task.kind == "dedupe":
            out[threshold] = components(edges, left.index.astype(str))
        else:
            out[threshold] = {(a, b) if a < b else (b, a) for a, b in edges}
    return out, time.perf_counter() - t


# --------------------------------------------------------------------------- report


def _row(system: str, task: Task, by_threshold: dict[float, Pairs], seconds: float) -> str:
    at = prf(by_threshold[0.99], task.truth)
    best_t, best = max(((t, prf(p, task.truth)) for t, p in by_threshold.items()), key=lambda x: x[1][2])
    return f"| {task.name} | {system} | {at[0]:.4f} | {at[1]:.4f} | **{at[2]:.4f}** | {best[2]:.4f} (p≥{best_t}) | {seconds:.1f} |"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=5000, help="persons in the Chinese set")
    parser.add_argument("--only", default="", help="run only tasks whose name contains this")
    args = parser.parse_args(argv)
    tasks = [*febrl_tasks(), chinese_task(args.persons)]
    print("| data | system | precision | recall | F1 at auto-link | best F1 (oracle threshold) | seconds |")
    print("|---|---|---|---|---|---|---|")
    ratios = []
    for task in tasks:
        if args.only and args.only not in task.name:
            continue
        ours, secs = run_ours(task)
        p, r, f = prf(ours, task.truth)
        print(f"| {task.name} | **yilian** | {p:.4f} | {r:.4f} | **{f:.4f}** | – | {secs:.1f} |", flush=True)
        runs: list[tuple[str, Callable[[], tuple[dict[float, Pairs], float]]]] = [
            ("Splink 5 (DuckDB)", lambda task=task: run_splink(task, normalised=False)),  # type: ignore[misc]
            ("recordlinkage (ECM)", lambda task=task: run_recordlinkage(task)),  # type: ignore[misc]
        ]
        if task.name.startswith("Chinese"):
            runs.insert(1, ("Splink 5 + yilian pinyin", lambda task=task: run_splink(task, normalised=True)))  # type: ignore[misc]
        for system, run in runs:
            try:
                by_t, s = run()
            except Exception as exc:  # a baseline failing must not hide the others' numbers
                print(
                    f"| {task.name} | {system} | failed: {type(exc).__name__}: {str(exc)[:80]} | | | | |",
                    flush=True,
                )
                continue
            print(_row(system, task, by_t, s), flush=True)
            ratios.append(
                (
                    task.name,
                    system,
                    f,
                    prf(by_t[0.99], task.truth)[2],
                    max(prf(x, task.truth)[2] for x in by_t.values()),
                )
            )
    print()
    print("| data | baseline | ours F1 − baseline F1 at p≥0.99 | ours − baseline's oracle best |")
    print("|---|---|---|---|")
    for name, system, f, at, best in ratios:
        print(f"| {name} | {system} | {f - at:+.4f} | {f - best:+.4f} |")


if __name__ == "__main__":
    main()
