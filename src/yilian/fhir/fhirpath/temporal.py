"""FHIRPath Date, DateTime and Time values, which keep the precision they were written with.

A FHIR ``date`` such as ``2015-02`` is a month, not the first of February, so these
values hold only the components that were given: ``fields`` is (year, month, day, hour,
minute, second) cut to the precision, ``frac`` the digits after the seconds' point and
``tz`` the offset as written (``Z``, ``+10:00``). Comparing values of different
precision is defined component by component and may give "unknown" (``None``).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from yilian.fhir.fhirpath.errors import FHIRPathError

_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
_DATETIME = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_TIME = re.compile(r"(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?")

# Index of each component in ``fields``; seconds and their fraction are one precision.
YEAR, MONTH, DAY, HOUR, MINUTE, SECOND = range(6)


@dataclass(frozen=True, slots=True)
class FPDate:
    fields: tuple[int, ...]

    def __str__(self) -> str:
        return _format_date(self.fields)


@dataclass(frozen=True, slots=True)
class FPDateTime:
    fields: tuple[int, ...]
    frac: str | None = None
    tz: str | None = None

    def __str__(self) -> str:
        text = _format_date(self.fields[:3])
        if len(self.fields) > 3:
            text += "T" + _format_time(self.fields[3:], self.frac)
        if self.tz is not None and len(self.fields) > 3:
            text += self.tz
        return text


@dataclass(frozen=True, slots=True)
class FPTime:
    fields: tuple[int, ...]
    frac: str | None = None

    def __str__(self) -> str:
        return _format_time(self.fields, self.frac)


Temporal = FPDate | FPDateTime | FPTime


def _format_date(fields: tuple[int, ...]) -> str:
    parts = [f"{fields[0]:04d}"] + [f"{f:02d}" for f in fields[1:]]
    return "-".join(parts)


def _format_time(fields: tuple[int, ...], frac: str | None) -> str:
    text = ":".join(f"{f:02d}" for f in fields)
    if frac is not None and len(fields) == 3:
        text += "." + frac
    return text


def _valid(fields: tuple[int, ...], *, time_only: bool = False) -> bool:
    if time_only:
        limits = (23, 59, 60)
        return all(0 <= f <= lim for f, lim in zip(fields, limits, strict=False))
    if len(fields) > MONTH and not 1 <= fields[MONTH] <= 12:
        return False
    if len(fields) > DAY and not 1 <= fields[DAY] <= calendar.monthrange(fields[YEAR], fields[MONTH])[1]:
        return False
    return _valid(fields[HOUR:], time_only=True)


def _ints(groups: tuple[str | None, ...]) -> tuple[int, ...]:
    out: list[int] = []
    for g in groups:
        if g is None:
            break
        out.append(int(g))
    return tuple(out)


@lru_cache(maxsize=4096)
def parse_date(text: str) -> FPDate | None:
    m = _DATE.fullmatch(text)
    if not m:
        return None
    fields = _ints(m.groups())
    return FPDate(fields) if _valid(fields) else None


@lru_cache(maxsize=4096)
def parse_datetime(text: str) -> FPDateTime | None:
    """A FHIR ``dateTime``/``instant`` (or FHIRPath DateTime literal without ``@``); None if malformed."""
    m = _DATETIME.fullmatch(text)
    if not m:
        return None
    fields = _ints(m.groups()[:6])
    frac = m.group(7) if len(fields) == 6 else None
    tz = m.group(8) if len(fields) > 3 else None
    if not _valid(fields) or (tz is not None and not _valid_tz(tz)):
        return None
    return FPDateTime(fields, frac, tz)


@lru_cache(maxsize=4096)
def parse_time(text: str) -> FPTime | None:
    m = _TIME.fullmatch(text)
    if not m:
        return None
    fields = _ints(m.groups()[:3])
    frac = m.group(4) if len(fields) == 3 else None
    return FPTime(fields, frac) if _valid(fields, time_only=True) else None


def _valid_tz(tz: str) -> bool:
    return tz == "Z" or (int(tz[1:3]) <= 14 and int(tz[4:6]) < 60)


def tz_minutes(tz: str) -> int:
    if tz == "Z":
        return 0
    sign = -1 if tz[0] == "-" else 1
    return sign * (int(tz[1:3]) * 60 + int(tz[4:6]))


def format_tz(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def as_datetime(value: FPDate | FPDateTime) -> FPDateTime:
    """A Date compared with a DateTime is read as a DateTime of the same precision."""
    return value if isinstance(value, FPDateTime) else FPDateTime(value.fields)


def precision(value: Temporal) -> int:
    """The number of components given, seconds and milliseconds counting as one."""
    return len(value.fields)


# -- comparison --------------------------------------------------------------------------


def _key(fields: tuple[int, ...], frac: str | None, seconds_at: int) -> list[int | Decimal]:
    key: list[int | Decimal] = list(fields)
    if len(key) > seconds_at and frac:
        key[seconds_at] = Decimal(f"{fields[seconds_at]}.{frac}")
    return key


def _utc_fields(value: FPDateTime) -> tuple[int, ...]:
    if value.tz is None or len(value.fields) <= HOUR:
        return value.fields
    f = value.fields
    minute = f[MINUTE] if len(f) > MINUTE else 0
    moment = dt.datetime(f[YEAR], f[MONTH], f[DAY], f[HOUR], minute) - dt.timedelta(
        minutes=tz_minutes(value.tz)
    )
    shifted = (moment.year, moment.month, moment.day, moment.hour, moment.minute)
    return shifted[: len(f)] + f[SECOND:]


def _compare_keys(a: list[int | Decimal], b: list[int | Decimal]) -> int | None:
    for x, y in zip(a, b, strict=False):
        if x != y:
            return -1 if x < y else 1
    return 0 if len(a) == len(b) else None


def compare(a: Temporal, b: Temporal) -> int | None:
    """-1/0/1, or None when precision (or a missing timezone) leaves the answer unknown.

    Raises FHIRPathError for a Time against a Date/DateTime, which have no order.
    """
    if isinstance(a, FPTime) or isinstance(b, FPTime):
        if not (isinstance(a, FPTime) and isinstance(b, FPTime)):
            raise FHIRPathError(f"cannot compare {a} with {b}")
        return _compare_keys(_key(a.fields, a.frac, 2), _key(b.fields, b.frac, 2))
    x, y = as_datetime(a), as_datetime(b)
    if (x.tz is None) != (y.tz is None):
        # Only one side says where it was measured: the calendar date can still decide,
        # a time of day cannot.
        decided = _compare_keys(list(x.fields[:3]), list(y.fields[:3]))
        if decided:
            return decided
        if len(x.fields) <= DAY + 1 and len(y.fields) <= DAY + 1:
            return decided
        return None
    return _compare_keys(_key(_utc_fields(x), x.frac, SECOND), _key(_utc_fields(y), y.frac, SECOND))


def same_kind(a: object, b: object) -> bool:
    """Whether ``a = b`` can be anything but false: both times, or both dates/dateTimes."""
    if isinstance(a, FPTime) or isinstance(b, FPTime):
        return isinstance(a, FPTime) and isinstance(b, FPTime)
    return True


# -- arithmetic ----------------------------------------------------------------------------

# The units a date/time can move by: the calendar keywords, and UCUM's definite durations.
# UCUM 'a' and 'mo' are not here: a Julian year or mean month is a number of seconds, not a
# calendar step, so ``@1973-12-25 + 1 'mo'`` is an error (use ``1 month``).
CALENDAR_UNITS = {
    "year": "year", "years": "year",
    "month": "month", "months": "month",
    "week": "week", "weeks": "week", "wk": "week",
    "day": "day", "days": "day", "d": "day",
    "hour": "hour", "hours": "hour", "h": "hour",
    "minute": "minute", "minutes": "minute", "min": "minute",
    "second": "second", "seconds": "second", "s": "second",
    "millisecond": "millisecond", "milliseconds": "millisecond", "ms": "millisecond",
}  # fmt: skip

_SECONDS = {
    "week": Decimal(604800), "day": Decimal(86400), "hour": Decimal(3600),
    "minute": Decimal(60), "second": Decimal(1), "millisecond": Decimal("0.001"),
}  # fmt: skip


def _clamped(year: int, month: int, day: int) -> dt.date:
    if not 1 <= year <= 9999:
        raise FHIRPathError("date arithmetic left the supported range of years")
    return dt.date(year, month, min(day, calendar.monthrange(year, month)[1]))


def _add_months(fields: list[int], months: int) -> None:
    total = fields[YEAR] * 12 + (fields[MONTH] - 1) + months
    fields[YEAR], fields[MONTH] = divmod(total, 12)
    fields[MONTH] += 1


def add(value: Temporal, amount: Decimal, unit: str) -> Temporal:
    """``value + amount unit`` with calendar semantics, keeping the value's precision."""
    try:
        return _add(value, amount, unit)
    except (OverflowError, ValueError) as e:  # past year 9999 or before year 1
        raise FHIRPathError(f"date arithmetic out of range: {value} + {amount} {unit}") from e


