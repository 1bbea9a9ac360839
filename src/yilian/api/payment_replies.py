"""The shapes of the payments API's replies, as the OpenAPI document shows them.

The handlers build their replies as plain JSON (the bytes of a keyed reply are stored and replayed
as they were first sent), so these models describe the replies rather than produce them; the API
tests validate every reply they receive against its model, with unknown fields forbidden, so a
field added, renamed or dropped in the code without the model fails a test instead of silently
leaving the document behind.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WalletReply(_Reply):
    card_no: str = Field(description="the card number as presented")
    balance_fen: int = Field(description="stored value on the wallet, in fen")
    held_fen: int = Field(description="reserved by open deposit holds")
    available_fen: int = Field(description="balance less held: what a charge can take")


class TopUpReply(_Reply):
    txn_id: str
    amount_fen: int
    wallet_balance_fen: int
    wallet_held_fen: int
    wallet_available_fen: int


class StatementEntry(_Reply):
    txn_id: str
    at: str = Field(description="ISO 8601, Beijing time")
    kind: str = Field(description="top-up, charge, refund or hold-post")
    amount_fen: int = Field(description="signed: positive into the wallet, negative out of it")
    balance_after_fen: int | None = Field(
        default=None,
        description="the balance this movement left; absent in an institution's view, which lists only its own movements",
    )
    org: str | None
    ref: str | None = Field(description="the charge or hold it records")
    memo: str | None


class StatementReply(WalletReply):
    entries: list[StatementEntry] = Field(description="newest first")


class Step(_Reply):
    rule: str = Field(
        description="catalogue, deductible, ratio, cap, aid-deductible, aid-ratio, aid-cap, self-pay…"
    )
    amount_fen: int
    detail: str


class CoverageUsed(_Reply):
    scheme: str
    region: str
    coverage: str = Field(description="Coverage/{id}")
    payor: str | None


class Explanation(_Reply):
    insurer_policy: str | None
    aid_policy: str | None
    coverage: list[CoverageUsed]
    steps: list[Step]
    text: str = Field(description="the steps as one sentence")
    self_pay: bool = Field(description="the patient chose to pay it all (自费): nothing was reimbursed")


class ChargeReply(_Reply):
    charge_id: str
    txn_id: str
    total_fen: int
    insurer_fen: int = Field(description="paid by the insurance fund at once (即时结报)")
    aid_fen: int = Field(description="paid by medical aid on what insurance left")
    self_pay_fen: int = Field(description="taken from the wallet")
    wallet_balance_fen: int
    explanation: Explanation


class EstimateReply(_Reply):
    total_fen: int
    insurer_fen: int = Field(description="what the insurance fund would pay at once")
    aid_fen: int = Field(description="what medical aid would pay on what insurance leaves")
    self_pay_fen: int = Field(description="the patient's part")
    from_deposit_fen: int = Field(description="of it, what the inpatient deposit (hold_id) would pay first")
    wallet_available_fen: int = Field(description="the wallet's balance less its deposits held, now")
    wallet_covers: bool = Field(
        description="whether the available balance pays the patient's part (after the deposit's)"
    )
    explanation: Explanation


class ChargedItem(_Reply):
    code: str
    name: str
    category: str
    unit_price_fen: int
    quantity: int
    amount_fen: int
    charge_item: str | None = Field(default=None, description="ChargeItem/{id}, when the line bills one")


class Adjudication(_Reply):
    insurer_policy: str | None
    aid_policy: str | None
    insurer_scheme: str | None
    aid_scheme: str | None
    level: str
    institution_region: str
    diagnoses: list[str]
    coverage: list[CoverageUsed]
    usage: list[tuple[str, str, int]] = Field(description="[fund, bucket, fen] added to year-to-date usage")
    usage_year: int
    steps: list[Step]
    self_pay: bool = Field(default=False, description="the patient chose to pay it all (自费)")


class ChargeDetailReply(_Reply):
    charge_id: str
    card_no: str
    org: str
    department: str
    encounter: str | None
    setting: str
    business_date: str
    total_fen: int
    insurer_fen: int
    aid_fen: int
    self_pay_fen: int
    refunded_fen: int
    items: list[ChargedItem]
    explanation: Adjudication


class RefundReply(_Reply):
    refund_id: str
    charge_id: str
    txn_id: str
    amount_fen: int
    insurer_fen: int
    aid_fen: int
    self_pay_fen: int
    refundable_fen: int = Field(description="what is left to refund of the charge")
    wallet_balance_fen: int


class HoldReply(_Reply):
    hold_id: str
    card_no: str
    org: str
    department: str
    amount_fen: int
    status: str = Field(description="held, posted, voided or expired")
    posted_fen: int | None
    txn_id: str | None
    expires: str = Field(description="ISO 8601, Beijing time")


class BatchLine(_Reply):
    line_id: int | None = Field(default=None, description="present once the day is closed")
    payer: str = Field(description="card-issuer, or a fund account (fund:<scheme>:<region>)")
    payee: str = Field(description="the institution (Organization id)")
    amount_fen: int = Field(description="what the payer owes the payee: charges less refunds")
    txn_count: int
    clearing_txn_id: str | None = Field(
        default=None,
        description="closed days: the ledger transaction that moved the line's amount from the payee's "
        "merchant points to the payer's clearing account for it (clearing:<payer>:<payee>); null when "
        "the line nets to nothing on every point",
    )
    payout: PaidLine | None = Field(
        default=None,
        description="closed days: the transfer that paid the line (POST …/payouts), null while it is owed",
    )
    transfer_code: str | None = Field(
        default=None,
        description="closed days: YL<yyyymmdd>L<line>, for the payer to put in the transfer's memo, by "
        "which `yilian payments bank-statement` matches the bank's statement to the line",
    )


class PaidLine(_Reply):
    txn_id: str = Field(description="the ledger transaction (kind payout) off the clearing account")
    reference: str = Field(description="the transfer's reference, as the payer gave it")
    paid_at: str
    paid_by: str


class PayoutReply(_Reply):
    line_id: int
    business_date: str
    payer: str
    payee: str
    amount_fen: int = Field(description="the line's amount, now off clearing:<payer>:<payee>")
    txn_id: str
    reference: str
    paid_at: str
    paid_by: str


class Totals(_Reply):
    by_payer: dict[str, int]
    by_payee: dict[str, int]


class TiedTransaction(_Reply):
    txn_id: str
    amount_fen: int


class ReconciledLine(_Reply):
    line_id: int
    tied_fen: int
    txn_count: int
    clearing_txn_id: str | None = Field(default=None, description="the line's clearing transaction")
    transactions: list[TiedTransaction] | None = Field(default=None, description="with ?detail=true")


class Reconciliation(_Reply):
    reconciled: bool
    problems: list[str]
    lines: list[ReconciledLine]


class CloseDayReply(_Reply):
    business_date: str
    status: str = Field(description="closed")
    closed_at: str
    closed_by: str
    transactions: int = Field(description="ledger transactions dated that day")
    lines: list[BatchLine]
    totals: Totals


class DayReply(_Reply):
    business_date: str
    status: str = Field(description="open (positions so far) or closed (the batch)")
    closed_at: str | None = None
    closed_by: str | None = None
    transactions: int | None = None
    lines: list[BatchLine]
    totals: Totals
    reconciliation: Reconciliation | None = Field(
        default=None, description="closed days: the batch re-checked against the ledger now"
    )
    outstanding_fen: int | None = Field(
        default=None, description="closed days: the sum of the lines not paid yet"
    )


class AccountBalance(_Reply):
    account: str
    kind: str
    owner: str
    balance_fen: int
    held_fen: int


class TrialBalanceReply(_Reply):
    accounts: list[AccountBalance]
    debits_fen: int
    credits_fen: int
    total_fen: int = Field(description="sum of every balance: zero when the books balance")
    balanced: bool
    mismatched_accounts: list[str]
