"""Storage of the HL7 v2 intake.

- ``hl7_inbox``: every message as received (bytes, peer, time), written in its own small
  transaction before anything else is tried, so nothing received is lost whatever fails later.
- ``hl7_message``: the message log — one row per message stored, keyed by sender (MSH-3,
  MSH-4), control id (MSH-10) and a digest of the content, with the ACK that was sent. It
  commits in the same transaction as the FHIR writes, so a row here means the data landed.
- ``hl7_dead_letter``: messages that failed, with the reason and where in the message, the ACK
  sent, and whether a later replay or re-send has stored them.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from yilian.db.schema import Document, SurrogateKey, metadata

inbox = Table(
    "hl7_inbox",
    metadata,
    Column("inbox_id", String(36), primary_key=True),
    Column("received", BigInteger, nullable=False),  # microseconds since the epoch
    Column("peer", String(160), nullable=True),
    # The registered system client the message came from (its certificate, or the listener's
    # --as-client in the insecure mode): a replay writes under that client's access policy.
    Column("client_id", String(64), nullable=True),
    Column("raw", Document, nullable=False),
    Column("state", String(16), nullable=False),  # received | stored | duplicate | failed
    Index("ix_hl7_inbox_received", "received"),
    # The listener's minute sweep for stranded messages (exchange/stranded.py) reads by state.
    Index("ix_hl7_inbox_state", "state", "received"),
)

message = Table(
    "hl7_message",
    metadata,
    Column("sending_application", String(180), primary_key=True),
    Column("sending_facility", String(180), primary_key=True),
    Column("control_id", String(199), primary_key=True),
    # sha256 of the message with segment terminators normalised: a control id re-used for
    # different content (some senders restart their counters) is a new message, not a resend.
    Column("digest", String(64), primary_key=True),
    Column("inbox_id", String(36), nullable=False),
    Column("message_type", String(24), nullable=False),
    Column("version", String(16), nullable=True),
    Column("charset", String(32), nullable=True),
    Column("stored", BigInteger, nullable=False),
    Column("ack_code", String(2), nullable=False),
    Column("ack", Document, nullable=False),
    Column("resources", Text, nullable=False),  # JSON list of "Type/id" written
)

dead_letter = Table(
    "hl7_dead_letter",
    metadata,
    Column("dead_id", SurrogateKey, primary_key=True, autoincrement=True),
    Column("inbox_id", String(36), nullable=False),
    Column("failed", BigInteger, nullable=False),
    Column("sending_application", String(180), nullable=True),
    Column("sending_facility", String(180), nullable=True),
    Column("control_id", String(199), nullable=True),
    Column("message_type", String(24), nullable=True),
    Column("digest", String(64), nullable=False),
    Column("ack_code", String(2), nullable=False),
    Column("error_code", String(8), nullable=False),
    Column("location", String(64), nullable=True),
    Column("reason", Text, nullable=False),
    Column("ack", Document, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # open | resolved
    Column("resolved", BigInteger, nullable=True),
    Index("ix_hl7_dead_letter_status", "status", "dead_id"),
    Index("ix_hl7_dead_letter_digest", "digest"),
)
