"""Use cases of card payments. Each takes the unit of work first and keyword arguments, runs in the
caller's transaction and never commits: a refusal raised anywhere leaves nothing posted.

Lock order, the same in every use case so that concurrent ones cannot deadlock: the idempotency
key (the caller's), then the charge or hold row, then the person's year-to-date usage rows
(sorted), then the business day (shared), then accounts (sorted, in :mod:`ledger`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from sqlalchemy import BigInteger, Connection, Integer, String, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.expression import ClauseElement

from yilian import card as cards
from yilian.db import UnitOfWork
from yilian.db.statements import Batch, Family, Statement, insert_row
from yilian.kernel import clock
from yilian.kernel.errors import Category
from yilian.kernel.ids import new_id
from yilian.kernel.money import allocate, format_fen
from yilian.payments import coverage, ledger, policy_files
from yilian.payments import tables as t
from yilian.payments.adjudication import Claim, Policy, adjudicate, usage_buckets
from yilian.payments.ledger import AccountSpec
from yilian.payments.model import (
    BEIJING,
    CHANNELS,
    DEFAULT_HOLD_SECONDS,
    SETTINGS,
    Item,
    Shares,
    WalletView,
    business_date,
    channel_account,
    check_amount,
    check_items,
    from_us,
    merchant_account,
    refuse,
    to_us,
    wallet_account,
)


@cache
def policies() -> tuple[Policy, ...]:
    """The shipped policies and the deployment's (``YILIAN_POLICY_DIR``), read once per process:
    a new file takes effect at the next start."""
    return policy_files.load()


def _wallet(patient_id: str) -> AccountSpec:
    # The wallet belongs to the resident (the card's Patient), not to the plastic: a replaced card
    # resolves to the same Patient and finds the same balance, with no transfer to get wrong.
    return AccountSpec(wallet_account(patient_id), "wallet", patient_id, 0)


def _merchant(org: str, point: str) -> AccountSpec:
    return AccountSpec(merchant_account(org, point), "merchant", org, None)


def _fund(policy: Policy) -> AccountSpec:
    return AccountSpec(
        policy.fund_account, "fund" if policy.kind == "insurance" else "aid", policy.scheme, None
    )


def _channel(channel: str) -> AccountSpec:
    return AccountSpec(channel_account(channel), "channel", channel, None)


def _point(value: str, what: str) -> str:
    value = (value or "").strip()
    if not value or len(value) > 64 or ":" in value:
        raise refuse(Category.INVALID, "bad-request", f"{what} must be 1-64 characters without ':'")
    return value


def _usable(uow: UnitOfWork, card_no: str, patients: frozenset[str] | None = None) -> cards.CardView:
    return cards.require_usable(uow, card_no, patients=patients)


# --------------------------------------------------------------------------- wallet


def wallet(uow: UnitOfWork, *, card_no: str, patients: frozenset[str] | None = None) -> WalletView:
    """The wallet behind a usable card. ``patients``: only cards issued on these Patients (a
    resident's own); any other answers as an unknown card."""
    card = _usable(uow, card_no, patients)
    balance, held = ledger.balance(uow, wallet_account(card.patient_id))
    return WalletView(card.card_no, balance, held)


@dataclass(frozen=True)
class TopUp:
    txn_id: str
    amount_fen: int
    wallet: WalletView

    def as_json(self) -> dict[str, Any]:
        return {"txn_id": self.txn_id, "amount_fen": self.amount_fen, **_prefixed(self.wallet)}


def _prefixed(view: WalletView) -> dict[str, Any]:
    return {
        "wallet_balance_fen": view.balance_fen,
        "wallet_held_fen": view.held_fen,
        "wallet_available_fen": view.available_fen,
    }


def top_up(uow: UnitOfWork, *, card_no: str, amount_fen: int, channel: str, org: str) -> TopUp:
    """Money in at a counter or a self-service machine: the channel pays, the wallet holds."""
    check_amount(amount_fen)
    if channel not in CHANNELS:
        raise refuse(Category.INVALID, "bad-channel", f"channel must be one of {', '.join(CHANNELS)}")
    org = _point(org, "org")
    card = _usable(uow, card_no)
    coverage.institution(uow, org)
    spec = _wallet(card.patient_id)
    posted = ledger.post(
        uow,
        kind="top-up",
        postings=[(_channel(channel), -amount_fen), (spec, amount_fen)],
        org=org,
        memo=f"top-up via {channel}",
    )
    balance, held = ledger.balance_after(uow, posted, spec.account_id)
    return TopUp(posted.txn_id, amount_fen, WalletView(card.card_no, balance, held))


@dataclass(frozen=True)
class StatementLine:
    txn_id: str
    at: dt.datetime
    kind: str
    amount_fen: int
    balance_after_fen: int | None  # None in an institution's view (see :func:`statement`)
    org: str | None
    ref: str | None
    memo: str | None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "txn_id": self.txn_id,
            "at": self.at.astimezone(BEIJING).isoformat(),
            "kind": self.kind,
            "amount_fen": self.amount_fen,
            "balance_after_fen": self.balance_after_fen,
            "org": self.org,
            "ref": self.ref,
            "memo": self.memo,
        }
        if self.balance_after_fen is None:
            del out["balance_after_fen"]
        return out


