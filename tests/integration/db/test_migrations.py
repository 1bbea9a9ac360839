"""Migrations: ``upgrade head`` builds exactly the schema the models describe, on both databases.

Alembic's autogenerate comparison (the one ``alembic revision --autogenerate`` runs) between a
database upgraded from empty and the metadata of every ``tables`` module must find nothing:
a model changed without a migration, or a migration that drifted from its model, fails here.
"""

from __future__ import annotations

import ast
import datetime as dt
import importlib
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, event, inspect, text

import yilian
from tests.support.databases import BACKENDS, PG_URL, drop_database
from yilian.db import Database, metadata, open_database
from yilian.migrations import current_revision, head_revision, upgrade

PACKAGE = Path(yilian.__file__).resolve().parent
VERSIONS = PACKAGE / "migrations" / "versions"
FILE_NAME = re.compile(
    r"(?P<year>\d{4})_(?P<month>\d{2})_(?P<day>\d{2})_(?P<rev>[0-9a-z]+)_(?P<slug>[a-z0-9_]+)\.py"
)


def tables_modules() -> list[str]:
    """Every ``yilian.<…>.tables`` module: each system registers its tables on the one metadata there."""
    return sorted(
        ".".join(("yilian", *p.relative_to(PACKAGE).with_suffix("").parts))
        for p in PACKAGE.rglob("tables.py")
    )


def import_all_tables() -> None:
    for name in tables_modules():
        importlib.import_module(name)


@pytest.fixture(params=BACKENDS)
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database with no tables at all (``tests.support.databases.new_database`` gives a migrated one)."""
    backend: str = request.param
    if backend == "sqlite":
        path = tmp_path / "empty.db"
        db = open_database(f"sqlite:///{path}")
        yield db
        drop_database(backend, db, str(path))
        return
    schema = f"yl_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    sep = "&" if "?" in PG_URL else "?"
    db = open_database(f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}", pool_size=2)
    yield db
    drop_database(backend, db, schema)


def schema_differences(db: Database) -> list[Any]:
    import_all_tables()
    with db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, metadata))


def schema_snapshot(db: Database) -> dict[str, Any]:
    """Tables with their columns, keys, indexes and constraints, as the database reports them."""
    with db.engine.connect() as conn:
        insp = inspect(conn)
        out: dict[str, Any] = {}
        for table in sorted(insp.get_table_names()):
            out[table] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                    for c in insp.get_columns(table)
                ],
                "pk": insp.get_pk_constraint(table),
                "fks": sorted(str(fk) for fk in insp.get_foreign_keys(table)),
                "indexes": sorted(str(ix) for ix in insp.get_indexes(table)),
                "uniques": sorted(str(uq) for uq in insp.get_unique_constraints(table)),
            }
        return out


def test_upgrade_head_builds_exactly_the_models(empty_db: Database) -> None:
    assert schema_differences(empty_db) != [], "an empty database should differ from the models"
    upgrade(empty_db)
    assert current_revision(empty_db) == head_revision(empty_db)
    assert schema_differences(empty_db) == []
    with empty_db.engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
    assert tables == set(metadata.tables) | {"alembic_version"}


def test_upgrade_twice_changes_nothing(empty_db: Database) -> None:
    upgrade(empty_db)
    before = schema_snapshot(empty_db)
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(empty_db.engine, "before_cursor_execute", record)
    try:
        upgrade(empty_db)
    finally:
        event.remove(empty_db.engine, "before_cursor_execute", record)
    changes = [
        s for s in statements if re.match(r"\s*(CREATE|ALTER|DROP|INSERT|UPDATE|DELETE)\b", s, re.IGNORECASE)
    ]
    assert changes == []
    assert schema_snapshot(empty_db) == before
    assert current_revision(empty_db) == head_revision(empty_db)


def _revision_info(path: Path) -> tuple[str, str | None, str]:
    """(revision, down_revision, docstring) of a migration file, read without running it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    values: dict[str, Any] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id in ("revision", "down_revision")
        ):
            values[node.targets[0].id] = ast.literal_eval(node.value)
    return values["revision"], values.get("down_revision"), ast.get_docstring(tree) or ""


