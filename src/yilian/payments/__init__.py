"""Card payments and settlement (一卡通 结算): the double-entry ledger, charges, reimbursement, daily clearing.

Public surface (every use case takes the unit of work first and keyword arguments; the caller
commits): ``top_up``, ``wallet``, ``statement``, ``charge``, ``refund``, ``hold_deposit``,
``post_hold``, ``void_hold``, ``expire_holds``, ``close_day``, ``day_report``, ``trial_balance``;
``Item`` (a charge line) and ``PaymentError`` (a refusal with a machine-readable ``reason``);
``idempotency`` for entry points that replay a keyed request's first reply.
"""

from yilian.payments import idempotency
from yilian.payments.clearing import close_day, day_report, parse_day
from yilian.payments.ledger import TrialBalance, trial_balance
from yilian.payments.model import Item, PaymentError, WalletView
from yilian.payments.service import (
    charge,
    expire_holds,
    get_charge,
    get_hold,
    hold_deposit,
    post_hold,
    refund,
    statement,
    top_up,
    void_hold,
    wallet,
)

__all__ = [
    "Item",
    "PaymentError",
    "TrialBalance",
    "WalletView",
    "charge",
    "close_day",
    "day_report",
    "expire_holds",
    "get_charge",
    "get_hold",
    "hold_deposit",
    "idempotency",
    "parse_day",
    "post_hold",
    "refund",
    "statement",
    "top_up",
    "trial_balance",
    "void_hold",
    "wallet",
]
