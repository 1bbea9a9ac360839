"""payments payouts

Revision ID: 0017
Revises: 0016access
Create Date: 2026-12-05 05:30:00

A closed day's batch lines are paid by bank transfer; ``pay_payout`` records each line's
payment (once: the line is the primary key) with the ledger transaction that takes the amount
off the payer's clearing account for the payee.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016access"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pay_payout",
        sa.Column("line_id", sa.BigInteger(), nullable=False),
        sa.Column("business_date", sa.String(length=10), nullable=False),
        sa.Column("txn_id", sa.String(length=36), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("paid_at", sa.BigInteger(), nullable=False),
        sa.Column("paid_by", sa.String(length=160), nullable=False),
        sa.PrimaryKeyConstraint("line_id", name=op.f("pk_pay_payout")),
    )
    with op.batch_alter_table("pay_payout", schema=None) as batch_op:
        batch_op.create_index("ix_pay_payout_day", ["business_date"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("pay_payout", schema=None) as batch_op:
        batch_op.drop_index("ix_pay_payout_day")
    op.drop_table("pay_payout")
