"""Shared plumbing for the benchmarks: databases, server processes, wrk, result tables.

Every benchmark measures Yilian and a baseline in the same run on the same machine and
reports the ratio, because absolute numbers drift on a shared machine.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("YILIAN_SHARED_DATA") or ROOT.parent / "shared" / "data")
PG_URL = os.environ.get(
    "YILIAN_BENCH_POSTGRES",
    os.environ.get("YILIAN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
)
console = Console()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="yl-bench-") as tmp:
        yield f"sqlite:///{tmp}/bench.db"


@contextmanager
def postgres_url() -> Iterator[str]:
    """A fresh schema in the benchmark PostgreSQL, dropped afterwards."""
    schema = f"yl_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


class Server:
    """A process serving HTTP on a free port until stopped."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(self.base + "/health", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.argv} did not start")

    @property
    def process_id(self) -> int:
        assert self.proc is not None, "the server is not running"
        return self.proc.pid

    def __exit__(self, *exc: object) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)


def yilian_server(db_url: str, workers: int = 1, *extra: str, env: dict[str, str] | None = None) -> Server:
    return Server(
        [
            sys.executable,
            "-m",
            "yilian.cli.main",
            "serve",
            "--database",
            db_url,
            "--port",
            "{port}",
            "--no-upgrade",
            "--workers",
            str(workers),
            *extra,
        ],
        env=env,
    )


WRK_SCRIPT = """
local paths = {}
local i = 0
local headers = {["Accept"] = "application/fhir+json"}
init = function(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  if args[2] and args[2] ~= "" then headers["Authorization"] = "Bearer " .. args[2] end
end
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i], headers)
end
"""


def run_wrk(
    base: str, script: str, args: list[str], *, connections: int, seconds: int, threads: int = 2
) -> str:
    """wrk's report of ``seconds`` of load by ``script`` (Lua, given ``args`` after ``--``)."""
    with tempfile.TemporaryDirectory(prefix="yl-wrk-") as tmp:
        path = Path(tmp) / "load.lua"
        path.write_text(script)
        return subprocess.run(
            [
                "wrk",
                "-t",
                str(min(threads, connections)),
                "-c",
                str(connections),
                "-d",
                f"{seconds}s",
                "--timeout",
                "60s",
                "--latency",
                "-s",
                str(path),
                base,
                "--",
                *args,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout


def latency_ms(out: str, pct: str) -> float:
    """A latency percentile from wrk's ``--latency`` report, in ms (NaN when absent)."""
    m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)", out, re.M)
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)] if m else float("nan")


def counted(out: str) -> dict[str, float]:
    """Rate and latency of a script whose threads count ``created`` (201) and ``other`` replies
    and print them when done (bench_create, bench_payments)."""
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    assert m, out
    elapsed = float(m.group(2)) / (1000 if m.group(3) == "ms" else 1)
    created = sum(int(x) for x in re.findall(r"created (\d+)", out))
    other = sum(int(x) for x in re.findall(r"other (\d+)", out))
    return {
        "tps": created / elapsed,
        "created": created,
        "other": other,
        "p50": latency_ms(out, "50"),
        "p99": latency_ms(out, "99"),
    }


def pg_client_args() -> list[str]:
    """Host, port and user options of the PostgreSQL command-line tools for ``PG_URL``."""
    parts = urlsplit(PG_URL)
    return [
        "-h",
        parts.hostname or "127.0.0.1",
        "-p",
        str(parts.port or 5432),
        "-U",
        parts.username or "postgres",
    ]


def pgbench_command(clients: int, seconds: int) -> list[str]:
    """pgbench against ``PG_URL``'s server: ``clients`` clients on 2 threads for ``seconds``."""
    return ["pgbench", *pg_client_args(), "-c", str(clients), "-j", "2", "-T", str(seconds)]


def run_pgbench(database: str, seconds: int, clients: int = 4, *, log_prefix: str | None = None) -> float:
    """TPS of ``pgbench -b tpcb-like`` with ``clients`` clients on ``database`` (``-l`` to
    ``log_prefix`` when given, for per-transaction latencies)."""
    log = ["-l", "--log-prefix", log_prefix] if log_prefix else []
    out = subprocess.run(
        [*pgbench_command(clients, seconds), "-b", "tpcb-like", *log, database],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    assert m, out
    return float(m.group(1))


def wrk(
    base: str,
    paths: list[str],
    *,
    connections: int = 32,
    seconds: int = 10,
    threads: int = 2,
    token: str | None = None,
) -> dict[str, float]:
    """Requests/s and latency percentiles (ms) from wrk, cycling through ``paths`` (with ``token``
    as the bearer token when given); ``non2xx`` counts the replies that were not a success."""
    with tempfile.TemporaryDirectory() as tmp:
        plist = Path(tmp) / "paths.txt"
        plist.write_text("\n".join(paths) + "\n")
        out = run_wrk(
            base,
            WRK_SCRIPT,
            [str(plist), token or ""],
            connections=connections,
            seconds=seconds,
            threads=threads,
        )
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    result = {"rps": rps}
    for pct in ("50", "90", "99"):
        value = latency_ms(out, pct)
        if value == value:  # not NaN
            result[f"p{pct}_ms"] = value
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non2xx"] = float(errors.group(1)) if errors else 0.0
    return result


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its live children (the
    server's worker processes): a measure of work per request that a loaded machine disturbs far
    less than throughput does."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        proc_pid = int(stat.parent.name)
        if proc_pid == pid or int(fields[1]) == pid:  # fields[1] is the parent's pid
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def postgres_cpu() -> float:
    """CPU seconds used so far by the local PostgreSQL server: each postmaster's own and its
    reaped children's (``cutime``, ``cstime``), plus its live children's (backends, WAL writer,
    checkpointer). A backend that exits between two readings moves from the second sum to the
    first, so a difference of two readings is the server's work in between."""
    tick = os.sysconf("SC_CLK_TCK")
    procs: dict[int, tuple[str, int, list[str]]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except OSError:
            continue  # the process ended while we looked
        head, _, tail = raw.rpartition(")")
        procs[int(stat.parent.name)] = (head.split("(", 1)[1], int(tail.split()[1]), tail.split())
    postmasters = {
        pid
        for pid, (comm, ppid, _) in procs.items()
        if comm == "postgres" and procs.get(ppid, ("",))[0] != "postgres"
    }
    total = 0
    for pid, (_comm, ppid, fields) in procs.items():
        if pid in postmasters:
            total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        elif ppid in postmasters:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def settled_postgres_cpu(limit_s: float = 3.0) -> float:
    """``postgres_cpu`` once the backends of a load that just ended have exited and been reaped
    (until then an exiting backend's time can be missing from both sums): two readings 0.2 s
    apart within 20 ms of each other, or ``limit_s``."""
    deadline = time.monotonic() + limit_s
    last = postgres_cpu()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = postgres_cpu()
        if now - last < 0.02:
            return now
        last = now
    return last


def table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    t = Table(title=title)
    for c in columns:
        t.add_column(c, justify="right" if c not in (columns[0],) else "left")
    for r in rows:
        t.add_row(*(f"{v:,.2f}" if isinstance(v, float) else str(v) for v in r))
    console.print(t)
