"""People: passwords, staff one-time codes, lockout, sessions, and the SMART authorization-code flow."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pyotp
import pytest
from sqlalchemy import select, update

from tests.support.audit import audits
from tests.support.server import RunningServer
from yilian.db import Database, UnitOfWork
from yilian.db.uow import transact
from yilian.fhir import FhirContext, FhirRequest, dispatch
from yilian.kernel.crypto import is_token
from yilian.security.clients import register_client
from yilian.security.people import add_user, revoke_user, seal_totp_secrets
from yilian.security.tables import access_token, user_account
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
        transact(
            db,
            lambda uow, r=res: dispatch(
                uow, ctx, FhirRequest("PUT", f"{r['resourceType']}/{r['id']}", body=r)
            ),
        )
    with UnitOfWork(db, write=True) as uow:
        _, uri = add_user(
            uow, username="dr.zhou", kind="staff", password="correct horse battery", org_id="hosp-1"
        )
        add_user(uow, username="zhao.min", kind="resident", password="my own record 2026", patient_id="res-1")
        app, _ = register_client(
            uow,
            name="掌上医院 app",
            org_id=None,
            scopes="patient/*.rs user/*.cruds",
            redirect_uris=(REDIRECT,),
            with_secret=False,
        )
    assert uri is not None
    return {"totp": parse_qs(urlsplit(uri).query)["secret"][0], "client": app.client_id}


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def sign_in_through_app(
    server: RunningServer,
    client_id: str,
    username: str,
    password: str,
    otp: str = "",
    scope: str = "patient/*.rs",
) -> httpx.Response:
    verifier, challenge = pkce()
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": "s-123",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    with httpx.Client(base_url=server.base) as browser:
        page = browser.get("/auth/authorize?" + urlencode(params))
        assert page.status_code == 200 and "掌上医院 app" in page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        answer = browser.post(
            "/auth/authorize",
            data={**params, "csrf": csrf, "username": username, "password": password, "otp": otp},
        )
    if answer.status_code != 303:
        return answer
    back = urlsplit(answer.headers["location"])
    query = parse_qs(back.query)
    assert query["state"] == ["s-123"]
    return httpx.post(
        f"{server.base}/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": REDIRECT,
            "client_id": client_id,
            "code_verifier": verifier,
        },
    )


def test_resident_gets_a_patient_token_for_their_own_record(
    server: RunningServer, people: dict[str, str]
) -> None:
    r = sign_in_through_app(server, people["client"], "zhao.min", "my own record 2026")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["patient"] == "res-1" and body["scope"] == "patient/*.rs"
    h = {"Authorization": f"Bearer {body['access_token']}"}
    assert httpx.get(f"{server.base}/fhir/Patient/res-1", headers=h).status_code == 200
    assert httpx.get(f"{server.base}/fhir/Patient/res-2", headers=h).status_code == 404
    names = [
        e["resource"]["id"]
        for e in httpx.get(f"{server.base}/fhir/Patient", headers=h).json().get("entry", [])
    ]
    assert names == ["res-1"]
    assert (
        httpx.post(f"{server.base}/fhir/Patient", json={"resourceType": "Patient"}, headers=h).status_code
        == 403
    )


def test_staff_need_their_one_time_code(server: RunningServer, people: dict[str, str]) -> None:
    no_otp = sign_in_through_app(
        server, people["client"], "dr.zhou", "correct horse battery", scope="user/*.rs"
    )
    assert no_otp.status_code == 401
    code = pyotp.TOTP(people["totp"]).now()
    ok = sign_in_through_app(
        server, people["client"], "dr.zhou", "correct horse battery", otp=code, scope="user/*.rs"
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["scope"] == "user/*.rs" and "patient" not in ok.json()


def test_codes_are_single_use_and_need_the_verifier(server: RunningServer, people: dict[str, str]) -> None:
    verifier, challenge = pkce()
    params = {
        "response_type": "code",
        "client_id": people["client"],
        "redirect_uri": REDIRECT,
        "scope": "patient/*.rs",
        "state": "x",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    with httpx.Client(base_url=server.base) as browser:
        page = browser.get("/auth/authorize?" + urlencode(params))
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        answer = browser.post(
            "/auth/authorize",
            data={**params, "csrf": csrf, "username": "zhao.min", "password": "my own record 2026"},
        )
    code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": people["client"],
    }
    wrong = httpx.post(f"{server.base}/auth/token", data={**form, "code_verifier": "not-the-verifier"})
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    again = httpx.post(f"{server.base}/auth/token", data={**form, "code_verifier": verifier})
    assert again.status_code == 400  # the failed attempt used the code up


def test_unregistered_redirect_is_refused(server: RunningServer, people: dict[str, str]) -> None:
    _, challenge = pkce()
    r = httpx.get(
        f"{server.base}/auth/authorize?"
        + urlencode(
            {
                "response_type": "code",
                "client_id": people["client"],
                "redirect_uri": "https://evil.example/cb",
                "scope": "patient/*.rs",
                "state": "x",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
    )
    assert r.status_code == 400


def test_portal_session_login_logout_and_lockout(
    server: RunningServer, people: dict[str, str], db: Database
) -> None:
    with httpx.Client(base_url=server.base) as browser:
        page = browser.get("/auth/login")
        assert page.status_code == 200 and "登录" in page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        r = browser.post(
            "/auth/login",
            data={
                "csrf": csrf,
                "username": "zhao.min",
                "password": "my own record 2026",
                "next": "/fhir/Patient/res-1",
            },
        )
        assert r.status_code == 303 and r.headers["location"] == "/fhir/Patient/res-1"
        assert browser.get("/fhir/Patient/res-1").status_code == 200
        assert browser.get("/fhir/Patient/res-2").status_code == 404
        # An idle session ends.
        with UnitOfWork(db, write=True) as uow:
            uow.conn.execute(update(session_table).values(last_seen=0))
        assert browser.get("/fhir/Patient/res-1").status_code == 401
        missing_csrf = browser.post(
            "/auth/login", data={"username": "zhao.min", "password": "my own record 2026"}
        )
        assert missing_csrf.status_code == 403
    with httpx.Client(base_url=server.base) as browser:
        page = browser.get("/auth/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        for _ in range(5):
            assert (
                browser.post(
                    "/auth/login", data={"csrf": csrf, "username": "zhao.min", "password": "wrong password!!"}
                ).status_code
                == 401
            )
        before = len(audits(db, "login"))
        locked = browser.post(
            "/auth/login", data={"csrf": csrf, "username": "zhao.min", "password": "my own record 2026"}
        )
        nobody = browser.post(
            "/auth/login", data={"csrf": csrf, "username": "no.such.person", "password": "my own record 2026"}
        )
        # Locked, even with the right password; and told exactly what a name nobody has is told,
        # so guessing names learns nothing. The message says when accounts lock.
        assert locked.status_code == nobody.status_code == 401
        assert error_text(locked.text) == error_text(nobody.text) and "锁定 15 分钟" in error_text(
            locked.text
        )
        # The audit log, for the operator, says why.
        why = [str(row.resource().get("outcomeDesc")) for row in audits(db, "login")[before:]]
        assert why == ["the account is locked after repeated failures", "no active account by that name"]


def error_text(page: str) -> str:
    found = re.search(r'class="error"[^>]*>([^<]+)<', page)
    assert found, page
    return found.group(1).strip()


# -- hardening: sealed second factor, one use per code, deactivation, session end, audit ----------


def portal_login(browser: httpx.Client, username: str, password: str, otp: str = "") -> httpx.Response:
    page = browser.get("/auth/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    return browser.post(
        "/auth/login",
        data={"csrf": csrf, "username": username, "password": password, "otp": otp, "next": "/fhir/metadata"},
    )


def new_staff(db: Database, username: str) -> str:
    with UnitOfWork(db, write=True) as uow:
        _, uri = add_user(
            uow, username=username, kind="staff", password="staff password 2026", org_id="hosp-1"
        )
    assert uri is not None
    return parse_qs(urlsplit(uri).query)["secret"][0]


def stored_account(db: Database, username: str) -> Any:
    with db.engine.connect() as conn:
        return conn.execute(select(user_account).where(user_account.c.username == username)).one()


def test_totp_secrets_are_sealed_and_passwords_are_argon2id(db: Database, people: dict[str, str]) -> None:
    staff = stored_account(db, "dr.zhou")
    assert is_token(staff.totp_secret) and people["totp"] not in staff.totp_secret
    assert staff.password_hash.startswith("$argon2id$")
    assert stored_account(db, "zhao.min").password_hash.startswith("$argon2id$")
    if db.is_sqlite:  # nothing of the seed in the file or its WAL either
        for suffix in ("", "-wal"):
            path = Path(str(db.url.database) + suffix)
            assert not path.exists() or people["totp"].encode() not in path.read_bytes()


def test_a_one_time_code_is_accepted_once(
    server: RunningServer, people: dict[str, str], db: Database
) -> None:
    secret = new_staff(db, "dr.wu")
    totp = pyotp.TOTP(secret)
    now = time.time()
    code = totp.at(now)
    with httpx.Client(base_url=server.base) as browser:
        assert portal_login(browser, "dr.wu", "staff password 2026", code).status_code == 303
    with httpx.Client(base_url=server.base) as browser:  # the same code again, seconds later: refused
        assert portal_login(browser, "dr.wu", "staff password 2026", code).status_code == 401
        # ... and a code from before the last one used, though still inside the clock-drift window
        assert portal_login(browser, "dr.wu", "staff password 2026", totp.at(now - 30)).status_code == 401
        # The next step's code is good (once).
        assert portal_login(browser, "dr.wu", "staff password 2026", totp.at(now + 30)).status_code == 303
    assert people  # the module's people exist (hosp-1)


def test_a_secret_stored_plain_by_an_earlier_version_works_and_is_sealed(
    server: RunningServer, db: Database, people: dict[str, str]
) -> None:
    secret = pyotp.random_base32()
    new_staff(db, "dr.legacy")
    with UnitOfWork(db, write=True) as uow:
        uow.conn.execute(
            update(user_account).where(user_account.c.username == "dr.legacy").values(totp_secret=secret)
        )
        uow.commit()
    with httpx.Client(base_url=server.base) as browser:
        assert (
            portal_login(browser, "dr.legacy", "staff password 2026", pyotp.TOTP(secret).now()).status_code
            == 303
        )
    sealed = stored_account(db, "dr.legacy").totp_secret
    assert is_token(sealed) and secret not in sealed  # the sign-in sealed it with its last step
    # What the server does at start for every plain one left.
    with UnitOfWork(db, write=True) as uow:
        uow.conn.execute(
            update(user_account).where(user_account.c.username == "dr.legacy").values(totp_secret=secret)
        )
        uow.commit()
    assert transact(db, seal_totp_secrets) == 1 and transact(db, seal_totp_secrets) == 0
    assert is_token(stored_account(db, "dr.legacy").totp_secret)


def test_a_deactivated_persons_token_stops_working_at_once(
    server: RunningServer, people: dict[str, str], db: Database
) -> None:
    new_resident(db, "sun.li")
    token = sign_in_through_app(server, people["client"], "sun.li", "resident password 1").json()[
        "access_token"
    ]
    h = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{server.base}/fhir/Patient/res-2", headers=h).status_code == 200
    with UnitOfWork(db, write=True) as uow:  # deactivated by any means: no wait for a cache
        uow.conn.execute(update(user_account).where(user_account.c.username == "sun.li").values(active=False))
        uow.commit()
    assert httpx.get(f"{server.base}/fhir/Patient/res-2", headers=h).status_code == 401
    with UnitOfWork(db, write=True) as uow:
        uow.conn.execute(update(user_account).where(user_account.c.username == "sun.li").values(active=True))
        uow.commit()
    assert httpx.get(f"{server.base}/fhir/Patient/res-2", headers=h).status_code == 200
    # `yilian user revoke` also ends the account's tokens and sessions.
    with UnitOfWork(db, write=True) as uow:
        revoke_user(uow, "sun.li")
        uow.commit()
    assert httpx.get(f"{server.base}/fhir/Patient/res-2", headers=h).status_code == 401
    with db.engine.connect() as conn:
        assert (
            conn.execute(
                select(access_token).where(access_token.c.user_id == stored_account(db, "sun.li").user_id)
            ).first()
            is None
        )


def new_resident(db: Database, username: str) -> None:
    with UnitOfWork(db, write=True) as uow:
        add_user(uow, username=username, kind="resident", password="resident password 1", patient_id="res-2")


def test_a_session_ends_at_its_absolute_expiry_however_busy(
    server: RunningServer, people: dict[str, str], db: Database
) -> None:
    new_resident(db, "zhou.yi")
    with httpx.Client(base_url=server.base) as browser:
        assert portal_login(browser, "zhou.yi", "resident password 1").status_code == 303
        assert browser.get("/fhir/Patient/res-2").status_code == 200
        cookie = browser.cookies["yilian_session"]
        key = hashlib.sha256(cookie.encode()).hexdigest()
        now_us = int(time.time() * 1_000_000)
        with UnitOfWork(db, write=True) as uow:  # in use a second ago, but started 12 hours ago
            uow.conn.execute(
                update(session_table)
                .where(session_table.c.session_hash == key)
                .values(
                    created=now_us - 12 * 3600 * 1_000_000, last_seen=now_us - 1_000_000, expires=now_us - 1
                )
            )
            uow.commit()
        assert browser.get("/fhir/Patient/res-2").status_code == 401


def test_sign_ins_are_audited(server: RunningServer, people: dict[str, str], db: Database) -> None:
    new_resident(db, "wang.xin")
    before = len(audits(db, "login"))
    with httpx.Client(base_url=server.base) as browser:
        assert portal_login(browser, "wang.xin", "wrong password!!").status_code == 401
        assert portal_login(browser, "wang.xin", "resident password 1").status_code == 303
    failed, ok = audits(db, "login")[before:]
    assert (failed.agent_id, failed.action, failed.outcome, failed.flagged) == ("wang.xin", "E", 4, True)
    assert (ok.agent_id, ok.action, ok.outcome, ok.flagged) == ("wang.xin", "E", 0, False)
    assert "resident password 1" not in ok.content.decode() + failed.content.decode()
