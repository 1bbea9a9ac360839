"""The CapabilityStatement: exactly what this server does, built from the same registry it runs on."""

from __future__ import annotations

from functools import cache
from typing import Any

from yilian import __version__
from yilian.fhir.interactions.context import FhirContext
from yilian.fhir.interactions.search import compartment_params
from yilian.fhir.model import FHIR_VERSION, model
from yilian.fhir.search.registry import params_for

TYPE_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)


@cache
def _resources(enforced: bool) -> list[dict[str, Any]]:
    out = []
    for rtype in sorted(model().resource_types):
        params = params_for(rtype)
        search_params = [
            {"name": code, "definition": p.url, "type": "special" if p.type == "text" else p.type}
            for code, p in sorted(params.items())
        ]
        ref_params = sorted(code for code, p in params.items() if p.type == "reference")
        entry: dict[str, Any] = {
            "type": rtype,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
            "interaction": [{"code": c} for c in TYPE_INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "full-support",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "referencePolicy": ["literal", "enforced", "local"] if enforced else ["literal", "local"],
            "searchInclude": ["*"] + [f"{rtype}:{c}" for c in ref_params],
            "searchRevInclude": ["*"],
            "searchParam": search_params,
        }
        ops = [
            {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}
        ]
        if rtype == "Patient":
            ops.append(
                {
                    "name": "everything",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                }
            )
        entry["operation"] = ops
        out.append(entry)
    return out


def _security(ctx: FhirContext) -> dict[str, Any]:
    root = ctx.base_url[: -len("/fhir")] if ctx.base_url.endswith("/fhir") else ctx.base_url
    return {
        "cors": False,
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ],
                "text": "OAuth 2.0 (SMART Backend Services and SMART App Launch); see .well-known/smart-configuration",
            }
        ],
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    {"url": "token", "valueUri": f"{root}/auth/token"},
                    {"url": "authorize", "valueUri": f"{root}/auth/authorize"},
                ],
            }
        ],
    }


def _with_systems(ctx: FhirContext, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The core's resources, adjusted for what other systems plug in: types they serve read-only
    (AuditEvent, Person) lose every write interaction, and their operations are listed."""
    virtual = ctx.settings.virtual_types
    ops = ctx.settings.operations
    if not virtual and not ops:
        return resources
    out = []
    for entry in resources:
        rtype = entry["type"]
        e = dict(entry)
        if rtype in virtual:
            e["interaction"] = [{"code": "read"}, {"code": "search-type"}]
            e["versioning"] = "no-version"
            e["readHistory"] = False
            for flag in ("updateCreate", "conditionalCreate", "conditionalUpdate"):
                e[flag] = False
            e["conditionalDelete"] = "not-supported"
            e["operation"] = []
        extra = [{"name": op.name, "definition": op.definition} for op in ops if op.resource_type == rtype]
        if extra:
            e["operation"] = [*e.get("operation", []), *extra]
        out.append(e)
    return out


def capability_statement(ctx: FhirContext) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-12-03",
        "publisher": "Yilian (医联)",
        "kind": "instance",
        "software": {"name": "Yilian", "version": __version__},
        "implementation": {
            "description": "Yilian regional health information platform — shared health record",
            "url": ctx.base_url,
        },
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json", "application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Shared health record of the region (电子健康档案 and 电子病历).",
                "security": _security(ctx),
                "resource": _with_systems(ctx, _resources(ctx.settings.enforce_referential_integrity)),
                **(
                    {
                        "operation": [
                            {"name": op.name, "definition": op.definition}
                            for op in ctx.settings.operations
                            if op.resource_type is None
                        ]
                    }
                    if any(op.resource_type is None for op in ctx.settings.operations)
                    else {}
                ),
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "search-system"},
                    {"code": "history-system"},
                ],
                "searchParam": [
                    {
                        "name": "_id",
                        "type": "token",
                        "definition": "http://hl7.org/fhir/SearchParameter/Resource-id",
                    },
                    {
                        "name": "_lastUpdated",
                        "type": "date",
                        "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
                    },
                    {
                        "name": "_tag",
                        "type": "token",
                        "definition": "http://hl7.org/fhir/SearchParameter/Resource-tag",
                    },
                    {
                        "name": "_profile",
                        "type": "uri",
                        "definition": "http://hl7.org/fhir/SearchParameter/Resource-profile",
                    },
                    {
                        "name": "_security",
                        "type": "token",
                        "definition": "http://hl7.org/fhir/SearchParameter/Resource-security",
                    },
                    {
                        "name": "_source",
                        "type": "uri",
                        "definition": "http://hl7.org/fhir/SearchParameter/Resource-source",
                    },
                    {
                        "name": "_content",
                        "type": "special",
                        "definition": "http://hl7.org/fhir/SearchParameter/Resource-content",
                    },
                ],
                "compartment": [
                    f"http://hl7.org/fhir/CompartmentDefinition/{name.lower()}"
                    for name in ("Patient", "Encounter", "Practitioner", "RelatedPerson", "Device")
                    if compartment_params(name)
                ],
            }
        ],
    }
