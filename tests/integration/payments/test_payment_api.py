"""The payments JSON API in process (httpx over ASGI), on both databases: the contract, the
Idempotency-Key protocol, refusals with their reasons, and concurrent writers on one wallet."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.integration.payments.builders import Region, make_coverage, make_patient
from tests.integration.payments.conftest import CardDesk
from tests.integration.payments.conftest import today as business_day
from tests.support.auth import bearer, system_token
from yilian.db import Database, UnitOfWork
from yilian.payments import ledger
from yilian.payments import tables as t
from yilian.payments.model import wallet_account

DRUG = {
    "code": "YP-0001",
    "name": "阿莫西林胶囊",
    "category": "drug",
    "unit_price_fen": 15_000,
    "quantity": 2,
}


@pytest.fixture(scope="module")
def operator(db: Database) -> dict[str, str]:
    return bearer(system_token(db, scopes="system/*.cruds", name="payments operator"))


@pytest.fixture(scope="module")
def hospital(db: Database, region: Region) -> dict[str, str]:
    return bearer(
        system_token(
            db, scopes="system/Account.cru system/ChargeItem.cr", org_id=region.city_hospital, name="HIS"
        )
    )


def call(
    app: Any, method: str, path: str, *, headers: dict[str, str], key: str | None = None, json: Any = None
) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client:
            extra = {"Idempotency-Key": key} if key else {}
            return await client.request(method, path, headers={**headers, **extra}, json=json)

    return asyncio.run(go())


def many(app: Any, requests: list[tuple[str, str, dict[str, str], str | None, Any]]) -> list[httpx.Response]:
    """Send all at once: the handlers run in the server's thread pool, truly concurrently."""

    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver", timeout=120
        ) as client:
            return list(
                await asyncio.gather(
                    *(
                        client.request(m, p, headers={**h, **({"Idempotency-Key": k} if k else {})}, json=j)
                        for m, p, h, k, j in requests
                    )
                )
            )

    return asyncio.run(go())


def new_card(db: Database, desk: CardDesk, region: Region, *schemes: str) -> str:
    with UnitOfWork(db, write=True) as uow:
        patient = make_patient(uow)
        for scheme in schemes:
            make_coverage(uow, patient_id=patient, payor_org=region.insurer, scheme=scheme)
        return desk.issue(uow, patient)


def key() -> str:
    return uuid.uuid4().hex


def txn_count(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(t.txn)).scalar_one())


def test_top_up_and_wallet(
    app: Any, db: Database, desk: CardDesk, region: Region, hospital: dict[str, str]
) -> None:
    card = new_card(db, desk, region)
    body = {"amount_fen": 50_000, "channel": "cash", "org": region.city_hospital}
    missing = call(app, "POST", f"/api/cards/{card}/top-ups", headers=hospital, json=body)
    assert missing.status_code == 400 and missing.json()["reason"] == "idempotency-key-missing"
    r = call(app, "POST", f"/api/cards/{card}/top-ups", headers=hospital, key=key(), json=body)
    assert r.status_code == 201, r.text
    assert r.json()["wallet_balance_fen"] == 50_000
    w = call(app, "GET", f"/api/cards/{card}/wallet", headers=hospital)
    assert w.json() == {"card_no": card, "balance_fen": 50_000, "held_fen": 0, "available_fen": 50_000}
    statement = call(app, "GET", f"/api/cards/{card}/statement", headers=hospital).json()
    assert [e["amount_fen"] for e in statement["entries"]] == [50_000]


def test_charge_contract_and_exact_replay(
    app: Any, db: Database, desk: CardDesk, region: Region, hospital: dict[str, str]
) -> None:
    card = new_card(db, desk, region, "ncms")
    call(
        app,
        "POST",
        f"/api/cards/{card}/top-ups",
        headers=hospital,
        key=key(),
        json={"amount_fen": 100_000, "channel": "cash", "org": region.city_hospital},
    )
    body = {"card_no": card, "org": region.city_hospital, "department": "clinic", "items": [DRUG]}
    k = key()
    before = txn_count(db)
    first = call(app, "POST", "/api/charges", headers=hospital, key=k, json=body)
    assert first.status_code == 201, first.text
    reply = first.json()
    assert {
        "charge_id",
        "total_fen",
        "insurer_fen",
        "aid_fen",
        "self_pay_fen",
        "wallet_balance_fen",
        "explanation",
    } <= set(reply)
    assert (reply["total_fen"], reply["insurer_fen"], reply["self_pay_fen"]) == (
        30_000,
        0,
        30_000,
    )  # under the ¥300 deductible
    assert reply["explanation"]["insurer_policy"] == "ncms/330500/2026/v1"
    again = call(app, "POST", "/api/charges", headers=hospital, key=k, json=body)
    assert again.status_code == 201 and again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert txn_count(db) == before + 1
    other = call(
        app, "POST", "/api/charges", headers=hospital, key=k, json={**body, "department": "pharmacy"}
    )
    assert other.status_code == 422 and other.json()["reason"] == "idempotency-key-reused"
    shown = call(app, "GET", f"/api/charges/{reply['charge_id']}", headers=hospital).json()
    assert shown["items"][0]["amount_fen"] == 30_000 and shown["self_pay_fen"] == 30_000


