"""Card payments: a point-of-care charge through the HTTP API, and the day close, against pgbench.

Targets (issue 6), each against ``pgbench -b tpcb-like`` TPS with 4 clients on the same
PostgreSQL in the same run (the mean of a run before and a run after Yilian's):

- single charge through the API end to end on PostgreSQL: at least 0.5x;
- day close of 1,000,000 transactions, in transactions cleared per second: at least 1.5x.

The same loads on SQLite are stated alongside (no target).

    python -m bench.bench_payments [--seconds 15] [--close-txns 1000000] [--quick]
                                   [--backends postgresql,sqlite]

Charges: ``yilian serve`` on a fresh schema (then an empty SQLite file) holding one city hospital,
an insurer and 200 residents with active cards and topped-up wallets (half of them insured by the
NCMS scheme, so their charges are adjudicated: deductible, ratio, annual cap counters). wrk drives
``POST /api/charges`` with 4 connections (4 concurrent API clients), each request a fresh
``Idempotency-Key``, one drug line, the hospital's client token; every charge is adjudicated,
posted double-entry, audited and committed durably. Afterwards: every acknowledged charge (201) is
in ``pay_charge`` and no more than the requests still in flight at the stop besides, and the trial
balance holds.

Each server's CPU a charge is reported (its process tree's, and the PostgreSQL server's from
``/proc``), and so is ``GET /health`` on the same server afterwards (no token, no database: the
HTTP stack's own cost a request).

The charge's SQL floor (PostgreSQL): on a fresh database, 64 charges made through the platform's
app in process are recorded at the driver and replayed by ``pgbench -M prepared`` with 4 clients
(``bench/sql_replay.py``), once as the server sends them (one round trip a statement) and once
with each charge's statements in one pipeline: the database's own work for a charge, with no
Python at all. Every replayed transaction must store its charge and the trial balance must hold.

Day close: the ledger rows of one past business day are generated directly in the database
(``INSERT … SELECT`` over a generated series: going through the API would take hours at the
charge rate above): N charge transactions spread over 20 institutions and 50,000 wallets, each
with its wallet posting and merchant posting, 60% with an insurance-fund share too (2.6 postings a
transaction). Then ``payments.close_day`` (the use case the API and the CLI call) closes the day
in one unit of work: the batch lines and the per-transaction ties written, the report returned.
Timed from the call to the commit; afterwards the reconciliation is checked.

pgbench runs in a scratch database created for this run (``yilian_bench_pay_<random>``) and
dropped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import func, select, text

from bench.bench_create import server_keys
from bench.common import (
    PG_URL,
    console,
    counted,
    pg_client_args,
    postgres_cpu,
    postgres_url,
    process_tree_cpu,
    run_pgbench,
    run_wrk,
    settled_postgres_cpu,
    sqlite_url,
    table,
    wrk,
    yilian_server,
)
from yilian import payments
from yilian.api.wiring import install_keys
from yilian.db import Database, UnitOfWork, open_database
from yilian.migrations import upgrade
from yilian.payments import tables as t

CLOSE_DAY = dt.date(2026, 1, 5)  # a past business day, so it can be closed

WRK_CHARGE = """
-- POST a charge per request, cycling through the cards in args[1], a fresh Idempotency-Key each.
local cards = {}
local i = 0
local n = 0
local threads = {}
local counter = 0
created = 0
other = 0

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do cards[#cards + 1] = line end
  org = args[2]
  token = args[3]
  run = args[4]
  i = (tid * 37) % #cards
end

function request()
  i = i % #cards + 1
  n = n + 1
  local body = '{"card_no":"' .. cards[i] .. '","org":"' .. org .. '","department":"pharmacy",' ..
    '"items":[{"code":"YP-0001","name":"amoxicillin","category":"drug","unit_price_fen":1500,"quantity":2}]}'
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token,
    ["Idempotency-Key"] = run .. "-" .. tid .. "-" .. n}
  return wrk.format("POST", "/api/charges", headers, body)
end

