"""The demo region's card payments: wallets topped up, charges paid at the doctor's desk with the
insurer's and medical aid's shares taken on the spot, a few partial refunds, and inpatients'
deposits — some settled at discharge, some still held.

Everything goes through the payments system's own use cases (``yilian.payments``), as a
counter or an HIS would, so the demo's ledger is one the platform made: balanced, adjudicated
by the policies in force, and visible through the API, the FHIR views and the day close.
Deterministic for a seed and a list of cards; dated today (charges are booked on the business
day they are made).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from yilian import payments
from yilian.db import UnitOfWork
from yilian.demo.registry import Institution


class _Line(NamedTuple):
    code: str
    name: str
    category: str
    low_fen: int  # unit price range
    high_fen: int


_CONSULTATION = {
    "hospital": _Line("ZC-0002", "普通门诊诊查费", "consultation", 1000, 2500),
    "primary": _Line("ZC-0001", "基层门诊诊查费", "consultation", 500, 1000),
}
_DRUGS = (
    _Line("YP-0001", "阿莫西林胶囊", "drug", 1200, 1800),
    _Line("YP-0102", "硝苯地平控释片", "drug", 2800, 3600),
    _Line("YP-0215", "二甲双胍缓释片", "drug", 1500, 2200),
    _Line("YP-0330", "布洛芬缓释胶囊", "drug", 900, 1400),
    _Line("YP-ZF-01", "进口营养补充剂(自费)", "drug", 6000, 9000),  # out of the catalogue: self-pay
)
_TESTS = (
    _Line("JY-0001", "血常规", "lab", 2000, 2500),
    _Line("JY-0110", "空腹血糖", "lab", 800, 1200),
    _Line("JC-0021", "胸部X线摄影", "exam", 6000, 9000),
)
_WARD = (
    _Line("CW-0001", "床位费", "bed", 4000, 6000),
    _Line("HL-0001", "一级护理", "nursing", 3000, 4000),
    _Line("SS-0120", "腹腔镜胆囊切除术", "surgery", 250000, 320000),
    _Line("CL-0007", "一次性手术耗材", "material", 40000, 80000),
)
_CHANNELS = ("cash", "wechat", "alipay", "bank-card", "self-service")
_TOP_UPS_YUAN = (200, 300, 500, 800, 1000, 2000)


@dataclass
class Tally:
    """What the demo's payments came to, for the summary ``yilian demo`` prints."""

    top_ups: int = 0
    top_up_fen: int = 0
    charges: int = 0
    total_fen: int = 0
    insurer_fen: int = 0
    aid_fen: int = 0
    self_pay_fen: int = 0
    refunds: int = 0
    deposits_held: int = 0
    deposits_settled: int = 0

    def add(self, other: Tally) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class Desks:
    """Where the demo's money moves: the FHIR Organization ids of the member institutions."""

    hospitals: tuple[str, ...]
    primary: tuple[str, ...]  # community and township health centres
    ward: str  # the tertiary hospital, where the inpatients are

    @classmethod
    def of(cls, institutions: Sequence[Institution], ids: Mapping[str, str]) -> Desks:
        """The desks of the registry's ``institutions``, ``ids`` their server ids by fullUrl."""
        hospitals = [i for i in institutions if i.kind == "hospital"]
        return cls(
            hospitals=tuple(ids[i.full_url] for i in hospitals),
            primary=tuple(ids[i.full_url] for i in institutions if i.kind in ("community", "township")),
            ward=next(ids[i.full_url] for i in hospitals if i.level == "3"),
        )


def _item(rng: random.Random, line: _Line, quantity: int = 1) -> payments.Item:
    price = rng.randrange(line.low_fen, line.high_fen + 1, 10)
    return payments.Item(line.code, line.name, line.category, price, quantity)


