"""The Fellegi–Sunter model: per field and level, how likely that agreement is between two
records of one person (``m``) and between two records of different persons (``u``).

A pair's match weight is ``log2(prior odds) + Σ log2(m/u)`` over its comparison vector, with
surnames and given names weighted by how common the agreed value is (agreeing on 王 says
less than agreeing on 欧阳). The weight maps to a match probability, and configurable
probability thresholds map that to a grade. The model is plain data and serialises to JSON,
so the platform stores it and ``yilian mpi train`` replaces it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from yilian.kernel.errors import Category, YilianError
from yilian.mpi.matching import reference
from yilian.mpi.matching.comparison import FAMILY, FIELDS, GIVEN, MISSING, Comparison

Grade = Literal["certain", "probable", "possible", "certainly-not"]
GRADES: tuple[Grade, ...] = ("certain", "probable", "possible", "certainly-not")
FORMAT = "yilian-mpi-model"
# Version 2 added the postcode's "slip" level (one digit wrong or two swapped). Version 1
# documents, stored by `yilian mpi train` before it, are read by `_upgrade_v1`.
VERSION = 2

# Levels whose weight is adjusted by the frequency of the agreed value.
TF_LEVELS: Mapping[str, frozenset[str]] = {
    "family_name": frozenset({"exact", "pinyin", "romanisation"}),
    "given_name": frozenset({"exact", "pinyin"}),
}
# A name shared by one record in ten thousand is already rare; rarer ones are not allowed to
# add more weight, since a unique-looking name is often a typo of a common one.
TF_FLOOR = 1e-4
_MIN_PROB = 1e-9


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Match-probability cut-offs of the grades (``certain`` links automatically, ``probable``
    goes to a data steward, ``possible`` is shown as a candidate, below is ``certainly-not``)."""

    certain: float = 0.99
    probable: float = 0.9
    possible: float = 0.5

    def grade(self, probability: float) -> Grade:
        if probability >= self.certain:
            return "certain"
        if probability >= self.probable:
            return "probable"
        if probability >= self.possible:
            return "possible"
        return "certainly-not"


_DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True, slots=True)
class FieldModel:
    name: str
    levels: tuple[str, ...]
    m: tuple[float, ...]
    u: tuple[float, ...]

    def weight(self, level: int) -> float:
        if level == MISSING:
            return 0.0
        return math.log2(max(self.m[level], _MIN_PROB) / max(self.u[level], _MIN_PROB))


@dataclass(frozen=True, slots=True)
class TermFrequencies:
    """Relative frequency of each value of one name field in the population."""

    values: Mapping[str, float]
    unseen: float  # frequency assumed for a value not in ``values``


