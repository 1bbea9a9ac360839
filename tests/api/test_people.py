"""People: passwords, staff one-time codes, lockout, sessions, and the SMART authorization-code flow."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pyotp
import pytest
from sqlalchemy import update

from tests.support.server import RunningServer
from yilian.db import Database, UnitOfWork
from yilian.db.uow import transact
from yilian.fhir import FhirContext, FhirRequest, dispatch
from yilian.security.clients import register_client
from yilian.security.people import add_user
from yilian.security.tables import session as session_table

REDIRECT = "http://127.0.0.1:9/callback"


@pytest.fixture(scope="module")
def people(db: Database) -> dict[str, str]:
    ctx = FhirContext()
    for res in (
        {"resourceType": "Organization", "id": "hosp-1", "name": "市第一人民医院"},
        {"resourceType": "Patient", "id": "res-1", "name": [{"family": "赵", "given": ["敏"]}]},
        {"resourceType": "Patient", "id": "res-2", "name": [{"family": "钱", "given": ["静"]}]},
    ):
        transact(db, lambda uow, r=res: dispatch(uow, ctx, FhirRequest("PUT", f"{r['resourceType']}/{r['id']}", body=r)))
    with UnitOfWork(db, write=True) as uow:
        _, uri = add_user(uow, username="dr.zhou", kind="staff", password="correct horse battery", org_id="hosp-1")
        add_user(uow, username="zhao.min", kind="resident", password="my own record 2026", patient_id="res-1")
        app, _ = register_client(uow, name="掌上医院 app", org_id=None, scopes="patient/*.rs user/*.cruds", redirect_uris=(REDIRECT,), with_secret=False)
    assert uri is not None
    return {"totp": parse_qs(urlsplit(uri).query)["secret"][0], "client": app.client_id}


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def sign_in_through_app(server: RunningServer, client_id: str, username: str, password: str, otp: str = "", scope: str = "patient/*.rs") -> httpx.Response:
    verifier, challenge = pkce()
    params = {
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": scope,
        "state": "s-123", "code_challenge": challenge, "code_challenge_method": "S256",
    }
    with httpx.Client(base_url=server.base) as browser:
        page = browser.get("/auth/authorize?" + urlencode(params))
        assert page.status_code == 200 and "掌上医院 app" in page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        answer = browser.post("/auth/authorize", data={**params, "csrf": csrf, "username": username, "password": password, "otp": otp})
    if answer.status_code != 303:
        return answer
    back = urlsplit(answer.headers["location"])
    query = parse_qs(back.query)
    assert query["state"] == ["s-123"]
    return httpx.post(f"{server.base}/auth/token", data={
        "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": REDIRECT,
        "client_id": client_id, "code_verifier": verifier,
    })


def test_resident_gets_a_patient_token_for_their_own_record(server: RunningServer, people: dict[str, str]) -> None:
    r = sign_in_through_app(server, people["client"], "zhao.min", "my own record 2026")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["patient"] == "res-1" and body["scope"] == "patient/*.rs"
    h = {"Authorization": f"Bearer {body['access_token']}"}
    assert httpx.get(f"{server.base}/fhir/Patient/res-1", headers=h).status_code == 200
    assert httpx.get(f"{server.base}/fhir/Patient/res-2", headers=h).status_code == 404
    names = [e["resource"]["id"] for e in httpx.get(f"{server.base}/fhir/Patient", headers=h).json().get("entry", [])]
    assert names == ["res-1"]
    assert httpx.post(f"{server.base}/fhir/Patient", json={"resourceType": "Patient"}, headers=h).status_code == 403


def test_staff_need_their_one_time_code(server: RunningServer, people: dict[str, str]) -> None:
    no_otp = sign_in_through_app(server, people["client"], "dr.zhou", "correct horse battery", scope="user/*.rs")
    assert no_otp.status_code == 401
    code = pyotp.TOTP(people["totp"]).now()
    ok = sign_in_through_app(server, people["client"], "dr.zhou", "correct horse battery", otp=code, scope="user/*.rs")
    assert ok.status_code == 200, ok.text
    assert ok.json()["scope"] == "user/*.rs" and "patient" not in ok.json()


def test_codes_are_single_use_and_need_the_verifier(server: RunningServer, people: dict[str, str]) -> None:
    verifier, challenge = pkce()
    params = {"response_type": "code", "client_id": people["client"], "redirect_uri": REDIRECT, "scope": "patient/*.rs",
              "state": "x", "code_challenge": challenge, "code_challenge_method": "S256"}
    with httpx.Client(base_url=server.base) as browser:
        page = browser.get("/auth/authorize?" + urlencode(params))
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        answer = browser.post("/auth/authorize", data={**params, "csrf": csrf, "username": "zhao.min", "password": "my own record 2026"})
    code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": people["client"]}
    wrong = httpx.post(f"{server.base}/auth/token", data={**form, "code_verifier": "not-the-verifier"})
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    again = httpx.post(f"{server.base}/auth/token", data={**form, "code_verifier": verifier})
    assert again.status_code == 400  # the failed attempt used the code up


def test_unregistered_redirect_is_refused(server: RunningServer, people: dict[str, str]) -> None:
    _, challenge = pkce()
    r = httpx.get(f"{server.base}/auth/authorize?" + urlencode({
        "response_type": "code", "client_id": people["client"], "redirect_uri": "https://evil.example/cb",
        "scope": "patient/*.rs", "state": "x", "code_challenge": challenge, "code_challenge_method": "S256"}))
    assert r.status_code == 400


def test_portal_session_login_logout_and_lockout(server: RunningServer, people: dict[str, str], db: Database) -> None:
    with httpx.Client(base_url=server.base) as browser:
        page = browser.get("/auth/login")
        assert page.status_code == 200 and "登录" in page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        r = browser.post("/auth/login", data={"csrf": csrf, "username": "zhao.min", "password": "my own record 2026", "next": "/fhir/Patient/res-1"})
        assert r.status_code == 303 and r.headers["location"] == "/fhir/Patient/res-1"
        assert browser.get("/fhir/Patient/res-1").status_code == 200
        assert browser.get("/fhir/Patient/res-2").status_code == 404
        # An idle session ends.
        with UnitOfWork(db, write=True) as uow:
            uow.conn.execute(update(session_table).values(last_seen=0))
        assert browser.get("/fhir/Patient/res-1").status_code == 401
        missing_csrf = browser.post("/auth/login", data={"username": "zhao.min", "password": "my own record 2026"})
        assert missing_csrf.status_code == 403
    with httpx.Client(base_url=server.base) as browser:
        page = browser.get("/auth/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        for _ in range(5):
            assert browser.post("/auth/login", data={"csrf": csrf, "username": "zhao.min", "password": "wrong password!!"}).status_code == 401
        locked = browser.post("/auth/login", data={"csrf": csrf, "username": "zhao.min", "password": "my own record 2026"})
        assert locked.status_code == 401 and ("锁定" in locked.text or "locked" in locked.text)
