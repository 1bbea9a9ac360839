"""The real-time index: every known record in memory, found by blocking keys, scored on
registration.

Layout, chosen for a million persons in well under 2 GB and a few milliseconds per match:

- one :class:`Features` object per record (shared strings for names and postcodes);
- blocking keys as 64-bit hashes in one sorted array (``searchsorted`` finds a key's rows),
  plus a small dict for records added since the array was last rebuilt; the array is rebuilt
  when that dict grows past a fraction of it, so adding stays cheap and lookups stay fast;
- removal leaves a tombstone (the row's features become ``None``) that lookups skip and the
  next rebuild drops.

Keys are Python ``hash`` values: stable within the process that builds the index, which is
the only place they live. A collision only adds a candidate, which the scoring then rejects.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from yilian.kernel.errors import Category, YilianError
from yilian.mpi.matching.blocking import record_keys
from yilian.mpi.matching.features import Features, prepare
from yilian.mpi.matching.matcher import FieldEvidence, Matcher
from yilian.mpi.matching.model import GRADES, Grade
from yilian.mpi.matching.record import PersonRecord

_REBUILD_SHARE = 0.05
# Registration waits for the answer: a block of more than this many records (a common
# surname in one postcode) is skipped in real time. Such blocks only add candidates that a
# tighter key (name + birth date, ID number, phone) already brings when they are the person;
# bulk runs, which are not waited on, keep the larger cap.
REALTIME_MAX_BLOCK = 200
_REBUILD_MIN = 50_000


@dataclass(frozen=True, slots=True)
class Candidate:
    """A person the new record may be, with the evidence of the best-matching record."""

    person_id: str
    record_id: str
    probability: float
    weight: float
    grade: Grade
    evidence: tuple[FieldEvidence, ...]
    rules: tuple[str, ...]

    @property
    def score(self) -> float:
        return self.probability


def _hashes(f: Features) -> list[int]:
    return [hash(rk) for rk in record_keys(f)]


class MatchIndex:
    def __init__(self, matcher: Matcher | None = None, *, max_block: int = REALTIME_MAX_BLOCK) -> None:
        self.matcher = matcher or Matcher()
        self.max_block = max_block
        self._features: list[Features | None] = []
        self._person: list[str] = []
        self._row_of: dict[str, int] = {}
        self._persons: dict[str, int] = {}  # person id → number of live records
        self._keys: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._rows: npt.NDArray[np.int32] = np.zeros(0, dtype=np.int32)
        self._delta: dict[int, list[int]] = {}
        self._delta_size = 0

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        items: Iterable[tuple[str, PersonRecord]],
        matcher: Matcher | None = None,
        *,
        max_block: int = REALTIME_MAX_BLOCK,
    ) -> MatchIndex:
        """An index over ``(person id, record)`` pairs, built in one pass (faster than ``add``)."""
        index = cls(matcher, max_block=max_block)
        keys: list[int] = []
        rows: list[int] = []
        # Millions of long-lived objects and no cycles among them: the cyclic collector would
        # rescan the growing heap again and again while it brings nothing back.
        collecting = gc.isenabled()
        gc.disable()
        try:
            for person_id, record in items:
                row = index._append(person_id, prepare(record))
                for h in _hashes(index._live(row)):
                    keys.append(h)
                    rows.append(row)
        finally:
            if collecting:
                gc.enable()
        index._set_base(np.asarray(keys, dtype=np.int64), np.asarray(rows, dtype=np.int32))
        return index

    def _live(self, row: int) -> Features:
        f = self._features[row]
        assert f is not None
        return f

    def _append(self, person_id: str, f: Features) -> int:
        if f.record_id in self._row_of:
            raise YilianError(Category.CONFLICT, f"record {f.record_id!r} is already in the index")
        row = len(self._features)
        self._features.append(f)
        self._person.append(person_id)
        self._row_of[f.record_id] = row
        self._persons[person_id] = self._persons.get(person_id, 0) + 1
        return row

    def _set_base(self, keys: npt.NDArray[np.int64], rows: npt.NDArray[np.int32]) -> None:
        order = np.lexsort((rows, keys))
        self._keys = keys[order]
        self._rows = rows[order]

    def _rebuild(self) -> None:
        extra_keys = [h for h, rows in self._delta.items() for _ in rows]
        extra_rows = [r for rows in self._delta.values() for r in rows]
        keys = np.concatenate([self._keys, np.asarray(extra_keys, dtype=np.int64)])
        rows = np.concatenate([self._rows, np.asarray(extra_rows, dtype=np.int32)])
        alive = np.fromiter((self._features[r] is not None for r in rows), dtype=bool, count=len(rows))
        self._set_base(keys[alive], rows[alive])
        self._delta = {}
        self._delta_size = 0

    # ------------------------------------------------------------------ changes

    def add(self, person_id: str, record: PersonRecord) -> None:
        """Index one more record of ``person_id`` (a person may have a record per institution)."""
        row = self._append(person_id, prepare(record))
        for h in _hashes(self._live(row)):
            self._delta.setdefault(h, []).append(row)
            self._delta_size += 1
        if self._delta_size > max(_REBUILD_MIN, int(len(self._keys) * _REBUILD_SHARE)):
            self._rebuild()

    def remove(self, record_id: str) -> None:
        row = self._row_of.pop(record_id, None)
        if row is None:
            raise YilianError(Category.NOT_FOUND, f"record {record_id!r} is not in the index")
        self._features[row] = None
        person_id = self._person[row]
        left = self._persons[person_id] - 1
        if left:
            self._persons[person_id] = left
        else:
            del self._persons[person_id]

    def update(self, person_id: str, record: PersonRecord) -> None:
        """Replace the indexed record with the same record id (its data or its person changed)."""
        if record.record_id in self._row_of:
            self.remove(record.record_id)
        self.add(person_id, record)

    def remove_person(self, person_id: str) -> None:
        for record_id in [
            f.record_id for f, p in zip(self._features, self._person, strict=True) if f and p == person_id
        ]:
            self.remove(record_id)

    # ------------------------------------------------------------------ queries

    def __len__(self) -> int:
        return len(self._row_of)

    @property
    def person_count(self) -> int:
        return len(self._persons)

    def person_of(self, record_id: str) -> str | None:
        row = self._row_of.get(record_id)
        return None if row is None else self._person[row]

    def features(self) -> Iterator[Features]:
        """Every live record, prepared (what ``train`` learns from)."""
        return (f for f in self._features if f is not None)

    def _candidate_rows(self, f: Features) -> set[int]:
        hashes = np.asarray(_hashes(f), dtype=np.int64)
        out: set[int] = set()
        if len(hashes) and len(self._keys):
            lo = np.searchsorted(self._keys, hashes, side="left")
            hi = np.searchsorted(self._keys, hashes, side="right")
            for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
                if 0 < b - a <= self.max_block:
                    out.update(self._rows[a:b].tolist())
        for h in hashes.tolist():
            rows = self._delta.get(h)
            if rows and len(rows) <= self.max_block:
                out.update(rows)
        return out

    def match(
        self, record: PersonRecord, *, limit: int = 10, min_grade: Grade = "possible"
    ) -> list[Candidate]:
        """The persons ``record`` may be, best first, graded ``min_grade`` or better.

        A record already in the index is not matched against itself.
        """
        f = prepare(record)
        worst = GRADES.index(min_grade)
        best: dict[str, Candidate] = {}
        for row in self._candidate_rows(f):
            other = self._features[row]
            if other is None or other.record_id == f.record_id:
                continue
            s = self.matcher.score(f, other)
            if GRADES.index(s.grade) > worst:
                continue
            person_id = self._person[row]
            current = best.get(person_id)
            if current is None or (s.probability, s.weight) > (current.probability, current.weight):
                best[person_id] = Candidate(
                    person_id, other.record_id, s.probability, s.weight, s.grade, s.evidence, s.rules
                )
        ranked = sorted(
            best.values(), key=lambda c: (GRADES.index(c.grade), -c.probability, -c.weight, c.person_id)
        )
        return ranked[:limit]
