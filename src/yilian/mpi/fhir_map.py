"""A FHIR Patient as the matcher's :class:`PersonRecord`, and the identifier checks a Patient
must pass before it enters the index.

Choices (a Patient may carry several of each):
- name: the ``official`` one, else ``usual``, else the first; ``text`` when no parts are given;
- phone: the first ``telecom`` with system ``phone`` (or ``sms``);
- address: the ``home`` one, else the first;
- the institution: ``managingOrganization``; its MRNs (identifier system ``…/sid/mrn/<org>``)
  become the record's MRN, every other identifier (insurance, passport, permits, health card)
  is compared within its own system.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from yilian.kernel import identifiers, naming, prc_id
from yilian.kernel.errors import Category, Issue, YilianError
from yilian.mpi.matching import Identifier, PersonRecord

MRN_PREFIX = naming.PLATFORM_SID + "mrn/"
_NAME_USE_ORDER = ("official", "usual", None, "maiden", "nickname", "anonymous", "temp", "old")


def _pick_name(names: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not names:
        return None
    return min(
        names, key=lambda n: _NAME_USE_ORDER.index(n.get("use")) if n.get("use") in _NAME_USE_ORDER else 99
    )


def _birth(value: Any) -> tuple[dt.date | None, int | None]:
    if not isinstance(value, str) or len(value) < 4:
        return None, None
    try:
        if len(value) >= 10:
            return dt.date.fromisoformat(value[:10]), None
        return None, int(value[:4])
    except ValueError:
        return None, None


def _org_id(reference: Any) -> str | None:
    ref = (reference or {}).get("reference") if isinstance(reference, dict) else None
    if isinstance(ref, str) and "Organization/" in ref:
        return ref.rsplit("Organization/", 1)[1].split("/")[0] or None
    return None


def record_from_patient(patient_id: str, resource: dict[str, Any]) -> PersonRecord:
    name = _pick_name([n for n in resource.get("name") or [] if isinstance(n, dict)]) or {}
    family = name.get("family") if isinstance(name.get("family"), str) else None
    given_parts = [g for g in name.get("given") or [] if isinstance(g, str)]
    given = (
        "".join(given_parts)
        if given_parts and all(_is_hanzi(g) for g in given_parts)
        else " ".join(given_parts)
    )
    full = name.get("text") if not (family or given) and isinstance(name.get("text"), str) else None
    birth, year = _birth(resource.get("birthDate"))
    gender = resource.get("gender")
    source = _org_id(resource.get("managingOrganization"))
    prc: str | None = None
    mrn: str | None = None
    mrn_source: str | None = None
    others: list[Identifier] = []
    for ident in resource.get("identifier") or []:
        system, value = ident.get("system"), ident.get("value")
        if not isinstance(system, str) or not isinstance(value, str) or not value.strip():
            continue
        if system == naming.PRC_RESIDENT_ID:
            prc = prc or value
        elif system.startswith(MRN_PREFIX) and mrn is None:
            mrn, mrn_source = value, system[len(MRN_PREFIX) :]
        else:
            others.append(Identifier(system, value))
    phone = None
    for t in resource.get("telecom") or []:
        if isinstance(t, dict) and t.get("system") in ("phone", "sms") and isinstance(t.get("value"), str):
            phone = t["value"]
            break
    addresses = [a for a in resource.get("address") or [] if isinstance(a, dict)]
    address = next((a for a in addresses if a.get("use") == "home"), addresses[0] if addresses else {})
    return PersonRecord(
        record_id=patient_id,
        source=mrn_source or source,
        family_name=family,
        given_name=given or None,
        full_name=full,
        birth_date=birth,
        birth_year=year,
        sex=gender if gender in ("male", "female") else None,
        prc_id=prc,
        phone=phone,
        address_lines=tuple(x for x in address.get("line") or [] if isinstance(x, str)),
        city=address.get("city") if isinstance(address.get("city"), str) else None,
        district=address.get("district") if isinstance(address.get("district"), str) else None,
        postcode=address.get("postalCode") if isinstance(address.get("postalCode"), str) else None,
        mrn=mrn,
        identifiers=tuple(others),
    )


def _is_hanzi(text: str) -> bool:
    return any("\u3400" <= ch <= "\u9fff" for ch in text)


def check_identifiers(resource: dict[str, Any]) -> None:
    """Refuse a Patient whose identifiers break their system's rule (docs/identifiers.md), or
    whose PRC resident ID number contradicts the record. Nothing is changed."""
    _identifier_issues(resource, normalise=False)


def normalise_identifiers(resource: dict[str, Any]) -> None:
    """Check a Patient as :func:`check_identifiers` does and put every identifier with a rule
    into its stored form, in place (an ID number's 18-character form with upper-case ``X``, a
    card number without spaces, a permit's capital letter), so that the record, its copies in
    messages and exports, and every comparison see one spelling."""
    _identifier_issues(resource, normalise=True)


def _identifier_issues(resource: dict[str, Any], *, normalise: bool) -> None:
    """Each rule broken is an issue at its element path; the message says which identifier and
    which rule (check character, impossible date, birth date or sex that differs from the
    record, length, characters) and never repeats the value itself."""
    issues: list[Issue] = []
    birth, _ = _birth(resource.get("birthDate"))
    gender = resource.get("gender")
    for i, ident in enumerate(resource.get("identifier") or []):
        if not isinstance(ident, dict):
            continue
        system, value = ident.get("system"), ident.get("value")
        if not isinstance(system, str) or identifiers.rule_for(system) is None:
            continue  # a system we do not define: its format is its issuer's business
        try:
            identifiers.check_system(system)
        except YilianError as err:
            issues.append(Issue(err.message, (f"Patient.identifier[{i}].system",)))
            continue
        if not isinstance(value, str):
            continue
        where = (f"Patient.identifier[{i}].value",)
        try:
            stored = identifiers.normalise(system, value)
        except YilianError as err:
            issues.append(Issue(err.message, where))
            continue
        if normalise and stored != value:
            ident["value"] = stored
        if system == naming.PRC_RESIDENT_ID:
            issues += _contradictions(prc_id.parse(stored), birth, gender, where)
    if issues:
        raise YilianError(Category.INVALID, issues[0].message, issues=issues)


def _contradictions(
    parsed: prc_id.ResidentId, birth: dt.date | None, gender: Any, where: tuple[str, ...]
) -> list[Issue]:
    issues = []
    if birth is not None and parsed.birth_date != birth:
        issues.append(
            Issue(
                f"PRC resident ID number {parsed.masked}: it encodes the birth date "
                f"{parsed.birth_date.isoformat()}, but Patient.birthDate is {birth.isoformat()}",
                where,
            )
        )
    if gender in ("male", "female") and parsed.sex != gender:
        issues.append(
            Issue(
                f"PRC resident ID number {parsed.masked}: its order code says {parsed.sex}, "
                f"but Patient.gender is {gender} (sex mismatch)",
                where,
            )
        )
    return issues