def test_migration_files_are_named_by_date_revision_and_slug() -> None:
    files = sorted(p for p in VERSIONS.glob("*.py") if p.name != "__init__.py")
    assert files
    revisions: dict[str, str | None] = {}
    for path in files:
        m = FILE_NAME.fullmatch(path.name)
        assert m, f"{path.name} is not YYYY_MM_DD_<rev>_<slug>.py"
        named = dt.date(int(m["year"]), int(m["month"]), int(m["day"]))
        rev, down, doc = _revision_info(path)
        assert m["rev"] == rev, f"{path.name}: the file says revision {rev!r}"
        created = re.search(r"Create Date: (\d{4}-\d{2}-\d{2})", doc)
        assert created and dt.date.fromisoformat(created[1]) == named, (
            f"{path.name}: name and Create Date differ"
        )
        # Alembic's slug: the words of the message, lower case, cut at a word boundary when long.
        words = "_".join(re.findall(r"\w+", doc.splitlines()[0] if doc else "")).lower()
        assert words == m["slug"] or words.startswith(m["slug"] + "_"), (
            f"{path.name}: slug is not its message"
        )
        revisions[rev] = down
    # One line of history: a single first revision, each building on one that exists, one head.
    assert [r for r, d in revisions.items() if d is None] != []
    assert len([r for r, d in revisions.items() if d is None]) == 1
    assert all(d is None or d in revisions for d in revisions.values())
    heads = set(revisions) - {d for d in revisions.values() if d}
    assert len(heads) == 1
    probe = open_database("sqlite://")
    assert heads == {head_revision(probe)}
    probe.dispose()


def test_migrations_know_every_tables_module() -> None:
    """env.py imports each system's tables, or autogenerate would propose dropping them."""
    env = (PACKAGE / "migrations" / "env.py").read_text(encoding="utf-8")
    imported = set(re.findall(r"^\s*import (yilian(?:\.\w+)*\.tables)\b", env, re.MULTILINE))
    imported |= {
        f"{m}.tables" for m in re.findall(r"^\s*from (yilian(?:\.\w+)*) import tables\b", env, re.MULTILINE)
    }
    assert set(tables_modules()) <= imported


def test_sqlite_connections_are_durable_and_check_foreign_keys(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'pragmas.db'}")
    try:
        # Two connections at once: every connection of the pool gets the settings, not only the first.
        with db.engine.connect() as first, db.engine.connect() as second:
            for conn in (first, second):
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2  # FULL
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
    finally:
        db.dispose()


def test_upgrading_a_ledger_queues_its_history_for_publication(empty_db: Database) -> None:
    """0014: a database with payments from before the FHIR views were stored publishes them all:
    every charge, every wallet (not the hospitals' or funds' accounts) and every closed day."""
    upgrade(empty_db, "0013")
    with empty_db.engine.begin() as conn:
        for n, at in ((1, 20), (2, 10)):
            conn.execute(
                text(
                    "INSERT INTO pay_charge (charge_id, txn_id, card_no, patient_id, org, department, setting, at,"
                    " business_date, total_fen, insurer_fen, aid_fen, self_pay_fen, deductible_fen,"
                    " aid_deductible_fen, refunded_insurer_fen, refunded_aid_fen, refunded_self_fen, items,"
                    " adjudication) VALUES (:id, 't', 'c', 'p', 'o', 'd', 'outpatient', :at, '2026-06-15',"
                    " 1, 0, 0, 1, 0, 0, 0, 0, 0, '[]', '{}')"
                ),
                {"id": f"ch-{n}", "at": at},
            )
        for account, kind in (("wallet:p", "wallet"), ("org:o:d", "merchant"), ("fund:ncms:330500", "fund")):
            conn.execute(
                text(
                    "INSERT INTO pay_account (account_id, kind, owner, balance, held, created)"
                    " VALUES (:a, :k, 'x', 0, 0, 1)"
                ),
                {"a": account, "k": kind},
            )
        conn.execute(text("INSERT INTO pay_day (business_date, status) VALUES ('2026-06-15', 'closed')"))
        conn.execute(text("INSERT INTO pay_day (business_date, status) VALUES ('2026-06-16', 'open')"))
    upgrade(empty_db)
    with empty_db.engine.connect() as conn:
        queued = [r.subject for r in conn.execute(text("SELECT subject FROM pay_publish ORDER BY seq"))]
    assert queued == ["charge:ch-2", "charge:ch-1", "wallet:p", "day:2026-06-15"]
