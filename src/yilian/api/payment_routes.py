"""``/api`` routes of card payments: top-ups, wallet and statement, charges, refunds, deposit holds,
the day close and the trial balance.

Every state-changing call needs an ``Idempotency-Key`` header: the key is claimed in the same
transaction as the payment, and a retry with the same key and body gets the first reply byte for
byte (with ``Idempotent-Replayed: true``) while nothing is posted again; the same key with another
body is refused (422, reason ``idempotency-key-reused``). An institution's client acts only for
its own institution; the day close and the trial balance belong to the platform operator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import orjson
from pydantic import (
    BaseModel,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from starlette.routing import BaseRoute

from yilian import card, payments
from yilian.api import payment_replies as replies
from yilian.api.rest import ApiRoutes, Call, Permission, Reply, body_rule, operator_only
from yilian.db import UnitOfWork
from yilian.kernel.errors import Category, YilianError
from yilian.kernel.money import MAX_FEN
from yilian.payments import idempotency
from yilian.payments.model import CHANNELS, DEFAULT_HOLD_SECONDS, SETTINGS
from yilian.security.principal import RESIDENT, Principal


def _fen(value: Any, handler: ValidatorFunctionWrapHandler) -> int:
    """An amount the schema refuses (``0``, ``-5``, ``12.5``, ``"10"``, above the limit) is a bad
    amount, answered with the reason the service gives (``bad-amount``), not a bare 400."""
    try:
        return int(handler(value))
    except ValidationError:
        try:
            shown = orjson.dumps(value).decode()
        except TypeError:  # an integer beyond 64 bits
            shown = str(value)
        raise body_rule(
            "bad-amount",
            "an amount must be a positive whole number of fen (分), from 1 to {limit}; got {got}",
            limit=MAX_FEN,
            got=shown if len(shown) <= 40 else shown[:40] + "…",
        ) from None


Fen = Annotated[
    StrictInt,
    Field(gt=0, le=MAX_FEN, description="an amount in fen (分), a positive whole number"),
    WrapValidator(_fen),
]
Point = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^:]+$")]

READ_ACCOUNT = Permission("r", "Account")
WRITE_ACCOUNT = Permission("c", "Account")
UPDATE_ACCOUNT = Permission("u", "Account")
READ_CHARGE = Permission("r", "ChargeItem")
WRITE_CHARGE = Permission("c", "ChargeItem")
READ_CLEARING = Permission("r", "PaymentReconciliation")
WRITE_CLEARING = Permission("c", "PaymentReconciliation")


class TopUpBody(BaseModel):
    amount_fen: Fen
    channel: str = Field(description=f"one of {', '.join(CHANNELS)}")
    org: Point = Field(
        description="the institution (Organization id) whose counter or machine took the money"
    )


class ItemBody(BaseModel):
    code: str = Field(min_length=1, max_length=64)
    name: str = Field(default="", max_length=200)
    category: str = Field(
        min_length=1, max_length=32, description="drug, exam, lab, treatment, bed, canteen, parking…"
    )
    unit_price_fen: Fen
    quantity: Annotated[StrictInt, Field(gt=0, le=100_000)]
    charge_item: str | None = Field(
        default=None, max_length=64, description="the FHIR ChargeItem id this line bills"
    )


class EstimateBody(BaseModel):
    """A charge as the desk would make it: what a pre-settlement is asked about."""

    card_no: str = Field(min_length=1, max_length=64)
    org: Point
    department: Point = Field(
        description="the department or merchant point: clinic, pharmacy, canteen, parking…"
    )
    encounter: str | None = Field(default=None, max_length=64, description="the Encounter id, if any")
    setting: str = Field(default="outpatient", description=f"one of {', '.join(SETTINGS)}")
    diagnoses: list[Annotated[str, Field(max_length=16)]] = Field(
        default_factory=list, max_length=20, description="ICD-10 codes"
    )
    items: list[ItemBody] = Field(min_length=1, max_length=500)
    self_pay: StrictBool = Field(
        default=False,
        description="the patient chooses to pay it all (自费): no reimbursement is computed, they may "
        "claim it afterwards; also the way to take a charge refused with no-policy-in-force",
    )
    hold_id: str | None = Field(
        default=None, max_length=36, description="pay the patient's share from this deposit hold first"
    )

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments ``payments.charge`` and ``payments.estimate`` both take."""
        return {
            "card_no": self.card_no,
            "org": self.org,
            "department": self.department,
            "encounter": self.encounter,
            "setting": self.setting,
            "diagnoses": self.diagnoses,
            "self_pay": self.self_pay,
            "hold_id": self.hold_id,
            "items": [
                payments.Item(i.code, i.name, i.category, i.unit_price_fen, i.quantity, i.charge_item)
                for i in self.items
            ],
        }


