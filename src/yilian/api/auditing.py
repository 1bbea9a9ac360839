"""What the audit log records about each request: one AuditRecord per access, built here from
the request, the caller and the outcome (yilian.security.audit stores it)."""

from __future__ import annotations

from urllib.parse import urlencode

from yilian.fhir.outcomes import status_of
from yilian.fhir.router import FhirRequest, is_write
from yilian.kernel.errors import Category, YilianError
from yilian.security.audit import AuditRecord
from yilian.security.principal import RESIDENT, STAFF, Principal

DENIALS = frozenset({Category.FORBIDDEN, Category.UNAUTHENTICATED})


def interaction(req: FhirRequest) -> tuple[str, str]:
    """(AuditEvent.action, restful-interaction subtype) for a FHIR request."""
    method = req.method.upper()
    segs = req.segments
    last = segs[-1] if segs else ""
    if not segs:
        return ("E", "transaction") if method == "POST" else ("E", "search-system")
    if last.startswith("$"):
        return "E", "operation"
    if last == "_search":
        return "E", "search-type" if len(segs) > 1 else "search-system"
    if "_history" in segs:
        return ("R", "vread") if len(segs) >= 2 and segs[-2] == "_history" else ("R", "history")
    if method in ("GET", "HEAD"):
        if len(segs) == 2:
            return "R", "read"
        return "E", "search-type"
    return {
        "POST": ("C", "create"),
        "PUT": ("U", "update"),
        "PATCH": ("U", "patch"),
        "DELETE": ("D", "delete"),
    }.get(method, ("E", "operation"))


def agent_kind(principal: Principal | None) -> str:
    if principal is None:
        return "system"
    if principal.kind == RESIDENT:
        return "patient"
    if principal.kind == STAFF:
        return "user"
    return "operator" if principal.org_id is None else "system"


def record_for(
    req: FhirRequest,
    principal: Principal | None,
    *,
    status: int,
    patients: frozenset[str] | set[str] = frozenset(),
    entity: str | None = None,
    error: YilianError | None = None,
    source_ip: str | None = None,
) -> AuditRecord:
    action, subtype = interaction(req)
    if error is not None and error.category in DENIALS:
        subtype = "access-denied"
    outcome = 0 if status < 400 else (8 if status >= 500 else 4)
    segs = req.segments
    query = None
    if subtype.startswith("search") or subtype in ("history", "operation"):
        query = req.path + ("?" + urlencode(req.query) if req.query else "")
    if entity is None and len(segs) >= 2 and not segs[1].startswith(("$", "_")):
        entity = "/".join(segs[:2])
    return AuditRecord(
        action=action,
        subtype=subtype,
        agent_kind=agent_kind(principal),
        agent_id=(principal.subject if principal else "anonymous")[:128] or "anonymous",
        outcome=outcome,
        org_id=principal.org_id if principal else None,
        patient_keys=tuple(sorted(patients)),
        entity=entity,
        query=query,
        resource_types=(segs[0],) if segs and not segs[0].startswith(("$", "_")) else (),
        purpose=principal.purpose if principal else None,
        source_ip=source_ip,
        user_agent=req.headers.get("user-agent"),
        outcome_desc=error.message[:500] if error is not None else None,
    )


def writes_data(req: FhirRequest) -> bool:
    return is_write(req.method, req.path)


__all__ = ["record_for", "status_of", "writes_data"]
