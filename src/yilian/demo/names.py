"""Chinese personal names sampled by real frequency, with their Hanyu Pinyin spelling."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from yilian.demo import reference
from yilian.demo.elements import EXT_NAME_REPRESENTATION, Json
from yilian.kernel.prc_id import Sex

# Compound surnames are about 0.1% of the population; a demo of a few hundred people
# would usually have none, and the patient index must be shown splitting 欧阳 correctly.
COMPOUND_SHARE = 0.02
SINGLE_CHAR_GIVEN_SHARE = 0.3
# How strongly a character's conventional gender steers sampling (a boy named 丽 is rare, not impossible).
_SAME_GENDER_BOOST = 3.0
_OTHER_GENDER_DAMPING = 0.03
_VOWEL_INITIALS = ("a", "o", "e")


def syllable(tone_numbered: str) -> str:
    """``lv3`` → ``lü``: drop the tone number, write ü (the source writes it ``v``)."""
    return tone_numbered.rstrip("012345").replace("v", "ü")


def pinyin_word(syllables: tuple[str, ...]) -> str:
    """Syllables of one name part as one capitalised word, per GB/T 16159: 晓明 → ``Xiaoming``,
    with an apostrophe where a syllable starting with a, o or e would run on (嘉恩 → ``Jia'en``)."""
    parts = [syllable(s) for s in syllables]
    word = parts[0]
    for part in parts[1:]:
        word += ("'" if part.startswith(_VOWEL_INITIALS) else "") + part
    return word[:1].upper() + word[1:]


@dataclass(frozen=True, slots=True)
class ChineseName:
    family: str
    given: str
    family_pinyin: tuple[str, ...]
    given_pinyin: tuple[str, ...]

    @property
    def text(self) -> str:
        return self.family + self.given

    @property
    def pinyin_family(self) -> str:
        return pinyin_word(self.family_pinyin)

    @property
    def pinyin_given(self) -> str:
        return pinyin_word(self.given_pinyin)

    @property
    def pinyin_text(self) -> str:
        # Chinese order (family first), as on a PRC passport.
        return f"{self.pinyin_family} {self.pinyin_given}"

    def with_given(self, given: str, given_pinyin: tuple[str, ...]) -> ChineseName:
        return ChineseName(self.family, given, self.family_pinyin, given_pinyin)


def hanzi_name(name: ChineseName) -> Json:
    return {
        "extension": [{"url": EXT_NAME_REPRESENTATION, "valueCode": "IDE"}],
        "use": "official",
        "text": name.text,
        "family": name.family,
        "given": [name.given],
    }


def pinyin_name(name: ChineseName, *, upper: bool = False, given_first: bool = False) -> Json:
    """The alphabetic form of the same legal name (ISO 21090 representation ``ABC``)."""
    family, given = name.pinyin_family, name.pinyin_given
    if upper:
        family, given = family.upper(), given.upper()
    text = f"{given} {family}" if given_first else f"{family} {given}"
    return {
        "extension": [{"url": EXT_NAME_REPRESENTATION, "valueCode": "ABC"}],
        "use": "official",
        "text": text,
        "family": family,
        "given": [given],
    }


def human_names(name: ChineseName) -> list[Json]:
    return [hanzi_name(name), pinyin_name(name)]


class NameSampler:
    """Draws names from the shipped frequency tables with a caller-owned RNG."""

    def __init__(self) -> None:
        surnames = reference.surnames()
        self._singles = [s for s in surnames if len(s.hanzi) == 1]
        self._compounds = [s for s in surnames if len(s.hanzi) > 1]
        self._single_cum = list(itertools.accumulate(s.weight for s in self._singles))
        self._compound_cum = list(itertools.accumulate(s.weight for s in self._compounds))
        chars = reference.given_chars()
        self._chars = list(chars)
        self._cum: dict[Sex, list[float]] = {}
        marks: tuple[tuple[Sex, str], ...] = (("male", "m"), ("female", "f"))
        for sex, mark in marks:
            weights = [
                c.weight
                * (_SAME_GENDER_BOOST if c.gender == mark else _OTHER_GENDER_DAMPING if c.gender else 1.0)
                for c in chars
            ]
            self._cum[sex] = list(itertools.accumulate(weights))
        self._by_sound: dict[str, list[reference.GivenChar]] = {}
        for c in chars:
            self._by_sound.setdefault(syllable(c.pinyin), []).append(c)

    def surname(self, rng: random.Random) -> reference.Surname:
        if rng.random() < COMPOUND_SHARE:
            return rng.choices(self._compounds, cum_weights=self._compound_cum)[0]
        return rng.choices(self._singles, cum_weights=self._single_cum)[0]

    def surname_of(self, family: str) -> reference.Surname:
        return next(s for s in (*self._singles, *self._compounds) if s.hanzi == family)

    def given(self, rng: random.Random, sex: Sex, avoid: str = "") -> tuple[str, tuple[str, ...]]:
        length = 1 if rng.random() < SINGLE_CHAR_GIVEN_SHARE else 2
        picked: list[reference.GivenChar] = []
        while len(picked) < length:
            char = rng.choices(self._chars, cum_weights=self._cum[sex])[0]
            if char.hanzi in avoid or any(p.hanzi == char.hanzi for p in picked):
                continue
            picked.append(char)
        return "".join(c.hanzi for c in picked), tuple(c.pinyin for c in picked)

    def name(self, rng: random.Random, sex: Sex, surname: reference.Surname | None = None) -> ChineseName:
        family = surname or self.surname(rng)
        given, given_pinyin = self.given(rng, sex, avoid=family.hanzi)
        return ChineseName(family.hanzi, given, family.pinyin, given_pinyin)

    def homophones(self, char: str, reading: str) -> list[reference.GivenChar]:
        """Other given-name characters that sound the same: the commonest registration typo
        (the clerk types the name in pinyin and picks the wrong character)."""
        return [c for c in self._by_sound.get(syllable(reading), []) if c.hanzi != char]
