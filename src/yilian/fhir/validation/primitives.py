"""The FHIR primitive types: what a valid JSON value of each looks like.

Each type gets two forms of the same rule:

* ``fast``: a Python expression over the value that is true for (almost every) valid
  value and cheap to evaluate; it is pasted into the generated structure validators
  (``codegen``), so the common case costs a type test and a C-level string method,
  not a call or a regex;
* ``problem()``: the exact rule, with a message, run only when ``fast`` says no.

``fast`` never accepts an invalid value; when it rejects a valid one (a string with a
tab, a code with an inner space), ``problem()`` finds nothing and no issue is raised.

The regexes are the official ones from the StructureDefinitions, read with XML Schema
semantics as the specification intends: ``\\s`` is only space, tab, CR and LF (so an
ideographic space is an ordinary character in a Chinese string), and every pattern
must match the whole value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from typing import Any

from yilian.fhir.model import model
from yilian.fhir.validation.context import describe

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

_XSD_SPACE = r" \t\n\r"  # as written inside a pattern
_XSD_SPACE_CHARS = " \t\n\r"
_BASE64_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_XSD_SPACE_BYTES = b" \t\n\r"

# A value of these types is a JSON boolean or number; every other primitive is a JSON string.
_JSON_KIND = {
    "boolean": "boolean",
    "integer": "integer",
    "positiveInt": "integer",
    "unsignedInt": "integer",
    "decimal": "decimal",
}
_INT_RANGE = {
    "integer": (INT32_MIN, INT32_MAX),
    "positiveInt": (1, INT32_MAX),
    "unsignedInt": (0, INT32_MAX),
}

_TOKEN_LIKE = "{x}.__class__ is str and ' ' not in {x} and {x}.isprintable() and {x}"
# A URI is exactly a non-empty string without XML whitespace; four memchr calls beat
# isprintable() on the long values URIs tend to be.
_URI = (
    "{x}.__class__ is str and ' ' not in {x} and '\\n' not in {x} and '\\t' not in {x} and '\\r' not in {x}"
    " and '\\x00' not in {x} and {x}"
)
_FAST = {
    "boolean": "{x} is True or {x} is False",
    "integer": f"{{x}}.__class__ is int and {INT32_MIN} <= {{x}} <= {INT32_MAX}",
    "positiveInt": f"{{x}}.__class__ is int and 0 < {{x}} <= {INT32_MAX}",
    "unsignedInt": f"{{x}}.__class__ is int and 0 <= {{x}} <= {INT32_MAX}",
    # x - x is 0.0 only for a finite float.
    "decimal": "{x}.__class__ is int or ({x}.__class__ is float and {x} - {x} == 0.0)",
    # NUL is refused in every string (see ``problem``): one memchr.
    "string": "{x}.__class__ is str and {x} and not {x}.isspace() and '\\x00' not in {x}",
    "markdown": "{x}.__class__ is str and {x} and not {x}.isspace() and '\\x00' not in {x}",
    # Printable means no tab/CR/LF; with no space either, a non-empty value is a valid
    # code. Values with inner single spaces go to the regex.
    "code": _TOKEN_LIKE,
    "uri": _URI,
    "url": _URI,
    "canonical": _URI,
    "xhtml": "{x}.__class__ is str and {x}.startswith('<div') and '\\x00' not in {x}",
    # Plain letters and digits skip the regex; ids with - or . (UUIDs) take it.
    "id": "{x}.__class__ is str and (({x}.isalnum() and {x}.isascii() and len({x}) <= 64) or {aux}({x}))",
}
_FAST_BY_MATCHER = "{x}.__class__ is str and {aux}({x})"
_FAST_ANY_STRING = "{x}.__class__ is str and {x} and '\\x00' not in {x}"
FAST_BOUND_CODE = "{x}.__class__ is str and {x} in {aux}"


def xsd_regex(pattern: str) -> str:
    """An official FHIR regex as a Python pattern with XML Schema meaning and no capture groups.

    ``\\s`` becomes ``[ \\t\\n\\r]``; ``\\S`` its complement, also inside a character class
    (``[ \\r\\n\\t\\S]`` is "any character"); ``(`` becomes ``(?:``, as nothing is extracted.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            esc = pattern[i : i + 2]
            out.append({r"\s": f"[{_XSD_SPACE}]", r"\S": f"[^{_XSD_SPACE}]"}.get(esc, esc))
            i += 2
        elif c == "[":
            j = i + 1
            negated = pattern.startswith("^", j)
            j += negated
            members: list[str] = []
            any_non_space = False
            while pattern[j] != "]":
                if pattern[j] == "\\":
                    esc = pattern[j : j + 2]
                    if esc == r"\s":
                        members.append(_XSD_SPACE)
                    elif esc == r"\S":
                        any_non_space = True
                    else:
                        members.append(esc)
                    j += 2
                else:
                    members.append(pattern[j])
                    j += 1
            body = "".join(members)
            if not any_non_space:
                out.append(f"[{'^' if negated else ''}{body}]")
            elif negated:
                raise ValueError(f"cannot translate a negated class holding \\S: {pattern!r}")
            else:
                out.append(f"(?:[^{_XSD_SPACE}]|[{body}])" if body else f"[^{_XSD_SPACE}]")
            i = j + 1
        elif c == "(" and not pattern.startswith("?", i + 1):
            out.append("(?:")
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def base64_ok(x: str) -> bool:
    """The official base64Binary regex ``(\\s*([0-9a-zA-Z\\+/=]){4}\\s*)+``, at C speed.

    The regex itself backtracks exponentially on a long invalid value, and even a valid
    attachment of a few hundred kilobytes takes milliseconds through it. This reads the
    same language with byte-level C operations: base64 characters in runs whose lengths
    are multiples of four, separated by whitespace.
    """
    if not x.isascii():
        return False
    raw = x.encode("ascii")
    other = raw.translate(None, _BASE64_BYTES)
    if not other:
        return len(raw) % 4 == 0 and len(raw) > 0
    if other.translate(None, _XSD_SPACE_BYTES):
        return False
    runs = raw.split()
    return bool(runs) and all(len(run) % 4 == 0 for run in runs)


# Every valid time zone offset of the dateTime and instant regexes: -14:00 .. +14:00.
_OFFSETS = frozenset(f"{sign}{h:02d}:{m:02d}" for sign in "+-" for h in range(14) for m in range(60)) | {
    "+14:00",
    "-14:00",
}
_from_iso_datetime = datetime.fromisoformat
_from_iso_date = date.fromisoformat


def _date_time_check(matcher: Callable[[str], Any], *, dates: bool, times: bool) -> Callable[[str], Any]:
    """The official regex of date, dateTime or instant, with a fast path for the usual forms.

    The usual forms are a full date ``YYYY-MM-DD`` and ``YYYY-MM-DDThh:mm:ss[.fff]`` with
    ``Z`` or an offset. Their separators are checked by position and the offset by
    lookup; then ``fromisoformat`` (C) checks that the fields are ASCII digits in range.
    It refuses a few values the regex allows (a leap second, 30 February): those, and
    every other form, go to the regex.
    """

    def check(x: str) -> Any:
        n = len(x)
        if times and n >= 20 and x[4:19:3] == "--T::":
            if n == 25:
                usual = x[19:] in _OFFSETS
            elif n == 20:
                usual = x[19] == "Z"
            else:
                zulu = x[-1] == "Z"
                fraction = x[20:-1] if zulu else x[20:-6]
                usual = (
                    x[19] == "."
                    and fraction.isdigit()
                    and fraction.isascii()
                    and (zulu or x[-6:] in _OFFSETS)
                )
            if usual:
                try:
                    _from_iso_datetime(x)
                    return True
                except ValueError:
                    pass
        elif dates and n == 10 and x[4::3] == "--":
            try:
                _from_iso_date(x)
                return True
            except ValueError:
                pass
        return matcher(x)

    return check


Shortcut = tuple[str, str, dict[str, Any]]

# The commonest date and time forms, checked in the generated code itself (no call):
# (condition over {x}, parse raising ValueError, the objects the two name).
_FULL_DATE_TIME: Shortcut = (
    "{x}.__class__ is str and ((len({x}) == 25 and {x}[19:] in {offsets}) or (len({x}) == 20 and {x}[19] == 'Z'))"
    " and {x}[4:19:3] == '--T::'",
    "{parse}({x})",
    {"offsets": _OFFSETS, "parse": _from_iso_datetime},
)
_FULL_DATE: Shortcut = (
    "{x}.__class__ is str and len({x}) == 10 and {x}[4::3] == '--'",
    "{parse}({x})",
    {"parse": _from_iso_date},
)
_SHORTCUTS = {"date": _FULL_DATE, "dateTime": _FULL_DATE_TIME, "instant": _FULL_DATE_TIME}


@dataclass(frozen=True, slots=True)
class PrimitiveRule:
    name: str
    json: str  # boolean | integer | decimal | string
    fast: str  # Python expression over {x} (and {aux}), see the module docstring
    matcher: Callable[[str], Any] | None  # the official regex (or its equivalent), whole-value match
    aux: Any = None  # what {aux} stands for in ``fast``: the matcher, or a faster equivalent
    shortcut: Shortcut | None = None  # tried before ``fast`` by single-valued elements


@cache
def rules() -> dict[str, PrimitiveRule]:
    """One rule per FHIR primitive type, compiled once."""
    out: dict[str, PrimitiveRule] = {}
    for name, spec in model().primitives.items():
        matcher: Callable[[str], Any] | None = None
        if name == "base64Binary":
            matcher = base64_ok
        elif spec.regex and _JSON_KIND.get(name) is None and name != "xhtml":
            matcher = re.compile(xsd_regex(spec.regex)).fullmatch
        fast = _FAST.get(name) or (_FAST_BY_MATCHER if matcher else _FAST_ANY_STRING)
        aux: Any = matcher
        if matcher is not None and name in ("date", "dateTime", "instant"):
            aux = _date_time_check(matcher, dates=name != "instant", times=name != "date")
        out[name] = PrimitiveRule(
            name, _JSON_KIND.get(name, "string"), fast, matcher, aux, _SHORTCUTS.get(name)
        )
    return out


def problem(rule: PrimitiveRule, x: Any) -> tuple[str, str] | None:
    """Why ``x`` is not a valid value of the primitive type, as (message, issue code), or None."""
    name = rule.name
    if rule.json == "boolean":
        if x is True or x is False:
            return None
        return f"a boolean must be true or false, found {describe(x)}", "structure"
    if rule.json == "integer":
        if isinstance(x, bool) or not isinstance(x, int):
            return f"{name} value must be a whole JSON number, found {describe(x)}", "structure"
        low, high = _INT_RANGE[name]
        if not low <= x <= high:
            return f"{x} is out of range for {name} ({low}..{high})", "value"
        return None
    if rule.json == "decimal":
        if isinstance(x, bool) or not isinstance(x, (int, float, Decimal)):
            return f"a decimal must be a JSON number, found {describe(x)}", "structure"
        if (isinstance(x, float) and not math.isfinite(x)) or (isinstance(x, Decimal) and not x.is_finite()):
            return f"{x} is not a decimal number", "value"
        return None
    if not isinstance(x, str):
        return f"{name} value must be a JSON string, found {describe(x)}", "structure"
    if not x:
        return f"empty {name}: an element must have a value or children (ele-1)", "value"
    if "\x00" in x:
        # FHIR strings should hold no control characters but tab, CR and LF; NUL is refused
        # outright, as PostgreSQL cannot store it and SQLite would: one answer on both.
        return f"{name} value contains a NUL character (U+0000), which is not allowed", "value"
    if name in ("string", "markdown") and not x.strip(_XSD_SPACE_CHARS):
        return f"{name} value must not consist only of whitespace", "value"
    if name == "xhtml":
        if not x.startswith("<div"):
            return "the narrative must be an XHTML <div> element", "value"
        return None
    if rule.matcher is not None and not rule.matcher(x):
        return f"{describe(x)} is not a valid {name}", "value"
    return None
