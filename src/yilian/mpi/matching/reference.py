"""The Chinese name tables the matcher reads: surnames (with compound ones and their
frequency), given-name characters with their usual reading, and non-pinyin surname spellings.

Loaded once per process from the CSV files shipped in ``data/`` (see ``data/SOURCE.md``).
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

from pypinyin import Style, lazy_pinyin

# Surnames whose reading differs from the character's most common reading. pypinyin reads
# 曾 as "ceng" and 单 as "dan", which is right in running text and wrong in a name, and a
# wrong surname reading would make 曾伟 and "Zeng Wei" look like different people.
SURNAME_READINGS: Mapping[str, str] = {
    "单": "shan",
    "曾": "zeng",
    "解": "xie",
    "仇": "qiu",
    "区": "ou",
    "查": "zha",
    "朴": "piao",
    "盖": "ge",
    "乐": "yue",
    "覃": "qin",
    "缪": "miao",
    "翟": "zhai",
    "尉": "yu",
    "秘": "bi",
    "种": "chong",
    "折": "she",
    "黑": "he",
    "召": "shao",
    "员": "yun",
    "繁": "po",
    "句": "gou",
    "长孙": "zhangsun",
    "尉迟": "yuchi",
    "万俟": "moqi",
    "澹台": "tantai",
    "单于": "chanyu",
    "阚": "kan",
    "能": "nai",
    "宓": "mi",
    "柏": "bai",
    "卜": "bu",
    "便": "pian",
    "臧": "zang",
    "洗": "xian",
    "冼": "xian",
    "谌": "chen",
    "华": "hua",
    "任": "ren",
    "沈": "shen",
    "石": "shi",
    "朝": "chao",
    "车": "che",
    "纪": "ji",
    "过": "guo",
    "藏": "zang",
    "隗": "wei",
    "牟": "mou",
}

# Two-character entries of the ORCID surname table that are in fact common given names
# (the table was mined from romanised author names); treating them as compound surnames
# would split 俊杰 in "俊杰" wrongly and, worse, make every "浩然…" start with a surname.
_NOT_COMPOUND = frozenset({"浩然", "俊杰", "宇轩"})


@dataclass(frozen=True, slots=True)
class Romanisation:
    """A non-pinyin surname spelling (Cantonese, Wade–Giles, Hokkien…) and its pinyin surname."""

    pinyin: str
    certain: bool  # the source's ``target_share`` is 1.0: an attested spelling of this surname


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files("yilian.mpi.matching").joinpath("data").joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


def _plain(tone_numbered: str) -> str:
    return tone_numbered.rstrip("012345").replace("ü", "v")


@functools.cache
def surname_ppm() -> Mapping[str, float]:
    """Surname in characters → frequency in parts per million (compound surnames included)."""
    return {
        r["surname"]: float(r["ppm"])
        for r in _rows("familyname_orcid.csv")
        if r["surname"] not in _NOT_COMPOUND
    }


@functools.cache
def compound_surnames() -> frozenset[str]:
    """Two-character surnames (欧阳, 司马, 诸葛…), which must not be split."""
    return frozenset(s for s in surname_ppm() if len(s) == 2) | frozenset(
        k for k in SURNAME_READINGS if len(k) == 2
    )


def surname_reading(surname: str) -> str:
    """Pinyin (no tones) of a surname in characters, with the surname reading of polyphonic ones."""
    if surname in SURNAME_READINGS:
        return SURNAME_READINGS[surname]
    return "".join(SURNAME_READINGS.get(ch) or char_reading(ch) for ch in surname)


@functools.cache
def surname_pinyin_ppm() -> Mapping[str, float]:
    """Pinyin surname → summed frequency (ppm) of the character surnames read that way.

    Frequency is what a name match is worth: "wang" (王, 汪) is shared by one person in
    thirteen, so agreeing on it says little; "ouyang" says a lot.
    """
    totals: dict[str, float] = {}
    for surname, ppm in surname_ppm().items():
        key = surname_reading(surname)
        totals[key] = totals.get(key, 0.0) + ppm
    return totals


@functools.cache
def _given_rows() -> tuple[Mapping[str, str], Mapping[str, float]]:
    readings: dict[str, str] = {}
    ppm: dict[str, float] = {}
    for r in _given_rows_raw():
        readings.setdefault(r["character"], _plain(r["pinyin"]))
        ppm[r["character"]] = ppm.get(r["character"], 0.0) + float(r["ppm"])
    return readings, ppm


def _given_rows_raw() -> list[dict[str, str]]:
    return _rows("givenname_orcid.csv")


def given_char_ppm() -> Mapping[str, float]:
    """Given-name character → frequency (ppm) among given-name characters."""
    return _given_rows()[1]


@functools.cache
def char_reading(ch: str) -> str:
    """Pinyin (no tones, ü as ``v``) of one character as it is read in a given name.

    The name table's reading comes first (it is the reading people are named by: 乐 in a
    given name is usually "le"); other characters take pypinyin's first reading.
    """
    reading = _given_rows()[0].get(ch)
    if reading:
        return reading
    out = lazy_pinyin(ch, style=Style.NORMAL, errors="ignore")
    return out[0].lower() if out else ""


@functools.cache
def romanisations() -> Mapping[str, Romanisation]:
    """Non-pinyin surname spelling (lower case) → its pinyin surname."""
    return {
        r["spelling"].strip().lower(): Romanisation(
            r["mandarin_target"].strip().lower(), float(r["target_share"]) >= 0.999
        )
        for r in _rows("surname_romanizations.csv")
    }


@functools.cache
def pinyin_surnames() -> frozenset[str]:
    """Every pinyin reading of a known surname ("zhang", "ouyang"…)."""
    return frozenset(surname_pinyin_ppm())
