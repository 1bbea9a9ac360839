"""``yilian demo``: load the demo region into an empty database."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import orjson
from rich.table import Table
from sqlalchemy import func, select

from yilian.cli.common import console, describe, operator_record, progress_bar, settings_from_env
from yilian.cli.payments import close_and_record
from yilian.db import Database, UnitOfWork
from yilian.db.uow import transact
from yilian.demo.card_payments import Desks, Tally, pay_with_card
from yilian.fhir import FhirContext, FhirRequest, FhirResponse, dispatch
from yilian.fhir.store.tables import resource
from yilian.kernel import clock
from yilian.kernel.errors import Category, YilianError
from yilian.kernel.money import format_fen
from yilian.payments.model import BEIJING
from yilian.security.audit import record


def _loader(ctx: FhirContext, bundle: dict[str, Any]) -> Callable[[UnitOfWork], FhirResponse]:
    def load(uow: UnitOfWork) -> FhirResponse:
        return dispatch(uow, ctx, FhirRequest("POST", "", body=bundle))

    return load


CARDS_PER_TRANSACTION = 50
DEMO_PAYMENTS = "payment-demo-day"  # the AuditEvent subtype of the demo's use of its cards
FIRST_THING = dt.time(7, 30)  # the card office opens on the demo's day (Beijing time)
NIGHTLY_CLOSE = dt.time(1, 0)  # and the day is cleared after midnight


def _created_ids(bundle: dict[str, Any], resp: FhirResponse) -> dict[str, str]:
    """The ids the server gave the bundle's entries, by fullUrl (responses are in entry order)."""
    out: dict[str, str] = {}
    body = orjson.loads(resp.body or b"{}")
    for entry, answer in zip(bundle.get("entry", []), body.get("entry", []), strict=True):
        location = str(answer.get("response", {}).get("location", ""))
        out[str(entry.get("fullUrl"))] = location.split("/")[1]
    return out


def _issue_cards(ctx: FhirContext, patient_ids: list[str]) -> Callable[[UnitOfWork], list[tuple[str, str]]]:
    """Issue and activate a card for each Patient, with the chunk's AuditEvent; (patient, card)."""

    def issue(uow: UnitOfWork) -> list[tuple[str, str]]:
        from yilian.card import activate_card, issue_card

        cards = []
        for patient_id in patient_ids:
            card = issue_card(uow, ctx, patient_id=patient_id, actor="demo", reason="示范区域 demo region")
            activate_card(uow, ctx, card_no=card.card_no, actor="demo", reason="示范区域 demo region")
            cards.append((patient_id, card.card_no))
        # One AuditEvent a chunk, in its transaction, as `yilian card issue-batch` records.
        record(
            uow,
            operator_record(
                action="C",
                subtype="card-issue-batch",
                entity="Card/batch",
                patient_keys=sorted(patient_ids),
                outcome_desc=f"demo region: {len(cards)} cards issued and activated",
            ),
        )
        return cards

    return issue


def _pay(seed: int, first: int, cards: list[tuple[str, str]], desks: Desks) -> Callable[[UnitOfWork], Tally]:
    """The chunk's cards used at the desks, with one AuditEvent for what was done with them."""

    def pay(uow: UnitOfWork) -> Tally:
        tally = Tally()  # each attempt its own: a retried transaction must not count twice
        for n, (_, card_no) in enumerate(cards, start=first):
            pay_with_card(uow, seed=seed, n=n, card_no=card_no, desks=desks, tally=tally)
        record(
            uow,
            operator_record(
                action="C",
                subtype=DEMO_PAYMENTS,
                entity="Account/demo",
                patient_keys=sorted(patient for patient, _ in cards),
                outcome_desc=(
                    f"demo region: {len(cards)} cards used: {tally.top_ups} top-ups, "
                    f"{tally.charges} charges, {tally.refunds} refunds, "
                    f"{tally.deposits_settled + tally.deposits_held} deposits"
                ),
            ),
        )
        return tally

    return pay


