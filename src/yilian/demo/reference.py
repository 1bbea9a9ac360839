"""The reference tables the demo ships (``data/*.csv``, made by ``scripts/gen_demo_data.py``)."""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True, slots=True)
class Division:
    code: str
    name: str
    kind: str  # province | city | district | county


@dataclass(frozen=True, slots=True)
class Surname:
    hanzi: str
    pinyin: tuple[str, ...]  # tone-numbered syllables, one per character
    weight: float


@dataclass(frozen=True, slots=True)
class GivenChar:
    hanzi: str
    pinyin: str  # tone-numbered syllable
    weight: float
    gender: str  # "f", "m" or "" (unisex)


@dataclass(frozen=True, slots=True)
class Diagnosis:
    code: str  # ICD-10 China extension code, e.g. I10.x00
    name: str
    category: str
    use: str  # chronic | acute | child
    snomed: str
    snomed_display: str


@dataclass(frozen=True, slots=True)
class VaccineDose:
    abbreviation: str
    vaccine_zh: str
    vaccine_en: str
    disease_zh: str
    series: str
    dose_number: int
    age_months: int
    route_zh: str
    route_cv: str
    route_v3: str
    dose_amount: str
    vaccine_cv: str
    vaccine_cv_name: str


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files("yilian.demo").joinpath("data", name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


@functools.cache
def divisions() -> tuple[Division, ...]:
    return tuple(Division(r["code"], r["name"], r["kind"]) for r in _rows("divisions.csv"))


@functools.cache
def surnames() -> tuple[Surname, ...]:
    return tuple(
        Surname(r["surname"], tuple(r["pinyin"].split()), float(r["ppm"])) for r in _rows("surnames.csv")
    )


@functools.cache
def given_chars() -> tuple[GivenChar, ...]:
    return tuple(
        GivenChar(r["character"], r["pinyin"], float(r["ppm"]), r["gender"]) for r in _rows("given_chars.csv")
    )


@functools.cache
def diagnoses() -> dict[str, Diagnosis]:
    return {
        r["code"]: Diagnosis(r["code"], r["name"], r["category"], r["use"], r["snomed"], r["snomed_display"])
        for r in _rows("diagnoses.csv")
    }


@functools.cache
def nip_schedule() -> tuple[VaccineDose, ...]:
    return tuple(
        VaccineDose(
            abbreviation=r["abbreviation"],
            vaccine_zh=r["vaccine_zh"],
            vaccine_en=r["vaccine_en"],
            disease_zh=r["disease_zh"],
            series=r["series"],
            dose_number=int(r["dose_number"]),
            age_months=int(r["age_months"]),
            route_zh=r["route_zh"],
            route_cv=r["route_cv"],
            route_v3=r["route_v3"],
            dose_amount=r["dose_amount"],
            vaccine_cv=r["vaccine_cv"],
            vaccine_cv_name=r["vaccine_cv_name"],
        )
        for r in _rows("nip_schedule.csv")
    )
