"""HL7 v2 over MLLP, end to end, against the FHIR transactions of the same content (issue 4: at
least 0.8x), on one server in the same run.

The server is ``yilian serve --mllp-port`` (one process: the FHIR API and the listener). The
messages are the shared ones (``shared/data/hl7v2``), each copy with its own MSH-10 and its
own patient, visit and order numbers so that every one stores new data. Both sides act as the
same registered client (system/*.cruds):

- **MLLP**: ``--senders`` connections, each sending its share one message at a time and waiting
  for the ACK (sent after commit) — HL7 original mode;
- **FHIR**: the same number of HTTP clients posting, one at a time, the transaction Bundle each
  message maps to (``to_fhir``), with a bearer token of that client.

Rounds alternate MLLP and FHIR, each with fresh copies, so drift on a shared machine hits both.
The MLLP side runs in the listener's insecure mode (plain TCP, every connection attributed to
the client), as the HTTP side is plain HTTP; ``--tls`` measures MLLP with mutual TLS instead.

    python -m bench.bench_mllp [--messages 400] [--senders 8] [--rounds 2] [--backends sqlite,postgresql] [--tls] [--quick]
"""

from __future__ import annotations

import argparse
import re
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import SHARED, Server, console, free_port, postgres_url, sqlite_url, table
from yilian.api.wiring import install_keys
from yilian.db import UnitOfWork, open_database
from yilian.exchange.hl7.parse import parse
from yilian.exchange.hl7.to_fhir import to_fhir
from yilian.migrations import upgrade
from yilian.security.client_certs import bind_certificate, read_certificate
from yilian.security.clients import register_client, system_principal
from yilian.security.tokens import issue

MESSAGES = SHARED / "hl7v2" / "microsoft-fhir-converter" / "messages"
KEYS = {"YILIAN_DATA_KEYS": "b1:" + "A" * 43 + "=", "YILIAN_INDEX_KEY": "B" * 43 + "="}
# Fields that key what a message writes (patients, merges, visits, orders, appointments,
# referrals): a copy suffixes their first component so it writes records of its own.
KEYED = {
    "PID": (2, 3, 4, 18),
    "MRG": (1, 2, 3, 5),
    "PV1": (19, 50),
    "ORC": (2, 3),
    "OBR": (2, 3),
    "SCH": (1, 2),
    "RF1": (6, 11),
    "RXA": (),
}


def templates() -> list[bytes]:
    return [p.read_bytes() for p in sorted(MESSAGES.glob("*.hl7"))]


def vary(raw: bytes, tag: str) -> bytes:
    """A copy of ``raw`` with MSH-10 and the keyed identifiers made unique by ``tag``."""
    body = raw.removeprefix(b"\xef\xbb\xbf")
    segments = re.split(rb"\r\n|\n|\r", body)
    sep = segments[0][3:4]
    comp, rep = segments[0][4:5], segments[0][5:6]
    out = []
    for seg in segments:
        if not seg.strip():
            continue
        fields = seg.split(sep)
        name = fields[0].decode("latin-1")
        if name == "MSH":
            fields[9] = fields[9] + b"-" + tag.encode()  # MSH-10 (MSH-1 is the separator itself)
        for n in KEYED.get(name, ()):
            if n < len(fields) and fields[n]:
                reps = []
                for r in fields[n].split(rep):
                    parts = r.split(comp)
                    if parts[0]:
                        parts[0] = parts[0] + tag.encode()
                    reps.append(comp.join(parts))
                fields[n] = rep.join(reps)
        out.append(sep.join(fields))
    return b"\r".join(out) + b"\r"


def copies(tmpl: list[bytes], count: int, prefix: str) -> list[bytes]:
    return [vary(tmpl[i % len(tmpl)], f"{prefix}{i}") for i in range(count)]


class Mllp:
    def __init__(self, port: int, tls: ssl.SSLContext | None) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.sock = tls.wrap_socket(sock, server_hostname="localhost") if tls else sock

    def send(self, raw: bytes) -> bytes:
        self.sock.sendall(b"\x0b" + raw + b"\x1c\x0d")
        reply = b""
        while not reply.endswith(b"\x1c\x0d"):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            reply += chunk
        return reply

    def close(self) -> None:
        self.sock.close()


def run_parallel(
    work: list[Any], workers: int, make: Callable[[], Any], call: Callable[[Any, Any], bool]
) -> tuple[float, int]:
    """Seconds to get through ``work`` with ``workers`` threads (each with its own connection), failures."""
    shares = [work[i::workers] for i in range(workers)]
    failures = [0] * workers
    ready = threading.Barrier(workers + 1)

    def worker(n: int) -> None:
        conn = make()
        ready.wait()
        try:
            for item in shares[n]:
                if not call(conn, item):
                    failures[n] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
    for t in threads:
        t.start()
    ready.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - started, sum(failures)


