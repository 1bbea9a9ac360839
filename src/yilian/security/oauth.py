"""The OAuth 2.0 token endpoint's logic: client credentials with a secret or a signed JWT
assertion (SMART Backend Services, ``private_key_jwt``), independent of HTTP."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import jwt
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from yilian.db import UnitOfWork
from yilian.fhir.search.values import instant_to_us
from yilian.kernel import clock
from yilian.kernel.errors import Category, YilianError
from yilian.security.clients import Client, check_secret, get_client
from yilian.security.principal import SYSTEM, Principal
from yilian.security.scopes import Scopes, parse_scopes
from yilian.security.tables import assertion_jti
from yilian.security.tokens import IssuedToken, issue

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME_S = 300  # SMART: exp no more than five minutes in the future
ALGORITHMS = ["RS384", "ES384", "RS256", "ES256"]
BASE_URL_VAR = "YILIAN_BASE_URL"
DEFAULT_BASE_URL = "http://localhost:8080/fhir"
TOKEN_PATH = "/auth/token"


def public_root(env: Mapping[str, str]) -> str:
    """The platform's public root URL, without a trailing slash, from configuration only.

    ``YILIAN_BASE_URL`` is the deployment's public FHIR base (``https://yilian.example.org/fhir``,
    as the payments publisher and the exchange write links with); the root is that without
    ``/fhir``. ``yilian serve`` sets it to the address it listens on when it is not configured.
    Never derived from a request: the Host header is the client's to choose, so an audience
    taken from it would accept an assertion made for another server.
    """
    base = (env.get(BASE_URL_VAR) or DEFAULT_BASE_URL).strip().rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise YilianError(
            Category.INVALID,
            f"{BASE_URL_VAR} must be the public http(s) URL of the FHIR base, such as "
            "https://yilian.example.org/fhir",
        )
    return base.removesuffix("/fhir")


def token_url(env: Mapping[str, str]) -> str:
    """The token endpoint's public URL: the one audience a client assertion must name."""
    return public_root(env) + TOKEN_PATH


class OAuthError(YilianError):
    """An error the token endpoint reports in RFC 6749 form (``error``, ``error_description``)."""

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        category = Category.UNAUTHENTICATED if status == 401 else Category.INVALID
        super().__init__(category, description)
        self.error = error
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.message}


def token_request(
    uow: UnitOfWork,
    form: dict[str, str],
    *,
    basic: tuple[str, str] | None,
    token_url: str,
) -> tuple[IssuedToken, Principal]:
    grant = form.get("grant_type")
    if grant != "client_credentials":
        raise OAuthError(
            "unsupported_grant_type",
            f"grant_type {grant!r} is not supported here; use client_credentials"
            + (" (people sign in through /auth/authorize)" if grant == "password" else ""),
        )
    client = _authenticate_client(uow, form, basic, token_url)
    scopes = _granted_scopes(client, form.get("scope"))
    principal = Principal(
        kind=SYSTEM, subject=client.client_id, scopes=scopes, org_id=client.org_id, client_id=client.client_id
    )
    return issue(uow, principal), principal


def _authenticate_client(
    uow: UnitOfWork, form: dict[str, str], basic: tuple[str, str] | None, token_url: str
) -> Client:
    assertion = form.get("client_assertion")
    if assertion is not None:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise OAuthError("invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}")
        return _verify_assertion(uow, assertion, token_url)
    if basic is not None:
        client_id, secret = basic
    else:
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
    if not client_id or not secret:
        raise OAuthError(
            "invalid_client",
            "client authentication is required (HTTP Basic, client_secret, or a signed client_assertion)",
            status=401,
        )
    client = get_client(uow, client_id)
    if client is None or not client.active or not check_secret(client, uow, secret):
        raise OAuthError("invalid_client", "unknown client, revoked client, or wrong secret", status=401)
    return client