def load_demo(db: Database, *, residents: int) -> dict[str, Any]:
    """Load the demo region unless the database already holds data; what to show on the front page."""
    with db.engine.connect() as conn:
        existing = conn.execute(select(func.count()).select_from(resource)).scalar_one()
    if existing:
        # Any data at all means someone's database: never mix the demo region into it, and
        # never load it twice (the second run of `yilian demo` just serves).
        console.print(
            f"{describe(db)} already holds {existing} resources; the demo region is not loaded again"
        )
        return {"demo": f"{existing} resources"}
    from yilian.demo import build_demo_region

    region = build_demo_region(residents=residents)
    bundles = region.bundles()
    ctx = FhirContext(base_url="urn:yilian:demo", settings=settings_from_env())
    total = sum(len(b.get("entry", [])) for b in bundles)
    with progress_bar() as progress:
        task = progress.add_task("生成示范区域 building the demo region", total=total)
        holders: list[str] = []
        ids: dict[str, str] = {}
        for bundle in bundles:
            resp = transact(db, _loader(ctx, bundle))
            if resp.status != 200:
                raise YilianError(Category.INTERNAL, "the demo region failed to load")
            created = _created_ids(bundle, resp)
            ids.update(created)
            holders += [created[url] for url in created if url in region.card_holders]
            progress.advance(task, len(bundle.get("entry", [])))
        # The cards' life happens on the demo's own day, like its visits (the region is dated,
        # not "now"): issued first thing, then used at the desks, so that a card is never used
        # before it was issued and the 2026 policies apply whenever the demo is loaded.
        with clock.running_from(_demo_time(region.as_of, FIRST_THING)):
            # Cards come from the card system, as a real region's would: numbers by its rules
            # (the ID number, else a platform number), encrypted at rest, each one active.
            cards = progress.add_task("发放居民健康卡 issuing health cards", total=len(holders))
            issued: list[tuple[str, str]] = []
            for start in range(0, len(holders), CARDS_PER_TRANSACTION):
                chunk = holders[start : start + CARDS_PER_TRANSACTION]
                issued += transact(db, _issue_cards(ctx, chunk))
                progress.advance(cards, len(chunk))
            # Then they are used: top-ups, charges reimbursed on the spot, refunds, deposits.
            desks = Desks.of(region.registry.institutions, ids)
            tally = Tally()
            paying = progress.add_task("钱包充值与诊间结算 top-ups and charges", total=len(issued))
            for start in range(0, len(issued), CARDS_PER_TRANSACTION):
                used = issued[start : start + CARDS_PER_TRANSACTION]
                tally.add(transact(db, _pay(region.seed, start, used, desks)))
                progress.advance(paying, len(used))
        # And that night the day is cleared.
        with clock.running_from(_demo_time(region.as_of + dt.timedelta(days=1), NIGHTLY_CLOSE)):
            closed = transact(db, lambda uow: close_and_record(uow, region.as_of, "demo"))
    summary = region.summary()
    table = Table(title=f"示范区域 Demo region in {describe(db)}")
    table.add_column("resource type")
    table.add_column("resources", justify="right")
    for rtype, n in sorted(summary.items()):
        table.add_row(rtype, str(n))
    table.add_row("[bold]total", str(sum(summary.values())))
    table.add_row("居民健康卡 health cards issued", str(len(holders)))
    console.print(table)
    console.print(_payments_table(tally, closed))
    return {
        "demo": ", ".join(f"{k} {v}" for k, v in sorted(summary.items()))
        + f"; {len(holders)} health cards; {tally.charges} card charges"
    }


def _demo_time(day: dt.date, at: dt.time) -> dt.datetime:
    return dt.datetime.combine(day, at, tzinfo=BEIJING)


def _payments_table(tally: Tally, closed: dict[str, Any]) -> Table:
    table = Table(title=f"一卡通 Card payments on {closed['business_date']}, cleared that night")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_column("amount", justify="right")
    table.add_row("充值 top-ups", str(tally.top_ups), format_fen(tally.top_up_fen))
    table.add_row("诊间结算 charges", str(tally.charges), format_fen(tally.total_fen))
    table.add_row("  医保统筹 insurer share", "", format_fen(tally.insurer_fen))
    table.add_row("  医疗救助 medical aid", "", format_fen(tally.aid_fen))
    table.add_row("  个人自付 paid from wallets", "", format_fen(tally.self_pay_fen))
    table.add_row("退费 refunds", str(tally.refunds), "")
    table.add_row("住院押金 deposits settled / held", f"{tally.deposits_settled} / {tally.deposits_held}", "")
    table.add_row(
        "日终清算 clearing batch lines",
        str(len(closed["lines"])),
        format_fen(sum(int(line["amount_fen"]) for line in closed["lines"])),
    )
    return table