def accepted(reply: bytes) -> bool:
    return b"MSA|AA|" in reply


@contextmanager
def server(backend: str, tls: bool) -> Iterator[tuple[Server, int, str, ssl.SSLContext | None]]:
    ctx = sqlite_url() if backend == "sqlite" else postgres_url()
    with ctx as url, tempfile.TemporaryDirectory(prefix="yl-mllp-") as tmp:
        db = open_database(url)
        upgrade(db)
        install_keys(db, KEYS)
        client_tls: ssl.SSLContext | None = None
        cert_args: list[str] = []
        with UnitOfWork(db, write=True) as uow:
            client, _ = register_client(
                uow, name="bench gateway", org_id=None, scopes="system/*.cruds", hl7_senders=("*",)
            )
            token = issue(uow, system_principal(client), lifetime_s=7200).access_token
            if tls:
                from tests.support.certs import Authority

                ca = Authority(Path(tmp))
                srv, cli = ca.issue("localhost", server=True), ca.issue("bench-sender")
                bind_certificate(uow, client.client_id, read_certificate(cli.pem))
                cert_args = [
                    "--tls-cert",
                    str(srv.cert),
                    "--tls-key",
                    str(srv.key),
                    "--tls-client-ca",
                    str(ca.ca_file),
                ]
                client_tls = ssl.create_default_context(cafile=str(ca.ca_file))
                client_tls.load_cert_chain(str(cli.cert), str(cli.key))
            uow.commit()
        db.dispose()
        mllp_port = free_port()
        auth = cert_args or ["--insecure-trust-network", "--as-client", client.client_id]
        argv = [sys.executable, "-m", "yilian.cli.main", "serve", "--database", url, "--port", "{port}", "--no-upgrade",
                "--mllp-port", str(mllp_port), *auth]  # fmt: skip
        with Server(argv, env=KEYS) as srv_proc:
            yield srv_proc, mllp_port, token, client_tls


def run(backend: str, messages: int, senders: int, rounds: int, tls: bool) -> list[object]:
    tmpl = templates()
    with server(backend, tls) as (srv, mllp_port, token, client_tls):
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}

        def post(client: httpx.Client, body: bytes) -> bool:
            return client.post(srv.base + "/fhir", content=body, headers=headers).status_code == 200

        def http_client() -> httpx.Client:
            return httpx.Client(timeout=120)

        def bundles(raws: list[bytes]) -> list[bytes]:
            return [orjson.dumps(to_fhir(parse(r)).bundle()) for r in raws]

        # Warm up both paths (reference data: facilities, practitioners, code lookups).
        run_parallel(
            copies(tmpl, len(tmpl), "wm"),
            senders,
            lambda: Mllp(mllp_port, client_tls),
            lambda c, m: accepted(c.send(m)),
        )
        run_parallel(bundles(copies(tmpl, len(tmpl), "wh")), senders, http_client, post)
        mllp_s = http_s = 0.0
        mllp_fail = http_fail = 0
        per_round = messages // rounds
        for r in range(rounds):
            raws = copies(tmpl, per_round, f"m{r}x")
            s, f = run_parallel(
                raws, senders, lambda: Mllp(mllp_port, client_tls), lambda c, m: accepted(c.send(m))
            )
            mllp_s += s
            mllp_fail += f
            s, f = run_parallel(bundles(copies(tmpl, per_round, f"h{r}x")), senders, http_client, post)
            http_s += s
            http_fail += f
    total = per_round * rounds
    mllp_rate, http_rate = total / mllp_s, total / http_s
    return [
        backend + (" (mTLS)" if tls else ""),
        total,
        f"{mllp_rate:.1f}",
        f"{http_rate:.1f}",
        f"{mllp_rate / http_rate:.2f}×",
        f"{mllp_fail} / {http_fail}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--senders", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--tls", action="store_true", help="MLLP with mutual TLS (client certificates)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.messages, args.rounds = 108, 1
    rows = [run(b, args.messages, args.senders, args.rounds, args.tls) for b in args.backends.split(",")]
    table(
        f"HL7 v2 over MLLP vs FHIR transactions of the same content ({args.senders} concurrent senders each)",
        ["backend", "messages", "MLLP msg/s", "FHIR tx/s", "MLLP ÷ FHIR", "not stored (MLLP / FHIR)"],
        rows,
    )
    console.print("target (issue 4): MLLP ≥ 0.8× the FHIR transaction rate")


if __name__ == "__main__":
    main()
