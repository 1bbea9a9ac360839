"""The one table from error category to HTTP status and FHIR issue type, and OperationOutcome.

FHIR's RESTful API defines status codes as part of the standard (they appear inside
transaction responses too), so the mapping lives with the FHIR core; the HTTP layer and the
non-FHIR APIs' problem documents use this same table.
"""

from __future__ import annotations

from typing import Any

from yilian.kernel.errors import Category, Issue, YilianError

# category -> (HTTP status, FHIR IssueType code, reason phrase)
STATUS: dict[Category, tuple[int, str, str]] = {
    Category.INVALID: (400, "invalid", "Bad Request"),
    Category.UNPROCESSABLE: (422, "processing", "Unprocessable Entity"),
    Category.NOT_FOUND: (404, "not-found", "Not Found"),
    Category.GONE: (410, "deleted", "Gone"),
    Category.CONFLICT: (409, "conflict", "Conflict"),
    Category.PRECONDITION_FAILED: (412, "conflict", "Precondition Failed"),
    Category.MULTIPLE_MATCHES: (412, "multiple-matches", "Precondition Failed"),
    Category.UNAUTHENTICATED: (401, "login", "Unauthorized"),
    Category.FORBIDDEN: (403, "forbidden", "Forbidden"),
    Category.UNSUPPORTED: (400, "not-supported", "Bad Request"),
    Category.NOT_ALLOWED: (405, "not-supported", "Method Not Allowed"),
    Category.TOO_LARGE: (413, "too-costly", "Payload Too Large"),
    Category.UNAVAILABLE: (503, "transient", "Service Unavailable"),
    Category.INTERNAL: (500, "exception", "Internal Server Error"),
}


def status_of(category: Category) -> int:
    return STATUS[category][0]


def status_line(status: int) -> str:
    """``201 Created`` as Bundle.entry.response.status wants it."""
    from http import HTTPStatus

    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def issue_json(issue: Issue, default_code: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "severity": issue.severity,
        "code": issue.code or default_code,
        "diagnostics": issue.message,
    }
    if issue.details is not None:
        system, code = issue.details
        out["details"] = {"coding": [{"system": system, "code": code}]}
    if issue.expression:
        out["expression"] = list(issue.expression)
    return out


def outcome(error: YilianError) -> dict[str, Any]:
    _status, code, _phrase = STATUS[error.category]
    return {
        "resourceType": "OperationOutcome",
        "issue": [issue_json(i, code) for i in error.issues],
    }


def information(
    message: str, *, code: str = "informational", severity: str = "information"
) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": message}],
    }


def warnings(messages: list[str]) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "warning", "code": "not-supported", "diagnostics": m} for m in messages],
    }
