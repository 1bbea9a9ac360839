"""Deletions stay in the record they came from, and an id in a record the caller may not see
answers like a read of it. Every refusal is compared with what the same request about a
resource that does not exist gets: they must not be told apart.
"""

from __future__ import annotations

from tests.integration.security.lookalikes import (
    as_,
    encounter,
    observation,
    org,
    patient,
    put,
    same_answer,
    seed,
)
from yilian.db import UnitOfWork

# --- deleted resources and overwrites -----------------------------------------------------


def test_deletions_are_seen_only_by_those_who_could_see_what_was_deleted(uow: UnitOfWork) -> None:
    seed(uow)
    a, c = org("org-a"), org("org-c")
    assert as_(uow, a, "DELETE", "Observation/obs-pa").status == 204
    assert as_(uow, a, "GET", "Observation/obs-pa").status == 410
    assert as_(uow, a, "GET", "Observation/obs-pa/_history/2").status == 410
    for url in ("Observation/obs-pa", "Observation/obs-pa/_history/2", "Observation/obs-pa/_history/1", "Observation/obs-pa/_history"):
        assert as_(uow, c, "GET", url).status == 404, url
    same_answer(as_(uow, c, "GET", "Observation/obs-pa/_history/9"), as_(uow, c, "GET", "Observation/nobody/_history/9"), "obs-pa", "nobody")
    for url in ("_history", "Observation/_history", "Observation/_history?_count=100"):
        got = as_(uow, c, "GET", url)
        assert "Observation/obs-pa" not in {e["request"]["url"] for e in got.json.get("entry", [])}, url
    mine = as_(uow, a, "GET", "Observation/_history")
    assert any(e["request"]["method"] == "DELETE" and e["request"]["url"] == "Observation/obs-pa" for e in mine.json["entry"])


def test_an_id_in_a_record_the_caller_may_not_see_answers_like_a_read(uow: UnitOfWork) -> None:
    seed(uow)
    c = org("org-c")
    as_(uow, org("org-a"), "DELETE", "Observation/obs-pa")
    for rtype, rid, body in (("Encounter", "enc-pa", encounter("enc-pa", "pc", "org-c")), ("Observation", "obs-pa", observation("pc", "obs-pa"))):
        put(uow, patient("pc", None), c)
        written = as_(uow, c, "PUT", f"{rtype}/{rid}", body)
        read = as_(uow, c, "GET", f"{rtype}/{rid}")
        patched = as_(uow, c, "PATCH", f"{rtype}/{rid}", [{"op": "replace", "path": "/status", "value": "cancelled"}], content_type="application/json-patch+json")
        assert written.status == read.status == patched.status == 404
        assert written.json == read.json == patched.json
    assert as_(uow, org("org-a"), "GET", "Encounter/enc-pa").json["subject"]["reference"] == "Patient/pa"