def _verify_assertion(uow: UnitOfWork, assertion: str, token_url: str) -> Client:
    try:
        unverified = jwt.decode(assertion, options={"verify_signature": False})
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError as exc:
        raise OAuthError("invalid_client", f"the client assertion is not a JWT: {exc}", status=401) from None
    client_id = unverified.get("iss")
    if not isinstance(client_id, str) or unverified.get("sub") != client_id:
        raise OAuthError(
            "invalid_client", "the assertion's iss and sub must both be the client id", status=401
        )
    client = get_client(uow, client_id)
    if client is None or not client.active or client.jwks is None:
        raise OAuthError(
            "invalid_client", "unknown client, revoked client, or no public key registered", status=401
        )
    key = _key_for(client.jwks, header)
    now = instant_to_us(clock.now()) // 1_000_000
    try:
        claims: dict[str, Any] = jwt.decode(
            assertion,
            key=key,
            algorithms=ALGORITHMS,
            audience=token_url,
            options={"require": ["exp", "iss", "sub", "aud", "jti"]},
            leeway=0,
        )
    except jwt.InvalidAudienceError:
        raise OAuthError(
            "invalid_client", f"the assertion's aud must be this token endpoint: {token_url}", status=401
        ) from None
    except jwt.ExpiredSignatureError:
        raise OAuthError("invalid_client", "the assertion has expired", status=401) from None
    except jwt.InvalidSignatureError:
        raise OAuthError(
            "invalid_client",
            "the assertion's signature does not verify with the client's registered key",
            status=401,
        ) from None
    except jwt.PyJWTError as exc:
        raise OAuthError("invalid_client", f"the assertion is not acceptable: {exc}", status=401) from None
    if int(claims["exp"]) > now + MAX_ASSERTION_LIFETIME_S:
        raise OAuthError("invalid_client", "the assertion's exp is more than five minutes ahead", status=401)
    _remember_jti(uow, client.client_id, str(claims["jti"]), int(claims["exp"]))
    return client


def _key_for(jwks: dict[str, Any], header: dict[str, Any]) -> Any:
    keys = [k for k in jwks.get("keys", []) if isinstance(k, dict)]
    kid = header.get("kid")
    if kid is not None:
        keys = [k for k in keys if k.get("kid") == kid]
    if not keys:
        raise OAuthError("invalid_client", "no registered key matches the assertion's kid", status=401)
    try:
        return jwt.PyJWK.from_dict(keys[0]).key
    except jwt.PyJWTError as exc:
        raise OAuthError("invalid_client", f"the registered key cannot be used: {exc}", status=401) from None


def _remember_jti(uow: UnitOfWork, client_id: str, jti: str, exp: int) -> None:
    now_us = instant_to_us(clock.now())
    uow.conn.execute(delete(assertion_jti).where(assertion_jti.c.expires < now_us))
    nested = uow.conn.begin_nested()
    try:
        uow.conn.execute(assertion_jti.insert().values(client_id=client_id, jti=jti, expires=exp * 1_000_000))
    except IntegrityError:
        nested.rollback()
        raise OAuthError("invalid_client", "this assertion (jti) was already used", status=401) from None
    nested.commit()


def _granted_scopes(client: Client, requested: str | None) -> Scopes:
    if not requested:
        return client.scopes
    try:
        wanted = parse_scopes(requested)
    except YilianError as err:
        raise OAuthError("invalid_scope", err.message) from None
    granted = wanted.intersect(client.scopes)
    if not granted.items:
        raise OAuthError(
            "invalid_scope", f"none of the requested scopes ({requested}) is registered for this client"
        )
    return granted


def public_jwks(text: str) -> dict[str, Any]:
    """A JWKS from a file's text: a JWKS, a single JWK, or a PEM public key."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        key = serialization.load_pem_public_key(text.encode())
        if isinstance(key, rsa.RSAPublicKey):
            return {"keys": [json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))]}
        if isinstance(key, ec.EllipticCurvePublicKey):
            return {"keys": [json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))]}
        raise YilianError(Category.INVALID, "only RSA and EC public keys are supported for client assertions")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise YilianError(
            Category.INVALID, "the key file is neither a JWKS, a JWK nor a PEM public key"
        ) from None
    if isinstance(data, dict) and "keys" in data:
        return data
    if isinstance(data, dict) and "kty" in data:
        return {"keys": [data]}
    raise YilianError(Category.INVALID, "the key file is neither a JWKS, a JWK nor a PEM public key")
