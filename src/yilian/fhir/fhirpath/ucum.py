"""Just enough UCUM to compare quantities whose units differ by a known factor.

Clinical data mixes ``mg`` and ``g``, ``[lb_av]`` and ``kg``, ``mmol/L`` and ``umol/L``;
FHIRPath comparisons (and quantity search) must see ``1 'g' = 1000 'mg'``. This parses
the usual shape of UCUM codes — prefixed metric atoms, customary atoms in brackets,
exponents, ``.`` and ``/``, ``10*n`` factors and ``{annotations}`` — into a factor and a
dimension over the base units. Units it does not know, and the affine temperature
scales (Cel, [degF]), compare only with themselves.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import lru_cache

Dimension = tuple[tuple[str, int], ...]

_PREFIXES: dict[str, Decimal] = {
    "Y": Decimal("1e24"), "Z": Decimal("1e21"), "E": Decimal("1e18"), "P": Decimal("1e15"),
    "T": Decimal("1e12"), "G": Decimal("1e9"), "M": Decimal("1e6"), "k": Decimal("1e3"),
    "h": Decimal("1e2"), "da": Decimal("1e1"), "d": Decimal("1e-1"), "c": Decimal("1e-2"),
    "m": Decimal("1e-3"), "u": Decimal("1e-6"), "n": Decimal("1e-9"), "p": Decimal("1e-12"),
    "f": Decimal("1e-15"), "a": Decimal("1e-18"),
}  # fmt: skip

# atom -> (factor to base units, dimension, takes metric prefixes)
_ATOMS: dict[str, tuple[Decimal, dict[str, int], bool]] = {
    "m": (Decimal(1), {"L": 1}, True),
    "g": (Decimal(1), {"M": 1}, True),
    "s": (Decimal(1), {"T": 1}, True),
    "mol": (Decimal(1), {"N": 1}, True),
    "eq": (Decimal(1), {"N": 1}, True),
    "K": (Decimal(1), {"Θ": 1}, True),
    "A": (Decimal(1), {"I": 1}, True),
    "cd": (Decimal(1), {"J": 1}, True),
    "L": (Decimal("0.001"), {"L": 3}, True),
    "l": (Decimal("0.001"), {"L": 3}, True),
    "Hz": (Decimal(1), {"T": -1}, True),
    "N": (Decimal(1000), {"M": 1, "L": 1, "T": -2}, True),
    "Pa": (Decimal(1000), {"M": 1, "L": -1, "T": -2}, True),
    "bar": (Decimal(100000000), {"M": 1, "L": -1, "T": -2}, True),
    "J": (Decimal(1000), {"M": 1, "L": 2, "T": -2}, True),
    "W": (Decimal(1000), {"M": 1, "L": 2, "T": -3}, True),
    "cal": (Decimal("4184"), {"M": 1, "L": 2, "T": -2}, True),
    "U": (Decimal(1) / Decimal(60000000), {"N": 1, "T": -1}, True),
    "kat": (Decimal(1), {"N": 1, "T": -1}, True),
    "[iU]": (Decimal(1), {"iU": 1}, True),
    "[IU]": (Decimal(1), {"iU": 1}, True),
    "min": (Decimal(60), {"T": 1}, False),
    "h": (Decimal(3600), {"T": 1}, False),
    "d": (Decimal(86400), {"T": 1}, False),
    "wk": (Decimal(604800), {"T": 1}, False),
    "mo": (Decimal(2629800), {"T": 1}, False),
    "a": (Decimal(31557600), {"T": 1}, False),
    "mm[Hg]": (Decimal("133322.387415"), {"M": 1, "L": -1, "T": -2}, False),
    "cm[H2O]": (Decimal("98066.5"), {"M": 1, "L": -1, "T": -2}, False),
    "[lb_av]": (Decimal("453.59237"), {"M": 1}, False),
    "[oz_av]": (Decimal("28.349523125"), {"M": 1}, False),
    "[in_i]": (Decimal("0.0254"), {"L": 1}, False),
    "[ft_i]": (Decimal("0.3048"), {"L": 1}, False),
    "[yd_i]": (Decimal("0.9144"), {"L": 1}, False),
    "[mi_i]": (Decimal("1609.344"), {"L": 1}, False),
    "[gal_us]": (Decimal("0.003785411784"), {"L": 3}, False),
    "[pt_us]": (Decimal("0.000473176473"), {"L": 3}, False),
    "[foz_us]": (Decimal("0.0000295735295625"), {"L": 3}, False),
    "%": (Decimal("0.01"), {}, False),
    "[ppm]": (Decimal("1e-6"), {}, False),
    "[ppb]": (Decimal("1e-9"), {}, False),
}

_FACTOR = re.compile(r"10[*^]([+-]?\d+)|(\d+)")
_EXPONENT = re.compile(r"(.*?[^\d+-])([+-]?\d+)")
_ANNOTATION = re.compile(r"\{[^}]*\}")


@lru_cache(maxsize=1024)
def canonical(code: str) -> tuple[Decimal, Dimension] | None:
    """``code`` as (factor, dimension) over base units, or None if it is not understood."""
    text = code.strip()
    if not text:
        return None
    factor = Decimal(1)
    dims: dict[str, int] = {}
    # split into terms, remembering whether each divides
    terms = re.split(r"([./])", text)
    sign = 1
    for piece in terms:
        if piece == ".":
            sign = 1
            continue
        if piece == "/":
            sign = -1
            continue
        if piece == "":
            continue
        term = _term(piece)
        if term is None:
            return None
        f, d = term
        factor = factor * f if sign > 0 else factor / f
        for k, v in d.items():
            dims[k] = dims.get(k, 0) + sign * v
    return factor, tuple(sorted((k, v) for k, v in dims.items() if v))


def _term(piece: str) -> tuple[Decimal, dict[str, int]] | None:
    stripped = _ANNOTATION.sub("", piece)
    if not stripped:
        return Decimal(1), {}
    number = _FACTOR.fullmatch(stripped)
    if number:
        if number.group(1) is not None:
            return Decimal(10) ** int(number.group(1)), {}
        return Decimal(number.group(2)), {}
    atom = _atom(stripped)
    if atom is not None:
        return atom
    m = _EXPONENT.fullmatch(stripped)
    if m:
        base = _atom(m.group(1))
        if base is not None:
            exp = int(m.group(2))
            return base[0] ** exp, {k: v * exp for k, v in base[1].items()}
    return None


def _atom(text: str) -> tuple[Decimal, dict[str, int]] | None:
    if text in _ATOMS:
        f, d, _ = _ATOMS[text]
        return f, d
    for size in (2, 1):
        prefix, rest = text[:size], text[size:]
        if prefix in _PREFIXES and rest in _ATOMS and _ATOMS[rest][2]:
            f, d, _ = _ATOMS[rest]
            return _PREFIXES[prefix] * f, d
    return None


def convert(value: Decimal, from_code: str, to_code: str) -> Decimal | None:
    """``value`` in ``from_code`` expressed in ``to_code``; None when they measure different things."""
    if from_code == to_code:
        return value
    a, b = canonical(from_code), canonical(to_code)
    if a is None or b is None or a[1] != b[1]:
        return None
    return value * a[0] / b[0]
