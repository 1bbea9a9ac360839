"""Who may send HL7 v2, and what is recorded: the MLLP listener with mutual TLS, on SQLite and
PostgreSQL. Certificates are made at test time by a throwaway CA (tests/support/certs.py);
messages are sent over real TLS sockets with client certificates."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from tests.support.certs import Authority, Issued
from yilian.api.wiring import platform_settings
from yilian.db import Database, UnitOfWork
from yilian.exchange import IntakeSettings, MllpServer, dead_letters, tls_context
from yilian.exchange import intake as intake_module
from yilian.exchange.tables import inbox
from yilian.fhir import FhirContext, FhirRequest, dispatch
from yilian.kernel import naming
from yilian.security.audit import AuditRow
from yilian.security.audit.tables import audit_event
from yilian.security.client_certs import bind_certificate, read_certificate
from yilian.security.clients import register_client, revoke_client

ID_NUMBER = "11010519491231002X"  # a resident ID number (checksum valid), never to appear in the log


@dataclass
class Pki:
    ca: Authority
    server: Issued
    certs: dict[str, Issued]
    clients: dict[str, str]  # name -> client_id
    port: int


def _organization(db: Database, name: str) -> str:
    with UnitOfWork(db, write=True) as uow:
        resp = dispatch(
            uow,
            FhirContext(settings=platform_settings()),
            FhirRequest("POST", "Organization", body={"resourceType": "Organization", "name": name}),
        )
        uow.commit()
    return str(orjson.loads(resp.body or b"{}")["id"])


def _client(
    db: Database, name: str, org: str | None, scopes: str, senders: tuple[str, ...], cert: Issued | None
) -> str:
    with UnitOfWork(db, write=True) as uow:
        client, _ = register_client(uow, name=name, org_id=org, scopes=scopes, hl7_senders=senders)
        if cert is not None:
            bind_certificate(uow, client.client_id, read_certificate(cert.pem))
        uow.commit()
    return client.client_id


@pytest.fixture(scope="module")
def pki(db: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    ca = Authority(tmp_path_factory.mktemp("pki"))
    server = ca.issue("localhost", server=True)
    certs = {n: ca.issue(n) for n in ("his", "lis", "revoked", "unbound", "later-revoked")}
    hosp_a = _organization(db, "县第一人民医院")
    clients = {
        "his": _client(db, "HIS A", hosp_a, "system/*.cruds", ("HOSPA",), certs["his"]),
        "lis": _client(
            db,
            "LIS A",
            hosp_a,
            "system/Observation.c system/DiagnosticReport.c",
            ("LAB|HOSPA",),
            certs["lis"],
        ),
        "revoked": _client(db, "old HIS", hosp_a, "system/*.cruds", ("HOSPA",), certs["revoked"]),
        "later-revoked": _client(db, "HIS A2", hosp_a, "system/*.cruds", ("HOSPA",), certs["later-revoked"]),
    }
    with UnitOfWork(db, write=True) as uow:
        revoke_client(uow, clients["revoked"])
        uow.commit()
    loop = asyncio.new_event_loop()
    listener = MllpServer(
        db,
        IntakeSettings(fhir=platform_settings()),
        host="127.0.0.1",
        port=0,
        workers=4,
        ssl_context=tls_context(str(server.cert), str(server.key), str(ca.ca_file)),
    )
    loop.run_until_complete(listener.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield Pki(ca, server, certs, clients, listener.bound_port)
    asyncio.run_coroutine_threadsafe(listener.close(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


class Connection:
    """One MLLP connection over TLS, presenting ``cert`` (or none)."""

    def __init__(self, pki: Pki, cert: Issued | None) -> None:
        context = ssl.create_default_context(cafile=str(pki.ca.ca_file))
        if cert is not None:
            context.load_cert_chain(str(cert.cert), str(cert.key))
        plain = socket.create_connection(("127.0.0.1", pki.port), timeout=30)
        self.sock = context.wrap_socket(plain, server_hostname="localhost")

    def send(self, message: str) -> dict[str, list[str]]:
        self.sock.sendall(b"\x0b" + message.encode() + b"\x1c\x0d")
        reply = b""
        while not reply.endswith(b"\x1c\x0d"):
            chunk = self.sock.recv(4096)
            assert chunk, "the listener closed the connection"
            reply += chunk
        text = reply.strip(b"\x0b\x1c\r").decode()
        return {line.split("|")[0]: line.split("|") for line in text.split("\r") if line}

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def admit(cid: str, mrn: str, *, app: str = "HIS", facility: str = "HOSPA") -> str:
    return (
        f"MSH|^~\\&|{app}|{facility}|YILIAN|YILIAN|20261203120000||ADT^A01|{cid}|P|2.5\r"
        "EVN|A01|20261203120000\r"
        f"PID|1||{mrn}^^^HOSPA^MR~{ID_NUMBER}^^^CHN^NNCHN||Zhang^San||19491231|F\r"
        "PV1|1|I|W1^101^1" + "|" * 16 + f"V-{mrn}\r"
    )


def merge(cid: str, survivor: str, old: str, *, app: str = "LAB") -> str:
    return (
        f"MSH|^~\\&|{app}|HOSPA|YILIAN|YILIAN|20261203120000||ADT^A40|{cid}|P|2.5\r"
        "EVN|A40|20261203120000\r"
        f"PID|1||{survivor}^^^HOSPA^MR||Zhang^San\r"
        f"MRG|{old}^^^HOSPA^MR\r"
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def patients(db: Database, mrn: str) -> list[dict[str, Any]]:
    with UnitOfWork(db) as uow:
        resp = dispatch(
            uow,
            FhirContext(settings=platform_settings()),
            FhirRequest("GET", "Patient", query=[("identifier", f"{naming.mrn_system('HOSPA')}|{mrn}")]),
        )
    return [e["resource"] for e in orjson.loads(resp.body or b"{}").get("entry", [])]


def audits(db: Database, control_id: str) -> list[AuditRow]:
    with UnitOfWork(db) as uow:
        rows = uow.conn.execute(
            select(audit_event).where(audit_event.c.entity.like(f"% {control_id}"))
        ).mappings()
        return [AuditRow.of(r) for r in rows]


def details(row: AuditRow) -> dict[str, str]:
    event = row.resource()
    return {d["type"]: d["valueString"] for e in event.get("entity", []) for d in e.get("detail", [])}


def err_text(ack: dict[str, list[str]]) -> str:
    return "|".join(ack["ERR"])


def test_a_client_with_a_bound_certificate_is_accepted_and_audited(db: Database, pki: Pki) -> None:
    cid, mrn = unique("OK"), unique("MRN")
    with Connection(pki, pki.certs["his"]) as conn:
        ack = conn.send(admit(cid, mrn))
    assert ack["MSA"][1:3] == ["AA", cid]
    (patient,) = patients(db, mrn)
    (row,) = audits(db, cid)
    assert (row.subtype, row.outcome, row.agent_id) == ("hl7v2-message", 0, pki.clients["his"])
    assert row.org_id is not None and patient["id"] in row.patient_keys
    event = row.resource()
    assert event["type"]["code"] == "110107"  # DICOM Import
    d = details(row)
    assert d["MSH-10"] == cid and d["MSH-9"] == "ADT^A01" and d["MSH-4"] == "HOSPA"
    written = {
        x["valueString"] for e in event["entity"] for x in e.get("detail", []) if x["type"] == "resource-type"
    }
    assert {"Patient", "Encounter"} <= written
    # The ID number in PID-3 is in the record, never in the log.
    assert ID_NUMBER not in bytes(row.content).decode() and ID_NUMBER[:6] + "********" not in (
        row.entity or ""
    )


@pytest.mark.parametrize("who", ["none", "unbound", "revoked"])
def test_unauthenticated_senders_are_refused_with_err_and_audited(db: Database, pki: Pki, who: str) -> None:
    cid, mrn = unique(f"NO-{who}"), unique("MRN")
    cert = None if who == "none" else pki.certs[who]
    with Connection(pki, cert) as conn:
        ack = conn.send(admit(cid, mrn))
    assert ack["MSA"][1:3] == ["AR", cid]
    expected = {
        "none": "no client certificate",
        "unbound": "not bound to a registered client",
        "revoked": "is revoked",
    }
    assert expected[who] in err_text(ack)
    assert patients(db, mrn) == []
    (row,) = audits(db, cid)
    assert row.subtype == "access-denied" and row.outcome == 4 and row.flagged
    if who == "unbound":
        assert row.agent_id.startswith("cert-sha256:")
    if who == "revoked":
        assert row.agent_id == pki.clients["revoked"]
    # Nothing of a refused sender's message is kept.
    with UnitOfWork(db) as uow:
        kept = uow.conn.execute(select(inbox.c.raw)).scalars().all()
    assert not [r for r in kept if cid.encode() in bytes(r)]


def test_a_certificate_from_another_ca_fails_the_handshake_and_is_audited(
    db: Database, pki: Pki, tmp_path: Path
) -> None:
    stranger = Authority(tmp_path / "other", name="Stranger CA").issue("his")
    with UnitOfWork(db) as uow:
        before = len(
            uow.conn.execute(
                select(audit_event.c.id).where(audit_event.c.entity == "HL7v2 MLLP connection")
            ).all()
        )
    with pytest.raises((ssl.SSLError, ConnectionError, AssertionError)), Connection(pki, stranger) as conn:
        conn.send(admit(unique("X"), unique("MRN")))
    # The client may see its handshake fail before the listener has written the denial.
    deadline = time.monotonic() + 10
    while True:
        with UnitOfWork(db) as uow:
            rows = [
                AuditRow.of(r)
                for r in uow.conn.execute(
                    select(audit_event).where(audit_event.c.entity == "HL7v2 MLLP connection")
                ).mappings()
            ]
        if len(rows) > before or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(rows) == before + 1
    assert (
        rows[-1].subtype == "access-denied" and "TLS handshake refused" in rows[-1].resource()["outcomeDesc"]
    )


def test_revocation_takes_effect_on_an_open_connection(db: Database, pki: Pki) -> None:
    first, second = unique("RV"), unique("RV")
    with Connection(pki, pki.certs["later-revoked"]) as conn:
        assert conn.send(admit(first, unique("MRN")))["MSA"][1] == "AA"
        with UnitOfWork(db, write=True) as uow:
            revoke_client(uow, pki.clients["later-revoked"])
            uow.commit()
        ack = conn.send(admit(second, unique("MRN")))
    assert ack["MSA"][1] == "AR" and "is revoked" in err_text(ack)
    assert audits(db, second)[0].subtype == "access-denied"


def test_a_facility_the_client_is_not_registered_for_is_refused(db: Database, pki: Pki) -> None:
    cid, mrn = unique("FAC"), unique("MRN")
    with Connection(pki, pki.certs["his"]) as conn:
        ack = conn.send(admit(cid, mrn, facility="HOSPB"))
    assert ack["MSA"][1:3] == ["AR", cid]
    assert ack["ERR"][2] == "MSH^1^4" and ack["ERR"][3].startswith("103^")
    assert "may not send as" in err_text(ack) and "HOSPB" in err_text(ack)
    assert patients(db, mrn) == []
    (row,) = audits(db, cid)
    assert row.subtype == "access-denied" and row.agent_id == pki.clients["his"]
    # The refused message is kept as a dead letter: registering the facility and replaying stores it.
    (letter,) = [d for d in dead_letters(db) if d.control_id == cid]
    assert letter.ack_code == "AR" and letter.error_code == "103"


def test_scopes_limit_what_a_sender_may_write(db: Database, pki: Pki) -> None:
    survivor, old = unique("S"), unique("O")
    with Connection(pki, pki.certs["his"]) as conn:
        assert conn.send(admit(unique("P1"), survivor))["MSA"][1] == "AA"
        assert conn.send(admit(unique("P2"), old))["MSA"][1] == "AA"
    cid = unique("MRG")
    with Connection(pki, pki.certs["lis"]) as conn:
        ack = conn.send(merge(cid, survivor, old))
    assert ack["MSA"][1:3] == ["AR", cid]
    assert "do not allow" in err_text(ack) and "Patient" in err_text(ack)
    # Nothing changed: the old record is still active and unlinked.
    (kept,) = patients(db, old)
    assert kept.get("active", True) is not False and "link" not in kept
    (row,) = audits(db, cid)
    assert row.subtype == "access-denied" and row.agent_id == pki.clients["lis"] and row.flagged
    # The same message from a sender whose scopes cover it is stored.
    with Connection(pki, pki.certs["his"]) as conn:
        assert conn.send(merge(unique("MRG"), survivor, old, app="HIS"))["MSA"][1] == "AA"
    (merged,) = patients(db, old)
    assert merged["active"] is False


def test_the_audit_event_commits_with_the_writes_or_not_at_all(
    db: Database, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = intake_module._audit

    def failing(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("err") is None:
            raise RuntimeError("audit log unavailable")
        return real(*args, **kwargs)

    monkeypatch.setattr(intake_module, "_audit", failing)
    cid, mrn = unique("TX"), unique("MRN")
    with Connection(pki, pki.certs["his"]) as conn:
        ack = conn.send(admit(cid, mrn))
    assert ack["MSA"][1] == "AE"
    # The message's writes went with its audit record: no Patient, but the failure is audited.
    assert patients(db, mrn) == []
    (row,) = audits(db, cid)
    assert row.subtype == "hl7v2-message" and row.outcome == 8
    monkeypatch.setattr(intake_module, "_audit", real)
    with Connection(pki, pki.certs["his"]) as conn:
        assert conn.send(admit(cid, mrn))["MSA"][1] == "AA"
    assert len(patients(db, mrn)) == 1
    assert [r.outcome for r in sorted(audits(db, cid), key=lambda r: r.id)] == [8, 0]
