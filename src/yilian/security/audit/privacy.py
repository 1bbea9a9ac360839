"""Keeping ID numbers and phone numbers out of the audit log's text.

Issue 5 wants neither in plain text anywhere in the database, yet a search by identifier or
telephone carries the number in the query the log records. The log keeps the query's shape
with the number masked as the platform masks it elsewhere (``110105********0021``,
``138****8000``): an auditor still sees what kind of lookup was made, by whom, for which
patients (their ids are in ``patient_keys``). Masking is applied to the record itself, so the
columns and the AuditEvent JSON say the same thing and the chain covers the masked text.
"""

from __future__ import annotations

import re

from yilian.kernel.prc_id import mask

# 18-character resident ID numbers (and legacy 15-digit ones), standing alone or after a
# separator such as "|" or its URL encoding "%7C".
_RESIDENT_ID = re.compile(r"(?<!\d)(?:\d{17}[\dXx]|\d{15})(?![\dXx])")
# Mainland mobile numbers, with or without +86 and separators (plain or URL-encoded).
_SEP = r"(?:[- ]|%20)?"
_MOBILE = re.compile(rf"(?<!\d)(?:(?:\+|%2[Bb])?86{_SEP})?(1[3-9]\d){_SEP}(\d{{4}}){_SEP}(\d{{4}})(?!\d)")


def scrub(text: str | None) -> str | None:
    """``text`` with every ID number and mobile number masked."""
    if not text:
        return text
    text = _RESIDENT_ID.sub(lambda m: mask(m[0]), text)
    return _MOBILE.sub(lambda m: f"{m[1]}****{m[3]}", text)
