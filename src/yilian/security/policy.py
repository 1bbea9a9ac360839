"""The access decision: one policy object per request, consulted by the FHIR core everywhere.

- The platform operator (a principal with no institution) sees the whole region, within its
  scopes — every access audited. So does anyone who breaks the glass, stating a purpose.
- A resident sees only their own record and their children's.
- An institution sees a patient's record when a grant gives it a reason and the patient's
  consent does not deny it; or when the patient's consent explicitly permits it. A named
  denial wins over everything; "deny all but …" permits only the named.
- Data in no patient's compartment (organizations, practitioners, code systems) is the shared
  registry: visible to every authenticated caller whose scopes cover the type.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, exists, or_, select, tuple_
from sqlalchemy.sql.expression import FromClause

from yilian.db import Database, UnitOfWork
from yilian.security.principal import Principal
from yilian.security.tables import ALL_ORGS, OWNED_TYPES, access_grant, consent_rule, resource_owner


class SecurityPolicy:
    def __init__(self, principal: Principal, db: Database) -> None:
        self.principal = principal
        self.db = db
        self._seen: dict[str, bool] = {}

    # --- AccessPolicy ------------------------------------------------------------------------

    @property
    def identity(self) -> str:
        return self.principal.identity

    @property
    def author_org(self) -> str | None:
        """The institution that authors what this request writes (for the 'author' grant)."""
        return self.principal.org_id

    def allows(self, permission: str, resource_type: str) -> bool:
        return self.principal.scopes.allows(permission, resource_type)

    def row_filter(self, r: FromClause) -> ColumnElement[bool] | None:
        p = self.principal
        if p.is_operator:
            return None
        owned = self._owned_filter(r)
        if p.patient_keys is not None:
            return and_(or_(r.c.patient_key.is_(None), r.c.patient_key.in_(sorted(p.patient_keys))), owned)
        if p.break_glass:  # an emergency opens patients' records, not other institutions' own resources
            return owned
        return and_(self._patient_filter(r), owned)

    def _owned_filter(self, r: FromClause) -> ColumnElement[bool]:
        """Rows of an owned type only when the caller owns them; every other row as it is."""
        mine = select(resource_owner.c.res_type, resource_owner.c.res_id).where(
            resource_owner.c.owner == self.principal.owner_key
        )
        return or_(r.c.res_type.not_in(sorted(OWNED_TYPES)), tuple_(r.c.res_type, r.c.res_id).in_(mine))

    def _patient_filter(self, r: FromClause) -> ColumnElement[bool]:
        p = self.principal
        org = p.org_id
        named_deny = select(consent_rule.c.patient_key).where(
            consent_rule.c.org_id == org, consent_rule.c.effect == "deny"
        )
        permitted = select(consent_rule.c.patient_key).where(
            consent_rule.c.org_id == org, consent_rule.c.effect == "permit"
        )
        deny_all = select(consent_rule.c.patient_key).where(
            consent_rule.c.org_id == ALL_ORGS, consent_rule.c.effect == "deny"
        )
        granted = select(access_grant.c.patient_key).where(access_grant.c.org_id == org)
        return or_(
            r.c.patient_key.is_(None),
            and_(
                r.c.patient_key.not_in(named_deny),
                or_(
                    r.c.patient_key.in_(permitted),
                    and_(r.c.patient_key.in_(granted), r.c.patient_key.not_in(deny_all)),
                ),
            ),
        )

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
        cached = self._seen.get(patient_key)
        if cached is None:
            cached = self._seen[patient_key] = self._lookup(uow, patient_key)
        return cached

    def _owns(self, uow: UnitOfWork | None, resource_type: str, resource_id: str) -> bool:
        stmt = select(resource_owner.c.owner).where(
            resource_owner.c.res_type == resource_type, resource_owner.c.res_id == resource_id
        )
        if uow is not None:
            owner = uow.conn.execute(stmt).scalar_one_or_none()
        else:
            with self.db.engine.connect() as conn:
                owner = conn.execute(stmt).scalar_one_or_none()
        return owner == self.principal.owner_key

    # --- the lookup for one patient ---------------------------------------------------------------

    def _lookup(self, uow: UnitOfWork | None, patient_key: str) -> bool:
        org = self.principal.org_id

        def rule(org_id: str, effect: str) -> Any:
            return exists().where(
                consent_rule.c.patient_key == patient_key,
                consent_rule.c.org_id == org_id,
                consent_rule.c.effect == effect,
            )

        stmt = select(
            rule(org or "", "deny").label("named_deny"),
            rule(org or "", "permit").label("permit"),
            rule(ALL_ORGS, "deny").label("deny_all"),
            exists()
            .where(access_grant.c.patient_key == patient_key, access_grant.c.org_id == org)
            .label("grant"),
        )
        if uow is not None:
            row = uow.conn.execute(stmt).one()
        else:
            with self.db.engine.connect() as conn:
                row = conn.execute(stmt).one()
        if row.named_deny:
            return False
        return bool(row.permit or (row.grant and not row.deny_all))


def policy_for(principal: Principal, db: Database) -> SecurityPolicy:
    return SecurityPolicy(principal, db)


__all__ = ["SecurityPolicy", "policy_for"]
