"""Storage of outbound delivery: destinations, their sequence counters, and the outbox.

- ``outbound_destination``: where changes go — a FHIR Subscription's rest-hook endpoint, or the
  city node a district forwards to — with its delivery state (consecutive failures, last
  error) and the lease a delivery worker holds while it works on it.
- ``outbound_sequence``: the next sequence number per destination. Kept apart from the
  destination row so that a worker holding a destination never blocks the writers that
  number new messages for it.
- ``outbound_message``: the outbox. One row per (write, destination), inserted in the write's
  own transaction (a rollback leaves no row, a commit cannot lose it). ``seq`` is numbered
  just before commit while the destination's counter row is locked, so per destination the
  order of ``seq`` is the order of commits and has no gaps.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text, UniqueConstraint

from yilian.db.schema import SurrogateKey, metadata

destination = Table(
    "outbound_destination",
    metadata,
    Column("dest_id", String(200), primary_key=True),  # "Subscription/<id>" or "forward:<url>"
    Column("kind", String(16), nullable=False),  # subscription | forward
    Column("active", Boolean, nullable=False),
    Column("res_type", String(64), nullable=True),  # subscriptions: the criteria's resource type
    Column("criteria", Text, nullable=True),  # subscriptions: the search, e.g. "Observation?code=…"
    Column("endpoint", Text, nullable=False),  # rest-hook URL, or the city node's root URL
    Column("payload", String(64), nullable=True),  # subscriptions: None (empty notification) or a MIME type
    Column("headers", Text, nullable=True),  # subscriptions: JSON list of "Name: value"
    Column("owner", Text, nullable=True),  # JSON: who created it (their access decides what is sent)
    Column("failures", Integer, nullable=False, default=0),  # consecutive failed attempts
    Column("last_error", Text, nullable=True),
    Column("last_error_at", BigInteger, nullable=True),
    Column("last_delivered_at", BigInteger, nullable=True),
    # Delivery is in order, so a failure holds the whole destination back until this time.
    Column("next_try", BigInteger, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", BigInteger, nullable=True),  # µs since epoch
    Column("created", BigInteger, nullable=False),
    Column("updated", BigInteger, nullable=False),
    Index("ix_outbound_destination_kind", "active", "kind", "res_type"),
)

sequence = Table(
    "outbound_sequence",
    metadata,
    Column("dest_id", String(200), primary_key=True),
    Column("next_seq", BigInteger, nullable=False),
)

message = Table(
    "outbound_message",
    metadata,
    Column("msg_id", SurrogateKey, primary_key=True, autoincrement=True),
    Column("dest_id", String(200), nullable=False),
    Column("seq", BigInteger, nullable=True),  # None only inside the writing transaction
    Column("txn", String(32), nullable=True),  # the writing transaction's token, until numbered
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),  # pending | delivered | withheld | cancelled
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_try", BigInteger, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("delivered", BigInteger, nullable=True),
    UniqueConstraint("dest_id", "seq"),
    Index("ix_outbound_message_pending", "state", "dest_id", "seq"),
    Index("ix_outbound_message_txn", "txn"),
)
