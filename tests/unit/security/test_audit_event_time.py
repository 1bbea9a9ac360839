"""An AuditEvent's ``recorded`` says to the microsecond what its row's column says: ``verify``
compares the two, and an auditor reads the JSON."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from yilian.fhir.search.values import date_range
from yilian.security.audit import AuditRecord, to_audit_event

RECORD = AuditRecord(
    action="R", subtype="read", agent_kind="system", agent_id="client-1", entity="Patient/p-1"
)
# From the epoch to the end of 2999, in microseconds.
_US = st.integers(min_value=0, max_value=32_503_680_000 * 1_000_000 - 1)


@settings(max_examples=2000, deadline=None)
@given(st.lists(_US, min_size=1, max_size=4))
def test_recorded_is_the_column_to_the_microsecond_in_utc(moments: list[int]) -> None:
    # Several moments in turn, some within one second: the formatting keeps the last second.
    for us in [*moments, moments[0] + 1, moments[0]]:
        text = to_audit_event(RECORD, us)["recorded"]
        span = date_range(text)
        assert span is not None and span[0] == us
        expected = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)
        assert text == expected.isoformat(timespec="microseconds").replace("+00:00", "Z")
