"""``yilian demo``: load the demo region into an empty database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import func, select

from yilian.cli.common import console, err_console, settings_from_env
from yilian.db import Database, UnitOfWork
from yilian.db.uow import transact
from yilian.fhir import FhirContext, FhirRequest, FhirResponse, dispatch
from yilian.fhir.store.tables import resource
from yilian.kernel.errors import Category, YilianError


def _loader(ctx: FhirContext, bundle: dict[str, Any]) -> Callable[[UnitOfWork], FhirResponse]:
    def load(uow: UnitOfWork) -> FhirResponse:
        return dispatch(uow, ctx, FhirRequest("POST", "", body=bundle))

    return load


def load_demo(db: Database, *, residents: int) -> dict[str, Any]:
    with db.engine.connect() as conn:
        existing = conn.execute(select(func.count()).select_from(resource)).scalar_one()
    if existing:
        console.print(f"demo database already holds {existing} resources; serving it as it is")
        return {"demo": f"{existing} resources"}
    from yilian.demo import build_demo_region

    region = build_demo_region(residents=residents)
    bundles = region.bundles()
    ctx = FhirContext(base_url="urn:yilian:demo", settings=settings_from_env())
    total = sum(len(b.get("entry", [])) for b in bundles)
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err_console
    ) as progress:
        task = progress.add_task("生成示范区域 building the demo region", total=total)
        for bundle in bundles:
            resp = transact(db, _loader(ctx, bundle))
            if resp.status != 200:
                raise YilianError(Category.INTERNAL, "the demo region failed to load")
            progress.advance(task, len(bundle.get("entry", [])))
    summary = region.summary()
    console.print("示范区域 demo region: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.items())))
    return {"demo": ", ".join(f"{k} {v}" for k, v in sorted(summary.items()))}
