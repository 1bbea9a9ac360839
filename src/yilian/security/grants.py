"""Access grants and consent rules, kept in step with the record as it is written.

An institution may see a patient's record when the record itself shows a reason: an encounter
or episode there, an appointment with its staff, a referral or consultation request to it,
a family-doctor contract (a CareTeam it manages, or being the patient's general practitioner),
registration (managing organization), or having authored data about the patient (which, but for
the front desk's writes, needs one of the other reasons first: decision 0015). A resident's
Consent resources turn into permit/deny rules. :class:`GrantDeriver` is a write observer: it
runs in the transaction of every write, so a grant exists exactly when its source does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson
from sqlalchemy import delete, select

from yilian.db import UnitOfWork
from yilian.db.dialect import insert_ignore
from yilian.fhir.access import SEVERAL_PATIENTS, is_first_version
from yilian.fhir.store.repository import get_current
from yilian.security.principal import OPERATOR_OWNER
from yilian.security.tables import ALL_ORGS, OWNED_TYPES, access_grant, consent_rule, resource_owner

Getter = Callable[[dict[str, Any]], Iterator[Any]]


def _refs(*path: str) -> Getter:
    """Reference strings found at a JSON path (lists are walked through)."""

    def get(resource: dict[str, Any]) -> Iterator[Any]:
        nodes: list[Any] = [resource]
        for key in path:
            nxt: list[Any] = []
            for n in nodes:
                if isinstance(n, dict) and key in n:
                    v = n[key]
                    nxt.extend(v if isinstance(v, list) else [v])
            nodes = nxt
        for n in nodes:
            if isinstance(n, dict) and isinstance(n.get("reference"), str):
                yield n["reference"]

    return get


# resource type -> [(where institutions are referenced, the reason it gives)]
RULES: dict[str, list[tuple[Getter, str]]] = {
    "Encounter": [
        (_refs("serviceProvider"), "treatment"),
        (_refs("participant", "individual"), "treatment"),
        (_refs("location", "location"), "treatment"),
    ],
    "EpisodeOfCare": [(_refs("managingOrganization"), "treatment"), (_refs("careManager"), "treatment")],
    "Appointment": [(_refs("participant", "actor"), "treatment")],
    "ServiceRequest": [(_refs("performer"), "referral"), (_refs("requester"), "referral")],
    "Task": [(_refs("owner"), "consultation"), (_refs("requester"), "consultation")],
    "CareTeam": [
        (_refs("managingOrganization"), "family-doctor"),
        (_refs("participant", "member"), "family-doctor"),
    ],
    "Patient": [
        (_refs("managingOrganization"), "registration"),
        (_refs("generalPractitioner"), "family-doctor"),
    ],
    "Immunization": [(_refs("performer", "actor"), "treatment")],
    "Observation": [(_refs("performer"), "treatment")],
    "DiagnosticReport": [(_refs("performer"), "treatment")],
    "Procedure": [(_refs("performer", "actor"), "treatment")],
    "MedicationRequest": [(_refs("requester"), "treatment"), (_refs("performer"), "treatment")],
    "Claim": [(_refs("provider"), "treatment")],
}

# Where each kind of referenced resource says which institution it belongs to.
_OWNER = {
    "PractitionerRole": "organization",
    "Location": "managingOrganization",
    "HealthcareService": "providedBy",
}


def organization_of(uow: UnitOfWork, reference: str) -> str | None:
    """The Organization id a reference leads to (directly, or via a role, location or service)."""
    rtype, _, rid = reference.rpartition("/")
    rtype = rtype.rsplit("/", 1)[-1]
    if rtype == "Organization":
        return rid or None
    field = _OWNER.get(rtype)
    if field is None or not rid:
        return None
    stored = get_current(uow.conn, rtype, rid)
    if stored is None or stored.deleted or stored.content is None:
        return None
    ref = (orjson.loads(stored.content).get(field) or {}).get("reference")
    if isinstance(ref, str) and ref.startswith("Organization/"):
        return ref.split("/", 1)[1]
    return None


# Types whose current version's writer is kept (in ``resource_owner``, without making them
# owned): a parent link counts only when an institution or the operator wrote it
# (security.people.children_of).
WRITER_KEPT = frozenset({"RelatedPerson"})


class GrantDeriver:
    """The write observer that derives access grants and consent rules."""

    def on_write(
        self,
        uow: UnitOfWork,
        ctx: Any,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any] | None,
        patient_key: str | None,
    ) -> None:
        first = is_first_version(resource)
        if patient_key == SEVERAL_PATIENTS:
            patient_key = None  # several patients' data: a reason for none of them
        if resource_type in OWNED_TYPES and first:
            _record_owner(uow, ctx, resource_type, resource_id)
        if resource_type in WRITER_KEPT:
            _record_writer(uow, ctx, resource_type, resource_id, resource is not None)
        if resource_type in RULES:
            if not first:
                uow.conn.execute(
                    delete(access_grant).where(
                        access_grant.c.source_type == resource_type, access_grant.c.source_id == resource_id
                    )
                )
            if resource is not None and patient_key:
                rows = []
                for getter, reason in RULES[resource_type]:
                    for ref in getter(resource):
                        org = organization_of(uow, ref)
                        if org:
                            rows.append(_grant(patient_key, org, reason, resource_type, resource_id))
                insert_ignore(uow.conn, access_grant, _unique(rows))
        if resource_type == "Consent":
            if not first:
                uow.conn.execute(delete(consent_rule).where(consent_rule.c.consent_id == resource_id))
            if resource is not None and patient_key and resource.get("status") == "active":
                insert_ignore(uow.conn, consent_rule, consent_rules(uow, resource_id, patient_key, resource))
        # Authoring data about a patient is itself a reason (the institution cared for them).
        org = getattr(getattr(ctx, "policy", None), "author_org", None)
        if org and patient_key and resource is not None:
            insert_ignore(uow.conn, access_grant, [_grant(patient_key, org, "author", "author", org)])

    def on_new_many(
        self, uow: UnitOfWork, ctx: Any, items: list[tuple[str, str, dict[str, Any], str | None]]
    ) -> None:
        """A bulk load's new resources: the grants of all of them in one insert.

        New resources are the source of no grant yet, so there is nothing to delete first;
        consents (rare, and with rules of their own) go one by one.
        """
        rows: list[dict[str, str]] = []
        owners: dict[str, str | None] = {}
        org = getattr(getattr(ctx, "policy", None), "author_org", None)
        for resource_type, resource_id, resource, key in items:
            patient_key = None if key == SEVERAL_PATIENTS else key
            if resource_type in OWNED_TYPES:
                _record_owner(uow, ctx, resource_type, resource_id)
            if resource_type in WRITER_KEPT:
                _record_writer(uow, ctx, resource_type, resource_id, True)
            if resource_type == "Consent":
                self.on_write(uow, ctx, resource_type, resource_id, resource, patient_key)
                continue
            if not patient_key:
                continue
            for getter, reason in RULES.get(resource_type, ()):
                for ref in getter(resource):
                    if ref not in owners:
                        owners[ref] = organization_of(uow, ref)
                    if owners[ref]:
                        rows.append(_grant(patient_key, str(owners[ref]), reason, resource_type, resource_id))
            if org:
                rows.append(_grant(patient_key, org, "author", "author", org))
        insert_ignore(uow.conn, access_grant, _unique(rows))


def _record_owner(uow: UnitOfWork, ctx: Any, resource_type: str, resource_id: str) -> None:
    """Its creator owns it for good: later versions keep the owner (and only the owner, or the
    operator, can see it to write them)."""
    principal = getattr(getattr(ctx, "policy", None), "principal", None)
    owner = principal.owner_key if principal is not None else OPERATOR_OWNER
    insert_ignore(
        uow.conn, resource_owner, [{"res_type": resource_type, "res_id": resource_id, "owner": owner}]
    )


def _record_writer(uow: UnitOfWork, ctx: Any, resource_type: str, resource_id: str, kept: bool) -> None:
    """Who wrote the current version (gone with a deletion)."""
    uow.conn.execute(
        delete(resource_owner).where(
            resource_owner.c.res_type == resource_type, resource_owner.c.res_id == resource_id
        )
    )
    if kept:
        _record_owner(uow, ctx, resource_type, resource_id)


def writer_of(uow: UnitOfWork, resource_type: str, resource_id: str) -> str | None:
    """The owner key of who wrote the current version of a :data:`WRITER_KEPT` resource."""
    stmt = select(resource_owner.c.owner).where(
        resource_owner.c.res_type == resource_type, resource_owner.c.res_id == resource_id
    )
    return uow.conn.execute(stmt).scalar_one_or_none()


def _grant(patient: str, org: str, reason: str, source_type: str, source_id: str) -> dict[str, str]:
    return {
        "patient_key": patient,
        "org_id": org,
        "reason": reason,
        "source_type": source_type,
        "source_id": source_id,
    }


def _unique(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    seen: dict[tuple[str, ...], dict[str, str]] = {}
    for r in rows:
        seen.setdefault(tuple(r.values()), r)
    return list(seen.values())


def consent_rules(
    uow: UnitOfWork, consent_id: str, patient: str, consent: dict[str, Any]
) -> list[dict[str, str]]:
    """Rules from a Consent's provision: top level (deny/permit, for named institutions or all)
    and nested exceptions ("deny all but these")."""
    rules: dict[str, str] = {}

    def apply(provision: dict[str, Any]) -> None:
        effect = provision.get("type")
        if effect not in ("deny", "permit"):
            return
        orgs = [o for a in provision.get("actor") or [] if (o := _actor_org(uow, a))]
        for org in orgs or [ALL_ORGS]:
            rules[org] = effect
        for sub in provision.get("provision") or []:
            if isinstance(sub, dict):
                apply(sub)

    top = consent.get("provision")
    if isinstance(top, dict):
        apply(top)
    return [
        {"consent_id": consent_id, "patient_key": patient, "org_id": org, "effect": eff}
        for org, eff in rules.items()
    ]


def _actor_org(uow: UnitOfWork, actor: Any) -> str | None:
    ref = (actor.get("reference") or {}).get("reference") if isinstance(actor, dict) else None
    return organization_of(uow, ref) if isinstance(ref, str) else None
