"""Test databases: a fresh SQLite file or a fresh PostgreSQL schema, migrated to head.

Every storage test runs on both. PostgreSQL comes from ``YILIAN_TEST_POSTGRES`` (default: the
local server CI starts, ``postgresql://postgres@127.0.0.1:5432/test``); each database gets a
schema of its own so parallel workers never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, text

from yilian.api.wiring import install_keys
from yilian.db import Database, open_database
from yilian.migrations import upgrade

PG_URL = os.environ.get("YILIAN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = [
    b.strip() for b in os.environ.get("YILIAN_TEST_BACKENDS", "sqlite,postgresql").split(",") if b.strip()
]


def _pg_admin_url() -> str:
    return PG_URL.replace("postgresql://", "postgresql+psycopg://", 1)


def new_database(backend: str, tmp_dir: Path, **settings: object) -> tuple[Database, str]:
    """A migrated, empty database and a token to drop it with :func:`drop_database`."""
    if backend == "sqlite":
        path = tmp_dir / f"yl-{uuid.uuid4().hex[:8]}.db"
        db = open_database(f"sqlite:///{path}", **settings)
        upgrade(db)
        install_keys(db)
        return db, str(path)
    if backend == "postgresql":
        schema = f"yl_{uuid.uuid4().hex[:12]}"
        admin = create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        admin.dispose()
        sep = "&" if "?" in PG_URL else "?"
        db = open_database(
            f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}", pool_size=4, **settings
        )
        upgrade(db)
        install_keys(db)
        return db, schema
    raise ValueError(backend)


def drop_database(backend: str, db: Database, token: str) -> None:
    db.dispose()
    if backend == "postgresql":
        admin = create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{token}" CASCADE'))
        admin.dispose()
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(token + suffix).unlink(missing_ok=True)