class ChargeBody(EstimateBody):
    """A charge: the estimate's body, made."""


class RefundBody(BaseModel):
    amount_fen: Fen
    reason: str = Field(min_length=1, max_length=500)


class PayoutBody(BaseModel):
    line_id: Annotated[StrictInt, Field(gt=0, description="the batch line (GET /api/settlement/days/{date})")]
    reference: str = Field(min_length=1, max_length=64, description="the transfer's reference")


class HoldBody(BaseModel):
    card_no: str = Field(min_length=1, max_length=64)
    org: Point
    department: Point
    amount_fen: Fen
    encounter: str | None = Field(default=None, max_length=64)
    expires_in_s: Annotated[StrictInt, Field(ge=60, le=366 * 24 * 3600)] = DEFAULT_HOLD_SECONDS


class PostHoldBody(BaseModel):
    amount_fen: Fen


def _wallet_entity(card_no: str) -> str:
    # Card numbers are usually ID numbers: the audit log gets the masked form, never the number.
    return f"Account/wallet/{card.mask(card_no)}"


def _own_org(principal: Principal, org: str) -> None:
    """An institution's client pays and refunds at its own institution only."""
    if principal.org_id is not None and principal.org_id != org:
        raise YilianError(
            Category.FORBIDDEN,
            f"this client acts for Organization/{principal.org_id}, not Organization/{org}",
        )


def _mover(principal: Principal) -> None:
    """Money is moved by an institution (its counter, terminal or HIS) or the operator, never by a
    resident's own token: a resident's app reads, it does not pay."""
    if principal.kind == RESIDENT or principal.patient_keys is not None:
        raise YilianError(
            Category.FORBIDDEN, "payments are taken at an institution; a resident's token can only read"
        )


def _patients(principal: Principal) -> frozenset[str] | None:
    """The Patients whose wallets the caller may read (None: any card presented to it)."""
    return principal.patient_keys


def _own_record(principal: Principal, patient_id: str, org: str, what: str) -> None:
    """A charge or hold: the resident's own, or the institution's own."""
    keys = principal.patient_keys
    if keys is not None:
        if patient_id not in keys:  # the same answer as for an id that does not exist
            raise payments.PaymentError(Category.NOT_FOUND, f"unknown-{what}", f"no {what} with this id")
        return
    _own_org(principal, org)


Handler = Callable[[UnitOfWork, Call[Any]], Reply]


def keyed(template: str, handler: Handler) -> Handler:
    """Wrap a state-changing handler in the Idempotency-Key protocol (see the module docstring)."""

    def run(uow: UnitOfWork, call: Call[Any]) -> Reply:
        key = idempotency.check_key(call.headers.get("idempotency-key"))
        path = template.format(**call.params)
        fingerprint = idempotency.request_hash("POST", path, call.raw_body)
        caller = call.principal.identity
        stored = idempotency.claim(uow, caller=caller, key=key, fingerprint=fingerprint)
        if stored is not None:
            return Reply(
                None,
                status=stored.status,
                raw=stored.body,
                headers={"Idempotent-Replayed": "true"},
                entity=path,
            )
        reply = handler(uow, call)
        reply.raw = orjson.dumps(reply.body, option=orjson.OPT_NON_STR_KEYS)
        idempotency.remember(uow, caller=caller, key=key, status=reply.status, body=reply.raw)
        return reply

    run.__doc__ = handler.__doc__
    return run


