"""Alembic migrations for every system's tables, on SQLite and PostgreSQL alike.

``upgrade(db)`` brings a database to the newest schema; ``yilian db upgrade`` calls it. The
revisions live in ``versions/``, named by date and slug.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from yilian.db import Database

HERE = Path(__file__).resolve().parent


def config(db: Database) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    cfg.attributes["database"] = db
    return cfg


def upgrade(db: Database, revision: str = "heads") -> None:
    command.upgrade(config(db), revision)


def _joined(revisions: tuple[str, ...] | list[str]) -> str | None:
    # History is kept in one line (a test checks it); while systems are built side by side a
    # branch may exist for a moment, and the tools must still say where a database stands.
    return "+".join(sorted(revisions)) or None


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return _joined(MigrationContext.configure(conn).get_current_heads())


def head_revision(db: Database) -> str | None:
    return _joined(ScriptDirectory.from_config(config(db)).get_heads())
