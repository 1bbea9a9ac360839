"""YILIAN_FUND_ADMINISTRATORS: which institution runs which fund, read and checked at start."""

from __future__ import annotations

import pytest

from yilian.api.wiring import platform_settings
from yilian.kernel.errors import Category, YilianError
from yilian.payments import clearing_party, fund_administrators
from yilian.payments.administrators import ENV, check_administrators, funds_of

FUNDS = {"fund:ncms:330500", "aid:medical-aid:330500", "fund:urban-resident:330500"}


def test_the_mapping_names_each_funds_administrator() -> None:
    env = {
        ENV: " fund:ncms:330500=Organization/ybj , aid:medical-aid:330500=mz,fund:urban-resident:330500=ybj"
    }
    assert fund_administrators(env) == {
        "fund:ncms:330500": "ybj",
        "aid:medical-aid:330500": "mz",
        "fund:urban-resident:330500": "ybj",
    }
    assert funds_of("ybj", env) == {"fund:ncms:330500", "fund:urban-resident:330500"}
    assert funds_of("a-hospital", env) == frozenset()
    assert fund_administrators({}) == {}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("fund:ncms:330500", "must look like"),
        ("=org", "must look like"),
        ("fund:ncms:330500=", "must look like"),
        ("fund:ncms:330500=a,fund:ncms:330500=b", "named twice"),
    ],
)
def test_a_malformed_mapping_is_refused_with_its_reason(value: str, says: str) -> None:
    with pytest.raises(YilianError) as info:
        fund_administrators({ENV: value})
    assert info.value.category is Category.INVALID and says in info.value.message


def test_a_fund_no_policy_has_stops_the_start() -> None:
    check_administrators(FUNDS, {ENV: "fund:ncms:330500=ybj"})
    with pytest.raises(YilianError, match="fund:ncsm:330500"):
        check_administrators(FUNDS, {ENV: "fund:ncsm:330500=ybj"})
    with pytest.raises(YilianError, match="names funds no policy has"):
        platform_settings({ENV: "fund:nowhere:1=ybj"})


def test_a_party_sees_what_it_is_paid_and_what_its_funds_pay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "fund:ncms:330500=ybj")
    party = clearing_party("ybj")
    assert party.sees({"payer": "fund:ncms:330500", "payee": "hospital-1"})
    assert party.sees({"payer": "card-issuer", "payee": "ybj"})
    assert not party.sees({"payer": "card-issuer", "payee": "hospital-1"})
    assert not clearing_party("hospital-1").sees({"payer": "fund:ncms:330500", "payee": "hospital-2"})
