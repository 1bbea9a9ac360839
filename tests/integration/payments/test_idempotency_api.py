"""Idempotency keys over HTTP, on both databases: every state-changing payment call — top-up,
charge, refund, deposit hold, hold post, hold void — retried 1 to 5 times (one after another,
all at the same moment, and through a second app as after a restart) returns the first reply
byte for byte and takes effect once; the same key with another request is refused. A key still
replays after 24 hours (a day close in between), and ``purge`` forgets it only after the 48 h
retention. The clock is the platform's (``yilian.kernel.clock``), which the keys are stamped with.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.integration.payments.builders import Region
from tests.integration.payments.conftest import CardDesk
from tests.integration.payments.test_payment_api import DRUG, call, key, many, new_card, txn_count
from tests.support.auth import bearer
from yilian import payments
from yilian.api.app import create_app
from yilian.api.wiring import platform_settings
from yilian.db import Database, UnitOfWork
from yilian.kernel import clock
from yilian.payments import idempotency
from yilian.payments import tables as t
from yilian.payments.model import business_date
from yilian.security.clients import register_client
from yilian.security.principal import SYSTEM, Principal
from yilian.security.scopes import parse_scopes
from yilian.security.tokens import issue

SCOPES = "system/Account.cru system/ChargeItem.cr"


@dataclass
class Hospital:
    """One hospital's client; a token is issued at the clock's current time (they expire in an
    hour), while the caller the keys belong to stays the same client."""

    db: Database
    principal: Principal

    def headers(self) -> dict[str, str]:
        with UnitOfWork(self.db, write=True) as uow:
            return bearer(issue(uow, self.principal, lifetime_s=3600).access_token)


@pytest.fixture(scope="module")
def hospital(db: Database, region: Region) -> Hospital:
    with UnitOfWork(db, write=True) as uow:
        client, _ = register_client(uow, name="HIS", org_id=region.city_hospital, scopes=SCOPES)
    principal = Principal(
        kind=SYSTEM,
        subject=client.client_id,
        scopes=parse_scopes(SCOPES),
        org_id=region.city_hospital,
        client_id=client.client_id,
    )
    return Hospital(db, principal)


@pytest.fixture
def shifted() -> Iterator[list[dt.timedelta]]:
    """The clock moved by ``shift[0]`` (business days no other test of the module uses)."""
    shift = [dt.timedelta(0)]
    base, started = clock.now(), time.monotonic()  # the policy year's (conftest)
    clock.set_clock(lambda: base + dt.timedelta(seconds=time.monotonic() - started) + shift[0])
    yield shift
    clock.set_clock(None)


def count(db: Database, table: Any, *where: Any) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def stored_key(db: Database, k: str) -> bool:
    return count(db, t.idempotency, t.idempotency.c.key == k) == 1


def test_a_key_replays_after_24_hours_and_is_purged_only_after_the_retention(
    app: Any, db: Database, desk: CardDesk, region: Region, hospital: Hospital, shifted: list[dt.timedelta]
) -> None:
    shifted[0] = dt.timedelta(days=100)
    start = clock.now()
    card = new_card(db, desk, region)
    headers = hospital.headers()
    top = {"amount_fen": 50_000, "channel": "cash", "org": region.city_hospital}
    charge = {"card_no": card, "org": region.city_hospital, "department": "clinic", "items": [DRUG]}
    k_top, k_charge = key(), key()
    first_top = call(app, "POST", f"/api/cards/{card}/top-ups", headers=headers, key=k_top, json=top)
    first_charge = call(app, "POST", "/api/charges", headers=headers, key=k_charge, json=charge)
    assert (first_top.status_code, first_charge.status_code) == (201, 201), first_charge.text

    # A day and a minute later; the night's close (which purges keys) has run in between.
    shifted[0] += dt.timedelta(hours=24, minutes=1)
    day = business_date(start)
    with UnitOfWork(db, write=True) as uow:
        payments.close_day(uow, day=day, closed_by="test")
    posted = txn_count(db)  # with the close's own (clearing) transactions
    headers = hospital.headers()
    again_top = call(app, "POST", f"/api/cards/{card}/top-ups", headers=headers, key=k_top, json=top)
    again_charge = call(app, "POST", "/api/charges", headers=headers, key=k_charge, json=charge)
    assert again_top.content == first_top.content and again_charge.content == first_charge.content
    assert again_top.status_code == again_charge.status_code == 201
    assert again_top.headers["idempotent-replayed"] == again_charge.headers["idempotent-replayed"] == "true"
    reused = call(
        app, "POST", f"/api/cards/{card}/top-ups", headers=headers, key=k_top, json={**top, "amount_fen": 1}
    )
    assert reused.status_code == 422 and reused.json()["reason"] == "idempotency-key-reused"
    assert txn_count(db) == posted

    # A purge asking for less than the retention still keeps 48 h; at 47:59 the keys are there.
    with UnitOfWork(db, write=True) as uow:
        idempotency.purge(uow, older_than_s=3600)
    assert stored_key(db, k_top) and stored_key(db, k_charge)
    shifted[0] = dt.timedelta(days=100) + dt.timedelta(hours=47, minutes=59)
    with UnitOfWork(db, write=True) as uow:
        idempotency.purge(uow)
    assert stored_key(db, k_top) and stored_key(db, k_charge)
    headers = hospital.headers()
    late = call(app, "POST", "/api/charges", headers=headers, key=k_charge, json=charge)
    assert late.content == first_charge.content and txn_count(db) == posted

    # Past the retention (48 h after the key was claimed, as the clock says) they are gone.
    shifted[0] = dt.timedelta(days=100) + dt.timedelta(hours=48, seconds=1)
    with UnitOfWork(db, write=True) as uow:
        assert idempotency.purge(uow) >= 2
    assert not stored_key(db, k_top) and not stored_key(db, k_charge)


@dataclass(frozen=True)
class Operation:
    """A keyed payment call: ``prepare`` makes what it acts on (a charge to refund, a hold to post)
    and gives its path and body; ``effect`` is what must change exactly once."""

    prepare: Callable[[], tuple[str, dict[str, Any] | None]]  # path, body
    status: int


def operations(app: Any, db: Database, card: str, org: str, headers: dict[str, str]) -> dict[str, Operation]:
    def post(path: str, body: Any) -> dict[str, Any]:
        r = call(app, "POST", path, headers=headers, key=key(), json=body)
        assert r.is_success, r.text
        reply: dict[str, Any] = r.json()
        return reply

    charge = {"card_no": card, "org": org, "department": "clinic", "items": [DRUG]}
    deposit = {"card_no": card, "org": org, "department": "ward", "amount_fen": 20_000}

    def paid() -> str:
        return str(post("/api/charges", charge)["charge_id"])

    def held() -> str:
        return str(post("/api/holds", deposit)["hold_id"])

    return {
        "top-up": Operation(
            lambda: (f"/api/cards/{card}/top-ups", {"amount_fen": 1_234, "channel": "cash", "org": org}),
            201,
        ),
        "charge": Operation(lambda: ("/api/charges", charge), 201),
        "refund": Operation(
            lambda: (f"/api/charges/{paid()}/refunds", {"amount_fen": 5_000, "reason": "returned"}), 201
        ),
        "hold": Operation(lambda: ("/api/holds", deposit), 201),
        "hold-post": Operation(lambda: (f"/api/holds/{held()}/post", {"amount_fen": 7_000}), 200),
        "hold-void": Operation(lambda: (f"/api/holds/{held()}/void", None), 200),
    }


def effects(db: Database, card: str) -> tuple[int, int, int, int]:
    """Transactions, refunds, holds, and the wallet's held amount (a void posts nothing)."""
    with UnitOfWork(db) as uow:
        held = payments.wallet(uow, card_no=card).held_fen
    return txn_count(db), count(db, t.refund), count(db, t.hold), held


