"""The FHIRPath function library, one module per family of the specification.

Importing the package registers every function in :data:`FUNCTIONS`.
:data:`UNSUPPORTED` lists the functions the engine knows of but deliberately does not
implement, with the reason; compiling an expression that calls one raises a
``FHIRPathError`` naming it.
"""

from yilian.fhir.fhirpath.functions import (  # noqa: F401 - imported to register their functions
    aggregates,
    conversion,
    existence,
    fhir,
    filtering,
    maths,
    precision,
    strings,
    subsetting,
    utility,
)
from yilian.fhir.fhirpath.registry import FUNCTIONS

UNSUPPORTED: dict[str, str] = {
    "memberOf": "needs a terminology service to expand value sets; the server checks bindings itself",
    "subsumes": "needs a terminology service (code system hierarchies)",
    "subsumedBy": "needs a terminology service (code system hierarchies)",
    "htmlChecks": "needs an XHTML validator; narrative is checked by the resource validator",
    "htmlchecks": "needs an XHTML validator; narrative is checked by the resource validator",
    "elementDefinition": "needs StructureDefinition snapshots at run time, which the server does not ship",
    "slice": "needs profile slicing definitions, which the server does not ship",
    "checkModifiers": "needs profile definitions of modifier extensions",
    "hasTemplateIdOf": "CDA-specific; the server stores FHIR only",
}

__all__ = ["FUNCTIONS", "UNSUPPORTED"]
