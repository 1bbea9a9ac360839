"""``/fhir/AuditEvent``: the audit log served as FHIR, read-only, to those entitled to it.

The platform operator (with an AuditEvent scope) sees every event; an institution sees the
events of its own staff and systems; a resident sees who accessed their record. Looking at the
log is itself an access, audited like any other.
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
from yilian.security.audit import AuditRow, read_audit, search_audit
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


def _resource(row: AuditRow) -> Resource:
    import orjson

    return Resource("AuditEvent", str(row.id), 1, row.recorded, orjson.dumps(row.resource()))


class AuditEventView:
    def search(
        self, uow: UnitOfWork, ctx: FhirContext, pairs: list[tuple[str, str]], *, path: str
    ) -> FhirResponse:
        require(ctx.policy, SEARCH, "AuditEvent")
        principal = _principal(ctx)
        wanted = [(k, v) for k, v in pairs if k not in ("_format", "_pretty")]
        page = search_audit(uow, wanted + _scope_filter(principal), who=ctx.policy.identity)
        rows = [r for r in page if _visible(r, principal)]
        used = [(k, v) for k, v in wanted if k != "_cursor"]
        body = bundles.searchset(
            ctx,
            path=path,
            used=used,
            matches=[_resource(r) for r in rows],
            included=[],
            total=None,
            next_cursor=page.next_cursor,
        )
        return FhirResponse(200, body)

    def read(self, uow: UnitOfWork, ctx: FhirContext, resource_id: str) -> FhirResponse:
        require(ctx.policy, READ, "AuditEvent")
        row = read_audit(uow, resource_id)
        if not _visible(row, _principal(ctx)):
            raise YilianError(Category.NOT_FOUND, f"AuditEvent/{resource_id} does not exist")
        r = _resource(row)
        return FhirResponse(200, r.content, resource_headers(r, ctx), r)


def virtual_types() -> dict[str, Any]:
    return {"AuditEvent": AuditEventView()}
