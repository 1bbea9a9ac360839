"""Storage of the ledger: accounts, transactions and their postings, charges, holds, year-to-date
usage of insurance benefits, settlement days and their batch lines, idempotency keys.

Amounts are BIGINT fen. History is append-only: a posting is never updated or deleted; a
correction is a new transaction. The only mutable money columns are ``pay_account.balance`` and
``held``, caches of the postings kept in the same transaction as them (the trial balance
checks they agree), because the floor check must be one guarded UPDATE, not a sum.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Column, Index, Integer, LargeBinary, String, Table, Text

from yilian.db.schema import SurrogateKey, metadata

account = Table(
    "pay_account",
    metadata,
    # "wallet:<patient>", "org:<org>:<point>", "fund:<scheme>:<region>", "channel:<name>",
    # "clearing:<payer>:<org>"…
    Column("account_id", String(160), primary_key=True),
    Column("kind", String(16), nullable=False),  # wallet | merchant | fund | aid | channel | clearing
    Column("owner", String(128), nullable=False),  # card number, organization id, fund or channel code
    Column("floor", BigInteger, nullable=True),  # None: may go below zero (funds owe, channels pay out)
    Column("balance", BigInteger, nullable=False),
    Column("held", BigInteger, nullable=False),  # open deposit holds (wallets only)
    Column("created", BigInteger, nullable=False),
    CheckConstraint("held >= 0", name="held_not_negative"),
    # The floor is also a constraint, so that no code path (a bug, a manual fix) can overdraw.
    CheckConstraint("floor IS NULL OR balance - held >= floor", name="above_floor"),
    Index("ix_pay_account_owner", "owner"),
)

txn = Table(
    "pay_txn",
    metadata,
    Column("txn_id", String(36), primary_key=True),
    Column("kind", String(16), nullable=False),  # top-up | charge | refund | hold-post | clearing
    Column("at", BigInteger, nullable=False),  # µs since epoch
    Column("business_date", String(10), nullable=False),  # YYYY-MM-DD, Beijing time
    Column("ref", String(36), nullable=True),  # the charge / hold it records, or the day it clears
    Column("org", String(64), nullable=True),  # the institution it concerns (what clearing groups by)
    Column("memo", Text, nullable=True),
    Index("ix_pay_txn_day", "business_date", "org"),
    Index("ix_pay_txn_ref", "ref"),
)

posting = Table(
    "pay_posting",
    metadata,
    Column("posting_id", SurrogateKey, primary_key=True, autoincrement=True),
    Column("txn_id", String(36), nullable=False),
    Column("account_id", String(160), nullable=False),
    # Signed: positive = the account holds more (credit to a wallet or a hospital), negative = less.
    Column("amount", BigInteger, nullable=False),
    Index("ix_pay_posting_txn", "txn_id"),
    Index("ix_pay_posting_account", "account_id", "posting_id"),
)

charge = Table(
    "pay_charge",
    metadata,
    Column("charge_id", String(36), primary_key=True),
    Column("txn_id", String(36), nullable=False),
    Column("card_no", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("person_id", String(64), nullable=True),
    Column("org", String(64), nullable=False),
    Column("department", String(64), nullable=False),
    Column("encounter", String(64), nullable=True),
    Column("hold_id", String(36), nullable=True),  # the deposit it was paid from (discharge bills)
    Column("setting", String(16), nullable=False),  # outpatient | inpatient
    Column("at", BigInteger, nullable=False),
    Column("business_date", String(10), nullable=False),
    Column("total_fen", BigInteger, nullable=False),
    Column("insurer_fen", BigInteger, nullable=False),
    Column("aid_fen", BigInteger, nullable=False),
    Column("self_pay_fen", BigInteger, nullable=False),
    Column("insurer_account", String(160), nullable=True),
    Column("aid_account", String(160), nullable=True),
    Column("deductible_fen", BigInteger, nullable=False),  # deductible this charge consumed
    Column("aid_deductible_fen", BigInteger, nullable=False),
    # What has been refunded so far, per share; a refund never returns more than a share holds.
    Column("refunded_insurer_fen", BigInteger, nullable=False),
    Column("refunded_aid_fen", BigInteger, nullable=False),
    Column("refunded_self_fen", BigInteger, nullable=False),
    Column("items", Text, nullable=False),  # JSON: the itemised lines as charged
    Column("adjudication", Text, nullable=False),  # JSON: policy, coverage, steps and their reasons
    Index("ix_pay_charge_card", "card_no", "at"),
)

refund = Table(
    "pay_refund",
    metadata,
    Column("refund_id", String(36), primary_key=True),
    Column("charge_id", String(36), nullable=False),
    Column("txn_id", String(36), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("insurer_fen", BigInteger, nullable=False),
    Column("aid_fen", BigInteger, nullable=False),
    Column("self_pay_fen", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Index("ix_pay_refund_charge", "charge_id"),
)

hold = Table(
    "pay_hold",
    metadata,
    Column("hold_id", String(36), primary_key=True),
    Column("card_no", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),  # whose wallet holds it
    Column("org", String(64), nullable=False),
    Column("department", String(64), nullable=False),
    Column("encounter", String(64), nullable=True),
    Column("amount_fen", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # held | posted | voided | expired
    Column("posted_fen", BigInteger, nullable=True),
    Column("txn_id", String(36), nullable=True),  # the posting's ledger transaction
    Column("created", BigInteger, nullable=False),
    Column("expires", BigInteger, nullable=False),
    Column("finished", BigInteger, nullable=True),
    Index("ix_pay_hold_card", "card_no", "status"),
    Index("ix_pay_hold_expires", "status", "expires"),
)

# Year-to-date use of a benefit by one person (across every institution in the region):
# bucket "fund" = what the fund has paid (against the annual cap), "deductible:<setting>" = the
# deductible met so far. One row per (person, fund account, year, bucket), locked while adjudicating.
usage = Table(
    "pay_usage",
    metadata,
    Column("person", String(64), primary_key=True),
    Column("fund", String(160), primary_key=True),
    Column("year", Integer, primary_key=True),
    Column("bucket", String(120), primary_key=True),  # "fund", "deductible:inpatient:<encounter id>"…
    Column("amount_fen", BigInteger, nullable=False),
)

# One row per business day once anything happened on it; ledger writers take it shared, the day
# close takes it exclusively, so no transaction of a day can commit after the day is closed.
day = Table(
    "pay_day",
    metadata,
    Column("business_date", String(10), primary_key=True),
    Column("status", String(16), nullable=False),  # open | closed
    Column("closed_at", BigInteger, nullable=True),
    Column("closed_by", String(160), nullable=True),
    Column("txn_count", BigInteger, nullable=True),
    Column("report", LargeBinary, nullable=True),  # the close's reply, as first sent (JSON bytes)
)

batch_line = Table(
    "pay_batch_line",
    metadata,
    Column("line_id", SurrogateKey, primary_key=True, autoincrement=True),
    Column("business_date", String(10), nullable=False),
    Column("payer", String(160), nullable=False),  # the card issuer's clearing account or a fund
    Column("payee", String(64), nullable=False),  # the institution
    Column("amount_fen", BigInteger, nullable=False),  # net: charges less refunds
    Column("txn_count", Integer, nullable=False),
    Index("ix_pay_batch_line_day", "business_date"),
)

# Which transactions each batch line clears: the reconciliation report ties line to transactions.
batch_txn = Table(
    "pay_batch_txn",
    metadata,
    Column("line_id", BigInteger, primary_key=True),
    Column("txn_id", String(36), primary_key=True),
    Column("amount_fen", BigInteger, nullable=False),
    Index("ix_pay_batch_txn_txn", "txn_id"),
)

# The payment of a batch line (the bank transfer that settles what the payer owes the payee for
# the day): one per line, by its primary key, so a line is never paid twice whoever retries.
payout = Table(
    "pay_payout",
    metadata,
    Column("line_id", BigInteger, primary_key=True),
    Column("business_date", String(10), nullable=False),
    Column("txn_id", String(36), nullable=False),  # the ledger transaction (kind ``payout``)
    Column("reference", String(64), nullable=False),  # the bank's or the payer's transfer reference
    Column("paid_at", BigInteger, nullable=False),  # µs
    Column("paid_by", String(160), nullable=False),
    Index("ix_pay_payout_day", "business_date"),
)

idempotency = Table(
    "pay_idempotency",
    metadata,
    Column("caller", String(160), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),  # SHA-256 of method, path and body
    Column("status", Integer, nullable=False),
    Column("response", LargeBinary, nullable=False),  # the first reply's bytes, returned as they were
    Column("created", BigInteger, nullable=False),
    Index("ix_pay_idempotency_created", "created"),
)

# What the FHIR views (Claim, ClaimResponse, Account, PaymentReconciliation) still have to be
# written for: one row per changed subject ("charge:<id>", "wallet:<patient id>", "day:<date>"),
# inserted in the transaction that changed it and deleted in the one that published it, so a
# change is never acknowledged without its publication queued. A subject may appear many times
# (a busy wallet); the publisher writes it once per batch.
publication = Table(
    "pay_publish",
    metadata,
    Column("seq", SurrogateKey, primary_key=True, autoincrement=True),
    Column("subject", String(200), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("not_before", BigInteger, nullable=True),  # µs; after a failure, the next try
    Column("queued", BigInteger, nullable=False),  # µs: when the change was made (the views' lag)
    Index("ix_pay_publish_subject", "subject"),
)
