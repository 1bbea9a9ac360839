"""Addresses as matching evidence: one normalised string per record, compared fuzzily.

Addresses are typed freely (全角/半角 digits, "号"/"#", abbreviations), so only exact and
"close" agreement are distinguished; a moved resident simply disagrees, which the weights
learn to treat as weak evidence.
"""

from __future__ import annotations

import re
import sys
import unicodedata

from rapidfuzz import fuzz

_PUNCT = re.compile(r"[^\w]+")
ADDRESS_CLOSE = 85.0  # token-sort ratio at and above which two addresses are "close"


def normalise_address(*parts: str | None) -> str:
    text = " ".join(p for p in parts if p)
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(t for t in _PUNCT.split(text) if t)


def normalise_postcode(value: str | None) -> str:
    if not value:
        return ""
    text = unicodedata.normalize("NFKC", value).strip().replace(" ", "")
    return sys.intern(text) if text else ""


def address_level(a: str, b: str) -> str | None:
    if not a or not b:
        return None
    if a == b:
        return "exact"
    if fuzz.token_sort_ratio(a, b) >= ADDRESS_CLOSE:
        return "close"
    return "different"
