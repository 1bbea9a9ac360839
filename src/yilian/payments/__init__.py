"""Card payments and settlement (一卡通 结算): the double-entry ledger, charges, reimbursement, daily clearing.

Public surface (every use case takes the unit of work first and keyword arguments; the caller
commits): ``top_up``, ``wallet``, ``statement``, ``charge`` (and ``estimate``, its pre-settlement:
nothing posted), ``refund``, ``hold_deposit``,
``post_hold``, ``void_hold``, ``expire_holds``, ``close_day``, ``day_report``, ``record_payout``
(a closed day's batch line paid by transfer), ``own_wallet`` (a resident's wallet by their Patient, for the portal), ``read_statement`` and ``match_statement`` (a
bank statement's rows matched to the lines they pay), ``trial_balance``;
``Item`` (a charge line) and ``PaymentError`` (a refusal with a machine-readable ``reason``);
``idempotency`` for entry points that replay a keyed request's first reply; ``Party`` and
``policy_files`` (where the reimbursement policies come from: the shipped ones and
``YILIAN_POLICY_DIR``) and ``policy_warnings`` (a scheme whose last policy runs out soon);
``clearing_party`` for what one institution (a hospital, or an insurer by the funds it
administers, ``YILIAN_FUND_ADMINISTRATORS``) may see of a day's clearing.

The FHIR views of the ledger (Claim, ClaimResponse, Account, PaymentReconciliation) are stored
resources, written after each change by ``publish_pending`` (a ``PublicationWorker`` thread in
the server); ``publication_status`` and ``retry_publication`` look after its queue.
"""

import datetime as dt
from collections.abc import Mapping

from yilian.payments import idempotency, policy_files
from yilian.payments.administrators import check_administrators, fund_administrators, funds_of
from yilian.payments.clearing import Party, close_day, day_report, parse_day
from yilian.payments.ledger import TrialBalance, trial_balance
from yilian.payments.model import Item, PaymentError, WalletView
from yilian.payments.payouts import Payout, record_payout
from yilian.payments.publication import PublicationWorker, PublishResult, QueueStatus, publish_pending
from yilian.payments.publication import queue_status as publication_status
from yilian.payments.publication import retry_now as retry_publication
from yilian.payments.service import (
    ChargeResult,
    Estimate,
    StatementLine,
    charge,
    estimate,
    expire_holds,
    get_charge,
    get_hold,
    hold_deposit,
    own_wallet,
    post_hold,
    refund,
    statement,
    top_up,
    void_hold,
    wallet,
)
from yilian.payments.statements import Match, StatementRow, read_statement, transfer_code
from yilian.payments.statements import match as match_statement


def clearing_party(org_id: str) -> Party:
    """What ``org_id`` may read of a day's clearing: the lines it is paid and its funds pay."""
    return Party(org_id, funds_of(org_id))


def check_fund_administrators(env: Mapping[str, str] | None = None) -> None:
    """Refuse at start a fund mapping that names a fund no policy has."""
    from yilian.payments.service import policies

    check_administrators({p.fund_account for p in policies()}, env)


def policy_warnings(today: dt.date | None = None) -> list[policy_files.Ending]:
    """Each scheme and region whose last loaded policy runs out within ``policy_files.WARN_DAYS``
    of ``today`` (Beijing time by default): said when the server starts."""
    from yilian.kernel import clock
    from yilian.payments.model import business_date
    from yilian.payments.service import policies

    return policy_files.ending(policies(), today=today or business_date(clock.now()))


__all__ = [
    "ChargeResult",
    "Estimate",
    "Item",
    "Match",
    "Party",
    "PaymentError",
    "Payout",
    "PublicationWorker",
    "PublishResult",
    "QueueStatus",
    "StatementLine",
    "StatementRow",
    "TrialBalance",
    "WalletView",
    "charge",
    "check_fund_administrators",
    "clearing_party",
    "close_day",
    "day_report",
    "estimate",
    "expire_holds",
    "fund_administrators",
    "get_charge",
    "get_hold",
    "hold_deposit",
    "idempotency",
    "match_statement",
    "own_wallet",
    "parse_day",
    "policy_files",
    "policy_warnings",
    "post_hold",
    "publication_status",
    "publish_pending",
    "read_statement",
    "record_payout",
    "refund",
    "retry_publication",
    "statement",
    "top_up",
    "transfer_code",
    "trial_balance",
    "void_hold",
    "wallet",
]
