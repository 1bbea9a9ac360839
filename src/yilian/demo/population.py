"""The demo's residents as plain facts (who, where, which numbers, which chronic diseases).

FHIR rendering is elsewhere (``patients``, ``visits``); keeping the facts separate lets the
duplicates and the clinical history be derived from the same person consistently.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from yilian.demo import geography
from yilian.demo.geography import Area, District
from yilian.demo.names import ChineseName, NameSampler
from yilian.demo.registry import Registry, Staff
from yilian.kernel import naming, prc_id
from yilian.kernel.prc_id import Sex

CHILD_SHARE = 0.08  # residents aged 0-6 (each comes with a mother in the demo)
# Age bands of everyone else: (lowest age, highest age, weight), roughly the shape of China's age pyramid.
_AGE_BANDS = ((7, 17, 0.10), (18, 39, 0.27), (40, 59, 0.31), (60, 79, 0.25), (80, 95, 0.07))
# Newborns have no ID number until the household registration (落户), usually within weeks.
_ID_NUMBER_AGE_DAYS = 45
HEALTH_CARD_COVERAGE = 0.85
_MOBILE_PREFIXES = (
    "130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "155", "157",
    "158", "159", "166", "177", "180", "181", "183", "185", "186", "187", "188", "189", "198", "199",
)  # fmt: skip

# Chronic diseases: (ICD-10 China code, probability by age band 18-39 / 40-59 / 60+, sex or None).
_CHRONIC = (
    ("I10.x00", (0.05, 0.25, 0.50), None),
    ("E11.900", (0.02, 0.10, 0.18), None),
    ("E78.500", (0.04, 0.12, 0.18), None),
    ("I25.103", (0.0, 0.03, 0.09), None),
    ("I63.900", (0.0, 0.01, 0.05), None),
    ("J44.900", (0.0, 0.02, 0.07), None),
    ("M17.900", (0.0, 0.04, 0.15), None),
    ("M81.901", (0.0, 0.03, 0.20), "female"),
    ("K29.500", (0.04, 0.06, 0.06), None),
    ("E03.900", (0.01, 0.03, 0.03), "female"),
    ("H52.100", (0.20, 0.05, 0.0), None),
)


@dataclass(frozen=True, slots=True)
class Insurance:
    system: str
    number: str
    scheme: str  # text, e.g. 城乡居民基本医疗保险
    cv_code: str | None  # CV02.01.204 code where one fits


@dataclass(slots=True)
class Person:
    key: str
    name: ChineseName
    sex: Sex
    birth_date: dt.date
    district: District
    area: Area
    place: str
    line: str
    id_number: str | None
    phone: str | None
    household: int
    # Holds a resident health card; the card system issues it, with its number, once loaded.
    health_card: bool = False
    insurance: Insurance | None = None
    ncms_number: str | None = None
    home: str = ""  # institution key where the person registered (their MRN is from there)
    mrn: str = ""
    family_doctor: Staff | None = None
    mother: str | None = None  # person key, for children
    children: list[str] = field(default_factory=list)
    chronic: tuple[str, ...] = ()
    # Baselines for measurements: height (cm), BMI, blood pressure, fasting glucose (mmol/L).
    height: float = 0.0
    bmi: float = 0.0
    systolic: float = 0.0
    diastolic: float = 0.0
    glucose: float = 0.0

    def age(self, on: dt.date) -> int:
        return (
            on.year
            - self.birth_date.year
            - ((on.month, on.day) < (self.birth_date.month, self.birth_date.day))
        )

    @property
    def rural(self) -> bool:
        return self.area.rural


@dataclass(frozen=True, slots=True)
class Population:
    people: tuple[Person, ...]

    def by_key(self, key: str) -> Person:
        return next(p for p in self.people if p.key == key)

    def households(self) -> list[list[Person]]:
        groups: dict[int, list[Person]] = {}
        for p in self.people:
            groups.setdefault(p.household, []).append(p)
        return list(groups.values())


_MakePerson = Callable[[ChineseName, Sex, dt.date, tuple[District, Area, str], str], "Person"]


class _Issuer:
    """Hands out unique numbers (ID order codes, phones, cards, MRNs) from one RNG."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.seen: set[str] = set()
        self.mrn_next: dict[str, int] = {}

    def _unique(self, make: Callable[[], str]) -> str:
        while True:
            value = str(make())
            if value not in self.seen:
                self.seen.add(value)
                return value

    def id_number(self, division: str, born: dt.date, sex: Sex) -> str:
        def make() -> str:
            order = self.rng.randrange(500) * 2 + (1 if sex == "male" else 0)
            return prc_id.generate(division, born, sex, order)

        return self._unique(make)

    def phone(self) -> str:
        return self._unique(lambda: self.rng.choice(_MOBILE_PREFIXES) + f"{self.rng.randrange(10**8):08d}")

    def number(self, prefix: str, digits: int) -> str:
        return self._unique(lambda: prefix + f"{self.rng.randrange(10**digits):0{digits}d}")

    def mrn(self, institution: str) -> str:
        # Hospitals number records sequentially; each starts from its own base.
        current = self.mrn_next.get(institution) or self.rng.randrange(10**7, 9 * 10**7)
        self.mrn_next[institution] = current + self.rng.randint(1, 400)
        return str(current)


