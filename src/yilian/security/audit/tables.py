"""Storage of the audit log: the events, the head of their hash chain, and retention checkpoints.

The database itself keeps ``audit_event`` and ``audit_checkpoint`` append-only (triggers created
by the migration ``2026_12_03_0003_audit_log``): a batch-mode migration that rebuilds either
table on SQLite drops those triggers and must create them again.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text

from yilian.db.schema import Document, SurrogateKey, metadata

audit_event = Table(
    "audit_event",
    metadata,
    Column("id", SurrogateKey, primary_key=True, autoincrement=True),
    Column("recorded", BigInteger, nullable=False),  # µs since epoch
    Column("action", String(1), nullable=False),  # C R U D E (FHIR AuditEvent.action)
    Column("subtype", String(32), nullable=False),  # restful-interaction code, or login, access-denied…
    Column("outcome", Integer, nullable=False),  # 0 | 4 | 8 | 12
    Column("agent_kind", String(16), nullable=False),  # system | user | patient | operator
    Column("agent_id", String(128), nullable=False),  # client id or user name
    Column("org_id", String(64), nullable=True),  # requesting institution; None = the platform operator
    Column("patient_keys", Text, nullable=True),  # space-separated patient ids, for LIKE searches
    Column("entity", Text, nullable=True),  # Type/id accessed, or the search query
    Column("purpose", String(32), nullable=True),  # purpose of use (break-the-glass: BTG, ETREAT)
    Column("flagged", Boolean, nullable=False),  # for review: break-glass, denials
    Column("source_ip", String(64), nullable=True),
    Column("content", Document, nullable=False),  # the FHIR AuditEvent JSON, without id
    # Sealing: NULL until the sealer chains the row; the trigger allows exactly that one update.
    Column("seq", BigInteger, nullable=True, unique=True),
    Column("prev_hash", String(64), nullable=True),
    Column("chain_hash", String(64), nullable=True),
    Index("ix_audit_event_recorded", "recorded", "id"),
    Index("ix_audit_event_agent", "agent_id", "recorded"),
    Index("ix_audit_event_org", "org_id", "recorded"),
    Index("ix_audit_event_action", "action", "subtype", "recorded"),
    Index("ix_audit_event_flagged", "flagged", "recorded"),
    # No index on entity: a search query can exceed PostgreSQL's B-tree entry limit.
    # AUTOINCREMENT: SQLite must never hand out an id again once pruning has removed it.
    sqlite_autoincrement=True,
)

# One row (id = 1): where the chain ends, and the gap the sealer is waiting on, if any. It is a
# cache of the chain's tail plus the sealer's lock; verify recomputes everything from the rows.
audit_chain_head = Table(
    "audit_chain_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),  # last seq assigned (0: none yet)
    Column("chain_hash", String(64), nullable=False),  # chain_hash of that row (zeros: none yet)
    Column("last_id", BigInteger, nullable=False),  # every id up to here is sealed or known rolled back
    Column("gap_id", BigInteger, nullable=True),  # first missing id being waited for
    Column("gap_since", BigInteger, nullable=True),  # when it was first seen (µs, wall clock)
)

# What retention removed: every row up to ``up_to_seq``, whose chain hash lets verify go on.
audit_checkpoint = Table(
    "audit_checkpoint",
    metadata,
    Column("id", SurrogateKey, primary_key=True, autoincrement=True),
    Column("up_to_seq", BigInteger, nullable=False, unique=True),
    Column("chain_hash", String(64), nullable=False),
    Column("pruned_before", BigInteger, nullable=False),  # the cut-off (µs) the prune was asked for
    Column("rows_pruned", BigInteger, nullable=False),
    Column("created", BigInteger, nullable=False),
)

HEAD_ID = 1
GENESIS_HASH = "0" * 64
