"""Worked reimbursement cases from the shipped 2026 Huzhou policies, checked to the fen.

The same cases are written out by hand in docs/payments.md ("Worked cases"); a change in a
policy file or in the rules shows here first.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from yilian.kernel.errors import YilianError
from yilian.payments.adjudication import (
    Claim,
    Policy,
    adjudicate,
    load_policies,
    parse_policy,
    policy_in_force,
)
from yilian.payments.model import Item

POLICIES = load_policies()
ON = dt.date(2026, 6, 15)


def policy(scheme: str) -> Policy:
    found = policy_in_force(POLICIES, scheme=scheme, region="330500", on=ON)
    assert found is not None
    return found


NCMS = policy("ncms")
AID = policy("medical-aid")
OUTPATIENT_COUNTY = Claim(setting="outpatient", level="county", institution_region="330522", visit="c1")
INPATIENT_CITY = Claim(setting="inpatient", level="city", institution_region="330502", visit="enc-1")
WARD = [
    Item("CW-01", "床位费", "bed", 8_000, 10),
    Item("SS-0301", "腹腔镜手术", "surgery", 500_000, 1),
    Item("YP-1001", "头孢曲松", "drug", 120_000, 1),
    Item("YP-ZF-01", "自费靶向药", "drug", 30_000, 1),  # in the excluded list
]


def shares(
    items: list[Item], claim: Claim, used: dict[tuple[str, str], int] | None = None, *, aid: bool = False
) -> tuple[int, int, int, int]:
    s = adjudicate(items, claim, insurance=NCMS, aid=AID if aid else None, used=used or {})
    return s.total_fen, s.insurer_fen, s.aid_fen, s.self_pay_fen


def test_case_1_outpatient_county_first_visit_of_the_year() -> None:
    items = [
        Item("YP-2001", "二甲双胍", "drug", 12_000, 1),
        Item("JY-01", "血常规", "lab", 8_000, 1),
        Item("ST-1", "餐费", "canteen", 1_500, 1),
    ]
    # eligible 20 000; annual deductible ¥100 → 10 000 left; 50% → 5 000.
    assert shares(items, OUTPATIENT_COUNTY) == (21_500, 5_000, 0, 16_500)


def test_case_2_inpatient_city() -> None:
    # eligible 700 000 (the self-paid drug is excluded); per-visit deductible ¥1 000; 60% of 600 000.
    assert shares(WARD, INPATIENT_CITY) == (730_000, 360_000, 0, 370_000)


def test_case_3_major_disease_waives_the_deductible_and_has_its_own_ratio() -> None:
    s = adjudicate(WARD, replace(INPATIENT_CITY, diagnoses=("C50.900",)), insurance=NCMS, aid=None, used={})
    assert (s.insurer_fen, s.self_pay_fen, s.deductible_fen) == (560_000, 170_000, 0)
    assert any("C50.900" in step.detail for step in s.steps)


def test_case_4_out_of_region_loses_ten_points() -> None:
    claim = replace(INPATIENT_CITY, institution_region="330102")  # Hangzhou, outside the Huzhou pool
    assert shares(WARD, claim) == (730_000, 300_000, 0, 430_000)


def test_case_5_the_annual_cap_across_the_region() -> None:
    used = {("ncms/330500/2026", "fund"): 19_900_000}
    s = adjudicate(WARD, INPATIENT_CITY, insurance=NCMS, aid=None, used=used)
    assert (s.insurer_fen, s.self_pay_fen) == (100_000, 630_000)
    assert [step.rule for step in s.steps if step.rule == "cap"] == ["cap"]
    exhausted = adjudicate(
        WARD, INPATIENT_CITY, insurance=NCMS, aid=None, used={("ncms/330500/2026", "fund"): 20_000_000}
    )
    assert exhausted.insurer_fen == 0


def test_case_6_medical_aid_on_what_remains() -> None:
    claim = Claim(setting="inpatient", level="township", institution_region="330502", visit="enc-9")
    items = [Item("ZL-01", "治疗费", "treatment", 100_000, 1)]
    # township inpatient: deductible 20 000, 85% of 80 000 = 68 000; aid 70% of 32 000 = 22 400.
    assert shares(items, claim, aid=True) == (100_000, 68_000, 22_400, 9_600)


def test_case_7_rounding_is_down_to_the_fen_for_the_fund() -> None:
    claim = Claim(setting="outpatient", level="county", institution_region="330522", visit="c2")
    used = {("ncms/330500/2026", "deductible:outpatient"): 10_000}  # deductible already met
    assert shares([Item("YP-1", "x", "drug", 3_333, 1)], claim, used) == (3_333, 1_666, 0, 1_667)


def test_case_8_per_visit_deductible_counts_within_the_encounter() -> None:
    used = {("ncms/330500/2026", "deductible:inpatient:enc-1"): 60_000}
    s = adjudicate(WARD, INPATIENT_CITY, insurance=NCMS, aid=None, used=used)
    assert s.deductible_fen == 40_000 and s.insurer_fen == (700_000 - 40_000) * 60 // 100
    # Another admission starts over.
    other = adjudicate(WARD, replace(INPATIENT_CITY, visit="enc-2"), insurance=NCMS, aid=None, used=used)
    assert other.deductible_fen == 100_000


def test_case_9_no_coverage_pays_nothing() -> None:
    s = adjudicate(WARD, INPATIENT_CITY, insurance=None, aid=None, used={})
    assert (s.insurer_fen, s.aid_fen, s.self_pay_fen) == (0, 0, 730_000)


def test_usage_deltas_say_what_to_add() -> None:
    s = adjudicate(WARD, INPATIENT_CITY, insurance=NCMS, aid=None, used={})
    assert s.usage == {
        ("ncms/330500/2026", "fund"): 360_000,
        ("ncms/330500/2026", "deductible:inpatient:enc-1"): 100_000,
    }


def test_a_later_version_takes_over_from_its_date_and_keeps_the_years_usage() -> None:
    doc = {
        "scheme": "ncms",
        "name": "新农合",
        "region": "330500",
        "year": 2026,
        "version": 2,
        "valid_from": "2026-07-01",
        "valid_to": "2026-12-31",
        "fund_account": "fund:ncms:330500",
        "annual_cap_fen": 20_000_000,
        "covered_categories": ["drug"],
        "outpatient": {
            "deductible_scope": "annual",
            "deductible_fen": {"township": 0, "county": 0, "city": 0},
            "ratio": {"township": "72.5%", "county": "50%", "city": "40%"},
        },
        "inpatient": {
            "deductible_scope": "per-visit",
            "deductible_fen": {"township": 0, "county": 0, "city": 0},
            "ratio": {"township": "90%", "county": "80%", "city": "70%"},
        },
    }
    v2 = parse_policy(doc, source="test")
    both = [*POLICIES, v2]
    assert policy_in_force(both, scheme="ncms", region="330500", on=dt.date(2026, 6, 30)) == NCMS
    assert policy_in_force(both, scheme="ncms", region="330500", on=dt.date(2026, 7, 1)) == v2
    assert v2.usage_key == NCMS.usage_key and v2.settings["outpatient"].ratio_bp["township"] == 7_250
    assert policy_in_force(both, scheme="ncms", region="330500", on=dt.date(2027, 1, 1)) is None


@pytest.mark.parametrize(
    "change",
    [
        {"annual_cap_fen": 12.5},
        {
            "outpatient": {
                "deductible_scope": "annual",
                "deductible_fen": {"township": 0},
                "ratio": {"township": "1%"},
            }
        },
        {"valid_from": "2026-12-31", "valid_to": "2026-01-01"},
        {"kind": "lottery"},
    ],
)
def test_malformed_policies_are_refused(change: dict[str, object]) -> None:
    import yaml

    from yilian.payments.adjudication import POLICY_DIR

    doc = yaml.safe_load((POLICY_DIR / "ncms-330500-2026.yaml").read_text(encoding="utf-8"))
    doc.update(change)
    with pytest.raises(YilianError):
        parse_policy(doc, source="bad")


def test_every_shipped_policy_parses_with_ratios_in_basis_points() -> None:
    assert {p.scheme for p in POLICIES} == {"ncms", "urban-employee", "urban-resident", "medical-aid"}
    for p in POLICIES:
        for rule in p.settings.values():
            assert all(isinstance(v, int) and 0 <= v <= 10_000 for v in rule.ratio_bp.values())
