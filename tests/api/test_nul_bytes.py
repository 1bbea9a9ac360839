"""A NUL character anywhere a caller can put text (a path segment, a query value, a JSON string)
is refused as bad input, and audited, on both databases: PostgreSQL cannot store it in text, and
that must never surface as a server error (schemathesis found one on the steward desk)."""

from __future__ import annotations

import httpx
import pytest

from tests.support.server import RunningServer


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("POST", "/api/mpi/events/%00/unmerge", {"reason": "test"}),
        ("GET", "/api/mpi/persons/%00", None),
        ("GET", "/api/cards/%00", None),
        ("GET", "/api/mpi/reviews?status=%00", None),
        ("POST", "/api/mpi/links", {"patient_id": "a\u0000b", "person_id": "p", "reason": "x"}),
        ("GET", "/fhir/Patient/%00", None),
        ("GET", "/fhir/Patient?name=%00", None),
        ("GET", "/fhir/Patient?_id=a%00b", None),
        ("GET", "/fhir/Observation?code=http://loinc.org|%00", None),
        ("POST", "/fhir/Patient", {"resourceType": "Patient", "name": [{"family": "王\u0000"}]}),
    ],
)
def test_a_nul_character_is_bad_input_never_a_server_error(
    server: RunningServer, auth: dict[str, str], method: str, url: str, body: object
) -> None:
    r = httpx.request(method, server.base + url, json=body, headers=auth, timeout=30)
    assert 400 <= r.status_code < 500, (url, r.status_code, r.text[:300])
