"""The one ``MetaData`` that every system's ``tables.py`` registers on, and portable column types."""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, LargeBinary, MetaData
from sqlalchemy.dialects import postgresql, sqlite

# Names for constraints so Alembic migrations are deterministic on both databases.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# A 64-bit surrogate key: BIGINT identity on PostgreSQL, INTEGER PRIMARY KEY (the rowid) on SQLite.
SurrogateKey = BigInteger().with_variant(Integer(), "sqlite")

# Serialized JSON documents: bytes as written, returned to clients without re-serializing.
Document = LargeBinary().with_variant(postgresql.BYTEA(), "postgresql").with_variant(sqlite.BLOB(), "sqlite")