def statement(
    uow: UnitOfWork,
    *,
    card_no: str,
    limit: int = 50,
    patients: frozenset[str] | None = None,
    org: str | None = None,
) -> tuple[WalletView, list[StatementLine]]:
    """The wallet and its newest movements, newest first, each with the balance it left
    (``patients`` as for :func:`wallet`).

    ``org`` is the view of an institution the card is presented to: the balance, and only the
    movements made at that institution, without the balance each left. Where else the holder
    paid (a psychiatric clinic, a pharmacy) is the holder's business; a balance after each of the
    institution's own lines would show, by its jumps, how much went elsewhere and when.
    """
    card = _usable(uow, card_no, patients)
    balance, held = ledger.balance(uow, wallet_account(card.patient_id))
    view = WalletView(card.card_no, balance, held)
    return view, _movements(uow, card.patient_id, balance, limit, org)


def own_wallet(uow: UnitOfWork, *, patient_id: str, limit: int = 20) -> tuple[int, int, list[StatementLine]]:
    """A resident's own wallet, for the portal: (balance, held, newest movements with the balance
    each left). By the Patient, not by a card: the wallet is the resident's whichever card they
    carry, and a resident who has lost theirs can still see it. The caller decides whose."""
    balance, held = ledger.balance(uow, wallet_account(patient_id))
    return balance, held, _movements(uow, patient_id, balance, limit, None)


def _movements(
    uow: UnitOfWork, patient_id: str, balance: int, limit: int, org: str | None
) -> list[StatementLine]:
    p, x = t.posting, t.txn
    stmt = (
        select(p.c.amount, x.c.txn_id, x.c.at, x.c.kind, x.c.org, x.c.ref, x.c.memo)
        .join(x, x.c.txn_id == p.c.txn_id)
        .where(p.c.account_id == wallet_account(patient_id))
        .order_by(p.c.posting_id.desc())
        .limit(max(1, min(limit, 1000)))
    )
    if org is not None:
        stmt = stmt.where(x.c.org == org)
    lines = []
    after = balance
    for row in uow.conn.execute(stmt):  # walk back from the current balance
        shown = None if org is not None else after
        lines.append(
            StatementLine(
                row.txn_id, from_us(row.at), row.kind, int(row.amount), shown, row.org, row.ref, row.memo
            )
        )
        after -= int(row.amount)
    return lines


# --------------------------------------------------------------------------- charges


_u = t.usage
_PERSON_YEAR = (
    _u.c.person == bindparam("person", type_=String),
    _u.c.year == bindparam("year", type_=Integer),
)
# Every counter of the person's year, locked in one statement in (fund, bucket) order: the rows
# come out of the sort and are locked in that order, the same in every use case, so two of them
# cannot deadlock; locking a counter this charge does not read only serializes the person's own
# payments, which their wallet row serializes anyway.
_LOCK_USAGE = Statement(
    lambda _: (
        select(_u.c.fund, _u.c.bucket, _u.c.amount_fen)
        .where(*_PERSON_YEAR)
        .order_by(_u.c.fund, _u.c.bucket)
        .with_for_update()
    )
)


def _usage_rows(dialect: str, n: int, *, add: bool) -> ClauseElement:
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = dialect_insert(_u).values(
        [
            {
                "person": bindparam("person", type_=String),
                "fund": bindparam(f"fund_{i}", type_=String),
                "year": bindparam("year", type_=Integer),
                "bucket": bindparam(f"bucket_{i}", type_=String),
                "amount_fen": bindparam(f"amount_{i}", type_=BigInteger),
            }
            for i in range(n)
        ]
    )
    if not add:
        return stmt.on_conflict_do_nothing()
    return stmt.on_conflict_do_update(
        index_elements=[_u.c.person, _u.c.fund, _u.c.year, _u.c.bucket],
        set_={"amount_fen": _u.c.amount_fen + stmt.excluded.amount_fen},
    )