EXPECTED = {  # what one call changes: (transactions, refunds, holds, held)
    "top-up": (1, 0, 0, 0),
    "charge": (1, 0, 0, 0),
    "refund": (1, 1, 0, 0),
    "hold": (0, 0, 1, 20_000),
    "hold-post": (1, 0, 0, -20_000),
    "hold-void": (0, 0, 0, -20_000),
}


@pytest.mark.parametrize("operation", list(EXPECTED))
def test_every_payment_retried_one_to_five_times_takes_effect_once(
    app: Any, db: Database, desk: CardDesk, region: Region, hospital: Hospital, operation: str
) -> None:
    card = new_card(db, desk, region)
    headers = hospital.headers()
    call(
        app,
        "POST",
        f"/api/cards/{card}/top-ups",
        headers=headers,
        key=key(),
        json={"amount_fen": 10_000_000, "channel": "cash", "org": region.city_hospital},
    )
    op = operations(app, db, card, region.city_hospital, headers)[operation]
    restarted = create_app(db, platform_settings())  # a fresh server's state on the same database

    def once(send: Callable[[str, str, dict[str, Any] | None], list[Any]]) -> None:
        path, body = op.prepare()
        before = effects(db, card)
        k = key()
        replies = send(path, k, body)
        assert {r.status_code for r in replies} == {op.status}, [r.text for r in replies]
        assert len({r.content for r in replies}) == 1, "every retry returns the first reply's bytes"
        assert sum(r.headers.get("idempotent-replayed") == "true" for r in replies) == len(replies) - 1
        after = effects(db, card)
        assert tuple(a - b for a, b in zip(after, before, strict=True)) == EXPECTED[operation]
        if body is not None:
            changed = (
                {"amount_fen": body["amount_fen"] + 1} if "amount_fen" in body else {"department": "lab"}
            )
            other = {**body, **changed}
            r = call(app, "POST", path, headers=headers, key=k, json=other)
        else:  # no body: the same key on another request is another path
            r = call(app, "POST", op.prepare()[0], headers=headers, key=k)
        assert r.status_code == 422 and r.json()["reason"] == "idempotency-key-reused", r.text
        assert effects(db, card)[:2] == after[:2]

    for retries in range(1, 6):
        # One after another, the last one through the restarted app.
        once(
            lambda path, k, body, n=retries: [
                call(app if i < n else restarted, "POST", path, headers=headers, key=k, json=body)
                for i in range(n + 1)
            ]
        )
        # All at the same moment: one takes effect, the others wait for it and replay it.
        once(lambda path, k, body, n=retries: many(app, [("POST", path, headers, k, body)] * (n + 1)))
