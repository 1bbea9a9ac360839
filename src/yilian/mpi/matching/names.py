"""Personal names in any script reduced to comparable forms.

A resident registered as 张伟 at one hospital is ``ZHANG WEI``, ``Wei Zhang``, ``Zhāng Wěi``,
``zhang1 wei3`` or, with a Hong Kong card, ``Cheung Wai`` at others. Every form is reduced to
family and given name in toneless pinyin (or the plain Latin spelling for names that are not
Chinese), keeping the characters when there are some, so that the comparison can tell
"same characters" from "same sound" from "same surname in another romanisation".
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from dataclasses import dataclass

from yilian.mpi.matching import reference


@dataclass(frozen=True, slots=True)
class Name:
    """A name split into family and given parts, in the forms the comparison needs.

    ``family``/``given`` are lower-case toneless pinyin (ü as ``v``) or the plain Latin spelling,
    without spaces or hyphens; ``*_hanzi`` are empty unless the source wrote characters.
    ``family_alt`` is the pinyin surname of a non-pinyin spelling (``cheung`` → ``zhang``) when
    that spelling is attested for one surname only. ``*_sound`` are coarse sound keys that
    survive romanisation differences (Wade–Giles ``hsiao`` and pinyin ``xiao``) and typos.
    """

    family: str
    given: str
    family_hanzi: str = ""
    given_hanzi: str = ""
    family_alt: str = ""
    family_sound: str = ""
    given_sound: str = ""

    @property
    def family_key(self) -> str:
        """The surname as one pinyin word, romanisations resolved: the key for blocking and
        for surname frequency."""
        return self.family_alt or self.family

    @property
    def is_empty(self) -> bool:
        return not (self.family or self.given)


_SPACES = re.compile(r"[\s,，、/]+")
_NOT_LETTER = re.compile(r"[^a-z]")
_TONE_DIGITS = re.compile(r"(?<=[a-z])[1-5]")


def is_hanzi(ch: str) -> bool:
    code = ord(ch)
    return 0x3400 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF or 0x20000 <= code <= 0x3134F


def has_hanzi(text: str) -> bool:
    return any(is_hanzi(ch) for ch in text)


def latin_tokens(text: str) -> list[str]:
    """Latin name text → lower-case toneless tokens; hyphens and apostrophes join syllables
    (``Xiao-Ming``, ``Jia'en``), tone marks and tone numbers disappear, ü is written ``v``."""
    text = text.replace("ü", "v").replace("Ü", "V").replace("u:", "v").replace("U:", "V")
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()
    plain = _TONE_DIGITS.sub("", plain)
    tokens = [_NOT_LETTER.sub("", t) for t in _SPACES.split(plain)]
    return [t for t in tokens if t]


def hanzi_only(text: str) -> str:
    return "".join(ch for ch in text if is_hanzi(ch))


def given_reading(given_hanzi: str) -> str:
    return "".join(reference.char_reading(ch) for ch in given_hanzi)


def split_hanzi(full: str) -> tuple[str, str]:
    """欧阳修 → (欧阳, 修); 张伟 → (张, 伟). Compound surnames come from the surname table."""
    if len(full) >= 3 and full[:2] in reference.compound_surnames():
        return full[:2], full[2:]
    if len(full) >= 2:
        return full[:1], full[1:]
    return full, ""


def _surname_weight(token: str) -> float:
    """How likely ``token`` is a Chinese surname: its frequency (ppm), via romanisation if needed."""
    ppm = reference.surname_pinyin_ppm()
    if token in ppm:
        return ppm[token]
    rom = reference.romanisations().get(token)
    if rom is not None and rom.certain:
        return ppm.get(rom.pinyin, 1.0)
    return 0.0


def split_latin(tokens: list[str]) -> tuple[str, str]:
    """Decide which token of a romanised full name is the surname.

    Chinese order (``Zhang Wei``) and Western order (``Wei Zhang``) both occur; the token that
    is the more frequent surname wins (zhang beats wei), a compound surname written as two
    tokens is kept whole (``Ou Yang Xiu`` → ouyang + xiu), and a name with no Chinese surname
    at either end is taken to be in Western order.
    """
    if not tokens:
        return "", ""
    if len(tokens) == 1:
        return tokens[0], ""
    compounds = reference.pinyin_surnames()
    if len(tokens) >= 3 and tokens[0] + tokens[1] in compounds and len(tokens[0] + tokens[1]) > 4:
        return tokens[0] + tokens[1], "".join(tokens[2:])
    first, last = _surname_weight(tokens[0]), _surname_weight(tokens[-1])
    if first == 0.0 and last == 0.0:
        return tokens[-1], tokens[0]
    if last > first:
        return tokens[-1], "".join(tokens[:-1])
    return tokens[0], "".join(tokens[1:])


def family_alternative(family: str) -> str:
    """The pinyin surname a non-pinyin spelling stands for, when the table is sure of it."""
    rom = reference.romanisations().get(family)
    if rom is None or not rom.certain or rom.pinyin == family:
        return ""
    return rom.pinyin


_SOUND_RULES = (
    # Wade–Giles and Cantonese spellings of the same initials collapse with pinyin ones; the
    # order matters (``tsz`` before ``ts``, digraphs before single letters).
    (re.compile(r"ph"), "f"),
    (re.compile(r"tsz|ts|tz|zh|ch|j|q|c|z|r"), "z"),
    (re.compile(r"hs|sz|sh|x"), "s"),
    (re.compile(r"k|g"), "g"),
    (re.compile(r"p|b"), "b"),
    (re.compile(r"t|d"), "d"),
    (re.compile(r"(?<=[aeiouvy])h"), ""),  # Wade–Giles chih/shih, Cantonese "tak"… codas
    (re.compile(r"ng"), "N"),
    (re.compile(r"[aeiouvy']"), ""),
    (re.compile(r"(.)\1+"), r"\1"),
)


# Words repeat far more than whole names (a corrupted given name still has a common surname).
@functools.lru_cache(maxsize=131_072)
def sound_key(word: str) -> str:
    """A coarse consonant skeleton of a romanised word: equal for ``hsiaoming``/``xiaoming``,
    ``wai``/``wei``, ``chang``/``zhang``, and for Western spellings that differ in vowels or
    doubled letters (``smyth``/``smith`` → ``smd``…)."""
    key = word
    for pattern, repl in _SOUND_RULES:
        key = pattern.sub(repl, key)
    return key


def _intern(text: str) -> str:
    # Names repeat across a million records; one shared string per distinct value keeps the
    # index small.
    return sys.intern(text) if text else ""


def _build(family: str, given: str, family_hanzi: str = "", given_hanzi: str = "") -> Name:
    alt = family_alternative(family) if not family_hanzi else ""
    return Name(
        family=_intern(family),
        given=_intern(given),
        family_hanzi=_intern(family_hanzi),
        given_hanzi=_intern(given_hanzi),
        family_alt=_intern(alt),
        family_sound=_intern(sound_key(family)),
        given_sound=_intern(sound_key(given)),
    )


def _part(text: str | None, *, surname: bool) -> tuple[str, str]:
    """(latin, hanzi) of one name part given on its own."""
    if not text:
        return "", ""
    if has_hanzi(text):
        chars = hanzi_only(text)
        return (reference.surname_reading(chars) if surname else given_reading(chars)), chars
    return "".join(latin_tokens(text)), ""


EMPTY = Name("", "")


# Names repeat (a city has thousands of 王伟): caching returns one shared Name object per
# distinct spelling, which is both faster and smaller.
@functools.lru_cache(maxsize=262_144)
def normalise_name(family: str | None = None, given: str | None = None, full: str | None = None) -> Name:
    """Reduce whatever name parts a record has to a :class:`Name`.

    Separate family and given parts are trusted as given (the comparison still tries them
    swapped); a full name alone is split: characters at the compound-surname boundary,
    romanised text by which end is a surname (a comma, ``Zhang, Wei``, says it outright).
    """
    if family or given:
        f_latin, f_hanzi = _part(family, surname=True)
        g_latin, g_hanzi = _part(given, surname=False)
        if f_latin or g_latin:
            return _build(f_latin, g_latin, f_hanzi, g_hanzi)
    if not full or not full.strip():
        return EMPTY
    if has_hanzi(full):
        f_hanzi, g_hanzi = split_hanzi(hanzi_only(full))
        return _build(reference.surname_reading(f_hanzi), given_reading(g_hanzi), f_hanzi, g_hanzi)
    if "," in full or "，" in full:
        head, _, tail = full.replace("，", ",").partition(",")
        return _build("".join(latin_tokens(head)), "".join(latin_tokens(tail)))
    f_latin, g_latin = split_latin(latin_tokens(full))
    return _build(f_latin, g_latin)
