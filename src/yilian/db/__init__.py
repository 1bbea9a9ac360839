"""Storage engines (SQLite embedded default, PostgreSQL for production) and the unit of work.

Public surface: :class:`Database` (open one with :func:`open_database`), :class:`UnitOfWork`,
and :data:`metadata`, the one SQLAlchemy ``MetaData`` every system's tables register on.
"""

from yilian.db.engine import Database, open_database
from yilian.db.schema import metadata
from yilian.db.uow import UnitOfWork

__all__ = ["Database", "UnitOfWork", "metadata", "open_database"]
