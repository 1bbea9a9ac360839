"""The resident health card's plain rules: its states and transitions, its number, and the
population-register CSV layout. No storage and no FHIR here, so all of it is tested without a
database.

Card numbers (docs/identifiers.md, "Health card number"):

- a resident with a PRC ID number gets it as the card number (18 characters), as the resident
  health card standard asks, so the number on the card is the one people already know;
- every later card of the same resident (a replacement, or a new card after a revocation) is
  ``<ID number>-<NN>``: the ID number, a hyphen and a two-digit issue sequence ``02``–``99``.
  The old card's number must stay refused, so the new one cannot be the bare ID number again;
- a resident without an ID number (newborns, people who never had one) gets a platform number:
  ``00`` + 15 random digits + an ISO 7064 MOD 11-2 check character, like GB 11643. Real ID
  numbers start with a province code (11–82) or ``9`` (foreigners' permanent residence cards),
  never ``0``, so a platform number can never be somebody's ID number. Random rather than
  sequential so that card numbers cannot be enumerated.

How a number is read and checked is :mod:`yilian.kernel.health_card`: the patient index checks
every health card identifier on a Patient with the same rule, without depending on this system.
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final, Literal

from yilian.kernel import clock, health_card, naming, prc_id
from yilian.kernel.errors import Category, Issue, YilianError

# --------------------------------------------------------------------------- states


class CardStatus(enum.StrEnum):
    ISSUED = "issued"  # made and handed over, not yet activated by its holder
    ACTIVE = "active"
    LOST = "lost"  # reported lost (挂失); found again it can be resumed (解挂)
    SUSPENDED = "suspended"  # held by the issuer (investigation, death being confirmed…)
    REPLACED = "replaced"  # superseded by a new card (补卡/换卡); terminal
    REVOKED = "revoked"  # cancelled for good (注销); terminal


class Action(enum.StrEnum):
    ISSUE = "issue"
    ACTIVATE = "activate"
    REPORT_LOST = "report-lost"
    SUSPEND = "suspend"
    RESUME = "resume"
    REPLACE = "replace"
    REVOKE = "revoke"


TERMINAL: Final = frozenset({CardStatus.REPLACED, CardStatus.REVOKED})
# A person holds at most one card in these states: the one that can still be used or resumed.
CURRENT: Final = frozenset({CardStatus.ISSUED, CardStatus.ACTIVE, CardStatus.LOST, CardStatus.SUSPENDED})

# From which states each action may be taken, and where it leads. Replacing a suspended card
# is refused on purpose: it would let a holder slip out of the issuer's hold.
TRANSITIONS: Final[dict[Action, tuple[frozenset[CardStatus], CardStatus]]] = {
    Action.ACTIVATE: (frozenset({CardStatus.ISSUED}), CardStatus.ACTIVE),
    Action.REPORT_LOST: (
        frozenset({CardStatus.ISSUED, CardStatus.ACTIVE, CardStatus.SUSPENDED}),
        CardStatus.LOST,
    ),
    Action.SUSPEND: (frozenset({CardStatus.ISSUED, CardStatus.ACTIVE}), CardStatus.SUSPENDED),
    Action.RESUME: (frozenset({CardStatus.SUSPENDED, CardStatus.LOST}), CardStatus.ACTIVE),
    Action.REPLACE: (
        frozenset({CardStatus.ISSUED, CardStatus.ACTIVE, CardStatus.LOST}),
        CardStatus.REPLACED,
    ),
    Action.REVOKE: (CURRENT, CardStatus.REVOKED),
}

_DESCRIBE: Final = {
    CardStatus.ISSUED: "issued but not activated",
    CardStatus.ACTIVE: "active",
    CardStatus.LOST: "reported lost",
    CardStatus.SUSPENDED: "suspended",
    CardStatus.REPLACED: "replaced",
    CardStatus.REVOKED: "revoked",
}


def describe(status: CardStatus) -> str:
    return _DESCRIBE[status]


def next_status(current: CardStatus, action: Action) -> CardStatus:
    """The state ``action`` leads to, or a CONFLICT saying why it cannot be taken now."""
    if action is Action.ISSUE:
        raise YilianError(
            Category.INVALID, "a card is issued once; issuing is not a transition of an existing card"
        )
    allowed, target = TRANSITIONS[action]
    if current not in allowed:
        hint = ""
        if current in TERMINAL:
            hint = "; it can no longer change"
        elif action is Action.REPLACE and current is CardStatus.SUSPENDED:
            hint = "; resume it first (a suspended card is held by the issuer)"
        elif action is Action.ACTIVATE and current is not CardStatus.ISSUED:
            hint = "; only a newly issued card is activated (a lost or suspended card is resumed)"
        raise YilianError(
            Category.CONFLICT,
            f"cannot {action.value.replace('-', ' ')} a card that is {describe(current)}{hint}",
        )
    return target


# --------------------------------------------------------------------------- card numbers

PLATFORM_PREFIX: Final = health_card.PLATFORM_PREFIX
MAX_SEQUENCE: Final = health_card.MAX_SEQUENCE
CardKind = health_card.CardKind
CardNumber = health_card.CardNumber
mask = health_card.mask


class CardRefusal(YilianError):
    """Why a card number cannot be used, with a machine-readable ``reason`` (``card-lost``,
    ``card-replaced``, ``unknown-card``…): a till tells a lost card from a mistyped one without
    parsing the message. The API puts the reason in the problem document, the FHIR endpoint in
    the OperationOutcome issue's ``details`` (code system ``CARD_REFUSAL``)."""

    def __init__(self, category: Category, reason: str, message: str) -> None:
        # A card refused for its state breaks a rule of the card's lifecycle: "business-rule"
        # rather than the category's "conflict" (an edit clash) or "deleted" (a removed resource).
        code = "business-rule" if category in (Category.CONFLICT, Category.GONE) else None
        super().__init__(
            category, message, issues=[Issue(message, code=code, details=(naming.CARD_REFUSAL, reason))]
        )
        self.reason = reason


