"""A policy year running out, on both databases: a resident still enrolled is refused rather than
charged as uninsured; next year's file in YILIAN_POLICY_DIR applies from the next start; the
patient may choose to pay it all (自费); another city's scheme is paid here as before."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from sqlalchemy import func, select

from tests.integration.payments.builders import Region, make_coverage, make_patient, make_region
from tests.integration.payments.conftest import CardDesk
from tests.integration.payments.test_payment_api import DRUG as API_DRUG
from tests.integration.payments.test_payment_api import call
from tests.support.auth import bearer, system_token
from yilian import payments
from yilian.api import payment_replies as replies
from yilian.db import Database, UnitOfWork
from yilian.kernel.errors import Category
from yilian.payments import policy_files
from yilian.payments import tables as t
from yilian.payments.adjudication import POLICY_DIR
from yilian.payments.model import PaymentError
from yilian.payments.service import SELF_PAY_CHOSEN, policies

DRUG = payments.Item("YP-0001", "阿莫西林胶囊", "drug", 15_000, 2)  # ¥300, in every catalogue


def postings(uow: UnitOfWork) -> int:
    return int(uow.conn.execute(select(func.count()).select_from(t.posting)).scalar_one())


@pytest.fixture
def region(uow: UnitOfWork) -> Region:
    return make_region(uow)


@pytest.fixture
def new_year(pinned: list[dt.datetime]) -> list[dt.datetime]:
    """The first working morning after the shipped policies' year: 2027-01-04, 10:00 Beijing time."""
    pinned[0] = dt.datetime(2027, 1, 4, 2, 0, tzinfo=dt.UTC)
    return pinned


@pytest.fixture
def policy_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The deployment's policy directory; the process reads policies again (as at a restart)."""
    monkeypatch.setenv(policy_files.ENV, str(tmp_path))
    policies.cache_clear()
    yield tmp_path
    monkeypatch.delenv(policy_files.ENV)
    policies.cache_clear()


def enrolled(
    uow: UnitOfWork, desk: CardDesk, region: Region, scheme: str, *, year: int, plan: str = "330500"
) -> str:
    patient = make_patient(uow)
    make_coverage(
        uow,
        patient_id=patient,
        payor_org=region.insurer,
        scheme=scheme,
        region=plan,
        start=f"{year}-01-01",
        end=f"{year}-12-31",
    )
    card = desk.issue(uow, patient)
    payments.top_up(uow, card_no=card, amount_fen=100_000, channel="cash", org=region.city_hospital)
    return card


def test_an_enrolled_resident_with_no_policy_in_force_is_refused_and_nothing_is_posted(
    uow: UnitOfWork, desk: CardDesk, region: Region, new_year: list[dt.datetime]
) -> None:
    card = enrolled(uow, desk, region, "ncms", year=2027)
    before = postings(uow)
    with pytest.raises(PaymentError) as err:
        payments.charge(uow, card_no=card, org=region.city_hospital, department="pharmacy", items=[DRUG])
    assert err.value.reason == "no-policy-in-force" and err.value.category is Category.CONFLICT
    for words in ("ncms", "330500", "2027-01-04", policy_files.ENV, "self_pay"):
        assert words in err.value.message
    assert postings(uow) == before
    assert payments.wallet(uow, card_no=card).balance_fen == 100_000


def test_the_patient_may_choose_to_pay_it_all(
    uow: UnitOfWork, desk: CardDesk, region: Region, new_year: list[dt.datetime]
) -> None:
    card = enrolled(uow, desk, region, "ncms", year=2027)
    done = payments.charge(
        uow, card_no=card, org=region.city_hospital, department="pharmacy", items=[DRUG], self_pay=True
    )
    s = done.shares
    assert (s.total_fen, s.insurer_fen, s.aid_fen, s.self_pay_fen) == (30_000, 0, 0, 30_000)
    assert [step.detail for step in s.steps] == [SELF_PAY_CHOSEN]
    reply = done.as_json()["explanation"]
    assert reply["self_pay"] is True and reply["insurer_policy"] is None and reply["coverage"] == []
    assert payments.trial_balance(uow).balanced


