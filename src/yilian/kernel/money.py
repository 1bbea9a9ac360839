"""Money in integer fen (分), one currency (CNY).

Amounts are ``int`` fen everywhere: in storage, in arithmetic, on the wire. Floats never touch
money (0.1 + 0.2 is not 0.3); rates are integer basis points (1/10000) and every product is
rounded explicitly, so two servers computing the same share get the same fen.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from yilian.kernel.errors import Category, YilianError

BASIS = 10_000  # basis points in one: a ratio of 75% is 7_500
MAX_FEN = 10**15  # far above any real amount, far below 2**63: sums of many never overflow BIGINT


def format_fen(fen: int) -> str:
    """``¥12.34``, ``-¥0.05``: how people read an amount."""
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"{sign}¥{yuan:,}.{cents:02d}"


def parse_yuan(text: str) -> int:
    """``"12.34"`` yuan → 1234 fen; more than two decimals is refused rather than rounded."""
    try:
        value = Decimal(text.strip().lstrip("¥"))
    except InvalidOperation:
        raise YilianError(Category.INVALID, f"not an amount of yuan: {text!r}") from None
    fen = value * 100
    if fen != fen.to_integral_value():
        raise YilianError(Category.INVALID, f"an amount has at most two decimals (fen): {text!r}")
    return int(fen)


def parse_ratio(text: str | int) -> int:
    """``"72.5%"`` or ``80`` (percent) → basis points, exactly (policies are written in percent)."""
    raw = str(text).strip().rstrip("%").strip()
    try:
        value = Decimal(raw) * 100
    except InvalidOperation:
        raise YilianError(Category.INVALID, f"not a percentage: {text!r}") from None
    if value != value.to_integral_value() or not 0 <= value <= BASIS:
        raise YilianError(Category.INVALID, f"a ratio is 0-100% with at most two decimals: {text!r}")
    return int(value)


def apply_ratio(amount: int, ratio_bp: int) -> int:
    """``amount × ratio`` rounded down to the fen: a fund never pays a fraction more than its ratio."""
    return amount * ratio_bp // BASIS


def allocate(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` (largest-remainder method), exactly.

    Each part is at most its weight when ``total <= sum(weights)``, and the parts always sum to
    ``total`` — which a per-part rounding cannot promise.
    """
    whole = sum(weights)
    if whole <= 0:
        raise ValueError("weights must have a positive sum")
    quotients = [divmod(total * w, whole) for w in weights]
    parts = [q for q, _ in quotients]
    left = total - sum(parts)
    # Ties go to the earlier weight, so the split is deterministic.
    order = sorted(range(len(weights)), key=lambda i: (-quotients[i][1], i))
    for i in order[:left]:
        parts[i] += 1
    return parts