def _outpatient_bill(rng: random.Random, at_hospital: bool) -> list[payments.Item]:
    items = [_item(rng, _CONSULTATION["hospital" if at_hospital else "primary"])]
    for line in rng.sample(_DRUGS, rng.choice((1, 1, 2))):
        items.append(_item(rng, line, rng.randint(1, 3)))
    if rng.random() < (0.5 if at_hospital else 0.2):
        items.append(_item(rng, rng.choice(_TESTS)))
    return items


def _inpatient_bill(rng: random.Random, nights: int) -> list[payments.Item]:
    bed, nursing, surgery, material = _WARD
    items = [_item(rng, bed, nights), _item(rng, nursing, nights), _item(rng, rng.choice(_DRUGS[:4]), 6)]
    if rng.random() < 0.5:
        items += [_item(rng, surgery), _item(rng, material)]
    return items


def _cover(uow: UnitOfWork, card_no: str, need_fen: int, org: str, tally: Tally) -> None:
    """Top the wallet up at the self-service machine, in whole hundreds of yuan, when its
    available money would not pay ``need_fen`` (the bill before reimbursement: always enough)."""
    short = need_fen - payments.wallet(uow, card_no=card_no).available_fen
    if short > 0:
        amount = -(-short // 10_000) * 10_000
        payments.top_up(uow, card_no=card_no, amount_fen=amount, channel="self-service", org=org)
        tally.top_ups += 1
        tally.top_up_fen += amount


def _count(tally: Tally, result: payments.ChargeResult) -> None:
    s = result.shares
    tally.charges += 1
    tally.total_fen += s.total_fen
    tally.insurer_fen += s.insurer_fen
    tally.aid_fen += s.aid_fen
    tally.self_pay_fen += s.self_pay_fen


def pay_with_card(uow: UnitOfWork, *, seed: int, n: int, card_no: str, desks: Desks, tally: Tally) -> None:
    """The ``n``-th demo card's payments, in ``uow`` (the caller commits)."""
    rng = random.Random(f"{seed}:payments:{n}")
    hospital_id = rng.choice(desks.hospitals)
    home_id = rng.choice(desks.primary)
    amount = rng.choice(_TOP_UPS_YUAN) * 100
    payments.top_up(uow, card_no=card_no, amount_fen=amount, channel=rng.choice(_CHANNELS), org=home_id)
    tally.top_ups += 1
    tally.top_up_fen += amount

    if n % 25 == 7:  # an inpatient: a deposit at admission, settled at discharge or still held
        deposit = rng.choice((3000, 5000, 8000)) * 100
        payments.top_up(uow, card_no=card_no, amount_fen=deposit, channel="bank-card", org=desks.ward)
        tally.top_ups += 1
        tally.top_up_fen += deposit
        hold = payments.hold_deposit(
            uow, card_no=card_no, org=desks.ward, department="inpatient", amount_fen=deposit
        )
        if n % 50 == 7:
            tally.deposits_held += 1
        else:
            items = _inpatient_bill(rng, rng.randint(3, 7))
            _cover(uow, card_no, sum(i.amount_fen for i in items) - deposit, desks.ward, tally)
            bill = payments.charge(
                uow,
                card_no=card_no,
                org=desks.ward,
                department="inpatient",
                items=items,
                setting="inpatient",
                hold_id=hold.hold_id,
            )
            _count(tally, bill)
            tally.deposits_settled += 1

    for _ in range(rng.choice((0, 1, 1, 2))):  # outpatient visits, most at primary care
        at_hospital = rng.random() < 0.4
        org = hospital_id if at_hospital else home_id
        items = _outpatient_bill(rng, at_hospital)
        _cover(uow, card_no, sum(i.amount_fen for i in items), org, tally)
        visit = payments.charge(uow, card_no=card_no, org=org, department="clinic", items=items)
        _count(tally, visit)
        if rng.random() < 0.08:  # medicine handed back at the pharmacy window
            back = max(1, visit.shares.total_fen // 4)
            payments.refund(uow, charge_id=visit.charge_id, amount_fen=back, reason="退药 medicine returned")
            tally.refunds += 1
