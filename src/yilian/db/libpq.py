"""One statement handed to libpq in one call, for a hot path on a connection its caller owns.

psycopg's ``cursor.execute`` drives the protocol from Python: a generator that sends, waits
for the socket, reads and parses, taking the interpreter lock back at each step (~33 µs of CPU
for a ``SELECT 1`` here). libpq's ``PQexecParams``, reached through psycopg's own ``pq`` layer,
does all of it in C with the lock released once for the whole round trip (~7 µs). That matters
on a thread every request waits for and that competes with those requests for the lock: the
audit writer's group commit (``security/audit/recorder``).

It applies only where skipping psycopg's bookkeeping changes nothing: PostgreSQL through
psycopg, a connection in autocommit mode (psycopg would otherwise open a transaction before the
statement; here none is skipped), client encoding UTF-8. :func:`direct` says whether it does.
Values go in text format, but ``bytes`` in binary (a ``bytea`` column); their types are the
server's inference from the statement, as for psycopg's own untyped parameters. Errors are
raised as psycopg raises them, so ``driver_errors`` maps them to SQLAlchemy's classes as for
any other statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

if TYPE_CHECKING:
    from psycopg.pq.abc import PGconn, PGresult

_UTF8 = (b"UTF8", b"UNICODE")
NUL_REFUSED = "PostgreSQL text fields cannot contain NUL (0x00) bytes"


def direct(conn: Connection) -> PGconn | None:
    """The libpq connection under ``conn`` when a statement may be sent to it directly, else None."""
    if conn.dialect.name != "postgresql":
        return None
    import psycopg

    raw = conn.connection.driver_connection
    if not isinstance(raw, psycopg.Connection) or not raw.autocommit:
        return None
    pgconn = raw.pgconn
    return pgconn if pgconn.parameter_status(b"client_encoding") in _UTF8 else None


def placeholders(count: int, start: int = 1) -> str:
    """``$start, $start+1, …``: libpq's positional parameters."""
    return ", ".join(f"${i}" for i in range(start, start + count))


def execute(pgconn: PGconn, sql: bytes, params: Sequence[Any]) -> PGresult:
    """Run ``sql`` (``$n`` parameters) with ``params``: None, bool, int, str or bytes each."""
    import psycopg
    from psycopg import pq
    from psycopg.errors import error_from_result

    values: list[bytes | None] = []
    formats: list[int] = []
    for value in params:
        if value is None:
            values.append(None)
            formats.append(0)
        elif isinstance(value, bool):  # before int: a bool is an int
            values.append(b"t" if value else b"f")
            formats.append(0)
        elif isinstance(value, int):
            values.append(str(value).encode())
            formats.append(0)
        elif isinstance(value, str):
            # libpq reads a text parameter up to its first NUL: refuse it, as psycopg does,
            # rather than store a truncated value.
            if "\x00" in value:
                raise psycopg.DataError(NUL_REFUSED)
            values.append(value.encode())
            formats.append(0)
        elif isinstance(value, bytes | bytearray | memoryview):
            values.append(bytes(value))
            formats.append(1)
        else:
            raise TypeError(f"no libpq form for a parameter of type {type(value).__name__}")
    result = pgconn.exec_params(sql, values, param_formats=formats)
    if result.status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
        return result
    if pgconn.status == pq.ConnStatus.BAD:
        message = pgconn.get_error_message().strip() or "the connection to the server was lost"
        raise psycopg.OperationalError(message)
    raise error_from_result(result)
