"""string index code point order

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 17:10:00

String search prefix matches became index ranges (value_norm >= p AND value_norm < succ(p)),
which are exact only in code-point order: on PostgreSQL ``idx_string.value_norm`` takes the
"C" collation (its index is rebuilt with it). SQLite compares TEXT bytewise already.
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute('ALTER TABLE idx_string ALTER COLUMN value_norm TYPE TEXT COLLATE "C"')
        # Changing a column's type drops its statistics; without them the planner guesses a
        # prefix range's size and may walk the whole resource table instead of the index.
        op.execute("ANALYZE idx_string")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute('ALTER TABLE idx_string ALTER COLUMN value_norm TYPE TEXT COLLATE "default"')