def _top_up(uow: UnitOfWork, call: Call[TopUpBody]) -> Reply:
    """Put money on a card's wallet at an institution's counter or self-service machine."""
    body = call.require_body()
    _own_org(call.principal, body.org)
    done = payments.top_up(
        uow, card_no=call.params["card_no"], amount_fen=body.amount_fen, channel=body.channel, org=body.org
    )
    return Reply(done.as_json(), status=201, entity=_wallet_entity(call.params["card_no"]))


def _wallet(uow: UnitOfWork, call: Call[Any]) -> Reply:
    """The wallet behind a usable card: balance, held by open deposits, available. The wallet is
    the resident's: a replacement card shows the same balance; a lost or replaced card is
    refused with its reason."""
    view = payments.wallet(uow, card_no=call.params["card_no"], patients=_patients(call.principal))
    return Reply(view.as_json(), entity=_wallet_entity(view.card_no))


def _statement(uow: UnitOfWork, call: Call[Any]) -> Reply:
    """The wallet and its newest movements, newest first, each with the balance it left. An
    institution sees only the movements made at it (without the balances), the holder and the
    platform operator see them all."""
    try:
        limit = int(call.query.get("limit", "50"))
    except ValueError:
        raise YilianError(Category.INVALID, "limit must be a whole number") from None
    principal = call.principal
    view, lines = payments.statement(
        uow,
        card_no=call.params["card_no"],
        limit=limit,
        patients=_patients(principal),
        org=principal.org_id if principal.patient_keys is None else None,
    )
    return Reply(
        {**view.as_json(), "entries": [line.as_json() for line in lines]},
        entity=_wallet_entity(view.card_no),
    )


def _charge(uow: UnitOfWork, call: Call[ChargeBody]) -> Reply:
    """A point-of-care charge (诊间结算): adjudicated against the resident's coverage in force, the
    insurer's and medical aid's shares paid at once (即时结报), the rest taken from the wallet —
    all in one ledger transaction, or nothing."""
    body = call.require_body()
    _own_org(call.principal, body.org)
    result = payments.charge(uow, **body.arguments())
    return Reply(result.as_json(), status=201, entity=f"ChargeItem/{result.charge_id}")


def _estimate(uow: UnitOfWork, call: Call[EstimateBody]) -> Reply:
    """Pre-settlement (预结算): each payer's share of a charge of these items made now, with the
    reasons, and whether the wallet pays the patient's part; nothing is posted, locked or counted,
    and no Idempotency-Key is needed. The charge itself is adjudicated again when it is made."""
    body = call.require_body()
    _own_org(call.principal, body.org)
    result = payments.estimate(uow, **body.arguments())
    return Reply(result.as_json(), patients=[result.patient_id], entity="ChargeItem/$estimate")


def _charge_view(row: Any) -> dict[str, Any]:
    return {
        "charge_id": row.charge_id,
        "card_no": row.card_no,
        "org": row.org,
        "department": row.department,
        "encounter": row.encounter,
        "setting": row.setting,
        "business_date": row.business_date,
        "total_fen": row.total_fen,
        "insurer_fen": row.insurer_fen,
        "aid_fen": row.aid_fen,
        "self_pay_fen": row.self_pay_fen,
        "refunded_fen": row.refunded_insurer_fen + row.refunded_aid_fen + row.refunded_self_fen,
        "items": orjson.loads(row.items),
        "explanation": orjson.loads(row.adjudication),
    }


def _get_charge(uow: UnitOfWork, call: Call[Any]) -> Reply:
    """One charge as it was made: its items, shares, refunds so far and the adjudication."""
    row = payments.get_charge(uow, charge_id=call.params["charge_id"])
    _own_record(call.principal, row.patient_id, row.org, "charge")
    return Reply(_charge_view(row), patients=[row.patient_id], entity=f"ChargeItem/{row.charge_id}")


