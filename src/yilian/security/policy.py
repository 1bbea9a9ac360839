"""The access decision: one policy object per request, consulted by the FHIR core everywhere.

- The platform operator (a principal with no institution) sees the whole region, within its
  scopes — every access audited. So does anyone who breaks the glass, stating a purpose.
- A resident sees only their own record and their children's.
- An institution sees a patient's record when a grant gives it a reason and the patient's
  consent does not deny it; or when the patient's consent explicitly permits it. A named
  denial wins over everything; "deny all but …" permits only the named.
- Data in no patient's compartment (organizations, practitioners, code systems) is the shared
  registry: visible to every authenticated caller whose scopes cover the type.
- Writing into a record needs the same reason as reading it (:meth:`SecurityPolicy.check_write`,
  docs/decisions/0015): a write never creates the access it needs, except the writes that
  establish a reason in the normal workflow (registering a new patient; an encounter, episode
  or appointment at the writing institution), and those are flagged in the audit log.
- A scope counts only in its principal's context: ``system/`` for system clients, ``user/`` for
  staff, ``patient/`` for residents.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    exists,
    literal_column,
    or_,
    select,
    tuple_,
)
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.expression import FromClause

from yilian.db import Database, UnitOfWork
from yilian.db.prebuilt import Prebuilt
from yilian.db.statements import Statement
from yilian.fhir.access import SEVERAL_PATIENTS, Write, WriteRefusal
from yilian.security.audit import AuditRecord, record
from yilian.security.grants import RULES, consent_rules, organization_of
from yilian.security.principal import RESIDENT, STAFF, SYSTEM, Principal
from yilian.security.scopes import Scopes
from yilian.security.tables import ALL_ORGS, OWNED_TYPES, access_grant, consent_rule, resource_owner

# Where each kind of principal's scopes apply: a system client has no user and no patient in
# context, so ``user/`` and ``patient/`` scopes give it nothing (and likewise the other way).
CONTEXT_OF = {SYSTEM: "system", STAFF: "user", RESIDENT: "patient"}
# Writes that establish a reason in the normal workflow when they name the writing institution:
# the front desk registers the visit of a patient it has never seen.
ESTABLISHING = frozenset({"Encounter", "EpisodeOfCare", "Appointment"})


class SecurityPolicy:
    def __init__(self, principal: Principal, db: Database) -> None:
        self.principal = principal
        self.db = db
        self._seen: dict[str, bool] = {}
        # Patients a write of this request was refused for: whatever that write left behind
        # until the request fails (a transaction decides at its end), they stay closed to it.
        self._refused: set[str] = set()
        context = CONTEXT_OF.get(principal.kind)
        self._scopes = Scopes(tuple(s for s in principal.scopes.items if s.context == context))

    # --- AccessPolicy ------------------------------------------------------------------------

    @property
    def identity(self) -> str:
        return self.principal.identity

    @property
    def front_desk(self) -> bool:
        # Residents' tokens carry their patients; institutions' and the operator's do not.
        return self.principal.patient_keys is None

    @property
    def author_org(self) -> str | None:
        """The institution that authors what this request writes (for the 'author' grant)."""
        return self.principal.org_id

    def allows(self, permission: str, resource_type: str) -> bool:
        return self._scopes.allows(permission, resource_type)

    def row_filter(self, r: FromClause) -> ColumnElement[bool] | None:
        p = self.principal
        if p.is_operator:
            return None
        return _row_filter(r, p.org_id, p.owner_key, p.patient_keys, p.break_glass)

    def can_see(
        self, uow: Any, resource_type: str, patient_key: str | None, resource_id: str | None = None
    ) -> bool:
        p = self.principal
        if resource_type in OWNED_TYPES and not p.is_operator:
            return resource_id is not None and self._owns(uow, resource_type, resource_id)
        if patient_key is None:
            return True
        if p.patient_keys is not None:
            return patient_key in p.patient_keys
        if p.is_operator or p.break_glass:
            return True
        if patient_key in self._refused:
            return False
        cached = self._seen.get(patient_key)
        if cached is None:
            cached = self._seen[patient_key] = self._lookup(uow, patient_key)
        return cached

    def check_write(self, uow: UnitOfWork, write: Write) -> WriteRefusal | None:
        """Writes need a reason for every patient they name, like reads (docs/decisions/0015)."""
        p = self.principal
        try:
            if p.is_operator:
                return None
            hidden = [k for k in sorted(write.patients) if not self.can_see(uow, "Patient", k)]
            several = write.patient_key == SEVERAL_PATIENTS
            if write.resource_type == "Consent" and p.patient_keys is None:
                return self._institution_consent(uow, write, hidden)
            if hidden:
                refusal = self._without_reason(uow, write, hidden)
                if refusal is None:
                    self._refused.difference_update(write.patients)  # registered or established
                elif refusal.message is None:
                    self._refused.update(hidden)
                return refusal
            if several:
                return WriteRefusal(
                    f"a stored {write.resource_type} may hold the data of one patient only; "
                    "store one per patient (or send the resources in a transaction)"
                )
            return None
        finally:
            # The write may change what this caller sees (grants, consent rules): look again.
            for key in (*write.patients, write.previous_key):
                self._seen.pop(key or "", None)

    def _without_reason(self, uow: UnitOfWork, write: Write, hidden: list[str]) -> WriteRefusal | None:
        p = self.principal
        if p.patient_keys is not None or write.resource is None or len(write.patients) != 1:
            return WriteRefusal()
        patient = hidden[0]
        if write.resource_type == "Patient" and write.resource_id == patient and write.is_new:
            return None  # registering a new patient: its record holds nothing yet
        if write.resource_type in ESTABLISHING and p.org_id in self._orgs_named(uow, write):
            _flag(
                uow,
                p,
                write,
                "reason-claimed",
                f"{write.resource_type} at {p.org_id} for a patient it had no reason for: "
                "access to the record follows from this write; review it",
            )
            return None
        return WriteRefusal()

    def _orgs_named(self, uow: UnitOfWork, write: Write) -> set[str]:
        """The institutions a resource gives a reason to (as the grants derived from it will)."""
        assert write.resource is not None
        orgs: set[str] = set()
        for getter, _reason in RULES.get(write.resource_type, ()):
            for ref in getter(write.resource):
                org = organization_of(uow, ref)
                if org:
                    orgs.add(org)
        return orgs

    def _institution_consent(self, uow: UnitOfWork, write: Write, hidden: list[str]) -> WriteRefusal | None:
        """An institution records a patient's consent only for a patient it already has a reason
        for, and only to restrict access: widening who sees a record, or lifting a restriction,
        is the patient's own act (or the platform operator's)."""
        if hidden:
            self._refused.update(hidden)
            return WriteRefusal()
        before = _rules(uow, write.resource_id, write.previous_key, _json(write.previous))
        after = _rules(uow, write.resource_id, write.patient_key, write.resource)
        widened = any(effect == "permit" for *_, effect in after - before) or any(
            effect == "deny" for *_, effect in before - after
        )
        if widened:
            return WriteRefusal(
                "an institution may record a patient's consent only to restrict access to the record; "
                "permitting access or lifting a restriction is the patient's own decision "
                "(the resident portal) or the platform operator's"
            )
        if before != after:
            _flag(
                uow,
                self.principal,
                write,
                "consent-recorded",
                "a patient's consent recorded by an institution",
            )
        return None

    def _owns(self, uow: UnitOfWork | None, resource_type: str, resource_id: str) -> bool:
        stmt = select(resource_owner.c.owner).where(
            resource_owner.c.res_type == resource_type, resource_owner.c.res_id == resource_id
        )
        if uow is not None:
            owner = uow.conn.execute(stmt).scalar_one_or_none()
        else:
            with self.db.connect_autocommit() as conn:
                owner = conn.execute(stmt).scalar_one_or_none()
        return owner == self.principal.owner_key

    # --- the lookup for one patient ---------------------------------------------------------------

    def _lookup(self, uow: UnitOfWork | None, patient_key: str) -> bool:
        params = {"patient_key": patient_key, "org": self.principal.org_id or "", "all_orgs": ALL_ORGS}
        if uow is not None:
            row = _PATIENT_REASONS.one_or_none(uow.conn, params)
        else:  # the short read path (no unit of work): one round trip, not three
            with self.db.connect_autocommit() as conn:
                row = _PATIENT_REASONS.one_or_none(conn, params)
        assert row is not None
        named_deny, permit, deny_all, grant = row
        if named_deny:
            return False
        return bool(permit or (grant and not deny_all))


def _patient_reasons(_dialect: str) -> Select[Any]:
    """Whether the institution is denied by name, permitted, everyone is denied, and whether it
    holds a grant, for one patient: one statement, compiled once (every write an institution
    makes asks this for the patient it names, and building it through SQLAlchemy each time cost
    more than running it)."""
    patient: BindParameter[str] = bindparam("patient_key")
    org: BindParameter[str] = bindparam("org")

    def rule(org_id: Any, effect: str) -> Any:
        return exists().where(
            consent_rule.c.patient_key == patient,
            consent_rule.c.org_id == org_id,
            consent_rule.c.effect == effect,
        )

    return select(
        rule(org, "deny"),
        rule(org, "permit"),
        rule(bindparam("all_orgs"), "deny"),
        exists().where(access_grant.c.patient_key == patient, access_grant.c.org_id == org),
    )


_PATIENT_REASONS = Statement(_patient_reasons)


def _json(content: bytes | None) -> dict[str, Any] | None:
    return orjson.loads(content) if content else None  # type: ignore[no-any-return]


def _rules(
    uow: UnitOfWork, consent_id: str, patient: str | None, consent: dict[str, Any] | None
) -> set[tuple[str, str, str]]:
    """(patient, institution, effect) of what a Consent version decides."""
    if consent is None or not patient or consent.get("status") != "active":
        return set()
    return {
        (r["patient_key"], r["org_id"], r["effect"]) for r in consent_rules(uow, consent_id, patient, consent)
    }


def _flag(uow: UnitOfWork, p: Principal, write: Write, subtype: str, why: str) -> None:
    """An audit event flagged for review, in the write's transaction (it goes if the write goes)."""
    record(
        uow,
        AuditRecord(
            action="C" if write.is_new else ("D" if write.resource is None else "U"),
            subtype=subtype,
            agent_kind={RESIDENT: "patient", STAFF: "user"}.get(p.kind)
            or ("operator" if p.is_operator else "system"),
            agent_id=p.subject[:128] or "anonymous",
            org_id=p.org_id,
            patient_keys=tuple(sorted(write.patients)),
            entity=f"{write.resource_type}/{write.resource_id}",
            resource_types=(write.resource_type,),
            purpose=p.purpose,
            flagged=True,
            outcome_desc=why,
        ),
    )


