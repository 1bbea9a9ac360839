"""Whole-batch arithmetic for the bulk runs: which blocked pairs can possibly be linked.

A bulk de-duplication of a Chinese city blocks millions of pairs, nearly all of them from the
surname + postcode key (the city has a few dozen postcodes, a few hundred common surnames);
almost every such pair is two different people. Comparing each one field by field in Python
costs ~35 µs, and scoring it as much again, only to grade it ``certainly-not``.

So the bulk runs first compute, with numpy over per-record integer codes, an *upper bound*
of each pair's match weight: fields whose level is cheap to know exactly (birth date, sex,
postcode, the ID number's exact/slip/different) count at their level's weight; the others
(names, phone, address, other identifiers) at the largest weight their possible levels
carry, term-frequency adjustment included. A pair whose bound cannot reach the ``possible``
threshold, and that no rule can force to ``certain`` (no shared ID number or identifier),
is ``certainly-not`` whatever its full comparison would say, and is never compared. What is
left is compared and scored exactly as before: the results are identical, only faster.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np
import numpy.typing as npt
from rapidfuzz import fuzz, process

from yilian.mpi.matching.addresses import ADDRESS_CLOSE
from yilian.mpi.matching.comparison import (
    _BY_FIELD,
    _FAMILY_VALUE_LEVELS,
    _GIVEN_VALUE_LEVELS,
    ADDRESS,
    BIRTH,
    FAMILY,
    FIELDS,
    GIVEN,
    IDENTIFIER,
    MISSING,
    PHONE,
    POSTCODE,
    PRC_ID,
    SEX,
    compare_names,
    identifier_level,
)
from yilian.mpi.matching.dates import date_level
from yilian.mpi.matching.features import Features
from yilian.mpi.matching.identifiers import number_level
from yilian.mpi.matching.model import TF_LEVELS, MatchModel

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Sums are compared with the threshold after a different order of additions than the exact
# scorer's; this margin (in bits) keeps every pair the exact scorer could pass.
_MARGIN = 1e-6
_CHUNK = 400_000  # pairs per numpy pass (bounds the temporary arrays to a few hundred MB)
_ID_WIDTH = 18  # characters of an ID number (or a phone) compared position by position
_POSTCODE_WIDTH = 10  # a postcode's (6 in China, 4 to 10 elsewhere)


def _level(field: int, name: str) -> int:
    return FIELDS[field][1].index(name)


def weight_cut(model: MatchModel) -> float:
    """The summed field weight at and above which a pair reaches the ``possible`` grade."""
    p = model.thresholds.possible
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return 60.0 - model.prior_weight  # MatchModel.probability says 1.0 only above 60 bits
    return math.log2(p / (1.0 - p)) - model.prior_weight


class _Codes:
    """Interning of hashable values to small integers (``-1`` for the empty value)."""

    def __init__(self) -> None:
        self.codes: dict[Hashable, int] = {}

    def __call__(self, value: Hashable) -> int:
        if not value:
            return -1
        return self.codes.setdefault(value, len(self.codes))


def _chars(values: Sequence[str], width: int = _ID_WIDTH) -> IntArray:
    """Code points of short strings, one row each, zero-padded (longer ones left all zero)."""
    out = np.zeros((len(values), width), dtype=np.int64)
    for row, value in enumerate(values):
        if 0 < len(value) <= width:
            out[row, : len(value)] = [ord(c) for c in value]
    return out


def _slip_mask(a: IntArray, b: IntArray) -> BoolArray:
    """Rows of equal-width code arrays that differ by one position, or by two neighbours
    swapped (optimal-string-alignment distance 1 between strings of equal length)."""
    neq = a != b
    count = neq.sum(axis=1)
    swap = np.zeros(len(a), dtype=np.bool_)
    for p in range(a.shape[1] - 1):
        swap |= neq[:, p] & neq[:, p + 1] & (a[:, p] == b[:, p + 1]) & (a[:, p + 1] == b[:, p])
    out: BoolArray = (count == 1) | ((count == 2) & swap)
    return out


class BatchColumns:
    """Per-record codes of a batch (``features`` sorted by record id, as the bulk runs keep
    them) and per-record weight bounds under one model."""

    def __init__(self, features: Sequence[Features], model: MatchModel | None = None) -> None:
        self.features = features
        self.names = [f.name for f in features]
        n = len(features)
        latin, hanzi, joined, text = _Codes(), _Codes(), _Codes(), _Codes()
        self.family = np.fromiter((latin(f.name.family) for f in features), np.int64, n)
        self.given = np.fromiter((latin(f.name.given) for f in features), np.int64, n)
        self.family_hanzi = np.fromiter((hanzi(f.name.family_hanzi) for f in features), np.int64, n)
        self.given_hanzi = np.fromiter((hanzi(f.name.given_hanzi) for f in features), np.int64, n)
        self.family_given = np.fromiter(
            (
                joined(f.name.family + f.name.given) if f.name.family and f.name.given else -1
                for f in features
            ),
            np.int64,
            n,
        )
        self.given_family = np.fromiter(
            (
                joined(f.name.given + f.name.family) if f.name.family and f.name.given else -1
                for f in features
            ),
            np.int64,
            n,
        )
        self.birth = np.fromiter((f.birth for f in features), np.int64, n)
        self.birth_year = np.fromiter((f.birth_year for f in features), np.int64, n)
        self.sex = np.fromiter((f.sex for f in features), np.int64, n)
        self.prc = np.fromiter((text(("prc", f.prc_id)) if f.prc_id else -1 for f in features), np.int64, n)
        self.prc_len = np.fromiter((len(f.prc_id) for f in features), np.int64, n)
        self.prc_chars = _chars([f.prc_id for f in features])
        self.phone = np.fromiter((text(("phone", f.phone)) if f.phone else -1 for f in features), np.int64, n)
        self.phone_len = np.fromiter((len(f.phone) for f in features), np.int64, n)
        self.phone_chars = _chars([f.phone for f in features])
        self.address = np.fromiter(
            (text(("address", f.address)) if f.address else -1 for f in features), np.int64, n
        )
        self.postcode = np.fromiter(
            (text(("postcode", f.postcode)) if f.postcode else -1 for f in features), np.int64, n
        )
        self.postcode_len = np.fromiter((len(f.postcode) for f in features), np.int64, n)
        self.postcode_chars = _chars([f.postcode for f in features], _POSTCODE_WIDTH)
        # -1 none; -2 several (compared exactly, never pruned); else the one (system, value).
        self.identifier = np.fromiter(
            (
                -1 if not f.identifiers else -2 if len(f.identifiers) > 1 else text(("id", f.identifiers[0]))
                for f in features
            ),
            np.int64,
            n,
        )
        if model is not None:
            self.use_model(model)

    def use_model(self, model: MatchModel) -> None:
        """Per-record weight bounds of the names under ``model`` (for :meth:`bounds`)."""
        features = self.features
        n = len(features)
        self.model = model
        w = [
            [model.fields[i].weight(level) for level in range(len(levels))]
            for i, (_, levels) in enumerate(FIELDS)
        ]
        self.w = w
        fam_tf = [model.fields[FAMILY].levels.index(x) for x in TF_LEVELS["family_name"]]
        giv_tf = [model.fields[GIVEN].levels.index(x) for x in TF_LEVELS["given_name"]]
        fam_other = [w[FAMILY][x] for x in range(len(w[FAMILY])) if x not in fam_tf]
        giv_other = [w[GIVEN][x] for x in range(len(w[GIVEN])) if x not in giv_tf]
        fam_cache: dict[str, float] = {}
        giv_cache: dict[str, float] = {}

        def family_bound(f: Features) -> float:
            key = f.name.family_key
            if key not in fam_cache:
                best = max(w[FAMILY][x] + model.tf_adjustment(FAMILY, x, key) for x in fam_tf)
                fam_cache[key] = max(0.0, best, *fam_other)
            return fam_cache[key]

        def given_strong(f: Features) -> float:
            key = f.name.given
            if key not in giv_cache:
                giv_cache[key] = max(0.0, *(w[GIVEN][x] + model.tf_adjustment(GIVEN, x, key) for x in giv_tf))
            return giv_cache[key]

        # Bounds depend on the record with the smaller id (whose values the term-frequency
        # adjustment uses), i.e. the first of each (i < j) pair.
        self.family_bound = np.fromiter((family_bound(f) for f in features), np.float64, n)
        self.given_strong_bound = np.fromiter((given_strong(f) for f in features), np.float64, n)
        self.given_weak_bound = max(0.0, *giv_other)

    def _max(self, field: int, levels: Sequence[str]) -> float:
        return max(self.w[field][_level(field, x)] for x in levels)

    def bounds(self, pairs: IntArray) -> tuple[FloatArray, BoolArray]:
        """Upper bound of the summed field weights of each (i, j) pair (i < j, rows of the
        sorted batch), and whether a rule might force the pair to ``certain``."""
        out = np.empty(len(pairs), dtype=np.float64)
        force = np.empty(len(pairs), dtype=np.bool_)
        for start in range(0, len(pairs), _CHUNK):
            chunk = pairs[start : start + _CHUNK]
            out[start : start + len(chunk)], force[start : start + len(chunk)] = self._bounds(
                chunk[:, 0], chunk[:, 1]
            )
        return out, force

    def _bounds(self, i: IntArray, j: IntArray) -> tuple[FloatArray, BoolArray]:
        w = self.w
        # Names: a side without a family (given) name makes the field missing (weight 0), and
        # the swapped and joined-syllable comparisons need all four parts.
        fam_present = (self.family[i] >= 0) & (self.family[j] >= 0)
        total = np.where(fam_present, self.family_bound[i], 0.0)
        giv_present = (self.given[i] >= 0) & (self.given[j] >= 0)
        gi, gj, fj = self.given[i], self.given[j], self.family[j]
        ghi, ghj, fhj = self.given_hanzi[i], self.given_hanzi[j], self.family_hanzi[j]
        fgi = self.family_given[i]
        strong = (
            (gi == gj)
            | (gi == fj)
            | ((ghi >= 0) & ((ghi == ghj) | (ghi == fhj)))
            | ((fgi >= 0) & ((fgi == self.family_given[j]) | (fgi == self.given_family[j])))
        )
        total += np.where(
            giv_present, np.where(strong, self.given_strong_bound[i], self.given_weak_bound), 0.0
        )

        total += self._birth(i, j)

        si, sj = self.sex[i], self.sex[j]
        total += np.where((si > 0) & (sj > 0), np.where(si == sj, w[SEX][0], w[SEX][1]), 0.0)

        prc_level, prc_long = self._number_levels(self.prc, self.prc_len, self.prc_chars, i, j)
        prc_w = np.where(
            prc_level == MISSING, 0.0, np.asarray(w[PRC_ID], dtype=np.float64)[np.maximum(prc_level, 0)]
        )
        # Longer raw strings are not compared here: count them at their best non-exact level.
        total += np.where(prc_long, self._max(PRC_ID, ("slip", "different")), prc_w)
        prc_exact = prc_level == _level(PRC_ID, "exact")

        total += self._exact_or(self.phone, i, j, PHONE, ("slip", "different"))
        total += self._exact_or(self.address, i, j, ADDRESS, ("close", "different"))
        post_level, post_long = self._number_levels(
            self.postcode, self.postcode_len, self.postcode_chars, i, j
        )
        post_w = np.where(
            post_level == MISSING, 0.0, np.asarray(w[POSTCODE], dtype=np.float64)[np.maximum(post_level, 0)]
        )
        total += np.where(post_long, self._max(POSTCODE, ("slip", "different")), post_w)

        di, dj = self.identifier[i], self.identifier[j]
        id_both = (di != -1) & (dj != -1)
        id_exact_maybe = id_both & ((di == dj) | (di == -2) | (dj == -2))
        # Numbers of two different systems are not compared (missing, weight 0).
        ident_w = np.where(
            id_exact_maybe, max(0.0, *w[IDENTIFIER]), max(0.0, self._max(IDENTIFIER, ("slip", "different")))
        )
        total += np.where(id_both, ident_w, 0.0)

        force = prc_exact | id_exact_maybe
        return total, force

    def _number_levels(
        self, codes: IntArray, lengths: IntArray, chars: IntArray, i: IntArray, j: IntArray
    ) -> tuple[IntArray, BoolArray]:
        """Levels of ``identifiers.number_level`` (exact 0, slip 1, different 2, missing -1),
        and the rows too long to tell slip from different here (marked different)."""
        ci, cj = codes[i], codes[j]
        both = (ci >= 0) & (cj >= 0)
        level = np.full(len(i), MISSING, dtype=np.int64)
        level[both] = 2
        level[both & (ci == cj)] = 0
        maybe_slip = both & (ci != cj) & (lengths[i] == lengths[j])
        long = maybe_slip & (lengths[i] > chars.shape[1])
        rows = np.flatnonzero(maybe_slip & ~long)
        if len(rows):
            level[rows[_slip_mask(chars[i[rows]], chars[j[rows]])]] = 1
        return level, long

    def _exact_or(
        self, codes: IntArray, i: IntArray, j: IntArray, field: int, other: Sequence[str]
    ) -> FloatArray:
        ci, cj = codes[i], codes[j]
        both = (ci >= 0) & (cj >= 0)
        level_w = np.where(ci == cj, self.w[field][0], self._max(field, other))
        out: FloatArray = np.where(both, level_w, 0.0)
        return out

    def _birth(self, i: IntArray, j: IntArray) -> FloatArray:
        """Birth-date weight, at its exact level (as ``dates.date_level``)."""
        w = np.asarray(self.w[BIRTH], dtype=np.float64)
        level, odd = self.birth_levels(i, j)
        out = np.where(level == MISSING, 0.0, w[np.maximum(level, 0)])
        # Dates of other widths (years before 1000) are not compared digit by digit here.
        best = max(w[_level(BIRTH, x)] for x in ("swapped", "slip", "year", "different"))
        result: FloatArray = np.where(odd, best, out)
        return result

    def birth_levels(self, i: IntArray, j: IntArray) -> tuple[IntArray, BoolArray]:
        """Levels of ``dates.date_level`` for the pairs, and the rows whose dates are not
        eight digits (not decided here: slip is not looked for)."""
        a, b = self.birth[i], self.birth[j]
        both = (a > 0) & (b > 0)
        level = np.full(len(i), MISSING, dtype=np.int64)
        ya, yb = a // 10000, b // 10000
        same_year = ya == yb
        level[both] = _level(BIRTH, "different")
        level[both & same_year] = _level(BIRTH, "year")
        eight = both & (a >= 10_000_000) & (a < 100_000_000) & (b >= 10_000_000) & (b < 100_000_000)
        rows = np.flatnonzero(eight & (a != b))
        if len(rows):
            powers = 10 ** np.arange(7, -1, -1, dtype=np.int64)
            da = (a[rows, None] // powers) % 10
            db = (b[rows, None] // powers) % 10
            level[rows[_slip_mask(da, db)]] = _level(BIRTH, "slip")
        swapped = both & same_year & ((a // 100) % 100 == b % 100) & (a % 100 == (b // 100) % 100) & (a != b)
        level[swapped] = _level(BIRTH, "swapped")
        level[both & (a == b)] = _level(BIRTH, "exact")
        # One side unknown: the years (a year-only registration) decide.
        year_a = np.where(a > 0, ya, self.birth_year[i])
        year_b = np.where(b > 0, yb, self.birth_year[j])
        one = ~both & (year_a > 0) & (year_b > 0)
        level[one] = np.where(year_a[one] == year_b[one], _level(BIRTH, "year"), _level(BIRTH, "different"))
        odd: BoolArray = both & ~eight & (a != b)
        return level, odd

    def compare(self, pairs: IntArray) -> tuple[IntArray, list[str], list[str]]:
        """Comparison vectors of (i < j) pairs, as ``comparison.compare`` gives them (and the
        agreed name values), with the fields other than the names decided in numpy."""
        features = self.features
        vectors = np.empty((len(pairs), len(FIELDS)), dtype=np.int64)
        family_values: list[str] = []
        given_values: list[str] = []
        for start in range(0, len(pairs), _CHUNK):
            chunk = pairs[start : start + _CHUNK]
            i, j = chunk[:, 0], chunk[:, 1]
            v = vectors[start : start + len(chunk)]
            v[:, BIRTH], odd = self.birth_levels(i, j)
            si, sj = self.sex[i], self.sex[j]
            v[:, SEX] = np.where((si > 0) & (sj > 0), np.where(si == sj, 0, 1), MISSING)
            v[:, PRC_ID], prc_long = self._number_levels(self.prc, self.prc_len, self.prc_chars, i, j)
            v[:, PHONE], phone_long = self._number_levels(self.phone, self.phone_len, self.phone_chars, i, j)
            v[:, POSTCODE], postcode_long = self._number_levels(
                self.postcode, self.postcode_len, self.postcode_chars, i, j
            )
            ai, aj = self.address[i], self.address[j]
            v[:, ADDRESS] = np.where((ai >= 0) & (aj >= 0), np.where(ai == aj, 0, 2), MISSING)
            rows = np.flatnonzero((ai >= 0) & (aj >= 0) & (ai != aj))
            if len(rows):
                close = address_close(
                    [features[x].address for x in i[rows].tolist()],
                    [features[x].address for x in j[rows].tolist()],
                )
                v[rows[close], ADDRESS] = 1
            # The rare cases numpy does not decide: the scalar functions, as compare() calls them.
            for row in np.flatnonzero(odd).tolist():
                a, b = features[int(i[row])], features[int(j[row])]
                v[row, BIRTH] = _BY_FIELD[BIRTH][date_level(a.birth, b.birth, a.birth_year, b.birth_year)]
            for field, long, attr in (
                (PRC_ID, prc_long, "prc_id"),
                (PHONE, phone_long, "phone"),
                (POSTCODE, postcode_long, "postcode"),
            ):
                for row in np.flatnonzero(long).tolist():
                    a, b = features[int(i[row])], features[int(j[row])]
                    v[row, field] = _BY_FIELD[field][number_level(getattr(a, attr), getattr(b, attr))]
            di, dj = self.identifier[i], self.identifier[j]
            v[:, IDENTIFIER] = MISSING
            for row in np.flatnonzero((di != -1) & (dj != -1)).tolist():
                a, b = features[int(i[row])], features[int(j[row])]
                v[row, IDENTIFIER] = _BY_FIELD[IDENTIFIER][identifier_level(a.identifiers, b.identifiers)]
            # Names: the scalar comparison (romanisations, look-alike characters, swapped parts).
            names = self.names
            family_codes, given_codes = _BY_FIELD[FAMILY], _BY_FIELD[GIVEN]
            fam_levels: list[int] = []
            giv_levels: list[int] = []
            add_fam, add_giv = fam_levels.append, giv_levels.append
            add_fam_value, add_giv_value = family_values.append, given_values.append
            for x, y in zip(i.tolist(), j.tolist(), strict=True):
                a = names[x]
                family, given = compare_names(a, names[y])
                add_fam(family_codes[family])
                add_giv(given_codes[given])
                add_fam_value(a.family_key if family in _FAMILY_VALUE_LEVELS else "")
                add_giv_value(a.given if given in _GIVEN_VALUE_LEVELS else "")
            v[:, FAMILY] = fam_levels
            v[:, GIVEN] = giv_levels
        return vectors, family_values, given_values


def address_close(a: Sequence[str], b: Sequence[str]) -> BoolArray:
    """``addresses.address_level``'s ``close`` test for many pairs at once."""
    scores = process.cpdist(a, b, scorer=fuzz.token_sort_ratio, dtype=np.float64)
    out: BoolArray = scores >= ADDRESS_CLOSE
    return out