_CREATE_USAGE = Family(lambda dialect, n: _usage_rows(dialect, n, add=False))
_ADD_USAGE = Family(lambda dialect, n: _usage_rows(dialect, n, add=True))


def _lock_usage(
    conn: Connection, person: str, year: int, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """Read (and lock, on PostgreSQL) the person's usage counters, creating missing ones at zero."""
    params = {"person": person, "year": year}
    found = {(fund, bucket): int(amount) for fund, bucket, amount in _LOCK_USAGE.all(conn, params)}
    missing = sorted(set(keys) - found.keys())
    if missing:
        # A counter's first use this year: created at zero (a concurrent creator's row is kept:
        # the insert waits for its transaction, then skips), then locked with the others.
        rows = [{"fund": fund, "bucket": bucket, "amount": 0} for fund, bucket in missing]
        _CREATE_USAGE.run(conn, params, rows)
        found = {(fund, bucket): int(amount) for fund, bucket, amount in _LOCK_USAGE.all(conn, params)}
    return {key: found[key] for key in sorted(set(keys))}


_READ_USAGE = Statement(
    lambda _: (
        select(_u.c.fund, _u.c.bucket, _u.c.amount_fen).where(*_PERSON_YEAR).order_by(_u.c.fund, _u.c.bucket)
    )
)


def _read_usage(
    conn: Connection, person: str, year: int, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """The person's usage counters as they stand, unlocked (a counter not used yet is zero)."""
    found = {
        (fund, bucket): int(amount)
        for fund, bucket, amount in _READ_USAGE.all(conn, {"person": person, "year": year})
    }
    return {key: found.get(key, 0) for key in sorted(set(keys))}


def _add_usage(batch: Batch, person: str, year: int, deltas: dict[tuple[str, str], int]) -> None:
    """Add to the counters (locked and created by :func:`_lock_usage`), all in one statement, sent
    with the charge's other last writes."""
    rows = [
        {"fund": fund, "bucket": bucket, "amount": delta}
        for (fund, bucket), delta in sorted(deltas.items())
        if delta
    ]
    if rows:
        _ADD_USAGE.defer(batch, {"person": person, "year": year}, rows)


@dataclass(frozen=True)
class ChargeResult:
    charge_id: str
    txn_id: str
    shares: Shares
    wallet: WalletView
    coverage: list[dict[str, Any]]
    self_pay: bool = False

    def as_json(self) -> dict[str, Any]:
        s = self.shares
        return {
            "charge_id": self.charge_id,
            "txn_id": self.txn_id,
            "total_fen": s.total_fen,
            "insurer_fen": s.insurer_fen,
            "aid_fen": s.aid_fen,
            "self_pay_fen": s.self_pay_fen,
            "wallet_balance_fen": self.wallet.balance_fen,
            "explanation": _explanation(s, self.coverage, self.self_pay),
        }


def _explanation(s: Shares, enrolled: list[dict[str, Any]], self_pay: bool) -> dict[str, Any]:
    return {
        "insurer_policy": s.insurer_policy,
        "aid_policy": s.aid_policy,
        "coverage": enrolled,
        "steps": [step.as_json() for step in s.steps],
        "text": "; ".join(step.detail for step in s.steps),
        "self_pay": self_pay,
    }


def _enrolled(enrolments: Sequence[coverage.Enrolment]) -> list[dict[str, Any]]:
    return [
        {"scheme": e.scheme, "region": e.region, "coverage": f"Coverage/{e.coverage_id}", "payor": e.payor}
        for e in enrolments
    ]


@dataclass(frozen=True)
class Estimate:
    """What a charge would cost each payer now (预结算): nothing posted, locked or counted."""

    shares: Shares
    wallet: WalletView
    coverage: list[dict[str, Any]]
    self_pay: bool
    patient_id: str  # whose record was read (for the audit), not in the reply
    deposit_fen: int = 0  # the inpatient deposit the bill would be paid from first (hold_id)

    def as_json(self) -> dict[str, Any]:
        s = self.shares
        from_deposit = min(s.self_pay_fen, self.deposit_fen)
        return {
            "total_fen": s.total_fen,
            "insurer_fen": s.insurer_fen,
            "aid_fen": s.aid_fen,
            "self_pay_fen": s.self_pay_fen,
            "from_deposit_fen": from_deposit,
            "wallet_available_fen": self.wallet.available_fen,
            # The deposit is released by the charge: the rest comes from the available balance.
            "wallet_covers": s.self_pay_fen - from_deposit <= self.wallet.available_fen,
            "explanation": _explanation(s, self.coverage, self.self_pay),
        }


_CHARGE = insert_row(t.charge)
SELF_PAY_CHOSEN = (
    "the patient chose to pay it all (自费): no reimbursement computed; they may claim it afterwards"
)


def _require_policies(found: Sequence[coverage.Enrolment], known: Sequence[Policy], day: dt.date) -> None:
    """Refuse a charge the platform would otherwise take as uninsured for want of a policy file."""
    for e in coverage.without_policy(found, known, day):
        raise refuse(
            Category.CONFLICT,
            "no-policy-in-force",
            f"the patient is enrolled in {e.scheme} in pooling region {e.region} (Coverage/{e.coverage_id}), "
            f"but no policy of that scheme is in force on {day.isoformat()}: nothing was charged. The "
            f"platform operator adds the policy ({policy_files.ENV}, docs/payments.md); until then the "
            "patient may choose to pay it all themselves (self_pay)",
        )


def _checked(items: Sequence[Item], setting: str, org: str, department: str) -> tuple[list[Item], str, str]:
    """A charge's request, checked before anything is read: its lines, setting and place."""
    lines = list(items)
    check_items(lines)
    if setting not in SETTINGS:
        raise refuse(Category.INVALID, "bad-request", f"setting must be one of {', '.join(SETTINGS)}")
    return lines, _point(org, "org"), _point(department, "department")


@dataclass(frozen=True)
class _Priced:
    """A charge adjudicated, before anything is posted."""

    day: dt.date
    person: str
    claim: Claim
    insurance: Policy | None
    aid: Policy | None
    enrolments: list[coverage.Enrolment]
    shares: Shares


def _price(
    uow: UnitOfWork,
    *,
    card: cards.CardView,
    org: str,
    items: Sequence[Item],
    visit: str,
    setting: str,
    diagnoses: Sequence[str],
    self_pay: bool,
    day: dt.date,
    lock: bool,
) -> _Priced:
    """Adjudicate ``items`` for ``card`` at ``org`` on ``day``: the coverage in force, the policies,
    the person's year-to-date usage (locked when a charge follows: see the lock order above)."""
    place, coverages = coverage.charge_facts(uow, org_id=org, patient_id=card.patient_id)
    for item in items:
        if item.charge_item:
            coverage.check_charge_item(uow, charge_item=item.charge_item, patient_id=card.patient_id)
    known = policies()
    found = coverage.enrolments_in(coverages, on=day, policies=known)
    if self_pay:
        insurance = aid = None
        used_enrolments: list[coverage.Enrolment] = []
    else:
        _require_policies(found, known, day)
        insurance, aid, used_enrolments = coverage.policies_for(found, known, day)
    person = card.person_id or card.patient_id
    used: dict[tuple[str, str], int] = {}
    claim = Claim(
        setting=setting,
        level=place.level or "city",
        institution_region=place.region or "",
        visit=visit,
        diagnoses=tuple(diagnoses),
    )
    if insurance is not None or aid is not None:
        if place.level is None or place.region is None:
            raise refuse(
                Category.INVALID,
                "institution-unclassified",
                f"Organization/{org} has no institution level or county code: reimbursement cannot be computed",
            )
        keys = [k for p in (insurance, aid) if p is not None for k in usage_buckets(p, claim)]
        used = (_lock_usage if lock else _read_usage)(uow.conn, person, day.year, keys)
    shares = adjudicate(
        items, claim, insurance=insurance, aid=aid, used=used, no_cover=SELF_PAY_CHOSEN if self_pay else None
    )
    return _Priced(day, person, claim, insurance, aid, used_enrolments, shares)


def charge(
    uow: UnitOfWork,
    *,
    card_no: str,
    org: str,
    department: str,
    items: Sequence[Item],
    encounter: str | None = None,
    setting: str = "outpatient",
    diagnoses: Sequence[str] = (),
    hold_id: str | None = None,
    self_pay: bool = False,
) -> ChargeResult:
    """A point-of-care charge (诊间结算): adjudicate against the coverage in force, then take each
    share in one ledger transaction — the fund's and the aid fund's to the institution, the rest
    from the wallet (refused whole if the wallet cannot pay its part).

    A resident enrolled in a scheme the platform settles in their pooling region, on a day no
    policy of that scheme covers (next year's file not loaded yet), is refused
    (``no-policy-in-force``) rather than charged as if uninsured. ``self_pay`` is the patient's
    choice to pay it all (自费), no reimbursement computed: they may claim it afterwards.

    With ``hold_id`` (an inpatient's discharge bill) the patient's share is paid out of that
    deposit: the hold is released and posted by this charge, exactly once; whatever the share
    exceeds the deposit by comes from the rest of the wallet."""
    items, org, department = _checked(items, setting, org, department)
    card = _usable(uow, card_no)
    deposit = _deposit(uow, hold_id, card, org, lock=True)
    now = clock.now()
    charge_id = new_id()
    priced = _price(
        uow,
        card=card,
        org=org,
        items=items,
        visit=encounter or charge_id,
        setting=setting,
        diagnoses=diagnoses,
        self_pay=self_pay,
        day=business_date(now),
        lock=True,
    )
    insurance, aid, shares, day = priced.insurance, priced.aid, priced.shares, priced.day
    person, claim, used_enrolments = priced.person, priced.claim, priced.enrolments
    postings: list[tuple[AccountSpec, int]] = [(_merchant(org, department), shares.total_fen)]
    postings.append((_wallet(card.patient_id), -shares.self_pay_fen))
    if insurance is not None:
        postings.append((_fund(insurance), -shares.insurer_fen))
    if aid is not None:
        postings.append((_fund(aid), -shares.aid_fen))
    memo = f"charge at {org}/{department}"

    # The charge's writes that nothing reads back (the transaction, its postings and publication,
    # the usage counters, the charge row) and the institution's and funds' accounts go together
    # at the end, by ledger.finish below: one round trip on PostgreSQL.
    batch = Batch(uow.conn)

    def post(memo: str) -> ledger.Posted:
        return ledger.post(
            uow,
            kind="charge",
            postings=postings,
            ref=charge_id,
            org=org,
            memo=memo,
            at=now,
            batch=batch,
        )

    if deposit is None:
        posted = post(memo)
    else:
        # A savepoint: should the wallet still be short, the release is undone with the refusal.
        with uow.conn.begin_nested():
            ledger.release(uow, wallet_account(card.patient_id), int(deposit.amount_fen))
            posted = post(memo + " from deposit")
        _finish_hold(uow, deposit, "posted", posted_fen=shares.self_pay_fen, txn_id=posted.txn_id)
    _add_usage(batch, person, day.year, shares.usage)
    enrolled = _enrolled(used_enrolments)
    _CHARGE.defer(
        batch,
        {
            "charge_id": charge_id,
            "txn_id": posted.txn_id,
            "card_no": card.card_no,
            "patient_id": card.patient_id,
            "person_id": person,
            "org": org,
            "department": department,
            "encounter": encounter,
            "hold_id": hold_id,
            "setting": setting,
            "at": posted.at,
            "business_date": posted.business_date.isoformat(),
            "total_fen": shares.total_fen,
            "insurer_fen": shares.insurer_fen,
            "aid_fen": shares.aid_fen,
            "self_pay_fen": shares.self_pay_fen,
            "insurer_account": insurance.fund_account if insurance else None,
            "aid_account": aid.fund_account if aid else None,
            "deductible_fen": shares.deductible_fen,
            "aid_deductible_fen": shares.aid_deductible_fen,
            "refunded_insurer_fen": 0,
            "refunded_aid_fen": 0,
            "refunded_self_fen": 0,
            "items": orjson.dumps([i.as_json() for i in items]).decode(),
            "adjudication": orjson.dumps(
                {
                    "insurer_policy": shares.insurer_policy,
                    "aid_policy": shares.aid_policy,
                    "insurer_scheme": insurance.scheme if insurance else None,
                    "aid_scheme": aid.scheme if aid else None,
                    "level": claim.level,
                    "institution_region": claim.institution_region,
                    "diagnoses": list(claim.diagnoses),
                    "coverage": enrolled,
                    "usage": [
                        [fund, bucket, amount] for (fund, bucket), amount in sorted(shares.usage.items())
                    ],
                    "usage_year": day.year,
                    "steps": [s.as_json() for s in shares.steps],
                    "self_pay": self_pay,
                }
            ).decode(),
        },
    )
    # The institution's and the funds' accounts last: see ledger.post.
    posted = ledger.finish(uow, posted, batch)
    balance, held = ledger.balance_after(uow, posted, wallet_account(card.patient_id))
    return ChargeResult(
        charge_id, posted.txn_id, shares, WalletView(card.card_no, balance, held), enrolled, self_pay
    )


def estimate(
    uow: UnitOfWork,
    *,
    card_no: str,
    org: str,
    department: str,
    items: Sequence[Item],
    encounter: str | None = None,
    setting: str = "outpatient",
    diagnoses: Sequence[str] = (),
    hold_id: str | None = None,
    self_pay: bool = False,
) -> Estimate:
    """Pre-settlement (预结算): each payer's share of a charge of ``items`` made now, with the
    reasons, and whether the wallet's available balance pays the patient's part — what the desk
    shows before the patient confirms; with ``hold_id`` (a discharge bill), how much of that part
    the inpatient deposit pays first. Nothing is posted, locked or counted toward the year's
    usage; the same refusals as a charge (an unusable card, no policy in force…). The charge
    itself can come out differently if the person's usage changes in between (a charge
    elsewhere), as it is adjudicated again when it is made."""
    items, org, department = _checked(items, setting, org, department)
    card = _usable(uow, card_no)
    deposit = _deposit(uow, hold_id, card, org, lock=False)
    priced = _price(
        uow,
        card=card,
        org=org,
        items=items,
        visit=encounter or new_id(),  # without an encounter, a visit of its own, as a charge would be
        setting=setting,
        diagnoses=diagnoses,
        self_pay=self_pay,
        day=business_date(clock.now()),
        lock=False,
    )
    balance, held = ledger.balance(uow, wallet_account(card.patient_id))
    return Estimate(
        priced.shares,
        WalletView(card.card_no, balance, held),
        _enrolled(priced.enrolments),
        self_pay,
        card.patient_id,
        int(deposit.amount_fen) if deposit is not None else 0,
    )


def get_charge(uow: UnitOfWork, *, charge_id: str, for_update: bool = False) -> Any:
    c = t.charge
    stmt = select(c).where(c.c.charge_id == charge_id)
    if for_update and uow.conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = uow.conn.execute(stmt).first()
    if row is None:
        raise refuse(Category.NOT_FOUND, "unknown-charge", f"no charge {charge_id}")
    return row


@dataclass(frozen=True)
class RefundResult:
    refund_id: str
    charge_id: str
    txn_id: str
    amount_fen: int
    insurer_fen: int
    aid_fen: int
    self_pay_fen: int
    refundable_fen: int  # what is left to refund of the charge
    wallet_balance_fen: int

    def as_json(self) -> dict[str, Any]:
        return {
            "refund_id": self.refund_id,
            "charge_id": self.charge_id,
            "txn_id": self.txn_id,
            "amount_fen": self.amount_fen,
            "insurer_fen": self.insurer_fen,
            "aid_fen": self.aid_fen,
            "self_pay_fen": self.self_pay_fen,
            "refundable_fen": self.refundable_fen,
            "wallet_balance_fen": self.wallet_balance_fen,
        }


def refund(uow: UnitOfWork, *, charge_id: str, amount_fen: int, reason: str) -> RefundResult:
    """Give back part or all of a charge, as a new transaction (the charge's stays as it was).

    Each payer gets back its proportion of what it has not yet had back (largest remainder, so
    the parts are whole fen and sum to the amount); the last refund returns exactly what is left,
    so a charge refunded in pieces ends with every share back to zero. The fund's year-to-date
    usage goes down by what the fund gets back; the deductible the charge consumed is restored
    only when the charge is refunded in full (a partial return does not undo a visit).
    """
    check_amount(amount_fen)
    if not reason or not reason.strip():
        raise refuse(Category.INVALID, "bad-request", "a refund needs a reason")
    row = get_charge(uow, charge_id=charge_id, for_update=True)
    remaining = [
        row.insurer_fen - row.refunded_insurer_fen,
        row.aid_fen - row.refunded_aid_fen,
        row.self_pay_fen - row.refunded_self_fen,
    ]
    left = sum(remaining)
    if amount_fen > left:
        raise refuse(
            Category.CONFLICT,
            "refund-exceeds-charge",
            f"only {format_fen(left)} of charge {charge_id} is left to refund, not {format_fen(amount_fen)}",
        )
    ins, aid_part, self_part = remaining if amount_fen == left else allocate(amount_fen, remaining)
    detail = orjson.loads(row.adjudication)
    year = int(detail["usage_year"])
    deltas: dict[tuple[str, str], int] = {}
    full = amount_fen == left
    for fund, bucket, amount in detail["usage"]:
        if bucket == "fund":
            policy_scheme = fund.split("/")[0]
            back = ins if policy_scheme == detail.get("insurer_scheme") else aid_part
            deltas[(fund, bucket)] = -back
        elif full:
            deltas[(fund, bucket)] = -int(amount)
    if deltas:
        _lock_usage(uow.conn, row.person_id, year, list(deltas))
    postings: list[tuple[AccountSpec, int]] = [
        (_merchant(row.org, row.department), -amount_fen),
        (_wallet(row.patient_id), self_part),
    ]
    if row.insurer_account:
        postings.append(
            (AccountSpec(row.insurer_account, "fund", row.insurer_account.split(":")[1], None), ins)
        )
    if row.aid_account:
        postings.append((AccountSpec(row.aid_account, "aid", row.aid_account.split(":")[1], None), aid_part))
    refund_id = new_id()
    batch = Batch(uow.conn)
    posted = ledger.post(
        uow,
        kind="refund",
        postings=postings,
        ref=charge_id,
        org=row.org,
        memo=reason.strip()[:500],
        batch=batch,
    )
    _add_usage(batch, row.person_id, year, deltas)
    posted = ledger.finish(uow, posted, batch)
    c = t.charge
    uow.conn.execute(
        update(c)
        .where(c.c.charge_id == charge_id)
        .values(
            refunded_insurer_fen=c.c.refunded_insurer_fen + ins,
            refunded_aid_fen=c.c.refunded_aid_fen + aid_part,
            refunded_self_fen=c.c.refunded_self_fen + self_part,
        )
    )
    uow.conn.execute(
        insert(t.refund),
        {
            "refund_id": refund_id,
            "charge_id": charge_id,
            "txn_id": posted.txn_id,
            "at": posted.at,
            "amount_fen": amount_fen,
            "insurer_fen": ins,
            "aid_fen": aid_part,
            "self_pay_fen": self_part,
            "reason": reason.strip(),
        },
    )
    balance, _ = ledger.balance_after(uow, posted, wallet_account(row.patient_id))
    return RefundResult(
        refund_id, charge_id, posted.txn_id, amount_fen, ins, aid_part, self_part, left - amount_fen, balance
    )


# --------------------------------------------------------------------------- deposit holds


@dataclass(frozen=True)
class HoldView:
    hold_id: str
    card_no: str
    org: str
    department: str
    amount_fen: int
    status: str
    posted_fen: int | None
    txn_id: str | None
    expires: dt.datetime
    patient_id: str  # whose wallet holds it (not in the reply: the card number says whose)

    def as_json(self) -> dict[str, Any]:
        return {
            "hold_id": self.hold_id,
            "card_no": self.card_no,
            "org": self.org,
            "department": self.department,
            "amount_fen": self.amount_fen,
            "status": self.status,
            "posted_fen": self.posted_fen,
            "txn_id": self.txn_id,
            "expires": self.expires.astimezone(BEIJING).isoformat(),
        }


def _hold_view(row: Any) -> HoldView:
    return HoldView(
        row.hold_id,
        row.card_no,
        row.org,
        row.department,
        int(row.amount_fen),
        row.status,
        None if row.posted_fen is None else int(row.posted_fen),
        row.txn_id,
        from_us(row.expires),
        row.patient_id,
    )


def hold_deposit(
    uow: UnitOfWork,
    *,
    card_no: str,
    org: str,
    department: str,
    amount_fen: int,
    encounter: str | None = None,
    expires_in_s: int = DEFAULT_HOLD_SECONDS,
) -> HoldView:
    """Reserve an inpatient deposit on the wallet (预交金): the money stays in the wallet but can no
    longer be spent elsewhere, until the hold is posted, voided or expires."""
    check_amount(amount_fen)
    if not 60 <= expires_in_s <= 366 * 24 * 3600:
        raise refuse(
            Category.INVALID, "bad-request", "a hold expires between one minute and one year from now"
        )
    org, department = _point(org, "org"), _point(department, "department")
    card = _usable(uow, card_no)
    coverage.institution(uow, org)
    spec = _wallet(card.patient_id)
    ledger.hold(uow, spec, amount_fen)
    now = to_us(clock.now())
    hold_id = new_id()
    row = {
        "hold_id": hold_id,
        "card_no": card.card_no,
        "patient_id": card.patient_id,
        "org": org,
        "department": department,
        "encounter": encounter,
        "amount_fen": amount_fen,
        "status": "held",
        "posted_fen": None,
        "txn_id": None,
        "created": now,
        "expires": now + expires_in_s * 1_000_000,
        "finished": None,
    }
    uow.conn.execute(insert(t.hold), row)
    return get_hold(uow, hold_id=hold_id)


def _deposit(uow: UnitOfWork, hold_id: str | None, card: cards.CardView, org: str, *, lock: bool) -> Any:
    """The open deposit a discharge bill is paid from (None without ``hold_id``): this card's, at
    this institution."""
    if hold_id is None:
        return None
    deposit = _open_hold(uow, hold_id, lock=lock)
    if deposit.patient_id != card.patient_id or deposit.org != org:
        raise refuse(
            Category.CONFLICT,
            "hold-mismatch",
            f"hold {hold_id} is not this card's deposit at Organization/{org}",
        )
    return deposit


def _open_hold(uow: UnitOfWork, hold_id: str, *, lock: bool = True) -> Any:
    h = t.hold
    stmt = select(h).where(h.c.hold_id == hold_id)
    if lock and uow.conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = uow.conn.execute(stmt).first()
    if row is None:
        raise refuse(Category.NOT_FOUND, "unknown-hold", f"no hold {hold_id}")
    if row.status != "held":
        raise refuse(Category.CONFLICT, "hold-finished", f"hold {hold_id} is already {row.status}")
    if row.expires <= to_us(clock.now()):
        raise refuse(
            Category.CONFLICT,
            "hold-expired",
            f"hold {hold_id} expired at {from_us(row.expires).astimezone(BEIJING):%Y-%m-%d %H:%M}",
        )
    return row


def post_hold(uow: UnitOfWork, *, hold_id: str, amount_fen: int) -> HoldView:
    """Settle a deposit: ``amount_fen`` (at most the hold) goes to the institution, the rest of the
    hold is released. Exactly once: a second post or void is refused."""
    check_amount(amount_fen)
    row = _open_hold(uow, hold_id)
    if amount_fen > row.amount_fen:
        raise refuse(
            Category.CONFLICT,
            "post-exceeds-hold",
            f"cannot post {format_fen(amount_fen)} of a {format_fen(row.amount_fen)} hold",
        )
    spec = _wallet(row.patient_id)
    ledger.release(uow, spec.account_id, int(row.amount_fen))
    posted = ledger.post(
        uow,
        kind="hold-post",
        postings=[(spec, -amount_fen), (_merchant(row.org, row.department), amount_fen)],
        ref=hold_id,
        org=row.org,
        memo="deposit posted",
    )
    return _finish_hold(uow, row, "posted", posted_fen=amount_fen, txn_id=posted.txn_id)


def void_hold(uow: UnitOfWork, *, hold_id: str) -> HoldView:
    row = _open_hold(uow, hold_id)
    ledger.release(uow, wallet_account(row.patient_id), int(row.amount_fen))
    return _finish_hold(uow, row, "voided")


def _finish_hold(
    uow: UnitOfWork, row: Any, status: str, *, posted_fen: int | None = None, txn_id: str | None = None
) -> HoldView:
    h = t.hold
    done = uow.conn.execute(
        update(h)
        .where(h.c.hold_id == row.hold_id, h.c.status == "held")
        .values(status=status, posted_fen=posted_fen, txn_id=txn_id, finished=to_us(clock.now()))
    )
    if done.rowcount != 1:  # the row lock (PostgreSQL) or the single writer (SQLite) rules this out
        raise refuse(Category.CONFLICT, "hold-finished", f"hold {row.hold_id} was finished concurrently")
    return get_hold(uow, hold_id=row.hold_id)


def get_hold(uow: UnitOfWork, *, hold_id: str) -> HoldView:
    h = t.hold
    row = uow.conn.execute(select(h).where(h.c.hold_id == hold_id)).first()
    if row is None:
        raise refuse(Category.NOT_FOUND, "unknown-hold", f"no hold {hold_id}")
    return _hold_view(row)


def expire_holds(uow: UnitOfWork) -> int:
    """Release every hold past its expiry (run by the day close and on demand)."""
    h = t.hold
    now = to_us(clock.now())
    ids = [
        r.hold_id
        for r in uow.conn.execute(
            select(h.c.hold_id).where(h.c.status == "held", h.c.expires <= now).order_by(h.c.hold_id)
        )
    ]
    done = 0
    for hold_id in ids:
        stmt = select(h).where(h.c.hold_id == hold_id)
        if uow.conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        row = uow.conn.execute(stmt).first()
        if row is None or row.status != "held":
            continue
        ledger.release(uow, wallet_account(row.patient_id), int(row.amount_fen))
        _finish_hold(uow, row, "expired")
        done += 1
    return done
