"""Money in fen: formatting, parsing, ratios and exact allocation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from yilian.kernel.errors import YilianError
from yilian.kernel.money import allocate, apply_ratio, format_fen, parse_ratio, parse_yuan


def test_format() -> None:
    assert format_fen(1234) == "¥12.34"
    assert format_fen(-5) == "-¥0.05"
    assert format_fen(123_456_789) == "¥1,234,567.89"


def test_parse_yuan_is_exact() -> None:
    assert parse_yuan("12.34") == 1234
    assert parse_yuan("¥0.10") == 10
    for bad in ("12.345", "abc"):
        with pytest.raises(YilianError):
            parse_yuan(bad)


def test_ratios_are_basis_points() -> None:
    assert parse_ratio("72.5%") == 7_250
    assert parse_ratio(80) == 8_000
    assert apply_ratio(3_333, 5_000) == 1_666
    for bad in ("101%", "-1%", "33.333%"):
        with pytest.raises(YilianError):
            parse_ratio(bad)


@given(st.lists(st.integers(0, 10**9), min_size=1, max_size=5).filter(lambda w: sum(w) > 0), st.data())
def test_allocate_sums_exactly_and_respects_each_weight(weights: list[int], data: st.DataObject) -> None:
    total = data.draw(st.integers(0, sum(weights)))
    parts = allocate(total, weights)
    assert sum(parts) == total
    assert all(0 <= p <= w for p, w in zip(parts, weights, strict=True))
