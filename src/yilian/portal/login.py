"""Signing in and out, and the SMART authorization page, for people.

Sessions are cookies (HttpOnly, SameSite=Lax) naming a server-side session; forms carry a
double-submit CSRF token. The same page serves ``/auth/authorize``: after signing in, the
person is sent back to the app with a single-use code.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from yilian.db import Database, UnitOfWork
from yilian.db.uow import transact
from yilian.kernel.errors import Category, YilianError
from yilian.portal.i18n import language, translator
from yilian.security.audit import AuditRecord, AuditWriter
from yilian.security.authorize import AuthorizationRequest, check_request, grant_code
from yilian.security.oauth import OAuthError
from yilian.security.people import (
    LOCKOUT_S,
    MAX_FAILURES,
    LoginRefused,
    attempt_login,
    end_session,
    session_principal,
    start_session,
)
from yilian.security.principal import RESIDENT, Principal

SESSION_COOKIE = "yilian_session"
CSRF_COOKIE = "yilian_csrf"
LANG_COOKIE = "yilian_lang"
TEMPLATES = Environment(
    loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
    autoescape=select_autoescape(["html"]),
)
AUTHORIZE_FIELDS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "aud",
)


def lang_of(request: Request) -> str:
    """The person's language: asked for (``?lang=``), remembered (cookie), or the browser's."""
    return language(
        request.headers.get("accept-language"),
        request.query_params.get("lang") or request.cookies.get(LANG_COOKIE),
    )


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A portal page in the person's language, with the form token and language cookies."""
    lang = lang_of(request)
    csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
    query = urlencode([(k, v) for k, v in request.query_params.items() if k != "lang"])
    html = TEMPLATES.get_template(template).render(
        t=translator(lang), lang=lang, csrf=csrf, query=query, **context
    )
    response = HTMLResponse(html, status_code=status)
    secure = request.url.scheme == "https"
    response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict", secure=secure)
    response.set_cookie(LANG_COOKIE, lang, samesite="lax", secure=secure)
    return response


async def _form(request: Request) -> dict[str, str]:
    from urllib.parse import parse_qsl

    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
    if not form.get("csrf") or form.get("csrf") != request.cookies.get(CSRF_COOKIE):
        raise YilianError(Category.FORBIDDEN, "the form has expired; reload the page and try again")
    return form


def _login_record(
    username: str,
    result: object,
    request: Request,
    subtype: str = "login",
    principal: Principal | None = None,
) -> AuditRecord:
    """The sign-in's AuditEvent; a refusal says why (a locked account, an unknown name), which
    the person signing in is not told."""
    ok = not isinstance(result, YilianError)
    return AuditRecord(
        action="E",
        subtype=subtype,
        agent_kind="patient" if principal is not None and principal.kind == RESIDENT else "user",
        agent_id=(username or "anonymous")[:128],
        outcome=0 if ok else 4,
        org_id=principal.org_id if principal is not None else None,
        source_ip=request.client.host if request.client else None,
        flagged=None if ok else True,
        outcome_desc=result.why if isinstance(result, LoginRefused) else None,
    )