@functools.lru_cache(maxsize=256)  # a few callers at a time; anonymous aliases just miss
def _row_filter(
    r: FromClause, org: str | None, owner_key: str, patient_keys: frozenset[str] | None, break_glass: bool
) -> ColumnElement[bool]:
    """The row condition for one kind of caller, built once per alias and caller.

    Built afresh, this condition cost more than the search it guards (a compartment search's
    SQL runs in ~0.4 ms; building the consent and grant subqueries through SQLAlchemy took
    longer). The values are bound parameters of the cached expression, which SQLAlchemy
    reuses as it is in any number of statements.
    """
    owned = _owned_filter(r, owner_key)
    if patient_keys is not None:
        cond = and_(or_(r.c.patient_key.is_(None), r.c.patient_key.in_(sorted(patient_keys))), owned)
    elif break_glass:  # an emergency opens patients' records, not other institutions' own resources
        cond = owned
    else:
        cond = and_(_patient_filter(r, org), owned)
    # Its cache key computed once too: walking this condition on every execution cost SQLAlchemy
    # half of what the decision adds to a compartment search (db/prebuilt.py).
    return Prebuilt(cond, r)


_CONSTANT = re.compile(r"[A-Za-z*_-]+")


def _constant(value: str) -> ColumnElement[Any]:
    """The platform's own constant (a resource type, a rule's effect, ``*``) written into the
    SQL: a bound value costs SQLAlchemy work on every execution (an expanding ``IN`` list most of
    all), and these never change. Never a caller's value: only these characters get through."""
    if not _CONSTANT.fullmatch(value):
        raise ValueError(f"not a constant that may be written into SQL: {value!r}")
    return literal_column(f"'{value}'")


