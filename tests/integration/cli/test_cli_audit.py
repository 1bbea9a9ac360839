"""What the operator changes at the command line is audited, on SQLite and PostgreSQL.

Clients and people (``yilian client …``, ``yilian user add``) are recorded in the transaction
that changes them, without the secrets the commands print once. Work done in many transactions
(re-encryption, retention) that stops midway records what it had changed, with outcome 8.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from tests.support.audit import audits, by_the_operator
from tests.support.certs import Authority
from tests.support.server import database_url
from yilian.cli.common import console
from yilian.cli.main import app
from yilian.db import Database, UnitOfWork
from yilian.db.rewrite import RewriteCount
from yilian.db.uow import transact
from yilian.fhir import FhirContext, FhirRequest, dispatch
from yilian.security.people import MAX_FAILURES, add_user, attempt_login
from yilian.security.tables import user_account

runner = CliRunner()


def run(db: Database, *args: str) -> Any:
    result = runner.invoke(app, [*args, "--database", database_url(db)], env={"COLUMNS": "240"})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def test_client_and_user_changes_are_audited_without_their_secrets(db: Database, tmp_path: Path) -> None:
    added = run(db, "client", "add", "县医院 HIS", "--scope", "system/Patient.rs")
    assert added.exit_code == 0, added.output
    made = orjson.loads(added.output)
    cid, secret = made["client_id"], made["client_secret"]
    [row] = [r for r in audits(db, "client-add") if r.entity == f"client/{cid}"]
    said = by_the_operator(row, "C")
    assert said == (
        f"registered client {cid} (县医院 HIS) for the platform operator, scopes system/Patient.rs; "
        "a client secret issued"
    )
    assert secret not in row.content.decode()

    cert = Authority(tmp_path / "ca").issue("county-his")
    bound = run(db, "client", "bind-cert", cid, str(cert.cert))
    assert bound.exit_code == 0, bound.output
    sha = orjson.loads(bound.output)["certificate"]["sha256"]
    fingerprint = ":".join(sha[i : i + 2] for i in range(0, 64, 2)).upper()
    [row] = [r for r in audits(db, "client-bind-cert") if r.entity == f"client/{cid}"]
    assert by_the_operator(row, "C").startswith(f"bound certificate SHA-256 {fingerprint} (CN=county-his")
    assert run(db, "client", "unbind-cert", sha).exit_code == 0
    [row] = [r for r in audits(db, "client-unbind-cert") if fingerprint in r.content.decode()]
    assert by_the_operator(row, "D") == f"unbound certificate SHA-256 {fingerprint}"

    assert run(db, "client", "hl7-senders", cid, "HIS|COUNTY").exit_code == 0
    [row] = [r for r in audits(db, "client-hl7-senders") if r.entity == f"client/{cid}"]
    assert by_the_operator(row, "U") == f"client {cid} may send HL7 v2 as: HIS|COUNTY"
    assert run(db, "client", "revoke", cid).exit_code == 0
    [row] = [r for r in audits(db, "client-revoke") if r.entity == f"client/{cid}"]
    assert by_the_operator(row, "U").startswith(f"revoked client {cid}")
    refused = run(db, "client", "revoke", "no-such-client")
    assert (
        refused.exit_code == 2 and len(audits(db, "client-revoke")) == 1
    )  # nothing changed, nothing recorded

    password = "correct-horse-battery"
    user = run(db, "user", "add", "zhang.wei", "--name", "张伟", "--password", password)
    assert user.exit_code == 0, user.output
    made = orjson.loads(user.output)
    [row] = audits(db, "user-add")
    assert row.entity == f"user/{made['user_id']}"
    assert by_the_operator(row, "C") == (
        f"added staff user zhang.wei ({made['user_id']}) of the platform operator; a TOTP secret issued"
    )
    content = row.content.decode()
    assert password not in content and made["totp_uri"].split("secret=")[1].split("&")[0] not in content


def account(db: Database, username: str) -> Any:
    with db.engine.connect() as conn:
        return conn.execute(select(user_account).where(user_account.c.username == username)).one()


def test_user_list_unlock_and_revoke_are_audited(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "_width", 240)  # the table's cells on one line each, to be searched
    patient = {"resourceType": "Patient", "id": "cli-res-1", "name": [{"family": "何"}]}
    transact(
        db, lambda uow: dispatch(uow, FhirContext(), FhirRequest("PUT", "Patient/cli-res-1", body=patient))
    )
    with UnitOfWork(db, write=True) as uow:
        _, uri = add_user(uow, username="li.qiang", kind="staff", password="staff password 2026")
        add_user(
            uow, username="he.ping", kind="resident", password="resident password 1", patient_id="cli-res-1"
        )
    assert uri is not None
    for _ in range(MAX_FAILURES):
        transact(
            db, lambda uow: attempt_login(uow, username="li.qiang", password="not the password", otp=None)
        )
    staff, resident = account(db, "li.qiang"), account(db, "he.ping")
    assert staff.locked_until is not None

    listed = run(db, "user", "list")
    assert listed.exit_code == 0, listed.output
    assert "li.qiang" in listed.output and "locked until" in listed.output and "TOTP" in listed.output
    assert "he.ping" in listed.output and "Patient/cli-res-1" in listed.output
    assert uri.split("secret=")[1].split("&")[0] not in listed.output  # the seed is never shown again
    row = audits(db, "user-list")[-1]
    assert by_the_operator(row, "R").endswith("users listed at the console")
    assert "cli-res-1" in row.patient_keys

    unlocked = run(db, "user", "unlock", "li.qiang")
    assert unlocked.exit_code == 0, unlocked.output
    assert account(db, "li.qiang").locked_until is None and account(db, "li.qiang").failed_attempts == 0
    [row] = audits(db, "user-unlock")
    assert row.entity == f"user/{staff.user_id}"
    assert by_the_operator(row, "U") == f"cleared the lockout of user li.qiang ({staff.user_id})"

    revoked = run(db, "user", "revoke", "he.ping")
    assert revoked.exit_code == 0, revoked.output
    assert account(db, "he.ping").active is False or account(db, "he.ping").active == 0
    [row] = audits(db, "user-revoke")
    assert row.patient_keys == ("cli-res-1",)
    assert by_the_operator(row, "U").startswith(f"revoked user he.ping ({resident.user_id})")
    signed_in = transact(
        db, lambda uow: attempt_login(uow, username="he.ping", password="resident password 1", otp=None)
    )
    assert not hasattr(signed_in, "subject")  # refused: the account is revoked
    assert "revoked" in run(db, "user", "list").output

    for refused in (run(db, "user", "revoke", "nobody"), run(db, "user", "unlock", "nobody")):
        assert refused.exit_code == 2 and "no user nobody" in refused.output
    assert len(audits(db, "user-revoke")) == 1 and len(audits(db, "user-unlock")) == 1


def test_a_reencryption_that_stops_midway_records_what_it_had_rewritten(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first place's batches commit, the second fails: the rows rewritten stay rewritten, and
    the log says how many, with outcome 8; a failure before any change records nothing."""
    import yilian.db.rewrite

    places: list[str] = []

    def rewrite_then_fail(*args: Any, into: RewriteCount, **kwargs: Any) -> RewriteCount:
        places.append(args[1].name)
        if len(places) > 1:
            raise RuntimeError("the disk is full")
        into.rows, into.changed = 7, 3  # as if three values were rewritten and committed
        return into

    monkeypatch.delenv("YILIAN_DEBUG", raising=False)
    monkeypatch.setattr(yilian.db.rewrite, "rewrite_column", rewrite_then_fail)
    failed = run(db, "keys", "reencrypt")
    assert failed.exit_code == 1 and "RuntimeError" in failed.output
    [row] = [r for r in audits(db, "key-reencrypt") if r.outcome == 8]
    said = by_the_operator(row, "U", outcome=8)
    assert said.startswith("re-encrypted 3 sealed values under data key ")
    assert "FHIR resources (current versions): 3, FHIR resources (history): 0" in said
    assert said.endswith("; then failed: RuntimeError")

    places.append("already past the first")  # now every place fails before changing anything
    assert run(db, "keys", "reencrypt").exit_code == 1
    assert len(audits(db, "key-reencrypt")) == 1


def test_a_prune_interrupted_midway_records_how_many_rows_it_had_removed(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yilian.exchange.outbound

    def prune_then_stop(*args: Any, progress: Any, **kwargs: Any) -> Any:
        progress(5000)  # one batch deleted and committed
        raise KeyboardInterrupt

    monkeypatch.setattr(yilian.exchange.outbound, "prune_outbox", prune_then_stop)
    stopped = run(db, "exchange", "prune-outbox", "--older-than", "30")
    assert stopped.exit_code == 130
    [row] = audits(db, "outbox-prune")
    said = by_the_operator(row, "D", outcome=8)
    assert said.startswith("removed 5000 finished outbox messages")
    assert said.endswith("UTC (retention 30 days); then interrupted")
