"""Each resident's last two years of care: visits, diagnoses and measurements.

Visits follow how care is organised in the region: hypertension and diabetes are
followed up quarterly by the family doctor at the community/township centre (or the
village clinic), people over 65 get the free annual health check, acute illness goes to
primary care or straight to a hospital, and a few people are admitted.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import zlib
from dataclasses import dataclass, field

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
from yilian.demo.registry import DEPARTMENTS, Institution, Registry, Staff
from yilian.kernel import naming

WINDOW_DAYS = 730
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
DISCHARGE_DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"

# LOINC code -> (Chinese display, UCUM unit, category).
LOINC = {
    "85354-9": ("血压", "", "vital-signs"),
    "8480-6": ("收缩压", "mm[Hg]", "vital-signs"),
    "8462-4": ("舒张压", "mm[Hg]", "vital-signs"),
    "8302-2": ("身高", "cm", "vital-signs"),
    "29463-7": ("体重", "kg", "vital-signs"),
    "39156-5": ("体质指数", "kg/m2", "vital-signs"),
    "14771-0": ("空腹血糖", "mmol/L", "laboratory"),
    "4548-4": ("糖化血红蛋白", "%", "laboratory"),
}
_CATEGORY_NAMES = {"vital-signs": "Vital Signs", "laboratory": "Laboratory"}

_ADULT_ACUTE = ("J00.x00", "J02.900", "J06.900", "J11.101", "J20.900", "A09.901", "K30.x00", "K59.000",
                "N39.000", "M54.502", "G43.900", "H10.900", "D50.900", "K25.900")  # fmt: skip
_CHILD_ACUTE = (
    "J00.x00",
    "J06.900",
    "J20.900",
    "J18.000",
    "A09.903",
    "L20.804",
    "B01.900",
    "K02.900",
    "R50.900",
)
# Reasons for admission when nothing chronic explains one: (code, ward department).
_ADMISSIONS = (("J18.900", "internal"), ("K80.200", "surgery"), ("K25.900", "internal"))
_CHRONIC_ADMISSIONS = ("I25.103", "I63.900", "J44.900")


@dataclass(slots=True)
class Visit:
    key: str
    institution: Institution
    department: str
    staff: Staff
    start: dt.datetime
    end: dt.datetime
    inpatient: bool
    purpose: str  # text shown as Encounter.type
    measures: tuple[str, ...] = ()  # "bp", "glucose", "body", "hba1c"
    new_diagnoses: list[str] = field(default_factory=list)  # acute, diagnosed at this visit
    chronic_reviewed: list[str] = field(default_factory=list)  # chronic, first recorded at this visit


def _moment(rng: random.Random, day: dt.date) -> dt.datetime:
    # Outpatient clinics run 08:00-11:30 and 13:30-17:00.
    minutes = rng.choice((rng.randint(8 * 60, 11 * 60 + 30), rng.randint(13 * 60 + 30, 17 * 60)))
    return dt.datetime.combine(day, dt.time(minutes // 60, minutes % 60), CHINA_TZ)


def _doctor(rng: random.Random, registry: Registry, inst: Institution, department: str) -> Staff:
    staff = registry.staff_of(inst.key, department) or registry.staff_of(inst.key)
    return rng.choice(staff)


class _Planner:
    def __init__(
        self, rng: random.Random, registry: Registry, person: Person, as_of: dt.date, key: str
    ) -> None:
        self.rng, self.registry, self.person, self.as_of, self.key = rng, registry, person, as_of, key
        self.visits: list[Visit] = []
        self.first_day = as_of - dt.timedelta(days=WINDOW_DAYS)

    def day_in_window(self, start_days_ago: int = WINDOW_DAYS, end_days_ago: int = 1) -> dt.date:
        earliest = max(self.first_day, self.person.birth_date + dt.timedelta(days=1))
        lo = max(earliest, self.as_of - dt.timedelta(days=start_days_ago))
        hi = self.as_of - dt.timedelta(days=end_days_ago)
        if hi < lo:
            hi = lo
        return lo + dt.timedelta(days=self.rng.randrange((hi - lo).days + 1))

    def add(
        self,
        inst: Institution,
        department: str,
        day: dt.date,
        purpose: str,
        *,
        staff: Staff | None = None,
        inpatient: bool = False,
        measures: tuple[str, ...] = (),
    ) -> Visit:
        start = _moment(self.rng, day)
        if inpatient:
            end = start + dt.timedelta(days=self.rng.randint(3, 12), hours=self.rng.randint(0, 5))
            end = min(end, dt.datetime.combine(self.as_of, dt.time(10), CHINA_TZ))
        else:
            end = start + dt.timedelta(minutes=self.rng.randint(8, 45))
        visit = Visit(
            f"{self.key}-v{len(self.visits) + 1}",
            inst,
            department,
            staff or _doctor(self.rng, self.registry, inst, department),
            start,
            end,
            inpatient,
            purpose,
            measures,
        )
        self.visits.append(visit)
        return visit

    def primary(self) -> Institution | None:
        return self.registry.primary_care_for(self.person.district.division.code)

    def hospital(self) -> Institution:
        local = {"330503": "xundong", "330523": "zhuxiang"}.get(self.person.district.division.code, "taihu")
        # People bypass the county hospital for the city's tertiary hospital fairly often.
        return self.registry.institution("taihu" if self.rng.random() < 0.35 else local)

    def follow_up_site(self) -> tuple[Institution, str, Staff | None]:
        p = self.person
        doctor = p.family_doctor
        village = self.registry.village_clinic(p.district.division.code, p.place) if p.rural else None
        if village and (doctor is None or doctor.institution == village.key) and self.rng.random() < 0.6:
            return village, "general-practice", self.registry.staff_of(village.key)[0]
        primary = self.primary()
        if primary:
            own = doctor if doctor and doctor.institution == primary.key else None
            return primary, "general-practice", own
        return self.registry.institution("taihu"), "internal", None


def plan_visits(
    rng: random.Random, registry: Registry, person: Person, as_of: dt.date, key: str
) -> list[Visit]:
    """The visits of one person (``key`` names the patient record they belong to)."""
    planner = _Planner(rng, registry, person, as_of, key)
    age = person.age(as_of)
    if age >= 18:
        _adult(planner, age)
    else:
        _child(planner, age)
    planner.visits.sort(key=lambda v: v.start)
    for n, visit in enumerate(planner.visits, start=1):
        visit.key = f"{key}-v{n}"
    return planner.visits


def plan_hospital_visit(
    rng: random.Random, registry: Registry, person: Person, institution: Institution, as_of: dt.date, key: str
) -> list[Visit]:
    """One outpatient visit at a given hospital (the visit that made a duplicate registration)."""
    planner = _Planner(rng, registry, person, as_of, key)
    visit = planner.add(institution, "internal", planner.day_in_window(), "门诊", measures=("bp",))
    visit.new_diagnoses.append(rng.choice(_ADULT_ACUTE))
    visit.key = f"{key}-v1"
    return planner.visits


def _adult(pl: _Planner, age: int) -> None:
    p, rng = pl.person, pl.rng
    managed = [c for c in p.chronic if c in ("I10.x00", "E11.900")]
    if managed:
        site, department, staff = pl.follow_up_site()
        label = (
            "高血压患者随访"
            if managed == ["I10.x00"]
            else "2型糖尿病患者随访"
            if managed == ["E11.900"]
            else "慢病随访"
        )
        measures = ("bp", "glucose") if "E11.900" in managed else ("bp",)
        for quarter in range(4):  # quarterly, as the national basic public-health service requires
            day = pl.day_in_window(365 - quarter * 91, max(1, 365 - quarter * 91 - 60))
            pl.add(site, department, day, label, staff=staff, measures=measures)
        if "E11.900" in managed:
            pl.add(
                pl.hospital(), "internal", pl.day_in_window(365), "糖尿病复诊", measures=("glucose", "hba1c")
            )
    if age >= 65 or rng.random() < 0.15:
        primary = pl.primary()
        inst, department = (
            (primary, "general-practice") if primary and age >= 65 else (pl.hospital(), "internal")
        )
        label = "老年人健康体检" if age >= 65 else "健康体检"
        pl.add(inst, department, pl.day_in_window(365), label, measures=("body", "bp", "glucose"))
    for _ in range(_count(rng, 1.2 if age >= 60 else 0.8)):
        primary = pl.primary()
        if primary and rng.random() < 0.55:
            inst, department = primary, "general-practice"
        else:
            inst, department = pl.hospital(), "internal"
        visit = pl.add(
            inst, department, pl.day_in_window(), "门诊", measures=("bp",) if rng.random() < 0.5 else ()
        )
        visit.new_diagnoses.append(rng.choice(_ADULT_ACUTE))
    serious = [c for c in p.chronic if c in _CHRONIC_ADMISSIONS]
    if rng.random() < (0.3 if serious else 0.12 if age >= 60 else 0.04):
        code, ward = (rng.choice(serious), "internal") if serious else rng.choice(_ADMISSIONS)
        inst = pl.hospital()
        visit = pl.add(inst, ward, pl.day_in_window(700, 20), "住院", inpatient=True, measures=("bp",))
        if serious:
            visit.chronic_reviewed.append(code)
        else:
            visit.new_diagnoses.append(code)
    # Every chronic disease is on record from the first visit that dealt with it.
    unrecorded = [c for c in p.chronic if not any(c in v.chronic_reviewed for v in pl.visits)]
    if unrecorded:
        if not pl.visits:
            site, department, staff = pl.follow_up_site()
            pl.add(site, department, pl.day_in_window(), "门诊", staff=staff, measures=("bp",))
        pl.visits.sort(key=lambda v: v.start)
        pl.visits[0].chronic_reviewed.extend(unrecorded)


def _child(pl: _Planner, age: int) -> None:
    rng = pl.rng
    for _ in range(_count(rng, 1.5 if age <= 6 else 0.6)):
        primary = pl.primary()
        if primary and rng.random() < 0.4:
            inst, department = primary, "general-practice"
        else:
            inst, department = pl.hospital(), "paediatrics" if age < 14 else "internal"
        visit = pl.add(
            inst, department, pl.day_in_window(), "儿科门诊" if department == "paediatrics" else "门诊"
        )
        visit.new_diagnoses.append(rng.choice(_CHILD_ACUTE if age <= 6 else _ADULT_ACUTE[:8]))


def _count(rng: random.Random, mean: float) -> int:
    # Poisson by inversion; small means only.
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


# --------------------------------------------------------------------------- FHIR


def _record_key(seed: int, key: str) -> str:
    return f"{seed}-{key}"


def _visit_number(visit: Visit) -> str:
    prefix = "ZY" if visit.inpatient else "MZ"
    # crc32, not hash(): str hashes change from one process to the next.
    return f"{prefix}{visit.start:%Y%m%d%H%M}{zlib.crc32(visit.key.encode()) % 10000:04d}"


def render(seed: int, person: Person, visits: list[Visit], patient_url: str, as_of: dt.date) -> list[Entry]:
    """Encounters, Conditions and Observations for one patient record."""
    entries: list[Entry] = []
    subject = ref(patient_url, person.name.text)
    diagnoses = reference.diagnoses()
    for visit in visits:
        encounter_url = urn(seed, f"Encounter/{visit.key}")
        conditions: list[tuple[str, Entry]] = []
        for code in visit.chronic_reviewed:
            conditions.append(
                (code, _condition(seed, visit, code, subject, encounter_url, as_of, chronic=True))
            )
        for code in visit.new_diagnoses:
            conditions.append(
                (code, _condition(seed, visit, code, subject, encounter_url, as_of, chronic=False))
            )
        entries.append(
            _encounter(visit, encounter_url, subject, [(diagnoses[c], e.full_url) for c, e in conditions])
        )
        entries.extend(e for _, e in conditions)
        entries.extend(_observations(seed, person, visit, subject, encounter_url))
    return entries


def _encounter(
    visit: Visit, url: str, subject: Json, diagnoses: list[tuple[reference.Diagnosis, str]]
) -> Entry:
    inst = visit.institution
    system = naming.visit_number_system(inst.uscc)
    number = _visit_number(visit)
    klass = (
        coding(naming.V3_ACT_CODE, "IMP", "inpatient encounter")
        if visit.inpatient
        else coding(naming.V3_ACT_CODE, "AMB", "ambulatory")
    )
    department = DEPARTMENTS[visit.department]
    resource: Json = {
        "resourceType": "Encounter",
        "meta": test_data_meta(),
        "identifier": [
            identifier(
                system,
                number,
                concept(
                    coding(naming.V2_IDENTIFIER_TYPE, "VN", "Visit number"),
                    text="住院号" if visit.inpatient else "门诊号",
                ),
            )
        ],
        "status": "finished",
        "class": klass,
        "type": [{"text": visit.purpose}],
        "serviceType": concept(
            coding(naming.PLATFORM_DEPARTMENT, visit.department, department), text=department
        ),
        "subject": subject,
        "participant": [
            {
                "type": [concept(coding(PARTICIPATION_TYPE, "ATND", "attender"))],
                "individual": ref(visit.staff.reference, visit.staff.name.text),
            }
        ],
        "period": {"start": date_time(visit.start), "end": date_time(visit.end)},
    }
    if diagnoses:
        resource["diagnosis"] = [
            {"condition": ref(url_, d.name), "rank": rank}
            for rank, (d, url_) in enumerate(diagnoses, start=1)
        ]
    if visit.inpatient:
        resource["hospitalization"] = {
            "dischargeDisposition": concept(coding(DISCHARGE_DISPOSITION, "home", "Home"))
        }
    ward = visit.inpatient and visit.department in inst.wards
    if ward or (not visit.inpatient and visit.department in inst.clinics):
        where = ref(
            inst.location_reference(visit.department, ward), inst.location_name(visit.department, ward)
        )
        resource["location"] = [{"location": where, "status": "completed"}]
    resource["serviceProvider"] = ref(inst.reference, inst.name)
    return Entry(url, resource, if_none_exist(system, number))


def diagnosis_concept(d: reference.Diagnosis) -> Json:
    codings = [coding(naming.ICD10_CN, d.code, d.name)]
    if d.snomed:
        codings.append(coding(naming.SNOMED_CT, d.snomed, d.snomed_display))
    return concept(*codings, text=d.name)


def _condition(
    seed: int,
    visit: Visit,
    code: str,
    subject: Json,
    encounter_url: str,
    as_of: dt.date,
    *,
    chronic: bool,
) -> Entry:
    d = reference.diagnoses()[code]
    rng = random.Random(f"{seed}:condition:{visit.key}:{code}")
    # A chronic disease is one record per patient; an acute one, one per visit.
    patient_key = visit.key.rsplit("-v", 1)[0]
    key = _record_key(seed, f"{patient_key}-{code}" if chronic else f"{visit.key}-{code}")
    recorded = visit.start
    if chronic:
        onset = (recorded - dt.timedelta(days=rng.randint(30, 15 * 365))).date()
        status, category = ("active", "Active"), ("problem-list-item", "Problem List Item")
    else:
        onset = (recorded - dt.timedelta(days=rng.randint(0, 3))).date()
        resolved = (as_of - recorded.date()).days > 30
        status = ("resolved", "Resolved") if resolved else ("active", "Active")
        category = ("encounter-diagnosis", "Encounter Diagnosis")
    resource: Json = {
        "resourceType": "Condition",
        "meta": test_data_meta(),
        "identifier": [identifier(naming.DEMO_RECORD, key)],
        "clinicalStatus": concept(coding(CONDITION_CLINICAL, *status)),
        "verificationStatus": concept(coding(CONDITION_VERIFICATION, "confirmed", "Confirmed")),
        "category": [concept(coding(CONDITION_CATEGORY, *category))],
        "code": diagnosis_concept(d),
        "subject": subject,
        "encounter": ref(encounter_url),
        "onsetDateTime": onset.isoformat(),
    }
    if not chronic and status[0] == "resolved":
        resource["abatementDateTime"] = (recorded.date() + dt.timedelta(days=rng.randint(5, 21))).isoformat()
    resource["recordedDate"] = date_time(recorded)
    resource["recorder"] = ref(visit.staff.reference, visit.staff.name.text)
    url = urn(seed, f"Condition/{key}")
    return Entry(url, resource, if_none_exist(naming.DEMO_RECORD, key))


def _observations(seed: int, person: Person, visit: Visit, subject: Json, encounter_url: str) -> list[Entry]:
    rng = random.Random(f"{seed}:observations:{visit.key}")
    when = date_time(visit.start + dt.timedelta(minutes=rng.randint(1, 6)))
    out: list[Entry] = []

    def observation(code: str, value: Json | None = None, components: list[Json] | None = None) -> None:
        display, _, category = LOINC[code]
        key = _record_key(seed, f"{visit.key}-{code}")
        resource: Json = {
            "resourceType": "Observation",
            "meta": test_data_meta(),
            "identifier": [identifier(naming.DEMO_RECORD, key)],
            "status": "final",
            "category": [concept(coding(OBSERVATION_CATEGORY, category, _CATEGORY_NAMES[category]))],
            "code": concept(coding(naming.LOINC, code, display), text=display),
            "subject": subject,
            "encounter": ref(encounter_url),
            "effectiveDateTime": when,
            "performer": [ref(visit.staff.reference, visit.staff.name.text)],
        }
        if value is not None:
            resource["valueQuantity"] = value
        if components:
            resource["component"] = components
        out.append(Entry(urn(seed, f"Observation/{key}"), resource, if_none_exist(naming.DEMO_RECORD, key)))

    def component(code: str, value: float) -> Json:
        display, unit, _ = LOINC[code]
        return {
            "code": concept(coding(naming.LOINC, code, display), text=display),
            "valueQuantity": quantity(round(value), unit),
        }

    for measure in visit.measures:
        if measure == "bp":
            systolic = max(90.0, rng.gauss(person.systolic, 7))
            diastolic = min(systolic - 20, max(55.0, rng.gauss(person.diastolic, 5)))
            observation("85354-9", components=[component("8480-6", systolic), component("8462-4", diastolic)])
        elif measure == "glucose":
            observation("14771-0", quantity(round(max(3.6, rng.gauss(person.glucose, 0.6)), 1), "mmol/L"))
        elif measure == "hba1c":
            observation(
                "4548-4", quantity(round(max(5.0, 4.5 + person.glucose * 0.35 + rng.gauss(0, 0.3)), 1), "%")
            )
        elif measure == "body":
            weight = person.bmi * (person.height / 100) ** 2 + rng.gauss(0, 0.8)
            bmi = weight / (person.height / 100) ** 2
            observation("8302-2", quantity(person.height, "cm"))
            observation("29463-7", quantity(round(weight, 1), "kg"))
            observation("39156-5", quantity(round(bmi, 1), "kg/m2"))
    return out
