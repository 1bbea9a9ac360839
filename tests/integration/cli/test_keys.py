"""``yilian keys``: a data-key rotation end to end, on SQLite and PostgreSQL.

Values sealed under the old key (an ID number and a phone in a Patient and in its history, a
health card number, an HL7 message; one message kept plain from before the inbox was sealed)
are re-encrypted under the new key by ``yilian keys reencrypt``; the old key cannot be retired
before that and can be after, and everything still opens with a keyring that no longer has it.
Every change (rotate, re-encrypt, retire) leaves one AuditEvent as the operator, with key ids and
counts and never key material.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from sqlalchemy import select

from tests.support.audit import audits, by_the_operator
from tests.support.fhir_calls import call
from tests.support.paths import ROOT
from tests.support.server import database_url
from yilian.api.wiring import platform_settings
from yilian.card import issue_card
from yilian.card.tables import card
from yilian.db import Database, UnitOfWork
from yilian.exchange.raw_messages import open_raw, seal_raw
from yilian.exchange.tables import inbox
from yilian.fhir import FhirContext
from yilian.fhir.store import sealing
from yilian.fhir.store.tables import resource, resource_version
from yilian.kernel import prc_id
from yilian.kernel.crypto import key_ids_in
from yilian.security.audit import AuditRow

ID_NUMBER = prc_id.generate("330502", dt.date(1949, 12, 31), "female", 2)
PHONE = "13800138000"
HL7 = b"MSH|^~\\&|HIS|H1|YL|CITY|20260101||ADT^A04|%s|P|2.5\rPID|1||" + ID_NUMBER.encode() + b"^^^CHN^NNCHN\r"


def yilian(*args: str, key_file: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YILIAN_")}
    proc = subprocess.run(
        [sys.executable, "-m", "yilian.cli.main", *args],
        cwd=ROOT,
        env={**env, "YILIAN_KEY_FILE": str(key_file), "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def stored_key_ids(db: Database, pid: str, inbox_ids: list[str], card_id: str) -> set[str]:
    with db.engine.connect() as conn:
        docs: list[bytes | str] = [
            r[0] for r in conn.execute(select(card.c.number_sealed).where(card.c.card_id == card_id))
        ]
        docs += [
            bytes(r[0]) for r in conn.execute(select(resource.c.content).where(resource.c.res_id == pid))
        ]
        docs += [
            bytes(r[0])
            for r in conn.execute(select(resource_version.c.content).where(resource_version.c.res_id == pid))
        ]
        docs += [
            bytes(r[0]) for r in conn.execute(select(inbox.c.raw).where(inbox.c.inbox_id.in_(inbox_ids)))
        ]
    return set().union(*(key_ids_in(d) for d in docs))


def no_key_material(row: AuditRow, key_file: Path) -> None:
    doc = json.loads(key_file.read_text())
    for secret in [*doc["data_keys"].values(), doc["index_key"]]:
        assert secret not in row.content.decode()


def rows_sealed_under(db: Database, key_id: str) -> int:
    places = ((resource, "content"), (resource_version, "content"), (card, "number_sealed"), (inbox, "raw"))
    n = 0
    with db.engine.connect() as conn:
        for table, column in places:
            for (value,) in conn.execute(select(table.c[column]).where(table.c[column].is_not(None))):
                n += key_id in key_ids_in(bytes(value) if isinstance(value, (bytes, memoryview)) else value)
    return n


def test_a_rotation_reencrypts_every_sealed_value_and_then_retires_the_old_key(
    db: Database, tmp_path: Path
) -> None:
    old = sealing.keyring_for(db.engine)
    assert old is not None
    old_id = old.current_key_id
    pid = f"rot-{uuid.uuid4().hex[:8]}"
    patient = {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": ID_NUMBER}],
        "telecom": [{"system": "phone", "value": PHONE}],
        "name": [{"family": "王", "given": ["芳"]}],
        "birthDate": "1949-12-31",
    }
    ctx = FhirContext(base_url="http://testserver/fhir", settings=platform_settings({}))
    with UnitOfWork(db, write=True) as uow:
        assert call(uow, ctx, "PUT", f"Patient/{pid}", patient).status == 201
        assert call(uow, ctx, "PUT", f"Patient/{pid}", {**patient, "gender": "female"}).status == 200
        card_id = issue_card(uow, ctx, patient_id=pid, actor="test").card_id
        uow.commit()
    sealed_id, plain_id = str(uuid.uuid4()), str(uuid.uuid4())
    with db.engine.begin() as conn:
        for inbox_id, raw in ((sealed_id, seal_raw(db, HL7 % b"1")), (plain_id, HL7 % b"2")):
            conn.execute(inbox.insert().values(inbox_id=inbox_id, received=1, raw=raw, state="stored"))
    assert stored_key_ids(db, pid, [sealed_id, plain_id], card_id) == {old_id}

    rotated = old.with_new_current_key("k9")
    key_file = tmp_path / "keys.json"
    rotated.save(key_file)
    url = database_url(db)

    refused = yilian("keys", "retire", old_id, "-d", url, key_file=key_file)
    assert refused.returncode != 0 and f"still sealed under '{old_id}'" in " ".join(refused.stderr.split())
    assert audits(db, "key-retire") == []  # refused: nothing changed, nothing recorded as changed
    status = yilian("keys", "status", "-d", url, key_file=key_file)
    assert status.returncode == 0, status.stderr
    assert "current data key k9" in status.stdout

    done = yilian("keys", "reencrypt", "-d", url, key_file=key_file)
    assert done.returncode == 0, done.stderr
    assert "Re-encrypted under data key k9" in done.stdout
    assert stored_key_ids(db, pid, [sealed_id, plain_id], card_id) == {
        "k9"
    }  # the plain message is sealed now
    again = yilian("keys", "reencrypt", "-d", url, key_file=key_file)
    assert again.returncode == 0 and " 0 " in again.stdout  # nothing left: a second run changes nothing
    # Each pass is recorded once, after its batches, with how many values it rewrote (every row
    # now under k9 was rewritten by the first: the database held nothing under k9 before).
    first, second = audits(db, "key-reencrypt")
    rewritten = rows_sealed_under(db, "k9")
    assert rewritten >= 5
    said = by_the_operator(first, "U")
    assert f"re-encrypted {rewritten} sealed values under data key k9" in said and "HL7 v2 inbox: 2" in said
    assert first.entity == "data keys"
    assert "re-encrypted 0 sealed values under data key k9" in by_the_operator(second, "U")

    retired = yilian("keys", "retire", old_id, "-d", url, key_file=key_file)
    assert retired.returncode == 0, retired.stderr
    assert list(json.loads(key_file.read_text())["data_keys"]) == ["k9"]
    (retire,) = audits(db, "key-retire")
    assert f"data key {old_id} removed from the key file {key_file}" in by_the_operator(retire, "D")
    assert "keys left: k9 (current k9)" in by_the_operator(retire, "D")
    for row in (first, second, retire):
        no_key_material(row, key_file)

    # Everything opens with the keyring that no longer has the old key.
    sealing.install(db.engine, rotated.without_key(old_id))
    try:
        with UnitOfWork(db) as uow:
            read = call(uow, ctx, "GET", f"Patient/{pid}")
            assert (
                read.json["identifier"][0]["value"] == ID_NUMBER and read.json["telecom"][0]["value"] == PHONE
            )
            first = call(uow, ctx, "GET", f"Patient/{pid}/_history/1")
            assert first.json["identifier"][0]["value"] == ID_NUMBER
        with db.engine.connect() as conn:
            raws = dict(
                conn.execute(
                    select(inbox.c.inbox_id, inbox.c.raw).where(inbox.c.inbox_id.in_([sealed_id, plain_id]))
                ).all()
            )
        assert open_raw(db, bytes(raws[sealed_id])) == HL7 % b"1"
        assert open_raw(db, bytes(raws[plain_id])) == HL7 % b"2"
    finally:
        sealing.install(db.engine, old)


def test_rotate_adds_a_current_key_to_the_key_file_and_records_it(db: Database, tmp_path: Path) -> None:
    keyring = sealing.keyring_for(db.engine)
    assert keyring is not None
    key_file = tmp_path / "keys.json"
    keyring.save(key_file)
    before = len(audits(db, "key-rotate"))
    done = yilian("keys", "rotate", "-d", database_url(db), key_file=key_file)
    assert done.returncode == 0, done.stderr
    doc = json.loads(key_file.read_text())
    new_id = doc["current"]
    assert new_id not in keyring.key_ids and set(doc["data_keys"]) == {*keyring.key_ids, new_id}
    rows = audits(db, "key-rotate")
    assert len(rows) == before + 1
    said = by_the_operator(rows[-1], "U")
    assert f"new current data key {new_id} added to the key file {key_file}" in said
    no_key_material(rows[-1], key_file)


def test_keys_from_the_environment_are_rotated_where_they_are_kept(db: Database, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "YILIAN_KEY_FILE"}
    before = len(audits(db, "key-rotate"))
    proc = subprocess.run(
        [sys.executable, "-m", "yilian.cli.main", "keys", "rotate", "-d", database_url(db)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "YILIAN_DATA_KEYS" in proc.stderr and "secret store" in proc.stderr
    assert len(audits(db, "key-rotate")) == before  # refused: nothing changed, nothing recorded


def test_rewriting_visits_every_row_once_across_batches_of_a_composite_key(db: Database) -> None:
    """Keyset paging over (resource_pk, version): small batches neither skip nor repeat rows."""
    from sqlalchemy import func

    from yilian.db.rewrite import rewrite_column

    ctx = FhirContext(base_url="http://testserver/fhir")
    with UnitOfWork(db, write=True) as uow:
        for i in range(4):
            for v in range(3):  # versions 1..3 of each: several rows per resource_pk
                body = {"resourceType": "Basic", "id": f"rw-{i}", "code": {"text": f"v{v}"}}
                assert call(uow, ctx, "PUT", f"Basic/rw-{i}", body).status in (200, 201)
        uow.commit()
    with db.engine.connect() as conn:
        total = int(conn.execute(select(func.count()).select_from(resource_version)).scalar_one())
    seen: list[bytes] = []
    count = rewrite_column(
        db, resource_version, "content", lambda c: seen.append(bytes(c)), batch=3, dry_run=True
    )
    assert count.rows == total == len(seen) and count.changed == 0
    marked = rewrite_column(
        db, resource_version, "content", lambda c: bytes(c) + b" " if b'"rw-' in bytes(c) else None, batch=2
    )
    assert marked.changed == 12 and marked.skipped == 0
