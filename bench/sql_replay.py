"""The SQL a request sends to PostgreSQL, captured at the driver and replayed by pgbench.

A floor for a write path's speed: the very statements the platform sent for one request (the
same tables, indexes, row locks, WAL and commit), replayed from C by ``pgbench -f`` with no Python,
no HTTP and no application work at all. If that replay is already below a target set against
pgbench's own ``tpcb-like``, no tuning of the Python side can reach the target with these writes.

Capture: ``recording(engine)`` sets a recording cursor class on every connection the engine hands
out, so every statement run through a psycopg cursor (SQLAlchemy's and the driver-level compiled
statements alike) is kept with its parameters inlined as literals (psycopg's client-side
``mogrify``), in order, with the transaction's ``BEGIN`` and ``COMMIT`` (SQLAlchemy's events) and
the thread that ran it. ``mark()`` starts a new request's share of the recording.

Replay: ``pgbench_script(first, second)`` turns one request into a pgbench script. It needs the same
request made twice (same card, same body, fresh ``Idempotency-Key``): the short literals that differ
between the two are the per-request identifiers (keys, transaction and charge ids), which the
database holds unique, so each becomes an expression ending in a pgbench random variable
(``'…-1a2b3c4d5e6f'`` → ``('…-' || :ylr0::text)``, same length, a parameter in prepared mode)
and every replayed transaction writes fresh ones. Longer differing literals (stored replies,
audit content) and numbers (timestamps) are kept as captured: they carry no unique constraint
and cost the same to write. pgbench takes every ``:name`` for a variable, even inside quotes,
so a literal's colons are written ``\\x3a`` in an escape string (the same text). Statements the
platform sent together in one psycopg pipeline are replayed as one pgbench pipeline.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, event

from bench.common import pgbench_command, settled_postgres_cpu

_LITERAL = re.compile(r"'(?:[^']|'')*'")
_UNIQUE_MAX = 64  # a differing literal up to this long, without spaces, is an identifier


@dataclass
class Recording:
    """What ``recording`` captured: per request (``mark``), the statements of its thread."""

    requests: list[list[tuple[int, str, int]]] = field(default_factory=list)
    _pipeline: Any = None  # the pipeline last seen (held, so that its id is never reused)
    _pipelines: int = 0
    on: bool = False

    def mark(self) -> None:
        self.requests.append([])
        self.on = True

    def stop(self) -> None:
        self.on = False

    def add(self, sql: str, pipeline: Any = None) -> None:
        """Record ``sql``; ``pipeline`` is psycopg's pipeline it was sent in, if any."""
        if not (self.on and self.requests):
            return
        group = 0
        if pipeline is not None:
            if pipeline is not self._pipeline:
                self._pipeline, self._pipelines = pipeline, self._pipelines + 1
            group = self._pipelines
        self.requests[-1].append((threading.get_ident(), sql, group))

    def statements(self, n: int) -> list[tuple[str, int]]:
        """Request ``n``'s statements, those of the thread that sent its first one (the request's
        handler; background work of the server, if any ran, is left out)."""
        rows = self.requests[n]
        if not rows:
            raise ValueError(f"request {n} sent no SQL")
        thread = rows[0][0]
        return [(sql, group) for t, sql, group in rows if t == thread]


def _pipeline(conn: psycopg.Connection[Any]) -> Any:
    """The pipeline ``conn`` is in (its statements go out together, one round trip), or None.
    psycopg makes one for each ``with conn.pipeline()`` block; it has no public handle for it."""
    return conn._pipeline if int(conn.pgconn.pipeline_status) != 0 else None


@contextmanager
def recording(engine: Engine) -> Iterator[Recording]:
    """Record what ``engine``'s connections send while the context is open (PostgreSQL only)."""
    rec = Recording()

    class RecordingCursor(psycopg.Cursor[Any]):
        def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:
            rec.add(psycopg.ClientCursor(self.connection).mogrify(query, params), _pipeline(self.connection))
            return super().execute(query, params, **kw)

        def executemany(self, query: Any, params_seq: Any, **kw: Any) -> None:
            rows = list(params_seq)
            for p in rows:
                rec.add(psycopg.ClientCursor(self.connection).mogrify(query, p), _pipeline(self.connection))
            super().executemany(query, rows, **kw)

    def checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        dbapi_conn.cursor_factory = RecordingCursor

    def begin(_conn: Any) -> None:
        rec.add("BEGIN")

    def commit(_conn: Any) -> None:
        rec.add("COMMIT")

    def rollback(_conn: Any) -> None:
        rec.add("ROLLBACK")

    hooks: list[tuple[Engine, str, Callable[..., None]]] = [
        (engine, "checkout", checkout),
        (engine, "begin", begin),
        (engine, "commit", commit),
        (engine, "rollback", rollback),
    ]
    for target, name, fn in hooks:
        event.listen(target, name, fn)
    engine.dispose()  # pooled connections made before the hook get the recording cursor too
    try:
        yield rec
    finally:
        for target, name, fn in hooks:
            event.remove(target, name, fn)
        engine.dispose()


