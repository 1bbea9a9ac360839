"""SMART App Launch for people: the authorization-code flow with PKCE (S256).

An app sends the person to ``/auth/authorize``; they sign in (staff with their one-time code)
and are sent back with a short-lived, single-use code, which the app exchanges at the token
endpoint with the PKCE verifier. Residents' tokens carry their patient context.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select

from yilian.db import UnitOfWork
from yilian.fhir.search.values import instant_to_us
from yilian.kernel import clock
from yilian.security.clients import get_client
from yilian.security.oauth import OAuthError
from yilian.security.people import principal_of
from yilian.security.principal import RESIDENT, Principal
from yilian.security.scopes import Scopes, parse_scopes
from yilian.security.tables import auth_code, user_account
from yilian.security.tokens import PEOPLE_TOKEN_LIFETIME_S, IssuedToken, issue

CODE_LIFETIME_S = 60


@dataclass(frozen=True)
class AuthorizationRequest:
    client_id: str
    client_name: str
    redirect_uri: str
    scope: str
    state: str
    code_challenge: str


def check_request(
    uow: UnitOfWork,
    *,
    client_id: str,
    redirect_uri: str,
    response_type: str,
    scope: str,
    state: str,
    code_challenge: str,
    code_challenge_method: str,
) -> AuthorizationRequest:
    """Validate an authorization request before anyone is asked to sign in."""
    client = get_client(uow, client_id)
    if client is None or not client.active:
        raise OAuthError("unauthorized_client", "unknown or revoked client")
    if redirect_uri not in client.redirect_uris:
        # Never redirect to an address the client did not register: that is how codes are stolen.
        raise OAuthError("invalid_request", "redirect_uri is not registered for this client")
    if response_type != "code":
        raise OAuthError("unsupported_response_type", "only response_type=code is supported")
    if code_challenge_method != "S256" or len(code_challenge) < 43:
        raise OAuthError(
            "invalid_request", "PKCE is required: code_challenge with code_challenge_method=S256"
        )
    if not state:
        raise OAuthError("invalid_request", "state is required")
    parse_scopes(scope)
    return AuthorizationRequest(client_id, client.name, redirect_uri, scope, state, code_challenge)


def grant_code(uow: UnitOfWork, request: AuthorizationRequest, principal: Principal) -> str:
    code = secrets.token_urlsafe(32)
    uow.conn.execute(
        auth_code.insert().values(
            code_hash=hashlib.sha256(code.encode()).hexdigest(),
            client_id=request.client_id,
            user_id=principal.user_id,
            redirect_uri=request.redirect_uri,
            scopes=request.scope,
            code_challenge=request.code_challenge,
            expires=instant_to_us(clock.now()) + CODE_LIFETIME_S * 1_000_000,
        )
    )
    return code


def take_code(uow: UnitOfWork, code: str) -> Any:
    """Remove the code and return what it stood for. Run in a transaction of its own, committed
    before the exchange is checked: a code is used up even by a failed attempt."""
    key = hashlib.sha256(code.encode()).hexdigest()
    row = uow.conn.execute(select(auth_code).where(auth_code.c.code_hash == key)).first()
    uow.conn.execute(delete(auth_code).where(auth_code.c.code_hash == key))
    return row


def exchange_code(uow: UnitOfWork, row: Any, form: dict[str, str]) -> tuple[IssuedToken, Principal]:
    """The token for a code taken by :func:`take_code`."""
    if row is None or row.expires < instant_to_us(clock.now()):
        raise OAuthError("invalid_grant", "the authorization code is invalid, used or expired")
    if form.get("client_id") != row.client_id or form.get("redirect_uri") != row.redirect_uri:
        raise OAuthError("invalid_grant", "client_id and redirect_uri must match the authorization request")
    verifier = form.get("code_verifier", "")
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    if not hmac.compare_digest(challenge, row.code_challenge):
        raise OAuthError("invalid_grant", "the PKCE code_verifier does not match the code_challenge")
    user = uow.conn.execute(select(user_account).where(user_account.c.user_id == row.user_id)).first()
    if user is None or not user.active:
        raise OAuthError("invalid_grant", "the account is no longer active")
    person = principal_of(uow, user)
    client = get_client(uow, row.client_id)
    assert client is not None
    granted = _people_scopes(parse_scopes(row.scopes), person.scopes, client.scopes, person.kind)
    if not granted.items:
        raise OAuthError(
            "invalid_scope", "none of the requested scopes is allowed for this person through this app"
        )
    principal = Principal(
        kind=person.kind,
        subject=person.subject,
        scopes=granted,
        org_id=person.org_id,
        client_id=client.client_id,
        user_id=person.user_id,
        patient_keys=person.patient_keys,
    )
    return issue(uow, principal, lifetime_s=PEOPLE_TOKEN_LIFETIME_S), principal


def _people_scopes(requested: Scopes, person: Scopes, client: Scopes, kind: str) -> Scopes:
    """What the app asked for, limited by what the person may do and what the app is registered for."""
    context = "patient" if kind == RESIDENT else "user"
    wanted = Scopes(tuple(s for s in requested.items if s.context == context), requested.extras)
    return wanted.intersect(person).intersect(client)
