"""A record prepared for comparison: every field normalised once, when the record enters the
index or the batch, so that comparing two records is only lookups and short string metrics.

This is also what the index keeps in memory for each of a million persons, hence one flat
slotted object with shared (interned) strings rather than the original record.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from yilian.mpi.matching import dates
from yilian.mpi.matching.addresses import normalise_address, normalise_postcode
from yilian.mpi.matching.identifiers import normalise_phone, parse_prc_id
from yilian.mpi.matching.names import Name, normalise_name
from yilian.mpi.matching.record import PersonRecord

SEX_CODES = {"male": 1, "female": 2}


@dataclass(frozen=True, slots=True)
class Features:
    record_id: str
    source: str
    name: Name
    birth: int  # YYYYMMDD, 0 = unknown
    birth_year: int  # known year when the date is not (year-only registrations), else 0
    sex: int  # 0 unknown, 1 male, 2 female
    prc_id: str  # 18-character form when valid, raw characters otherwise, "" = none
    prc_valid: bool
    # The valid ID number's own birth date or sex contradicts the record's: the number was
    # probably borrowed or mistyped, so it must not decide a match on its own.
    prc_conflict: bool
    phone: str
    address: str
    postcode: str
    identifiers: tuple[tuple[str, str], ...]  # (system, value), the MRN as ("mrn:<source>", mrn)

    @property
    def year(self) -> int:
        return self.birth // 10000 if self.birth else self.birth_year


def _intern(text: str | None) -> str:
    return sys.intern(text) if text else ""


def prepare(record: PersonRecord) -> Features:
    """Normalise a :class:`PersonRecord` for matching.

    A valid ID number fills in an unknown birth date or sex (it encodes both), and is marked
    as conflicting when the record states others.
    """
    name = normalise_name(record.family_name, record.given_name, record.full_name)
    birth = dates.as_int(record.birth_date)
    sex = SEX_CODES.get(record.sex or "", 0)
    parsed = parse_prc_id(record.prc_id)
    conflict = False
    if parsed is not None and parsed.valid:
        id_birth = dates.as_int(parsed.birth_date)
        id_sex = SEX_CODES.get(parsed.sex or "", 0)
        if birth and birth != id_birth and dates.date_level(birth, id_birth, 0, 0) not in ("swapped", "slip"):
            conflict = True
        if sex and sex != id_sex:
            conflict = True
        if not birth and not record.birth_year:
            birth = id_birth
        if not sex:
            sex = id_sex
    identifiers = tuple(
        sorted({(_intern(i.system), i.value.strip()) for i in record.identifiers if i.value.strip()})
    )
    if record.mrn and record.mrn.strip():
        identifiers = (*identifiers, (_intern(f"mrn:{record.source or ''}"), record.mrn.strip()))
    return Features(
        record_id=record.record_id,
        source=_intern(record.source),
        name=name,
        birth=birth,
        birth_year=(record.birth_year or 0) if not birth else 0,
        sex=sex,
        prc_id=parsed.number if parsed else "",
        prc_valid=bool(parsed and parsed.valid),
        prc_conflict=conflict,
        phone=normalise_phone(record.phone),
        address=normalise_address(*record.address_lines, record.district, record.city),
        postcode=normalise_postcode(record.postcode),
        identifiers=identifiers,
    )