@dataclass(frozen=True)
class Script:
    """A request as a pgbench script: ``statements`` in order, ``variables`` set per transaction;
    ``pipelines`` numbers the pipeline (psycopg's) each statement was sent in, 0 for none."""

    variables: tuple[str, ...]
    statements: tuple[str, ...]
    pipelines: tuple[int, ...]

    def round_trips(self) -> list[list[str]]:
        """The statements as the platform sent them: each alone, or a pipelined run together (with
        the ``BEGIN`` just before it, which psycopg sends in the same pipeline)."""
        trips: list[list[str]] = []
        current = 0
        for i, (sql, group) in enumerate(zip(self.statements, self.pipelines, strict=True)):
            if sql == "BEGIN" and i + 1 < len(self.pipelines):
                group = self.pipelines[i + 1]
            if group and group == current:
                trips[-1].append(sql)
            else:
                trips.append([sql])
            current = group
        return trips

    def as_sent(self) -> str:
        """One round trip per statement or pipelined run, as the platform sends them (an empty
        statement, the pool's liveness ping, becomes ``SELECT 1``). Run it with ``-M prepared``:
        the platform's driver prepares the statements it repeats, so parsing and planning is not
        part of a floor."""
        body: list[str] = []
        for trip in self.round_trips():
            lines = [self._sql(s) + ";" for s in trip]
            body += lines if len(lines) == 1 else ["\\startpipeline", *lines, "\\endpipeline"]
        return self._text(body)

    def pipelined_whole(self) -> str:
        """All the statements in one pipeline (pgbench's ``\\startpipeline``): sent without
        waiting for each reply, the database's own work with no round trips between statements,
        as a stored procedure doing the same reads and writes would have it."""
        body = [self._sql(s) + ";" for s in self.statements if s.strip() not in ("", ";")]
        return self._text(["\\startpipeline", *body, "\\endpipeline"])

    @staticmethod
    def _sql(statement: str) -> str:
        return "SELECT 1" if statement.strip() in ("", ";") else statement.rstrip("; \n")

    def _text(self, body: list[str]) -> str:
        head = [f"\\set {v} random(100000000000, 999999999999)" for v in self.variables]
        return "\n".join([*head, *(line.replace("\n", " ") for line in body)]) + "\n"


def pgbench_script(
    first: Sequence[tuple[str, int]], second: Sequence[tuple[str, int]], prefix: str = "ylr"
) -> Script:
    """The request captured twice (``first``, ``second``: statements with the pipeline each went
    in, see :meth:`Recording.add`) as a replayable script (module doc)."""
    if len(first) != len(second):
        raise ValueError(f"the two captures differ in shape: {len(first)} and {len(second)} statements")
    names: dict[str, str] = {}
    out = []
    for a, b in zip((sql for sql, _ in first), (sql for sql, _ in second), strict=True):
        lits_a, lits_b = _LITERAL.findall(a), _LITERAL.findall(b)
        if _shape(a) != _shape(b) or len(lits_a) != len(lits_b):
            raise ValueError(f"the two captures differ in statement: {a[:80]!r}")
        pieces = _LITERAL.split(a)
        parts = [pieces[0]]
        for i, (x, y) in enumerate(zip(lits_a, lits_b, strict=True)):
            value = x[1:-1]
            escaped = parts[-1].endswith(("E", "e"))  # already an E'…' string: backslashes are escapes
            if x != y and len(value) <= _UNIQUE_MAX and " " not in value and not value.startswith("\\x"):
                var = names.setdefault(value, f"{prefix}{len(names)}")
                x = f"({_quoted(value[:-12] if len(value) > 12 else '', escaped)} || :{var}::text)"
            else:
                x = _quoted(value, escaped)
            parts += [x, pieces[i + 1]]
        out.append("".join(parts))
    return Script(tuple(names.values()), tuple(out), tuple(group for _, group in first))


def _quoted(value: str, escaped: bool) -> str:
    """``value`` (quotes doubled, as captured) as a literal with no colon in it: pgbench takes
    every ``:name`` in a script for a variable, even inside quotes, so a colon is written
    ``\\x3a`` in an escape string (``'hmac:k1'`` → ``E'hmac\\x3ak1'``, the same text)."""
    if ":" not in value:
        return f"'{value}'"
    body = value if escaped else value.replace("\\", "\\\\")
    return ("'" if escaped else "E'") + body.replace(":", "\\x3a") + "'"


def _shape(sql: str) -> str:
    """The statement with its literals and numbers blanked: what two captures must share."""
    return re.sub(r"\d+", "0", _LITERAL.sub("''", sql))


@dataclass(frozen=True)
class Replayed:
    """A replay's rate, its transactions, and the database server's CPU for each (ms)."""

    tps: float
    transactions: int
    db_cpu_ms: float


def run_scripts(
    scripts: Sequence[str], database: str, seconds: int, clients: int = 4, *, pgoptions: str = ""
) -> Replayed:
    """``pgbench -M prepared -f`` over ``scripts`` (equal weights, one chosen at random per
    transaction), ``clients`` clients; raises if any transaction failed."""
    with tempfile.TemporaryDirectory(prefix="yl-replay-") as tmp:
        files = []
        for i, text in enumerate(scripts):
            path = Path(tmp) / f"request{i}.sql"
            path.write_text(text)
            files += ["-f", str(path)]
        cpu = settled_postgres_cpu()
        proc = subprocess.run(
            [*pgbench_command(clients, seconds), "-n", "-M", "prepared", *files, database],
            capture_output=True,
            text=True,
            env={**os.environ, "PGOPTIONS": pgoptions},
        )
        cpu = settled_postgres_cpu() - cpu
    done = re.search(r"number of transactions actually processed: (\d+)", proc.stdout)
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", proc.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", proc.stdout)
    if proc.returncode or not (done and tps) or (failed and int(failed.group(1))):
        raise RuntimeError(f"the replay failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    n = int(done.group(1))
    return Replayed(float(tps.group(1)), n, 1000 * cpu / max(n, 1))