function response(status, hdrs, body)
  if status == 201 then created = created + 1 else other = other + 1 end
end

function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    io.write(string.format("thread %d: created %d other %d\\n", t:get("tid"), t:get("created"), t:get("other")))
  end
end
"""


# --------------------------------------------------------------------------- pgbench


class PgBench:
    """pgbench's tpcb-like load in a scratch database of its own, created here and dropped after."""

    def __init__(self) -> None:
        self.name = f"yilian_bench_pay_{uuid.uuid4().hex[:8]}"
        self.conn = pg_client_args()

    def __enter__(self) -> PgBench:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {self.name}")
        subprocess.run(
            ["pgbench", *self.conn, "-i", "-s", "10", "-q", self.name], capture_output=True, check=True
        )
        return self

    def __exit__(self, *exc: object) -> None:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {self.name}")

    def run(self, seconds: int, clients: int = 4) -> tuple[float, float]:
        """TPS, and the database server's CPU per transaction (ms; transactions taken as TPS
        times the duration)."""
        cpu = settled_postgres_cpu()
        tps = run_pgbench(self.name, seconds, clients)
        per = 1000 * (settled_postgres_cpu() - cpu) / max(tps * seconds, 1)
        console.print(
            f"  pgbench tpcb-like, {clients} clients: {tps:,.0f} TPS, database CPU {per:.2f} ms each"
        )
        return tps, per


# --------------------------------------------------------------------------- charges


def seed_charges(db: Database, cards: int) -> tuple[str, list[str], str]:
    """A hospital, an insurer, ``cards`` residents with usable cards and money; the hospital's token."""
    from tests.integration.payments.builders import make_coverage, make_org, make_patient
    from tests.integration.payments.conftest import CardDesk
    from tests.support.auth import system_token

    desk = CardDesk()
    with UnitOfWork(db, write=True) as uow:
        hospital = make_org(uow, name="湖州市第一人民医院", level="3")
        insurer = make_org(uow, name="湖州市医疗保障局", level=None)
    numbers = []
    for n in range(cards):
        with UnitOfWork(db, write=True) as uow:
            patient = make_patient(uow, family="王", given=f"芳{n}")
            if n % 2 == 0:
                make_coverage(
                    uow,
                    patient_id=patient,
                    payor_org=insurer,
                    scheme="ncms",
                    start="2026-01-01",
                    end="2027-12-31",
                )
            number = desk.issue(uow, patient)
            payments.top_up(uow, card_no=number, amount_fen=100_000_000, channel="cash", org=hospital)
            numbers.append(number)
    token = system_token(
        db, scopes="system/Account.cru system/ChargeItem.cr", org_id=hospital, name="bench HIS"
    )
    return hospital, numbers, token


def wrk_charges(
    base: str, cards_file: Path, org: str, token: str, *, connections: int, seconds: int
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:12]  # the Idempotency-Keys' prefix: fresh keys every run
    out = run_wrk(
        base, WRK_CHARGE, [str(cards_file), org, token, run], connections=connections, seconds=seconds
    )
    return counted(out)


def charge_count(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(t.charge)).scalar_one())


def settled_count(db: Database, quiet_s: float = 1.0, limit_s: float = 60.0) -> int:
    """The charge count once it has stopped moving for ``quiet_s``: on a loaded machine a
    warm-up request can still be in the server seconds after wrk stopped waiting for it, and
    counting it in the measured run would break the stored-versus-acknowledged check."""
    deadline = time.monotonic() + limit_s
    last = charge_count(db)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = charge_count(db)
        if now == last:
            return now
        last = now
    return last


