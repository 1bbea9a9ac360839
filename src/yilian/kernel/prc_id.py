"""PRC resident identity numbers (公民身份号码, GB 11643-1999).

An 18-character number: a 6-digit administrative division code (GB/T 2260) of the
place of household registration, the birth date ``YYYYMMDD``, a 3-digit order code
whose parity gives the sex (odd: male) and a check character computed with
ISO 7064 MOD 11-2 (``X`` stands for 10). Numbers issued before 1999 have 15 digits
(``YYMMDD``, always 19xx, no check character); :func:`parse` converts them.

The number identifies a person for life, so it is sensitive: error messages here
never repeat it, the dataclass ``repr`` masks it, and callers log :func:`mask` output only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from operator import mul
from typing import Literal

from yilian.kernel import clock
from yilian.kernel.errors import Category, YilianError

Sex = Literal["male", "female"]

# Weight of position i (1-based, left to right) is 2**(18 - i) mod 11 (ISO 7064 MOD 11-2).
_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))
_CHECK_CHARS = "10X98765432"  # indexed by (sum of weighted digits) mod 11
# The weighted sum over the characters' codes, less what the code of "0" adds to it: one pass in
# C over the bytes instead of 17 int() calls (bulk runs check hundreds of thousands of numbers).
_ZERO_OFFSET = ord("0") * sum(_WEIGHTS)
_EARLIEST_BIRTH = dt.date(1850, 1, 1)
# Birth dates are calendar dates in China; "the future" is judged on Beijing time.
_CHINA_TZ = dt.timezone(dt.timedelta(hours=8), "CST")


@dataclass(frozen=True, slots=True)
class ResidentId:
    """A validated, normalised (18-character, upper-case ``X``) resident identity number."""

    number: str = field(repr=False)
    division: str
    birth_date: dt.date
    sex: Sex
    order_code: str = field(repr=False)

    def __repr__(self) -> str:
        # dataclass repr would print the full number into logs and tracebacks.
        return f"ResidentId({mask(self.number)!r}, division={self.division!r}, birth_date={self.birth_date.isoformat()}, sex={self.sex!r})"

    @property
    def masked(self) -> str:
        return mask(self.number)


def _invalid(message: str) -> YilianError:
    return YilianError(Category.INVALID, message)


def check_character(first17: str) -> str:
    """The check character (``0``–``9`` or ``X``) for the first 17 digits of a number."""
    if len(first17) != 17 or not (first17.isascii() and first17.isdigit()):
        raise _invalid("the check character is computed from exactly 17 digits")
    total = sum(map(mul, first17.encode("ascii"), _WEIGHTS)) - _ZERO_OFFSET
    return _CHECK_CHARS[total % 11]


def _today() -> dt.date:
    return clock.now().astimezone(_CHINA_TZ).date()


def _birth_date(digits: str, today: dt.date) -> dt.date:
    try:
        born = dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        raise _invalid(
            f"PRC resident ID number: birth date {digits[:4]}-{digits[4:6]}-{digits[6:8]} "
            "(characters 7-14) is not a real date"
        ) from None
    if born > today:
        raise _invalid(f"PRC resident ID number: birth date {born.isoformat()} is in the future")
    if born < _EARLIEST_BIRTH:
        raise _invalid(f"PRC resident ID number: birth date {born.isoformat()} is before 1850")
    return born


def _first_non_digit(text: str) -> int | None:
    if text.isascii() and text.isdigit():
        return None
    for i, c in enumerate(text):
        if not ("0" <= c <= "9"):
            return i
    return None


def parse(value: str, *, today: dt.date | None = None) -> ResidentId:
    """Validate an 18-character (or legacy 15-digit) number and return its parts.

    Surrounding whitespace is ignored and a lower-case ``x`` is accepted; the
    returned ``number`` is always the 18-character upper-case form. ``today``
    (default: the platform clock, on Beijing time) bounds the birth date.

    Raises :class:`YilianError` (``INVALID``) saying what is wrong, without quoting the number.
    """
    text = value.strip()
    today = today or _today()
    if len(text) == 15:
        bad = _first_non_digit(text)
        if bad is not None:
            raise _invalid(
                f"PRC resident ID number (legacy 15-digit form): character {bad + 1} is not a digit"
            )
        # Legacy numbers carry a two-digit year; they were issued only to people born in 19xx.
        born = _birth_date("19" + text[6:12], today)
        first17 = text[:6] + born.strftime("%Y%m%d") + text[12:15]
        return _build(first17 + check_character(first17), born)
    if len(text) != 18:
        raise _invalid(
            f"PRC resident ID number must have 18 characters (or 15 digits in the legacy form), got {len(text)}"
        )
    bad = _first_non_digit(text[:17])
    if bad is not None:
        raise _invalid(f"PRC resident ID number: character {bad + 1} is not a digit")
    last = text[17].upper()
    if not (last == "X" or "0" <= last <= "9"):
        raise _invalid("PRC resident ID number: the last character must be a digit or X")
    born = _birth_date(text[6:14], today)
    expected = check_character(text[:17])
    if last != expected:
        raise _invalid(
            f"PRC resident ID number: bad check character {last!r}, expected {expected!r} "
            "(a digit is mistyped or two are swapped)"
        )
    return _build(text[:17] + last, born)


def _build(number: str, born: dt.date) -> ResidentId:
    order = number[14:17]
    return ResidentId(
        number=number,
        division=number[:6],
        birth_date=born,
        sex="male" if int(order) % 2 == 1 else "female",
        order_code=order,
    )


def is_valid(value: str, *, today: dt.date | None = None) -> bool:
    """``True`` if :func:`parse` would accept ``value``."""
    try:
        parse(value, today=today)
    except YilianError:
        return False
    return True


def generate(division: str, birth_date: dt.date, sex: Sex, sequence: int) -> str:
    """Compose a valid 18-character number.

    ``sequence`` is the 3-digit order code (0–999) assigned by the registration office
    among people of the same division and birth date; its parity must match ``sex``
    (odd for male, even for female), as the standard requires.
    """
    if len(division) != 6 or not (division.isascii() and division.isdigit()):
        raise _invalid("administrative division code must be 6 digits")
    if not 0 <= sequence <= 999:
        raise _invalid(f"order code must be between 0 and 999, got {sequence}")
    if (sequence % 2 == 1) != (sex == "male"):
        raise _invalid(
            f"order code {sequence:03d} is {'odd' if sequence % 2 else 'even'}, which does not encode sex {sex!r}"
        )
    if birth_date < _EARLIEST_BIRTH:
        raise _invalid(f"birth date {birth_date.isoformat()} is before 1850")
    first17 = f"{division}{birth_date.strftime('%Y%m%d')}{sequence:03d}"
    return first17 + check_character(first17)


def mask(number: str) -> str:
    """The number with everything but the division and the last four characters hidden.

    ``110105194912310021`` → ``110105********0021``. Never raises: anything shorter
    than 11 characters is hidden entirely, so it is safe to call on bad input in logs.
    """
    text = number.strip()
    if len(text) < 11:
        return "*" * len(text)
    return text[:6] + "*" * (len(text) - 10) + text[-4:]
