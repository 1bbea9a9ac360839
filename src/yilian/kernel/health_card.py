"""Resident health card numbers (居民健康卡号): their layout and check, without the card system.

The card system (``yilian.card``) issues the numbers; the patient index checks every health card
identifier on a Patient against the same rule, and neither may depend on the other, so the rule
lives here. Layouts (docs/identifiers.md, "Health card number"):

- a resident with a PRC ID number gets it as the card number (18 characters);
- every later card of the same resident is ``<ID number>-<NN>``, ``NN`` = ``02``–``99``;
- a resident without an ID number gets a platform number: ``00`` + 15 digits + an ISO 7064
  MOD 11-2 check character, like GB 11643. No issued ID number begins with ``0``, so a platform
  number can never be somebody's ID number.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Final, Literal

from yilian.kernel import prc_id
from yilian.kernel.errors import Category, YilianError

PLATFORM_PREFIX: Final = "00"
_PLATFORM: Final = re.compile(r"00\d{15}[\dX]")
_REISSUE: Final = re.compile(r"(.{18})-(\d{2})")
MAX_SEQUENCE: Final = 99

CardKind = Literal["resident-id", "platform"]


@dataclass(frozen=True, slots=True)
class CardNumber:
    """A validated card number: ``kind`` says how it was made, ``sequence`` which card of the
    holder it is (1 for the first), ``resident_id`` the holder's ID number for ID holders."""

    value: str
    kind: CardKind
    sequence: int
    resident_id: str | None

    def __repr__(self) -> str:
        # The number is (or contains) an ID number: never print it whole.
        return f"CardNumber({self.masked!r}, kind={self.kind!r}, sequence={self.sequence})"

    @property
    def masked(self) -> str:
        return mask(self.value)

    @property
    def card_only(self) -> bool:
        """Whether this form names a card and nothing else: a platform number or a later card's
        ``-NN`` number. A first card's number is also its holder's ID number."""
        return self.kind == "platform" or self.sequence > 1


def mask(card_no: str) -> str:
    """The number as logs and messages may show it (``110105********0021-02``)."""
    head, sep, tail = card_no.partition("-")
    return prc_id.mask(head) + sep + tail


def _invalid(message: str) -> YilianError:
    return YilianError(Category.INVALID, message)


def parse(value: str, *, today: dt.date | None = None) -> CardNumber:
    """Validate a card number as typed or read off a card (spaces ignored, ``x`` accepted, a
    legacy 15-digit ID number converted); ``value`` of the result is the normalised form.

    Raises INVALID saying what is wrong, never repeating the number.
    """
    text = re.sub(r"\s+", "", value).upper()
    if not text:
        raise _invalid("health card number is empty")
    m = _REISSUE.fullmatch(text)
    if m is not None:
        base, seq = m.group(1), int(m.group(2))
        if not 2 <= seq <= MAX_SEQUENCE:
            raise _invalid("health card number: the issue sequence after the hyphen must be 02-99")
        if base.startswith(PLATFORM_PREFIX):
            raise _invalid("health card number: platform numbers have no issue sequence")
        rid = _resident_id(base, today)
        return CardNumber(f"{rid}-{seq:02d}", "resident-id", seq, rid)
    if len(text) == 15 and text.isdigit():
        # A legacy ID number read off an old document names the same card as its 18-character form.
        rid = _resident_id(text, today)
        return CardNumber(rid, "resident-id", 1, rid)
    if len(text) != 18:
        raise _invalid(
            "health card number must have 18 characters (or 18 + '-NN' for a later card of an ID holder), "
            f"got {len(text)}"
        )
    if text.startswith(PLATFORM_PREFIX):
        if not _PLATFORM.fullmatch(text):
            raise _invalid(
                "health card number (platform): characters 1-17 must be digits and the last a digit or X"
            )
        expected = prc_id.check_character(text[:17])
        if text[17] != expected:
            raise _invalid(
                f"health card number (platform): bad check character {text[17]!r}, expected {expected!r} "
                "(a digit is mistyped or two are swapped)"
            )
        return CardNumber(text, "platform", 1, None)
    rid = _resident_id(text, today)
    return CardNumber(rid, "resident-id", 1, rid)


def _resident_id(text: str, today: dt.date | None) -> str:
    try:
        return prc_id.parse(text, today=today).number
    except YilianError as err:
        raise _invalid(f"health card number: {err.message}") from None
