"""Identifier numbers as matching evidence: PRC resident ID numbers, phones, other numbers.

A valid ID number carries the birth date and sex, so it is checked against the record it
came with: a number whose birth date disagrees with the record's was probably borrowed (a
parent's number on a child's registration) or mistyped, and must not drive a merge.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from rapidfuzz.distance import OSA

from yilian.kernel import prc_id
from yilian.kernel.errors import YilianError

_NOT_ID_CHAR = re.compile(r"[^0-9X]")
_NOT_DIGIT = re.compile(r"\D")
# The ID-number check needs a "today"; a fixed far date keeps matching independent of the
# platform clock (validity of the birth date is checked on registration, not here).
_FAR_FUTURE = dt.date(2999, 12, 31)


@dataclass(frozen=True, slots=True)
class ParsedId:
    """An ID number as the matcher sees it: the 18-character form when valid (a legacy
    15-digit number converted), the raw characters otherwise."""

    number: str
    valid: bool
    birth_date: dt.date | None = None
    sex: str | None = None


def parse_prc_id(value: str | None) -> ParsedId | None:
    if not value:
        return None
    text = _NOT_ID_CHAR.sub("", value.upper())
    if not text:
        return None
    try:
        parsed = prc_id.parse(text, today=_FAR_FUTURE)
    except YilianError:
        return ParsedId(text, False)
    return ParsedId(parsed.number, True, parsed.birth_date, parsed.sex)


def normalise_phone(value: str | None) -> str:
    """Digits only, without the country code (+86 / 0086), so ``+86 138-0013-8000`` and
    ``13800138000`` compare equal. ``""`` when too short to be a number."""
    if not value:
        return ""
    digits = _NOT_DIGIT.sub("", value)
    if len(digits) > 11 and digits.startswith("0086"):
        digits = digits[4:]
    elif len(digits) > 11 and digits.startswith("86"):
        digits = digits[2:]
    return digits if len(digits) >= 7 else ""


def number_level(a: str, b: str) -> str | None:
    """``exact``, ``slip`` (one character wrong or two neighbours swapped), ``different``;
    ``None`` if either is missing."""
    if not a or not b:
        return None
    if a == b:
        return "exact"
    if len(a) == len(b) and OSA.distance(a, b) == 1:
        return "slip"
    return "different"
