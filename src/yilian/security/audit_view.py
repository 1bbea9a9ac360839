"""``/fhir/AuditEvent``: the audit log served as FHIR, read-only, to those entitled to it.

The platform operator (with an AuditEvent scope) sees every event; an institution sees the
events of its own staff and systems; a resident sees who accessed their record. Looking at the
log is itself an access, audited like any other.

An event can touch several patients (a search returning many records). A resident is shown such
an event — someone looked at their record — but only their own patients in it: the other
patients' entries, the query text and the outcome text (which can name or describe them) are
left out, and searching by anything that looks into those hidden parts finds nothing.
"""

from __future__ import annotations

from typing import Any

from yilian.db import UnitOfWork
from yilian.fhir import bundles
from yilian.fhir.access import READ, SEARCH, require
from yilian.fhir.interactions.context import FhirContext
from yilian.fhir.interactions.outcome import Resource
from yilian.fhir.router import FhirResponse, resource_headers
from yilian.kernel.errors import Category, YilianError
from yilian.security.audit import AuditPage, AuditRow, read_audit, search_audit
from yilian.security.principal import Principal


def _principal(ctx: FhirContext) -> Principal | None:
    return getattr(ctx.policy, "principal", None)


def _scope_filter(principal: Principal | None) -> list[tuple[str, str]]:
    """What part of the log the caller may see, as extra search conditions."""
    if principal is None or (principal.is_operator and principal.patient_keys is None):
        return []
    if principal.patient_keys is not None:
        return [("patient", ",".join(f"Patient/{k}" for k in sorted(principal.patient_keys)))]
    return [("org", principal.org_id or "")]


def _visible(row: AuditRow, principal: Principal | None) -> bool:
    if principal is None or (principal.is_operator and principal.patient_keys is None):
        return True
    if principal.patient_keys is not None:
        return bool(set(row.patient_keys) & principal.patient_keys)
    return row.org_id == principal.org_id


def _resource(row: AuditRow, principal: Principal | None) -> Resource:
    import orjson

    event = row.resource()
    keys = principal.patient_keys if principal is not None else None
    if keys is not None and not set(row.patient_keys) <= keys:
        event = _redacted(event, keys)
    return Resource("AuditEvent", str(row.id), 1, row.recorded, orjson.dumps(event))


def _redacted(event: dict[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    """The event as a resident may see it when it touched other patients too."""
    kept = []
    for entity in event.get("entity") or []:
        ref = str((entity.get("what") or {}).get("reference", ""))
        if (entity.get("role") or {}).get("code") == "1":  # a patient
            if ref.removeprefix("Patient/") in keys:
                kept.append(entity)
            continue
        # What was accessed, without the query, names or details that could describe others.
        bare = {k: v for k, v in entity.items() if k in ("type", "role")}
        if _is_own(ref, keys):
            bare["what"] = entity["what"]
        kept.append(bare)
    out = {k: v for k, v in event.items() if k not in ("entity", "outcomeDesc")}
    if kept:
        out["entity"] = kept
    return out


def _is_own(reference: str, keys: frozenset[str]) -> bool:
    return reference.startswith("Patient/") and reference.split("/")[1] in keys


# Search parameters that look into what a resident is not shown (other patients, query text).
_PATIENT_PARAMS = ("patient", "entity")


def _resident_may_search(pairs: list[tuple[str, str]], keys: frozenset[str]) -> bool:
    """Whether a resident's filters stay within what they are shown: patients only their own,
    ``entity`` only as a reference to their own patient records."""
    for name, value in pairs:
        base = name.split(":", 1)[0]
        if base not in _PATIENT_PARAMS:
            continue
        for v in (x for x in value.split(",") if x):
            pid = v.rsplit("/", 1)[-1] if base == "patient" else None
            if base == "patient" and pid not in keys:
                return False
            if base == "entity" and not _is_own(v, keys):
                return False
    return True


class AuditEventView:
    def search(
        self, uow: UnitOfWork, ctx: FhirContext, pairs: list[tuple[str, str]], *, path: str
    ) -> FhirResponse:
        require(ctx.policy, SEARCH, "AuditEvent")
        principal = _principal(ctx)
        wanted = [(k, v) for k, v in pairs if k not in ("_format", "_pretty")]
        keys = principal.patient_keys if principal is not None else None
        if keys is not None and not _resident_may_search(wanted, keys):
            page = AuditPage([])  # nothing the resident may see can match
        else:
            page = search_audit(uow, wanted + _scope_filter(principal), who=ctx.policy.identity)
        rows = [r for r in page if _visible(r, principal)]
        used = [(k, v) for k, v in wanted if k != "_cursor"]
        body = bundles.searchset(
            ctx,
            path=path,
            used=used,
            matches=[_resource(r, principal) for r in rows],
            included=[],
            total=None,
            next_cursor=page.next_cursor,
        )
        return FhirResponse(200, body)

    def read(self, uow: UnitOfWork, ctx: FhirContext, resource_id: str) -> FhirResponse:
        require(ctx.policy, READ, "AuditEvent")
        row = read_audit(uow, resource_id)
        principal = _principal(ctx)
        if not _visible(row, principal):
            raise YilianError(Category.NOT_FOUND, f"AuditEvent/{resource_id} is not known")  # as if absent
        r = _resource(row, principal)
        return FhirResponse(200, r.content, resource_headers(r, ctx), r)


def virtual_types() -> dict[str, Any]:
    return {"AuditEvent": AuditEventView()}
