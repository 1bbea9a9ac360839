"""deletions keep the patient key of what they deleted

Revision ID: 0016access
Revises: 0015
Create Date: 2026-12-04 12:00:00

A deletion used to be stored with no patient key, so the access filter treated it as registry
data: anyone could read that a resource had been deleted (410) and see the deletion in history.
Deletions are now written in the compartment of what they deleted (docs/decisions/0015); this
gives the deletions already stored the key of the version before them. Data only, no schema.
"""

from __future__ import annotations

from alembic import op

revision = "0016access"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "UPDATE resource_version SET patient_key = ("
        " SELECT p.patient_key FROM resource_version p"
        " WHERE p.resource_pk = resource_version.resource_pk AND p.version = resource_version.version - 1)"
        " WHERE deleted AND patient_key IS NULL AND version > 1"
    )
    op.execute(
        "UPDATE resource SET patient_key = ("
        " SELECT v.patient_key FROM resource_version v"
        " WHERE v.resource_pk = resource.pk AND v.version = resource.version)"
        " WHERE deleted AND patient_key IS NULL"
    )


def downgrade() -> None:
    pass  # the keys are right for the old code too; nothing to undo
