"""Patient/{id}/$everything: the patient's compartment plus what it refers to."""

from __future__ import annotations

from dataclasses import dataclass

from yilian.db import UnitOfWork
from yilian.fhir.interactions.context import FhirContext
from yilian.fhir.interactions.outcome import Resource
from yilian.fhir.interactions.read import read
from yilian.fhir.interactions.search import run
from yilian.fhir.model import model
from yilian.fhir.search import params as sp
from yilian.kernel.errors import Category, YilianError


@dataclass
class EverythingPage:
    matches: list[Resource]
    included: list[Resource]
    total: int | None
    next_cursor: str | None
    used: list[tuple[str, str]]


def everything(
    uow: UnitOfWork, ctx: FhirContext, patient_id: str, pairs: list[tuple[str, str]]
) -> EverythingPage:
    read(uow, ctx, "Patient", patient_id)  # 404 / 410 before anything else
    types: list[str] | None = None
    req = sp.SearchRequest(
        resource_types=None,
        count=min(ctx.settings.default_page_size, ctx.settings.max_page_size),
        max_count=ctx.settings.max_page_size,
    )
    for name, value in pairs:
        if name == "_type":
            wanted = [t.strip() for t in value.split(",") if t.strip()]
            for t in wanted:
                if not model().is_resource_type(t):
                    raise YilianError(Category.INVALID, f"_type names unknown resource type {t!r}")
            types = sorted(set(wanted))
            req.resource_types = types
            req.used.append((name, value))
        elif name == "_since":
            f = sp.resolve_filter("Patient", "_lastUpdated", [f"ge{value}"])
            assert f is not None
            req.filters.append(f)
            req.used.append((name, value))
        elif name == "_count":
            try:
                req.count = max(1, min(int(value), ctx.settings.max_page_size))
            except ValueError:
                raise YilianError(Category.INVALID, f"_count must be a whole number, not {value!r}") from None
            req.used.append((name, str(req.count)))
        elif name == "_cursor":
            req.cursor = value
            req.used.append((name, value))
        elif name in ("_format", "_pretty", "start", "end"):
            continue
        else:
            raise YilianError(Category.INVALID, f"$everything does not take the parameter {name!r}")
    # Resources the compartment refers to (organizations, practitioners, medications…) are part of
    # the result set itself, so paging never returns one twice.
    result = run(uow, ctx, req, compartment=("Patient", patient_id), everything=True)
    return EverythingPage(result.matches, result.included, result.total, result.next_cursor, req.used)