def _refund(uow: UnitOfWork, call: Call[RefundBody]) -> Reply:
    """Give back part or all of a charge, as a new transaction; each payer gets back its share."""
    body = call.require_body()
    row = payments.get_charge(uow, charge_id=call.params["charge_id"])
    _own_org(call.principal, row.org)
    done = payments.refund(uow, charge_id=row.charge_id, amount_fen=body.amount_fen, reason=body.reason)
    return Reply(done.as_json(), status=201, patients=[row.patient_id], entity=f"ChargeItem/{row.charge_id}")


def _hold(uow: UnitOfWork, call: Call[HoldBody]) -> Reply:
    """Reserve an inpatient deposit (预交金) on the wallet until it is posted, voided or expires."""
    body = call.require_body()
    _own_org(call.principal, body.org)
    view = payments.hold_deposit(
        uow,
        card_no=body.card_no,
        org=body.org,
        department=body.department,
        amount_fen=body.amount_fen,
        encounter=body.encounter,
        expires_in_s=body.expires_in_s,
    )
    return Reply(view.as_json(), status=201, entity=f"Account/hold/{view.hold_id}")


def _get_hold(uow: UnitOfWork, call: Call[Any]) -> Reply:
    """One deposit hold and its state."""
    view = payments.get_hold(uow, hold_id=call.params["hold_id"])
    _own_record(call.principal, view.patient_id, view.org, "hold")
    return Reply(view.as_json(), entity=f"Account/hold/{view.hold_id}")


def _post_hold(uow: UnitOfWork, call: Call[PostHoldBody]) -> Reply:
    """Settle a deposit: the amount goes to the institution, the rest is released; exactly once."""
    body = call.require_body()
    _own_org(call.principal, payments.get_hold(uow, hold_id=call.params["hold_id"]).org)
    view = payments.post_hold(uow, hold_id=call.params["hold_id"], amount_fen=body.amount_fen)
    return Reply(view.as_json(), entity=f"Account/hold/{view.hold_id}")


def _void_hold(uow: UnitOfWork, call: Call[Any]) -> Reply:
    """Release a deposit whole; exactly once."""
    _own_org(call.principal, payments.get_hold(uow, hold_id=call.params["hold_id"]).org)
    view = payments.void_hold(uow, hold_id=call.params["hold_id"])
    return Reply(view.as_json(), entity=f"Account/hold/{view.hold_id}")


def _close_day(uow: UnitOfWork, call: Call[Any]) -> Reply:
    """Close a finished business day (日终清算): its settlement batch — card issuer and each fund to
    each institution — written and frozen; a day closes once."""
    day = payments.parse_day(call.params["date"])
    report = payments.close_day(uow, day=day, closed_by=call.principal.identity)
    return Reply(report, status=201, entity=f"PaymentReconciliation/{day}")


def _payout(uow: UnitOfWork, call: Call[PayoutBody]) -> Reply:
    """Record the transfer that paid one batch line of a closed day (清算划拨): the line's amount
    comes off the payer's clearing account for the payee; a line is paid once."""
    body = call.require_body()
    day = payments.parse_day(call.params["date"])
    paid = payments.record_payout(
        uow, day=day, line_id=body.line_id, reference=body.reference, paid_by=call.principal.identity
    )
    return Reply(paid.as_json(), status=201, entity=f"PaymentReconciliation/{day}")


def _clearing_reader(principal: Principal) -> None:
    """The operator sees the whole day; an institution only its own lines; a resident nothing."""
    if principal.patient_keys is not None or (principal.org_id is None and not principal.is_operator):
        raise YilianError(Category.FORBIDDEN, "the clearing is for the operator and the institutions")


