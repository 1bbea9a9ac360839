"""Use cases of the health card. Each takes the caller's unit of work first and never commits.

Writes to the shared record (the card identifier on the Patient, Patients created from a
population register) go through the FHIR core with the caller's :class:`FhirContext`, so
validation, sealing, the patient index and the caller's access policy apply to them exactly as
to a hospital's own request.
"""

from __future__ import annotations

import datetime as dt
from collections import namedtuple
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import urlencode

import orjson
from sqlalchemy import ColumnElement, String, bindparam, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from yilian import mpi
from yilian.card.model import (
    CURRENT,
    Action,
    CardKind,
    CardRefusal,
    CardStatus,
    RegisterRow,
    check_district,
    describe,
    mask,
    next_status,
    parse_card_number,
    parse_residence,
    platform_card_number,
    resident_card_number,
)
from yilian.card.tables import card, card_event
from yilian.db import UnitOfWork
from yilian.db.statements import Statement
from yilian.fhir import FhirContext, FhirRequest, dispatch
from yilian.fhir.access import UPDATE, AccessPolicy
from yilian.fhir.interactions.writes import savepoint
from yilian.fhir.store import sealing
from yilian.fhir.store.repository import get_current
from yilian.kernel import clock, health_card, naming, prc_id
from yilian.kernel.crypto import Keyring
from yilian.kernel.errors import Category, YilianError
from yilian.kernel.ids import new_id

# The purpose a sealed card number is bound to: a token made here opens only here.
NUMBER_CONTEXT = "yilian/card/number/v1"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_CHINA = dt.timezone(dt.timedelta(hours=8), "CST")  # dates people see are Beijing dates


def _hc_type() -> dict[str, Any]:
    # A fresh object per write: the FHIR core may rewrite a request body in place.
    return {"coding": [{"system": naming.V2_IDENTIFIER_TYPE, "code": "HC", "display": "Health Card Number"}]}


# --------------------------------------------------------------------------- views


@dataclass(frozen=True, slots=True)
class CardView:
    """One card as callers see it. ``card_no`` is sensitive (usually the ID number): show
    :attr:`masked` in logs and messages."""

    card_id: str
    card_no: str
    kind: CardKind
    sequence: int
    patient_id: str
    person_id: str | None
    status: CardStatus
    district: str | None
    residence: str | None
    issued_at: dt.datetime
    status_at: dt.datetime
    status_reason: str | None = None
    replaces: str | None = None  # number of the card this one replaced
    replaced_by: str | None = None  # number of the card that replaced this one

    def __repr__(self) -> str:
        return f"CardView({self.masked!r}, status={self.status.value!r}, patient_id={self.patient_id!r})"

    @property
    def masked(self) -> str:
        return mask(self.card_no)

    @property
    def usable(self) -> bool:
        return self.status is CardStatus.ACTIVE

    def to_json(self) -> dict[str, Any]:
        return {
            "card_no": self.card_no,
            "kind": self.kind,
            "sequence": self.sequence,
            "status": self.status.value,
            "patient": self.patient_id,
            "person": self.person_id,
            "district": self.district,
            "residence": self.residence,
            "issued_at": self.issued_at.isoformat(),
            "status_at": self.status_at.isoformat(),
            "status_reason": self.status_reason,
            "replaces": self.replaces,
            "replaced_by": self.replaced_by,
        }


