"""Who is insured by what, and where an institution stands — read from the shared FHIR record.

Coverage (documented in docs/payments.md):

- one FHIR ``Coverage`` per scheme a resident belongs to: ``beneficiary`` = the card's Patient,
  ``payor`` = the insurer's (or aid fund's) Organization, ``status`` active, ``period`` covering
  the day of the charge;
- the scheme is a ``Coverage.type`` coding in :data:`SCHEME_SYSTEM` (``ncms``,
  ``urban-employee``, ``urban-resident``, ``medical-aid``), or, for basic insurance, the national
  insurance-type code (CV02.01.204: ``1`` NCMS, ``2`` urban employee, ``3`` urban resident);
- medical-aid eligibility is a Coverage like any other, with scheme ``medical-aid`` and the aid
  fund as payor: eligibility has a period and a payor just as insurance has;
- the pooling region (统筹区) whose policy applies is ``Coverage.class`` of type ``plan``, its
  value a GB/T 2260 code (``330500``).

Institution level and place come from the ``Organization``: a ``type`` coding in
``naming.INSTITUTION_LEVEL`` (``3`` 三级 → city, ``2`` 二级 → county, ``1`` 一级 and ``village`` →
township) and the county code in the address's ``naming.EXT_ADDRESS_DIVISION`` extension.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from yilian.db import UnitOfWork
from yilian.fhir import FhirContext, FhirRequest, Stamp, dispatch, stamps
from yilian.kernel import naming
from yilian.kernel.errors import Category, YilianError
from yilian.payments.adjudication import Policy, policy_in_force
from yilian.payments.model import refuse

SCHEME_SYSTEM = naming.PAYMENT_SCHEME
PLAN_SYSTEM = naming.COVERAGE_CLASS
LEVEL_OF = {"3": "city", "2": "county", "1": "township", "village": "township"}

# Trusted in-process reads: the payments service decides who may charge, not the FHIR policy.
_CTX = FhirContext(base_url="urn:yilian:payments")


@dataclass(frozen=True, slots=True)
class Enrolment:
    scheme: str
    region: str
    coverage_id: str
    payor: str | None


@dataclass(frozen=True, slots=True)
class Institution:
    org_id: str
    name: str
    level: str | None  # township | county | city
    region: str | None  # GB/T 2260 county code


def _in_period(period: dict[str, Any] | None, on: dt.date) -> bool:
    if not period:
        return True
    start, end = period.get("start"), period.get("end")
    day = on.isoformat()
    return (start is None or str(start)[:10] <= day) and (end is None or day <= str(end)[:10])


def _schemes(coverage: dict[str, Any], policies: Sequence[Policy]) -> list[str]:
    by_type = {p.insurance_type: p.scheme for p in policies if p.insurance_type}
    out = []
    for coding in (coverage.get("type") or {}).get("coding") or []:
        if coding.get("system") == SCHEME_SYSTEM and coding.get("code"):
            out.append(str(coding["code"]))
        elif coding.get("system") == naming.INSURANCE_TYPE and coding.get("code") in by_type:
            out.append(by_type[coding["code"]])
    return out


def _plan(coverage: dict[str, Any]) -> str | None:
    for cls in coverage.get("class") or []:
        if any(c.get("code") == "plan" for c in (cls.get("type") or {}).get("coding") or []):
            return str(cls.get("value")) if cls.get("value") else None
    return None


def _search_coverages(uow: UnitOfWork, patient_id: str) -> list[dict[str, Any]]:
    """Every Coverage whose beneficiary is the patient, as stored (a FHIR search)."""
    response = dispatch(
        uow,
        _CTX,
        FhirRequest(
            "GET",
            "Coverage",
            # No total: the charge needs the coverages, not a count of them (one query fewer).
            query=[("beneficiary", f"Patient/{patient_id}"), ("_count", "100"), ("_total", "none")],
        ),
    )
    bundle = orjson.loads(response.body or b"{}")
    found = [entry.get("resource") or {} for entry in bundle.get("entry") or []]
    return [cov for cov in found if cov.get("resourceType") == "Coverage"]


def enrolments_in(
    coverages: Sequence[dict[str, Any]], *, on: dt.date, policies: Sequence[Policy]
) -> list[Enrolment]:
    """The schemes these Coverages enrol in on the day (active, in period, with a plan region)."""
    out = []
    for cov in coverages:
        if cov.get("status") != "active" or not _in_period(cov.get("period"), on):
            continue
        region = _plan(cov)
        if region is None:
            continue
        payor = ((cov.get("payor") or [{}])[0] or {}).get("reference")
        for scheme in _schemes(cov, policies):
            out.append(Enrolment(scheme, region, str(cov.get("id")), payor))
    return sorted(out, key=lambda e: (e.scheme, e.coverage_id))


def enrolments(
    uow: UnitOfWork, *, patient_id: str, on: dt.date, policies: Sequence[Policy]
) -> list[Enrolment]:
    """The schemes the patient is covered by on the day (active Coverages with a plan region)."""
    return enrolments_in(_search_coverages(uow, patient_id), on=on, policies=policies)


def policies_for(
    found: Sequence[Enrolment], policies: Sequence[Policy], on: dt.date
) -> tuple[Policy | None, Policy | None, list[Enrolment]]:
    """(basic insurance policy, medical-aid policy, the enrolments they came from) on the day.

    A resident belongs to one basic scheme; should the record say more than one, the first by
    scheme code is used and the choice shows in the explanation, never silently two payers.
    """
    insurance = aid = None
    used: list[Enrolment] = []
    for e in found:
        policy = policy_in_force(policies, scheme=e.scheme, region=e.region, on=on)
        if policy is None:
            continue
        if policy.kind == "insurance" and insurance is None:
            insurance = policy
            used.append(e)
        elif policy.kind == "aid" and aid is None:
            aid = policy
            used.append(e)
    return insurance, aid, used


def without_policy(found: Sequence[Enrolment], policies: Sequence[Policy], on: dt.date) -> list[Enrolment]:
    """The enrolments in a scheme and pooling region the platform settles (some policy of it is
    loaded, any year) that no policy covers on the day: a missing file, not an uninsured person.
    A scheme or region the platform has never settled (another city's) is not among them: its
    residents pay their share here and claim at home, as before."""
    return [
        e
        for e in found
        if policy_in_force(policies, scheme=e.scheme, region=e.region, on=on) is None
        and any(p.scheme == e.scheme and p.region == e.region for p in policies)
    ]


def _read_institution(uow: UnitOfWork, org_id: str) -> Institution:
    try:
        response = dispatch(uow, _CTX, FhirRequest("GET", f"Organization/{org_id}"))
    except YilianError as err:
        if err.category in (Category.NOT_FOUND, Category.GONE, Category.INVALID):
            raise refuse(
                Category.NOT_FOUND, "unknown-institution", f"no institution Organization/{org_id}"
            ) from None
        raise
    org = orjson.loads(response.body or b"{}")
    level = None
    for concept in org.get("type") or []:
        for coding in concept.get("coding") or []:
            if coding.get("system") == naming.INSTITUTION_LEVEL and coding.get("code") in LEVEL_OF:
                level = LEVEL_OF[coding["code"]]
    region = None
    for address in org.get("address") or []:
        for ext in address.get("extension") or []:
            if ext.get("url") == naming.EXT_ADDRESS_DIVISION:
                region = (ext.get("valueCoding") or {}).get("code")
    return Institution(org_id, str(org.get("name") or org_id), level, region)


# --------------------------------------------------------------------------- the per-card cache
#
# A charge needs the institution's level and county and the resident's Coverages. Read through
# the FHIR core (a read and a search, each parsed, its bundle serialized and parsed again) they
# were a quarter of a charge's CPU, and they change a few times a year. So each process keeps
# what it read, keyed by database and Organization / Patient, with the stamp of every resource it
# came from — (id, version, lastUpdated) — and every charge checks the stamps (`yilian.fhir.stamps`: one indexed
# query on the stored resources): any write (a new, changed, deleted Coverage, one whose
# beneficiary moved to or from the patient, a changed or deleted Organization), committed by any
# process, changes the stamps and the next charge reads afresh. lastUpdated is in the stamp so
# that a database restored from a backup and written again (the same version numbers, other
# content) is not mistaken for what was cached. The stamps are taken *before* the FHIR reads on
# a miss: a write in between leaves older stamps beside newer facts, which only costs one more
# miss, never a stale answer.

V = TypeVar("V")


class _Stamped(Generic[V]):
    """A bounded map from key to (stamp, value), shared by the server's threads."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, str], tuple[Stamp, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str], stamp: Stamp) -> V | None:
        with self._lock:
            found = self._items.get(key)
            if found is None or found[0] != stamp:
                return None
            self._items.move_to_end(key)
            return found[1]

    def put(self, key: tuple[str, str], stamp: Stamp, value: V) -> None:
        with self._lock:
            self._items[key] = (stamp, value)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_INSTITUTIONS: _Stamped[Institution] = _Stamped(10_000)
_COVERAGES: _Stamped[tuple[dict[str, Any], ...]] = _Stamped(200_000)


def _stamps(uow: UnitOfWork, *, org_id: str, patient_id: str | None) -> tuple[Stamp, Stamp]:
    """(the Organization's stamp, the patient's Coverages' stamp) as stored now: the Coverages
    are those the search by beneficiary finds."""
    referring = None if patient_id is None else ("Coverage", "beneficiary", "Patient", patient_id)
    return stamps(uow, of=("Organization", org_id), referring=referring)


def _database(uow: UnitOfWork) -> str:
    return uow.db.url.render_as_string(hide_password=True)


def _institution(uow: UnitOfWork, org_id: str, stamp: Stamp) -> Institution:
    key = (_database(uow), org_id)
    found = _INSTITUTIONS.get(key, stamp) if stamp else None
    if found is None:
        found = _read_institution(uow, org_id)  # refuses an unknown or deleted Organization
        if stamp:
            _INSTITUTIONS.put(key, stamp, found)
    return found


def institution(uow: UnitOfWork, org_id: str) -> Institution:
    """The institution's level and county (refused as ``unknown-institution`` if there is none)."""
    stamp, _ = _stamps(uow, org_id=org_id, patient_id=None)
    return _institution(uow, org_id, stamp)


def charge_facts(
    uow: UnitOfWork, *, org_id: str, patient_id: str
) -> tuple[Institution, tuple[dict[str, Any], ...]]:
    """What a charge needs from the shared record: the institution and the patient's Coverages
    (as stored; :func:`enrolments_in` picks those in force). One query when nothing changed."""
    org_stamp, coverage_stamp = _stamps(uow, org_id=org_id, patient_id=patient_id)
    place = _institution(uow, org_id, org_stamp)
    key = (_database(uow), patient_id)
    coverages = _COVERAGES.get(key, coverage_stamp)
    if coverages is None:
        coverages = tuple(_search_coverages(uow, patient_id))
        _COVERAGES.put(key, coverage_stamp, coverages)
    return place, coverages


def forget_cached() -> None:
    """Empty the per-process cache (nothing needs it for correctness: the stamps decide)."""
    _INSTITUTIONS.clear()
    _COVERAGES.clear()


def check_charge_item(uow: UnitOfWork, *, charge_item: str, patient_id: str) -> None:
    """A line that names a ChargeItem must name one in the shared record, of the same patient."""
    try:
        response = dispatch(uow, _CTX, FhirRequest("GET", f"ChargeItem/{charge_item}"))
    except YilianError as err:
        if err.category in (Category.NOT_FOUND, Category.GONE, Category.INVALID):
            raise refuse(Category.NOT_FOUND, "unknown-charge-item", f"no ChargeItem/{charge_item}") from None
        raise
    item = orjson.loads(response.body or b"{}")
    subject = (item.get("subject") or {}).get("reference")
    if subject != f"Patient/{patient_id}":
        raise refuse(
            Category.CONFLICT,
            "charge-item-mismatch",
            f"ChargeItem/{charge_item} is not for this card's patient",
        )
