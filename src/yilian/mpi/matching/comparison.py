"""Comparison vectors: for each field, which level of agreement two records reach.

Levels are ordered from strongest agreement to disagreement; "missing" (either side
unknown) is not a level but ``-1``, and weighs nothing. The levels say *how* two values
agree — same characters, same pinyin, same surname in another romanisation — because each
is different evidence, and the model learns from data how much each is worth.
"""

from __future__ import annotations

from dataclasses import dataclass

from rapidfuzz.distance import JaroWinkler

from yilian.mpi.matching.addresses import address_level
from yilian.mpi.matching.dates import date_level
from yilian.mpi.matching.features import Features
from yilian.mpi.matching.identifiers import number_level
from yilian.mpi.matching.lookalike import look_alike
from yilian.mpi.matching.names import Name

MISSING = -1

FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("family_name", ("exact", "pinyin", "romanisation", "close", "different")),
    ("given_name", ("exact", "pinyin", "romanisation", "close", "partial", "different")),
    ("birth_date", ("exact", "swapped", "slip", "year", "different")),
    ("sex", ("exact", "different")),
    ("prc_id", ("exact", "slip", "different")),
    ("phone", ("exact", "slip", "different")),
    ("address", ("exact", "close", "different")),
    ("postcode", ("exact", "slip", "different")),
    ("identifier", ("exact", "slip", "different")),
)
FIELD_NAMES = tuple(name for name, _ in FIELDS)
LEVELS = dict(FIELDS)

FAMILY, GIVEN, BIRTH, SEX, PRC_ID, PHONE, ADDRESS, POSTCODE, IDENTIFIER = range(len(FIELDS))

# Name-similarity cut-offs (Jaro–Winkler on toneless pinyin or Latin spelling). A typo in a
# name of 5+ letters stays above 0.9; distinct names sharing a syllable (siblings' 明华/明军)
# fall between 0.8 and 0.92, which is the "partial" band that must never auto-link.
_CLOSE = 0.9
_CLOSE_HANZI = 0.92
_PARTIAL = 0.8


@dataclass(frozen=True, slots=True)
class Comparison:
    """A comparison vector plus the name values that term-frequency adjustment needs."""

    levels: tuple[int, ...]
    family_value: str  # the agreed surname (pinyin key) when the surnames agree, else ""
    given_value: str  # the agreed given name (pinyin) when the given names agree, else ""

    def level_name(self, field: int) -> str | None:
        level = self.levels[field]
        return None if level == MISSING else FIELDS[field][1][level]


def _hanzi_level(a: str, b: str) -> str | None:
    """Same-length character strings that differ only by look-alike characters → ``close``;
    sharing a character in place (or one inside the other) → ``partial``."""
    if len(a) == len(b):
        diffs = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
        if diffs and all(look_alike(x, y) for x, y in diffs):
            return "close"
        if len(diffs) < len(a):
            return "partial"
    elif a in b or b in a:
        return "partial"
    return None


def _family(a_latin: str, a_hanzi: str, a_alt: str, a_sound: str, b: Name, *, swapped: bool) -> str | None:
    b_latin, b_hanzi = (b.given, b.given_hanzi) if swapped else (b.family, b.family_hanzi)
    b_alt = "" if swapped else b.family_alt
    b_sound = b.given_sound if swapped else b.family_sound
    if not a_latin or not b_latin:
        return None
    if a_hanzi and b_hanzi:
        if a_hanzi == b_hanzi:
            return "exact"
        if a_latin == b_latin:
            return "pinyin"
        hl = _hanzi_level(a_hanzi, b_hanzi)
        return "close" if hl == "close" else "different"
    if a_latin == b_latin:
        return "pinyin" if (a_hanzi or b_hanzi) else "exact"
    if (a_alt and a_alt in (b_latin, b_alt)) or (b_alt and b_alt == a_latin):
        return "romanisation"
    if a_sound and a_sound == b_sound and not (a_hanzi or b_hanzi):
        return "romanisation"
    if JaroWinkler.similarity(a_latin, b_latin) >= _CLOSE:
        return "close"
    return "different"


