"""audit log

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 09:30:00.000000

The audit log's tables, and the triggers that keep it append-only on both databases: an UPDATE
of ``audit_event`` may only seal a row (set seq, prev_hash and chain_hash from NULL, nothing
else changed); a DELETE only removes a row older than 183 days that is sealed and covered by a
retention checkpoint (``yilian audit prune`` writes the checkpoint first); checkpoints are never
changed or removed; on PostgreSQL neither table can be truncated. The column lists below are
this revision's own: a later revision that changes the table writes its triggers again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql, sqlite

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

RETENTION_US = 183 * 86400 * 1_000_000
UNCHANGED = (
    "id", "recorded", "action", "subtype", "outcome", "agent_kind", "agent_id", "org_id",
    "patient_keys", "entity", "purpose", "flagged", "source_ip", "content",
)  # fmt: skip
SEALING = (
    "OLD.seq IS NULL AND OLD.prev_hash IS NULL AND OLD.chain_hash IS NULL "
    "AND NEW.seq IS NOT NULL AND NEW.prev_hash IS NOT NULL AND NEW.chain_hash IS NOT NULL"
)
UPDATE_REFUSED = "audit_event is append-only: a row may be sealed once, nothing else in it may change"
DELETE_REFUSED = (
    "audit_event is append-only: only rows older than 183 days, sealed and covered by a "
    "retention checkpoint (yilian audit prune), may be deleted"
)
CHECKPOINT_REFUSED = "audit_checkpoint is append-only"

SQLITE_TRIGGERS = {
    "audit_event_no_update": f"""
        CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event
        BEGIN
            SELECT RAISE(ABORT, '{UPDATE_REFUSED}')
            WHERE NOT ({SEALING} AND {" AND ".join(f"NEW.{c} IS OLD.{c}" for c in UNCHANGED)});
        END""",
    "audit_event_no_delete": f"""
        CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event
        BEGIN
            SELECT RAISE(ABORT, '{DELETE_REFUSED}')
            WHERE NOT (
                OLD.recorded < CAST(strftime('%s', 'now') AS INTEGER) * 1000000 - {RETENTION_US}
                AND OLD.seq IS NOT NULL
                AND EXISTS (SELECT 1 FROM audit_checkpoint WHERE audit_checkpoint.up_to_seq >= OLD.seq)
            );
        END""",
    "audit_checkpoint_no_update": f"""
        CREATE TRIGGER audit_checkpoint_no_update BEFORE UPDATE ON audit_checkpoint
        BEGIN SELECT RAISE(ABORT, '{CHECKPOINT_REFUSED}'); END""",
    "audit_checkpoint_no_delete": f"""
        CREATE TRIGGER audit_checkpoint_no_delete BEFORE DELETE ON audit_checkpoint
        BEGIN SELECT RAISE(ABORT, '{CHECKPOINT_REFUSED}'); END""",
}

# The checkpoint lookup names the trigger's own schema: a same-named table earlier on the
# search_path (a temporary one) must not be able to permit deletes.
POSTGRES_FUNCTIONS = {
    "audit_event_guard": f"""
        CREATE FUNCTION audit_event_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            covered boolean;
        BEGIN
            IF TG_OP = 'DELETE' THEN
                IF OLD.recorded < CAST(extract(epoch FROM now()) * 1000000 AS bigint) - {RETENTION_US}
                   AND OLD.seq IS NOT NULL THEN
                    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.audit_checkpoint WHERE up_to_seq >= $1)', TG_TABLE_SCHEMA)
                        INTO covered USING OLD.seq;
                    IF covered THEN
                        RETURN OLD;
                    END IF;
                END IF;
                RAISE EXCEPTION '{DELETE_REFUSED}' USING ERRCODE = 'restrict_violation';
            END IF;
            IF {SEALING}
               AND ({", ".join(f"NEW.{c}" for c in UNCHANGED)})
                   IS NOT DISTINCT FROM ({", ".join(f"OLD.{c}" for c in UNCHANGED)}) THEN
                RETURN NEW;
            END IF;
            RAISE EXCEPTION '{UPDATE_REFUSED}' USING ERRCODE = 'restrict_violation';
        END
        $$""",
    "audit_checkpoint_guard": f"""
        CREATE FUNCTION audit_checkpoint_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '{CHECKPOINT_REFUSED}' USING ERRCODE = 'restrict_violation';
        END
        $$""",
    "audit_no_truncate": """
        CREATE FUNCTION audit_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the audit log cannot be truncated' USING ERRCODE = 'restrict_violation';
        END
        $$""",
}
POSTGRES_TRIGGERS = {
    "audit_event_append_only": (
        "CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_event "
        "FOR EACH ROW EXECUTE FUNCTION audit_event_guard()"
    ),
    "audit_event_no_truncate": (
        "CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_no_truncate()"
    ),
    "audit_checkpoint_append_only": (
        "CREATE TRIGGER audit_checkpoint_append_only BEFORE UPDATE OR DELETE ON audit_checkpoint "
        "FOR EACH ROW EXECUTE FUNCTION audit_checkpoint_guard()"
    ),
    "audit_checkpoint_no_truncate": (
        "CREATE TRIGGER audit_checkpoint_no_truncate BEFORE TRUNCATE ON audit_checkpoint "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_no_truncate()"
    ),
}


def upgrade() -> None:
    op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("chain_hash", sa.String(length=64), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("gap_id", sa.BigInteger(), nullable=True),
        sa.Column("gap_since", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_chain_head")),
    )
    op.create_table(
        "audit_checkpoint",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("up_to_seq", sa.BigInteger(), nullable=False),
        sa.Column("chain_hash", sa.String(length=64), nullable=False),
        sa.Column("pruned_before", sa.BigInteger(), nullable=False),
        sa.Column("rows_pruned", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoint")),
        sa.UniqueConstraint("up_to_seq", name=op.f("uq_audit_checkpoint_up_to_seq")),
    )
    op.create_table(
        "audit_event",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("recorded", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(length=1), nullable=False),
        sa.Column("subtype", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.Column("agent_kind", sa.String(length=16), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=True),
        sa.Column("patient_keys", sa.Text(), nullable=True),
        sa.Column("entity", sa.Text(), nullable=True),
        sa.Column("purpose", sa.String(length=32), nullable=True),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("source_ip", sa.String(length=64), nullable=True),
        sa.Column(
            "content",
            sa.LargeBinary()
            .with_variant(postgresql.BYTEA(), "postgresql")
            .with_variant(sqlite.BLOB(), "sqlite"),
            nullable=False,
        ),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=True),
        sa.Column("chain_hash", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_event")),
        sa.UniqueConstraint("seq", name=op.f("uq_audit_event_seq")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.create_index("ix_audit_event_action", ["action", "subtype", "recorded"], unique=False)
        batch_op.create_index("ix_audit_event_agent", ["agent_id", "recorded"], unique=False)
        batch_op.create_index("ix_audit_event_flagged", ["flagged", "recorded"], unique=False)
        batch_op.create_index("ix_audit_event_org", ["org_id", "recorded"], unique=False)
        batch_op.create_index("ix_audit_event_recorded", ["recorded", "id"], unique=False)

    op.execute(
        sa.text(
            "INSERT INTO audit_chain_head (id, seq, chain_hash, last_id) VALUES (1, 0, :genesis, 0)"
        ).bindparams(genesis="0" * 64)
    )
    if op.get_bind().dialect.name == "postgresql":
        for ddl in (*POSTGRES_FUNCTIONS.values(), *POSTGRES_TRIGGERS.values()):
            op.execute(ddl)
    else:
        for ddl in SQLITE_TRIGGERS.values():
            op.execute(ddl)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, table in (
            ("audit_event_append_only", "audit_event"),
            ("audit_event_no_truncate", "audit_event"),
            ("audit_checkpoint_append_only", "audit_checkpoint"),
            ("audit_checkpoint_no_truncate", "audit_checkpoint"),
        ):
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        for function in POSTGRES_FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_event_recorded")
        batch_op.drop_index("ix_audit_event_org")
        batch_op.drop_index("ix_audit_event_flagged")
        batch_op.drop_index("ix_audit_event_agent")
        batch_op.drop_index("ix_audit_event_action")

    op.drop_table("audit_event")
    op.drop_table("audit_checkpoint")
    op.drop_table("audit_chain_head")
