"""The wallet follows the resident, not the plastic; and each caller sees only what is theirs.

Through the HTTP API on both databases: a card reported lost is refused at every till with
``card-lost`` while the money stays; the replacement card (issued and activated through the card
API) reads and spends the same balance and posts the deposit held on the old card; the old card
is refused with ``card-replaced``. Scopes: a resident's token reads their own wallet, statement,
charges and holds and nobody else's (other cards answer as unknown, lost or not), and moves no
money; a hospital's client reads only its own lines of a day's clearing; the trial balance and
the whole day are the operator's.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from tests.integration.payments.builders import Region
from tests.integration.payments.conftest import CardDesk
from tests.integration.payments.test_payment_api import DRUG, call, key, new_card, txn_count
from tests.support.auth import bearer, system_token
from yilian.db import Database, UnitOfWork
from yilian.payments import tables as t
from yilian.security.principal import RESIDENT, Principal
from yilian.security.scopes import parse_scopes
from yilian.security.tokens import issue


@pytest.fixture(scope="module")
def operator(db: Database) -> dict[str, str]:
    return bearer(system_token(db, scopes="system/*.cruds", name="operator"))


def his(db: Database, org: str) -> dict[str, str]:
    return bearer(
        system_token(
            db,
            scopes="system/Account.cru system/ChargeItem.cr system/PaymentReconciliation.r",
            org_id=org,
            name=f"HIS {org}",
        )
    )


def resident_token(db: Database, patient_id: str, scopes: str = "patient/*.rs") -> dict[str, str]:
    """What the portal's sign-in gives a resident: patient-context scopes on their own record."""
    with UnitOfWork(db, write=True) as uow:
        principal = Principal(
            kind=RESIDENT,
            subject=f"resident-{patient_id}",
            scopes=parse_scopes(scopes),
            org_id=None,
            patient_keys=frozenset({patient_id}),
        )
        return bearer(issue(uow, principal, lifetime_s=3600).access_token)


def patient_of(db: Database, card_no: str) -> str:
    from yilian import card

    with UnitOfWork(db) as uow:
        return card.require_usable(uow, card_no).patient_id


def top_up(app: Any, headers: dict[str, str], card_no: str, org: str, amount: int) -> Any:
    return call(
        app,
        "POST",
        f"/api/cards/{card_no}/top-ups",
        headers=headers,
        key=key(),
        json={"amount_fen": amount, "channel": "cash", "org": org},
    )


def charge(app: Any, headers: dict[str, str], card_no: str, org: str, quantity: int = 1) -> Any:
    body = {"card_no": card_no, "org": org, "department": "clinic", "items": [{**DRUG, "quantity": quantity}]}
    return call(app, "POST", "/api/charges", headers=headers, key=key(), json=body)


def test_the_wallet_follows_the_resident_to_the_replacement_card(
    app: Any, db: Database, desk: CardDesk, region: Region, operator: dict[str, str]
) -> None:
    org = region.city_hospital
    hospital = his(db, org)
    old = new_card(db, desk, region)
    assert top_up(app, hospital, old, org, 100_000).status_code == 201
    assert charge(app, hospital, old, org).status_code == 201  # 150.00
    deposit = call(
        app,
        "POST",
        "/api/holds",
        headers=hospital,
        key=key(),
        json={"card_no": old, "org": org, "department": "ward", "amount_fen": 20_000},
    )
    assert deposit.status_code == 201, deposit.text
    before = call(app, "GET", f"/api/cards/{old}/wallet", headers=hospital).json()
    assert before["balance_fen"] == 85_000 and before["held_fen"] == 20_000

    lost = call(
        app, "POST", f"/api/cards/{old}/report-lost", headers=operator, json={"reason": "lost on the bus"}
    )
    assert lost.status_code == 200, lost.text
    posted = txn_count(db)
    for refused in (
        charge(app, hospital, old, org),
        top_up(app, hospital, old, org, 100),
        call(app, "GET", f"/api/cards/{old}/wallet", headers=hospital),
    ):
        assert refused.status_code == 409 and refused.json()["reason"] == "card-lost", refused.text
    assert txn_count(db) == posted

    new = call(
        app,
        "POST",
        f"/api/cards/{old}/replace",
        headers=operator,
        json={"reason": "replacement for a lost card"},
    )
    assert new.status_code == 201, new.text
    new_no = new.json()["card_no"]
    assert new_no != old
    # A new card is issued, not yet active: refused with its own reason until the holder activates it.
    waiting = call(app, "GET", f"/api/cards/{new_no}/wallet", headers=hospital)
    assert waiting.status_code == 409 and waiting.json()["reason"] == "card-not-activated"
    assert (
        call(
            app, "POST", f"/api/cards/{new_no}/activate", headers=operator, json={"reason": "holder shows ID"}
        ).status_code
        == 200
    )

    wallet = call(app, "GET", f"/api/cards/{new_no}/wallet", headers=hospital).json()
    assert wallet == {"card_no": new_no, "balance_fen": 85_000, "held_fen": 20_000, "available_fen": 65_000}
    spent = charge(app, hospital, new_no, org)
    assert spent.status_code == 201 and spent.json()["wallet_balance_fen"] == 70_000, spent.text
    # The deposit taken on the old card is the resident's: it posts against the same wallet.
    settled = call(
        app,
        "POST",
        f"/api/holds/{deposit.json()['hold_id']}/post",
        headers=hospital,
        key=key(),
        json={"amount_fen": 12_000},
    )
    assert settled.status_code == 200, settled.text
    statement = call(app, "GET", f"/api/cards/{new_no}/statement", headers=hospital).json()
    assert statement["balance_fen"] == 58_000 and statement["held_fen"] == 0
    assert [e["kind"] for e in statement["entries"]] == ["hold-post", "charge", "charge", "top-up"]

    posted = txn_count(db)
    for refused in (
        charge(app, hospital, old, org),
        top_up(app, hospital, old, org, 100),
        call(app, "GET", f"/api/cards/{old}/wallet", headers=hospital),
        call(app, "GET", f"/api/cards/{old}/statement", headers=hospital),
    ):
        assert refused.status_code == 410 and refused.json()["reason"] == "card-replaced", refused.text
    assert txn_count(db) == posted
    balance = call(app, "GET", "/api/ledger/trial-balance", headers=operator).json()
    assert balance["balanced"], balance


