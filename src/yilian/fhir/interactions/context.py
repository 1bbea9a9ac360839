"""What an interaction needs to know about the server it runs in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from yilian.fhir.access import ALLOW_ALL, AccessPolicy, LookupGuard, Operation, VirtualType, WriteObserver


@dataclass(frozen=True)
class FhirSettings:
    """Per-deployment behaviour of the FHIR server."""

    # Refuse a write whose references name a local resource that does not exist.
    enforce_referential_integrity: bool = True
    # Refuse to delete a resource that other current resources still reference (409).
    enforce_delete_integrity: bool = True
    default_page_size: int = 50
    max_page_size: int = 1000
    # Reject unknown elements (the spec's strict parsing); lenient mode is not offered.
    max_bundle_entries: int = 10_000
    # Told of every write in its transaction (access grants, patient index, subscriptions…);
    # those with ``before_write`` also see each resource before it is stored.
    observers: tuple[WriteObserver, ...] = ()
    # Asked about every identifier a request looks resources up by (the card system refuses a
    # lost card's number).
    lookup_guards: tuple[LookupGuard, ...] = ()
    # Resource types a system serves from storage of its own (AuditEvent from the audit log).
    virtual_types: Mapping[str, VirtualType] = field(default_factory=dict)
    # Operations other systems provide ($match, $ihe-pix…), found by (type or None, name, instance).
    operations: tuple[Operation, ...] = ()

    def operation(self, resource_type: str | None, name: str, *, instance: bool) -> Operation | None:
        for op in self.operations:
            if op.resource_type == resource_type and op.name == name and op.instance == instance:
                return op
        return None


@dataclass(frozen=True)
class FhirContext:
    """One request's view of the server: its absolute base URL and the deployment's settings."""

    base_url: str = "http://localhost:8080/fhir"
    settings: FhirSettings = FhirSettings()
    # Who is asking and what they may see (yilian.fhir.access); trusted callers allow all.
    policy: AccessPolicy = ALLOW_ALL

    def url_for(self, res_type: str, res_id: str, version: int | None = None) -> str:
        tail = f"/_history/{version}" if version is not None else ""
        return f"{self.base_url}/{res_type}/{res_id}{tail}"
