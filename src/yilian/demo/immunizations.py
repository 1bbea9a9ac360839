"""Children's vaccinations under the national immunization programme (2021 schedule).

Birth doses (HepB#1, BCG) are given at the hospital of birth; everything else at the
vaccination clinic of the child's community or township health centre. Doses due at the
same age are given on the same day (which also keeps injectable live vaccines — MMR,
JE-L, HepA-L — either simultaneous or months apart, as the 28-day rule requires). Each
child follows one of the alternative series (JE-L or JE-I, HepA-L or HepA-I), most are a
little late, and a few doses are missed so the forecaster has something overdue to show.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from itertools import groupby

from yilian.demo import reference
from yilian.demo.elements import (
    CHINA_TZ,
    Entry,
    Json,
    coding,
    concept,
    date_time,
    identifier,
    if_none_exist,
    quantity,
    ref,
    test_data_meta,
    urn,
)
from yilian.demo.population import Person
from yilian.demo.registry import Institution, Registry, Staff
from yilian.kernel import naming

MISSED_DOSE_CHANCE = 0.06
MIN_DAYS_BETWEEN_VISITS = 28
V2_FUNCTION = "http://terminology.hl7.org/CodeSystem/v2-0443"
_ROUTE_NAMES = {
    "IM": "Injection, intramuscular",
    "SQ": "Injection, subcutaneous",
    "IDINJ": "Injection, intradermal",
    "PO": "Swallow, oral",
}
_MANUFACTURERS = (
    "北京生物制品研究所",
    "上海生物制品研究所",
    "武汉生物制品研究所",
    "长春生物制品研究所",
    "成都生物制品研究所",
)


def add_months(day: dt.date, months: int) -> dt.date:
    year, month = divmod(day.month - 1 + months, 12)
    target_year, target_month = day.year + year, month + 1
    for last in (31, 30, 29, 28):
        try:
            return dt.date(target_year, target_month, min(day.day, last))
        except ValueError:
            continue
    raise AssertionError("unreachable")


def _dose(amount: str) -> Json | None:
    """``0.5ml`` → 0.5 mL; ambiguous amounts (``10或20μg``: 10 μg for children) as the child dose."""
    match = re.match(r"^(\d+(?:\.\d+)?)(?:或[\d.]+)?(ml|μg)$", amount)
    if not match:
        return None
    value = float(match.group(1))
    unit, code = ("mL", "mL") if match.group(2) == "ml" else ("μg", "ug")
    return quantity(int(value) if value.is_integer() else value, unit, code)


def _lot(seed: int, site: str, abbreviation: str, day: dt.date) -> tuple[str, dt.date, str]:
    # A clinic uses one lot of a vaccine for a while: same site, vaccine and quarter, same lot.
    quarter = (day.month - 1) // 3
    rng = random.Random(f"{seed}:lot:{site}:{abbreviation}:{day.year}:{quarter}")
    made = dt.date(day.year, quarter * 3 + 1, 1) - dt.timedelta(days=rng.randint(60, 300))
    lot = f"{made:%Y%m}{rng.choice('ABCD')}{rng.randint(1, 199):03d}"
    return lot, add_months(made, 24), rng.choice(_MANUFACTURERS)


def plan(rng: random.Random, child: Person, as_of: dt.date) -> list[tuple[reference.VaccineDose, dt.date]]:
    """Doses given so far and their dates."""
    je = "JE-L" if rng.random() < 0.8 else "JE-I"
    hepa = "HepA-L" if rng.random() < 0.7 else "HepA-I"
    doses = [
        d
        for d in reference.nip_schedule()
        if d.series not in ({"JE-L", "JE-I"} - {je}) | ({"HepA-L", "HepA-I"} - {hepa})
    ]
    given: list[tuple[reference.VaccineDose, dt.date]] = []
    last_visit: dt.date | None = None
    for age_months, group in groupby(sorted(doses, key=lambda d: d.age_months), key=lambda d: d.age_months):
        due = add_months(child.birth_date, age_months)
        day = due if age_months == 0 else due + dt.timedelta(days=rng.choice((0, 2, 5, 7, 10, 14, 21, 30)))
        if last_visit and age_months > 0:
            # A late visit pushes the next one: doses of a series stay at least 4 weeks apart.
            day = max(day, last_visit + dt.timedelta(days=MIN_DAYS_BETWEEN_VISITS))
        last_visit = day
        for dose in group:
            when = day
            if dose.series == "JE-I" and dose.dose_number == 2:
                when = day + dt.timedelta(days=rng.randint(7, 10))  # JE-I doses 1 and 2 are 7-10 days apart
            if when >= as_of:
                continue
            if age_months > 0 and rng.random() < MISSED_DOSE_CHANCE:
                continue
            given.append((dose, when))
    return given


def render(
    seed: int, rng: random.Random, registry: Registry, child: Person, patient_url: str, as_of: dt.date
) -> list[Entry]:
    birth_site = registry.institution(child.home)
    clinic = registry.primary_care_for(child.district.division.code)
    entries = []
    for dose, day in plan(rng, child, as_of):
        at_birth = dose.age_months == 0
        site = birth_site if at_birth or clinic is None else clinic
        department = "obstetrics-gynaecology" if site is birth_site else "immunization"
        nurses = registry.staff_of(site.key, role="nurse") or registry.staff_of(site.key)
        entries.append(
            _immunization(seed, rng, child, patient_url, dose, day, site, department, rng.choice(nurses))
        )
    return entries


def _immunization(
    seed: int,
    rng: random.Random,
    child: Person,
    patient_url: str,
    dose: reference.VaccineDose,
    day: dt.date,
    site: Institution,
    department: str,
    nurse: Staff,
) -> Entry:
    key = f"{seed}-{child.key}-{dose.series}-{dose.dose_number}"
    lot, expires, manufacturer = _lot(seed, site.key, dose.abbreviation, day)
    hour = rng.randint(8, 16) if dose.age_months else rng.randint(0, 23)
    when = dt.datetime.combine(day, dt.time(hour, rng.randint(0, 59)), CHINA_TZ)
    resource: Json = {
        "resourceType": "Immunization",
        "meta": test_data_meta(),
        "identifier": [identifier(naming.DEMO_RECORD, key)],
        "status": "completed",
        "vaccineCode": concept(
            coding(naming.NIP_VACCINE, dose.abbreviation, dose.vaccine_zh),
            coding(naming.VACCINE, dose.vaccine_cv, dose.vaccine_cv_name),
            text=dose.vaccine_zh,
        ),
        "patient": ref(patient_url, child.name.text),
        "occurrenceDateTime": date_time(when),
        "recorded": date_time(when),
        "primarySource": True,
        "location": ref(site.location_reference(department), site.location_name(department)),
        "manufacturer": {"display": manufacturer},
        "lotNumber": lot,
        "expirationDate": expires.isoformat(),
        "route": concept(
            coding(naming.ROUTE, dose.route_cv, dose.route_zh),
            coding(naming.V3_ROUTE, dose.route_v3, _ROUTE_NAMES[dose.route_v3]),
            text=dose.route_zh,
        ),
        "performer": [
            {
                "function": concept(coding(V2_FUNCTION, "AP", "Administering Provider")),
                "actor": ref(nurse.reference, nurse.name.text),
            },
            {"actor": ref(site.reference, site.name)},
        ],
        "protocolApplied": [
            {
                "authority": {"display": "国家卫生健康委员会 国家免疫规划疫苗儿童免疫程序（2021年版）"},
                "targetDisease": [{"text": dose.disease_zh}],
                "doseNumberPositiveInt": dose.dose_number,
                "series": dose.series,
            }
        ],
    }
    amount = _dose(dose.dose_amount)
    if amount:
        resource["doseQuantity"] = amount
    return Entry(urn(seed, f"Immunization/{key}"), resource, if_none_exist(naming.DEMO_RECORD, key))
