"""kill -9 of a real ``yilian mllp`` process while hospitals are sending: nothing received is lost.

Every message acknowledged AA is stored, once. A message in flight when the process died got
no ACK: it is either stored already (the ACK was lost, not the message) or still in the inbox,
byte for byte, or was never received; the sender sends it again, as MLLP senders do without an
ACK, and it is then stored once — as is every message sent again that was stored before.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hl7.client
from sqlalchemy import func, select

from tests.support.mllp import ack_fields, control_id, register_gateway, search, send
from tests.support.paths import ROOT
from tests.support.server import database_url, free_port
from yilian.db import Database
from yilian.exchange import tables
from yilian.exchange.raw_messages import open_raw
from yilian.kernel import naming

FACILITY = "CRASH"
OBX = 4


def message(sender: int, n: int) -> bytes:
    mrn = f"K{sender}-{n}"
    obx = "".join(f"OBX|{i}|NM|8867-4^Heart rate^LN||{60 + i}|/min|||||F\r" for i in range(1, OBX + 1))
    return (
        f"MSH|^~\\&|HIS|{FACILITY}|Y|C|20261203101500||ADT^A04|{mrn}|P|2.5\r"
        f"EVN|A04|20261203101500\rPID|1||{mrn}^^^{FACILITY}^MR||Ren^Wu{n}||19800101|M\r"
        f"PV1|1|O|||||||||||||||||V{mrn}^^^{FACILITY}^VN|||||||||||||||||||||||||20261203100000\r{obx}"
    ).encode()


@contextmanager
def mllp_process(db: Database, client_id: str, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    keep = ("YILIAN_DATA_KEYS", "YILIAN_INDEX_KEY")
    env = {k: v for k, v in os.environ.items() if not k.startswith("YILIAN_") or k in keep}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "yilian.cli.main", "mllp", "--port", str(port), "--insecure-trust-network",
             "--as-client", client_id, "--database", database_url(db)],
            cwd=ROOT, env=env, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"yilian mllp exited with {proc.returncode}: {log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "yilian mllp did not start"
                time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(15)


def logged(db: Database, control: str) -> int:
    t = tables.message
    with db.engine.connect() as conn:
        stmt = select(func.count()).where(t.c.sending_facility == FACILITY, t.c.control_id == control)
        return int(conn.execute(stmt).scalar_one())


def test_kill_9_of_the_listener_loses_no_message(db: Database, tmp_path: Path) -> None:
    gateway = register_gateway(db, "crash gateway")
    port = free_port()
    sent: dict[str, bytes] = {}
    acks: dict[str, bytes] = {}  # control id -> the AA received
    unanswered: list[str] = []
    lock = threading.Lock()

    def sender(k: int) -> None:
        with hl7.client.MLLPClient("127.0.0.1", port) as client:
            for n in range(10_000):
                raw = message(k, n)
                with lock:
                    sent[control_id(raw)] = raw
                try:
                    reply = client.send_message(raw).strip(b"\x0b\x1c\r")
                except OSError:
                    reply = b""
                if not reply:  # the connection died: no ACK for this one, and none to come
                    with lock:
                        unanswered.append(control_id(raw))
                    return
                assert ack_fields(reply)["MSA"][1] == "AA", reply
                with lock:
                    acks[control_id(raw)] = reply

    with mllp_process(db, gateway, port, tmp_path / "mllp.log") as proc:
        senders = [threading.Thread(target=sender, args=(k,)) for k in range(3)]
        for th in senders:
            th.start()
        deadline = time.monotonic() + 60
        while len(acks) < 12:
            assert time.monotonic() < deadline, "the listener acknowledged too little before the kill"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # mid-load: three connections each with a message in flight
        proc.wait(10)
        for th in senders:
            th.join(30)
    assert len(unanswered) == 3 and set(sent) == set(acks) | set(unanswered)

    # Before any resend: what was acknowledged is stored once; what was received and not
    # acknowledged is stored or still in the inbox, byte for byte.
    for control in acks:
        assert logged(db, control) == 1, control
    inbox = tables.inbox
    with db.engine.connect() as conn:
        rows = conn.execute(select(inbox.c.raw, inbox.c.state).where(inbox.c.client_id == gateway)).all()
    received = {control_id(open_raw(db, bytes(r.raw))): (open_raw(db, bytes(r.raw)), r.state) for r in rows}
    assert set(acks) <= set(received)
    for control in unanswered:
        if control in received:
            raw, state = received[control]
            assert raw == sent[control]
            assert (state, logged(db, control)) in (("stored", 1), ("received", 0)), (control, state)
        else:
            assert logged(db, control) == 0  # never landed: the sender still holds it

    # The listener comes back; the senders send again what got no ACK (and, to show it changes
    # nothing, what did): every message is then stored exactly once.
    with mllp_process(db, gateway, port, tmp_path / "mllp.log"):
        for control, raw in sent.items():
            reply = send(port, raw)
            assert ack_fields(reply)["MSA"][1:3] == ["AA", control]
            if control in acks:
                assert reply == acks[control]  # a resend: the first ACK, nothing written
    for control in sent:
        assert logged(db, control) == 1, control
        (person,) = search(db, "Patient", identifier=f"{naming.mrn_system(FACILITY)}|{control}")
        (visit,) = search(db, "Encounter", identifier=f"{naming.visit_number_system(FACILITY)}|V{control}")
        assert visit["subject"]["reference"] == f"Patient/{person['id']}"
        assert len(search(db, "Observation", subject=f"Patient/{person['id']}")) == OBX
