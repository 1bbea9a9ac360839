"""Reading a legacy system's CSV files: headers checked against the mapping, rows with their lines."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from yilian.exchange.migrate.plan import Plan, TablePlan
from yilian.kernel.errors import Category, Issue, YilianError

# Legacy exports hold long free-text cells (notes, addresses); csv's default limit is 128 KiB.
csv.field_size_limit(16 * 1024 * 1024)


@dataclass(frozen=True, slots=True)
class SourceRow:
    line: int  # where the row starts in the file; the header is line 1
    row: int  # 1 for the first data row
    values: dict[str, str]
    problem: str | None = None  # the row cannot be read as a row of this table


def _reader(fh: object, table: TablePlan) -> Iterator[list[str]]:
    return csv.reader(fh, delimiter=table.delimiter)  # type: ignore[arg-type]


def _decode_error(path: Path, table: TablePlan, line: int, exc: UnicodeDecodeError) -> YilianError:
    return YilianError(
        Category.INVALID,
        f"{path.name} cannot be read as {table.encoding} (near line {line}: {exc.reason}); "
        f"set `encoding:` for table {table.name} in the mapping (gb18030 for most Chinese HIS exports)",
    )


def header(path: Path, table: TablePlan) -> list[str]:
    with path.open(newline="", encoding=table.encoding) as fh:
        try:
            first = next(_reader(fh, table), None)
        except UnicodeDecodeError as exc:
            raise _decode_error(path, table, 1, exc) from None
    return [h.strip() for h in first] if first else []


def check(plan: Plan, data_dir: Path) -> list[Issue]:
    """Every file there, with every column the mapping reads: checked before anything is written,
    so that a changed export layout stops the run with a list of what to change in the mapping."""
    issues: list[Issue] = []
    for table in plan.tables:
        path = data_dir / table.file
        if not path.is_file():
            issues.append(Issue(f"table {table.name}: there is no file {table.file} in {data_dir}"))
            continue
        columns = header(path, table)
        if not columns:
            issues.append(Issue(f"table {table.name}: {table.file} is empty (no header line)"))
            continue
        missing = sorted(table.columns - set(columns))
        if missing:
            issues.append(
                Issue(
                    f"table {table.name}: {table.file} has no column {', '.join(missing)} "
                    f"(its columns: {', '.join(columns)})"
                )
            )
    return issues


def count(path: Path, table: TablePlan) -> int:
    """Data rows in the file (for the progress bar): records, not lines."""
    with path.open(newline="", encoding=table.encoding) as fh:
        try:
            rows = sum(1 for r in _reader(fh, table) if r and (len(r) > 1 or r[0].strip()))
        except UnicodeDecodeError as exc:
            raise _decode_error(path, table, 0, exc) from None
        return max(rows - 1, 0)


def rows(path: Path, table: TablePlan) -> Iterator[SourceRow]:
    with path.open(newline="", encoding=table.encoding) as fh:
        reader = csv.reader(fh, delimiter=table.delimiter)
        previous_end = 0
        names: list[str] | None = None
        n = 0
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                raise _decode_error(path, table, previous_end + 1, exc) from None
            except csv.Error as exc:
                raise YilianError(
                    Category.INVALID, f"{path.name} line {reader.line_num}: not readable as CSV: {exc}"
                ) from None
            start, previous_end = previous_end + 1, reader.line_num
            if names is None:
                names = [h.strip() for h in fields]
                continue
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # a blank line is not a row
            n += 1
            problem = None
            if len(fields) != len(names):
                problem = f"the row has {len(fields)} fields; the header has {len(names)}"
            yield SourceRow(start, n, dict(zip(names, fields, strict=False)), problem)