def hold_count(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(t.hold)).scalar_one())


# Each bad amount the issue names, as JSON sends it: zero, negative, a fraction, past the limit, text.
BAD_AMOUNTS = [0, -5, 12.5, 10**16, "10"]


def test_refusals_have_their_own_reasons_and_post_nothing(
    app: Any, db: Database, desk: CardDesk, region: Region, hospital: dict[str, str]
) -> None:
    card = new_card(db, desk, region)
    charge = {"card_no": card, "org": region.city_hospital, "department": "clinic", "items": [DRUG]}
    poor = call(app, "POST", "/api/charges", headers=hospital, key=key(), json=charge)
    assert poor.status_code == 409 and poor.json()["reason"] == "insufficient-balance"
    top = {"amount_fen": 100_000, "channel": "cash", "org": region.city_hospital}
    assert call(app, "POST", f"/api/cards/{card}/top-ups", headers=hospital, key=key(), json=top).is_success
    paid = call(app, "POST", "/api/charges", headers=hospital, key=key(), json=charge).json()
    deposit = {"card_no": card, "org": region.city_hospital, "department": "ward", "amount_fen": 10_000}
    hold_id = call(app, "POST", "/api/holds", headers=hospital, key=key(), json=deposit).json()["hold_id"]
    before, holds, wallet = (
        txn_count(db),
        hold_count(db),
        call(app, "GET", f"/api/cards/{card}/wallet", headers=hospital).json(),
    )
    unknown = call(
        app,
        "POST",
        "/api/charges",
        headers=hospital,
        key=key(),
        json={**charge, "card_no": desk.unknown_number()},
    )
    assert unknown.status_code == 404 and unknown.json()["reason"] == "unknown-card"
    # A bad amount on every route that takes one: 400 with its own reason, the field named.
    for bad in BAD_AMOUNTS:
        for path, body, field in (
            (f"/api/cards/{card}/top-ups", {**top, "amount_fen": bad}, "amount_fen"),
            (
                "/api/charges",
                {**charge, "items": [DRUG, {**DRUG, "unit_price_fen": bad}]},
                "items.1.unit_price_fen",
            ),
            (f"/api/charges/{paid['charge_id']}/refunds", {"amount_fen": bad, "reason": "x"}, "amount_fen"),
            ("/api/holds", {**deposit, "amount_fen": bad}, "amount_fen"),
            (f"/api/holds/{hold_id}/post", {"amount_fen": bad}, "amount_fen"),
        ):
            r = call(app, "POST", path, headers=hospital, key=key(), json=body)
            problem = r.json()
            assert (r.status_code, problem.get("reason")) == (400, "bad-amount"), (path, bad, r.text)
            assert problem["code"] == "invalid"
            assert problem["detail"].startswith(f"{field}: an amount must be a positive whole number of fen")
            assert "from 1 to 1000000000000000" in problem["detail"], problem
            assert [e["pointer"] for e in problem["errors"]] == [[field]]
    # The other rules of the body still hold, and a bad amount does not hide them.
    both = call(
        app,
        "POST",
        f"/api/cards/{card}/top-ups",
        headers=hospital,
        key=key(),
        json={"amount_fen": 0, "org": region.city_hospital},
    )
    assert both.status_code == 400 and both.json()["reason"] == "bad-amount"
    assert sorted(e["pointer"][0] for e in both.json()["errors"]) == ["amount_fen", "channel"]
    no_channel = call(
        app,
        "POST",
        f"/api/cards/{card}/top-ups",
        headers=hospital,
        key=key(),
        json={"amount_fen": 100, "org": region.city_hospital},
    )
    assert no_channel.status_code == 400 and "reason" not in no_channel.json()
    # A total past the limit, each line's price being fine, is the service's bad amount.
    huge = {**DRUG, "unit_price_fen": 10**15, "quantity": 2}
    total = call(app, "POST", "/api/charges", headers=hospital, key=key(), json={**charge, "items": [huge]})
    assert total.status_code == 400 and total.json()["reason"] == "bad-amount", total.text
    elsewhere = call(
        app,
        "POST",
        "/api/charges",
        headers=hospital,
        key=key(),
        json={**charge, "org": region.township_centre},
    )
    assert elsewhere.status_code == 403
    assert (txn_count(db), hold_count(db)) == (before, holds)
    assert call(app, "GET", f"/api/cards/{card}/wallet", headers=hospital).json() == wallet
    assert call(app, "GET", f"/api/holds/{hold_id}", headers=hospital).json()["status"] == "held"


