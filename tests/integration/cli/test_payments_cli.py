"""``yilian payments`` as a user runs it, against both databases: close a day once, see its batch
and reconciliation, a card's wallet and statement, the trial balance."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from tests.integration.cli.test_cli import yilian
from tests.integration.payments.builders import make_coverage, make_patient, make_region
from tests.integration.payments.conftest import CardDesk
from tests.support.audit import audits, by_the_operator
from tests.support.server import database_url
from yilian import payments
from yilian.db import Database, UnitOfWork
from yilian.db.uow import read
from yilian.fhir import FhirContext, FhirRequest, dispatch
from yilian.kernel import clock
from yilian.payments.fhir_views import CHARGE_SID
from yilian.payments.publish_queue import enqueue


def test_close_day_wallet_statement_trial_balance(db: Database, tmp_path: Path) -> None:
    desk = CardDesk()
    clock.set_clock(lambda: dt.datetime(2026, 6, 15, 3, 0, tzinfo=dt.UTC))
    try:
        with UnitOfWork(db, write=True) as uow:
            region = make_region(uow)
            patient = make_patient(uow)
            make_coverage(uow, patient_id=patient, payor_org=region.insurer, scheme="ncms")
            card = desk.issue(uow, patient)
            payments.top_up(uow, card_no=card, amount_fen=100_000, channel="cash", org=region.township_centre)
            payments.charge(
                uow,
                card_no=card,
                org=region.township_centre,
                department="clinic",
                items=[payments.Item("YP-1", "阿莫西林", "drug", 10_000, 1)],
            )
    finally:
        clock.set_clock(None)
    url = database_url(db)
    closed = yilian("payments", "close-day", "2026-06-15", "-d", url, cwd=tmp_path, env={"COLUMNS": "200"})
    assert closed.code == 0, closed.err
    assert "card-issuer" in closed.out and "¥40.00" in closed.out and "fund:ncms:330500: ¥60.00" in closed.out
    again = yilian("payments", "close-day", "2026-06-15", "-d", url, cwd=tmp_path)
    assert again.code == 2 and "already closed" in again.err
    # The close is audited in its transaction (the refused second close changed nothing).
    [event] = audits(db, "payment-close-day")
    assert by_the_operator(event, "C") == "closed business day 2026-06-15: 2 transactions in 2 batch lines"
    shown = yilian("payments", "day", "2026-06-15", "-d", url, cwd=tmp_path, env={"COLUMNS": "200"})
    assert shown.code == 0 and "reconciled" in shown.out, shown.err
    assert "owed 未付" in shown.out and "still owed 未划拨: ¥100.00" in shown.out, shown.out
    # The issuer's line is paid by a transfer: recorded once, audited, and the day says so.
    with read(db) as uow:
        lines = payments.day_report(uow, day=dt.date(2026, 6, 15))["lines"]
    issuer = next(line["line_id"] for line in lines if line["payer"] == "card-issuer")
    paid = yilian(
        "payments",
        "payout",
        "2026-06-15",
        str(issuer),
        "-r",
        "BOC-0615-1",
        "-d",
        url,
        cwd=tmp_path,
        env={"COLUMNS": "200"},
    )
    assert paid.code == 0 and "¥40.00" in paid.out and "BOC-0615-1" in paid.out, paid.out + paid.err
    twice = yilian(
        "payments", "payout", "2026-06-15", str(issuer), "-r", "BOC-0615-2", "-d", url, cwd=tmp_path
    )
    assert twice.code == 2 and "already paid (transfer BOC-0615-1" in twice.err, twice.err
    [payout_event] = audits(db, "payment-payout")
    assert "paid batch line" in by_the_operator(payout_event, "C")
    shown = yilian("payments", "day", "2026-06-15", "-d", url, cwd=tmp_path, env={"COLUMNS": "200"})
    assert "BOC-0615-1" in shown.out and "still owed 未划拨: ¥60.00" in shown.out, shown.out
    wallet = yilian("payments", "wallet", card, "-d", url, cwd=tmp_path, env={"COLUMNS": "200"})
    assert wallet.code == 0 and "¥960.00" in wallet.out, wallet.err
    statement = yilian("payments", "statement", card, "-d", url, cwd=tmp_path, env={"COLUMNS": "200"})
    assert statement.code == 0 and "charge" in statement.out and "top-up" in statement.out
    trial = yilian("payments", "trial-balance", "-d", url, cwd=tmp_path, env={"COLUMNS": "200"})
    assert trial.code == 0 and "balanced" in trial.out, trial.out + trial.err
    bad = yilian("payments", "close-day", "15/06/2026", "-d", url, cwd=tmp_path)
    assert bad.code == 2 and "YYYY-MM-DD" in bad.err
    # The FHIR views wait in the queue until published (the server does it every second): the
    # Claim, ClaimResponse, the wallet's Account and the township centre's PaymentReconciliation.
    waiting = yilian("payments", "publication", "-d", url, cwd=tmp_path, env={"COLUMNS": "200"})
    assert waiting.code == 0 and "3 subject(s) waiting" in waiting.out, waiting.out + waiting.err
    assert "the oldest waiting change was made" in waiting.out
    published = yilian("payments", "publish", "-d", url, cwd=tmp_path, env={"COLUMNS": "200"})
    assert published.code == 0 and "4 written, 0 already up to date, 0 failed" in published.out, published.err
    assert (
        "0 change(s) of 0 subject(s) waiting"
        in yilian("payments", "publication", "-d", url, cwd=tmp_path).out
    )
    # A subject that cannot be published is kept, named with its error, and fails the command.
    with UnitOfWork(db, write=True) as uow:
        enqueue(uow.conn, ["no-such-kind:1"])
    failing = yilian("payments", "publish", "-d", url, cwd=tmp_path, env={"COLUMNS": "200"})
    assert failing.code == 1 and "1 failed" in failing.out, failing.out + failing.err
    shown = yilian("payments", "publication", "-d", url, cwd=tmp_path, env={"COLUMNS": "200"})
    assert "no-such-kind:1" in shown.out and "unknown publication subject" in shown.out, shown.out


def test_publish_follow_publishes_as_charges_come(db: Database, tmp_path: Path) -> None:
    """`yilian payments publish --follow`: the publisher as its own process (beside
    `yilian serve --no-publish`) picks up each charge as it is made, and stops cleanly on SIGTERM,
    as a service manager stops it (Ctrl-C takes the same path; SIGINT itself is not used here
    because a test run started in the background passes it on ignored)."""
    desk = CardDesk()
    keep = ("YILIAN_DATA_KEYS", "YILIAN_INDEX_KEY")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("YILIAN_") or k in keep}
    environ["PYTHONFAULTHANDLER"] = "1"  # a publisher that hangs shows where (SIGABRT below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "yilian.cli.main", "payments", "publish", "--follow", "-d", database_url(db)],
        cwd=tmp_path,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        clock.set_clock(lambda: dt.datetime(2026, 7, 1, 3, 0, tzinfo=dt.UTC))
        try:
            with UnitOfWork(db, write=True) as uow:
                region = make_region(uow)
                card = desk.issue(uow, make_patient(uow, given="跟"))
                payments.top_up(
                    uow, card_no=card, amount_fen=10_000, channel="cash", org=region.city_hospital
                )
                paid = payments.charge(
                    uow,
                    card_no=card,
                    org=region.city_hospital,
                    department="clinic",
                    items=[payments.Item("YP-1", "阿莫西林", "drug", 1_000, 1)],
                )
        finally:
            clock.set_clock(None)
        query = [("identifier", f"{CHARGE_SID}|{paid.charge_id}")]
        deadline = time.monotonic() + 60
        total = 0
        while time.monotonic() < deadline and proc.poll() is None:
            with read(db) as uow:
                found = dispatch(uow, FhirContext(), FhirRequest("GET", "ClaimResponse", query=query))
            total = orjson.loads(found.body or b"{}")["total"]
            if total:
                break
            time.sleep(0.2)
        queue = payments.publication_status(db)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler writes every thread's stack to stderr
            out, err = proc.communicate(timeout=30)
            err = "did not stop on SIGTERM within 30 s\n" + err
    # When it fails, say why: what the queue holds and what the publisher wrote to stderr.
    assert total == 1, f"not published; queue: {queue!r}; publisher stderr:\n{err}"
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "publishing the payments' FHIR views" in out


def test_policies_lists_them_and_warns_of_a_year_running_out(tmp_path: Path) -> None:
    wide = {"COLUMNS": "200"}
    shown = yilian("payments", "policies", "--on", "2026-12-20", cwd=tmp_path, env=wide)
    assert shown.code == 0, shown.err
    for scheme in ("ncms", "urban-employee", "urban-resident", "medical-aid"):
        assert scheme in shown.out
    assert "ncms/330500/2026/v1, ends on 2026-12-31 (in 11 days)" in " ".join(shown.out.split())
    # For a monitoring job: status 1 while a scheme has nothing after its last policy.
    checked = yilian("payments", "policies", "--on", "2026-12-20", "--check", cwd=tmp_path, env=wide)
    assert checked.code == 1 and "warning" in checked.out
    early = yilian("payments", "policies", "--on", "2026-06-01", "--check", cwd=tmp_path, env=wide)
    assert early.code == 0 and "warning" not in early.out

    # Next year's files in the deployment's directory: the warnings go.
    extra = tmp_path / "policies"
    extra.mkdir()
    for path in sorted(payments.policy_files.POLICY_DIR.glob("*-2026.yaml")):
        text = path.read_text(encoding="utf-8").replace("2026", "2027")
        (extra / path.name.replace("2026", "2027")).write_text(text, encoding="utf-8")
    env = {**wide, payments.policy_files.ENV: str(extra)}
    covered = yilian("payments", "policies", "--on", "2026-12-20", "--check", cwd=tmp_path, env=env)
    assert covered.code == 0 and "warning" not in covered.out, covered.out
    assert covered.out.count(payments.policy_files.ENV) >= 4  # each added policy's source

    # A broken file is named, and nothing is listed.
    (extra / "broken.yaml").write_text("scheme: [", encoding="utf-8")
    broken = yilian("payments", "policies", cwd=tmp_path, env=env)
    assert broken.code == 2 and "broken.yaml" in broken.err and "cannot be read" in broken.err
    bad_day = yilian("payments", "policies", "--on", "2026-13-01", cwd=tmp_path)
    assert bad_day.code == 2 and "YYYY-MM-DD" in bad_day.err