def exact_weights(
    model: MatchModel, vectors: IntArray, family_values: Sequence[str], given_values: Sequence[str]
) -> FloatArray:
    """Summed field weights of compared pairs (what ``MatchModel.field_weights`` sums), at once."""
    width = max(len(levels) for _, levels in FIELDS) + 1
    table = np.zeros((len(FIELDS), width), dtype=np.float64)  # the last column: missing (-1)
    for f, (_, levels) in enumerate(FIELDS):
        for level in range(len(levels)):
            table[f, level] = model.fields[f].weight(level)
    if not len(vectors):
        return np.zeros(0, dtype=np.float64)
    total: FloatArray = table[np.arange(len(FIELDS)), vectors].sum(axis=1)
    cache: dict[tuple[int, int, str], float] = {}
    fam, giv = vectors[:, FAMILY].tolist(), vectors[:, GIVEN].tolist()
    for field, levels, values in ((FAMILY, fam, family_values), (GIVEN, giv, given_values)):
        for k, value in enumerate(values):
            if value:
                key = (field, levels[k], value)
                if key not in cache:
                    cache[key] = model.tf_adjustment(field, levels[k], value)
                total[k] += cache[key]
    return total


def may_force(vectors: IntArray) -> BoolArray:
    """Compared pairs a rule might grade ``certain`` whatever the weights (same ID number,
    same identifier): they are always scored."""
    out: BoolArray = (vectors[:, PRC_ID] == 0) | (vectors[:, IDENTIFIER] == 0)
    return out
