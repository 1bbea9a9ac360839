"""Blocking: which pairs are worth scoring at all.

Each rule turns a record into zero or more keys; two records are candidates when they share
a key under any rule. The rules are chosen so that every kind of registration error still
leaves at least one shared key: a mistyped ID number still shares the phone and the name +
birth date; a day/month swap still shares the name + birth year; a romanised name still
shares the pinyin surname (romanisation resolved) + birth date; a new address and phone still
share the ID number.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from yilian.mpi.matching.features import Features

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``, called now and then during long runs (a progress bar)."""

# A key shared by more records than this (a placeholder phone such as 13800000000, a
# default birth date of 1900-01-01) says nothing; pairing all of them would cost quadratic
# time for no recall.
MAX_BLOCK = 500


def _family_keys(f: Features) -> tuple[str, ...]:
    n = f.name
    if not n.family:
        return ()
    # An ambiguous spelling ("chang" is pinyin 常 and Wade–Giles 张) keys under both.
    if n.family_alt and n.family_alt != n.family:
        return (n.family, n.family_alt)
    return (n.family,)


def _sorted_name(f: Features) -> tuple[str, ...]:
    n = f.name
    if not n.family or not n.given:
        return ()
    # Order-free, so "Wei Zhang" and "Zhang Wei" share it whichever way they were split.
    return tuple(f"{min(fam, n.given)}|{max(fam, n.given)}" for fam in _family_keys(f))


def _prc_id(f: Features) -> tuple[str, ...]:
    return (f.prc_id,) if len(f.prc_id) >= 15 else ()


def _phone(f: Features) -> tuple[str, ...]:
    return (f.phone,) if f.phone else ()


def _identifiers(f: Features) -> tuple[str, ...]:
    return tuple(f"{s}|{v}" for s, v in f.identifiers)


def _family_birth(f: Features) -> tuple[str, ...]:
    return tuple(f"{k}|{f.birth}" for k in _family_keys(f)) if f.birth else ()


def _given_birth(f: Features) -> tuple[str, ...]:
    return (f"{f.name.given}|{f.birth}",) if f.birth and f.name.given else ()


def _name_year(f: Features) -> tuple[str, ...]:
    return tuple(f"{k}|{f.year}" for k in _sorted_name(f)) if f.year else ()


def _name_postcode(f: Features) -> tuple[str, ...]:
    return tuple(f"{k}|{f.postcode}" for k in _sorted_name(f)) if f.postcode else ()


def _family_postcode(f: Features) -> tuple[str, ...]:
    return tuple(f"{k}|{f.postcode}" for k in _family_keys(f)) if f.postcode else ()


def _sound_birth(f: Features) -> tuple[str, ...]:
    sound = f.name.family_sound
    return (f"{sound}|{f.birth}",) if sound and f.birth and sound not in _family_keys(f) else ()


def _birth_postcode(f: Features) -> tuple[str, ...]:
    return (f"{f.birth}|{f.postcode}",) if f.birth and f.postcode else ()


@dataclass(frozen=True, slots=True)
class BlockingRule:
    name: str
    keys: Callable[[Features], tuple[str, ...]]


RULES: tuple[BlockingRule, ...] = (
    BlockingRule("prc_id", _prc_id),
    BlockingRule("phone", _phone),
    BlockingRule("identifier", _identifiers),
    BlockingRule("family_birth_date", _family_birth),
    BlockingRule("given_birth_date", _given_birth),
    BlockingRule("name_birth_year", _name_year),
    BlockingRule("name_postcode", _name_postcode),
    # Large in a Chinese city (王 in one postcode) and then skipped by MAX_BLOCK; it pays off
    # for rare surnames and for lists whose dates and numbers are both corrupted.
    BlockingRule("family_postcode", _family_postcode),
    # A misspelt surname (Smyth, Hsieh for 谢) still sounds alike.
    BlockingRule("family_sound_birth_date", _sound_birth),
    # Both names corrupted: a birth date in one postal district is still rare.
    BlockingRule("birth_date_postcode", _birth_postcode),
)


def record_keys(f: Features) -> Iterable[tuple[int, str]]:
    """(rule index, key) for every key of a record."""
    for i, rule in enumerate(RULES):
        for key in rule.keys(f):
            yield i, key


def _groups(features: Sequence[Features]) -> dict[tuple[int, str], list[int]]:
    groups: dict[tuple[int, str], list[int]] = {}
    rules = [(i, rule.keys) for i, rule in enumerate(RULES)]
    for row, f in enumerate(features):
        for i, keys in rules:
            for key in keys(f):
                rows = groups.get((i, key))
                if rows is None:
                    groups[(i, key)] = [row]
                else:
                    rows.append(row)
    return groups


def _unique(codes: array[int], n: int) -> npt.NDArray[np.int64]:
    arr = np.unique(np.frombuffer(codes, dtype=np.int64)) if codes else np.zeros(0, dtype=np.int64)
    return np.stack([arr // n, arr % n], axis=1) if len(arr) else np.zeros((0, 2), dtype=np.int64)


def _block_pairs(blocks: Sequence[list[int]], n: int) -> npt.NDArray[np.int64]:
    """Codes ``i * n + j`` of every pair within each block (rows sorted and distinct),
    computed per block size with one numpy index pass for all blocks of that size."""
    by_size: dict[int, list[list[int]]] = {}
    for rows in blocks:
        by_size.setdefault(len(rows), []).append(rows)
    parts = []
    for size, group in by_size.items():
        matrix = np.asarray(group, dtype=np.int64)
        first, second = np.triu_indices(size, 1)
        parts.append((matrix[:, first] * n + matrix[:, second]).ravel())
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def candidate_pairs(
    features: Sequence[Features], *, max_block: int = MAX_BLOCK, progress: Progress | None = None
) -> npt.NDArray[np.int64]:
    """All blocked pairs (i < j) within one list, as a sorted ``(k, 2)`` array of row numbers."""
    n = max(len(features), 1)
    groups = _groups(features)
    total = len(groups)
    blocks = []
    for done, rows in enumerate(groups.values(), 1):
        if 2 <= len(rows) <= max_block:
            # Rows arrive in order; a record can repeat a key (two spellings, one key).
            distinct = rows if len(set(rows)) == len(rows) else sorted(set(rows))
            if len(distinct) >= 2:
                blocks.append(distinct)
        if progress is not None and done % 50_000 == 0:
            progress("blocking", done, total)
    codes = _block_pairs(blocks, n)
    codes.sort()  # then drop repeats (a pair shares several keys): cheaper than np.unique's hashing
    codes = codes[np.concatenate(([True], codes[1:] != codes[:-1]))] if len(codes) else codes
    return np.stack([codes // n, codes % n], axis=1) if len(codes) else np.zeros((0, 2), dtype=np.int64)


def candidate_links(
    left: Sequence[Features], right: Sequence[Features], *, max_block: int = MAX_BLOCK
) -> npt.NDArray[np.int64]:
    """All blocked (left row, right row) pairs between two lists, sorted."""
    n = max(len(right), 1)
    left_groups = _groups(left)
    right_groups = _groups(right)
    codes: array[int] = array("q")
    for key, lrows in left_groups.items():
        rrows = right_groups.get(key)
        if rrows is None or len(lrows) * len(rrows) > max_block * max_block // 4:
            continue
        codes.extend(i * n + j for i in set(lrows) for j in set(rrows))
    return _unique(codes, n)
