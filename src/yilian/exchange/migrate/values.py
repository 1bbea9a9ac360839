"""Turning a CSV cell into a FHIR primitive value, and testing cells in conditions.

The FHIR type of the target element decides the conversion (the mapping never says "this is a
number": ``valueQuantity.value`` is a decimal, so its cell must be one), which keeps mapping
files short and makes a wrong cell a reported row rather than a resource the server refuses.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

STRING_TYPES = frozenset(
    {"string", "markdown", "uri", "url", "canonical", "oid", "uuid", "id", "base64Binary", "xhtml"}
)
INTEGER_TYPES = frozenset({"integer", "positiveInt", "unsignedInt", "integer64"})
DATE_TYPES = frozenset({"date", "dateTime", "instant", "time"})
PRIMITIVES = STRING_TYPES | INTEGER_TYPES | DATE_TYPES | {"code", "decimal", "boolean"}

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_PARTIAL_DATE = re.compile(r"\d{4}(-\d{2})?")
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})
_TIME_DIRECTIVES = ("%H", "%I", "%M", "%S", "%X", "%c", "%T", "%p")
_DEFAULT_FORMAT = {"date": "%Y-%m-%d", "dateTime": "iso", "instant": "iso", "time": "%H:%M:%S"}


def is_number(text: str) -> bool:
    return bool(_NUMBER.fullmatch(text))


def is_integer(text: str) -> bool:
    return bool(_INTEGER.fullmatch(text))


def is_iso_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


def parse_offset(text: str) -> dt.tzinfo:
    """``+08:00`` / ``Z`` / ``UTC`` as a tzinfo (the model has checked the spelling)."""
    if text in ("Z", "UTC"):
        return dt.UTC
    sign = -1 if text[0] == "-" else 1
    hours, minutes = int(text[1:3]), int(text[4:6])
    return dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))


def check_format(fmt: str) -> str | None:
    """Why a strptime pattern cannot work (None when it can): a round trip through a sample."""
    if fmt == "iso":
        return None
    sample = dt.datetime(2001, 2, 3, 4, 5, 6)
    try:
        dt.datetime.strptime(sample.strftime(fmt), fmt)
    except ValueError as exc:
        return str(exc)
    return None


def default_format(fhir_type: str) -> str | None:
    return _DEFAULT_FORMAT.get(fhir_type)


def convert(text: str, fhir_type: str, fmt: str | None, tz: dt.tzinfo) -> Any:
    """``text`` (non-empty) as a JSON value of ``fhir_type``; ValueError says why it cannot be."""
    if fhir_type in STRING_TYPES:
        return text
    if fhir_type == "code":
        # A FHIR code has no runs of whitespace; legacy exports often pad them.
        return " ".join(text.split())
    if fhir_type == "decimal":
        if not is_number(text):
            raise ValueError(f"{text!r} is not a number")
        # An integer stays an integer and a decimal keeps its digits as far as JSON allows.
        return int(text) if is_integer(text) else float(text)
    if fhir_type in INTEGER_TYPES:
        if not is_integer(text):
            raise ValueError(f"{text!r} is not a whole number")
        number = int(text)
        if (fhir_type == "positiveInt" and number < 1) or (fhir_type == "unsignedInt" and number < 0):
            raise ValueError(f"{text!r} is not a {fhir_type}")
        return number
    if fhir_type == "boolean":
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"{text!r} is not a yes/no value (true/false, yes/no, y/n, 1/0)")
    if fhir_type in DATE_TYPES:
        return _convert_date(text, fhir_type, fmt or _DEFAULT_FORMAT[fhir_type], tz)
    raise ValueError(f"cannot fill a {fhir_type} from a column")  # the plan prevents this


def _convert_date(text: str, fhir_type: str, fmt: str, tz: dt.tzinfo) -> str:
    if fmt == "iso":
        if fhir_type != "instant" and _PARTIAL_DATE.fullmatch(text):
            return text  # a year, or a year and month: FHIR allows them as they are
        try:
            if fhir_type == "time":
                return dt.time.fromisoformat(text).isoformat()
            value = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an ISO 8601 date or date-time") from None
        has_time = len(text) > 10
    else:
        try:
            value = dt.datetime.strptime(text, fmt)
        except ValueError:
            raise ValueError(f"{text!r} does not have the format {fmt}") from None
        has_time = any(d in fmt for d in _TIME_DIRECTIVES)
    if fhir_type == "time":
        return value.time().isoformat()
    if fhir_type == "date" or not has_time:
        if fhir_type == "instant":
            raise ValueError(f"{text!r} has no time of day (an instant needs one)")
        return _date_text(value, fmt)
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    out = value.isoformat(timespec="microseconds" if value.microsecond else "seconds")
    return out[:-6] + "Z" if out.endswith("+00:00") else out


def _date_text(value: dt.datetime, fmt: str) -> str:
    # A format with no day (a month register: %Y-%m) yields a FHIR partial date, not the 1st.
    if fmt == "iso" or any(d in fmt for d in ("%d", "%j", "%x", "%c")):
        return value.date().isoformat()
    if any(d in fmt for d in ("%m", "%b", "%B")):
        return f"{value.year:04d}-{value.month:02d}"
    return f"{value.year:04d}"
