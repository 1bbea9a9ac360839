"""Authentication over real HTTP: open paths, bearer tokens, client secrets, signed assertions."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import select

from tests.support.audit import audits
from tests.support.server import RunningServer, database_url
from yilian.db import Database, UnitOfWork
from yilian.security.audit import AuditRow
from yilian.security.audit.tables import audit_event
from yilian.security.clients import register_client, revoke_client


def _rsa() -> tuple[Any, dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk["kid"] = uuid.uuid4().hex[:8]
    return key, jwk


@pytest.fixture(scope="module")
def keypair() -> tuple[Any, dict[str, Any]]:
    return _rsa()


@pytest.fixture(scope="module")
def jwt_client(db: Database, keypair: tuple[Any, dict[str, Any]]) -> str:
    with UnitOfWork(db, write=True) as uow:
        c, _ = register_client(
            uow,
            name="LIS of 市第一人民医院",
            org_id=None,
            scopes="system/Patient.rs system/Observation.cruds",
            jwks={"keys": [keypair[1]]},
            with_secret=False,
        )
    return c.client_id


def assertion(
    client_id: str,
    key: Any,
    kid: str,
    aud: str,
    *,
    exp_in: int = 240,
    jti: str | None = None,
    alg: str = "RS384",
) -> str:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "exp": now + exp_in,
        "jti": jti or uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def token_with(server: RunningServer, **form: str) -> httpx.Response:
    return httpx.post(
        f"{server.base}/auth/token", data={"grant_type": "client_credentials", **form}, timeout=30
    )


def test_open_paths_need_no_token(server: RunningServer) -> None:
    assert httpx.get(f"{server.base}/fhir/metadata").status_code == 200
    assert httpx.get(f"{server.base}/health").status_code == 200
    conf = httpx.get(f"{server.base}/fhir/.well-known/smart-configuration").json()
    assert conf["token_endpoint"] == f"{server.base}/auth/token"
    assert "private_key_jwt" in conf["token_endpoint_auth_methods_supported"]
    assert "permission-v2" in conf["capabilities"]
    caps = httpx.get(f"{server.base}/fhir/metadata").json()
    assert caps["rest"][0]["security"]["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"


@pytest.mark.parametrize(
    "path", ["/fhir/Patient", "/fhir/Patient/x", "/fhir/_history", "/fhir", "/fhir/Patient/x/$everything"]
)
def test_data_paths_need_a_token(server: RunningServer, path: str) -> None:
    r = httpx.get(server.base + path)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["resourceType"] == "OperationOutcome"
    bad = httpx.get(server.base + path, headers={"Authorization": "Bearer yl_not-a-token"})
    assert bad.status_code == 401


def test_client_secret_basic_and_post(server: RunningServer, db: Database) -> None:
    with UnitOfWork(db, write=True) as uow:
        c, secret = register_client(uow, name="HIS", org_id=None, scopes="system/Patient.rs")
    assert secret
    basic = httpx.post(
        f"{server.base}/auth/token", data={"grant_type": "client_credentials"}, auth=(c.client_id, secret)
    )
    assert basic.status_code == 200, basic.text
    body = basic.json()
    assert (
        body["token_type"] == "Bearer" and body["expires_in"] <= 300 and body["scope"] == "system/Patient.rs"
    )
    assert basic.headers["cache-control"] == "no-store"
    post = token_with(server, client_id=c.client_id, client_secret=secret, scope="system/Patient.r")
    assert post.status_code == 200 and post.json()["scope"] == "system/Patient.r"
    token = post.json()["access_token"]
    ok = httpx.get(f"{server.base}/fhir/Patient/nope", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 404  # authenticated; the resource just is not there
    wrong = token_with(server, client_id=c.client_id, client_secret=secret + "x")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    narrower = token_with(server, client_id=c.client_id, client_secret=secret, scope="system/Observation.rs")
    assert narrower.status_code == 400 and narrower.json()["error"] == "invalid_scope"


def test_private_key_jwt(server: RunningServer, jwt_client: str, keypair: tuple[Any, dict[str, Any]]) -> None:
    key, jwk = keypair
    aud = f"{server.base}/auth/token"
    good = assertion(jwt_client, key, jwk["kid"], aud)
    r = token_with(
        server,
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion=good,
        scope="system/Observation.rs",
    )
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "system/Observation.rs"
    replay = token_with(
        server,
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion=good,
    )
    assert replay.status_code == 401 and "already used" in replay.json()["error_description"]


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("expired", "expired"),
        ("too_far", "five minutes"),
        ("wrong_aud", "aud"),
        ("wrong_key", "signature"),
        ("iss_sub_mismatch", "iss and sub"),
        ("not_a_jwt", "not a JWT"),
    ],
)
def test_bad_assertions_are_refused(
    server: RunningServer, jwt_client: str, keypair: tuple[Any, dict[str, Any]], case: str, why: str
) -> None:
    key, jwk = keypair
    aud = f"{server.base}/auth/token"
    if case == "expired":
        token = assertion(jwt_client, key, jwk["kid"], aud, exp_in=-10)
    elif case == "too_far":
        token = assertion(jwt_client, key, jwk["kid"], aud, exp_in=3600)
    elif case == "wrong_aud":
        token = assertion(jwt_client, key, jwk["kid"], "https://elsewhere.example/token")
    elif case == "wrong_key":
        other, _ = _rsa()
        token = assertion(jwt_client, other, jwk["kid"], aud)
    elif case == "iss_sub_mismatch":
        now = int(time.time())
        token = jwt.encode(
            {"iss": jwt_client, "sub": "someone-else", "aud": aud, "exp": now + 60, "jti": uuid.uuid4().hex},
            key,
            algorithm="RS384",
            headers={"kid": jwk["kid"]},
        )
    else:
        token = "not-a-jwt"
    r = token_with(
        server,
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion=token,
    )
    assert r.status_code == 401, r.text
    assert why in r.json()["error_description"]


JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def test_the_audience_does_not_follow_the_host_header(
    server: RunningServer, jwt_client: str, keypair: tuple[Any, dict[str, Any]]
) -> None:
    """An assertion made for another server is refused even when the request claims that server's name."""
    key, jwk = keypair
    other = assertion(jwt_client, key, jwk["kid"], "http://other-node.example/auth/token")
    r = httpx.post(
        f"{server.base}/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": other,
        },
        headers={"Host": "other-node.example"},
    )
    assert r.status_code == 401, r.text
    assert f"aud must be this token endpoint: {server.base}/auth/token" in r.json()["error_description"]


