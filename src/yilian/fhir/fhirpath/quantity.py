"""FHIRPath Quantity values: a decimal and a unit, compared through UCUM."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from yilian.fhir.fhirpath import ucum

UCUM_SYSTEM = "http://unitsofmeasure.org"

# FHIRPath's calendar duration keywords; written without quotes (``4 days``).
CALENDAR_WORDS = frozenset(
    {
        "year", "years", "month", "months", "week", "weeks", "day", "days",
        "hour", "hours", "minute", "minutes", "second", "seconds", "millisecond", "milliseconds",
    }
)  # fmt: skip
_SINGULAR = {w: w.rstrip("s") if w.endswith("s") and w != "s" else w for w in CALENDAR_WORDS}
# week and shorter are definite durations, equal to their UCUM unit; a calendar year or
# month is not exactly 'a' or 'mo' (only equivalent to them).
_DEFINITE = {"week": "wk", "day": "d", "hour": "h", "minute": "min", "second": "s", "millisecond": "ms"}
_INDEFINITE = {"year": "a", "month": "mo"}


@dataclass(frozen=True, slots=True)
class FPQuantity:
    value: Decimal
    unit: str = "1"

    def __str__(self) -> str:
        number = format(self.value, "f")
        if self.unit in CALENDAR_WORDS:
            return f"{number} {self.unit}"
        return f"{number} '{self.unit}'"

    def to_fhir(self) -> dict[str, Any]:
        """The FHIR ``Quantity`` this value stands for."""
        word = _SINGULAR.get(self.unit)
        if word is not None:
            code = _DEFINITE.get(word) or _INDEFINITE[word]
            return {"value": self.value, "unit": self.unit, "system": UCUM_SYSTEM, "code": code}
        return {"value": self.value, "unit": self.unit, "system": UCUM_SYSTEM, "code": self.unit}


def to_decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def from_fhir(data: Any) -> FPQuantity | None:
    """A FHIR Quantity (or Age, Duration, …) element as a FHIRPath Quantity."""
    if not isinstance(data, dict) or data.get("value") is None:
        return None
    try:
        value = to_decimal(data["value"])
    except (InvalidOperation, TypeError, ValueError):
        return None
    code = data.get("code")
    system = data.get("system")
    # the UCUM code is what compares; the display unit is the fallback
    ucum_coded = code and (system is None or system == UCUM_SYSTEM)
    unit = code if ucum_coded else (data.get("unit") or code or "1")
    return FPQuantity(value, str(unit))


def _ucum_code(unit: str) -> str:
    word = _SINGULAR.get(unit)
    if word is None:
        return unit
    return _DEFINITE.get(word) or _INDEFINITE[word]


def _is_indefinite(unit: str) -> bool:
    return _SINGULAR.get(unit) in _INDEFINITE


def _in_unit_of(a: FPQuantity, b: FPQuantity, *, equivalence: bool) -> Decimal | None:
    """b's value in a's unit, or None when the two cannot be compared."""
    ua, ub = _SINGULAR.get(a.unit, a.unit), _SINGULAR.get(b.unit, b.unit)
    if ua == ub:
        return b.value
    if ua in _INDEFINITE and ub in _INDEFINITE:  # calendar years and months: 1 year = 12 months
        return b.value * 12 if ub == "year" else b.value / 12
    if (ua in _INDEFINITE or ub in _INDEFINITE) and not equivalence:
        return None
    return ucum.convert(b.value, _ucum_code(b.unit), _ucum_code(a.unit))


def compare(a: FPQuantity, b: FPQuantity, *, equivalence: bool = False) -> int | None:
    """-1/0/1, or None when the units cannot be compared."""
    other = _in_unit_of(a, b, equivalence=equivalence)
    return None if other is None else _sign(a.value, other)


def equivalent(a: FPQuantity, b: FPQuantity) -> bool:
    """``~``: equal once converted, to the precision of the less precise value."""
    other = _in_unit_of(a, b, equivalence=True)
    if other is None:
        return False
    places = Decimal(1).scaleb(-min(_scale(a.value), _scale(other)))
    try:
        return a.value.quantize(places) == other.quantize(places)
    except InvalidOperation:
        return a.value == other


def _scale(d: Decimal) -> int:
    exp = d.as_tuple().exponent
    return -exp if isinstance(exp, int) and exp < 0 else 0


def _sign(x: Decimal, y: Decimal) -> int:
    return 0 if x == y else (-1 if x < y else 1)


def convert_to(q: FPQuantity, unit: str) -> FPQuantity | None:
    value = ucum.convert(q.value, _ucum_code(q.unit), _ucum_code(unit))
    return None if value is None else FPQuantity(value, unit)


def add(a: FPQuantity, b: FPQuantity, sign: int) -> FPQuantity | None:
    if _is_indefinite(a.unit) != _is_indefinite(b.unit):
        return None
    other = ucum.convert(b.value, _ucum_code(b.unit), _ucum_code(a.unit))
    if other is None:
        return None
    return FPQuantity(a.value + sign * other, a.unit)


def multiply(a: FPQuantity, b: FPQuantity) -> FPQuantity:
    return FPQuantity(a.value * b.value, _combine(_ucum_code(a.unit), _ucum_code(b.unit), "."))


def divide(a: FPQuantity, b: FPQuantity) -> FPQuantity | None:
    if b.value == 0:
        return None
    ua, ub = _ucum_code(a.unit), _ucum_code(b.unit)
    if ua == ub:
        return FPQuantity(a.value / b.value, "1")
    converted = ucum.convert(b.value, ub, ua)
    if converted is not None and converted != 0:
        return FPQuantity(a.value / converted, "1")
    return FPQuantity(a.value / b.value, _combine(ua, ub, "/"))


def _combine(a: str, b: str, op: str) -> str:
    if b == "1":
        return a
    if a == "1":
        return b if op == "." else f"/{b}"
    return f"{a}{op}{b}"


def parse(text: str) -> FPQuantity | None:
    """A quantity written as text (``'5.4 mg'``, ``"1 'wk'"``, ``'4 days'``, ``'3'``)."""
    parts = text.strip().split(None, 1)
    if not parts:
        return None
    try:
        value = Decimal(parts[0])
    except InvalidOperation:
        return None
    if not value.is_finite() or not _is_number_text(parts[0]):
        return None
    if len(parts) == 1:
        return FPQuantity(value, "1")
    unit = parts[1].strip()
    if len(unit) >= 2 and unit[0] == "'" and unit[-1] == "'":
        return FPQuantity(value, unit[1:-1])
    if unit in CALENDAR_WORDS:
        return FPQuantity(value, unit)
    return None


def _is_number_text(text: str) -> bool:
    body = text[1:] if text[:1] in "+-" else text
    whole, _, frac = body.partition(".")
    return whole.isdigit() and (frac == "" or frac.isdigit()) and not body.endswith(".")
