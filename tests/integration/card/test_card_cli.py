"""``yilian card`` with Typer's CliRunner against both databases: the lifecycle, the register
batch with its refused-rows report and idempotent re-run, counts, readable errors."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

from typer.testing import CliRunner

from tests.integration.card.conftest import MRN_A, make_patient, resident_id
from tests.support.audit import audits, by_the_operator
from tests.support.server import database_url
from yilian.api.wiring import platform_settings
from yilian.cli.main import app
from yilian.db import Database, UnitOfWork
from yilian.fhir import FhirContext

runner = CliRunner()
WIDE = {"COLUMNS": "240", "TERMINAL_WIDTH": "240"}


def yilian(db: Database, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["card", *args, "--database", database_url(db)], env=WIDE)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def _patient(db: Database, prc: str | None, mrn: str, **kwargs: str) -> str:
    ctx = FhirContext(settings=platform_settings({}))
    with UnitOfWork(db, write=True) as uow:
        return make_patient(uow, ctx, prc=prc, mrn=(MRN_A, mrn), **kwargs)


def test_lifecycle_from_the_command_line(db: Database) -> None:
    rid = resident_id(division="330502", born=dt.date(1972, 3, 4), sex="male", seq=401)
    patient = _patient(db, rid, "CLI-1", born="1972-03-04", gender="male")
    code, out = yilian(db, "issue", "--patient", patient, "--residence", "rural")
    assert code == 0, out
    assert "health card issued" in out and rid in out and "rural" in out
    code, out = yilian(db, "show", rid)
    assert code == 0 and "usable: no" in out and "not been activated" in out
    code, out = yilian(db, "activate", rid, "--reason", "holder came in")
    assert code == 0 and "is now active" in out and rid not in out  # the number is masked
    code, out = yilian(db, "activate", rid, "--reason", "twice")
    assert code == 2 and "cannot activate a card that is active" in out
    code, out = yilian(db, "revoke", rid)
    assert code == 2 and "--reason" in out
    assert yilian(db, "report-lost", rid, "--reason", "stolen", "--actor", "staff:desk-9")[0] == 0
    code, out = yilian(db, "replace", rid, "--reason", "stolen")
    assert code == 0 and f"{rid}-02" in out
    code, out = yilian(db, "show", rid)
    assert code == 0 and "usable: no" in out and "use the replacement card" in out
    assert "staff:desk-9" in out and "report-lost" in out and "stolen" in out
    code, out = yilian(db, "show", "12345")
    assert code == 2 and "18 characters" in out

    # Each change (not the refusals) is audited as the operator, the card named by its internal
    # id and the holder as the patient touched; the card number (the ID number) is never in it.
    def changes(subtype: str) -> list[str]:
        rows = [r for r in audits(db, subtype) if r.patient_keys == (patient,)]
        for r in rows:
            assert rid not in r.content.decode() and (r.entity or "").startswith("Card/")
        return [by_the_operator(r, "C" if subtype in ("card-issue", "card-replace") else "U") for r in rows]

    [issued] = changes("card-issue")
    assert issued.startswith("issued card ") and issued.endswith(f"(resident-id) to Patient/{patient}")
    [activated] = changes("card-activate")
    assert activated.endswith(f"of Patient/{patient} is now active")
    [lost] = changes("card-report-lost")
    assert lost.endswith("is now lost; recorded in the card's history as staff:desk-9")
    [replaced] = changes("card-replace")
    assert replaced.endswith(f"to Patient/{patient}, replacing their card")
    assert changes("card-revoke") == []
    # Each `show` of the card is a read of the resident's data: recorded before it is shown (the
    # refused one of a malformed number read nothing).
    shows = [r for r in audits(db, "read") if r.patient_keys == (patient,)]
    assert [by_the_operator(r, "R") for r in shows] == [
        "card and its history (1 event(s)) shown at the console",
        "card and its history (4 event(s)) shown at the console",
    ]
    assert all(rid not in r.content.decode() for r in shows)


def test_issue_batch_reports_refusals_and_runs_again_without_issuing_twice(
    db: Database, tmp_path: Path
) -> None:
    good = resident_id(division="330502", born=dt.date(1999, 9, 9), sex="male", seq=411)
    bad = good[:17] + ("0" if good[17] != "0" else "1")
    register = tmp_path / "register.csv"
    register.write_text(
        "name,sex,birth_date,id_number,phone,address,district,residence\n"
        f"冯一,男,1999-09-09,{good},13600136000,吴兴区,330502,城镇\n"
        f"冯二,男,1999-09-09,{bad},,,330502,urban\n"
        "冯三,女,2026-09-01,,13600136001,,330503,rural\n"
        "冯四,X,2026-09-01,,,,330503,rural\n",
        encoding="utf-8",
    )
    refused = tmp_path / "refused.csv"
    code, out = yilian(db, "issue-batch", str(register), "--report", str(refused))
    assert code == 1, out  # some rows were refused
    assert "cards issued" in out and "bad check character" in out
    with refused.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["line"], r["name"]) for r in rows] == [("3", "冯二"), ("5", "冯四")]
    assert "sex 'X'" in rows[1]["reason"]
    code, out = yilian(db, "issue-batch", str(register))
    assert code == 1
    summary = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in out.splitlines()
        if line.count("│") == 3
    }
    assert summary["cards issued"] == "0" and summary["already issued"] == "2" and summary["refused"] == "2"
    # One AuditEvent per chunk of the register, in its transaction (the refused rows never reach one).
    first, again = [r for r in audits(db, "card-issue-batch") if "register.csv" in r.content.decode()]
    assert by_the_operator(first, "C") == (
        "population register register.csv, lines 2-4: 2 cards issued, 0 already issued, 0 refused"
    )
    assert len(first.patient_keys) == 2 and good not in first.content.decode()
    assert by_the_operator(again, "C").endswith("lines 2-4: 0 cards issued, 2 already issued, 0 refused")
    code, out = yilian(db, "issue-batch", str(tmp_path / "missing.csv"))
    assert code == 2 and "there is no file" in out


def test_counts_from_the_command_line(db: Database) -> None:
    rid = resident_id(division="330521", born=dt.date(1960, 1, 1), seq=420)
    patient = _patient(db, rid, "CLI-C", born="1960-01-01")
    assert yilian(db, "issue", "--patient", patient, "--residence", "urban")[0] == 0
    code, out = yilian(db, "counts")
    assert code == 0, out
    assert "district 330521" in out and "urban" in out
    code, out = yilian(db, "counts", "--as-of", "2000-01-01")
    assert code == 0 and "2000-01-01" in out and "district" not in out
    assert yilian(db, "counts", "--as-of", "soon")[0] == 2
