"""The HL7 commands as people run them: ``yilian serve --mllp-port``, ``yilian mllp`` over TLS,
``yilian exchange dead-letters`` and ``yilian exchange replay``, each in a child process."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hl7.client
import httpx
import pytest

from tests.conftest import SHARED
from tests.support.audit import audits, by_the_operator
from tests.support.certs import Authority, Issued
from tests.support.paths import ROOT
from tests.support.server import database_url, free_port
from yilian.api.wiring import platform_settings
from yilian.db import Database
from yilian.exchange import IntakeSettings, dead_letters, receive
from yilian.exchange.hl7 import to_fhir

MESSAGES = SHARED / "hl7v2" / "microsoft-fhir-converter" / "messages"


def _env() -> dict[str, str]:
    keep = ("YILIAN_DATA_KEYS", "YILIAN_INDEX_KEY")
    return {k: v for k, v in os.environ.items() if not k.startswith("YILIAN_") or k in keep}


def _yilian(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "yilian.cli.main", *args],
        cwd=ROOT,
        env={**_env(), "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _msa(reply: bytes) -> list[str]:
    line = next(x for x in reply.strip(b"\x0b\x1c\r").decode().split("\r") if x.startswith("MSA"))
    return line.split("|")


def _register(db: Database, name: str, *args: str) -> dict[str, Any]:
    out = _yilian("client", "add", name, *args, "--database", database_url(db))
    assert out.returncode == 0, out.stdout + out.stderr
    found: dict[str, Any] = json.loads(out.stdout)
    return found


def test_listener_refuses_to_start_without_sender_authentication(db: Database) -> None:
    url = database_url(db)
    plain = _yilian("mllp", "--port", str(free_port()), "--database", url)
    assert plain.returncode == 2 and "--insecure-trust-network" in plain.stdout + plain.stderr
    served = _yilian("serve", "--port", str(free_port()), "--mllp-port", str(free_port()), "--database", url)
    assert served.returncode == 2 and "must authenticate its senders" in " ".join(
        (served.stdout + served.stderr).split()
    )
    # The insecure mode still needs a registered, active client to attribute messages to.
    alone = _yilian("mllp", "--port", str(free_port()), "--insecure-trust-network", "--database", url)
    assert alone.returncode == 2 and "--as-client" in alone.stdout + alone.stderr
    nobody = _yilian("mllp", "--insecure-trust-network", "--as-client", "yl-nobody", "--database", url)
    assert nobody.returncode == 2 and "no client yl-nobody" in nobody.stdout + nobody.stderr


def test_serve_with_mllp_port(db: Database) -> None:
    gateway = _register(db, "serve gateway", "--scope", "system/*.cruds", "--hl7-sender", "*")["client_id"]
    http_port, mllp_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "yilian.cli.main",
            "serve",
            "--database",
            database_url(db),
            "--port",
            str(http_port),
            "--no-upgrade",
            "--mllp-port",
            str(mllp_port),
            "--insecure-trust-network",
            "--as-client",
            gateway,
        ],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(mllp_port, proc)
        raw = (MESSAGES / "VXU-V04-01.hl7").read_bytes()
        with hl7.client.MLLPClient("127.0.0.1", mllp_port) as client:
            assert _msa(client.send_message(raw))[1:3] == ["AA", "MSG00001"]
        _wait_for_port(http_port, proc)
        found = httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=10)
        assert found.status_code == 200
    finally:
        _stop(proc)


def _send_tls(port: int, ca: Path, client: Issued | None, raw: bytes) -> bytes:
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as plain,
        context.wrap_socket(plain, server_hostname="localhost") as s,
    ):
        s.sendall(b"\x0b" + raw + b"\x1c\x0d")
        reply = b""
        while not reply.endswith(b"\x1c\x0d"):
            chunk = s.recv(4096)
            assert chunk
            reply += chunk
    return reply


def test_mllp_command_with_client_certificates(db: Database, tmp_path: Path) -> None:
    ca = Authority(tmp_path / "pki")
    server, his, other = ca.issue("localhost", server=True), ca.issue("his"), ca.issue("other his")
    # Registered with its certificate and its sending facility in one command; a second
    # certificate bound afterwards (a renewal) works too.
    added = _register(
        db, "县医院 HIS", "--scope", "system/*.cruds", "--cert", str(his.cert), "--hl7-sender", "*"
    )
    assert len(added["certificate"]["sha256"]) == 64
    url = database_url(db)
    bound = _yilian("client", "bind-cert", added["client_id"], str(other.cert), "--database", url)
    assert bound.returncode == 0 and "other his" in bound.stdout
    senders = _yilian("client", "hl7-senders", added["client_id"], "*", "--database", url)
    assert senders.returncode == 0
    listed = _yilian("client", "list", "--database", url)
    assert "TLS cert" in listed.stdout
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "yilian.cli.main",
            "mllp",
            "--port",
            str(port),
            "--tls-cert",
            str(server.cert),
            "--tls-key",
            str(server.key),
            "--tls-client-ca",
            str(ca.ca_file),
            "--database",
            url,
        ],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, proc)
        raw = (MESSAGES / "ADT04-28.hl7").read_bytes()
        assert _msa(_send_tls(port, ca.ca_file, his, raw))[1:3] == ["AA", "1270326314"]
        assert _msa(_send_tls(port, ca.ca_file, other, raw))[1:3] == ["AA", "1270326314"]
        # Without a certificate: refused, and told why.
        refused = _send_tls(port, ca.ca_file, None, raw)
        assert _msa(refused)[1] == "AR" and b"no client certificate" in refused
        # A certificate unbound (retired, compromised) no longer gets in.
        sha = bound.stdout.split('"sha256": "')[1].split('"')[0]
        assert _yilian("client", "unbind-cert", sha, "--database", url).returncode == 0
        retired = _send_tls(port, ca.ca_file, other, raw)
        assert _msa(retired)[1] == "AR" and b"not bound to a registered client" in retired
    finally:
        _stop(proc)


def test_dead_letters_and_replay_commands(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    url = database_url(db)
    settings = IntakeSettings(fhir=platform_settings())
    gateway = _register(db, "replay gateway", "--scope", "system/*.cruds", "--hl7-sender", "*")["client_id"]
    raw = (MESSAGES / "SIU-S14-01.hl7").read_bytes().replace(b"|MSG00014|", b"|CLI-DL-1|")

    def broken(_: Any) -> None:
        raise RuntimeError("scheduling mapper not deployed")

    events, _ = to_fhir.SUPPORTED["SIU"]
    with monkeypatch.context() as patch:
        patch.setitem(to_fhir.SUPPORTED, "SIU", (events, broken))
        assert receive(db, raw, settings=settings, client_id=gateway).code == "AE"
    bad = receive(
        db,
        b"MSH|^~\\&|LIS|L7|Y|C|20261203||ORU^R01|CLI-DL-2|P|2.5\rPID|1||Q1^^^L7^MR\rOBR|1|O7|F7|GLU^Glucose^L\rOBX|1|NM|GLU^Glucose^L||n/a\r",
        settings=settings,
        client_id=gateway,
    )
    assert bad.code == "AE"
    letters = {d.control_id: d for d in dead_letters(db)}
    listed = _yilian("exchange", "dead-letters", "--database", url)
    assert listed.returncode == 0
    assert "CLI-DL-1" in listed.stdout and "CLI-DL-2" in listed.stdout and "OBX[1]-5" in listed.stdout
    assert _yilian("exchange", "replay", "--database", url).returncode == 2  # neither ids nor --all
    # The child process has the working mapper: the first replays; the second is still wrong.
    fixed = _yilian("exchange", "replay", str(letters["CLI-DL-1"].dead_id), "--database", url)
    assert fixed.returncode == 0 and "stored (AA)" in fixed.stdout
    still = _yilian("exchange", "replay", "--all", "--database", url)
    assert still.returncode == 1 and "still failing" in still.stdout
    remaining = [d.control_id for d in dead_letters(db)]
    assert "CLI-DL-1" not in remaining and "CLI-DL-2" in remaining
    # Each message was written as its sender; the operator who replayed them is on record too,
    # once per run that replayed anything (the refused run without ids replayed nothing).
    first, second = audits(db, "hl7-replay")
    one, two = letters["CLI-DL-1"].dead_id, letters["CLI-DL-2"].dead_id
    assert by_the_operator(first, "E") == f"replayed dead letters {one}: 1 stored"
    assert (
        by_the_operator(second, "E", outcome=4)
        == f"replayed dead letters {two}: 0 stored, 1 still failing ({two})"
    )
    assert first.entity == "HL7 v2 inbox"


def test_prune_inbox_removes_only_messages_done_with_past_retention(db: Database) -> None:
    """Stored, re-sent and resolved-failed messages older than the retention go; one still being
    processed, one whose dead letter is open, and recent ones stay; the message log stays."""
    import uuid

    from sqlalchemy import select

    from yilian.exchange.tables import dead_letter, inbox, message

    day = 86_400 * 1_000_000
    now = int(time.time() * 1_000_000)
    tag = uuid.uuid4().hex[:8]
    rows = {
        f"old-stored-{tag}": ("stored", now - 40 * day, None),
        f"old-duplicate-{tag}": ("duplicate", now - 40 * day, None),
        f"old-failed-resolved-{tag}": ("failed", now - 40 * day, "resolved"),
        f"old-failed-open-{tag}": ("failed", now - 40 * day, "open"),
        f"old-received-{tag}": ("received", now - 40 * day, None),
        f"new-stored-{tag}": ("stored", now - 1 * day, None),
    }
    with db.engine.begin() as conn:
        for inbox_id, (state, received, letter) in rows.items():
            conn.execute(
                inbox.insert().values(inbox_id=inbox_id, received=received, raw=b"MSH|...", state=state)
            )
            if letter:
                conn.execute(
                    dead_letter.insert().values(
                        inbox_id=inbox_id,
                        failed=received,
                        digest="d" * 64,
                        ack_code="AE",
                        error_code="207",
                        reason="test",
                        ack=b"MSA|AE",
                        attempts=1,
                        status=letter,
                    )
                )
        conn.execute(
            message.insert().values(
                sending_application="HIS",
                sending_facility=tag,
                control_id="1",
                digest="e" * 64,
                inbox_id=f"old-stored-{tag}",
                message_type="ADT^A04",
                stored=now - 40 * day,
                ack_code="AA",
                ack=b"MSA|AA|1",
                resources="[]",
            )
        )
    url = database_url(db)
    refused = _yilian("exchange", "prune-inbox", "--older-than", "0", "-d", url)
    assert refused.returncode != 0 and "at least 1 day" in refused.stderr
    run = _yilian("exchange", "prune-inbox", "--older-than", "30", "-d", url)
    assert run.returncode == 0, run.stderr
    assert "removed 3 HL7 v2 messages" in " ".join(run.stdout.split())
    (pruned,) = audits(db, "inbox-prune")  # once, as the operator's; the refused run recorded nothing
    said = by_the_operator(pruned, "D")
    assert said.startswith("removed 3 HL7 v2 messages received before") and "(retention 30 days)" in said
    assert pruned.entity == "HL7 v2 inbox"
    with db.engine.connect() as conn:
        left = {r[0] for r in conn.execute(select(inbox.c.inbox_id).where(inbox.c.inbox_id.in_(list(rows))))}
        log = conn.execute(select(message.c.ack).where(message.c.sending_facility == tag)).scalar_one()
    assert left == {f"old-failed-open-{tag}", f"old-received-{tag}", f"new-stored-{tag}"}
    assert bytes(log) == b"MSA|AA|1"  # a late re-send is still answered with the same ACK
