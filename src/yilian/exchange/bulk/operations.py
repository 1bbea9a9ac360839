"""``$export`` as the CapabilityStatement lists it.

The operation runs only over HTTP (the bulk endpoint answers it before the FHIR core sees the
request): it is asynchronous by definition. Registering it here puts it in the
CapabilityStatement, and gives a clear refusal where no HTTP request is involved (a batch
Bundle entry naming ``$export``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from yilian.kernel.errors import Category, YilianError

_IG = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition"


@dataclass(frozen=True)
class ExportOperation:
    resource_type: str | None
    instance: bool
    definition: str
    name: str = "export"
    affects_state: bool = False

    def run(self, uow: Any, ctx: Any, req: Any, resource_id: str | None) -> Any:
        raise YilianError(
            Category.UNSUPPORTED,
            "$export is asynchronous: send it to the server's HTTP endpoint with 'Prefer: respond-async'",
        )


def bulk_operations() -> tuple[Any, ...]:
    """The operations as `FhirSettings.operations` takes them (`yilian.fhir.access.Operation`)."""
    return (
        ExportOperation(None, False, f"{_IG}/export"),
        ExportOperation("Patient", False, f"{_IG}/patient-export"),
        ExportOperation("Group", True, f"{_IG}/group-export"),
    )
