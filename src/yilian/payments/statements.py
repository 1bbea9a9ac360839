"""Matching a bank statement to the batch lines it pays (银行流水对账).

The payer of a closed day's batch line (the card issuer, a fund) pays it by bank transfer and
puts the line's transfer code in the memo (附言): ``YL<yyyymmdd>L<line>``, which the day's report
gives for every line (``transfer_code``); the ledger's own form ``<yyyy-mm-dd>#<line>`` is read
as well. The bank's daily statement (CSV) then says which lines were paid. Each row is matched
to its line, its amount checked against the line's, and the payout recorded under the bank's
reference (``record_payout``, one line once). A row that cannot be matched is reported with the
reason, and nothing is recorded for it. Reading the same statement again records nothing new.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Literal

from sqlalchemy import select

from yilian.db import UnitOfWork
from yilian.kernel.errors import Category, YilianError
from yilian.payments import tables as t

# Column names as banks' exports and the finance office write them.
_COLUMNS: dict[str, tuple[str, ...]] = {
    "date": ("date", "交易日期", "记账日期", "日期"),
    "amount": ("amount", "金额", "交易金额", "贷方金额", "借方金额"),
    "amount_fen": ("amount_fen", "金额(分)", "金额（分）"),
    "reference": ("reference", "流水号", "交易流水号", "凭证号", "银行流水号"),
    "memo": ("memo", "附言", "摘要", "用途", "备注"),
}
_CODE = re.compile(r"YL(\d{8})L(\d{1,12})|(\d{4}-\d{2}-\d{2})#(\d{1,12})", re.IGNORECASE)

Outcome = Literal["paid", "already", "unmatched"]


def transfer_code(business_date: str, line_id: int) -> str:
    """What the payer writes in the transfer's memo so that the statement names the line."""
    return f"YL{business_date.replace('-', '')}L{line_id}"


@dataclass(frozen=True)
class StatementRow:
    line: int  # the CSV line number, for the report
    booked: str  # the statement's date, as written
    amount_fen: int
    reference: str
    memo: str


@dataclass(frozen=True)
class LineRef:
    business_date: str  # YYYY-MM-DD
    line_id: int


@dataclass(frozen=True)
class Match:
    row: StatementRow
    outcome: Outcome
    target: LineRef | None = None
    reason: str = ""  # why unmatched, or what was already recorded


def _fen(text: str, *, yuan: bool) -> int:
    cleaned = text.replace(",", "").replace("¥", "").replace("￥", "").strip()
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not an amount") from None
    fen = value * 100 if yuan else value
    if fen != fen.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number of fen")
    return int(fen)


def parse_statement(text: str) -> list[StatementRow]:
    """The rows of a statement CSV (UTF-8, with or without BOM, or GB18030 decoded by the caller).

    Needs a reference column, a memo column and an amount (yuan, or ``amount_fen``); a row with
    a bad amount or no reference is refused with its line number: a statement is read whole or
    not at all, so that a half-read file is never taken for the day's payments."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header = next(reader, None)
    if not header:
        raise YilianError(Category.INVALID, "the statement is empty: it needs a header row")
    names = [h.strip().lower() for h in header]
    where: dict[str, int] = {}
    for key, aliases in _COLUMNS.items():
        for i, name in enumerate(names):
            if name in aliases:
                where.setdefault(key, i)
    missing = [k for k in ("reference", "memo") if k not in where]
    if "amount" not in where and "amount_fen" not in where:
        missing.append("amount (or amount_fen)")
    if missing:
        raise YilianError(
            Category.INVALID,
            f"the statement has no {', '.join(missing)} column (its header: {', '.join(header)})",
        )
    rows: list[StatementRow] = []
    for n, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue

        def cell(key: str, cells: list[str] = cells) -> str:
            i = where.get(key)
            return cells[i].strip() if i is not None and i < len(cells) else ""

        reference = cell("reference")
        if not reference:
            raise YilianError(Category.INVALID, f"statement line {n}: the reference is empty")
        try:
            fen = (
                _fen(cell("amount_fen"), yuan=False)
                if "amount_fen" in where
                else _fen(cell("amount"), yuan=True)
            )
        except ValueError as err:
            raise YilianError(Category.INVALID, f"statement line {n}: {err}") from None
        rows.append(StatementRow(n, cell("date"), fen, reference, cell("memo")))
    return rows


def read_statement(path: Path) -> list[StatementRow]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = raw.decode("gb18030")  # what Chinese banks' exports are, when not UTF-8
        except UnicodeDecodeError as err:
            raise YilianError(
                Category.INVALID,
                f"{path.name} is neither UTF-8 nor GB18030 text (byte {err.start}): not a CSV statement",
            ) from None
    return parse_statement(text)


def _codes(memo: str) -> list[LineRef]:
    found: list[LineRef] = []
    for m in _CODE.finditer(memo):
        if m.group(1):
            day, line = f"{m.group(1)[:4]}-{m.group(1)[4:6]}-{m.group(1)[6:]}", m.group(2)
        else:
            day, line = m.group(3), m.group(4)
        try:
            dt.date.fromisoformat(day)
        except ValueError:
            continue
        ref = LineRef(day, int(line))
        if ref not in found:
            found.append(ref)
    return found


def match(uow: UnitOfWork, rows: Iterable[StatementRow]) -> list[Match]:
    """What each row is: a line to record as paid, one already recorded, or unmatched (why)."""
    bl, p = t.batch_line, t.payout
    out: list[Match] = []
    claimed: dict[LineRef, StatementRow] = {}
    for row in rows:
        codes = _codes(row.memo)
        if not codes:
            out.append(Match(row, "unmatched", reason="no transfer code (YLyyyymmddLn) in the memo"))
            continue
        if len(codes) > 1:
            named = ", ".join(transfer_code(c.business_date, c.line_id) for c in codes)
            out.append(Match(row, "unmatched", reason=f"the memo names several lines ({named})"))
            continue
        ref = codes[0]
        code = transfer_code(ref.business_date, ref.line_id)
        line = uow.conn.execute(
            select(bl.c.amount_fen).where(
                bl.c.business_date == ref.business_date, bl.c.line_id == ref.line_id
            )
        ).first()
        if line is None:
            out.append(Match(row, "unmatched", ref, f"{code}: no such batch line of a closed day"))
            continue
        if int(line.amount_fen) != row.amount_fen:
            out.append(
                Match(
                    row,
                    "unmatched",
                    ref,
                    f"{code}: the line is {line.amount_fen} fen, the transfer {row.amount_fen}",
                )
            )
            continue
        paid = uow.conn.execute(select(p.c.reference).where(p.c.line_id == ref.line_id)).first()
        if paid is not None:
            if paid.reference == row.reference:
                out.append(Match(row, "already", ref, f"{code} recorded before"))
            else:
                out.append(
                    Match(row, "unmatched", ref, f"{code} is already paid by transfer {paid.reference}")
                )
            continue
        if ref in claimed:
            out.append(
                Match(row, "unmatched", ref, f"{code} is paid by statement line {claimed[ref].line} already")
            )
            continue
        claimed[ref] = row
        out.append(Match(row, "paid", ref))
    return out


def totals(matches: Sequence[Match]) -> dict[str, int]:
    """How many rows of each outcome, and the fen recorded as paid."""
    out = {"paid": 0, "already": 0, "unmatched": 0, "paid_fen": 0}
    for m in matches:
        out[m.outcome] += 1
        if m.outcome == "paid":
            out["paid_fen"] += m.row.amount_fen
    return out