def test_self_pay_by_choice_uses_none_of_the_years_allowance(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    """In a year with a policy in force too: nothing counts toward the deductible or the cap."""
    card = enrolled(uow, desk, region, "ncms", year=2026)
    payments.charge(
        uow, card_no=card, org=region.city_hospital, department="pharmacy", items=[DRUG], self_pay=True
    )
    rows = uow.conn.execute(select(t.charge.c.adjudication)).all()
    adjudication = orjson.loads(rows[-1].adjudication)
    assert adjudication["self_pay"] is True and adjudication["usage"] == []
    # The next charge meets the deductible from zero, as if the first had not been made here.
    again = payments.charge(uow, card_no=card, org=region.city_hospital, department="pharmacy", items=[DRUG])
    assert again.shares.deductible_fen == 30_000 and again.shares.insurer_policy == "ncms/330500/2026/v1"


def test_next_years_file_in_the_policy_directory_applies(
    uow: UnitOfWork, desk: CardDesk, region: Region, new_year: list[dt.datetime], policy_dir: Path
) -> None:
    doc: dict[str, Any] = yaml.safe_load((POLICY_DIR / "ncms-330500-2026.yaml").read_text(encoding="utf-8"))
    doc.update(year=2027, valid_from="2027-01-01", valid_to="2027-12-31")
    # The year's changes: no outpatient deductible at a city hospital, and 45% instead of 40%.
    doc["outpatient"]["deductible_fen"]["city"] = 0
    doc["outpatient"]["ratio"]["city"] = "45%"
    (policy_dir / "ncms-330500-2027.yaml").write_text(
        yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8"
    )
    card = enrolled(uow, desk, region, "ncms", year=2027)
    done = payments.charge(uow, card_no=card, org=region.city_hospital, department="pharmacy", items=[DRUG])
    s = done.shares
    assert (s.total_fen, s.insurer_fen, s.self_pay_fen) == (30_000, 13_500, 16_500)
    assert s.insurer_policy == "ncms/330500/2027/v1"
    assert done.wallet.balance_fen == 100_000 - 16_500
    assert payments.trial_balance(uow).balanced
    # And the warning is gone for NCMS (the other schemes still end with 2026).
    assert "ncms" not in {w.scheme for w in payments.policy_warnings(dt.date(2026, 12, 20))}


def test_another_citys_scheme_is_paid_here_as_self_pay(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    """A pooling region the platform never settles: no refusal, the patient pays and claims at home."""
    card = enrolled(uow, desk, region, "ncms", year=2026, plan="330100")
    done = payments.charge(uow, card_no=card, org=region.city_hospital, department="pharmacy", items=[DRUG])
    assert (done.shares.insurer_fen, done.shares.self_pay_fen) == (0, 30_000)
    assert "no insurance coverage in force" in done.shares.steps[0].detail


def test_through_the_api_the_refusal_is_a_problem_with_its_reason_and_self_pay_goes_through(
    app: Any, db: Database, desk: CardDesk, new_year: list[dt.datetime]
) -> None:
    with UnitOfWork(db, write=True) as uow:
        region = make_region(uow)
        card = enrolled(uow, desk, region, "ncms", year=2027)
    his = bearer(
        system_token(
            db, scopes="system/Account.cru system/ChargeItem.cr", org_id=region.city_hospital, name="HIS"
        )
    )
    body = {"card_no": card, "org": region.city_hospital, "department": "pharmacy", "items": [API_DRUG]}
    refused = call(app, "POST", "/api/charges", headers=his, key=uuid.uuid4().hex, json=body)
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["reason"] == "no-policy-in-force" and "2027-01-04" in problem["detail"]
    chosen = call(
        app, "POST", "/api/charges", headers=his, key=uuid.uuid4().hex, json={**body, "self_pay": True}
    )
    assert chosen.status_code == 201, chosen.text
    reply = chosen.json()
    assert (reply["insurer_fen"], reply["self_pay_fen"]) == (0, 30_000)
    assert reply["explanation"]["self_pay"] is True
    replies.ChargeReply.model_validate(reply)
    detail = call(app, "GET", f"/api/charges/{reply['charge_id']}", headers=his).json()
    assert replies.ChargeDetailReply.model_validate(detail).explanation.self_pay is True
    # Only a JSON boolean: "yes" or 1 is a bad request, not a choice to pay.
    vague = call(
        app, "POST", "/api/charges", headers=his, key=uuid.uuid4().hex, json={**body, "self_pay": "yes"}
    )
    assert vague.status_code == 400, vague.text
