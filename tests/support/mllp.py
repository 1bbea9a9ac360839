"""HL7 v2 over MLLP for tests: a listener on its own event loop in a thread (as ``yilian serve
--mllp-port`` runs it), a real MLLP client (python-hl7's ``MLLPClient``) to send with, and
readers for what a message left behind (its ACK, the resources it wrote)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import hl7.client
import orjson
from sqlalchemy import select

from tests.support.paths import SHARED
from yilian.api.wiring import platform_settings
from yilian.db import Database, UnitOfWork
from yilian.exchange import IntakeSettings, MllpServer, tables
from yilian.exchange.intake import digest
from yilian.fhir import FhirContext, FhirRequest, dispatch
from yilian.security.clients import register_client

MESSAGES = SHARED / "hl7v2" / "microsoft-fhir-converter" / "messages"
EXPECTED = SHARED / "hl7v2" / "microsoft-fhir-converter" / "expected-fhir"


def register_gateway(db: Database, name: str = "lab gateway") -> str:
    """A platform-operator gateway that may send as any facility (the shared messages come
    from many), with every scope; its client id."""
    with UnitOfWork(db, write=True) as uow:
        client, _ = register_client(uow, name=name, org_id=None, scopes="system/*.cruds", hl7_senders=("*",))
        uow.commit()
    return client.client_id


@contextmanager
def listener(db: Database, settings: IntakeSettings, client_id: str) -> Iterator[int]:
    """The listener on a free loopback port, in the insecure mode (plain TCP, every connection
    attributed to ``client_id``); yields the port."""
    loop = asyncio.new_event_loop()
    server = MllpServer(db, settings, host="127.0.0.1", port=0, workers=4, trusted_client=client_id)
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server.bound_port
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def send(port: int, message: bytes) -> bytes:
    """Send one message on a connection of its own; the ACK without its MLLP frame."""
    with hl7.client.MLLPClient("127.0.0.1", port) as client:
        reply: bytes = client.send_message(message)
    return reply.strip(b"\x0b\x1c\r")


def pv1(fields: dict[int, str]) -> str:
    """A PV1 segment with the given fields (by number), the rest empty, class inpatient."""
    values = ["PV1", "1", "I"] + [""] * (max(fields) - 2)
    for n, v in fields.items():
        values[n] = v
    return "|".join(values) + "\r"


def send_at_once(port: int, messages: list[bytes]) -> list[bytes]:
    """Send each message on a connection of its own, all released at the same moment; the ACKs
    (without their frames) in the order they came back."""
    replies: list[bytes] = []
    barrier = threading.Barrier(len(messages))

    def sender(raw: bytes) -> None:
        with hl7.client.MLLPClient("127.0.0.1", port) as client:
            barrier.wait(timeout=30)
            replies.append(client.send_message(raw).strip(b"\x0b\x1c\r"))

    threads = [threading.Thread(target=sender, args=(raw,)) for raw in messages]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert len(replies) == len(messages), "a sender got no ACK"
    return replies


def ack_fields(ack: bytes, codec: str = "utf-8") -> dict[str, list[str]]:
    return {line.split("|")[0]: line.split("|") for line in ack.decode(codec).split("\r") if line}


def control_id(raw: bytes) -> str:
    first = raw.removeprefix(b"\xef\xbb\xbf").replace(b"\n", b"\r").split(b"\r")[0].decode()
    return first.split("|")[9]


def search(db: Database, path: str, **params: str) -> list[dict[str, Any]]:
    """The matches of a FHIR search (``patient_id`` is sent as ``patient-id``)."""
    query = [(k.replace("_", "-") if not k.startswith("_") else k, v) for k, v in params.items()] + [
        ("_count", "1000")
    ]
    with UnitOfWork(db) as uow:
        resp = dispatch(uow, FhirContext(settings=platform_settings()), FhirRequest("GET", path, query=query))
    body = orjson.loads(resp.body or b"{}")
    return [
        e["resource"]
        for e in body.get("entry", [])
        if "resource" in e and e.get("search", {}).get("mode", "match") == "match"
    ]


def patient(db: Database, system: str, value: str) -> dict[str, Any]:
    found = search(db, "Patient", identifier=f"{system}|{value}")
    assert len(found) == 1, found
    return found[0]


def written(db: Database, raw: bytes) -> list[dict[str, Any]]:
    """The resources the message log says this message wrote, as the message left them (later
    messages may have changed them since: the version current when the message was stored)."""
    t = tables.message
    with UnitOfWork(db) as uow:
        row = uow.conn.execute(select(t.c.resources, t.c.stored).where(t.c.digest == digest(raw))).one()
    stored = dt.datetime.fromtimestamp(row.stored / 1_000_000, dt.UTC)
    out = []
    for ref in orjson.loads(row.resources):
        versions = [
            r
            for r in search(db, f"{ref}/_history")
            if dt.datetime.fromisoformat(r["meta"]["lastUpdated"]) <= stored
        ]
        out.append(max(versions, key=lambda r: int(r["meta"]["versionId"])))
    return out