def _birth_date(rng: random.Random, as_of: dt.date, low: int, high: int) -> dt.date:
    start = dt.date(as_of.year - high - 1, as_of.month, min(as_of.day, 28)) + dt.timedelta(days=1)
    end = dt.date(as_of.year - low, as_of.month, min(as_of.day, 28))
    return start + dt.timedelta(days=rng.randrange((end - start).days + 1))


def _home_line(rng: random.Random, area: Area) -> str:
    if area.rural:
        return f"{rng.randint(1, 220)}号"
    return (
        f"{rng.choice(geography.ROADS)}{rng.randint(1, 399)}号"
        f"{rng.randint(1, 30)}幢{rng.randint(1, 4)}单元{rng.randint(1, 18)}{rng.randint(1, 4):02d}室"
    )


def _where(rng: random.Random, districts: tuple[District, ...]) -> tuple[District, Area, str]:
    district = rng.choices(districts, weights=[d.population_weight for d in districts])[0]
    rural = rng.random() >= district.urban_share
    area = rng.choice([a for a in district.areas if a.rural == rural])
    return district, area, rng.choice(area.places)


def build_population(seed: int, residents: int, as_of: dt.date, registry: Registry) -> Population:
    rng = random.Random(f"{seed}:population")
    issuer = _Issuer(random.Random(f"{seed}:numbers"))
    names = NameSampler()
    people: list[Person] = []
    children_left = round(residents * CHILD_SHARE)
    household = 0

    def person(
        name: ChineseName, sex: Sex, born: dt.date, where: tuple[District, Area, str], line: str
    ) -> Person:
        district, area, place = where
        age_days = (as_of - born).days
        id_number = (
            issuer.id_number(district.division.code, born, sex) if age_days >= _ID_NUMBER_AGE_DAYS else None
        )
        key = f"r{len(people) + 1:04d}"
        p = Person(key, name, sex, born, district, area, place, line, id_number, None, household)
        people.append(p)
        return p

    everywhere = geography.districts()
    # Young families are placed where a community/township centre runs a vaccination clinic.
    served = tuple(d for d in everywhere if registry.primary_care_for(d.division.code))
    while len(people) < residents:
        household += 1
        remaining = residents - len(people)
        # Spread young families through the population rather than putting them all first.
        family = (
            children_left > 0 and remaining >= 2 and rng.random() < min(1.0, 2.5 * children_left / remaining)
        )
        where = _where(rng, served if family else everywhere)
        line = _home_line(rng, where[1])
        if family:
            _mother_and_children(
                rng,
                names,
                person,
                issuer,
                where,
                line,
                as_of,
                two=children_left >= 2 and residents - len(people) >= 3,
            )
            children_left = round(residents * CHILD_SHARE) - sum(1 for p in people if p.mother)
            continue
        low, high, _ = rng.choices(_AGE_BANDS, weights=[b[2] for b in _AGE_BANDS])[0]
        sex: Sex = "male" if rng.random() < 0.5 else "female"
        p = person(names.name(rng, sex), sex, _birth_date(rng, as_of, low, high), where, line)
        age = p.age(as_of)
        if age >= 12 and (age < 80 or rng.random() < 0.7):
            p.phone = issuer.phone()

    for p in people:
        _administrative(p, rng, issuer, registry, as_of)
        _health(p, rng, as_of)
    return Population(tuple(people))


