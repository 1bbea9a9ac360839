"""payments fhir publication

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 19:40:00

The payments FHIR views (Claim, ClaimResponse, Account, PaymentReconciliation) become stored
resources, written by a publisher from a queue (``pay_publish``) that every ledger change adds
to in its own transaction. The queue starts with everything already in the ledger — every
charge, every wallet and every closed day — so an upgraded database publishes its history.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pay_publish",
        sa.Column(
            "seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("not_before", sa.BigInteger(), nullable=True),
        sa.Column("queued", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_pay_publish")),
    )
    with op.batch_alter_table("pay_publish", schema=None) as batch_op:
        batch_op.create_index("ix_pay_publish_subject", ["subject"], unique=False)
    # Set-based, in the order things happened: charges, then wallets, then closed days; queued
    # now (the lag `yilian payments publication` shows is from the upgrade).
    now = int(time.time() * 1_000_000)
    op.execute(
        "INSERT INTO pay_publish (subject, attempts, queued) "
        f"SELECT 'charge:' || charge_id, 0, {now} FROM pay_charge ORDER BY at"
    )
    op.execute(
        f"INSERT INTO pay_publish (subject, attempts, queued) SELECT account_id, 0, {now} FROM pay_account "
        "WHERE kind = 'wallet' ORDER BY created"
    )
    op.execute(
        "INSERT INTO pay_publish (subject, attempts, queued) "
        f"SELECT 'day:' || business_date, 0, {now} FROM pay_day WHERE status = 'closed' ORDER BY business_date"
    )


def downgrade() -> None:
    with op.batch_alter_table("pay_publish", schema=None) as batch_op:
        batch_op.drop_index("ix_pay_publish_subject")
    op.drop_table("pay_publish")