def measure_charges(
    url: str, backend: str, seconds: int, cards: int, workers: int = 1, publish: bool = True
) -> dict[str, Any]:
    db = open_database(url)
    upgrade(db)
    install_keys(db)  # cards are sealed at rest, as in the server
    console.print(f"  {backend}: seeding {cards} residents with cards and wallets")
    org, numbers, token = seed_charges(db, cards)
    with tempfile.TemporaryDirectory() as tmp:
        cards_file = Path(tmp) / "cards.txt"
        cards_file.write_text("\n".join(numbers) + "\n")
        with yilian_server(url, workers, *([] if publish else ["--no-publish"])) as srv:
            warm = wrk_charges(srv.base, cards_file, org, token, connections=4, seconds=3)
            if warm["created"] == 0:
                raise RuntimeError(
                    f"{backend}: no charge succeeded in the warm-up ({warm['other']} other responses)"
                )
            before = settled_count(db)  # the warm-up's last requests finish before the count
            cpu = process_tree_cpu(srv.process_id), postgres_cpu()
            r = wrk_charges(srv.base, cards_file, org, token, connections=4, seconds=seconds)
            stored = charge_count(db) - before
            # CPU a charge while the load ran (the server's background publication included);
            # the database's only when it is PostgreSQL (SQLite works inside the server).
            r["server_cpu_ms"] = 1000 * (process_tree_cpu(srv.process_id) - cpu[0]) / max(stored, 1)
            r["db_cpu_ms"] = (
                1000 * (postgres_cpu() - cpu[1]) / max(stored, 1) if backend == "postgresql" else None
            )
            # What the background publisher still owes when the load stops, and how long the
            # server (now idle) takes to write it: the FHIR views' lag behind the desk.
            backlog = payments.publication_status(db).pending
            started = time.perf_counter()
            while publish and payments.publication_status(db).pending and time.perf_counter() - started < 600:
                time.sleep(0.2)
            r["drain_s"] = time.perf_counter() - started if publish else float("nan")
            r["backlog"] = backlog
            # The HTTP stack's own floor on the same server, now idle: /health needs no token and
            # no database, so its CPU a request is what any endpoint costs before doing anything.
            cpu_before = process_tree_cpu(srv.process_id)
            health = wrk(srv.base, ["/health"], connections=4, seconds=seconds)
            r["health_rps"] = health["rps"]
            r["health_cpu_ms"] = (
                1000 * (process_tree_cpu(srv.process_id) - cpu_before) / max(health["rps"] * seconds, 1)
            )
    if not r["created"] <= stored <= r["created"] + 4 or r["other"]:
        raise AssertionError(
            f"{backend}: {r['created']} charges acknowledged, {stored} stored, {r['other']} other replies"
        )
    with UnitOfWork(db) as uow:
        if not payments.trial_balance(uow).balanced:
            raise AssertionError(f"{backend}: the trial balance does not hold after the load")
    db.dispose()
    lag = (
        f"; FHIR views published in the background, {r['backlog']:,} changes behind at the stop, "
        f"drained in {r['drain_s']:.1f} s"
        if publish
        else "; FHIR views not published (--no-publish)"
    )
    r["check"] = (
        f"{r['created']:,} acknowledged, all stored (+{stored - r['created']} in flight); trial balance holds"
        + lag
    )
    console.print(f"  {backend}, 4 clients: {r['tps']:,.0f} charges/s; {r['check']}")
    return r


# --------------------------------------------------------------------------- the SQL floor

FLOOR_CARDS = 64  # one replay script a card: 4 clients rarely wait on the same wallet row