def _mother_and_children(
    rng: random.Random,
    names: NameSampler,
    person: _MakePerson,
    issuer: _Issuer,
    where: tuple[District, Area, str],
    line: str,
    as_of: dt.date,
    *,
    two: bool,
) -> None:
    ages = [rng.randrange(1, 7 * 365)]  # days; every child is 0-6 years old
    if two and rng.random() < 0.25 and ages[0] + 540 < 7 * 365 - 1:
        ages.append(rng.randrange(ages[0] + 540, 7 * 365))  # an older sibling, >= 18 months apart
    births = sorted(as_of - dt.timedelta(days=a) for a in ages)
    mother_born = births[0] - dt.timedelta(days=rng.randint(22 * 365, 36 * 365))
    mother = person(names.name(rng, "female"), "female", mother_born, where, line)
    mother.phone = issuer.phone()
    father_surname = names.surname(rng)
    for born in births:
        sex: Sex = "male" if rng.random() < 0.52 else "female"
        # Most children take the father's surname; some their mother's.
        surname = names.surname_of(mother.name.family) if rng.random() < 0.2 else father_surname
        child = person(names.name(rng, sex, surname), sex, born, where, line)
        child.phone = mother.phone  # the guardian's number, as registration forms record it
        child.mother = mother.key
        mother.children.append(child.key)


def _administrative(
    p: Person, rng: random.Random, issuer: _Issuer, registry: Registry, as_of: dt.date
) -> None:
    age = p.age(as_of)
    city = geography.city().code
    if rng.random() < (0.5 if age < 1 else HEALTH_CARD_COVERAGE):
        p.health_card = True

    employee = not p.rural and age >= 18 and rng.random() < (0.7 if age < 60 else 0.55)
    employee = employee or (p.rural and 18 <= age < 60 and rng.random() < 0.05)
    if employee:
        p.insurance = Insurance(
            naming.INSURANCE_EMPLOYEE, issuer.number(city[:4], 8), "城镇职工基本医疗保险", "2"
        )
    else:
        p.insurance = Insurance(
            naming.INSURANCE_RESIDENT, issuer.number(city[:4], 8), "城乡居民基本医疗保险", None
        )
    if p.rural and age >= 30 and rng.random() < 0.4:
        # Numbers from the county NCMS offices, still on legacy records after the 2017 merger.
        p.ncms_number = issuer.number(p.district.division.code, 8)

    code = p.district.division.code
    primary = registry.primary_care_for(code)
    hospital = {"330503": "xundong", "330523": "zhuxiang"}.get(code, "taihu")
    if age <= 6:
        p.home = hospital  # registered where they were born
    elif primary and (p.rural or rng.random() < 0.6):
        p.home = primary.key
    else:
        p.home = hospital
    p.mrn = issuer.mrn(p.home)

    # Family-doctor contracts (家庭医生签约) are pushed first for the old, the chronically
    # ill and young children; the contract is with the resident's own primary-care team.
    if primary:
        chance = 0.7 if age >= 65 else 0.5 if age <= 6 else 0.2
        if rng.random() < chance:
            village = registry.village_clinic(code, p.place) if p.rural else None
            if village and rng.random() < 0.7:
                p.family_doctor = registry.staff_of(village.key)[0]
            else:
                p.family_doctor = rng.choice(registry.staff_of(primary.key, "general-practice"))


def _health(p: Person, rng: random.Random, as_of: dt.date) -> None:
    age = p.age(as_of)
    if age >= 18:
        band = 0 if age < 40 else 1 if age < 60 else 2
        p.chronic = tuple(
            code
            for code, chances, sex in _CHRONIC
            if (sex is None or sex == p.sex) and rng.random() < chances[band]
        )
        base = 170.0 if p.sex == "male" else 158.5
        p.height = round(rng.gauss(base - (3.0 if age >= 65 else 0.0), 6.0), 1)
        p.bmi = max(16.5, rng.gauss(23.6 + (1.5 if "E11.900" in p.chronic else 0.0), 3.0))
        hypertensive = "I10.x00" in p.chronic
        p.systolic = rng.gauss(142 if hypertensive else 118 + max(0, age - 40) * 0.3, 8)
        p.diastolic = rng.gauss(88 if hypertensive else 75, 6)
        p.glucose = rng.gauss(7.9, 1.2) if "E11.900" in p.chronic else rng.gauss(5.1, 0.45)