def _add(value: Temporal, amount: Decimal, unit: str) -> Temporal:
    kind = CALENDAR_UNITS.get(unit)
    if kind is None:
        raise FHIRPathError(f"cannot add a quantity in '{unit}' to a date/time")
    if kind != "millisecond":
        # Date/time arithmetic moves by whole calendar units: the decimal part of a quantity
        # in seconds or coarser is ignored (7.7 days is 7 days).
        amount = Decimal(int(amount))
    if isinstance(value, FPTime):
        if kind in ("year", "month", "week", "day"):
            raise FHIRPathError(f"cannot add {kind}s to a time")
        return _add_to_time(value, amount * _SECONDS[kind])
    n = len(value.fields)
    fields = list(value.fields) + [1, 1, 0, 0, 0][n - 1 :]
    frac = value.frac if isinstance(value, FPDateTime) else None
    if kind in ("year", "month"):
        months = int(amount) * (12 if kind == "year" else 1)
        if n == 1:
            months = (months // 12) * 12 if months >= 0 else -((-months // 12) * 12)
        _add_months(fields, months)
        day = _clamped(fields[YEAR], fields[MONTH], fields[DAY])
        fields[DAY] = day.day
    else:
        seconds = amount * _SECONDS[kind]
        if n <= DAY + 1:
            # a date (or a dateTime without a time) moves by whole days only; coarser
            # precisions by whole months/years of 30/365 days
            days = int(seconds / 86400)
            if n == 1:
                fields[YEAR] += int(Decimal(days) / 365)
            elif n == 2:
                _add_months(fields, int(Decimal(days) / 30))
            else:
                moved = dt.date(fields[YEAR], fields[MONTH], fields[DAY]) + dt.timedelta(days=days)
                fields[YEAR], fields[MONTH], fields[DAY] = moved.year, moved.month, moved.day
        else:
            micro = int(Decimal(f"0.{frac}") * 1_000_000) if frac else 0
            y, mo, d, h, mi, sec = fields[:6]
            moment = dt.datetime(y, mo, d, h, mi, sec, micro) + dt.timedelta(seconds=float(seconds))
            if not 1 <= moment.year <= 9999:
                raise FHIRPathError("date arithmetic left the supported range of years")
            fields = [moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second]
            if frac is not None:
                frac = f"{moment.microsecond // 1000:03d}"
    kept = tuple(fields[:n])
    if isinstance(value, FPDate):
        return FPDate(kept)
    return FPDateTime(kept, frac if n == 6 else None, value.tz)


def _add_to_time(value: FPTime, seconds: Decimal) -> FPTime:
    n = len(value.fields)
    f = list(value.fields) + [0, 0][n - 1 :]
    current = Decimal(f[0] * 3600 + f[1] * 60 + f[2])
    if value.frac:
        current += Decimal(f"0.{value.frac}")
    total = (current + seconds) % 86400
    whole = int(total)
    fields = (whole // 3600, whole % 3600 // 60, whole % 60)
    frac = None
    if value.frac is not None:
        frac = f"{int((total - whole) * 1000):03d}"
    return FPTime(fields[:n], frac if n == 3 else None)


# -- boundaries (FHIRPath 2.0 lowBoundary/highBoundary/precision) --------------------------------

_DATE_PRECISIONS = {4: 1, 6: 2, 8: 3}
_DATETIME_PRECISIONS = {4: 1, 6: 2, 8: 3, 10: 4, 12: 5, 14: 6, 17: 6}
_TIME_PRECISIONS = {2: 1, 4: 2, 6: 3, 9: 3}


def boundary_precision(value: Temporal) -> int:
    """FHIRPath ``precision()``: the number of digits the value has (2014-01 -> 6)."""
    n = len(value.fields)
    if isinstance(value, FPTime):
        return {1: 2, 2: 4, 3: 6}[n] + (3 if value.frac else 0)
    digits = {1: 4, 2: 6, 3: 8, 4: 10, 5: 12, 6: 14}[n]
    if isinstance(value, FPDateTime) and value.frac:
        digits = 17
    return digits


def boundary(value: Temporal, digits: int | None, *, high: bool) -> Temporal | None:
    """The earliest (or latest) moment the value can stand for, to ``digits`` of precision."""
    if isinstance(value, FPDate):
        digits = 8 if digits is None else digits
        size = _DATE_PRECISIONS.get(digits)
        return None if size is None else FPDate(tuple(_fill(value.fields, 6, high)[:size]))
    if isinstance(value, FPTime):
        digits = 9 if digits is None else digits
        size = _TIME_PRECISIONS.get(digits)
        if size is None:
            return None
        padded = list(value.fields) + ([59, 59] if high else [0, 0])[len(value.fields) - 1 :]
        time_frac = value.frac or ("999" if high else "000")
        return FPTime(tuple(padded[:size]), time_frac if digits == 9 else None)
    digits = 17 if digits is None else digits
    size = _DATETIME_PRECISIONS.get(digits)
    if size is None:
        return None
    fields = value.fields
    if len(fields) == HOUR + 1:
        # An hour without minutes is read as hh:00, as the reference implementation does.
        fields = (*fields, 0)
    filled = _fill(fields, 6, high)
    frac: str | None = (value.frac or ("999" if high else "000")) if digits == 17 else None
    tz = value.tz
    if size > DAY + 1 and tz is None:
        # unknown offset: the widest one in the direction asked for
        tz = "-12:00" if high else "+14:00"
    return FPDateTime(tuple(filled[:size]), frac, tz if size > DAY + 1 else None)


def _fill(fields: tuple[int, ...], size: int, high: bool) -> list[int]:
    out = list(fields)
    while len(out) < size:
        i = len(out)
        if i == MONTH:
            out.append(12 if high else 1)
        elif i == DAY:
            out.append(calendar.monthrange(out[YEAR], out[MONTH])[1] if high else 1)
        elif i == HOUR:
            out.append(23 if high else 0)
        else:
            out.append(59 if high else 0)
    return out


def now_values(moment: dt.datetime) -> tuple[FPDateTime, FPDate, FPTime]:
    """now(), today() and timeOfDay() for one instant (in its own offset)."""
    offset = moment.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    frac = f"{moment.microsecond // 1000:03d}"
    fields = (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)
    return (
        FPDateTime(fields, frac, format_tz(minutes)),
        FPDate(fields[:3]),
        FPTime(fields[3:], frac),
    )
