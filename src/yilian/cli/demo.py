"""``yilian demo``: load the demo region into an empty database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from rich.table import Table
from sqlalchemy import func, select

from yilian.cli.common import console, describe, progress_bar, settings_from_env
from yilian.db import Database, UnitOfWork
from yilian.db.uow import transact
from yilian.fhir import FhirContext, FhirRequest, FhirResponse, dispatch
from yilian.fhir.store.tables import resource
from yilian.kernel.errors import Category, YilianError


def _loader(ctx: FhirContext, bundle: dict[str, Any]) -> Callable[[UnitOfWork], FhirResponse]:
    def load(uow: UnitOfWork) -> FhirResponse:
        return dispatch(uow, ctx, FhirRequest("POST", "", body=bundle))

    return load


CARDS_PER_TRANSACTION = 50


def _created_ids(bundle: dict[str, Any], resp: FhirResponse, wanted: frozenset[str]) -> list[str]:
    """Ids the server gave the bundle's entries whose fullUrl is in ``wanted`` (responses are in entry order)."""
    out: list[str] = []
    body = orjson.loads(resp.body or b"{}")
    for entry, answer in zip(bundle.get("entry", []), body.get("entry", []), strict=True):
        if entry.get("fullUrl") in wanted:
            location = str(answer.get("response", {}).get("location", ""))
            out.append(location.split("/")[1])
    return out


def _issue_cards(ctx: FhirContext, patient_ids: list[str]) -> Callable[[UnitOfWork], None]:
    def issue(uow: UnitOfWork) -> None:
        from yilian.card import activate_card, issue_card

        for patient_id in patient_ids:
            card = issue_card(uow, ctx, patient_id=patient_id, actor="demo", reason="示范区域 demo region")
            activate_card(uow, ctx, card_no=card.card_no, actor="demo", reason="示范区域 demo region")

    return issue


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
        for bundle in bundles:
            resp = transact(db, _loader(ctx, bundle))
            if resp.status != 200:
                raise YilianError(Category.INTERNAL, "the demo region failed to load")
            holders += _created_ids(bundle, resp, region.card_holders)
            progress.advance(task, len(bundle.get("entry", [])))
        # Cards come from the card system, as a real region's would: numbers by its rules
        # (the ID number, else a platform number), encrypted at rest, each one active.
        cards = progress.add_task("发放居民健康卡 issuing health cards", total=len(holders))
        for start in range(0, len(holders), CARDS_PER_TRANSACTION):
            chunk = holders[start : start + CARDS_PER_TRANSACTION]
            transact(db, _issue_cards(ctx, chunk))
            progress.advance(cards, len(chunk))
    summary = region.summary()
    table = Table(title=f"示范区域 Demo region in {describe(db)}")
    table.add_column("resource type")
    table.add_column("resources", justify="right")
    for rtype, n in sorted(summary.items()):
        table.add_row(rtype, str(n))
    table.add_row("[bold]total", str(sum(summary.values())))
    table.add_row("居民健康卡 health cards issued", str(len(holders)))
    console.print(table)
    return {
        "demo": ", ".join(f"{k} {v}" for k, v in sorted(summary.items())) + f"; {len(holders)} health cards"
    }
