"""payments history append only

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 16:30:00

The ledger's history is immutable: a transaction (``pay_txn``) and its postings (``pay_posting``)
are written once and never changed or removed — a correction is a new, reversing transaction.
The code has always kept to that; these triggers make the database refuse any UPDATE or DELETE
of either table (and, on PostgreSQL, a TRUNCATE), whoever sends it: a bug, a script, a manual
fix. Inserts are untouched, so the ledger's writes cost nothing more.

SQLite drops a table's triggers with the table: a later revision that rebuilds either table
(``batch_alter_table`` copies and renames) must create these triggers again.
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

TABLES = ("pay_txn", "pay_posting")
REFUSED = "{table} is append-only: ledger history is never changed or removed; post a reversing transaction"

SQLITE_TRIGGERS = {
    f"{table}_no_{verb.lower()}": (
        f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{REFUSED.format(table=table)}'); END"
    )
    for table in TABLES
    for verb in ("UPDATE", "DELETE")
}

POSTGRES_FUNCTION = f"""
    CREATE FUNCTION pay_history_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{REFUSED.format(table="%")}', TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
    END
    $$"""
# name → (table, DDL)
POSTGRES_TRIGGERS = {
    f"{table}_{name}": (
        table,
        f"CREATE TRIGGER {table}_{name} BEFORE {event} ON {table} "
        f"FOR EACH {each} EXECUTE FUNCTION pay_history_guard()",
    )
    for table in TABLES
    for name, event, each in (
        ("append_only", "UPDATE OR DELETE", "ROW"),
        ("no_truncate", "TRUNCATE", "STATEMENT"),
    )
}


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_FUNCTION)
        for _table, ddl in POSTGRES_TRIGGERS.values():
            op.execute(ddl)
    else:
        for ddl in SQLITE_TRIGGERS.values():
            op.execute(ddl)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, (table, _ddl) in POSTGRES_TRIGGERS.items():
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        op.execute("DROP FUNCTION IF EXISTS pay_history_guard()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