def test_a_resident_reads_only_their_own_wallet_and_moves_no_money(
    app: Any, db: Database, desk: CardDesk, region: Region, operator: dict[str, str]
) -> None:
    org = region.city_hospital
    hospital = his(db, org)
    mine, theirs = new_card(db, desk, region), new_card(db, desk, region)
    for card_no in (mine, theirs):
        top_up(app, hospital, card_no, org, 50_000)
    my_charge = charge(app, hospital, mine, org).json()["charge_id"]
    their_charge = charge(app, hospital, theirs, org).json()["charge_id"]
    their_hold = call(
        app,
        "POST",
        "/api/holds",
        headers=hospital,
        key=key(),
        json={"card_no": theirs, "org": org, "department": "ward", "amount_fen": 1_000},
    ).json()["hold_id"]
    me = resident_token(db, patient_of(db, mine))

    assert call(app, "GET", f"/api/cards/{mine}/wallet", headers=me).json()["balance_fen"] == 35_000
    assert call(app, "GET", f"/api/cards/{mine}/statement", headers=me).status_code == 200
    assert call(app, "GET", f"/api/charges/{my_charge}", headers=me).status_code == 200
    unknown = call(app, "GET", f"/api/cards/{desk.unknown_number()}/wallet", headers=me).json()
    for path in (f"/api/cards/{theirs}/wallet", f"/api/cards/{theirs}/statement"):
        other = call(app, "GET", path, headers=me)
        # The same answer as for a card that does not exist: nothing about the other resident leaks.
        assert other.status_code == 404 and other.json()["reason"] == unknown["reason"] == "unknown-card"
        assert other.json()["detail"] == unknown["detail"]
    assert call(app, "GET", f"/api/charges/{their_charge}", headers=me).status_code == 404
    assert call(app, "GET", f"/api/holds/{their_hold}", headers=me).status_code == 404
    # Lost or not, another's card still answers as unknown (its state is not revealed).
    with UnitOfWork(db, write=True) as uow:
        desk.report_lost(uow, theirs)
    assert call(app, "GET", f"/api/cards/{theirs}/wallet", headers=me).json()["reason"] == "unknown-card"

    for path in ("/api/ledger/trial-balance", "/api/settlement/days/2026-01-05"):
        assert call(app, "GET", path, headers=me).status_code == 403
    # Even a resident token with write scopes pays nothing by itself.
    writer = resident_token(db, patient_of(db, mine), scopes="patient/*.cruds")
    posted = txn_count(db)
    assert top_up(app, writer, mine, org, 100).status_code == 403
    assert charge(app, writer, mine, org).status_code == 403
    assert txn_count(db) == posted