def _invalid(message: str) -> YilianError:
    return CardRefusal(Category.INVALID, "bad-card-number", message)


def parse_card_number(value: str, *, today: dt.date | None = None) -> CardNumber:
    """Validate a card number as typed or read off a card (spaces ignored, ``x`` accepted).

    The rule is :func:`yilian.kernel.health_card.parse`; a malformed number is refused here with
    the reason ``bad-card-number``. Raises INVALID saying what is wrong, never repeating the number.
    """
    try:
        return health_card.parse(value, today=today)
    except CardRefusal:
        raise
    except YilianError as err:
        raise _invalid(err.message) from None


def resident_card_number(resident_id: str, sequence: int) -> str:
    """The number of an ID holder's ``sequence``-th card (1: the bare ID number)."""
    rid = prc_id.parse(resident_id).number
    if sequence == 1:
        return rid
    if not 2 <= sequence <= MAX_SEQUENCE:
        raise YilianError(
            Category.CONFLICT,
            f"this resident has already had {MAX_SEQUENCE} cards; no further card number is available",
        )
    return f"{rid}-{sequence:02d}"


def platform_card_number(serial: int | None = None) -> str:
    """A platform number: ``00``, 15 digits (random unless ``serial`` is given), check character."""
    if serial is None:
        serial = secrets.randbelow(10**15)
    if not 0 <= serial < 10**15:
        raise _invalid("platform card serial must have at most 15 digits")
    first17 = f"{PLATFORM_PREFIX}{serial:015d}"
    return first17 + prc_id.check_character(first17)


# --------------------------------------------------------------------------- the register CSV

REGISTER_COLUMNS: Final = (
    "name",
    "sex",
    "birth_date",
    "id_number",
    "phone",
    "address",
    "district",
    "residence",
)
REQUIRED: Final = ("name", "sex", "birth_date", "district", "residence")
Residence = Literal["urban", "rural"]
Sex = Literal["male", "female"]

_SEXES: Final[dict[str, Sex]] = {
    "male": "male", "m": "male", "男": "male", "1": "male",
    "female": "female", "f": "female", "女": "female", "2": "female",
}  # fmt: skip
_RESIDENCES: Final[dict[str, Residence]] = {
    "urban": "urban", "城镇": "urban", "城市": "urban", "1": "urban",
    "rural": "rural", "农村": "rural", "乡村": "rural", "2": "rural",
}  # fmt: skip
_DISTRICT: Final = re.compile(r"[1-8]\d{5}")
_PHONE: Final = re.compile(r"1[3-9]\d{9}")


def parse_sex(value: str) -> Sex:
    sex = _SEXES.get(value.strip().lower())
    if sex is None:
        raise _invalid(f"sex {value.strip()!r} is not one of male/female, 男/女, M/F, 1/2")
    return sex


