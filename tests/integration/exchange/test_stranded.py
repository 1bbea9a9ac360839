"""Messages a crashed process left landed but unprocessed (inbox ``received``, no ACK sent):
found, processed as the client that sent them, and never lost — by `recover`, by the listener
on its own when it starts, and by `yilian exchange recover`."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import select

from tests.integration.exchange.test_hl7_commands import _yilian
from tests.support.audit import audits, by_the_operator
from tests.support.mllp import ack_fields, listener, patient, register_gateway
from tests.support.server import database_url
from yilian.api.wiring import platform_settings
from yilian.db import Database
from yilian.exchange import IntakeSettings, dead_letters, receive, recover, stranded, tables
from yilian.exchange.raw_messages import seal_raw
from yilian.kernel import naming

SETTINGS = IntakeSettings(fhir=platform_settings())
MINUTE_US = 60 * 1_000_000


def _registration(facility: str, control: str, mrn: str) -> bytes:
    return (
        f"MSH|^~\\&|HIS|{facility}|Y|C|20261203||ADT^A04|{control}|P|2.5\r"
        f"PID|1||{mrn}^^^{facility}^MR||Sun^Li||19750505|F\r"
        f"PV1|1|O|||||||||||||||||V-{mrn}^^^{facility}^VN\r"
    ).encode()


def _land(db: Database, raw: bytes, *, client_id: str | None, minutes_ago: float) -> str:
    """What intake's first transaction leaves when the process dies right after it."""
    inbox_id = uuid.uuid4().hex
    with db.engine.begin() as conn:
        conn.execute(
            tables.inbox.insert().values(
                inbox_id=inbox_id,
                received=int(time.time() * 1_000_000 - minutes_ago * MINUTE_US),
                peer="10.0.0.7:51000",
                client_id=client_id,
                raw=seal_raw(db, raw),
                state="received",
            )
        )
    return inbox_id


def _states(db: Database, *ids: str) -> list[str]:
    i = tables.inbox.c
    with db.engine.connect() as conn:
        found = dict(conn.execute(select(i.inbox_id, i.state).where(i.inbox_id.in_(ids))).all())
    return [found[x] for x in ids]


def test_stranded_messages_end_stored_duplicate_or_dead_letter(db: Database) -> None:
    gateway = register_gateway(db, "stranded gateway")
    fac = f"F{uuid.uuid4().hex[:6]}"
    good = _registration(fac, "ST-1", "M1")
    resent = _registration(fac, "ST-2", "M2")
    assert receive(db, resent, settings=SETTINGS, client_id=gateway).code == "AA"  # the sender's resend
    broken = (
        f"MSH|^~\\&|LIS|{fac}|Y|C|20261203||ORU^R01|ST-3|P|2.5\rPID|1||M3^^^{fac}^MR\r"
        f"OBR|1|O7|F7|GLU^Glucose^L\rOBX|1|NM|GLU^Glucose^L||n/a\r"
    ).encode()
    ids: dict[str, Any] = {
        "good": _land(db, good, client_id=gateway, minutes_ago=30),
        "resent": _land(db, resent, client_id=gateway, minutes_ago=20),
        "broken": _land(db, broken, client_id=gateway, minutes_ago=10),
        "unattributed": _land(db, _registration(fac, "ST-4", "M4"), client_id=None, minutes_ago=8),
        "young": _land(db, _registration(fac, "ST-5", "M5"), client_id=gateway, minutes_ago=0.5),
    }
    order = ["good", "resent", "broken", "unattributed"]
    assert [s.inbox_id for s in stranded(db)] == [ids[k] for k in order]  # oldest first, not the young

    seen: list[tuple[int, int]] = []
    done = recover(db, settings=SETTINGS, progress=lambda n, total: seen.append((n, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    by = {r.stranded.inbox_id: r.outcome for r in done}
    assert by[ids["good"]] is not None and by[ids["good"]].code == "AA" and not by[ids["good"]].duplicate
    assert by[ids["resent"]] is not None and by[ids["resent"]].duplicate
    assert by[ids["broken"]] is not None and by[ids["broken"]].code == "AE"
    assert by[ids["unattributed"]] is None  # no client to write as: left for --as-client
    assert _states(db, *ids.values()) == ["stored", "duplicate", "failed", "received", "received"]
    # What the stranded message said is in the record now; the failure is a dead letter to see.
    assert patient(db, naming.mrn_system(fac), "M1")["name"][0]["family"] == "Sun"
    assert "ST-3" in [d.control_id for d in dead_letters(db)]
    # Nothing is processed twice: a second pass finds only the one it could not attribute.
    again = recover(db, settings=SETTINGS)
    assert [(r.stranded.inbox_id, r.outcome) for r in again] == [(ids["unattributed"], None)]
    named = recover(db, settings=SETTINGS, as_client=gateway)
    assert [r.outcome.code for r in named if r.outcome] == ["AA"]
    assert _states(db, ids["unattributed"]) == ["stored"]


def test_the_listener_processes_stranded_messages_when_it_starts(db: Database) -> None:
    gateway = register_gateway(db, "restart gateway")
    fac = f"R{uuid.uuid4().hex[:6]}"
    landed = _land(db, _registration(fac, "RS-1", "K1"), client_id=gateway, minutes_ago=15)
    with listener(db, SETTINGS, gateway):
        deadline = time.monotonic() + 60
        while _states(db, landed) == ["received"] and time.monotonic() < deadline:
            time.sleep(0.1)
    assert _states(db, landed) == ["stored"]
    assert patient(db, naming.mrn_system(fac), "K1")["birthDate"] == "1975-05-05"


def test_recover_command(db: Database) -> None:
    url = database_url(db)
    gateway = register_gateway(db, "command gateway")
    fac = f"C{uuid.uuid4().hex[:6]}"
    landed = _land(db, _registration(fac, "CS-1", "J1"), client_id=gateway, minutes_ago=12)
    listed = _yilian("exchange", "dead-letters", "--database", url)
    assert listed.returncode == 0 and "1 message(s) landed but never stored nor refused" in listed.stdout
    run = _yilian("exchange", "recover", "--database", url)
    assert run.returncode == 0, run.stderr
    assert landed in run.stdout and "stored (AA)" in run.stdout and "1 stored, 0 failed, 0 left" in run.stdout
    assert _states(db, landed) == ["stored"]
    assert (
        ack_fields(receive(db, _registration(fac, "CS-1", "J1"), settings=SETTINGS, client_id=gateway).ack)[
            "MSA"
        ][1]
        == "AA"
    )  # the sender's late resend gets the ACK the recovered message earned
    assert _yilian("exchange", "recover", "--database", url).stdout.strip() == "no stranded messages"
    # The operator who set the recovery going is on record, once (the run that found nothing
    # changed nothing and recorded nothing); the message itself was audited as its sender.
    (ran,) = audits(db, "hl7-recover")
    assert by_the_operator(ran, "E") == "processed 1 stranded HL7 v2 messages: 1 stored"
    assert _yilian("exchange", "recover", "--older-than", "-1", "--database", url).returncode == 2
