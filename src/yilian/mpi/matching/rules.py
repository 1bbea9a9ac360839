"""Deterministic rules, applied before and after the probabilistic score.

Before: the same valid ID number (or the same MRN at the same institution) makes two records
one person, unless the demographics contradict it. After: patterns that the weights alone
would over-score — family members sharing a surname, an address and a phone — are capped
below ``certain`` so that they go to a person, never to an automatic merge.
"""

from __future__ import annotations

from dataclasses import dataclass

from yilian.mpi.matching.comparison import BIRTH, FAMILY, GIVEN, IDENTIFIER, PRC_ID, SEX, Comparison
from yilian.mpi.matching.features import Features
from yilian.mpi.matching.model import GRADES, Grade


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """What the rules decided: a grade to force (``None``: the score decides), a grade the
    result may not exceed, and why (codes shown to the data steward)."""

    force: Grade | None
    cap: Grade
    notes: tuple[str, ...]


def _same_mrn(a: Features, b: Features) -> bool:
    mrns = {v for s, v in a.identifiers if s.startswith("mrn:") and s == f"mrn:{a.source}"}
    if not mrns or a.source != b.source:
        return False
    return any(s == f"mrn:{b.source}" and v in mrns for s, v in b.identifiers)


def _personal_identifier_agrees(a: Features, b: Features, c: Comparison) -> bool:
    """A number issued to one person (ID, insurance, passport, social security, the MRN of
    one institution) agrees. Households share surnames, addresses and phones, not these."""
    # A one-character slip counts too: a valid ID number is never one slip away from another
    # valid one (the check character catches every single-digit error and swap), and two
    # relatives' other numbers are no more alike than strangers'.
    if c.level_name(PRC_ID) in ("exact", "slip") and not (a.prc_conflict or b.prc_conflict):
        return True
    level = c.level_name(IDENTIFIER)
    if level == "slip":
        return any(not s.startswith("mrn:") for s, _ in a.identifiers)
    if level != "exact":
        return False
    shared = set(a.identifiers) & set(b.identifiers)
    return any(not s.startswith("mrn:") or s == f"mrn:{a.source}" == f"mrn:{b.source}" for s, _ in shared)


def _id_contradictions(a: Features, b: Features, c: Comparison) -> list[str]:
    """Why the same ID number (or MRN) may still not be the same person."""
    out = []
    if c.level_name(SEX) == "different":
        out.append("sex-differs")
    if c.level_name(BIRTH) == "different" and a.year and b.year and abs(a.year - b.year) > 1:
        out.append("birth-year-differs")
    if c.level_name(FAMILY) == "different" and c.level_name(GIVEN) in ("different", "partial"):
        out.append("name-differs")
    if a.prc_conflict or b.prc_conflict:
        out.append("id-number-contradicts-record")
    return out


def _household_pattern(c: Comparison) -> list[str]:
    """What distinguishes twins, siblings, parents and children who share a surname, an
    address and a phone: the given name, the birth date, the sex."""
    out = []
    if c.level_name(SEX) == "different":
        out.append("sex-differs")
    if c.level_name(BIRTH) == "different":
        out.append("birth-date-differs")
    given = c.level_name(GIVEN)
    if given == "different":
        out.append("given-name-differs")
    elif given == "partial":
        out.append("given-name-partly-differs")
    return out


def apply_rules(a: Features, b: Features, c: Comparison) -> RuleOutcome:
    notes: list[str] = []
    same_id = a.prc_valid and b.prc_valid and c.level_name(PRC_ID) == "exact"
    same_mrn = c.level_name(IDENTIFIER) == "exact" and _same_mrn(a, b)
    if same_id or same_mrn:
        notes.append("same-prc-id" if same_id else "same-mrn")
        contradictions = _id_contradictions(a, b, c)
        if not contradictions:
            return RuleOutcome("certain", "certain", tuple(notes))
        notes.extend(contradictions)
        return RuleOutcome(None, "probable", tuple(notes))
    cap: Grade = "certain"
    if _personal_identifier_agrees(a, b, c):
        notes.append("personal-identifier-agrees")
        if c.level_name(SEX) == "different":
            cap = "probable"
            notes.append("sex-differs")
    else:
        household = _household_pattern(c)
        if household:
            cap = "probable"
            notes.extend(household)
    if a.prc_valid and b.prc_valid and c.level_name(PRC_ID) == "different":
        cap = "probable"
        notes.append("different-valid-id-numbers")
    return RuleOutcome(None, cap, tuple(notes))


def capped(grade: Grade, cap: Grade) -> Grade:
    return grade if GRADES.index(grade) >= GRADES.index(cap) else cap
