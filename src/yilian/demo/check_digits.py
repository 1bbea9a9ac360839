"""Check characters of the institution numbers the demo issues.

The demo must only produce numbers that a validating system would accept, so each
number is built with its standard's check character:

- organisation code (组织机构代码, GB 11714-1997): 8 characters + MOD 11 check (``X`` for 10);
- unified social credit code (统一社会信用代码, GB 32100-2015): 17 characters + MOD 31 check.

Health card numbers are not made here: the card system issues them (``yilian.card``).

These are candidates for ``yilian.kernel`` once the registry validates incoming numbers.
"""

from __future__ import annotations

# GB 32100 character set: digits and capitals without I, O, S, V, Z (easily misread).
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


def _org_value(char: str) -> int:
    # GB 11714: digits keep their value, letters count from A=10.
    return int(char) if char.isdigit() else ord(char) - ord("A") + 10


def organization_code_check(body: str) -> str:
    """Check character for the 8-character body of an organisation code."""
    if len(body) != 8 or not all(c.isdigit() or "A" <= c <= "Z" for c in body):
        raise ValueError("an organisation code body is 8 digits or capital letters")
    remainder = 11 - sum(_org_value(c) * w for c, w in zip(body, _ORG_WEIGHTS, strict=True)) % 11
    return {10: "X", 11: "0"}.get(remainder, str(remainder))


def uscc_check(first17: str) -> str:
    """Check character for the first 17 characters of a unified social credit code."""
    if len(first17) != 17 or any(c not in USCC_ALPHABET for c in first17):
        raise ValueError(
            "a unified social credit code has 17 characters from the GB 32100 set before its check"
        )
    total = sum(USCC_ALPHABET.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def make_uscc(authority: str, kind: str, division: str, org_body: str) -> str:
    """A complete code: registration authority + organisation type + division + organisation code + check.

    ``authority``/``kind`` as in GB 32100 (e.g. ``1``/``1`` a government body registered by the
    establishment office, ``1``/``2`` a public institution, ``5``/``2`` a private non-enterprise unit).
    """
    first17 = authority + kind + division + org_body + organization_code_check(org_body)
    return first17 + uscc_check(first17)


def is_valid_uscc(code: str) -> bool:
    return (
        len(code) == 18
        and all(c in USCC_ALPHABET for c in code)
        and uscc_check(code[:17]) == code[17]
        and organization_code_check(code[8:16]) == code[16]
    )
