"""hl7 inbox state index

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05 07:25:00

The listener looks every minute for messages still ``received`` (landed, never stored nor
refused: exchange/stranded.py); an index on (state, received) keeps that a range read of the
few stranded rows instead of a scan of every message older than five minutes.
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hl7_inbox", schema=None) as batch_op:
        batch_op.create_index("ix_hl7_inbox_state", ["state", "received"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("hl7_inbox", schema=None) as batch_op:
        batch_op.drop_index("ix_hl7_inbox_state")
