"""Turning FHIR values into comparable index values: folded strings, date ranges, numbers.

Shared by the indexer (what is stored) and the query compiler (what is searched for), so both
sides of every comparison are normalised the same way.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import re
import sys
import unicodedata
from decimal import Decimal, InvalidOperation

from yilian.kernel.errors import invalid

MAX_INDEXED_STRING = 255
US = 1_000_000
MIN_US = -62135596800 * US  # 0001-01-01T00:00:00Z
MAX_US = 253402300799 * US + 999999  # 9999-12-31T23:59:59.999999Z

_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2})(?::(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:?\d{2})?)?)?)?$"
)


@functools.cache
def _combining_marks() -> re.Pattern[str]:
    """Every character with a non-zero canonical combining class, as one character class.

    Built once (about 0.1 s) so that removing accents is one pass in C rather than a Python
    test per character: the ``_content`` text of a Patient is several hundred characters.
    """
    marks = [c for c in range(sys.maxunicode + 1) if unicodedata.combining(chr(c))]
    ranges: list[str] = []
    start = prev = marks[0]
    for c in [*marks[1:], -1]:
        if c == prev + 1:
            prev = c
            continue
        ranges.append(re.escape(chr(start)) + ("-" + re.escape(chr(prev)) if prev > start else ""))
        start = prev = c
    return re.compile("[" + "".join(ranges) + "]+")


def fold_unbounded(text: str) -> str:
    """Case- and accent-insensitive form, whitespace collapsed, of any length."""
    if text.isascii():
        return " ".join(text.lower().split())
    folded = _combining_marks().sub("", unicodedata.normalize("NFKD", text)).casefold()
    return " ".join(folded.split())


def fold(text: str) -> str:
    """Case- and accent-insensitive form used by string search (``Zhāng`` -> ``zhang``)."""
    return fold_unbounded(text)[:MAX_INDEXED_STRING]


def _epoch_us(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0, us: int = 0) -> int:
    days = (dt.date(y, m, d) - dt.date(1970, 1, 1)).days
    return ((days * 86400 + hh * 3600 + mm * 60 + ss) * US) + us


def _tz_offset_us(tz: str | None) -> int:
    if not tz or tz == "Z":
        return 0
    sign = -1 if tz[0] == "-" else 1
    digits = tz[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:4])
    if hours > 14 or minutes > 59:
        raise ValueError(f"time-zone offset {tz} out of range")
    return sign * (hours * 3600 + minutes * 60) * US


def _check_clock(hh: int, mi: int, ss: int = 0) -> None:
    # The arithmetic below would silently roll 25:00 over into the next day; FHIR's time
    # grammar stops at 23:59:60 (60 for a leap second), so anything past it is not a time.
    if hh > 23 or mi > 59 or ss > 60:
        raise ValueError("time of day out of range")


def date_range(text: str) -> tuple[int, int] | None:
    """The instant range ``[low, high]`` (inclusive, µs since epoch) a FHIR date/dateTime/instant covers.

    ``2013`` covers the whole year, ``2013-01-14T10:00`` that minute. Values without a time
    zone are taken as UTC. Returns ``None`` for text that is not a date.
    """
    m = _DATE.match(text.strip())
    if not m:
        return None
    try:
        y = int(m["y"])
        if m["m"] is None:
            low = _epoch_us(y, 1, 1)
            high = _epoch_us(y + 1, 1, 1) - 1 if y < 9999 else MAX_US
            return low, high
        mo = int(m["m"])
        if m["d"] is None:
            low = _epoch_us(y, mo, 1)
            last = calendar.monthrange(y, mo)[1]
            return low, _epoch_us(y, mo, last) + 86400 * US - 1
        d = int(m["d"])
        if m["H"] is None:
            low = _epoch_us(y, mo, d)
            return low, low + 86400 * US - 1
        hh = int(m["H"])
        mi = int(m["M"] or 0)
        _check_clock(hh, mi, int(m["S"] or 0))
        offset = _tz_offset_us(m["tz"])
        if m["M"] is None:
            low = _epoch_us(y, mo, d, hh) - offset
            return low, low + 3600 * US - 1
        if m["S"] is None:
            low = _epoch_us(y, mo, d, hh, mi) - offset
            return low, low + 60 * US - 1
        ss = int(m["S"])
        frac = m["f"]
        if frac is None:
            low = _epoch_us(y, mo, d, hh, mi, min(ss, 59)) - offset
            return low, low + US - 1
        digits = min(len(frac), 6)
        us = int(frac[:6].ljust(6, "0"))
        low = _epoch_us(y, mo, d, hh, mi, min(ss, 59), us) - offset
        return low, low + 10 ** (6 - digits) - 1
    except ValueError:
        return None


def us_to_instant(value: int) -> str:
    """µs since epoch -> FHIR instant text (UTC, milliseconds)."""
    t = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=value)
    return f"{t.year:04d}-" + t.strftime("%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def instant_to_us(value: dt.datetime) -> int:
    delta = value.astimezone(dt.UTC) - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86400 + delta.seconds) * US + delta.microseconds


def parse_number(text: str) -> tuple[float, float, float]:
    """A search number and the half-open range its precision implies: ``100`` -> (100, 99.5, 100.5)."""
    try:
        dec = Decimal(text)
    except InvalidOperation:
        raise invalid(f"{text!r} is not a number") from None
    if not dec.is_finite():
        raise invalid(f"{text!r} is not a finite number")
    exponent = dec.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5) * Decimal(10) ** (exponent - 1)
    return float(dec), float(dec - half), float(dec + half)