@dataclass(frozen=True, slots=True)
class CardEvent:
    at: dt.datetime
    action: str
    from_status: str | None
    to_status: str
    actor: str
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "action": self.action,
            "from": self.from_status,
            "to": self.to_status,
            "actor": self.actor,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a front desk learns from a usable card (docs/identifiers.md, "Who may resolve a
    card"): the person's records that the caller may see (Patient ids: its own, usually), and the
    card itself in full only when the caller may see the record it was issued on.

    A desk that may not see that record learns that the card is usable, which of its own records
    are the holder's — and the person they belong to — or, when it has none, the identifier to
    register the resident under (the patient index links the new record to the holder): never
    another institution's Patient id, the holder's district or the card's history."""

    card: CardView
    records: list[str]
    holder_visible: bool

    def to_json(self) -> dict[str, Any]:
        if self.holder_visible:
            return {**self.card.to_json(), "records": self.records}
        c = self.card
        out: dict[str, Any] = {
            "card_no": c.card_no,
            "kind": c.kind,
            "sequence": c.sequence,
            "status": c.status.value,
            "records": self.records,
        }
        if self.records:
            out["person"] = c.person_id
        else:
            out["register"] = {"system": naming.HEALTH_CARD, "value": c.card_no}
        return out


# --------------------------------------------------------------------------- helpers


def _us(moment: dt.datetime) -> int:
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


def _now_us() -> int:
    return _us(clock.now())


def _at(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


def _day(us: int) -> str:
    return _at(us).astimezone(_CHINA).date().isoformat()


def reencrypt_number(keyring: Keyring, sealed: str) -> str | None:
    """A sealed card number under the current key (``yilian keys reencrypt``); None if it is."""
    return None if keyring.is_current(sealed) else keyring.reencrypt(sealed, context=NUMBER_CONTEXT)


def _keyring(uow: UnitOfWork) -> Keyring:
    keyring = sealing.keyring_for(uow.conn.engine)
    if keyring is None:
        # Card numbers are ID numbers: without keys they could only be stored readable.
        raise YilianError(
            Category.UNAVAILABLE,
            "the database has no encryption keys installed; health cards cannot be stored or read",
        )
    return keyring


def _number_key(keyring: Keyring, card_no: str) -> str:
    return keyring.blind(card_no, kind="prc-id")


def _no_such_card() -> YilianError:
    # The same answer whether the number is unknown or belongs to a patient the caller may not
    # see: a card number must not confirm that somebody is registered.
    return CardRefusal(Category.NOT_FOUND, "unknown-card", "no health card with this number")


def _row_by_number(uow: UnitOfWork, card_no: str, *, for_update: bool = False) -> Row[Any]:
    number = parse_card_number(card_no)
    key = _number_key(_keyring(uow), number.value)
    if for_update:
        stmt = select(card).where(card.c.number_key == key)
        if uow.dialect == "postgresql":
            stmt = stmt.with_for_update()
        row = uow.conn.execute(stmt).first()
        if row is None:
            raise _no_such_card()
        return row
    found = _BY_NUMBER.one_or_none(uow.conn, {"number_key": key})
    if found is None:
        raise _no_such_card()
    # Read by attribute exactly as SQLAlchemy's Row of the same columns would be.
    return cast("Row[Any]", _CardRow(*found))


# The lookup behind every charge, wallet view and front-desk scan: compiled once and run on the
# driver (db/statements.py), a third of the CPU of building and running it through Core.
_BY_NUMBER = Statement(
    lambda _: select(card).where(card.c.number_key == bindparam("number_key", type_=String))
)
_CardRow = namedtuple("_CardRow", [c.name for c in card.columns])  # type: ignore[misc]


def _number_of(uow: UnitOfWork, card_id: str | None) -> str | None:
    if card_id is None:
        return None
    row = _SEALED_NUMBER.one_or_none(uow.conn, {"card_id": card_id})
    return None if row is None else _keyring(uow).decrypt(str(row[0]), context=NUMBER_CONTEXT)


# Run for every card shown or charged (a replacement card names the card it replaced): compiled once.
_SEALED_NUMBER = Statement(
    lambda _: select(card.c.number_sealed).where(card.c.card_id == bindparam("card_id"))
)


def _view(uow: UnitOfWork, row: Row[Any]) -> CardView:
    return CardView(
        card_id=row.card_id,
        card_no=_keyring(uow).decrypt(row.number_sealed, context=NUMBER_CONTEXT),
        kind=row.kind,
        sequence=row.sequence,
        patient_id=row.patient_id,
        # Asked now rather than stored: a steward's merge changes who the record is.
        person_id=mpi.person_of(uow, row.patient_id),
        status=CardStatus(row.status),
        district=row.district,
        residence=row.residence,
        issued_at=_at(row.issued_at),
        status_at=_at(row.status_at),
        status_reason=row.status_reason,
        replaces=_number_of(uow, row.replaces),
        replaced_by=_number_of(uow, row.replaced_by),
    )


def _record(
    uow: UnitOfWork,
    *,
    card_id: str,
    at: int,
    action: Action,
    from_status: CardStatus | None,
    to_status: CardStatus,
    actor: str,
    reason: str | None,
) -> None:
    seq = uow.conn.execute(
        select(func.coalesce(func.max(card_event.c.seq), 0)).where(card_event.c.card_id == card_id)
    ).scalar_one()
    uow.conn.execute(
        insert(card_event).values(
            event_id=new_id(),
            card_id=card_id,
            seq=int(seq) + 1,
            at=at,
            action=action.value,
            from_status=None if from_status is None else from_status.value,
            to_status=to_status.value,
            actor=actor[:160],
            reason=reason,
        )
    )


def _patient(uow: UnitOfWork, ctx: FhirContext, patient_id: str) -> tuple[dict[str, Any], int]:
    stored = get_current(uow.conn, "Patient", patient_id)
    if (
        stored is None
        or stored.deleted
        or stored.content is None
        or not ctx.policy.can_see(uow, "Patient", stored.patient_key)
    ):
        raise YilianError(Category.NOT_FOUND, f"Patient/{patient_id} does not exist")
    resource: dict[str, Any] = orjson.loads(stored.content)
    return resource, stored.version


def _require_visible(uow: UnitOfWork, ctx: FhirContext, row: Row[Any]) -> None:
    if not ctx.policy.can_see(uow, "Patient", row.patient_id):
        raise _no_such_card()


def _require_update(ctx: FhirContext) -> None:
    if not ctx.policy.allows(UPDATE, "Patient"):
        raise YilianError(
            Category.FORBIDDEN,
            "issuing or changing a health card writes the Patient: the token needs update permission on Patient",
        )


def _write_card_identifier(
    uow: UnitOfWork, ctx: FhirContext, patient_id: str, *, add: str | None = None, retire: str | None = None
) -> None:
    """Put the card number on the Patient (so ``Patient?identifier=<health card>|<no>`` finds it)
    and mark a superseded number as old, through the FHIR core (validated, sealed, indexed)."""
    resource, version = _patient(uow, ctx, patient_id)
    identifiers: list[dict[str, Any]] = resource.setdefault("identifier", [])
    if retire is not None:
        ended = clock.fhir_instant(clock.now())
        for ident in identifiers:
            if ident.get("system") == naming.HEALTH_CARD and ident.get("value") == retire:
                ident["use"] = "old"
                ident.setdefault("period", {})["end"] = ended
    if add is not None and not any(
        i.get("system") == naming.HEALTH_CARD and i.get("value") == add for i in identifiers
    ):
        identifiers.append(_card_identifier(add))
    dispatch(
        uow,
        ctx,
        FhirRequest("PUT", f"Patient/{patient_id}", headers={"if-match": f'W/"{version}"'}, body=resource),
    )


def _card_identifier(card_no: str) -> dict[str, Any]:
    return {
        "use": "official",
        "type": _hc_type(),
        "system": naming.HEALTH_CARD,
        "value": card_no,
        "period": {"start": clock.fhir_instant(clock.now())},
    }


def _resident_id_of(resource: dict[str, Any]) -> str | None:
    for ident in resource.get("identifier", []):
        if ident.get("system") == naming.PRC_RESIDENT_ID and isinstance(ident.get("value"), str):
            try:
                return prc_id.parse(ident["value"]).number
            except YilianError as err:
                raise YilianError(
                    Category.INVALID, f"the Patient's PRC resident ID number is not valid: {err.message}"
                ) from None
    return None


def _district_of(resource: dict[str, Any], resident_id: str | None) -> str | None:
    # A 6-digit division code on the current address wins; else the place of household
    # registration encoded in the ID number.
    for address in resource.get("address", []):
        value = address.get("district")
        if isinstance(value, str) and value.isdigit() and len(value) == 6:
            return value
    return resident_id[:6] if resident_id else None


def _current_card(uow: UnitOfWork, patient_id: str, holder_key: str | None) -> Row[Any] | None:
    """The card the person behind ``patient_id`` (or the ID number) still holds, if any."""
    person = mpi.person_of(uow, patient_id)
    patients = set(mpi.records_of(uow, person)) if person else set()
    patients.add(patient_id)
    holder: ColumnElement[bool] = card.c.patient_id.in_(sorted(patients))
    if holder_key is not None:
        holder = holder | (card.c.holder_key == holder_key)
    return uow.conn.execute(
        select(card)
        .where(holder, card.c.status.in_([s.value for s in CURRENT]))
        .order_by(card.c.issued_at)
        .limit(1)
    ).first()


def _already_holds(row: Row[Any]) -> YilianError:
    return YilianError(
        Category.CONFLICT,
        f"this person already holds a health card ({describe(CardStatus(row.status))}, "
        f"issued on {_day(row.issued_at)}); report it lost and replace it, or revoke it, before issuing another",
    )


def _new_number(
    uow: UnitOfWork, keyring: Keyring, resident_id: str | None, holder_key: str | None
) -> tuple[str, CardKind, int]:
    if resident_id is not None and holder_key is not None:
        last = uow.conn.execute(
            select(func.coalesce(func.max(card.c.sequence), 0)).where(card.c.holder_key == holder_key)
        ).scalar_one()
        sequence = int(last) + 1
        return resident_card_number(resident_id, sequence), "resident-id", sequence
    for _ in range(8):
        number = platform_card_number()
        taken = uow.conn.execute(
            select(card.c.card_id).where(card.c.number_key == _number_key(keyring, number))
        ).first()
        if taken is None:
            return number, "platform", 1
    raise YilianError(Category.INTERNAL, "could not draw an unused platform card number")


def _insert_card(
    uow: UnitOfWork,
    *,
    keyring: Keyring,
    number: str,
    kind: CardKind,
    sequence: int,
    holder_key: str | None,
    patient_id: str,
    district: str | None,
    residence: str | None,
    origin: str,
    replaces: str | None,
    at: int,
    actor: str,
    reason: str | None,
) -> str:
    card_id = new_id()
    try:
        # In a savepoint: a clash must leave the caller's transaction usable (a batch goes on).
        with uow.conn.begin_nested():
            _insert_row(
                uow,
                keyring,
                card_id,
                number,
                kind,
                sequence,
                holder_key,
                patient_id,
                district,
                residence,
                origin,
                replaces,
                at,
                reason,
            )
    except IntegrityError:
        raise YilianError(
            Category.CONFLICT,
            "another request issued a card with this number at the same moment; look the card up before trying again",
        ) from None
    _record(
        uow,
        card_id=card_id,
        at=at,
        action=Action.ISSUE,
        from_status=None,
        to_status=CardStatus.ISSUED,
        actor=actor,
        reason=reason,
    )
    return card_id


def _insert_row(
    uow: UnitOfWork,
    keyring: Keyring,
    card_id: str,
    number: str,
    kind: CardKind,
    sequence: int,
    holder_key: str | None,
    patient_id: str,
    district: str | None,
    residence: str | None,
    origin: str,
    replaces: str | None,
    at: int,
    reason: str | None,
) -> None:
    uow.conn.execute(
        insert(card).values(
            card_id=card_id,
            number_key=_number_key(keyring, number),
            number_sealed=keyring.encrypt(number, context=NUMBER_CONTEXT),
            holder_key=holder_key,
            kind=kind,
            sequence=sequence,
            patient_id=patient_id,
            status=CardStatus.ISSUED.value,
            district=district,
            residence=residence,
            origin=origin,
            replaces=replaces,
            replaced_by=None,
            issued_at=at,
            status_at=at,
            status_reason=reason,
        )
    )


def _by_id(uow: UnitOfWork, card_id: str) -> CardView:
    return _view(uow, uow.conn.execute(select(card).where(card.c.card_id == card_id)).one())


# --------------------------------------------------------------------------- use cases


def issue_card(
    uow: UnitOfWork,
    ctx: FhirContext,
    *,
    patient_id: str,
    actor: str,
    reason: str | None = None,
    district: str | None = None,
    residence: str | None = None,
    origin: Literal["single", "batch"] = "single",
) -> CardView:
    """Issue a card to the resident of ``patient_id`` (status ``issued``; the holder activates it).

    The number is the resident's ID number (a later card: ID number + ``-NN``), else a platform
    number. Refused (CONFLICT) when the person already holds a card that is not replaced or
    revoked, at this or any other institution.
    """
    _require_update(ctx)
    resource, _version = _patient(uow, ctx, patient_id)
    resident_id = _resident_id_of(resource)
    keyring = _keyring(uow)
    holder_key = keyring.blind(resident_id, kind="prc-id") if resident_id else None
    held = _current_card(uow, patient_id, holder_key)
    if held is not None:
        raise _already_holds(held)
    number, kind, sequence = _new_number(uow, keyring, resident_id, holder_key)
    at = _now_us()
    card_id = _insert_card(
        uow,
        keyring=keyring,
        number=number,
        kind=kind,
        sequence=sequence,
        holder_key=holder_key,
        patient_id=patient_id,
        district=check_district(district) if district else _district_of(resource, resident_id),
        residence=parse_residence(residence) if residence else None,
        origin=origin,
        replaces=None,
        at=at,
        actor=actor,
        reason=reason,
    )
    _write_card_identifier(uow, ctx, patient_id, add=number)
    return _by_id(uow, card_id)


def _transition(
    uow: UnitOfWork, ctx: FhirContext, *, card_no: str, action: Action, actor: str, reason: str
) -> CardView:
    if not reason.strip():
        raise YilianError(
            Category.INVALID, "a reason is required: every change of a card is recorded with why"
        )
    _require_update(ctx)
    row = _row_by_number(uow, card_no, for_update=True)
    _require_visible(uow, ctx, row)
    current = CardStatus(row.status)
    target = next_status(current, action)
    at = _now_us()
    changed = uow.conn.execute(
        update(card)
        .where(card.c.card_id == row.card_id, card.c.status == current.value)
        .values(status=target.value, status_at=at, status_reason=reason)
    )
    if changed.rowcount != 1:
        # Another request changed the card between our read and this write (SQLite has no row lock).
        raise YilianError(
            Category.CONFLICT, "the card was changed by another request meanwhile; look it up and try again"
        )
    _record(
        uow,
        card_id=row.card_id,
        at=at,
        action=action,
        from_status=current,
        to_status=target,
        actor=actor,
        reason=reason,
    )
    return _by_id(uow, row.card_id)


def activate_card(uow: UnitOfWork, ctx: FhirContext, *, card_no: str, actor: str, reason: str) -> CardView:
    """The holder received the card and proved who they are: it can now be used."""
    return _transition(uow, ctx, card_no=card_no, action=Action.ACTIVATE, actor=actor, reason=reason)


def report_lost(uow: UnitOfWork, ctx: FhirContext, *, card_no: str, actor: str, reason: str) -> CardView:
    """挂失: refused everywhere from now on; resumed if found, or replaced."""
    return _transition(uow, ctx, card_no=card_no, action=Action.REPORT_LOST, actor=actor, reason=reason)


def suspend_card(uow: UnitOfWork, ctx: FhirContext, *, card_no: str, actor: str, reason: str) -> CardView:
    return _transition(uow, ctx, card_no=card_no, action=Action.SUSPEND, actor=actor, reason=reason)


def resume_card(uow: UnitOfWork, ctx: FhirContext, *, card_no: str, actor: str, reason: str) -> CardView:
    """A suspended card released, or a lost card found again (解挂)."""
    return _transition(uow, ctx, card_no=card_no, action=Action.RESUME, actor=actor, reason=reason)


def revoke_card(uow: UnitOfWork, ctx: FhirContext, *, card_no: str, actor: str, reason: str) -> CardView:
    """注销: the card is cancelled for good and its number retired on the Patient."""
    view = _transition(uow, ctx, card_no=card_no, action=Action.REVOKE, actor=actor, reason=reason)
    _write_card_identifier(uow, ctx, view.patient_id, retire=view.card_no)
    return view


def replace_card(uow: UnitOfWork, ctx: FhirContext, *, card_no: str, actor: str, reason: str) -> CardView:
    """补卡: the old card becomes ``replaced`` and a new card (new number) is issued, linked both ways."""
    old = _transition(uow, ctx, card_no=card_no, action=Action.REPLACE, actor=actor, reason=reason)
    row = uow.conn.execute(select(card).where(card.c.card_id == old.card_id)).one()
    keyring = _keyring(uow)
    resident_id = parse_card_number(old.card_no).resident_id
    number, kind, sequence = _new_number(uow, keyring, resident_id, row.holder_key)
    card_id = _insert_card(
        uow,
        keyring=keyring,
        number=number,
        kind=kind,
        sequence=sequence,
        holder_key=row.holder_key,
        patient_id=row.patient_id,
        district=row.district,
        residence=row.residence,
        origin=row.origin,
        replaces=row.card_id,
        at=_now_us(),
        actor=actor,
        reason=reason,
    )
    uow.conn.execute(update(card).where(card.c.card_id == row.card_id).values(replaced_by=card_id))
    _write_card_identifier(uow, ctx, row.patient_id, add=number, retire=old.card_no)
    return _by_id(uow, card_id)


def get_card(uow: UnitOfWork, ctx: FhirContext, card_no: str) -> CardView:
    """A card in any state (staff looking at a lost card, the CLI's ``show``)."""
    row = _row_by_number(uow, card_no)
    _require_visible(uow, ctx, row)
    return _view(uow, row)


def card_history(uow: UnitOfWork, ctx: FhirContext, card_no: str) -> list[CardEvent]:
    row = _row_by_number(uow, card_no)
    _require_visible(uow, ctx, row)
    rows = uow.conn.execute(
        select(card_event).where(card_event.c.card_id == row.card_id).order_by(card_event.c.seq)
    )
    return [CardEvent(_at(r.at), r.action, r.from_status, r.to_status, r.actor, r.reason) for r in rows]


def unusable_reason(view: CardView) -> YilianError | None:
    """Why the card cannot be used now (None if it can): what the front desk and the till say,
    with its own reason code for each state."""
    return _refusal(view.status, view.status_at, view.replaced_by)


def _refusal(status: CardStatus, status_at: dt.datetime, replaced_by: str | None) -> CardRefusal | None:
    day = status_at.astimezone(_CHINA).date().isoformat()
    if status is CardStatus.ACTIVE:
        return None
    if status is CardStatus.ISSUED:
        return CardRefusal(
            Category.CONFLICT,
            "card-not-activated",
            f"health card issued on {day} has not been activated yet; the holder activates it first",
        )
    if status is CardStatus.LOST:
        return CardRefusal(
            Category.CONFLICT,
            "card-lost",
            f"health card reported lost on {day}; it is refused until the holder resumes it or gets a replacement card",
        )
    if status is CardStatus.SUSPENDED:
        return CardRefusal(
            Category.CONFLICT,
            "card-suspended",
            f"health card suspended by the issuer on {day}; it cannot be used",
        )
    if status is CardStatus.REPLACED:
        successor = f" ({mask(replaced_by)})" if replaced_by else ""
        return CardRefusal(
            Category.GONE,
            "card-replaced",
            f"health card replaced on {day}; use the replacement card{successor}",
        )
    return CardRefusal(
        Category.GONE, "card-revoked", f"health card revoked on {day}; it can no longer be used"
    )


# A card in these states finds nobody: a lookup by its number is refused with the state. An
# issued card that its holder has not activated yet still names its holder (the record is
# theirs); only using it — at the front desk, at the till — waits for the activation.
REFUSED_ON_LOOKUP = frozenset(
    {CardStatus.LOST, CardStatus.SUSPENDED, CardStatus.REPLACED, CardStatus.REVOKED}
)

# Asked for every search by a health card number: compiled once.
_STATE_BY_NUMBER = Statement(
    lambda _: select(card.c.status, card.c.status_at, card.c.replaced_by, card.c.patient_id).where(
        card.c.number_key == bindparam("number_key")
    )
)


class CardLookupGuard:
    """The card system's lookup guard (:class:`yilian.fhir.access.LookupGuard`, installed in
    the platform's FHIR settings): a search, ``$match``, PIX or ``Person`` lookup by the number
    of a card that is lost, suspended, replaced or revoked is refused with the card's state as
    the reason — the same refusal (409 / 410, reason code) the front-desk lookup gives — instead
    of finding its holder.

    A value searched without a system is judged only when its form names a card and nothing
    else (a platform number, a later card's ``-NN`` number): a first card's number is also the
    holder's ID number, which a lost card does not withdraw. Numbers the card system never
    issued (a hospital's feed may carry its own) are left to the search. A resident is told the
    state only of their own (or their children's) cards: by anybody else's number the search
    finds nothing, as by a number never issued, which is what the card API answers them too.
    """

    def check_lookup(self, uow: UnitOfWork, system: str | None, value: str, policy: AccessPolicy) -> None:
        if system is not None and system != naming.HEALTH_CARD:
            return
        try:
            number = health_card.parse(value)
        except YilianError:
            return  # not a card number: nothing is found by it
        if system is None and not number.card_only:
            return
        keyring = sealing.keyring_for(uow.conn.engine)
        if keyring is None:
            return  # no keys, no cards (they cannot be stored without them)
        row = _STATE_BY_NUMBER.one_or_none(uow.conn, {"number_key": _number_key(keyring, number.value)})
        if row is None:
            return
        status, status_at, replaced_by = CardStatus(row[0]), int(row[1]), row[2]
        if status in REFUSED_ON_LOOKUP and (
            policy.front_desk or policy.can_see(uow, "Patient", row[3], row[3])
        ):
            refusal = _refusal(status, _at(status_at), _number_of(uow, replaced_by))
            if refusal is not None:
                raise refusal


def require_usable(uow: UnitOfWork, card_no: str, *, patients: frozenset[str] | None = None) -> CardView:
    """The card, if it can be used now; else the reason (CONFLICT: lost, suspended, not activated;
    GONE: replaced, revoked; NOT_FOUND; INVALID for a malformed number). For other systems
    (payments) that already decided the caller may act on the card.

    ``patients``: the caller may only use cards issued on these Patients (a resident: their own
    and their children's). Any other card is answered as unknown, before its state is looked at,
    so a resident cannot learn whether somebody else's card exists or was reported lost."""
    row = _row_by_number(uow, card_no)
    if patients is not None and row.patient_id not in patients:
        raise _no_such_card()
    return _usable(uow, row)


def _usable(uow: UnitOfWork, row: Row[Any]) -> CardView:
    view = _view(uow, row)
    refusal = unusable_reason(view)
    if refusal is not None:
        raise refusal
    return view


def resolve(uow: UnitOfWork, ctx: FhirContext, card_no: str, *, front_desk: bool) -> Resolution:
    """The front-desk lookup: a usable card → the person's records the caller may see.

    ``front_desk``: the caller is a member institution (or the platform operator). A card
    presented at its desk is how a resident is identified before treatment, so any card
    resolves — and its state (lost, not activated…) is what the desk must be told — but what
    comes back is only what :class:`Resolution` allows. Otherwise (a resident's token) only
    cards issued on records the caller may see (their own, their children's) resolve; any other
    number answers as unknown before its state is looked at, so that it does not tell whether
    somebody else holds a card."""
    row = _row_by_number(uow, card_no)
    if not front_desk:
        _require_visible(uow, ctx, row)
    view = _usable(uow, row)
    records = mpi.records_of(uow, view.person_id) if view.person_id else []
    if view.patient_id not in records:
        records.append(view.patient_id)
    visible = [p for p in sorted(records) if ctx.policy.can_see(uow, "Patient", p)]
    return Resolution(view, visible, holder_visible=view.patient_id in visible)


# --------------------------------------------------------------------------- counts


@dataclass(frozen=True, slots=True)
class Tally:
    issued: int = 0
    held: int = 0  # not replaced or revoked: one per person holding a card
    active: int = 0

    def plus(self, status: str) -> Tally:
        return Tally(
            self.issued + 1,
            self.held + (status in {s.value for s in CURRENT}),
            self.active + (status == CardStatus.ACTIVE.value),
        )

    def to_json(self) -> dict[str, int]:
        return {"issued": self.issued, "held": self.held, "active": self.active}


@dataclass(frozen=True, slots=True)
class CardCounts:
    as_of: dt.datetime
    total: Tally
    by_status: dict[str, int]
    by_district: dict[str, Tally]
    by_residence: dict[str, Tally]

    def to_json(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            **self.total.to_json(),
            "by_status": self.by_status,
            "by_district": {k: v.to_json() for k, v in self.by_district.items()},
            "by_residence": {k: v.to_json() for k, v in self.by_residence.items()},
        }


def card_counts(uow: UnitOfWork, *, as_of: dt.datetime | None = None) -> CardCounts:
    """Cards issued, held and active — in all, by district and by urban/rural residence — now or
    as they stood at ``as_of`` (replayed from the history, so a past period's indicator does not
    change when cards are lost later)."""
    moment = as_of or clock.now()
    if moment.tzinfo is None:
        raise YilianError(Category.INVALID, "as_of needs a time zone")
    states: list[tuple[str, str, str]] = []  # (status, district, residence) per card
    if as_of is None:
        rows = uow.conn.execute(select(card.c.status, card.c.district, card.c.residence))
        states = [(r.status, r.district or "unknown", r.residence or "unknown") for r in rows]
    else:
        last: dict[str, str] = {}
        events = uow.conn.execute(
            select(card_event.c.card_id, card_event.c.to_status)
            .where(card_event.c.at <= _us(moment))
            .order_by(card_event.c.card_id, card_event.c.seq)
        )
        for e in events:
            last[e.card_id] = e.to_status
        if last:
            where = {
                r.card_id: r
                for r in uow.conn.execute(select(card.c.card_id, card.c.district, card.c.residence))
            }
            states = [
                (status, where[cid].district or "unknown", where[cid].residence or "unknown")
                for cid, status in last.items()
                if cid in where
            ]
    total = Tally()
    by_status: dict[str, int] = {}
    by_district: dict[str, Tally] = {}
    by_residence: dict[str, Tally] = {}
    for status, district, residence in states:
        total = total.plus(status)
        by_status[status] = by_status.get(status, 0) + 1
        by_district[district] = by_district.get(district, Tally()).plus(status)
        by_residence[residence] = by_residence.get(residence, Tally()).plus(status)
    return CardCounts(
        moment,
        total,
        dict(sorted(by_status.items())),
        dict(sorted(by_district.items())),
        dict(sorted(by_residence.items())),
    )


# --------------------------------------------------------------------------- batch issue

Outcome = Literal["issued", "already-issued", "refused"]


@dataclass(frozen=True, slots=True)
class RowOutcome:
    line: int
    outcome: Outcome
    name: str = ""
    reason: str = ""
    card_no: str | None = field(default=None, repr=False)  # usually an ID number: kept out of logs
    patient_id: str | None = None


@dataclass
class BatchReport:
    rows: list[RowOutcome] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.rows if r.outcome == outcome)

    @property
    def refused(self) -> list[RowOutcome]:
        return [r for r in self.rows if r.outcome == "refused"]

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": len(self.rows),
            "issued": self.count("issued"),
            "already_issued": self.count("already-issued"),
            "refused": [{"line": r.line, "name": r.name, "reason": r.reason} for r in self.refused],
        }


