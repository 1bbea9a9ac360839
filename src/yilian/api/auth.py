"""Who is calling: bearer tokens (systems and apps) and session cookies (people in the portal).

Every path needs one, except the few that hold no data: the token endpoint, sign-in, the
capability statement, the SMART configuration, the OpenAPI document of /api, health checks and static portal assets.
"""

from __future__ import annotations

import base64
from urllib.parse import unquote

from starlette.types import Scope

from yilian.db import Database
from yilian.kernel.errors import Category, YilianError
from yilian.security.principal import BREAK_GLASS_PURPOSES, Principal
from yilian.security.tokens import TokenVerifier

OPEN_PATHS = frozenset(
    {
        "/",
        "/health",
        "/health/ready",
        "/auth/token",
        "/auth/login",
        "/auth/authorize",
        "/fhir/metadata",
        "/fhir/.well-known/smart-configuration",
        "/.well-known/smart-configuration",
        "/api/openapi.json",  # the JSON API's OpenAPI document: the interface, no data
    }
)
OPEN_PREFIXES = ("/static/",)
SESSION_COOKIE = "yilian_session"  # the portal's session cookie (yilian.portal.login)
PURPOSE_HEADER = "x-purpose-of-use"
REASON_HEADER = "x-break-glass-reason"


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def headers_of(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def cookies_of(headers: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            out[name] = unquote(value)
    return out


class Authenticator:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.tokens = TokenVerifier(db)

    def principal(self, headers: dict[str, str]) -> Principal:
        """The caller, or UNAUTHENTICATED (401). Break-the-glass headers are honoured here."""
        found: Principal | None = None
        auth = headers.get("authorization", "")
        if auth:
            kind, _, credential = auth.partition(" ")
            if kind.lower() != "bearer" or not credential.strip():
                raise YilianError(
                    Category.UNAUTHENTICATED,
                    "use 'Authorization: Bearer <access token>' (get one at /auth/token)",
                )
            found = self.tokens.verify(credential.strip())
            if found is None:
                raise YilianError(Category.UNAUTHENTICATED, "the access token is invalid or has expired")
        else:
            cookie = cookies_of(headers).get(SESSION_COOKIE)
            if cookie:
                from yilian.security.people import session_principal

                found = session_principal(self.db, cookie)
        if found is None:
            raise YilianError(
                Category.UNAUTHENTICATED,
                "authentication required: send a bearer token (see /auth/token) or sign in",
            )
        purpose = headers.get(PURPOSE_HEADER)
        if purpose:
            if purpose not in BREAK_GLASS_PURPOSES:
                raise YilianError(
                    Category.INVALID,
                    f"{PURPOSE_HEADER} must be one of {', '.join(sorted(BREAK_GLASS_PURPOSES))}",
                )
            reason = headers.get(REASON_HEADER, "").strip()
            if len(reason) < 10:
                raise YilianError(
                    Category.INVALID,
                    f"breaking the glass needs a stated reason ({REASON_HEADER}, at least 10 characters)",
                )
            if found.patient_keys is not None:
                raise YilianError(Category.FORBIDDEN, "residents cannot break the glass")
            found = found.with_purpose(purpose, reason)
        return found


def basic_credentials(headers: dict[str, str]) -> tuple[str, str] | None:
    auth = headers.get("authorization", "")
    kind, _, value = auth.partition(" ")
    if kind.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value.strip()).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return unquote(user), unquote(password)
