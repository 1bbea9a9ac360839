"""The rule of every identifier system of people that docs/identifiers.md defines, as data.

:data:`RULES` maps a system to its :class:`Rule`; systems under a platform prefix (passports,
one per issuing state; MRNs, one per institution) are found by :data:`PREFIX_RULES`, whose rule
also checks the part of the system after the prefix. A system that is not ours (Synthea's,
the official examples', a hospital's own OID) has no rule and any value is accepted: we cannot
know its format.

:func:`normalise` validates one value and returns the form it is stored in (upper-case letters
where the rule says so; the ID number's 18-character form). Messages say which identifier and
which rule and never repeat the value: most of these numbers identify a person.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from yilian.kernel import health_card, naming, prc_id
from yilian.kernel.errors import Category, YilianError


@dataclass(frozen=True, slots=True)
class Rule:
    """How the values of one identifier system look.

    Either ``parse`` (a number with a check character: validates and returns the normal form,
    raising INVALID with its own message) or ``pattern`` over ``alphabet`` with ``expected``
    saying the rule in words. ``upper``: letters are accepted in either case and stored
    upper-case. ``system`` checks the part of a prefixed system after the prefix.
    """

    name: str
    expected: str = ""
    pattern: re.Pattern[str] | None = None
    alphabet: re.Pattern[str] | None = None  # one allowed character
    upper: bool = False
    parse: Callable[[str], str] | None = None
    system: tuple[re.Pattern[str], str] | None = None  # (the tail's pattern, the rule in words)


def _resident_id(value: str) -> str:
    return prc_id.parse(value).number


def _card(value: str) -> str:
    return health_card.parse(value).value


_DIGITS_UPPER: Final = re.compile(r"[0-9A-Z]")
_INSURANCE: Final = Rule(
    "insurance member number",
    "6-20 digits or capital letters",
    re.compile(r"[0-9A-Z]{6,20}"),
    _DIGITS_UPPER,
)

RULES: Final[Mapping[str, Rule]] = MappingProxyType(
    {
        naming.PRC_RESIDENT_ID: Rule("PRC resident ID number", parse=_resident_id),
        naming.HEALTH_CARD: Rule("health card number", parse=_card),
        naming.INSURANCE_EMPLOYEE: _INSURANCE,
        naming.INSURANCE_RESIDENT: _INSURANCE,
        naming.HK_MACAO_PERMIT: Rule(
            "Hong Kong/Macao home-return permit number",
            "H or M followed by 8 or 10 digits",
            re.compile(r"[HM]\d{8}(?:\d{2})?"),
            re.compile(r"[0-9HM]"),
            upper=True,
        ),
        naming.TAIWAN_PERMIT: Rule(
            "Taiwan compatriot permit number", "8 digits", re.compile(r"\d{8}"), re.compile(r"\d")
        ),
        naming.PHONE: Rule(
            "mobile phone number",
            "11 digits beginning 13-19, without country code or separators",
            re.compile(r"1[3-9]\d{9}"),
            re.compile(r"\d"),
        ),
    }
)
"""Rules of the systems with one fixed URI. ``INSURANCE_NCMS`` (legacy numbers "as issued" by
county offices) and ``DEMO_RECORD`` have none."""

PREFIX_RULES: Final[Mapping[str, Rule]] = MappingProxyType(
    {
        naming.PLATFORM_SID + "passport/": Rule(
            "passport number",
            "5-20 letters and digits (the ICAO 9303 characters, without '<' filler)",
            re.compile(r"[0-9A-Z]{5,20}"),
            _DIGITS_UPPER,
            upper=True,
            system=(re.compile(r"[A-Z]{3}"), "the issuing state as an ISO 3166-1 alpha-3 code such as CHN"),
        ),
        naming.PLATFORM_SID + "mrn/": Rule(
            "medical record number",
            system=(
                re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,63}"),
                "the institution key: 1-64 letters, digits, '.' or '-'",
            ),
        ),
    }
)
"""Rules of the system families: one URI per issuing state or institution under a prefix.
An MRN's value is as the hospital assigned it; only its namespace is checked."""


def rule_for(system: str) -> tuple[Rule, str] | None:
    """The rule of ``system`` and, for a prefixed family, the system's tail (else ``""``)."""
    rule = RULES.get(system)
    if rule is not None:
        return rule, ""
    for prefix, family in PREFIX_RULES.items():
        if system.startswith(prefix):
            return family, system[len(prefix) :]
    return None


def check_system(system: str) -> None:
    """Refuse a system of a platform family whose tail breaks the family's rule
    (``…/passport/usa``, ``…/mrn/``)."""
    found = rule_for(system)
    if found is None:
        return
    rule, tail = found
    if rule.system is not None and not rule.system[0].fullmatch(tail):
        raise YilianError(
            Category.INVALID, f"{rule.name}: the identifier system must end in {rule.system[1]}"
        )


def normalise(system: str, value: str) -> str:
    """``value`` as it is stored under ``system``, or INVALID saying which rule it breaks.

    Values of systems without a rule come back unchanged.
    """
    found = rule_for(system)
    if found is None:
        return value
    rule = found[0]
    if rule.parse is not None:
        return rule.parse(value)
    if rule.pattern is None:
        return value
    text = value.strip()
    if rule.upper:
        text = text.upper()
    if rule.pattern.fullmatch(text):
        return text
    raise YilianError(Category.INVALID, f"{rule.name}: {_what_is_wrong(rule, text)}")


def _what_is_wrong(rule: Rule, text: str) -> str:
    if not text:
        return f"the value is empty; expected {rule.expected}"
    if rule.alphabet is not None:
        for i, ch in enumerate(text):
            if not rule.alphabet.fullmatch(ch):
                return f"character {i + 1} is not allowed; expected {rule.expected}"
    return f"expected {rule.expected}, got {len(text)} characters"
