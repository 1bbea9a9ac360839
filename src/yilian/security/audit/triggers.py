"""Are the append-only triggers still in place? Checked by ``verify`` on every run.

The triggers are what refuses an UPDATE or DELETE of the log; someone who drops or disables
them to edit rows may forget to put them back, and a trigger replaced by a harmless one with the
same name would let every later edit through. So each trigger is compared with the definition
the migration that made it wrote (``2026_12_03_0003_audit_log``, read from the migration itself,
so the two cannot drift apart): on SQLite its whole statement, on PostgreSQL that it is enabled,
fires on the same events, and runs a function with the same body. A later revision that writes
the triggers again must be the one read here.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from sqlalchemy import Connection, text

MIGRATION = "2026_12_03_0003_audit_log.py"
# pg_trigger.tgtype bits
_ROW, _BEFORE, _INSERT, _DELETE, _UPDATE, _TRUNCATE = 1, 2, 4, 8, 16, 32
_EVENTS = {"INSERT": _INSERT, "DELETE": _DELETE, "UPDATE": _UPDATE, "TRUNCATE": _TRUNCATE}
_PG_TRIGGER = re.compile(
    r"CREATE TRIGGER (\w+) BEFORE (.+?) ON (\w+) FOR EACH (ROW|STATEMENT) EXECUTE FUNCTION (\w+)\(\)"
)
_BODY = re.compile(r"\$\$(.*)\$\$", re.DOTALL)


@dataclass(frozen=True)
class PgTrigger:
    name: str
    table: str
    tgtype: int
    function: str
    body: str


def _squeeze(sql: str) -> str:
    return " ".join(sql.split())


@functools.cache
def _migration() -> ModuleType:
    import yilian.migrations

    path = Path(yilian.migrations.__file__).parent / "versions" / MIGRATION
    spec = importlib.util.spec_from_file_location("yilian_audit_log_migration", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sqlite_triggers() -> dict[str, str]:
    """name -> the CREATE TRIGGER statement, as the migration ran it."""
    return {name: ddl.strip() for name, ddl in _migration().SQLITE_TRIGGERS.items()}


def postgres_triggers() -> list[PgTrigger]:
    m = _migration()
    out = []
    for ddl in m.POSTGRES_TRIGGERS.values():
        found = _PG_TRIGGER.fullmatch(_squeeze(ddl))
        assert found is not None, ddl
        name, events, table, each, function = found.groups()
        tgtype = _BEFORE | (_ROW if each == "ROW" else 0)
        for event in events.split(" OR "):
            tgtype |= _EVENTS[event.strip()]
        body = _BODY.search(m.POSTGRES_FUNCTIONS[function])
        assert body is not None
        out.append(PgTrigger(name, table, tgtype, function, _squeeze(body.group(1))))
    return out


def trigger_problems(conn: Connection) -> list[str]:
    """What is wrong with the append-only triggers (nothing: an empty list)."""
    if conn.dialect.name == "sqlite":
        return _sqlite_problems(conn)
    return _postgres_problems(conn)


def _sqlite_problems(conn: Connection) -> list[str]:
    have = {
        str(name): str(sql or "")
        for name, sql in conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"))
    }
    problems = []
    for name, ddl in sqlite_triggers().items():
        if name not in have:
            problems.append(f"the append-only trigger {name} is missing: the log could be changed at will")
        elif _squeeze(have[name]) != _squeeze(ddl):
            problems.append(f"the append-only trigger {name} was replaced by another definition")
    return problems


def _postgres_problems(conn: Connection) -> list[str]:
    # Resolved through the search path as every query of the log is: the triggers that guard
    # the very tables the platform writes.
    rows = conn.execute(
        text(
            "SELECT t.tgname, c.relname, t.tgenabled, t.tgtype, p.prosrc "
            "FROM pg_catalog.pg_trigger t "
            "JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid "
            "WHERE NOT t.tgisinternal "
            "AND t.tgrelid IN ('audit_event'::regclass, 'audit_checkpoint'::regclass)"
        )
    ).all()
    have = {(str(r[0]), str(r[1])): r for r in rows}
    problems = []
    for want in postgres_triggers():
        row = have.get((want.name, want.table))
        if row is None:
            problems.append(f"the append-only trigger {want.name} on {want.table} is missing")
            continue
        enabled, tgtype, source = str(row[2]), int(row[3]), str(row[4])
        if enabled not in ("O", "A"):
            problems.append(f"the append-only trigger {want.name} on {want.table} is disabled")
        if tgtype != want.tgtype or _squeeze(source) != want.body:
            problems.append(
                f"the append-only trigger {want.name} on {want.table} was replaced by another definition"
            )
    return problems
