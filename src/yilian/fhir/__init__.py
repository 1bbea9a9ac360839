"""The FHIR core: the shared health record as a FHIR R4 server, independent of HTTP.

Public surface for the systems, the API and the CLI:

- :func:`dispatch` a :class:`FhirRequest` in a unit of work and get a :class:`FhirResponse`;
- :class:`FhirContext` / :class:`FhirSettings` describe the server a request runs in;
- :mod:`yilian.fhir.bulk` loads many resources (import) and streams them out (export);
- :func:`stamps` gives the version stamps a system's cache of FHIR facts checks before use.

Names are imported lazily so that light users (the element model, FHIRPath) do not pull in
the whole server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from yilian.fhir.interactions.context import FhirContext, FhirSettings
    from yilian.fhir.interactions.stamps import Stamp, stamps
    from yilian.fhir.router import FhirRequest, FhirResponse, dispatch, is_write

_EXPORTS = {
    "FhirRequest": "yilian.fhir.router",
    "FhirResponse": "yilian.fhir.router",
    "dispatch": "yilian.fhir.router",
    "is_write": "yilian.fhir.router",
    "FhirContext": "yilian.fhir.interactions.context",
    "FhirSettings": "yilian.fhir.interactions.context",
    "Stamp": "yilian.fhir.interactions.stamps",
    "stamps": "yilian.fhir.interactions.stamps",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'yilian.fhir' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "FhirContext",
    "FhirRequest",
    "FhirResponse",
    "FhirSettings",
    "Stamp",
    "dispatch",
    "is_write",
    "stamps",
]
