"""``yilian payments bank-statement`` as a finance office runs it, against both databases: the
bank's statement (GB18030, Chinese headers) pays the batch lines whose transfer codes its memos
carry, to the fen, once; every other row is listed with the reason and records nothing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tests.integration.cli.test_cli import yilian
from tests.integration.payments.builders import make_coverage, make_patient, make_region
from tests.integration.payments.conftest import CardDesk
from tests.support.audit import audits, by_the_operator
from tests.support.server import database_url
from yilian import payments
from yilian.db import Database, UnitOfWork
from yilian.db.uow import read
from yilian.kernel import clock

DAY = dt.date(2026, 6, 15)
WIDE = {"COLUMNS": "250"}


def _closed_day(db: Database) -> dict[str, dict[str, object]]:
    """A plain card and an insured one pay at the township centre; the day is closed. Its lines
    by payer."""
    desk = CardDesk()
    clock.set_clock(lambda: dt.datetime(2026, 6, 15, 3, 0, tzinfo=dt.UTC))
    try:
        with UnitOfWork(db, write=True) as uow:
            region = make_region(uow)
            for insured in (False, True):
                patient = make_patient(uow)
                if insured:
                    make_coverage(uow, patient_id=patient, payor_org=region.insurer, scheme="ncms")
                card = desk.issue(uow, patient)
                payments.top_up(
                    uow, card_no=card, amount_fen=100_000, channel="cash", org=region.township_centre
                )
                payments.charge(
                    uow,
                    card_no=card,
                    org=region.township_centre,
                    department="clinic",
                    items=[payments.Item("YP-1", "阿莫西林", "drug", 12_345, 1)],
                )
        clock.set_clock(lambda: dt.datetime(2026, 6, 16, 3, 0, tzinfo=dt.UTC))
        with UnitOfWork(db, write=True) as uow:
            payments.close_day(uow, day=DAY, closed_by="test")
    finally:
        clock.set_clock(None)
    return {line["payer"]: line for line in _lines(db)}


def _lines(db: Database) -> list[dict[str, object]]:
    with read(db) as uow:
        lines: list[dict[str, object]] = payments.day_report(uow, day=DAY)["lines"]
    return lines


def _yuan(fen: object) -> str:
    assert isinstance(fen, int)
    return f"{fen / 100:,.2f}"


def test_a_bank_statement_pays_the_lines_it_names(db: Database, tmp_path: Path) -> None:
    lines = _closed_day(db)
    issuer, fund = lines["card-issuer"], lines["fund:ncms:330500"]
    assert issuer["transfer_code"] == f"YL20260615L{issuer['line_id']}"
    url = database_url(db)
    rows = [
        ("2026-06-16", _yuan(issuer["amount_fen"]), "BOC-0616-1", f"一卡通清算 {issuer['transfer_code']}"),
        ("2026-06-16", _yuan(int(fund["amount_fen"]) + 1), "BOC-0616-2", f"新农合 {fund['transfer_code']}"),
        ("2026-06-16", "500.00", "BOC-0616-3", "退款"),
        ("2026-06-16", "1.00", "BOC-0616-4", "YL20260615L987654"),
    ]
    statement = tmp_path / "boc-20260616.csv"
    body = "交易日期,金额,流水号,附言\n" + "".join(f'{d},"{a}",{r},{m}\n' for d, a, r, m in rows)
    statement.write_bytes(body.encode("gb18030"))

    dry = yilian("payments", "bank-statement", statement, "--dry-run", "-d", url, cwd=tmp_path, env=WIDE)
    assert dry.code == 1 and "would pay" in dry.out and "nothing recorded" in dry.out, dry.out + dry.err
    assert all(line["payout"] is None for line in _lines(db))

    run = yilian("payments", "bank-statement", statement, "-d", url, cwd=tmp_path, env=WIDE)
    assert run.code == 1, run.out + run.err
    said = " ".join(run.out.split())
    assert "1 recorded" in said and "3 unmatched" in said
    assert "no transfer code" in said and "no such batch line" in said
    assert f"the line is {fund['amount_fen']} fen, the transfer {int(fund['amount_fen']) + 1}" in said
    paid = {line["payer"]: line["payout"] for line in _lines(db)}
    assert paid["card-issuer"]["reference"] == "BOC-0616-1"  # type: ignore[index]
    assert paid["fund:ncms:330500"] is None
    [event] = audits(db, "payment-payout")
    assert "(bank statement boc-20260616.csv, line 2)" in by_the_operator(event, "C")

    # The same statement again records nothing; the corrected one pays the fund's line.
    again = yilian("payments", "bank-statement", statement, "-d", url, cwd=tmp_path, env=WIDE)
    assert again.code == 1 and "1 recorded before" in " ".join(again.out.split()), again.out
    assert len(audits(db, "payment-payout")) == 1
    fixed = tmp_path / "boc-20260616-fixed.csv"
    fixed.write_text(
        f"reference,memo,amount_fen\nBOC-0616-9,{fund['transfer_code']},{fund['amount_fen']}\n",
        encoding="utf-8",
    )
    settled = yilian("payments", "bank-statement", fixed, "-d", url, cwd=tmp_path, env=WIDE)
    assert settled.code == 0, settled.out + settled.err
    assert all(line["payout"] is not None for line in _lines(db))

    bad = tmp_path / "bad.csv"
    bad.write_text("流水号,附言\nX,Y\n", encoding="utf-8")
    refused = yilian("payments", "bank-statement", bad, "-d", url, cwd=tmp_path)
    assert refused.code == 2 and "no amount (or amount_fen) column" in refused.err, refused.err
    binary = tmp_path / "statement.xlsx"
    binary.write_bytes(b"PK\x03\x04\xff\xfe\x80\x81 not text")
    unreadable = yilian("payments", "bank-statement", binary, "-d", url, cwd=tmp_path)
    assert unreadable.code == 2 and "neither UTF-8 nor GB18030" in unreadable.err, unreadable.err
