"""The queue of FHIR views to (re)write: what the ledger's writers add to, in their transaction.

Subjects: ``charge:<charge id>`` (its Claim and ClaimResponse), ``wallet:<patient id>`` (the
card wallet's Account; the same text as the wallet's ledger account id) and ``day:<YYYY-MM-DD>``
(a closed day's PaymentReconciliations). :mod:`yilian.payments.publication` drains it.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import BigInteger, Connection, Integer, String, bindparam, insert

from yilian.db.statements import Batch, Family
from yilian.kernel import clock
from yilian.payments import tables as t
from yilian.payments.model import to_us

CHARGE, WALLET, DAY = "charge:", "wallet:", "day:"


_q = t.publication
_ENQUEUE = Family(
    lambda _, n: insert(_q).values(
        [
            {
                "subject": bindparam(f"subject_{i}", type_=String),
                "attempts": bindparam("attempts", type_=Integer),
                "queued": bindparam("queued", type_=BigInteger),
            }
            for i in range(n)
        ]
    )
)


def enqueue(target: Connection | Batch, subjects: Iterable[str]) -> None:
    """Queue ``subjects`` for publication in the transaction (one statement), now on a
    connection or when a batch of the transaction's writes is sent."""
    rows = [{"subject": s} for s in dict.fromkeys(subjects)]
    if not rows:
        return
    shared = {"attempts": 0, "queued": to_us(clock.now())}
    if isinstance(target, Batch):
        _ENQUEUE.defer(target, shared, rows)
    else:
        _ENQUEUE.run(target, shared, rows)