def parse_residence(value: str) -> Residence:
    residence = _RESIDENCES.get(value.strip().lower())
    if residence is None:
        raise _invalid(f"residence {value.strip()!r} is not one of urban/rural, 城镇/农村, 1/2")
    return residence


def check_district(value: str) -> str:
    text = value.strip()
    if not _DISTRICT.fullmatch(text):
        raise _invalid(f"district {text!r} is not a 6-digit administrative division code (GB/T 2260)")
    return text


@dataclass(frozen=True, slots=True)
class RegisterRow:
    """One resident of a population-register file, validated."""

    line: int  # the row's line in the file (the header is line 1)
    name: str
    sex: Sex
    birth_date: dt.date
    id_number: str | None = None
    phone: str | None = None
    address: str | None = None
    district: str = ""
    residence: Residence = "urban"

    def __repr__(self) -> str:
        return f"RegisterRow(line={self.line}, id={prc_id.mask(self.id_number or '')!r})"

    @property
    def dedupe_key(self) -> str:
        """Rows with the same key are the same resident within one file."""
        if self.id_number:
            return "id:" + self.id_number
        return f"demo:{self.name}|{self.birth_date.isoformat()}|{self.sex}|{self.phone or ''}"


@dataclass(frozen=True, slots=True)
class Refusal:
    line: int
    reason: str
    name: str = ""


def _birth_date(value: str) -> dt.date:
    text = value.strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d", "%Y/%m/%d"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise _invalid(f"birth_date {text!r} is not a date (YYYY-MM-DD)")


def parse_row(line: int, raw: dict[str, str], *, today: dt.date | None = None) -> RegisterRow:
    """Validate one CSV row; raises INVALID with the first thing that is wrong."""
    values = {k: (raw.get(k) or "").strip() for k in REGISTER_COLUMNS}
    missing = [k for k in REQUIRED if not values[k]]
    if missing:
        raise _invalid(f"missing required field{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    sex = parse_sex(values["sex"])
    born = _birth_date(values["birth_date"])
    # Birth dates are Beijing calendar dates, as prc_id judges them.
    today = today or clock.now().astimezone(dt.timezone(dt.timedelta(hours=8))).date()
    if born > today:
        raise _invalid(f"birth_date {born.isoformat()} is in the future")
    id_number: str | None = None
    if values["id_number"]:
        try:
            rid = prc_id.parse(values["id_number"], today=today)
        except YilianError as err:
            raise _invalid(f"id_number: {err.message}") from None
        if rid.birth_date != born:
            raise _invalid(
                f"id_number: birth date in the number ({rid.birth_date.isoformat()}) differs from birth_date ({born.isoformat()})"
            )
        if rid.sex != sex:
            raise _invalid(f"id_number: the number encodes sex {rid.sex}, the row says {sex}")
        id_number = rid.number
    phone = re.sub(r"[\s-]", "", values["phone"]) or None
    if phone is not None and not _PHONE.fullmatch(phone):
        raise _invalid("phone is not an 11-digit mainland mobile number")
    return RegisterRow(
        line=line,
        name=values["name"],
        sex=sex,
        birth_date=born,
        id_number=id_number,
        phone=phone,
        address=values["address"] or None,
        district=check_district(values["district"]),
        residence=parse_residence(values["residence"]),
    )


def read_register(lines: Iterable[str], *, today: dt.date | None = None) -> Iterator[RegisterRow | Refusal]:
    """Every data row of a register file, validated; duplicates within the file are refused.

    The header must name at least the required columns (in any order; unknown columns are
    ignored, so a register export with more columns can be loaded as it is).
    """
    reader = csv.DictReader(lines)
    header = [h.strip().lstrip("\ufeff") for h in (reader.fieldnames or [])]
    absent = [c for c in REQUIRED if c not in header]
    if absent:
        raise _invalid(
            f"the register file lacks the column{'s' if len(absent) > 1 else ''} {', '.join(absent)} "
            f"(expected a header with {', '.join(REGISTER_COLUMNS)})"
        )
    reader.fieldnames = header
    seen: dict[str, int] = {}
    for raw in reader:
        line = reader.line_num
        name = (raw.get("name") or "").strip()
        try:
            row = parse_row(
                line, {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)}, today=today
            )
        except YilianError as err:
            yield Refusal(line, err.message, name)
            continue
        first = seen.setdefault(row.dedupe_key, line)
        if first != line:
            yield Refusal(line, f"duplicate: the same resident as line {first}", name)
            continue
        yield row