def _day(uow: UnitOfWork, call: Call[Any]) -> Reply:
    """A business day's clearing: the closed batch with its reconciliation re-checked against the
    ledger, or an open day's positions so far. An institution sees only its own lines: those it
    is paid, and those the funds it administers pay (YILIAN_FUND_ADMINISTRATORS)."""
    day = payments.parse_day(call.params["date"])
    detail = call.query.get("detail", "").lower() in ("1", "true", "yes")
    org = call.principal.org_id
    party = payments.clearing_party(org) if org is not None else None
    report = payments.day_report(uow, day=day, detail=detail, party=party)
    return Reply(report, entity=f"PaymentReconciliation/{day}")


def _trial_balance(uow: UnitOfWork, call: Call[Any]) -> Reply:
    """Every account's balance, checked against its postings; debits equal credits."""
    return Reply(payments.trial_balance(uow).as_json(), entity="Account/trial-balance")


C = Category
# The refusal codes each route may answer with (and their category, hence their HTTP status).
CARD = (
    ("bad-card-number", C.INVALID),
    ("unknown-card", C.NOT_FOUND),
    ("card-not-activated", C.CONFLICT),
    ("card-lost", C.CONFLICT),
    ("card-suspended", C.CONFLICT),
    ("card-replaced", C.GONE),
    ("card-revoked", C.GONE),
)
KEYED = (
    ("idempotency-key-missing", C.INVALID),
    ("idempotency-key-invalid", C.INVALID),
    ("idempotency-key-reused", C.UNPROCESSABLE),
    ("idempotency-key-in-flight", C.CONFLICT),
)
MONEY = (("bad-amount", C.INVALID), ("day-closed", C.CONFLICT))
PLACE = (("bad-request", C.INVALID), ("unknown-institution", C.NOT_FOUND))
HOLD = (
    ("unknown-hold", C.NOT_FOUND),
    ("hold-finished", C.CONFLICT),
    ("hold-expired", C.CONFLICT),
)


