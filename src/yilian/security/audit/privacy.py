"""Keeping sensitive numbers out of the audit log's text.

Issue 5 wants no ID number, phone number or identity document in plain text anywhere in the
database, yet a search by identifier or telephone carries the number in the query the log
records. The log keeps the query's shape with the number masked as the platform masks it
elsewhere (``110105********0021``, ``138****8000``, ``E******78``): an auditor still sees what
kind of lookup was made, by whom, for which patients (their ids are in ``patient_keys``).
Masking is applied to the record itself, so the columns and the AuditEvent JSON say the same
thing and the chain covers the masked text.

What is masked, wherever the scrubbed text comes from (a query, a path, a message):

- the value after ``<system>|`` for every sensitive identifier system — the ones the FHIR store
  seals (:data:`yilian.fhir.store.sealing.SENSITIVE_IDENTIFIER_SYSTEMS`, passports of every
  state): ID and health card numbers, passports, HK/Macao and Taiwan permits, phone — as typed
  or URL-encoded (``…%2Fpassport%2FCHN%7CE12345678``), and in JSON (``"system": …, "value": …``);
- the value of the ``phone`` and ``telecom`` search parameters (landlines too);
- any 18-character or legacy 15-digit ID number and any mainland mobile number on its own, except
  inside the platform's own ids (UUIDs, whose hex groups can spell one).

A document number given without its system (``identifier=E12345678``) cannot be told from an
MRN and stays as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final
from urllib.parse import quote_plus, unquote_plus

from yilian.fhir.store.sealing import PASSPORT_SYSTEM_PREFIX, SENSITIVE_IDENTIFIER_SYSTEMS, identifier_kind
from yilian.kernel import health_card
from yilian.kernel.crypto import BlindKind

# 18-character resident ID numbers (and legacy 15-digit ones), standing alone or after a
# separator such as "|" or its URL encoding "%7C".
_RESIDENT_ID = re.compile(r"(?<!\d)(?:\d{17}[\dXx]|\d{15})(?![\dXx])")
# Mainland mobile numbers, with or without +86 and separators (plain or URL-encoded).
_SEP = r"(?:[- ]|%20)?"
_MOBILE = re.compile(rf"(?<!\d)(?:(?:\+|%2[Bb])?86{_SEP})?(1[3-9]\d){_SEP}(\d{{4}}){_SEP}(\d{{4}})(?!\d)")
# The platform's ids (time-ordered UUIDs): their hex groups can spell a mobile number
# ("…-a153-7452-9389-…"), and the patient an audit row names must stay readable. Only these are
# spared: a number inside any other text (an id a client chose, "tel13912345678") is masked.
# The users' and system clients' ids the platform draws ("u-" and "yl-" and random hex, see
# people.add_user and clients.register_client) are spared likewise: "u-17659336060f" is a user.
_PLATFORM_ID = re.compile(
    r"(?<![0-9A-Za-z])(?:[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}|u-[0-9a-f]{12}|yl-[0-9a-f]{16})"
    r"(?![0-9A-Za-z])"
)
_MOBILE_ONLY = re.compile(r"1[3-9]\d{9}")

# One character of a value in a query: unreserved, '+' (an encoded space), or a percent escape
# other than those of the separators that end it (',' '&' '|' '#').
_VALUE = r"(?:[A-Za-z0-9._~+\-]|%(?![2][Cc6]|7[Cc]|23)[0-9A-Fa-f]{2})+"


def _spellings(system: str) -> list[str]:
    """A system as typed and as a query string encodes it (``https%3A%2F%2F…``)."""
    return sorted({re.escape(system), re.escape(quote_plus(system, safe=""))}, key=len, reverse=True)


def _system_alternatives() -> str:
    spellings = [s for system in SENSITIVE_IDENTIFIER_SYSTEMS for s in _spellings(system)]
    spellings += [s + "[A-Za-z]{3}" for s in _spellings(PASSPORT_SYSTEM_PREFIX)]
    return "|".join(spellings)


_SYSTEMS: Final = _system_alternatives()
# <system>|<value>, the separator typed or encoded.
_TOKEN: Final = re.compile(rf"(?P<system>{_SYSTEMS})(?P<sep>\||%7[Cc])(?P<value>{_VALUE})", re.IGNORECASE)
# An Identifier as JSON, either order of its two members.
_JSON_SYSTEM_FIRST: Final = re.compile(
    rf'(?P<head>"system"\s*:\s*"(?P<system>{_SYSTEMS})"\s*,\s*"value"\s*:\s*")(?P<value>[^"\\]*)"'
)
_JSON_VALUE_FIRST: Final = re.compile(
    rf'(?P<head>"value"\s*:\s*")(?P<value>[^"\\]*)(?P<tail>"\s*,\s*"system"\s*:\s*"(?P<system>{_SYSTEMS})")'
)
# The phone and telecom search parameters: whatever number they carry.
_PHONE_PARAM: Final = re.compile(
    rf"(?P<head>(?:^|[?&;])(?:phone|telecom)(?::[a-z-]+)?=(?:(?:phone|sms)(?:\||%7[Cc]))?)(?P<value>{_VALUE})"
)


def _mask_middle(value: str) -> str:
    """All but the last two characters hidden (and the first, of 9 or more: a passport's
    letter); a value of 5 or fewer hidden entirely."""
    if len(value) <= 5:
        return "*" * len(value)
    if len(value) < 9:
        return "*" * (len(value) - 2) + value[-2:]
    return value[0] + "*" * (len(value) - 3) + value[-2:]


def _mask_phone(value: str) -> str:
    """A mobile number as ``138****8000`` however it was written (``+86 138-0013-8000``, URL
    encoded); anything else (a landline) as :func:`_mask_middle`."""
    digits = re.sub(r"\D", "", unquote_plus(value))
    if len(digits) == 13 and digits.startswith("86"):
        digits = digits[2:]
    elif len(digits) == 15 and digits.startswith("0086"):
        digits = digits[4:]
    if _MOBILE_ONLY.fullmatch(digits):
        return f"{digits[:3]}****{digits[-4:]}"
    return _mask_middle(value)


_MASKS: Final[dict[BlindKind, Callable[[str], str]]] = {
    "prc-id": health_card.mask,  # an ID number, or a card number (an ID number + "-NN")
    "phone": _mask_phone,
    "document": _mask_middle,
}


def _mask(system: str, value: str) -> str:
    kind = identifier_kind(system) or identifier_kind(unquote_plus(system)) or "document"
    return _MASKS[kind](value)


# What every pattern above needs at least one of: a system's separator (typed or encoded), an
# Identifier's "value" in JSON, the phone or telecom parameter, a mobile number's first three
# digits or a run of fifteen. Text without any is returned as it is: most audited text ("Patient/
# 123", a query by name) has none, and every audited request scrubs its texts.
_MAYBE_SENSITIVE: Final = re.compile(r'\||%7[Cc]|"value"|phone|telecom|1[3-9]\d|\d{15}')


def scrub(text: str | None) -> str | None:
    """``text`` with every sensitive identifier value, ID number and mobile number masked."""
    if not text or _MAYBE_SENSITIVE.search(text) is None:
        return text
    return mask_all(text)


def mask_all(text: str) -> str:
    """:func:`scrub` without its quick look for text that has nothing to mask."""
    text = _TOKEN.sub(lambda m: m["system"] + m["sep"] + _mask(m["system"], m["value"]), text)
    text = _JSON_SYSTEM_FIRST.sub(lambda m: m["head"] + _mask(m["system"], m["value"]) + '"', text)
    text = _JSON_VALUE_FIRST.sub(lambda m: m["head"] + _mask(m["system"], m["value"]) + m["tail"], text)
    text = _PHONE_PARAM.sub(lambda m: m["head"] + _mask_phone(m["value"]), text)
    return _outside_ids(text)


def _loose_numbers(text: str) -> str:
    text = _RESIDENT_ID.sub(lambda m: health_card.mask(m[0]), text)
    return _MOBILE.sub(lambda m: f"{m[1]}****{m[3]}", text)


def _outside_ids(text: str) -> str:
    """:func:`_loose_numbers` on every stretch of ``text`` between the platform's ids."""
    out: list[str] = []
    start = 0
    for m in _PLATFORM_ID.finditer(text):
        out.append(_loose_numbers(text[start : m.start()]))
        out.append(m[0])
        start = m.end()
    out.append(_loose_numbers(text[start:]))
    return "".join(out)