def measure_floor(url: str, seconds: int) -> dict[str, Any]:
    """The charge's own SQL, replayed by pgbench with no Python at all (bench/sql_replay.py).

    A fresh database seeded as for the API load; charges made through the platform's app in
    process (the same handler, authentication, adjudication, ledger and audit as ``yilian serve``):
    one per card to warm the caches, then two more per card recorded at the driver. Each card's pair
    becomes one pgbench script; pgbench runs them with 4 clients, first as the server sends them
    (one round trip a statement), then each charge's transaction as a single message. Afterwards
    every replayed transaction must have stored its charge row and the trial balance must hold:
    the replay does the charge's writes, not an imitation of them.
    """
    import asyncio
    from urllib.parse import parse_qs, urlsplit

    import httpx

    from bench.sql_replay import pgbench_script, recording, run_scripts
    from yilian.api.app import create_app
    from yilian.api.wiring import platform_settings

    db = open_database(url)
    upgrade(db)
    install_keys(db)
    console.print(f"  the charge's SQL floor: seeding {FLOOR_CARDS} residents, capturing their charges")
    org, numbers, token = seed_charges(db, FLOOR_CARDS)
    app = create_app(db, platform_settings())
    with recording(db.engine) as rec:

        async def charges(record: bool) -> None:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://bench"
            ) as client:
                for number in numbers:
                    if record:
                        rec.mark()
                    body = {
                        "card_no": number,
                        "org": org,
                        "department": "pharmacy",
                        "items": [
                            {
                                "code": "YP-0001",
                                "name": "amoxicillin",
                                "category": "drug",
                                "unit_price_fen": 1500,
                                "quantity": 2,
                            }
                        ],
                    }
                    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex}
                    reply = await client.post("/api/charges", json=body, headers=headers)
                    rec.stop()
                    if reply.status_code != 201:
                        raise RuntimeError(f"a charge to capture was refused: {reply.text}")

        asyncio.run(charges(record=False))  # warm: the caches, each card's coverage and counters
        asyncio.run(charges(record=True))
        asyncio.run(charges(record=True))
    n = len(numbers)
    scripts = [pgbench_script(rec.statements(i), rec.statements(n + i)) for i in range(n)]
    options = parse_qs(urlsplit(url).query).get("options", [""])[0]
    database = urlsplit(url).path.lstrip("/")
    sizes = sorted({len(s.round_trips()) for s in scripts})
    out: dict[str, Any] = {"round_trips": f"{sizes[0]}–{sizes[-1]}" if len(sizes) > 1 else str(sizes[0])}
    for mode, texts in (
        ("as_sent", [s.as_sent() for s in scripts]),
        ("pipelined", [s.pipelined_whole() for s in scripts]),
    ):
        before = charge_count(db)
        replayed = run_scripts(texts, database, seconds, pgoptions=options)
        stored = charge_count(db) - before
        if stored != replayed.transactions:
            raise AssertionError(f"the replay ran {replayed.transactions} charges but stored {stored}")
        out[mode] = replayed
        console.print(
            f"  the charge's SQL replayed ({mode.replace('_', ' ')}), 4 clients: {replayed.tps:,.0f}/s, "
            f"database CPU {replayed.db_cpu_ms:.2f} ms each"
        )
    with UnitOfWork(db) as uow:
        if not payments.trial_balance(uow).balanced:
            raise AssertionError("the trial balance does not hold after the replay")
    out["check"] = f"every replayed charge stored ({charge_count(db):,} in all); trial balance holds"
    db.dispose()
    return out


# --------------------------------------------------------------------------- day close


def _series(db: Database, n: int) -> str:
    if db.dialect == "postgresql":
        return f"(SELECT g AS n FROM generate_series(1, {n}) AS g) AS s"
    return f"(WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < {n}) SELECT n FROM c) AS s"