def test_a_hospital_reads_only_its_own_clearing_lines(
    app: Any, db: Database, desk: CardDesk, region: Region, operator: dict[str, str]
) -> None:
    city, county = region.city_hospital, region.county_hospital
    city_his, county_his = his(db, city), his(db, county)
    card_no = new_card(db, desk, region)
    top_up(app, city_his, card_no, city, 100_000)
    for _ in range(2):
        assert charge(app, city_his, card_no, city).status_code == 201
    assert charge(app, county_his, card_no, county).status_code == 201
    with db.engine.connect() as conn:
        day = conn.execute(select(func.max(t.txn.c.business_date))).scalar_one()

    whole = call(app, "GET", f"/api/settlement/days/{day}", headers=operator).json()
    assert {line["payee"] for line in whole["lines"]} >= {city, county}
    for org, headers in ((city, city_his), (county, county_his)):
        seen = call(app, "GET", f"/api/settlement/days/{day}", headers=headers)
        assert seen.status_code == 200, seen.text
        lines = seen.json()["lines"]
        assert lines and {line["payee"] for line in lines} == {org}
        assert lines == [line for line in whole["lines"] if line["payee"] == org]
        assert set(seen.json()["totals"]["by_payee"]) == {org}
    assert call(app, "GET", "/api/ledger/trial-balance", headers=city_his).status_code == 403
    assert (
        call(app, "POST", f"/api/settlement/days/{day}/close", headers=city_his, key=key()).status_code == 403
    )


def test_an_insurer_reads_the_lines_its_funds_pay_once_named_their_administrator(
    app: Any,
    db: Database,
    desk: CardDesk,
    region: Region,
    operator: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    city, county = region.city_hospital, region.county_hospital
    city_his, county_his = his(db, city), his(db, county)
    card_no = new_card(db, desk, region, "ncms")
    top_up(app, city_his, card_no, city, 5_000_000)
    for org, headers in ((city, city_his), (county, county_his)):
        done = charge(app, headers, card_no, org, quantity=40)
        assert done.status_code == 201 and done.json()["insurer_fen"] > 0, done.text
    with db.engine.connect() as conn:
        day = conn.execute(select(func.max(t.txn.c.business_date))).scalar_one()
    whole = call(app, "GET", f"/api/settlement/days/{day}", headers=operator).json()
    fund_lines = [line for line in whole["lines"] if line["payer"] == "fund:ncms:330500"]
    assert {line["payee"] for line in fund_lines} >= {city, county}

    insurer = his(db, region.insurer)
    monkeypatch.delenv("YILIAN_FUND_ADMINISTRATORS", raising=False)
    unnamed = call(app, "GET", f"/api/settlement/days/{day}", headers=insurer)
    assert unnamed.status_code == 200 and unnamed.json()["lines"] == []  # no reason yet: nothing shown

    monkeypatch.setenv("YILIAN_FUND_ADMINISTRATORS", f"fund:ncms:330500={region.insurer}")
    seen = call(app, "GET", f"/api/settlement/days/{day}?detail=true", headers=insurer)
    assert seen.status_code == 200, seen.text
    report = seen.json()
    assert report["lines"] == fund_lines  # every line the fund pays, to every institution; no other
    assert set(report["totals"]["by_payer"]) == {"fund:ncms:330500"}
    # A hospital still sees only what it is paid, the fund's share included.
    city_view = call(app, "GET", f"/api/settlement/days/{day}", headers=city_his).json()
    assert {line["payee"] for line in city_view["lines"]} == {city}
    assert call(app, "GET", "/api/ledger/trial-balance", headers=insurer).status_code == 403


def test_an_institution_reads_only_its_own_movements_on_a_statement(
    app: Any, db: Database, desk: CardDesk, region: Region, operator: dict[str, str]
) -> None:
    """The card at the till lets an institution see the balance and what the holder did there;
    where else they paid stays the holder's (and the operator's) to see."""
    city, county = region.city_hospital, region.county_hospital
    at_city, at_county = his(db, city), his(db, county)
    card_no = new_card(db, desk, region)
    assert top_up(app, at_city, card_no, city, 100_000).status_code == 201
    assert charge(app, at_county, card_no, county).status_code == 201  # 150.00 at the county
    assert charge(app, at_city, card_no, city, quantity=2).status_code == 201  # 300.00 at the city

    def entries(headers: dict[str, str]) -> list[dict[str, Any]]:
        reply = call(app, "GET", f"/api/cards/{card_no}/statement", headers=headers)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["balance_fen"] == 55_000  # the balance is the till's to know
        return list(body["entries"])

    city_view = entries(at_city)
    assert [(e["kind"], e["amount_fen"], e["org"]) for e in city_view] == [
        ("charge", -30_000, city),
        ("top-up", 100_000, city),
    ]
    assert all("balance_after_fen" not in e for e in city_view)  # its jumps would show the rest
    county_view = entries(at_county)
    assert [(e["kind"], e["amount_fen"], e["org"]) for e in county_view] == [("charge", -15_000, county)]
    holder = entries(resident_token(db, patient_of(db, card_no)))
    everything = entries(operator)
    assert holder == everything
    assert [(e["org"], e["balance_after_fen"]) for e in everything] == [
        (city, 55_000),
        (county, 85_000),
        (city, 100_000),
    ]