def test_behind_a_proxy_the_audience_is_the_configured_public_url(
    db: Database, jwt_client: str, keypair: tuple[Any, dict[str, Any]], tmp_path: Any
) -> None:
    key, jwk = keypair
    public = "https://yilian.example.org"
    with RunningServer(
        database_url(db), env={"YILIAN_BASE_URL": f"{public}/fhir/"}, log=tmp_path / "proxied.log"
    ) as proxied:
        conf = httpx.get(f"{proxied.base}/.well-known/smart-configuration").json()
        assert conf["token_endpoint"] == f"{public}/auth/token"
        # The same at the FHIR base, whatever Host the request names: a client must not be sent
        # to give its credentials to an address the request chose.
        for host in (None, "attacker.example"):
            headers = {"Host": host} if host else {}
            at_base = httpx.get(
                f"{proxied.base}/fhir/.well-known/smart-configuration", headers=headers
            ).json()
            assert at_base == conf
        made_for_public = assertion(jwt_client, key, jwk["kid"], f"{public}/auth/token")
        ok = token_with(proxied, client_assertion_type=JWT_BEARER, client_assertion=made_for_public)
        assert ok.status_code == 200, ok.text
        # The address the server happens to be reached at is not its name.
        made_for_socket = assertion(jwt_client, key, jwk["kid"], f"{proxied.base}/auth/token")
        refused = token_with(proxied, client_assertion_type=JWT_BEARER, client_assertion=made_for_socket)
        assert refused.status_code == 401 and "aud" in refused.json()["error_description"]


