"""fhir core

Revision ID: 0001
Revises: (none)
Create Date: 2026-12-03 07:32:45.476588
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conditional_claim",
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("criteria_hash", sa.String(length=64), nullable=False),
        sa.Column("criteria", sa.Text(), nullable=False),
        sa.Column("resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("res_type", "criteria_hash", name=op.f("pk_conditional_claim")),
    )
    op.create_table(
        "idx_composite",
        sa.Column("resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("c1_system", sa.Text(), nullable=True),
        sa.Column("c1_code", sa.Text(), nullable=True),
        sa.Column("c2_system", sa.Text(), nullable=True),
        sa.Column("c2_code", sa.Text(), nullable=True),
        sa.Column("c2_num", sa.Float(), nullable=True),
        sa.Column("c2_dlow", sa.BigInteger(), nullable=True),
        sa.Column("c2_dhigh", sa.BigInteger(), nullable=True),
        sa.Column("c2_unit", sa.Text(), nullable=True),
        sa.Column("c3_num", sa.Float(), nullable=True),
    )
    with op.batch_alter_table("idx_composite", schema=None) as batch_op:
        batch_op.create_index("ix_idx_composite_0", ["res_type", "param", "c1_code"], unique=False)
        batch_op.create_index("ix_idx_composite_resource", ["resource_pk"], unique=False)

    op.create_table(
        "idx_date",
        sa.Column("resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("low", sa.BigInteger(), nullable=False),
        sa.Column("high", sa.BigInteger(), nullable=False),
    )
    with op.batch_alter_table("idx_date", schema=None) as batch_op:
        batch_op.create_index("ix_idx_date_0", ["res_type", "param", "low"], unique=False)
        batch_op.create_index("ix_idx_date_1", ["res_type", "param", "high"], unique=False)
        batch_op.create_index("ix_idx_date_resource", ["resource_pk"], unique=False)

    op.create_table(
        "idx_number",
        sa.Column("resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
    )
    with op.batch_alter_table("idx_number", schema=None) as batch_op:
        batch_op.create_index("ix_idx_number_0", ["res_type", "param", "value"], unique=False)
        batch_op.create_index("ix_idx_number_resource", ["resource_pk"], unique=False)

    op.create_table(
        "idx_quantity",
        sa.Column("resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("system", sa.Text(), nullable=True),
        sa.Column("code", sa.Text(), nullable=True),
        sa.Column("unit", sa.Text(), nullable=True),
    )
    with op.batch_alter_table("idx_quantity", schema=None) as batch_op:
        batch_op.create_index("ix_idx_quantity_0", ["res_type", "param", "value"], unique=False)
        batch_op.create_index("ix_idx_quantity_resource", ["resource_pk"], unique=False)

    op.create_table(
        "idx_reference",
        sa.Column("resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("target_type", sa.String(length=64), nullable=True),
        sa.Column("target_id", sa.String(length=64), nullable=True),
        sa.Column("target_version", sa.Text(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("identifier_system", sa.Text(), nullable=True),
        sa.Column("identifier_value", sa.Text(), nullable=True),
    )
    with op.batch_alter_table("idx_reference", schema=None) as batch_op:
        batch_op.create_index("ix_idx_reference_0", ["res_type", "param", "target_id"], unique=False)
        batch_op.create_index("ix_idx_reference_1", ["target_type", "target_id"], unique=False)
        batch_op.create_index("ix_idx_reference_resource", ["resource_pk"], unique=False)

    op.create_table(
        "idx_string",
        sa.Column("resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("value_norm", sa.Text(), nullable=False),
        sa.Column("value_exact", sa.Text(), nullable=False),
    )
    with op.batch_alter_table("idx_string", schema=None) as batch_op:
        batch_op.create_index("ix_idx_string_0", ["res_type", "param", "value_norm"], unique=False)
        batch_op.create_index("ix_idx_string_resource", ["resource_pk"], unique=False)

    op.create_table(
        "idx_text",
        sa.Column("resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("content_norm", sa.Text(), nullable=False),
    )
    with op.batch_alter_table("idx_text", schema=None) as batch_op:
        batch_op.create_index("ix_idx_text_0", ["res_type", "param"], unique=False)
        batch_op.create_index("ix_idx_text_resource", ["resource_pk"], unique=False)

    op.create_table(
        "idx_token",
        sa.Column("resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("system", sa.Text(), nullable=True),
        sa.Column("code", sa.Text(), nullable=True),
        sa.Column("text_norm", sa.Text(), nullable=True),
        sa.Column("type_system", sa.Text(), nullable=True),
        sa.Column("type_code", sa.Text(), nullable=True),
    )
    with op.batch_alter_table("idx_token", schema=None) as batch_op:
        batch_op.create_index("ix_idx_token_0", ["res_type", "param", "code"], unique=False)
        batch_op.create_index("ix_idx_token_resource", ["resource_pk"], unique=False)

    op.create_table(
        "idx_uri",
        sa.Column("resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
    )
    with op.batch_alter_table("idx_uri", schema=None) as batch_op:
        batch_op.create_index("ix_idx_uri_0", ["res_type", "param"], unique=False)
        batch_op.create_index("ix_idx_uri_resource", ["resource_pk"], unique=False)

    op.create_table(
        "resource",
        sa.Column(
            "pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("res_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.BigInteger(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("patient_key", sa.String(length=64), nullable=True),
        sa.Column(
            "content",
            sa.LargeBinary().with_variant(postgresql.BYTEA(), "postgresql").with_variant(sa.BLOB(), "sqlite"),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_resource")),
        sa.UniqueConstraint("res_type", "res_id", name=op.f("uq_resource_res_type_res_id")),
    )
    with op.batch_alter_table("resource", schema=None) as batch_op:
        batch_op.create_index("ix_resource_patient_key", ["patient_key"], unique=False)
        batch_op.create_index("ix_resource_type_updated", ["res_type", "last_updated"], unique=False)

    op.create_table(
        "resource_version",
        sa.Column("resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("res_id", sa.String(length=64), nullable=False),
        sa.Column("last_updated", sa.BigInteger(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("patient_key", sa.String(length=64), nullable=True),
        sa.Column(
            "content",
            sa.LargeBinary().with_variant(postgresql.BYTEA(), "postgresql").with_variant(sa.BLOB(), "sqlite"),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(
            ["resource_pk"], ["resource.pk"], name=op.f("fk_resource_version_resource_pk_resource")
        ),
        sa.PrimaryKeyConstraint("resource_pk", "version", name=op.f("pk_resource_version")),
    )
    with op.batch_alter_table("resource_version", schema=None) as batch_op:
        batch_op.create_index("ix_resource_version_type_updated", ["res_type", "last_updated"], unique=False)
        batch_op.create_index("ix_resource_version_updated", ["last_updated"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("resource_version", schema=None) as batch_op:
        batch_op.drop_index("ix_resource_version_updated")
        batch_op.drop_index("ix_resource_version_type_updated")

    op.drop_table("resource_version")
    with op.batch_alter_table("resource", schema=None) as batch_op:
        batch_op.drop_index("ix_resource_type_updated")
        batch_op.drop_index("ix_resource_patient_key")

    op.drop_table("resource")
    with op.batch_alter_table("idx_uri", schema=None) as batch_op:
        batch_op.drop_index("ix_idx_uri_resource")
        batch_op.drop_index("ix_idx_uri_0")

    op.drop_table("idx_uri")
    with op.batch_alter_table("idx_token", schema=None) as batch_op:
        batch_op.drop_index("ix_idx_token_resource")
        batch_op.drop_index("ix_idx_token_0")

    op.drop_table("idx_token")
    with op.batch_alter_table("idx_text", schema=None) as batch_op:
        batch_op.drop_index("ix_idx_text_resource")
        batch_op.drop_index("ix_idx_text_0")

    op.drop_table("idx_text")
    with op.batch_alter_table("idx_string", schema=None) as batch_op:
        batch_op.drop_index("ix_idx_string_resource")
        batch_op.drop_index("ix_idx_string_0")

    op.drop_table("idx_string")
    with op.batch_alter_table("idx_reference", schema=None) as batch_op:
        batch_op.drop_index("ix_idx_reference_resource")
        batch_op.drop_index("ix_idx_reference_1")
        batch_op.drop_index("ix_idx_reference_0")

    op.drop_table("idx_reference")
    with op.batch_alter_table("idx_quantity", schema=None) as batch_op:
        batch_op.drop_index("ix_idx_quantity_resource")
        batch_op.drop_index("ix_idx_quantity_0")

    op.drop_table("idx_quantity")
    with op.batch_alter_table("idx_number", schema=None) as batch_op:
        batch_op.drop_index("ix_idx_number_resource")
        batch_op.drop_index("ix_idx_number_0")

    op.drop_table("idx_number")
    with op.batch_alter_table("idx_date", schema=None) as batch_op:
        batch_op.drop_index("ix_idx_date_resource")
        batch_op.drop_index("ix_idx_date_1")
        batch_op.drop_index("ix_idx_date_0")

    op.drop_table("idx_date")
    with op.batch_alter_table("idx_composite", schema=None) as batch_op:
        batch_op.drop_index("ix_idx_composite_resource")
        batch_op.drop_index("ix_idx_composite_0")

    op.drop_table("idx_composite")
    op.drop_table("conditional_claim")