@pytest.mark.parametrize(
    ("state", "status", "reason"),
    [("lost", 409, "card-lost"), ("suspended", 409, "card-suspended"), ("revoked", 410, "card-revoked")],
)
def test_an_unusable_card_is_refused_with_its_own_reason(
    app: Any,
    db: Database,
    desk: CardDesk,
    region: Region,
    hospital: dict[str, str],
    state: str,
    status: int,
    reason: str,
) -> None:
    with UnitOfWork(db, write=True) as uow:
        patient = make_patient(uow)
        make_coverage(uow, patient_id=patient, payor_org=region.insurer, scheme="ncms")
        card = desk.issue(uow, patient)
    top = {"amount_fen": 100_000, "channel": "cash", "org": region.city_hospital}
    assert call(app, "POST", f"/api/cards/{card}/top-ups", headers=hospital, key=key(), json=top).is_success
    deposit = {"card_no": card, "org": region.city_hospital, "department": "ward", "amount_fen": 10_000}
    with UnitOfWork(db, write=True) as uow:
        {"lost": desk.report_lost, "suspended": desk.suspend, "revoked": desk.revoke}[state](uow, card)
    before, holds = txn_count(db), hold_count(db)
    charge = {"card_no": card, "org": region.city_hospital, "department": "clinic", "items": [DRUG]}
    for path, body in (
        (f"/api/cards/{card}/top-ups", top),
        ("/api/charges", charge),
        ("/api/holds", deposit),
    ):
        r = call(app, "POST", path, headers=hospital, key=key(), json=body)
        assert (r.status_code, r.json().get("reason")) == (status, reason), (path, r.text)
    wallet = call(app, "GET", f"/api/cards/{card}/wallet", headers=hospital)
    assert (wallet.status_code, wallet.json()["reason"]) == (status, reason)
    assert (txn_count(db), hold_count(db)) == (before, holds)
    with UnitOfWork(db) as uow:  # the money stays where it was
        assert ledger.balance(uow, wallet_account(patient)) == (100_000, 0)
    if state == "suspended":  # lifted, the same card pays again: the refusal was the state, nothing else
        with UnitOfWork(db, write=True) as uow:
            desk.resume(uow, card)
        r = call(app, "POST", "/api/charges", headers=hospital, key=key(), json=charge)
        assert r.status_code == 201, r.text


def test_refund_and_holds(
    app: Any, db: Database, desk: CardDesk, region: Region, hospital: dict[str, str]
) -> None:
    card = new_card(db, desk, region)
    call(
        app,
        "POST",
        f"/api/cards/{card}/top-ups",
        headers=hospital,
        key=key(),
        json={"amount_fen": 100_000, "channel": "cash", "org": region.city_hospital},
    )
    paid = call(
        app,
        "POST",
        "/api/charges",
        headers=hospital,
        key=key(),
        json={"card_no": card, "org": region.city_hospital, "department": "clinic", "items": [DRUG]},
    ).json()
    r = call(
        app,
        "POST",
        f"/api/charges/{paid['charge_id']}/refunds",
        headers=hospital,
        key=key(),
        json={"amount_fen": 15_000, "reason": "one box back"},
    )
    assert (
        r.status_code == 201
        and r.json()["refundable_fen"] == 15_000
        and r.json()["wallet_balance_fen"] == 85_000
    )
    h = call(
        app,
        "POST",
        "/api/holds",
        headers=hospital,
        key=key(),
        json={"card_no": card, "org": region.city_hospital, "department": "ward", "amount_fen": 60_000},
    )
    assert h.status_code == 201, h.text
    hold_id = h.json()["hold_id"]
    assert call(app, "GET", f"/api/cards/{card}/wallet", headers=hospital).json()["available_fen"] == 25_000
    posted = call(
        app, "POST", f"/api/holds/{hold_id}/post", headers=hospital, key=key(), json={"amount_fen": 40_000}
    )
    assert posted.status_code == 200 and posted.json()["status"] == "posted"
    again = call(app, "POST", f"/api/holds/{hold_id}/void", headers=hospital, key=key())
    assert again.status_code == 409 and again.json()["reason"] == "hold-finished"
    assert call(app, "GET", f"/api/cards/{card}/wallet", headers=hospital).json() == {
        "card_no": card,
        "balance_fen": 45_000,
        "held_fen": 0,
        "available_fen": 45_000,
    }