_ONE: ColumnElement[Any] = literal_column("1")
_ZERO: ColumnElement[Any] = literal_column("0")


def _owned_filter(r: FromClause, owner_key: str) -> ColumnElement[bool]:
    """Rows of an owned type only when the caller owns them; every other row as it is."""
    mine = select(resource_owner.c.res_type, resource_owner.c.res_id).where(
        resource_owner.c.owner == owner_key
    )
    return or_(
        r.c.res_type.not_in([_constant(t) for t in sorted(OWNED_TYPES)]),
        tuple_(r.c.res_type, r.c.res_id).in_(mine),
    )


def _patient_filter(r: FromClause, org: str | None) -> ColumnElement[bool]:
    # Correlated EXISTS, each a point lookup on (org, effect, patient) or (org, patient) for the
    # row's patient. "patient_key IN (every patient the institution was ever granted)" read the
    # hospital's whole grant list for every search (and SQLite built it in full); NOT IN kept
    # PostgreSQL from an anti-join.
    #
    # OFFSET 0 keeps each EXISTS a per-row probe on PostgreSQL: without it the planner may turn
    # the EXISTS into a hashed subplan that reads every grant (or rule) of the institution to
    # answer a search of five rows — measured on the benchmark's 2,000 grants: 0.9 ms of a
    # 1.7 ms compartment search, and it grows with the hospital. PostgreSQL does not rewrite
    # an EXISTS whose subquery has an OFFSET; SQLite runs it as the same index probe.
    key = r.c.patient_key

    def probe(*conds: ColumnElement[bool]) -> ColumnElement[bool]:
        return select(_ONE).where(*conds).offset(_ZERO).exists()

    def rule(org_id: ColumnElement[Any] | str | None, effect: str) -> ColumnElement[bool]:
        return probe(
            consent_rule.c.org_id == org_id,
            consent_rule.c.effect == _constant(effect),
            consent_rule.c.patient_key == key,
        )

    granted = probe(access_grant.c.org_id == org, access_grant.c.patient_key == key)
    return or_(
        key.is_(None),
        and_(
            ~rule(org, "deny"),
            or_(rule(org, "permit"), and_(granted, ~rule(_constant(ALL_ORGS), "deny"))),
        ),
    )


def policy_for(principal: Principal, db: Database) -> SecurityPolicy:
    return SecurityPolicy(principal, db)


__all__ = ["SecurityPolicy", "policy_for"]
