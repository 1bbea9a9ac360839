"""A resident sees a child's record through a parent link only when the link cannot be forged."""

from __future__ import annotations

from typing import Any

from tests.integration.security.lookalikes import (
    ID_A,
    ID_B,
    ID_M,
    as_,
    encounter,
    org,
    patient,
    put,
    resident,
    seed,
)
from yilian.db import UnitOfWork
from yilian.kernel.naming import PRC_RESIDENT_ID
from yilian.security.people import children_of


def related(rid: str, child: str, parent_id_number: str) -> dict[str, Any]:
    return {
        "resourceType": "RelatedPerson",
        "id": rid,
        "patient": {"reference": f"Patient/{child}"},
        "identifier": [{"system": PRC_RESIDENT_ID, "value": parent_id_number}],
        "relationship": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "MTH"}]}
        ],
    }


def test_a_parent_link_counts_only_when_an_institution_or_the_operator_wrote_it_and_it_is_plausible(
    uow: UnitOfWork,
) -> None:
    seed(uow)
    put(uow, patient("pm", ID_M, birth="1985-03-01"))  # a mother, resident with an account
    put(uow, patient("kid", None, birth="2020-06-01"))
    put(uow, encounter("enc-kid", "kid", "org-a"))
    # C has no reason for the child: its link is refused, like any write into the record.
    assert as_(uow, org("org-c"), "PUT", "RelatedPerson/rp-c", related("rp-c", "kid", ID_M)).status == 422
    assert children_of(uow, "pm") == set()
    # The hospital that treats the child records the mother: that counts.
    assert as_(uow, org("org-a"), "PUT", "RelatedPerson/rp-a", related("rp-a", "kid", ID_M)).status == 201
    assert children_of(uow, "pm") == {"kid"}
    # A link that makes an adult of the same age her "child" is not plausible, whoever wrote it.
    put(uow, related("rp-pa", "pa", ID_M))
    put(uow, related("rp-pb", "pb", ID_A))
    assert children_of(uow, "pm") == {"kid"}
    assert children_of(uow, "pa") == set()
    # A resident may write into her child's record, but cannot make someone else a parent.
    mother = resident("pm", "kid", scopes="patient/*.cruds")
    assert as_(uow, mother, "PUT", "RelatedPerson/rp-forged", related("rp-forged", "kid", ID_B)).status == 201
    assert children_of(uow, "pb") == set()
    # Rewritten by the resident, the hospital's link stops counting too.
    assert as_(uow, mother, "PUT", "RelatedPerson/rp-a", related("rp-a", "kid", ID_M)).status == 200
    assert children_of(uow, "pm") == set()
