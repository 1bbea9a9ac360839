"""The queue of FHIR views to (re)write: what the ledger's writers add to, in their transaction.

Subjects: ``charge:<charge id>`` (its Claim and ClaimResponse), ``wallet:<patient id>`` (the
card wallet's Account; the same text as the wallet's ledger account id) and ``day:<YYYY-MM-DD>``
(a closed day's PaymentReconciliations). :mod:`yilian.payments.publication` drains it.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, insert

from yilian.kernel import clock
from yilian.payments import tables as t
from yilian.payments.model import to_us

CHARGE, WALLET, DAY = "charge:", "wallet:", "day:"


def enqueue(conn: Connection, subjects: Iterable[str]) -> None:
    """Queue ``subjects`` for publication in ``conn``'s transaction (one statement)."""
    now = to_us(clock.now())
    rows = [{"subject": s, "attempts": 0, "queued": now} for s in dict.fromkeys(subjects)]
    if rows:
        conn.execute(insert(t.publication), rows[0] if len(rows) == 1 else rows)