@dataclass(frozen=True)
class MatchModel:
    fields: tuple[FieldModel, ...]
    prior: float  # probability that two records drawn at random are of one person
    thresholds: Thresholds = Thresholds()
    term_frequencies: Mapping[str, TermFrequencies] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    _weights: tuple[tuple[float, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(f.name for f in self.fields)
        if names != tuple(n for n, _ in FIELDS):
            raise YilianError(Category.INVALID, f"model fields {names} do not match the comparison fields")
        if not 0.0 < self.prior < 1.0:
            raise YilianError(Category.INVALID, "model prior must be between 0 and 1")
        # Level weights are looked up for every candidate pair; compute them once.
        object.__setattr__(
            self, "_weights", tuple(tuple(f.weight(i) for i in range(len(f.levels))) for f in self.fields)
        )

    # ------------------------------------------------------------------ scoring

    @property
    def prior_weight(self) -> float:
        return math.log2(self.prior / (1.0 - self.prior))

    def _frequency(self, field_name: str, value: str) -> float | None:
        tf = self.term_frequencies.get(field_name)
        if tf is not None:
            freq = tf.values.get(value)
            if freq is not None:
                return freq
        if field_name == "family_name":
            ppm = reference.surname_pinyin_ppm().get(value)
            if ppm is not None:
                return ppm / 1e6
        return tf.unseen if tf is not None else None

    def _tf_adjustment(self, index: int, level: int, value: str) -> float:
        fm = self.fields[index]
        if not value or fm.levels[level] not in TF_LEVELS.get(fm.name, ()):
            return 0.0
        freq = self._frequency(fm.name, value)
        if freq is None:
            return 0.0
        # Splink's form: the level's weight is shifted by how much rarer (or commoner) this
        # value is than an average agreeing value (the exact level's u).
        return math.log2(max(fm.u[0], _MIN_PROB) / max(freq, TF_FLOOR))

    def tf_adjustment(self, index: int, level: int, value: str) -> float:
        """What agreeing on ``value`` at ``level`` of field ``index`` adds to the level's
        weight (0 for levels without term-frequency adjustment)."""
        return self._tf_adjustment(index, level, value)

    def field_weights(self, comparison: Comparison) -> tuple[float, ...]:
        out = []
        for i, level in enumerate(comparison.levels):
            if level == MISSING:
                out.append(0.0)
                continue
            w = self._weights[i][level]
            if i == FAMILY:
                w += self._tf_adjustment(i, level, comparison.family_value)
            elif i == GIVEN:
                w += self._tf_adjustment(i, level, comparison.given_value)
            out.append(w)
        return tuple(out)

    def probability(self, weight: float) -> float:
        """Match probability of a pair whose summed field weights are ``weight``."""
        total = self.prior_weight + weight
        if total > 60:
            return 1.0
        if total < -60:
            return 0.0
        return 1.0 / (1.0 + math.pow(2.0, -total))

    def with_thresholds(self, thresholds: Thresholds) -> MatchModel:
        return replace(self, thresholds=thresholds)

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "prior": self.prior,
            "thresholds": {
                "certain": self.thresholds.certain,
                "probable": self.thresholds.probable,
                "possible": self.thresholds.possible,
            },
            "fields": [
                {
                    "name": f.name,
                    "levels": [
                        {"level": lvl, "m": f.m[i], "u": f.u[i], "tf": lvl in TF_LEVELS.get(f.name, ())}
                        for i, lvl in enumerate(f.levels)
                    ],
                }
                for f in self.fields
            ],
            "term_frequencies": {
                name: {"unseen": tf.unseen, "values": dict(sorted(tf.values.items()))}
                for name, tf in sorted(self.term_frequencies.items())
            },
            "training": dict(self.training),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=1, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MatchModel:
        if not isinstance(data, Mapping):
            raise YilianError(Category.INVALID, f"not a {FORMAT} document: expected a JSON object")
        if data.get("format") == FORMAT and data.get("version") == 1:
            try:
                data = _upgrade_v1(data)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise YilianError(Category.INVALID, f"malformed version 1 model document: {exc!r}") from None
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise YilianError(Category.INVALID, f"not a {FORMAT} version {VERSION} document")
        try:
            fields = tuple(
                FieldModel(
                    name=str(f["name"]),
                    levels=tuple(str(lv["level"]) for lv in f["levels"]),
                    m=tuple(float(lv["m"]) for lv in f["levels"]),
                    u=tuple(float(lv["u"]) for lv in f["levels"]),
                )
                for f in data["fields"]
            )
            for fm, (name, levels) in zip(fields, FIELDS, strict=True):
                if fm.levels != levels:
                    raise YilianError(Category.INVALID, f"field {name}: levels {fm.levels} are not {levels}")
            th = data.get("thresholds", {})
            tfs = {
                str(name): TermFrequencies(
                    {str(k): float(v) for k, v in tf["values"].items()}, float(tf["unseen"])
                )
                for name, tf in data.get("term_frequencies", {}).items()
            }
            return cls(
                fields=fields,
                prior=float(data["prior"]),
                thresholds=Thresholds(
                    certain=float(th.get("certain", _DEFAULT_THRESHOLDS.certain)),
                    probable=float(th.get("probable", _DEFAULT_THRESHOLDS.probable)),
                    possible=float(th.get("possible", _DEFAULT_THRESHOLDS.possible)),
                ),
                term_frequencies=tfs,
                training=dict(data.get("training", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise YilianError(Category.INVALID, f"malformed model document: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> MatchModel:
        return cls.from_dict(json.loads(text))

    @classmethod
    def default(cls) -> MatchModel:
        """Hand-set parameters for an index that has not been trained yet.

        Conservative by design: an untrained platform should send more pairs to review, not
        merge more. ``yilian mpi train`` replaces them with weights learned from the data.
        """
        m_u: dict[str, tuple[tuple[float, float], ...]] = {
            "family_name": ((0.90, 0.02), (0.04, 0.002), (0.02, 0.001), (0.02, 0.005), (0.02, 0.97)),
            "given_name": (
                (0.80, 0.002),
                (0.08, 0.0005),
                (0.03, 0.0005),
                (0.05, 0.003),
                (0.02, 0.05),
                (0.02, 0.94),
            ),
            "birth_date": ((0.93, 0.0001), (0.01, 0.00001), (0.03, 0.0002), (0.01, 0.011), (0.02, 0.9887)),
            "sex": ((0.98, 0.5), (0.02, 0.5)),
            "prc_id": ((0.95, 0.000001), (0.03, 0.000001), (0.02, 0.999998)),
            "phone": ((0.75, 0.0001), (0.03, 0.00001), (0.22, 0.99989)),
            "address": ((0.55, 0.001), (0.2, 0.002), (0.25, 0.997)),
            "postcode": ((0.8, 0.02), (0.04, 0.004), (0.16, 0.976)),
            "identifier": ((0.9, 0.00001), (0.04, 0.00001), (0.06, 0.99998)),
        }
        fields = tuple(
            FieldModel(name, levels, tuple(m for m, _ in m_u[name]), tuple(u for _, u in m_u[name]))
            for name, levels in FIELDS
        )
        return cls(fields=fields, prior=1e-6, training={"source": "default"})


def _upgrade_v1(data: Mapping[str, Any]) -> dict[str, Any]:
    """A version-1 model as version 2, matching exactly as it did.

    Version 1 had no postcode ``slip`` level: a slipped postcode was ``different``. The new
    level takes a hundredth of ``different``'s m and u, so its weight (log m/u) is the same as
    ``different``'s and every pair scores as before, until ``yilian mpi train`` learns it.
    """
    fields: list[Any] = []
    for f in data.get("fields", []):
        levels = f.get("levels") if isinstance(f, dict) else None
        if isinstance(f, dict) and f.get("name") == "postcode" and isinstance(levels, list):
            names = [lv.get("level") if isinstance(lv, dict) else None for lv in levels]
            if names == ["exact", "different"]:
                exact, different = levels
                m, u = float(different["m"]), float(different["u"])
                f = {
                    **f,
                    "levels": [
                        exact,
                        {**different, "level": "slip", "m": m / 100, "u": u / 100},
                        {**different, "m": m * 99 / 100, "u": u * 99 / 100},
                    ],
                }
        fields.append(f)
    return {**data, "version": VERSION, "fields": fields}