def test_ec_keys_work_too(server: RunningServer, db: Database) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk["kid"] = "ec1"
    with UnitOfWork(db, write=True) as uow:
        c, _ = register_client(
            uow, name="EC client", org_id=None, scopes="system/*.rs", jwks={"keys": [jwk]}, with_secret=False
        )
    token = assertion(c.client_id, key, "ec1", f"{server.base}/auth/token", alg="ES384")
    r = token_with(
        server,
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion=token,
    )
    assert r.status_code == 200, r.text


def test_revoked_client_and_its_tokens_stop_working(server: RunningServer, db: Database) -> None:
    with UnitOfWork(db, write=True) as uow:
        c, secret = register_client(uow, name="to revoke", org_id=None, scopes="system/Patient.rs")
    token = token_with(server, client_id=c.client_id, client_secret=secret or "").json()["access_token"]
    with UnitOfWork(db, write=True) as uow:
        revoke_client(uow, c.client_id)
    time.sleep(3.2)  # the per-process token cache holds an answer for at most 3 seconds
    assert (
        httpx.get(f"{server.base}/fhir/Patient", headers={"Authorization": f"Bearer {token}"}).status_code
        == 401
    )
    assert token_with(server, client_id=c.client_id, client_secret=secret or "").status_code == 401


def test_token_endpoint_refuses_other_grants_and_bodies(server: RunningServer) -> None:
    r = httpx.post(
        f"{server.base}/auth/token", data={"grant_type": "password", "username": "x", "password": "y"}
    )
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = httpx.post(f"{server.base}/auth/token", json={"grant_type": "client_credentials"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def test_break_glass_needs_a_reason(server: RunningServer, auth: dict[str, str]) -> None:
    r = httpx.get(f"{server.base}/fhir/Patient", headers={**auth, "X-Purpose-Of-Use": "BTG"})
    assert r.status_code == 400 and "reason" in r.json()["issue"][0]["diagnostics"]
    ok = httpx.get(
        f"{server.base}/fhir/Patient",
        headers={**auth, "X-Purpose-Of-Use": "BTG", "X-Break-Glass-Reason": "patient unconscious in the ED"},
    )
    assert ok.status_code == 200


def test_token_issue_update_and_delete_are_audited(server: RunningServer, db: Database) -> None:
    with UnitOfWork(db, write=True) as uow:
        c, secret = register_client(uow, name="audited HIS", org_id=None, scopes="system/*.cruds")
    assert secret
    assert token_with(server, client_id=c.client_id, client_secret=secret + "x").status_code == 401
    issued = token_with(server, client_id=c.client_id, client_secret=secret)
    assert issued.status_code == 200
    refused, ok = [r for r in audits(db, "token") if r.agent_id == c.client_id]
    assert (refused.outcome, refused.flagged, ok.outcome, ok.flagged, ok.agent_id) == (
        4,
        True,
        0,
        False,
        c.client_id,
    )
    assert secret not in refused.content.decode() + ok.content.decode()
    h = {"Authorization": f"Bearer {issued.json()['access_token']}"}
    pid = f"audited-{uuid.uuid4().hex[:8]}"
    body = {"resourceType": "Patient", "id": pid, "name": [{"family": "孙"}]}
    assert httpx.put(f"{server.base}/fhir/Patient/{pid}", json=body, headers=h).status_code == 201
    assert (
        httpx.put(f"{server.base}/fhir/Patient/{pid}", json={**body, "gender": "male"}, headers=h).status_code
        == 200
    )
    assert httpx.delete(f"{server.base}/fhir/Patient/{pid}", headers=h).status_code in (200, 204)
    with db.engine.connect() as conn:
        rows = [
            AuditRow.of(m)
            for m in conn.execute(
                select(audit_event).where(audit_event.c.entity == f"Patient/{pid}").order_by(audit_event.c.id)
            ).mappings()
        ]
    assert [(r.action, r.subtype, r.outcome, r.agent_id, r.patient_keys) for r in rows] == [
        ("U", "update", 0, c.client_id, (pid,)),  # a PUT that creates is an update interaction
        ("U", "update", 0, c.client_id, (pid,)),
        ("D", "delete", 0, c.client_id, (pid,)),
    ]
