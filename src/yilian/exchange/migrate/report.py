"""What a migration did: counts per table and the data-quality report (every row not loaded).

The report is written as CSV (one problem a line, for a spreadsheet) or JSON (``.json``: the
counts and the problems, for a program); docs/migrate.md describes both.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

FIELDS = ("file", "line", "row", "table", "key", "column", "reason")


@dataclass(frozen=True, slots=True)
class Problem:
    """One row that did not land, and why. ``line`` is where the row starts in the file (the
    header is line 1); ``row`` counts data rows from 1 (they differ when a quoted cell holds a
    line break)."""

    file: str
    line: int
    row: int
    table: str
    key: str
    column: str
    reason: str


@dataclass
class TableReport:
    table: str
    file: str
    resource: str
    read: int = 0  # data rows in the file
    written: int = 0  # resources created by this run
    unchanged: int = 0  # already there from an earlier run (matched on the source key)
    rejected: int = 0  # rows listed in the problems
    merged: int = 0  # Patients the patient index linked to a person who already had a record

    def counts(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MigrationReport:
    source: str
    mapping: str
    data_dir: str
    tables: list[TableReport] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    unmapped_files: list[str] = field(default_factory=list)  # CSV files the mapping does not read
    seconds: float = 0.0

    def total(self, name: str) -> int:
        return sum(int(getattr(t, name)) for t in self.tables)

    @property
    def rows_per_second(self) -> float:
        return self.total("read") / self.seconds if self.seconds > 0 else 0.0

    def write(self, path: Path) -> None:
        """JSON when ``path`` ends in ``.json``, otherwise CSV."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".json":
            doc = {
                "source": self.source,
                "mapping": self.mapping,
                "data_dir": self.data_dir,
                "seconds": round(self.seconds, 3),
                "tables": [t.counts() for t in self.tables],
                "unmapped_files": self.unmapped_files,
                "problems": [asdict(p) for p in self.problems],
            }
            path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
            return
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(FIELDS)
            for p in self.problems:
                writer.writerow([p.file, p.line, p.row, p.table, p.key, p.column, p.reason])