_COMPOUND_SURNAMES = frozenset(
    [
        "欧阳",
        "司马",
        "上官",
        "诸葛",
        "东方",
        "皇甫",
        "尉迟",
        "公孙",
        "慕容",
        "夏侯",
        "令狐",
        "长孙",
        "宇文",
        "司徒",
        "申屠",
        "轩辕",
        "端木",
        "独孤",
        "南宫",
        "西门",
        "澹台",
        "闻人",
        "呼延",
    ]
)


def _split_name(name: str) -> tuple[str, str]:
    if len(name) > 2 and name[:2] in _COMPOUND_SURNAMES:
        return name[:2], name[2:]
    if name.isascii():  # a romanised or Western name: family name last
        parts = name.split()
        return (parts[-1], " ".join(parts[:-1])) if len(parts) > 1 else (name, "")
    return name[:1], name[1:]


def _patient_from_row(row: RegisterRow) -> dict[str, Any]:
    family, given = _split_name(row.name)
    human: dict[str, Any] = {"use": "official", "text": row.name, "family": family}
    if given:
        human["given"] = [given]
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [human],
        "gender": row.sex,
        "birthDate": row.birth_date.isoformat(),
    }
    if row.id_number:
        patient["identifier"] = [
            {"use": "official", "system": naming.PRC_RESIDENT_ID, "value": row.id_number}
        ]
    if row.phone:
        patient["telecom"] = [{"system": "phone", "value": row.phone, "use": "mobile"}]
    address: dict[str, Any] = {"use": "home", "district": row.district}
    if row.address:
        address["text"] = row.address
    patient["address"] = [address]
    return patient


