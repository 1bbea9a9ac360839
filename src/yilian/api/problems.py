"""RFC 9457 problem documents for the non-FHIR endpoints, from the same category table."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from yilian.fhir.outcomes import STATUS
from yilian.kernel.errors import YilianError

PROBLEM_JSON = "application/problem+json"


def problem(
    err: YilianError, *, instance: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    status, code, title = STATUS[err.category]
    body: dict[str, Any] = {
        "type": f"https://yilian.example.cn/problems/{err.category.value}",
        "title": title,
        "status": status,
        "detail": err.message,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    reason = getattr(
        err, "reason", None
    )  # a system's machine-readable refusal (payments: "insufficient-balance")
    if isinstance(reason, str):
        body["reason"] = reason
    if len(err.issues) > 1 or err.issues[0].expression:
        body["errors"] = [{"detail": i.message, "pointer": list(i.expression)} for i in err.issues]
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)