def routes(db: Database, writer: AuditWriter | None = None) -> list[Route]:
    async def audit(rec: AuditRecord) -> None:
        if writer is not None:
            await writer.record(rec)

    def who(principal: Principal) -> str:
        return principal.subject

    async def login_page(request: Request) -> Response:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            principal = await run_in_threadpool(session_principal, db, cookie)
            if principal is not None:
                t = translator(lang_of(request))
                role = (
                    t("resident")
                    if principal.kind == RESIDENT
                    else f"{t('institution')}: {principal.org_id or t('operator')}"
                )
                return page(
                    request,
                    "signed_in.html",
                    who=who(principal),
                    role=role,
                    resident=principal.kind == RESIDENT,
                )
        return page(
            request,
            "login.html",
            action="/auth/login",
            hidden=[("next", request.query_params.get("next", "/"))],
        )

    async def login(request: Request) -> Response:
        t = translator(lang_of(request))
        try:
            form = await _form(request)
        except YilianError:
            return page(request, "login.html", 403, action="/auth/login", hidden=[], error=t("form_expired"))

        def work(uow: UnitOfWork) -> str | YilianError:
            principal = attempt_login(
                uow,
                username=form.get("username", ""),
                password=form.get("password", ""),
                otp=form.get("otp") or None,
            )
            return principal if isinstance(principal, YilianError) else start_session(uow, principal)

        token = await run_in_threadpool(transact, db, work)
        await audit(_login_record(form.get("username", ""), token, request))
        if isinstance(token, YilianError):
            message = t("failed", n=str(MAX_FAILURES), minutes=str(LOCKOUT_S // 60))
            return page(
                request,
                "login.html",
                401,
                action="/auth/login",
                hidden=[("next", form.get("next", "/"))],
                error=message,
                username=form.get("username"),
            )
        target = form.get("next") or "/"
        if not target.startswith("/") or target.startswith("//"):
            target = "/"  # never an open redirect
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE, token, httponly=True, samesite="lax", secure=request.url.scheme == "https"
        )
        return response

    async def logout(request: Request) -> Response:
        try:
            await _form(request)
        except YilianError:
            return RedirectResponse("/auth/login", status_code=303)
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            await run_in_threadpool(transact, db, lambda uow: end_session(uow, cookie))
        response = RedirectResponse("/auth/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    def _checked(params: dict[str, str]) -> AuthorizationRequest:
        return transact(
            db,
            lambda uow: check_request(
                uow,
                client_id=params.get("client_id", ""),
                redirect_uri=params.get("redirect_uri", ""),
                response_type=params.get("response_type", ""),
                scope=params.get("scope", ""),
                state=params.get("state", ""),
                code_challenge=params.get("code_challenge", ""),
                code_challenge_method=params.get("code_challenge_method", ""),
            ),
            write=False,
        )

    def _refused(request: Request, err: OAuthError) -> HTMLResponse:
        return page(
            request,
            "error.html",
            err.status,
            message=f"{err.error}: {err.message}",
            help="cannot_sign_in_help",
        )

    async def authorize_page(request: Request) -> Response:
        params = {k: request.query_params.get(k, "") for k in AUTHORIZE_FIELDS}
        try:
            req = await run_in_threadpool(_checked, params)
        except OAuthError as err:
            return _refused(request, err)
        t = translator(lang_of(request))
        return page(
            request,
            "login.html",
            action="/auth/authorize",
            hidden=[(k, v) for k, v in params.items() if v],
            intro=t("authorize_intro", app=req.client_name),
            scopes=req.scope.split(),
        )

    async def authorize(request: Request) -> Response:
        t = translator(lang_of(request))
        try:
            form = await _form(request)
        except YilianError:
            return page(request, "error.html", 403, message=t("form_expired"))
        params = {k: form.get(k, "") for k in AUTHORIZE_FIELDS}
        try:
            req = await run_in_threadpool(_checked, params)
        except OAuthError as err:
            return _refused(request, err)

        def work(uow: UnitOfWork) -> str | YilianError:
            principal = attempt_login(
                uow,
                username=form.get("username", ""),
                password=form.get("password", ""),
                otp=form.get("otp") or None,
            )
            return principal if isinstance(principal, YilianError) else grant_code(uow, req, principal)

        code = await run_in_threadpool(transact, db, work)
        await audit(_login_record(form.get("username", ""), code, request))
        if isinstance(code, YilianError):
            return page(
                request,
                "login.html",
                401,
                action="/auth/authorize",
                hidden=[(k, v) for k, v in params.items() if v],
                intro=t("authorize_intro", app=req.client_name),
                scopes=req.scope.split(),
                error=t("failed", n=str(MAX_FAILURES), minutes=str(LOCKOUT_S // 60)),
                username=form.get("username"),
            )
        sep = "&" if "?" in req.redirect_uri else "?"
        return RedirectResponse(
            f"{req.redirect_uri}{sep}{urlencode({'code': code, 'state': req.state})}", status_code=303
        )

    return [
        Route("/auth/login", login_page, methods=["GET"]),
        Route("/auth/login", login, methods=["POST"]),
        Route("/auth/logout", logout, methods=["POST"]),
        Route("/auth/authorize", authorize_page, methods=["GET"]),
        Route("/auth/authorize", authorize, methods=["POST"]),
    ]