def _criteria(row: RegisterRow) -> list[tuple[str, str]]:
    """The search that finds this resident's Patient: by ID number where there is one, else by
    name, birth date, sex (and phone), so a re-run finds what the first run created."""
    if row.id_number:
        return [("identifier", f"{naming.PRC_RESIDENT_ID}|{row.id_number}")]
    pairs = [("name:exact", row.name), ("birthdate", row.birth_date.isoformat()), ("gender", row.sex)]
    if row.phone:
        pairs.append(("phone", row.phone))
    return pairs


def _find_patients(uow: UnitOfWork, ctx: FhirContext, criteria: list[tuple[str, str]]) -> list[str]:
    resp = dispatch(
        uow, ctx, FhirRequest("GET", "Patient", query=[*criteria, ("_elements", "id"), ("_count", "20")])
    )
    bundle = orjson.loads(resp.body or b"{}")
    return sorted(
        e["resource"]["id"]
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode", "match") == "match"
    )


def _issue_row(uow: UnitOfWork, ctx: FhirContext, row: RegisterRow, actor: str) -> RowOutcome:
    criteria = _criteria(row)
    found = _find_patients(uow, ctx, criteria)
    keyring = _keyring(uow)
    holder_key = keyring.blind(row.id_number, kind="prc-id") if row.id_number else None
    for patient_id in found:
        held = _current_card(uow, patient_id, holder_key)
        if held is None:
            continue
        if held.origin == "batch" and held.patient_id in found:
            # Loaded before (the same file run again): nothing new.
            number = keyring.decrypt(held.number_sealed, context=NUMBER_CONTEXT)
            return RowOutcome(row.line, "already-issued", row.name, "already issued", number, held.patient_id)
        raise _already_holds(held)
    if found:
        view = issue_card(
            uow,
            ctx,
            patient_id=found[0],
            actor=actor,
            reason=f"population register, line {row.line}",
            district=row.district,
            residence=row.residence,
            origin="batch",
        )
        return RowOutcome(row.line, "issued", row.name, "", view.card_no, view.patient_id)
    return _issue_to_new_patient(uow, ctx, row, actor, criteria)


