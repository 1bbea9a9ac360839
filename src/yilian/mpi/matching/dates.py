"""Birth dates: parsing the many ways legacy systems write them, and how two dates differ.

Clerks swap day and month (03/04 vs 04/03), hit a neighbouring key or swap two digits, and
some registrations only know the year; each of those is evidence of a different strength,
which is why the comparison names the kind of difference instead of saying "not equal".
"""

from __future__ import annotations

import datetime as dt

from rapidfuzz.distance import OSA

MISSING = 0


def as_int(value: dt.date | None) -> int:
    """``date(1985, 3, 12)`` → ``19850312``; ``0`` when unknown. Integers compare fast and
    their digits are what typos change."""
    if value is None:
        return MISSING
    return value.year * 10000 + value.month * 100 + value.day


def parse_date(text: str, fmt: str) -> dt.date | None:
    """Parse with a ``strptime`` format; ``None`` for empty or impossible values (a legacy
    file's 19850231 is a typo to tolerate, not a reason to drop the row)."""
    text = text.strip()
    if not text:
        return None
    try:
        return dt.datetime.strptime(text, fmt).date()
    except ValueError:
        return None


def date_level(a: int, b: int, year_a: int, year_b: int) -> str | None:
    """How two birth dates (``YYYYMMDD`` ints, ``0`` = unknown; years for year-only records)
    relate: ``exact``, ``swapped`` (day and month), ``slip`` (one digit wrong or two
    neighbours swapped), ``year`` (same year only), ``different``; ``None`` if either is unknown."""
    if a and b:
        if a == b:
            return "exact"
        if a // 10000 == b // 10000 and (a // 100) % 100 == b % 100 and a % 100 == (b // 100) % 100:
            return "swapped"
        if OSA.distance(str(a), str(b)) == 1:
            return "slip"
        if a // 10000 == b // 10000:
            return "year"
        return "different"
    ya = a // 10000 if a else year_a
    yb = b // 10000 if b else year_b
    if not ya or not yb:
        return None
    return "year" if ya == yb else "different"
