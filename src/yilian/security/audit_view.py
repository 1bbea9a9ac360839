"""``/fhir/AuditEvent``: the audit log served as FHIR, read-only, to those entitled to it.

The platform operator (with an AuditEvent scope) sees every event; an institution sees the
events of its own staff and systems; a resident sees who accessed their record. Looking at the
log is itself an access, audited like any other.

An event can touch several patients (a search returning many records). A resident is shown such
an event — someone looked at their record — but only their own patients in it: the other
patients' entries, the query text and the outcome text (which can name or describe them) are
left out, and searching by anything that looks into those hidden parts finds nothing.

An institution is shown its own events the same way, with the patients it may see now: an
event also names patients the caller was not shown (a front desk looking up somebody's card
records the holder, so the holder can see who looked), and a reason can end. Who acted, when,
on what type and with what outcome stays; the hidden patient's id does not (decision 0016).
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


class _Visibility:
    """Which patients the caller may be shown in an event: a resident their own (and their
    children's), an institution those it has a reason for now, the operator every one."""

    def __init__(self, uow: UnitOfWork, ctx: FhirContext, principal: Principal | None) -> None:
        self.uow, self.policy = uow, ctx.policy
        self.everyone = principal is None or (principal.is_operator and principal.patient_keys is None)
        self.own = principal.patient_keys if principal is not None else None
        self._seen: dict[str, bool] = {}

    def __call__(self, key: str) -> bool:
        if self.everyone:
            return True
        if self.own is not None:
            return key in self.own
        if key not in self._seen:
            self._seen[key] = self.policy.can_see(self.uow, "Patient", key, key)
        return self._seen[key]


def _resource(row: AuditRow, may_see: _Visibility) -> Resource:
    import orjson

    event = row.resource()
    shown = frozenset(k for k in row.patient_keys if may_see(k))
    if len(shown) < len(set(row.patient_keys)):
        event = _redacted(event, shown)
    return Resource("AuditEvent", str(row.id), 1, row.recorded, orjson.dumps(event))


def _redacted(event: dict[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    """The event as the caller may see it when it touched patients the caller may not see."""
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


def _may_search(pairs: list[tuple[str, str]], may_see: _Visibility) -> bool:
    """Whether the filters stay within what the caller is shown: ``patient`` only patients it
    may see, ``entity`` (for a resident) only a reference to their own patient records."""
    for name, value in pairs:
        base = name.split(":", 1)[0]
        if base not in _PATIENT_PARAMS:
            continue
        for v in (x for x in value.split(",") if x):
            if base == "patient" and not may_see(v.rsplit("/", 1)[-1]):
                return False
            if base == "entity" and may_see.own is not None and not _is_own(v, may_see.own):
                return False
    return True


class AuditEventView:
    def search(
        self, uow: UnitOfWork, ctx: FhirContext, pairs: list[tuple[str, str]], *, path: str
    ) -> FhirResponse:
        require(ctx.policy, SEARCH, "AuditEvent")
        principal = _principal(ctx)
        may_see = _Visibility(uow, ctx, principal)
        wanted = [(k, v) for k, v in pairs if k not in ("_format", "_pretty")]
        if not _may_search(wanted, may_see):
            page = AuditPage([])  # nothing the caller may be shown can match
        else:
            page = search_audit(uow, wanted + _scope_filter(principal), who=ctx.policy.identity)
        rows = [r for r in page if _visible(r, principal)]
        used = [(k, v) for k, v in wanted if k != "_cursor"]
        body = bundles.searchset(
            ctx,
            path=path,
            used=used,
            matches=[_resource(r, may_see) for r in rows],
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
        r = _resource(row, _Visibility(uow, ctx, principal))
        return FhirResponse(200, r.content, resource_headers(r, ctx), r)


def virtual_types() -> dict[str, Any]:
    return {"AuditEvent": AuditEventView()}
