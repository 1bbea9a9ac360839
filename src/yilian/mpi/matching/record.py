"""The plain record the matcher works on: one registration of a person at one institution.

Nothing here knows FHIR: the caller maps a Patient (or a CSV row, or an HL7 PID segment) to a
:class:`PersonRecord`. Every field is optional except the record id, because legacy data is
incomplete and a missing value must count as "unknown", never as a disagreement.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal

from yilian.kernel import prc_id

Sex = Literal["male", "female"]


@dataclass(frozen=True, slots=True)
class Identifier:
    """Any identifier other than the PRC resident ID number: an MRN, an insurance number, a
    passport, a social-security number. Two identifiers are comparable only within one system."""

    system: str
    value: str


@dataclass(frozen=True, slots=True)
class PersonRecord:
    """One registration of a person.

    Names may be in characters, in pinyin (with or without tones, any case, spaces or
    hyphens), or in another romanisation; give ``family_name``/``given_name`` when the source
    keeps them apart and ``full_name`` when it does not (the matcher splits it, knowing
    compound surnames and both name orders). ``birth_year`` alone is for registrations that
    only know the year. ``mrn`` is the medical record number at ``source``.
    """

    record_id: str
    source: str | None = None
    family_name: str | None = None
    given_name: str | None = None
    full_name: str | None = None
    birth_date: dt.date | None = None
    birth_year: int | None = None
    sex: Sex | None = None
    prc_id: str | None = field(default=None, repr=False)
    phone: str | None = field(default=None, repr=False)
    address_lines: tuple[str, ...] = ()
    city: str | None = None
    district: str | None = None
    postcode: str | None = None
    mrn: str | None = None
    identifiers: tuple[Identifier, ...] = ()

    def __repr__(self) -> str:
        # The ID number and phone are sensitive: never in a log line or a traceback.
        masked = prc_id.mask(self.prc_id) if self.prc_id else None
        return (
            f"PersonRecord({self.record_id!r}, source={self.source!r}, name={self.display_name!r}, "
            f"birth_date={self.birth_date}, sex={self.sex!r}, prc_id={masked!r})"
        )

    @property
    def display_name(self) -> str:
        if self.full_name:
            return self.full_name
        return " ".join(p for p in (self.family_name, self.given_name) if p)
