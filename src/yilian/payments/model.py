"""Plain types and pure rules of payments: items, shares, views, the errors callers can act on."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from yilian.kernel.errors import Category, YilianError
from yilian.kernel.money import MAX_FEN

# Business days are Beijing days: a charge at 23:30 in Huzhou belongs to that evening's clearing,
# whatever the server's clock zone.
BEIJING = dt.timezone(dt.timedelta(hours=8), "Asia/Shanghai")

SETTINGS = ("outpatient", "inpatient")
LEVELS = ("township", "county", "city")
CHANNELS = ("cash", "bank-card", "wechat", "alipay", "self-service", "transfer")
ISSUER = "card-issuer"  # who owes the hospitals what was paid out of card wallets

DEFAULT_HOLD_SECONDS = 30 * 24 * 3600


class PaymentError(YilianError):
    """A refusal with a machine-readable ``reason`` (``insufficient-balance``, ``day-closed``…),
    so a cashier's terminal can tell a lost card from an empty one without parsing text."""

    def __init__(self, category: Category, reason: str, message: str) -> None:
        super().__init__(category, message)
        self.reason = reason


def refuse(category: Category, reason: str, message: str) -> PaymentError:
    return PaymentError(category, reason, message)


def check_amount(amount_fen: int, what: str = "amount_fen") -> int:
    """A positive whole number of fen, below anything that could overflow a sum."""
    if isinstance(amount_fen, bool) or not isinstance(amount_fen, int) or not 0 < amount_fen <= MAX_FEN:
        raise refuse(
            Category.INVALID,
            "bad-amount",
            f"{what} must be a positive whole number of fen (分), from 1 to {MAX_FEN}; got {amount_fen!r}",
        )
    return amount_fen


def business_date(at: dt.datetime) -> dt.date:
    return at.astimezone(BEIJING).date()


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_us(at: dt.datetime) -> int:
    """µs since the epoch, exactly (``timestamp()`` goes through a float)."""
    return (at - _EPOCH) // dt.timedelta(microseconds=1)


def from_us(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


def wallet_account(patient_id: str) -> str:
    return f"wallet:{patient_id}"


def merchant_account(org: str, point: str) -> str:
    return f"org:{org}:{point}"


def channel_account(channel: str) -> str:
    return f"channel:{channel}"


def clearing_account(payer: str, payee: str) -> str:
    """What ``payer`` (the card issuer, or a fund account) owes institution ``payee`` for the
    days closed so far: the payer's clearing account for that institution."""
    return f"clearing:{payer}:{payee}"


@dataclass(frozen=True, slots=True)
class Item:
    """One itemised line of a charge. ``category`` decides coverage (drug, exam, lab, treatment,
    bed, material, canteen, parking…); ``code`` is the item's catalogue code."""

    code: str
    name: str
    category: str
    unit_price_fen: int
    quantity: int
    charge_item: str | None = None  # the FHIR ChargeItem (in the shared record) this line bills, if any

    @property
    def amount_fen(self) -> int:
        return self.unit_price_fen * self.quantity

    def as_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "category": self.category,
            "unit_price_fen": self.unit_price_fen,
            "quantity": self.quantity,
            "amount_fen": self.amount_fen,
            **({"charge_item": f"ChargeItem/{self.charge_item}"} if self.charge_item else {}),
        }


def check_items(items: list[Item]) -> None:
    if not items:
        raise refuse(Category.INVALID, "no-items", "a charge needs at least one item")
    for n, item in enumerate(items):
        if not item.code.strip() or not item.category.strip():
            raise refuse(Category.INVALID, "bad-item", f"item {n}: code and category are required")
        check_amount(item.unit_price_fen, f"items[{n}].unit_price_fen")
        if (
            isinstance(item.quantity, bool)
            or not isinstance(item.quantity, int)
            or not 0 < item.quantity <= 100_000
        ):
            raise refuse(
                Category.INVALID, "bad-item", f"items[{n}].quantity must be a whole number from 1 to 100000"
            )
    check_amount(sum(i.amount_fen for i in items), "the charge's total")


@dataclass(frozen=True, slots=True)
class Step:
    """One line of an explanation: what rule applied, to how much, with what effect."""

    rule: str  # catalogue | deductible | ratio | cap | aid-deductible | aid-ratio | aid-cap | self-pay
    amount_fen: int
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "amount_fen": self.amount_fen, "detail": self.detail}


@dataclass(frozen=True)
class Shares:
    """Who pays what of one charge, and why. ``total = insurer + aid + self_pay`` always."""

    total_fen: int
    insurer_fen: int
    aid_fen: int
    self_pay_fen: int
    insurer_policy: str | None = None
    aid_policy: str | None = None
    deductible_fen: int = 0  # the insurance deductible this charge consumed
    aid_deductible_fen: int = 0
    steps: tuple[Step, ...] = ()
    # (fund policy key, usage bucket) → amount to add to the person's year-to-date usage
    usage: dict[tuple[str, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.insurer_fen + self.aid_fen + self.self_pay_fen != self.total_fen:
            raise AssertionError("shares do not add up to the total")
        if min(self.insurer_fen, self.aid_fen, self.self_pay_fen) < 0:
            raise AssertionError("a share is negative")


@dataclass(frozen=True, slots=True)
class WalletView:
    card_no: str
    balance_fen: int
    held_fen: int

    @property
    def available_fen(self) -> int:
        return self.balance_fen - self.held_fen

    def as_json(self) -> dict[str, Any]:
        return {
            "card_no": self.card_no,
            "balance_fen": self.balance_fen,
            "held_fen": self.held_fen,
            "available_fen": self.available_fen,
        }
