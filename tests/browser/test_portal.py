"""The portal in a real browser on a phone screen: Chinese first, English on request, sign-in for
residents and (with their one-time code) staff, sign-out, the lockout warning, and an app's
sign-in (SMART authorization code with PKCE) completed by a person at the consent page.

What the HTTP tests (tests/api/test_people.py) cannot see is checked here: that the pages are
laid out for a phone, that a real browser's form posts, cookies and redirects carry the session
and the CSRF token, and that what a person reads is in their language.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pyotp
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route

from tests.integration.payments.conftest import CardDesk
from tests.support.server import RunningServer
from yilian import payments
from yilian.db import Database, UnitOfWork
from yilian.db.uow import transact
from yilian.fhir import FhirContext, FhirRequest, dispatch
from yilian.security.clients import register_client
from yilian.security.people import add_user

CALLBACK = "http://127.0.0.1:9/callback"  # nothing listens: the browser's request is caught


@pytest.fixture(scope="module")
def people(db: Database) -> dict[str, str]:
    ctx = FhirContext()
    for res in (
        {"resourceType": "Organization", "id": "hosp-b", "name": "湖州市第一人民医院"},
        {"resourceType": "Patient", "id": "pat-b1", "name": [{"family": "孙", "given": ["悦"]}]},
        {"resourceType": "Patient", "id": "pat-b2", "name": [{"family": "李", "given": ["华"]}]},
    ):
        transact(
            db,
            lambda uow, r=res: dispatch(
                uow, ctx, FhirRequest("PUT", f"{r['resourceType']}/{r['id']}", body=r)
            ),
        )
    with UnitOfWork(db, write=True) as uow:
        _, uri = add_user(uow, username="dr.wu", kind="staff", password="staff secret 2026!", org_id="hosp-b")
        add_user(
            uow, username="sun.yue", kind="resident", password="sun yue record 2026", patient_id="pat-b1"
        )
        add_user(uow, username="li.hua", kind="resident", password="li hua record 2026", patient_id="pat-b2")
        # Sun Yue's card has been topped up and used once (a self-paid lunch at the canteen).
        card_no = CardDesk().issue(uow, "pat-b1")
        payments.top_up(uow, card_no=card_no, amount_fen=20_000, channel="wechat", org="hosp-b")
        payments.charge(
            uow,
            card_no=card_no,
            org="hosp-b",
            department="canteen",
            items=[payments.Item("ST-01", "职工食堂午餐", "canteen", 1_850, 1)],
        )
        app, _ = register_client(
            uow,
            name="掌上医院",
            org_id=None,
            scopes="patient/*.rs",
            redirect_uris=(CALLBACK,),
            with_secret=False,
        )
    assert uri is not None
    return {"totp": parse_qs(urlsplit(uri).query)["secret"][0], "app": app.client_id}


def fits_the_screen(page: Page) -> None:
    """Nothing wider than the phone (no sideways scrolling), and every control big enough to tap."""
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than the screen"
    width = page.evaluate("window.innerWidth")
    for control in page.locator("input:not([type=hidden]), button").all():
        box = control.bounding_box()
        assert box is not None and box["height"] >= 40, box
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, box


def sign_in(page: Page, username: str, password: str, otp: str = "") -> None:
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码", exact=True).fill(password)
    if otp:
        page.get_by_label("动态验证码（医护人员）").fill(otp)
    page.get_by_role("button", name="登录").click()


def test_the_sign_in_page_is_chinese_first_and_made_for_a_phone(page: Page, people: dict[str, str]) -> None:
    page.goto("/auth/login")
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    assert page.get_by_role("heading").inner_text() == "登录"
    for label in ("用户名", "密码", "动态验证码（医护人员）"):
        assert page.get_by_label(label, exact=True).is_visible()
    fits_the_screen(page)
    # English on request, and it stays chosen on the next visit.
    page.get_by_role("link", name="English").click()
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_role("heading").inner_text() == "Sign in"
    assert page.get_by_label("One-time code (staff)").is_visible()
    fits_the_screen(page)
    page.goto("/auth/login")
    assert page.get_by_role("heading").inner_text() == "Sign in"
    page.get_by_role("link", name="中文").click()
    assert page.get_by_role("heading").inner_text() == "登录"


def test_a_browser_that_asks_for_english_gets_english(browser: Browser, server: RunningServer) -> None:
    context = browser.new_context(
        base_url=server.base, locale="en-GB", viewport={"width": 390, "height": 844}
    )
    try:
        page = context.new_page()
        page.goto("/auth/login")
        assert page.get_by_role("heading").inner_text() == "Sign in"
    finally:
        context.close()


def test_a_resident_signs_in_sees_only_their_record_and_signs_out(
    phone: BrowserContext, page: Page, people: dict[str, str]
) -> None:
    page.goto("/auth/login?next=/fhir/metadata")
    sign_in(page, "sun.yue", "sun yue record 2026")
    assert urlsplit(page.url).path == "/fhir/metadata"  # back where the sign-in was asked for
    page.goto("/auth/login")  # signed in: the page says who, and offers to sign out
    assert page.get_by_role("heading").inner_text() == "已登录 sun.yue"
    assert page.get_by_text("居民").is_visible()
    fits_the_screen(page)
    # Their card wallet, one tap away: the balance and what moved it, on the phone's width.
    page.get_by_role("link", name="我的一卡通").click()
    assert urlsplit(page.url).path == "/portal/wallet"
    assert page.get_by_role("heading", level=1).inner_text() == "我的一卡通"
    assert page.locator(".balance strong").inner_text() == "¥181.50"
    assert page.locator(".movements tbody tr").count() == 2
    movements = page.locator(".movements").inner_text()
    assert "-¥18.50" in movements and "湖州市第一人民医院 · canteen" in movements
    fits_the_screen(page)
    page.go_back()
    # The session cookie is the browser's key to the record: their own, and nobody else's.
    own = phone.request.get("/fhir/Patient/pat-b1")
    assert own.status == 200 and own.json()["id"] == "pat-b1"
    assert phone.request.get("/fhir/Patient/pat-b2").status == 404
    page.get_by_role("button", name="退出登录").click()
    assert page.get_by_role("heading").inner_text() == "登录"
    assert phone.request.get("/fhir/Patient/pat-b1").status == 401


def test_staff_cannot_sign_in_without_their_one_time_code(page: Page, people: dict[str, str]) -> None:
    page.goto("/auth/login")
    sign_in(page, "dr.wu", "staff secret 2026!")
    alert = page.get_by_role("alert")
    assert "用户名、密码或验证码错误" in alert.inner_text()
    assert page.get_by_label("用户名").input_value() == "dr.wu"  # kept, so only the code is typed again
    fits_the_screen(page)
    page.get_by_label("密码", exact=True).fill("staff secret 2026!")
    page.get_by_label("动态验证码（医护人员）").fill(pyotp.TOTP(people["totp"]).now())
    page.get_by_role("button", name="登录").click()
    page.goto("/auth/login")
    assert page.get_by_role("heading").inner_text() == "已登录 dr.wu"
    assert page.get_by_text("机构: hosp-b").is_visible()


def test_repeated_failures_lock_the_account_and_the_page_says_when(
    page: Page, people: dict[str, str]
) -> None:
    page.goto("/auth/login?lang=en")
    for _ in range(5):
        page.get_by_label("User name").fill("li.hua")
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Sign in").click()
        assert "Wrong user name, password or one-time code" in page.get_by_role("alert").inner_text()
    page.get_by_label("Password").fill("li hua record 2026")  # the right one, too late
    page.get_by_role("button", name="Sign in").click()
    assert "locked for 15 minutes" in page.get_by_role("alert").inner_text()


def test_an_app_gets_a_residents_token_through_the_consent_page(
    phone: BrowserContext, page: Page, server: RunningServer, people: dict[str, str]
) -> None:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    params = {
        "response_type": "code",
        "client_id": people["app"],
        "redirect_uri": CALLBACK,
        "scope": "patient/*.rs",
        "state": "st-42",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    landed: list[str] = []

    def catch(route: Route) -> None:
        landed.append(route.request.url)
        route.fulfill(status=200, body="ok")

    page.route(f"{CALLBACK}*", catch)
    page.goto("/auth/authorize?" + urlencode(params))
    assert "应用“掌上医院”请求访问您的数据" in page.locator(".intro").inner_text()
    assert page.locator(".scopes code").all_inner_texts() == ["patient/*.rs"]
    fits_the_screen(page)
    sign_in(page, "sun.yue", "sun yue record 2026")
    page.wait_for_url(f"{CALLBACK}*")
    (url,) = landed
    query = parse_qs(urlsplit(url).query)
    assert query["state"] == ["st-42"]
    token = httpx.post(
        f"{server.base}/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": CALLBACK,
            "client_id": people["app"],
            "code_verifier": verifier,
        },
    )
    assert token.status_code == 200, token.text
    assert token.json()["patient"] == "pat-b1"


def test_a_broken_app_link_gets_a_readable_page(page: Page, people: dict[str, str]) -> None:
    response = page.goto(
        "/auth/authorize?" + urlencode({"client_id": "no-such-app", "response_type": "code"})
    )
    assert response is not None and response.status == 400
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    assert page.get_by_role("heading").inner_text() == "无法登录"
    assert page.get_by_role("alert").inner_text() == "unauthorized_client: unknown or revoked client"
    assert "返回该应用" in page.locator(".intro").inner_text()
    fits_the_screen(page)
    page.get_by_role("link", name="English").click()
    assert page.get_by_role("heading").inner_text() == "Cannot sign in"


def test_the_front_page_fits_a_phone(page: Page) -> None:
    page.goto("/")
    assert "医联 Yilian" in page.get_by_role("heading", level=1).inner_text()
    fits_the_screen(page)


def test_an_expired_consent_form_says_so_and_grants_nothing(
    phone: BrowserContext, page: Page, people: dict[str, str]
) -> None:
    params = {
        "response_type": "code",
        "client_id": people["app"],
        "redirect_uri": CALLBACK,
        "scope": "patient/*.rs",
        "state": "st-7",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    }
    page.goto("/auth/authorize?" + urlencode(params))
    phone.clear_cookies()  # the form's CSRF cookie is gone (a new browser session, a long wait)
    sign_in(page, "sun.yue", "sun yue record 2026")
    assert page.get_by_role("heading").inner_text() == "无法登录"
    assert page.get_by_role("alert").inner_text() == "页面已过期，请刷新后重试。"
    assert page.locator(".intro").count() == 0  # nothing about a broken app link: the app did no wrong
    assert urlsplit(page.url).netloc != urlsplit(CALLBACK).netloc  # no code went back to the app