def generate_day(db: Database, n: int) -> None:
    """``n`` charge transactions of :data:`CLOSE_DAY`, written set-based (not timed)."""
    day = CLOSE_DAY.isoformat()
    at = int(dt.datetime(2026, 1, 5, 3, 0, tzinfo=dt.UTC).timestamp() * 1_000_000)
    total = "(1000 + (s.n % 9000))"
    insurer = f"(CASE WHEN s.n % 5 < 3 THEN {total} * 6 / 10 ELSE 0 END)"
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO pay_account (account_id, kind, owner, floor, balance, held, created) "
                f"SELECT 'wallet:bench-' || (s.n - 1), 'wallet', 'bench-' || (s.n - 1), 0, 0, 0, {at} FROM {_series(db, 50_000)}"
            )
        )
        conn.execute(
            text(
                "INSERT INTO pay_account (account_id, kind, owner, floor, balance, held, created) "
                f"SELECT 'org:bench-org-' || (s.n - 1) || '\\:clinic', 'merchant', 'bench-org-' || (s.n - 1), NULL, 0, 0, {at} "
                f"FROM {_series(db, 20)}"
            )
        )
        conn.execute(
            text(
                "INSERT INTO pay_account (account_id, kind, owner, floor, balance, held, created) "
                f"VALUES ('fund:ncms:330500', 'fund', 'ncms', NULL, 0, 0, {at})"
            )
        )
        conn.execute(
            text(
                "INSERT INTO pay_txn (txn_id, kind, at, business_date, ref, org, memo) "
                f"SELECT 'bench-' || s.n, 'charge', {at} + s.n, '{day}', 'bench-' || s.n, 'bench-org-' || (s.n % 20), NULL "
                f"FROM {_series(db, n)}"
            )
        )
        conn.execute(
            text(
                "INSERT INTO pay_posting (txn_id, account_id, amount) "
                f"SELECT 'bench-' || s.n, 'org:bench-org-' || (s.n % 20) || '\\:clinic', {total} FROM {_series(db, n)}"
            )
        )
        conn.execute(
            text(
                "INSERT INTO pay_posting (txn_id, account_id, amount) "
                f"SELECT 'bench-' || s.n, 'wallet:bench-' || (s.n % 50000), -({total} - {insurer}) FROM {_series(db, n)}"
            )
        )
        conn.execute(
            text(
                "INSERT INTO pay_posting (txn_id, account_id, amount) "
                f"SELECT 'bench-' || s.n, 'fund:ncms:330500', -{insurer} FROM {_series(db, n)} WHERE s.n % 5 < 3"
            )
        )
        conn.execute(text(f"INSERT INTO pay_day (business_date, status) VALUES ('{day}', 'open')"))
    if db.dialect == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE pay_txn, pay_posting, pay_account"))
    else:
        with db.engine.begin() as conn:
            conn.execute(text("ANALYZE"))


def measure_close(url: str, backend: str, n: int) -> dict[str, Any]:
    db = open_database(url)
    upgrade(db)
    started = time.perf_counter()
    generate_day(db, n)
    console.print(
        f"  {backend}: generated {n:,} transactions of {CLOSE_DAY} in {time.perf_counter() - started:,.0f} s"
    )
    started = time.perf_counter()
    with UnitOfWork(db, write=True) as uow:
        report = payments.close_day(uow, day=CLOSE_DAY, closed_by="bench")
    seconds = time.perf_counter() - started
    cleared = sum(line["txn_count"] for line in report["lines"])
    if report["transactions"] != n:
        raise AssertionError(f"{backend}: the close counted {report['transactions']} transactions, not {n}")
    with UnitOfWork(db) as uow:
        recon = payments.day_report(uow, day=CLOSE_DAY)["reconciliation"]
    if not recon["reconciled"]:
        raise AssertionError(f"{backend}: the closed day does not reconcile: {recon['problems'][:3]}")
    db.dispose()
    rate = n / seconds
    console.print(
        f"  {backend}: closed {n:,} transactions ({cleared:,} transaction ties on {len(report['lines'])} lines) "
        f"in {seconds:,.1f} s: {rate:,.0f} transactions/s; reconciled"
    )
    return {"backend": backend, "seconds": seconds, "rate": rate, "lines": len(report["lines"])}


