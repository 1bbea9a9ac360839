"""HTTP adapters for the security system: the OAuth 2.0 token endpoint and the SMART configuration."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from yilian.api.auditing import agent_kind
from yilian.api.auth import basic_credentials, headers_of
from yilian.api.fhir_endpoint import smart_configuration
from yilian.api.problems import problem
from yilian.db import Database
from yilian.db.uow import transact
from yilian.kernel.errors import YilianError
from yilian.security.audit import AuditRecord, AuditWriter
from yilian.security.authorize import exchange_code, take_code
from yilian.security.oauth import OAuthError, public_root, token_request, token_url

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _token_record(
    client: str, ok: bool, principal: Any, request: Request, why: str | None = None
) -> AuditRecord:
    return AuditRecord(
        action="E",
        subtype="token",
        agent_kind=agent_kind(principal) if principal is not None else "system",
        agent_id=(client or "anonymous")[:128],
        outcome=0 if ok else 4,
        org_id=getattr(principal, "org_id", None),
        source_ip=request.client.host if request.client else None,
        outcome_desc=why,
        flagged=None if ok else True,
    )


def token_endpoint(  # type: ignore[no-untyped-def]
    db: Database, writer: AuditWriter | None = None, env: Mapping[str, str] | None = None
):
    # The audience a client assertion must name comes from configuration (YILIAN_BASE_URL),
    # read once: never from the request's Host header, which the caller chooses.
    expected_aud = token_url(os.environ if env is None else env)

    async def audit(rec: AuditRecord) -> None:
        if writer is not None:
            await writer.record(rec)

    async def token(request: Request) -> Response:
        if (
            request.headers.get("content-type", "").split(";")[0].strip()
            != "application/x-www-form-urlencoded"
        ):
            err = OAuthError("invalid_request", "send the token request as application/x-www-form-urlencoded")
            return JSONResponse(err.body(), status_code=400, headers=NO_STORE)
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        basic = basic_credentials(headers_of(request.scope))
        try:
            if form.get("grant_type") == "authorization_code":
                taken = await run_in_threadpool(
                    transact, db, lambda uow: take_code(uow, form.get("code", ""))
                )
                issued, _principal = await run_in_threadpool(
                    transact, db, lambda uow: exchange_code(uow, taken, form)
                )
            else:
                issued, _principal = await run_in_threadpool(
                    transact, db, lambda uow: token_request(uow, form, basic=basic, token_url=expected_aud)
                )
        except OAuthError as err:
            headers = dict(NO_STORE)
            if err.status == 401:
                headers["WWW-Authenticate"] = 'Basic realm="yilian"'
            await audit(
                _token_record(
                    form.get("client_id") or (basic[0] if basic else ""), False, None, request, err.message
                )
            )
            return JSONResponse(err.body(), status_code=err.status, headers=headers)
        except YilianError as err:
            return problem(err)
        await audit(_token_record(_principal.subject, True, _principal, request))
        body = {
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "scope": str(issued.scopes),
        }
        if issued.patient:
            body["patient"] = issued.patient
        return JSONResponse(body, headers=NO_STORE)

    return token


async def smart_config(request: Request) -> Response:
    # The endpoints the platform is configured with, the very audience the token endpoint checks.
    return JSONResponse(smart_configuration(f"{public_root(os.environ)}/fhir"))
