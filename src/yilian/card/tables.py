"""Storage of health cards and of every change of their state.

A card number is, for most residents, their ID number, so it is never stored readable: the
row keeps a keyed blind index of it (``number_key``, HMAC with the blind-index key, the same
stand-in the FHIR search index uses) for lookups, and the number itself encrypted
(``number_sealed``) for display. ``holder_key`` is the blind index of the holder's ID number,
shared by all their cards, so the next card's issue sequence and "already holds a card" are
found without decrypting anything.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from yilian.db.schema import metadata

card = Table(
    "card",
    metadata,
    Column("card_id", String(36), primary_key=True),
    Column("number_key", String(40), nullable=False, unique=True),
    Column("number_sealed", Text, nullable=False),
    Column("holder_key", String(40), nullable=True),
    Column("kind", String(16), nullable=False),  # resident-id | platform
    Column("sequence", Integer, nullable=False),  # 1 for a holder's first card
    Column("patient_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("district", String(12), nullable=True),  # GB/T 2260 code, for the indicators
    Column("residence", String(8), nullable=True),  # urban | rural
    Column("origin", String(8), nullable=False),  # single | batch
    Column("replaces", String(36), nullable=True),  # card_id of the card this one replaced
    Column("replaced_by", String(36), nullable=True),
    Column("issued_at", BigInteger, nullable=False),  # µs since epoch
    Column("status_at", BigInteger, nullable=False),
    Column("status_reason", Text, nullable=True),
    Index("ix_card_patient", "patient_id"),
    Index("ix_card_holder", "holder_key"),
    Index("ix_card_status_district", "status", "district"),
)

# Append-only: one row per transition, with who, when and why. ``seq`` orders a card's events
# even when two share a microsecond.
card_event = Table(
    "card_event",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("card_id", String(36), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("action", String(24), nullable=False),
    Column("from_status", String(16), nullable=True),
    Column("to_status", String(16), nullable=False),
    Column("actor", String(160), nullable=False),
    Column("reason", Text, nullable=True),
    Index("ix_card_event_card", "card_id", "seq", unique=True),
    Index("ix_card_event_at", "at"),
)
