"""Scopes cover every type a search looks into (chains, ``_has``), and count only in their
principal's context (``system/`` clients, ``user/`` staff, ``patient/`` residents)."""

from __future__ import annotations

import pytest

from tests.integration.security.lookalikes import (
    as_,
    observation,
    org,
    resident,
    seed,
)
from yilian.db import UnitOfWork
from yilian.security.principal import STAFF, Principal
from yilian.security.scopes import parse_scopes

SCOPES = [
    ("system/Observation.rs", "Observation?subject:Patient.birthdate=1980-05-12", 403),
    ("system/Observation.rs", "Observation?subject.birthdate=1980-05-12", 403),
    ("system/Observation.rs", "Observation?patient.identifier=urn:test:mrn|mrn-pb", 403),
    ("system/Observation.rs system/Patient.s", "Observation?subject:Patient.birthdate=1980-05-12", 200),
    ("system/Observation.rs system/Patient.s", "Observation?subject.birthdate=1980-05-12", 200),
    ("system/Patient.rs", "Patient?_has:Observation:patient:code=8480-6", 403),
    ("system/Patient.rs system/Observation.s", "Patient?_has:Observation:patient:code=8480-6", 200),
    ("system/Encounter.rs", "Encounter?_has:Observation:encounter:subject.name=王芳", 403),
    (
        "system/Encounter.rs system/Observation.s",
        "Encounter?_has:Observation:encounter:subject:Patient.name=王芳",
        403,
    ),
    ("user/*.cruds", "Patient/pb", 403),
    ("patient/*.rs", "Patient/pb", 403),
    ("patient/*.rs", "Observation?subject=Patient/pb", 403),
    ("system/*.rs user/*.cruds", "Patient/pb", 200),
]


@pytest.mark.parametrize(("scopes", "url", "status"), SCOPES, ids=[f"{s} {u}" for s, u, _ in SCOPES])
def test_scopes_cover_every_type_a_search_looks_into_and_only_in_their_context(
    uow: UnitOfWork, scopes: str, url: str, status: int
) -> None:
    seed(uow)
    got = as_(uow, org("org-b", scopes), "GET", url)
    assert got.status == status, got
    if status == 200 and got.json.get("resourceType") == "Bundle":
        assert got.json["total"] == 1  # pb's own, nothing of pa


def test_people_scopes_count_only_for_people_of_that_kind(uow: UnitOfWork) -> None:
    seed(uow)
    staff = Principal(
        kind=STAFF, subject="dr.zhou", scopes=parse_scopes("user/*.rs"), org_id="org-b", user_id="u-1"
    )
    assert as_(uow, staff, "GET", "Patient/pb").status == 200
    staff_system = Principal(
        kind=STAFF, subject="dr.qian", scopes=parse_scopes("system/*.cruds"), org_id="org-b", user_id="u-2"
    )
    assert as_(uow, staff_system, "GET", "Patient/pb").status == 403
    assert as_(uow, resident("pb", scopes="user/*.rs"), "GET", "Patient/pb").status == 403
    assert as_(uow, resident("pb"), "GET", "Patient/pb").status == 200
    assert as_(uow, org("org-b", "patient/*.cruds"), "POST", "Observation", observation("pb")).status == 403