def _issue_to_new_patient(
    uow: UnitOfWork, ctx: FhirContext, row: RegisterRow, actor: str, criteria: list[tuple[str, str]]
) -> RowOutcome:
    """Create the Patient with its card identifier already on it: one write (and one patient-index
    match) instead of a create and then an update, which halves the cost of a register load."""
    keyring = _keyring(uow)
    holder_key = keyring.blind(row.id_number, kind="prc-id") if row.id_number else None
    number, kind, sequence = _new_number(uow, keyring, row.id_number, holder_key)
    body = _patient_from_row(row)
    body.setdefault("identifier", []).append(_card_identifier(number))
    query = urlencode(criteria)  # names may hold characters that mean something in a query
    resp = dispatch(uow, ctx, FhirRequest("POST", "Patient", headers={"if-none-exist": query}, body=body))
    if resp.resource is None:
        raise YilianError(Category.INTERNAL, "creating the Patient returned no resource")
    patient_id = resp.resource.res_id
    reason = f"population register, line {row.line}"
    if resp.status != 201:
        # Another request created this resident in the meantime: issue to that record as usual.
        view = issue_card(
            uow,
            ctx,
            patient_id=patient_id,
            actor=actor,
            reason=reason,
            district=row.district,
            residence=row.residence,
            origin="batch",
        )
        return RowOutcome(row.line, "issued", row.name, "", view.card_no, patient_id)
    # The patient index may have found this resident under another record that holds a card;
    # the row's savepoint then takes the new Patient back out.
    held = _current_card(uow, patient_id, holder_key)
    if held is not None:
        raise _already_holds(held)
    _insert_card(
        uow,
        keyring=keyring,
        number=number,
        kind=kind,
        sequence=sequence,
        holder_key=holder_key,
        patient_id=patient_id,
        district=row.district,
        residence=row.residence,
        origin="batch",
        replaces=None,
        at=_now_us(),
        actor=actor,
        reason=reason,
    )
    return RowOutcome(row.line, "issued", row.name, "", number, patient_id)


def issue_from_register(
    uow: UnitOfWork,
    ctx: FhirContext,
    *,
    rows: Iterable[RegisterRow],
    actor: str,
) -> list[RowOutcome]:
    """Issue a card to every resident of validated register rows: find (by ID number, else by
    demographics) or create the Patient, then issue. Each row is all-or-nothing in its own
    savepoint, so a refused row leaves nothing behind and the others go on. Running the same
    rows again issues nothing new (``already-issued``)."""
    out: list[RowOutcome] = []
    for row in rows:
        try:
            with savepoint(uow):
                outcome = _issue_row(uow, ctx, row, actor)
        except YilianError as err:
            outcome = RowOutcome(row.line, "refused", row.name, err.message)
        out.append(outcome)
    return out