def measure_all(
    fresh: Callable[[], AbstractContextManager[str]],
    backend: str,
    seconds: int,
    cards: int,
    worker_counts: list[int],
    publish_modes: list[bool],
) -> list[dict[str, Any]]:
    """The charge load on a fresh database for each worker count and publication mode."""
    out = []
    for w in worker_counts:
        for pub in publish_modes:
            with fresh() as url:
                r = measure_charges(url, backend, seconds, cards, w, pub)
                out.append({**r, "backend": backend, "workers": w, "publish": pub})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--close-txns", type=int, default=1_000_000)
    ap.add_argument("--cards", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="5-second runs, a 50,000-transaction day")
    ap.add_argument("--backends", default="postgresql,sqlite")
    ap.add_argument("--workers", default="1", help="server worker processes to measure, e.g. 1,2")
    ap.add_argument(
        "--publish",
        default="on",
        help="the server's background FHIR publication during the charges: on, off or on,off",
    )
    args = ap.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]
    publish_modes = [m.strip() == "on" for m in args.publish.split(",")]
    seconds = 5 if args.quick else args.seconds
    n = 50_000 if args.quick else args.close_txns
    cards = 40 if args.quick else args.cards
    server_keys()
    backends = args.backends.split(",")
    baseline: list[tuple[float, float]] = []
    charges: list[dict[str, Any]] = []
    closes: list[dict[str, Any]] = []
    floor: dict[str, Any] | None = None
    if "postgresql" in backends:
        with PgBench() as bench:
            baseline.append(bench.run(seconds))
            charges += measure_all(postgres_url, "postgresql", seconds, cards, worker_counts, publish_modes)
            with postgres_url() as url:
                floor = measure_floor(url, seconds)
            with postgres_url() as url:
                closes.append(measure_close(url, "postgresql", n))
            baseline.append(bench.run(seconds))
    if "sqlite" in backends:
        charges += measure_all(sqlite_url, "sqlite", seconds, cards, worker_counts, publish_modes)
        with sqlite_url() as url:
            closes.append(measure_close(url, "sqlite", n))
    base = statistics.mean(tps for tps, _ in baseline) if baseline else float("nan")
    rows: list[list[object]] = [
        [
            f"pgbench -b tpcb-like -c 4 -j 2 (run {i}; database CPU {cpu:.2f} ms a transaction)",
            tps,
            tps / base,
            "",
            "",
        ]
        for i, (tps, cpu) in enumerate(baseline, 1)
    ]
    for r in charges:
        ratio = r["tps"] / base
        target = (
            f"≥ 0.5×: {'met' if ratio >= 0.5 else 'MISSED'}"
            if r["backend"] == "postgresql"
            else "(no target)"
        )
        rows.append(
            [
                f"POST /api/charges, 4 clients, {r['backend']}, {r['workers']} worker(s), publication "
                f"{'on' if r['publish'] else 'off'} (p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms; "
                f"CPU a charge: server {r['server_cpu_ms']:.1f} ms"
                + (f", database {r['db_cpu_ms']:.2f} ms)" if r["db_cpu_ms"] is not None else ")"),
                r["tps"],
                ratio,
                target,
                r["check"],
            ]
        )
        rows.append(
            [
                f"  GET /health on that server, 4 clients (no token, no database: the HTTP stack's "
                f"floor; server CPU {r['health_cpu_ms']:.2f} ms a request)",
                r["health_rps"],
                r["health_rps"] / base,
                "",
                "",
            ]
        )
    if floor:
        for mode, what in (
            ("as_sent", f"{floor['round_trips']} round trips as the server sends them, prepared"),
            ("pipelined", "each charge's statements in one pipeline, prepared"),
        ):
            ratio = floor[mode].tps / base
            rows.append(
                [
                    f"the charge's SQL replayed by pgbench, no Python, 4 clients ({what}; database CPU "
                    f"{floor[mode].db_cpu_ms:.2f} ms a charge)",
                    floor[mode].tps,
                    ratio,
                    f"floor {'above' if ratio >= 0.5 else 'BELOW'} 0.5×",
                    floor["check"],
                ]
            )
    for c in closes:
        ratio = c["rate"] / base
        target = (
            f"≥ 1.5×: {'met' if ratio >= 1.5 else 'MISSED'}"
            if c["backend"] == "postgresql"
            else "(no target)"
        )
        rows.append(
            [
                f"close-day of {n:,} transactions, {c['backend']} ({c['seconds']:,.1f} s)",
                c["rate"],
                ratio,
                target,
                f"{c['lines']} batch lines, reconciled",
            ]
        )
    table(
        f"card payments vs pgbench (mean {base:,.0f} TPS, same run; charges over {seconds} s)",
        ["what", "per second", "ratio", "target", "check"],
        rows,
    )


if __name__ == "__main__":
    main()