def routes(api: ApiRoutes) -> list[BaseRoute]:
    def write(
        path: str,
        handler: Handler,
        permission: Permission,
        body: type[BaseModel] | None,
        subtype: str,
        reply: type[BaseModel],
        status: int,
        reasons: tuple[tuple[str, Category], ...],
        check: Callable[[Principal], None] = _mover,
    ) -> BaseRoute:
        return api.route(
            path,
            keyed(path, handler),
            method="POST",
            permission=permission,
            body=body,
            subtype=subtype,
            reply=reply,
            status=status,
            idempotent=True,
            reasons=KEYED + reasons,
            check=check,
        )

    return [
        write(
            "/api/cards/{card_no}/top-ups",
            _top_up,
            WRITE_ACCOUNT,
            TopUpBody,
            "payment-top-up",
            replies.TopUpReply,
            201,
            CARD + MONEY + PLACE + (("bad-channel", C.INVALID),),
        ),
        api.route(
            "/api/cards/{card_no}/wallet",
            _wallet,
            method="GET",
            permission=READ_ACCOUNT,
            subtype="payment-wallet",
            reply=replies.WalletReply,
            reasons=CARD,
        ),
        api.route(
            "/api/cards/{card_no}/statement",
            _statement,
            method="GET",
            permission=READ_ACCOUNT,
            subtype="payment-statement",
            reply=replies.StatementReply,
            query={"limit": "how many movements, newest first (1-1000, default 50)"},
            reasons=CARD,
        ),
        write(
            "/api/charges",
            _charge,
            WRITE_CHARGE,
            ChargeBody,
            "payment-charge",
            replies.ChargeReply,
            201,
            CARD
            + MONEY
            + PLACE
            + HOLD
            + (
                ("insufficient-balance", C.CONFLICT),
                ("no-items", C.INVALID),
                ("bad-item", C.INVALID),
                ("hold-mismatch", C.CONFLICT),
                ("institution-unclassified", C.INVALID),
                ("unknown-charge-item", C.NOT_FOUND),
                ("charge-item-mismatch", C.CONFLICT),
                ("no-policy-in-force", C.CONFLICT),
            ),
        ),
        api.route(
            "/api/charge-estimates",
            _estimate,
            method="POST",
            permission=WRITE_CHARGE,
            body=EstimateBody,
            subtype="payment-estimate",
            reply=replies.EstimateReply,
            check=_mover,
            changes=False,
            reasons=CARD
            + PLACE
            + HOLD
            + (
                ("hold-mismatch", C.CONFLICT),
                ("bad-amount", C.INVALID),
                ("no-items", C.INVALID),
                ("bad-item", C.INVALID),
                ("institution-unclassified", C.INVALID),
                ("unknown-charge-item", C.NOT_FOUND),
                ("charge-item-mismatch", C.CONFLICT),
                ("no-policy-in-force", C.CONFLICT),
            ),
        ),
        api.route(
            "/api/charges/{charge_id}",
            _get_charge,
            method="GET",
            permission=READ_CHARGE,
            subtype="payment-charge",
            reply=replies.ChargeDetailReply,
            reasons=(("unknown-charge", C.NOT_FOUND),),
        ),
        write(
            "/api/charges/{charge_id}/refunds",
            _refund,
            WRITE_CHARGE,
            RefundBody,
            "payment-refund",
            replies.RefundReply,
            201,
            (
                *MONEY,
                ("unknown-charge", C.NOT_FOUND),
                ("bad-request", C.INVALID),
                ("refund-exceeds-charge", C.CONFLICT),
            ),
        ),
        write(
            "/api/holds",
            _hold,
            WRITE_ACCOUNT,
            HoldBody,
            "payment-hold",
            replies.HoldReply,
            201,
            CARD + PLACE + (("bad-amount", C.INVALID), ("insufficient-balance", C.CONFLICT)),
        ),
        api.route(
            "/api/holds/{hold_id}",
            _get_hold,
            method="GET",
            permission=READ_ACCOUNT,
            subtype="payment-hold",
            reply=replies.HoldReply,
            reasons=(("unknown-hold", C.NOT_FOUND),),
        ),
        write(
            "/api/holds/{hold_id}/post",
            _post_hold,
            UPDATE_ACCOUNT,
            PostHoldBody,
            "payment-hold-post",
            replies.HoldReply,
            200,
            MONEY + HOLD + (("post-exceeds-hold", C.CONFLICT),),
        ),
        write(
            "/api/holds/{hold_id}/void",
            _void_hold,
            UPDATE_ACCOUNT,
            None,
            "payment-hold-void",
            replies.HoldReply,
            200,
            HOLD,
        ),
        write(
            "/api/settlement/days/{date}/close",
            _close_day,
            WRITE_CLEARING,
            None,
            "payment-close-day",
            replies.CloseDayReply,
            201,
            (("bad-date", C.INVALID), ("day-not-over", C.CONFLICT), ("day-closed", C.CONFLICT)),
            check=operator_only,
        ),
        write(
            "/api/settlement/days/{date}/payouts",
            _payout,
            WRITE_CLEARING,
            PayoutBody,
            "payment-payout",
            replies.PayoutReply,
            201,
            (
                ("bad-date", C.INVALID),
                ("bad-reference", C.INVALID),
                ("day-not-closed", C.CONFLICT),
                ("unknown-line", C.NOT_FOUND),
                ("nothing-to-pay", C.CONFLICT),
                ("line-paid", C.CONFLICT),
            ),
            check=operator_only,
        ),
        api.route(
            "/api/settlement/days/{date}",
            _day,
            method="GET",
            permission=READ_CLEARING,
            subtype="payment-day",
            check=_clearing_reader,
            reply=replies.DayReply,
            query={"detail": "true: list every transaction each line ties"},
            reasons=(("bad-date", C.INVALID),),
        ),
        api.route(
            "/api/ledger/trial-balance",
            _trial_balance,
            method="GET",
            permission=READ_ACCOUNT,
            subtype="payment-trial-balance",
            check=operator_only,
            reply=replies.TrialBalanceReply,
        ),
    ]