def _given(a_latin: str, a_hanzi: str, a_sound: str, b: Name, *, swapped: bool) -> str | None:
    b_latin, b_hanzi = (b.family, b.family_hanzi) if swapped else (b.given, b.given_hanzi)
    b_sound = b.family_sound if swapped else b.given_sound
    if not a_latin or not b_latin:
        return None
    if a_hanzi and b_hanzi:
        if a_hanzi == b_hanzi:
            return "exact"
        if a_latin == b_latin:
            return "pinyin"
        hl = _hanzi_level(a_hanzi, b_hanzi)
        if hl == "close":
            return "close"
        # Southern accents blur zh/z, n/l, in/ing: a near-identical reading is a slip.
        if JaroWinkler.similarity(a_latin, b_latin) >= _CLOSE_HANZI:
            return "close"
        return hl or "different"
    if a_latin == b_latin:
        return "pinyin" if (a_hanzi or b_hanzi) else "exact"
    if a_sound and a_sound == b_sound:
        return "romanisation"
    similarity = JaroWinkler.similarity(a_latin, b_latin)
    if similarity >= _CLOSE:
        return "close"
    if similarity >= _PARTIAL:
        return "partial"
    return "different"


_FAMILY_RANK = {None: 2.5, "exact": 0, "pinyin": 0, "romanisation": 1, "close": 2, "different": 5}
_GIVEN_RANK = {
    None: 2.5,
    "exact": 0,
    "pinyin": 0,
    "romanisation": 1,
    "close": 2,
    "partial": 4,
    "different": 5,
}


def compare_names(a: Name, b: Name) -> tuple[str | None, str | None]:
    """(family level, given level), trying the parts swapped as well (a given-first
    registration, or a form whose boxes were filled the wrong way round)."""
    family = _family(a.family, a.family_hanzi, a.family_alt, a.family_sound, b, swapped=False)
    given = _given(a.given, a.given_hanzi, a.given_sound, b, swapped=False)
    if family in ("exact", "pinyin") and given in ("exact", "pinyin"):
        return family, given
    if a.family and a.given and b.family and b.given:
        # The same syllables split at another place: "Ou Yangxiu" vs 欧阳修.
        if a.family + a.given in (b.family + b.given, b.given + b.family):
            same_script = not (a.family_hanzi or a.given_hanzi or b.family_hanzi or b.given_hanzi)
            return ("exact", "exact") if same_script else ("pinyin", "pinyin")
        if not (a.family_hanzi and b.family_hanzi):
            s_family = _family(a.family, a.family_hanzi, "", a.family_sound, b, swapped=True)
            s_given = _given(a.given, a.given_hanzi, a.given_sound, b, swapped=True)
            direct = _FAMILY_RANK[family] + _GIVEN_RANK[given]
            if _FAMILY_RANK[s_family] + _GIVEN_RANK[s_given] < direct:
                return s_family, s_given
    return family, given


def identifier_level(a: tuple[tuple[str, str], ...], b: tuple[tuple[str, str], ...]) -> str | None:
    best: str | None = None
    for system, value in a:
        for other_system, other_value in b:
            if system != other_system:
                continue
            level = number_level(value, other_value)
            if level == "exact":
                return "exact"
            if level == "slip" or best is None:
                best = level
    return best


# Levels at which the agreed name value is kept for term-frequency adjustment.
_FAMILY_VALUE_LEVELS = frozenset({"exact", "pinyin", "romanisation"})
_GIVEN_VALUE_LEVELS = frozenset({"exact", "pinyin"})
_BY_FIELD = tuple({None: MISSING, **{level: i for i, level in enumerate(levels)}} for _, levels in FIELDS)


def compare(a: Features, b: Features) -> Comparison:
    """The comparison vector of two prepared records."""
    family, given = compare_names(a.name, b.name)
    sex = None if not a.sex or not b.sex else ("exact" if a.sex == b.sex else "different")
    levels = (
        _BY_FIELD[FAMILY][family],
        _BY_FIELD[GIVEN][given],
        _BY_FIELD[BIRTH][date_level(a.birth, b.birth, a.birth_year, b.birth_year)],
        _BY_FIELD[SEX][sex],
        _BY_FIELD[PRC_ID][number_level(a.prc_id, b.prc_id)],
        _BY_FIELD[PHONE][number_level(a.phone, b.phone)],
        _BY_FIELD[ADDRESS][address_level(a.address, b.address)],
        _BY_FIELD[POSTCODE][number_level(a.postcode, b.postcode)],
        _BY_FIELD[IDENTIFIER][identifier_level(a.identifiers, b.identifiers)],
    )
    family_value = a.name.family_key if family in _FAMILY_VALUE_LEVELS else ""
    given_value = a.name.given if given in _GIVEN_VALUE_LEVELS else ""
    return Comparison(levels, family_value, given_value)
