"""$validate: check a resource without storing it."""

from __future__ import annotations

from typing import Any

from yilian.fhir import outcomes, validation
from yilian.fhir.model import model
from yilian.kernel.errors import Category, YilianError


def validate(body: Any, res_type: str, *, res_id: str | None = None) -> dict[str, Any]:
    """An OperationOutcome listing every problem (HTTP 200 either way, as the operation defines)."""
    resource = body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        resource = None
        for p in body.get("parameter") or []:
            if isinstance(p, dict) and p.get("name") == "resource":
                resource = p.get("resource")
        if resource is None:
            raise YilianError(Category.INVALID, "$validate Parameters has no 'resource' parameter")
    if not isinstance(resource, dict):
        raise YilianError(Category.INVALID, "$validate takes a resource or Parameters with a 'resource' part")
    rt = resource.get("resourceType")
    issues: list[dict[str, Any]] = []
    if rt != res_type:
        issues.append(
            {
                "severity": "error",
                "code": "invalid",
                "diagnostics": f"resourceType {rt!r} does not match {res_type}",
                "expression": ["resourceType"],
            }
        )
    elif not model().is_resource_type(res_type):
        raise YilianError(Category.NOT_FOUND, f"unknown resource type {res_type!r}")
    else:
        if res_id is not None and resource.get("id") not in (None, res_id):
            issues.append(
                {
                    "severity": "error",
                    "code": "invalid",
                    "diagnostics": "id does not match the URL",
                    "expression": [f"{rt}.id"],
                }
            )
        for issue in validation.validate(resource):
            issues.append(outcomes.issue_json(issue, "invalid"))
    if not issues:
        issues.append(
            {"severity": "information", "code": "informational", "diagnostics": "the resource is valid"}
        )
    return {"resourceType": "OperationOutcome", "issue": issues}
