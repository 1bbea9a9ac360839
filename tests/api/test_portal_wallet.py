"""A resident's own card wallet on the portal (我的一卡通), through a running server: their balance
and movements only, nothing for staff, a sign-in first, every view audited."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp
import pytest

from tests.integration.payments.builders import make_coverage, make_patient, make_region
from tests.integration.payments.conftest import CardDesk
from tests.integration.security.lookalikes import ID_M, patient, put
from tests.integration.security.test_parent_links import related
from tests.support.audit import audits
from tests.support.server import RunningServer
from yilian import payments
from yilian.db import Database, UnitOfWork
from yilian.kernel import clock
from yilian.security.people import add_user

PASSWORD = "my wallet password 1"


@pytest.fixture(scope="module")
def residents(db: Database) -> dict[str, str]:
    """Two residents with cards; the first has topped up and paid."""
    desk = CardDesk()
    # In the year of the shipped policies, so that the charge is reimbursed.
    with clock.running_from(dt.datetime(2026, 6, 15, 2, 0, tzinfo=dt.UTC)), UnitOfWork(db, write=True) as uow:
        region = make_region(uow)
        theirs = make_patient(uow, family="李", given="强")
        other_card = desk.issue(uow, theirs)
        payments.top_up(uow, card_no=other_card, amount_fen=77_700, channel="cash", org=region.city_hospital)
        # A son on her record (a link the hospital wrote): his card too, topped up by her.
        put(
            uow,
            {**patient("sun-mother", ID_M, birth="1985-03-01"), "name": [{"family": "孙", "given": ["丽"]}]},
        )
        put(
            uow,
            {**patient("sun-son", None, birth="2019-09-01"), "name": [{"family": "孙", "given": ["小宝"]}]},
        )
        put(uow, related("rp-son", "sun-son", ID_M))
        son_card = desk.issue(uow, "sun-son")
        payments.top_up(uow, card_no=son_card, amount_fen=3_300, channel="cash", org=region.township_centre)
        add_user(uow, username="sun.li", kind="resident", password=PASSWORD, patient_id="sun-mother")
        make_coverage(uow, patient_id="sun-mother", payor_org=region.insurer, scheme="ncms")
        mine_card = desk.issue(uow, "sun-mother")
        payments.top_up(
            uow, card_no=mine_card, amount_fen=50_000, channel="wechat", org=region.township_centre
        )
        payments.charge(
            uow,
            card_no=mine_card,
            org=region.township_centre,
            department="pharmacy",
            items=[payments.Item("YP-0001", "阿莫西林胶囊", "drug", 10_000, 1)],  # NCMS pays 60% there
        )
        add_user(uow, username="li.qiang", kind="resident", password=PASSWORD, patient_id=theirs)
        _, uri = add_user(
            uow, username="dr.wu", kind="staff", password=PASSWORD, org_id=region.township_centre
        )
    assert uri is not None
    return {
        "mine": "sun-mother",
        "son": "sun-son",
        "theirs": theirs,
        "totp": parse_qs(urlsplit(uri).query)["secret"][0],
    }


@contextmanager
def signed_in(server: RunningServer, username: str, otp: str = "") -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base, timeout=30) as browser:
        yield _sign_in(browser, username, otp)


def _sign_in(browser: httpx.Client, username: str, otp: str) -> httpx.Client:
    page = browser.get("/auth/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    done = browser.post(
        "/auth/login",
        data={"csrf": csrf, "username": username, "password": PASSWORD, "otp": otp, "next": "/auth/login"},
    )
    assert done.status_code == 303, done.text
    return browser


def test_a_resident_sees_their_own_wallet_and_movements(
    server: RunningServer, residents: dict[str, str], db: Database
) -> None:
    with signed_in(server, "sun.li") as browser:
        home = browser.get("/auth/login")
        assert 'href="/portal/wallet"' in home.text
        page = browser.get("/portal/wallet")
        assert page.status_code == 200, page.text
        text = page.text
        assert "我的一卡通" in text and "孙丽" in text
        # ¥500.00 in, ¥100.00 charged, NCMS paid ¥60.00 at a township centre: ¥40.00 out.
        assert "¥460.00" in text and "+¥500.00" in text and "-¥40.00" in text
        assert "充值" in text and "诊间支付" in text
        # Where, and what the whole bill was and who paid the rest of it.
        assert "织里镇卫生院 · pharmacy" in text and "费用 ¥100.00 · 医保支付 ¥60.00" in text
        assert "李强" not in text and "¥777.00" not in text  # another resident's wallet
        # Her son's wallet, from the link on his record.
        assert "孙小宝" in text and "¥33.00" in text
        english = browser.get("/portal/wallet?lang=en")
        assert "My health card wallet" in english.text and "Top-up" in english.text
    rows = [r for r in audits(db, "payment-statement") if r.agent_kind == "patient"]
    assert rows and set(rows[-1].patient_keys) == {residents["mine"], residents["son"]}
    assert rows[-1].action == "R"


def test_without_a_session_the_page_asks_to_sign_in_and_staff_get_no_wallet(
    server: RunningServer, residents: dict[str, str]
) -> None:
    anonymous = httpx.get(f"{server.base}/portal/wallet", follow_redirects=False, timeout=30)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/auth/login?next=%2Fportal%2Fwallet"
    forged = httpx.get(
        f"{server.base}/portal/wallet", cookies={"yilian_session": uuid.uuid4().hex}, follow_redirects=False
    )
    assert forged.status_code == 303
    with signed_in(server, "dr.wu", pyotp.TOTP(residents["totp"]).now()) as staff:
        refused = staff.get("/portal/wallet")
        assert refused.status_code == 403 and "¥" not in refused.text
        assert 'href="/portal/wallet"' not in staff.get("/auth/login").text
