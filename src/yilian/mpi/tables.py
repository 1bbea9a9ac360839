"""Storage of the patient index: persons, which Patient records are each person, the blocking
keys that find candidates, the review queue, the history of every link decision, the model.

A *record* is a FHIR Patient resource (one registration at one institution); its demographics
stay in the FHIR store (sealed there), so nothing sensitive is copied here. Blocking keys are
keyed hashes (HMAC with the blind-index key), so an ID number or phone cannot be recovered from
this table by guessing.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Integer, String, Table, Text

from yilian.db.schema import metadata

person = Table(
    "mpi_person",
    metadata,
    Column("person_id", String(36), primary_key=True),
    Column("status", String(16), nullable=False),  # active | merged
    Column("merged_into", String(36), nullable=True),
    Column("created", BigInteger, nullable=False),
    Column("updated", BigInteger, nullable=False),
)

# One row per Patient record: the person it is. ``how`` says why: new (no match), auto (certain
# match), manual (a steward linked it), review (a steward accepted a probable match), merge.
record_link = Table(
    "mpi_link",
    metadata,
    Column("patient_id", String(64), primary_key=True),
    Column("person_id", String(36), nullable=False),
    Column("how", String(16), nullable=False),
    Column("probability", Float, nullable=True),
    Column("source", String(64), nullable=True),  # the registering institution (Organization id)
    Column("updated", BigInteger, nullable=False),
    Index("ix_mpi_link_person", "person_id"),
)

block_key = Table(
    "mpi_block",
    metadata,
    Column("key", BigInteger, primary_key=True),
    Column("patient_id", String(64), primary_key=True),
    Index("ix_mpi_block_patient", "patient_id"),
)

review = Table(
    "mpi_review",
    metadata,
    Column("review_id", String(36), primary_key=True),
    Column("patient_id", String(64), nullable=False),  # the new record
    Column("candidate_person_id", String(36), nullable=False),
    Column("candidate_patient_id", String(64), nullable=False),  # its best-matching record
    Column("probability", Float, nullable=False),
    Column("grade", String(16), nullable=False),
    Column("evidence", Text, nullable=False),  # JSON: field-by-field levels and weights, rules
    Column("status", String(16), nullable=False),  # open | accepted | rejected | obsolete
    Column("created", BigInteger, nullable=False),
    Column("decided", BigInteger, nullable=True),
    Column("decided_by", String(128), nullable=True),
    Column("reason", Text, nullable=True),
    Index("ix_mpi_review_status", "status", "created"),
    Index("ix_mpi_review_patient", "patient_id", "candidate_person_id"),
)

# Every decision about who is who, with who made it and why; a merge keeps what it moved so that
# unmerge can put it back.
event = Table(
    "mpi_event",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("at", BigInteger, nullable=False),
    Column("action", String(24), nullable=False),
    Column("actor", String(160), nullable=False),
    Column("reason", Text, nullable=True),
    Column("person_id", String(36), nullable=True),
    Column("other_person_id", String(36), nullable=True),
    Column("patient_id", String(64), nullable=True),
    Column("detail", Text, nullable=True),  # JSON
    Column("undone_by", String(36), nullable=True),
    Index("ix_mpi_event_person", "person_id", "at"),
    Index("ix_mpi_event_patient", "patient_id", "at"),
)

model = Table(
    "mpi_model",
    metadata,
    Column("model_id", String(36), primary_key=True),
    Column("created", BigInteger, nullable=False),
    Column("created_by", String(160), nullable=False),
    Column("records", Integer, nullable=False),
    Column("body", Text, nullable=False),  # MatchModel JSON
)