def test_thirty_two_concurrent_charges_never_overdraw(
    app: Any, db: Database, desk: CardDesk, region: Region, hospital: dict[str, str]
) -> None:
    card = new_card(db, desk, region)
    call(
        app,
        "POST",
        f"/api/cards/{card}/top-ups",
        headers=hospital,
        key=key(),
        json={"amount_fen": 10 * 30_000, "channel": "cash", "org": region.city_hospital},
    )
    body = {"card_no": card, "org": region.city_hospital, "department": "pharmacy", "items": [DRUG]}
    replies = many(app, [("POST", "/api/charges", hospital, key(), body) for _ in range(32)])
    codes = sorted(r.status_code for r in replies)
    assert codes.count(201) == 10 and codes.count(409) == 22, [
        r.text for r in replies if r.status_code not in (201, 409)
    ]
    assert call(app, "GET", f"/api/cards/{card}/wallet", headers=hospital).json()["balance_fen"] == 0


def test_thirty_two_concurrent_retries_post_once(
    app: Any, db: Database, desk: CardDesk, region: Region, hospital: dict[str, str]
) -> None:
    card = new_card(db, desk, region)
    call(
        app,
        "POST",
        f"/api/cards/{card}/top-ups",
        headers=hospital,
        key=key(),
        json={"amount_fen": 100_000, "channel": "cash", "org": region.city_hospital},
    )
    before = txn_count(db)
    k = key()
    body = {"card_no": card, "org": region.city_hospital, "department": "pharmacy", "items": [DRUG]}
    replies = many(app, [("POST", "/api/charges", hospital, k, body) for _ in range(32)])
    assert {r.status_code for r in replies} == {201}
    assert len({r.content for r in replies}) == 1
    assert txn_count(db) == before + 1
    assert call(app, "GET", f"/api/cards/{card}/wallet", headers=hospital).json()["balance_fen"] == 70_000


def test_discharge_bill_from_the_deposit(
    app: Any, db: Database, desk: CardDesk, region: Region, hospital: dict[str, str]
) -> None:
    card = new_card(db, desk, region)
    top = {"amount_fen": 100_000, "channel": "cash", "org": region.city_hospital}
    call(app, "POST", f"/api/cards/{card}/top-ups", headers=hospital, key=key(), json=top)
    deposit = {"card_no": card, "org": region.city_hospital, "department": "ward", "amount_fen": 50_000}
    hold_id = call(app, "POST", "/api/holds", headers=hospital, key=key(), json=deposit).json()["hold_id"]
    bill = {
        "card_no": card,
        "org": region.city_hospital,
        "department": "ward",
        "setting": "inpatient",
        "hold_id": hold_id,
        "items": [DRUG],
    }
    r = call(app, "POST", "/api/charges", headers=hospital, key=key(), json=bill)
    assert r.status_code == 201, r.text
    assert r.json()["wallet_balance_fen"] == 70_000
    assert call(app, "GET", f"/api/holds/{hold_id}", headers=hospital).json()["status"] == "posted"
    assert call(app, "GET", f"/api/cards/{card}/wallet", headers=hospital).json()["held_fen"] == 0


def test_close_day_and_trial_balance_are_the_operators(
    app: Any, db: Database, desk: CardDesk, region: Region, hospital: dict[str, str], operator: dict[str, str]
) -> None:
    card = new_card(db, desk, region)
    call(
        app,
        "POST",
        f"/api/cards/{card}/top-ups",
        headers=hospital,
        key=key(),
        json={"amount_fen": 100_000, "channel": "cash", "org": region.city_hospital},
    )
    call(
        app,
        "POST",
        "/api/charges",
        headers=hospital,
        key=key(),
        json={"card_no": card, "org": region.city_hospital, "department": "clinic", "items": [DRUG]},
    )
    today = business_day()
    assert call(app, "GET", "/api/ledger/trial-balance", headers=hospital).status_code == 403
    tb = call(app, "GET", "/api/ledger/trial-balance", headers=operator).json()
    assert tb["balanced"] and tb["debits_fen"] == tb["credits_fen"]
    assert (
        call(app, "POST", f"/api/settlement/days/{today}/close", headers=hospital, key=key()).status_code
        == 403
    )
    early = call(app, "POST", f"/api/settlement/days/{today}/close", headers=operator, key=key())
    assert early.status_code == 409 and early.json()["reason"] == "day-not-over"
    open_view = call(app, "GET", f"/api/settlement/days/{today}", headers=operator).json()
    assert open_view["status"] == "open"
