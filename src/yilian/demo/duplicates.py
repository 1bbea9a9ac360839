"""Realistic duplicate registrations for the patient index to find.

Each is the same person registered again at another member hospital, the way it happens
in practice: a clerk picks a homophone character, a legacy system stores only pinyin or
swaps name order, an old 15-digit ID number is copied from a pre-1999 card, the person
moved and changed phone and gave no ID. Each duplicate is a separate ``Patient`` with that
hospital's MRN (so loading never merges them) and is listed in ``DemoRegion.known_duplicates``.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from yilian.demo import geography
from yilian.demo.elements import Entry, Json, coding, concept, if_none_exist, ref, test_data_meta, urn
from yilian.demo.names import NameSampler, hanzi_name, pinyin_name
from yilian.demo.patients import (
    BCP47,
    home_address,
    id_number_identifier,
    mrn_identifier,
    patient_url,
    residence_extension,
)
from yilian.demo.population import Person, Population
from yilian.demo.registry import Registry
from yilian.kernel import naming, prc_id

KINDS = ("typo", "pinyin-only", "legacy-id", "moved", "name-order", "compound-split")
SHARE = 0.02
MINIMUM = 3


@dataclass(frozen=True, slots=True)
class KnownDuplicate:
    """A pair of Patient entries that are the same person.

    ``original``/``duplicate`` are the ``fullUrl`` of each in the bundles; the ``*_identifier``
    pairs (system, value) are their MRNs, which find them again once the server assigned ids.
    """

    original: str
    duplicate: str
    kind: str
    original_identifier: tuple[str, str]
    duplicate_identifier: tuple[str, str]
    note: str


@dataclass(frozen=True, slots=True)
class DuplicateRecord:
    person: Person
    key: str
    institution: str
    mrn: str
    kind: str
    entry: Entry
    known: KnownDuplicate


_T = TypeVar("_T")


def _fresh(taken: set[_T], make: Callable[[], _T]) -> _T:
    while (value := make()) in taken:
        pass
    taken.add(value)
    return value


def _mrn_candidate(rng: random.Random, institution: str) -> tuple[str, str]:
    return institution, str(rng.randrange(10**7, 9 * 10**7))


def _pick(
    rng: random.Random, names: NameSampler, population: Population, count: int, as_of: dt.date
) -> list[tuple[Person, str]]:
    fits: dict[str, Callable[[Person], bool]] = {
        "typo": lambda p: any(
            names.homophones(c, r) for c, r in zip(p.name.given, p.name.given_pinyin, strict=True)
        ),
        "legacy-id": lambda p: p.birth_date.year <= 1999,  # only 19xx births had 15-digit numbers
        "compound-split": lambda p: len(p.name.family) > 1,
    }
    adults = [p for p in population.people if p.id_number and 18 <= p.age(as_of) <= 90]
    rng.shuffle(adults)
    chosen: list[tuple[Person, str]] = []
    used: set[str] = set()
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        person = next((p for p in adults if p.key not in used and fits.get(kind, bool)(p)), None)
        if person is None:  # e.g. nobody with a compound surname in a small demo
            kind = "pinyin-only"
            person = next(p for p in adults if p.key not in used)
        used.add(person.key)
        chosen.append((person, kind))
    return chosen


@dataclass(slots=True)
class _Variant:
    """What the second registration recorded differently."""

    names: list[Json]
    id_value: str | None
    phone: str | None
    address: Json
    note: str


def _variant(
    rng: random.Random, names: NameSampler, person: Person, kind: str, taken_phones: set[str]
) -> _Variant:
    assert person.id_number is not None
    number = person.id_number
    masked = prc_id.mask(number)
    v = _Variant(
        [hanzi_name(person.name), pinyin_name(person.name)], number, person.phone, home_address(person), ""
    )
    name = person.name
    if kind == "typo":
        pos = rng.choice([i for i, c in enumerate(name.given) if names.homophones(c, name.given_pinyin[i])])
        option = rng.choice(names.homophones(name.given[pos], name.given_pinyin[pos]))
        swap = (option.hanzi, option.pinyin)
        given = name.given[:pos] + swap[0] + name.given[pos + 1 :]
        typo = name.with_given(given, (*name.given_pinyin[:pos], swap[1], *name.given_pinyin[pos + 1 :]))
        v.names = [hanzi_name(typo), pinyin_name(typo)]
        v.note = f"given name typed {typo.text} instead of {name.text}; same ID number {masked}"
    elif kind == "pinyin-only":
        v.names = [pinyin_name(name, upper=True)]
        v.id_value = None
        v.note = f"name only in pinyin ({v.names[0]['text']}), no ID number; same birth date and phone"
    elif kind == "legacy-id":
        v.id_value = number[:6] + number[8:17]  # the 15-digit form: two-digit year, no check character
        v.phone = None
        v.note = "ID number in the legacy 15-digit form, no phone"
    elif kind == "moved":
        v.id_value = None
        v.phone = _fresh(
            taken_phones, lambda: rng.choice(("138", "159", "186")) + f"{rng.randrange(10**8):08d}"
        )
        district = rng.choice([d for d in geography.districts() if d != person.district])
        area = rng.choice(district.areas)
        v.address = geography.address(
            district, area, rng.choice(area.places), f"{rng.randint(1, 99)}号", use="home"
        )
        v.note = f"moved to {district.division.name}, new phone, no ID number"
    elif kind == "name-order":
        swapped = pinyin_name(name, upper=True, given_first=True)
        swapped["family"], swapped["given"] = name.pinyin_given.upper(), [name.pinyin_family.upper()]
        v.names = [swapped]
        v.note = f"pinyin name with family and given swapped ({swapped['text']}); same ID number {masked}"
    else:  # compound-split: 欧阳 read as surname 欧 + given name 阳…
        family, rest = name.family[0], name.family[1:] + name.given
        v.names = [{**hanzi_name(name), "family": family, "given": [rest]}]
        v.note = f"compound surname {name.family} split as {family} + {rest}; same ID number {masked}"
    return v


def build_duplicates(
    seed: int, population: Population, registry: Registry, as_of: dt.date
) -> list[DuplicateRecord]:
    rng = random.Random(f"{seed}:duplicates")
    names = NameSampler()
    count = max(MINIMUM, round(len(population.people) * SHARE))
    taken_mrns = {(p.home, p.mrn) for p in population.people}
    taken_phones = {p.phone for p in population.people if p.phone}
    hospitals = registry.members("hospital")
    out = []
    for person, kind in _pick(rng, names, population, count, as_of):
        home = registry.institution(person.home)
        other = rng.choice([h for h in hospitals if h.key != person.home])
        mrn = _fresh(taken_mrns, partial(_mrn_candidate, rng, other.key))[1]
        v = _variant(rng, names, person, kind, taken_phones)
        identifiers = [mrn_identifier(other, mrn)]
        if v.id_value:
            identifiers.insert(0, id_number_identifier(v.id_value))
        resource: Json = {
            "resourceType": "Patient",
            "meta": test_data_meta(),
            "extension": [residence_extension(person.rural)],
            "identifier": identifiers,
            "active": True,
            "name": v.names,
        }
        if v.phone:
            resource["telecom"] = [{"system": "phone", "value": v.phone, "use": "mobile"}]
        resource["gender"] = person.sex
        resource["birthDate"] = person.birth_date.isoformat()
        resource["address"] = [v.address]
        resource["communication"] = [
            {"language": concept(coding(BCP47, "zh-CN", "Chinese (China)")), "preferred": True}
        ]
        resource["managingOrganization"] = ref(other.reference, other.name)
        key = f"{person.key}-dup"
        full_url = urn(seed, f"Patient/{key}")
        system = naming.mrn_system(other.uscc)
        known = KnownDuplicate(
            original=patient_url(seed, person.key),
            duplicate=full_url,
            kind=kind,
            original_identifier=(naming.mrn_system(home.uscc), person.mrn),
            duplicate_identifier=(system, mrn),
            note=v.note,
        )
        entry = Entry(full_url, resource, if_none_exist(system, mrn))
        out.append(DuplicateRecord(person, key, other.key, mrn, kind, entry, known))
    return out
