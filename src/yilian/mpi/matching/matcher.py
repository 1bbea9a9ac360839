"""Scoring one pair: comparison vector → rules → weights → probability → grade, with the
field-by-field evidence a data steward needs to accept or reject the link."""

from __future__ import annotations

from dataclasses import dataclass

from yilian.mpi.matching.comparison import FIELDS, Comparison, compare
from yilian.mpi.matching.features import Features, prepare
from yilian.mpi.matching.model import Grade, MatchModel
from yilian.mpi.matching.record import PersonRecord
from yilian.mpi.matching.rules import apply_rules, capped


@dataclass(frozen=True, slots=True)
class FieldEvidence:
    field: str
    level: str | None  # None: missing on one side
    weight: float


@dataclass(frozen=True, slots=True)
class PairScore:
    weight: float  # match weight (log2 Bayes factor including the prior)
    probability: float
    grade: Grade
    rules: tuple[str, ...]  # rule codes that fired: "same-prc-id", "given-name-differs"…
    comparison: Comparison
    field_weights: tuple[float, ...]

    @property
    def evidence(self) -> tuple[FieldEvidence, ...]:
        """Field by field: the comparison level and the weight it contributed (built on
        demand: bulk runs score millions of pairs and show none of them)."""
        return tuple(
            FieldEvidence(name, self.comparison.level_name(i), round(w, 3))
            for i, ((name, _), w) in enumerate(zip(FIELDS, self.field_weights, strict=True))
        )


class Matcher:
    """A :class:`MatchModel` plus the rules: the one place that decides about a pair."""

    def __init__(self, model: MatchModel | None = None) -> None:
        self.model = model or MatchModel.default()

    @staticmethod
    def prepare(record: PersonRecord) -> Features:
        return prepare(record)

    def score(self, a: Features, b: Features) -> PairScore:
        # Compare in a fixed order so that score(a, b) == score(b, a) exactly: bulk results
        # must not depend on which record came first in the file.
        if b.record_id < a.record_id:
            a, b = b, a
        return self.score_compared(a, b, compare(a, b))

    def score_compared(self, a: Features, b: Features, comparison: Comparison) -> PairScore:
        """Score a pair already compared (``a`` the record with the smaller id)."""
        weights = self.model.field_weights(comparison)
        total = sum(weights)
        probability = self.model.probability(total)
        outcome = apply_rules(a, b, comparison)
        if outcome.force is not None:
            grade: Grade = outcome.force
            probability = max(probability, self.model.thresholds.certain)
        else:
            grade = capped(self.model.thresholds.grade(probability), outcome.cap)
        return PairScore(
            weight=self.model.prior_weight + total,
            probability=probability,
            grade=grade,
            rules=outcome.notes,
            comparison=comparison,
            field_weights=weights,
        )

    def compare_records(self, a: PersonRecord, b: PersonRecord) -> PairScore:
        return self.score(prepare(a), prepare(b))
