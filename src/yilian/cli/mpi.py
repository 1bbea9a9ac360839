"""``yilian mpi``: the master patient index from the command line.

``train``, ``reviews``, ``accept``, ``reject``, ``merge``, ``unmerge`` and ``counts`` work on the
live index in the database (the data steward's desk, as ``/api/mpi`` is over HTTP); every
decision takes a ``--reason`` and is recorded with who made it, and every change records an
AuditEvent as the operator in its transaction (the subtypes ``/api/mpi`` records, and
``mpi-train``).

``dedupe`` and ``link`` are the bulk runs over legacy CSV lists (no database: a file in, a
file out), read through a YAML column map (``docs/mpi.md``). A row that cannot be used (no
record id, a record id seen before, a broken CSV line) is refused with its line and reason
and the rest is matched (exit status 1); a problem with the file or the map as a whole
(missing, bad YAML, a column the file does not have, a date format that reads none of the
dates) stops before any matching (exit status 2).

The output is a function of the input alone: rows sorted, cluster ids the smallest record id
of their cluster, the model learned with fixed seeds — the same file gives the same bytes.
"""

from __future__ import annotations

import csv
import datetime as dt
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.markup import escape
from rich.progress import (
    Progress,
    TaskID,
)
from rich.table import Table

from yilian.cli.common import (
    EXIT_PARTIAL,
    DatabaseOption,
    console,
    err_console,
    friendly_errors,
    open_db,
    operator_record,
    progress_bar,
)
from yilian.kernel.errors import Category, YilianError

if TYPE_CHECKING:
    from yilian.db import Database, UnitOfWork
    from yilian.mpi.matching import ColumnMap, Grade, MatchModel, PersonRecord, Thresholds

mpi_app = typer.Typer(
    help=(
        "Master patient index (主索引): de-duplicate a legacy list into persons, link two lists; "
        "on the live index: train the weights, work the review queue, merge and unmerge persons, counts. "
        "Column maps: docs/mpi.md."
    ),
    no_args_is_help=True,
)

T = TypeVar("T")
GRADE_NAMES = ("certain", "probable", "possible")
REFUSALS_SHOWN = 10  # per file; the summary counts them all

ColumnsOption = typer.Option(
    ...,
    "--columns",
    "-c",
    help="YAML column map saying which CSV column is which (docs/mpi.md), or the name of a shipped map: febrl.",
)
CertainOption = typer.Option(
    None,
    "--certain",
    min=0.0,
    max=1.0,
    help="Match probability at or above which a pair is certain (linked automatically). Default 0.99.",
    show_default=False,
)
ProbableOption = typer.Option(
    None,
    "--probable",
    min=0.0,
    max=1.0,
    help="Match probability at or above which a pair is probable (for a data steward to review). Default 0.9.",
    show_default=False,
)
PossibleOption = typer.Option(
    None,
    "--possible",
    min=0.0,
    max=1.0,
    help="Match probability at or above which a pair is possible (shown as a candidate). Default 0.5.",
    show_default=False,
)


# --- reading ------------------------------------------------------------------------------


@dataclass
class ReadReport:
    """What was read from one CSV file: the records, and the rows that were refused and why."""

    path: Path
    records: list[PersonRecord] = field(default_factory=list)
    rows: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    unreadable_dates: int = 0  # kept, without a birth date


def resolve_map(spec: str) -> Path:
    """A map file, or the bare name of a map shipped with Yilian (``febrl``)."""
    from yilian.mpi.matching import shipped_map

    path = Path(spec)
    if path.is_file():
        return path
    if path.suffix.lower() not in (".yaml", ".yml") and "/" not in spec and "\\" not in spec:
        shipped = shipped_map(spec)
        if shipped.is_file():
            return shipped
        names = sorted(p.stem for p in shipped.parent.glob("*.yaml"))
        raise YilianError(
            Category.NOT_FOUND,
            f"there is no column map file {spec} and no shipped map of that name (shipped: {', '.join(names)})",
        )
    raise YilianError(Category.NOT_FOUND, f"there is no column map file {spec}")


def read_map(spec: str) -> ColumnMap:
    from yilian.mpi.matching import load_column_map

    path = resolve_map(spec)
    cmap = load_column_map(path)
    _check_date_format(cmap.birth_date_format, path)
    return cmap


def _check_date_format(fmt: str, path: Path) -> None:
    # strptime accepts a format without any date in it ("%H", "birthday") and then reads no
    # row: say so now rather than matching a whole file without birth dates.
    probe = dt.date(1987, 11, 23)
    try:
        back = dt.datetime.strptime(probe.strftime(fmt), fmt).date()
    except ValueError:
        back = None
    if back != probe:
        raise YilianError(
            Category.INVALID,
            f"column map {path.name}: birth_date format {fmt!r} is not a full date "
            "(write it as strptime does, e.g. '%Y-%m-%d', '%Y%m%d', '%d/%m/%Y')",
        )


def _mapped_columns(cmap: ColumnMap) -> list[tuple[str, str]]:
    """(map key, CSV column) for every value the map reads from a column."""
    singles = (
        "record_id",
        "source",
        "family_name",
        "given_name",
        "full_name",
        "birth_date",
        "sex",
        "prc_id",
        "phone",
        "city",
        "district",
        "postcode",
        "mrn",
    )
    out = []
    for key in singles:
        col = getattr(cmap, key)
        if col is not None and col.column is not None:
            out.append((key, col.column))
    out.extend(("address_lines", c.column) for c in cmap.address_lines if c.column is not None)
    out.extend(
        (f"identifiers ({system})", c.column) for system, c in cmap.identifiers if c.column is not None
    )
    return out


def read_records(path: Path, cmap: ColumnMap) -> ReadReport:
    """Read one CSV file through the map, refusing unusable rows with their reason."""
    if not path.is_file():
        raise YilianError(Category.NOT_FOUND, f"there is no file {path}")
    report = ReadReport(path)
    seen: dict[str, int] = {}
    try:
        with path.open(encoding=cmap.encoding, newline="") as fh:
            reader = csv.DictReader(fh, delimiter=cmap.delimiter, skipinitialspace=cmap.skip_initial_space)
            if reader.fieldnames is None:
                raise YilianError(
                    Category.INVALID, f"{path.name} is empty: expected a header line naming the columns"
                )
            header = [name.strip() for name in reader.fieldnames]
            reader.fieldnames = header
            missing = [(key, col) for key, col in _mapped_columns(cmap) if col not in header]
            if missing:
                named = ", ".join(f"{col!r} ({key})" for key, col in missing)
                raise YilianError(
                    Category.INVALID,
                    f"the column map names columns that {path.name} does not have: {named}; "
                    f"its columns are {', '.join(header)}",
                )
            date_col = cmap.birth_date.column if cmap.birth_date is not None else None
            dates_seen = 0
            first_bad_date = ""
            for row in reader:
                report.rows += 1
                line = reader.line_num
                reason = _refusal(row, len(header), cmap, seen)
                if reason:
                    report.refused.append((line, reason))
                    continue
                record = cmap.record(row)
                seen[record.record_id] = line
                report.records.append(record)
                if date_col is not None and (row.get(date_col) or "").strip():
                    dates_seen += 1
                    if record.birth_date is None:
                        report.unreadable_dates += 1
                        first_bad_date = first_bad_date or (row.get(date_col) or "").strip()
    except UnicodeDecodeError as exc:
        raise YilianError(
            Category.INVALID,
            f"{path.name} is not {cmap.encoding} text (byte {exc.start}); "
            "say its encoding in the column map, e.g. csv: {encoding: gb18030}",
        ) from None
    except csv.Error as exc:
        raise YilianError(Category.INVALID, f"{path.name}: not readable as CSV: {exc}") from None
    if dates_seen and report.unreadable_dates == dates_seen:
        raise YilianError(
            Category.INVALID,
            f"birth_date format {cmap.birth_date_format!r} reads none of the {dates_seen} dates in "
            f"column {date_col!r} of {path.name} (the first is {first_bad_date!r}); fix the format in the column map",
        )
    return report


def _refusal(row: Mapping[str | None, object], columns: int, cmap: ColumnMap, seen: Mapping[str, int]) -> str:
    extra = row.get(None)
    if isinstance(extra, list):
        return f"{columns + len(extra)} fields, the header has {columns}"
    if any(v is None for k, v in row.items() if k is not None):
        return f"fewer fields than the {columns} of the header"
    record_id = cmap.record_id.get(
        {k: v for k, v in row.items() if isinstance(k, str) and isinstance(v, str)}
    )
    if not record_id:
        return "no record id"
    if record_id in seen:
        return f"record id {record_id} again (first on line {seen[record_id]})"
    return ""


# --- progress and summary -----------------------------------------------------------------


class StageProgress:
    """A Rich progress bar driven by the engine's ``progress(stage, done, total)`` callback."""

    def __init__(self, progress: Progress) -> None:
        self.bar = progress
        self.task: TaskID | None = None
        self.stage = ""
        self.totals: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.totals[stage] = total
        if stage != self.stage or self.task is None:
            if self.task is not None:
                self.bar.update(self.task, completed=self.bar.tasks[-1].total or 0)
            self.task = self.bar.add_task(stage, total=max(total, 1))
            self.stage = stage
        self.bar.update(self.task, completed=done, total=max(total, 1))

    def finish(self) -> None:
        if self.task is not None:
            task = self.bar.tasks[-1]
            self.bar.update(self.task, completed=task.total or 0)


def _progress_bar() -> Progress:
    return progress_bar()


def _run_with_progress(run: Callable[[StageProgress], T]) -> tuple[T, StageProgress]:
    with _progress_bar() as bar:
        stages = StageProgress(bar)
        result = run(stages)
        stages.finish()
    return result, stages


def _read_rows(table: Table, reports: Sequence[ReadReport]) -> None:
    for r in reports:
        name = escape(r.path.name)
        table.add_row(f"records read ({name})", f"{len(r.records):,} of {r.rows:,} rows")
        table.add_row(f"rows refused ({name})", f"[red]{len(r.refused):,}[/]" if r.refused else "0")
        for reason, n in _reasons(r.refused).most_common():
            table.add_row(f"  {escape(reason)}", f"{n:,}")
        if r.unreadable_dates:
            table.add_row(
                f"birth dates not readable ({name}; kept without one)", f"[yellow]{r.unreadable_dates:,}[/]"
            )


def _reasons(refused: Sequence[tuple[int, str]]) -> Counter[str]:
    """Refusals counted by kind (the per-line messages name the id or the field count)."""
    return Counter(_reason_kind(reason) for _, reason in refused)


def _reason_kind(reason: str) -> str:
    if " again (first on line " in reason:
        return "record id seen before"
    if "fields" in reason:
        return "wrong number of fields"
    return reason


def _print_refusals(reports: Sequence[ReadReport]) -> None:
    for r in reports:
        for line, reason in r.refused[:REFUSALS_SHOWN]:
            err_console.print(f"{escape(r.path.name)} line {line}: refused: {escape(reason)}", soft_wrap=True)
        if len(r.refused) > REFUSALS_SHOWN:
            err_console.print(
                f"{escape(r.path.name)}: … and {len(r.refused) - REFUSALS_SHOWN:,} more refused rows"
            )


def _thresholds(certain: float | None, probable: float | None, possible: float | None) -> Thresholds | None:
    from yilian.mpi.matching import Thresholds

    if certain is None and probable is None and possible is None:
        return None
    default = Thresholds()
    th = Thresholds(
        certain=default.certain if certain is None else certain,
        probable=default.probable if probable is None else probable,
        possible=default.possible if possible is None else possible,
    )
    if not 0.0 < th.possible <= th.probable <= th.certain <= 1.0:
        raise YilianError(
            Category.INVALID,
            f"thresholds must satisfy 0 < --possible ≤ --probable ≤ --certain ≤ 1 "
            f"(got {th.possible}, {th.probable}, {th.certain})",
        )
    return th


def _write_csv(
    path: Path, header: Sequence[str], rows: Iterator[Sequence[str]] | list[Sequence[str]]
) -> None:
    # Written to a neighbour and renamed: an interrupted run never leaves half a file that
    # looks like a result.
    tmp = path.with_name(f".{path.name}.part")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    tmp.replace(path)


def _check_out(path: Path) -> None:
    if not path.parent.is_dir():
        raise YilianError(Category.NOT_FOUND, f"cannot write {path}: there is no folder {path.parent}")


# --- commands -----------------------------------------------------------------------------


def _read_model(path: Path) -> MatchModel:
    """A model file (``--model-out``), or a readable error naming what is wrong with it."""
    from yilian.mpi.matching import MatchModel

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise YilianError(Category.INVALID, f"cannot read the model {path}: {exc.strerror or exc}") from None
    try:
        return MatchModel.from_json(text)
    except ValueError as exc:  # not JSON at all
        raise YilianError(Category.INVALID, f"{path} is not a model file: {exc}") from None


@mpi_app.command("dedupe")
def dedupe_command(
    file: Path = typer.Argument(..., help="The CSV list to de-duplicate (one registration per row)."),
    columns: str = ColumnsOption,
    out: Path = typer.Option(..., "--out", "-o", help="Where to write record_id,cluster_id (CSV)."),
    review: Path | None = typer.Option(
        None,
        "--review",
        help="Also write the probable and possible pairs (left_id,right_id,score,grade) for a data steward.",
    ),
    certain: float | None = CertainOption,
    probable: float | None = ProbableOption,
    possible: float | None = PossibleOption,
    model: Path | None = typer.Option(
        None,
        "--model",
        help="Use this model (JSON, as --model-out writes it) instead of learning one from the list.",
    ),
    model_out: Path | None = typer.Option(
        None,
        "--model-out",
        help="Also write the model used (JSON): learn it from a sample here, run it on a cluster (docs/mpi.md).",
    ),
) -> None:
    """Group the records of one CSV list into persons: writes record_id,cluster_id (the cluster id is the smallest record id in the cluster).

    Weights are learned from the list itself (EM, unsupervised) unless --model gives them. Only certain pairs merge; a certain pair that would put two contradicting records into one person is refused and counted. Running again on the same file gives the same output, byte for byte.
    """
    from yilian.mpi.matching import Matcher, dedupe

    with friendly_errors():
        started = time.perf_counter()
        cmap = read_map(columns)
        thresholds = _thresholds(certain, probable, possible)
        given = _read_model(model) if model is not None else None
        _check_out(out)
        for extra in (review, model_out):
            if extra is not None:
                _check_out(extra)
        report = read_records(file, cmap)
        _print_refusals([report])
        matcher = Matcher(given) if given is not None else None
        result, _ = _run_with_progress(
            lambda p: dedupe(report.records, matcher=matcher, thresholds=thresholds, progress=p)
        )
        _write_csv(out, ("record_id", "cluster_id"), [(r, c) for r, c in sorted(result.clusters.items())])
        if model_out is not None:
            used: MatchModel = result.model
            model_out.write_text(used.to_json() + "\n", encoding="utf-8")
        if review is not None:
            _write_csv(
                review,
                ("left_id", "right_id", "score", "grade"),
                [
                    (x.left_id, x.right_id, f"{x.probability:.6f}", x.grade)
                    for x in result.links
                    if x.grade != "certain"
                ],
            )
        elapsed = time.perf_counter() - started

        grades: Counter[str] = Counter(x.grade for x in result.links)
        members = result.cluster_members()
        table = Table(title="主索引去重 MPI dedupe summary", show_header=False)
        table.add_column("what")
        table.add_column("count", justify="right")
        _read_rows(table, [report])
        table.add_row("pairs compared", f"{result.pairs_scored:,}")
        for grade in GRADE_NAMES:
            table.add_row(f"pairs {grade}", f"{grades.get(grade, 0):,}")
        table.add_row("certain pairs refused (would join two people)", f"{len(result.refused_links):,}")
        table.add_row("persons (clusters)", f"{len(members):,}")
        table.add_row("  with more than one record", f"{sum(1 for m in members.values() if len(m) > 1):,}")
        table.add_row("  records merged into another", f"{sum(len(m) - 1 for m in members.values()):,}")
        table.add_row("written", escape(str(out)))
        table.add_row("time", f"{elapsed:.1f} s")
        console.print(table)
    if report.refused:
        raise typer.Exit(EXIT_PARTIAL)


@mpi_app.command("link")
def link_command(
    left: Path = typer.Argument(..., help="The first CSV list."),
    right: Path = typer.Argument(..., help="The second CSV list."),
    columns: str = ColumnsOption,
    right_columns: str | None = typer.Option(
        None,
        "--right-columns",
        help="Column map of the second list, when its columns differ (default: --columns).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write left_id,right_id,score,grade (CSV)."),
    min_grade: str = typer.Option(
        "possible", "--min-grade", help="Write pairs of this grade or better: certain, probable or possible."
    ),
    certain: float | None = CertainOption,
    probable: float | None = ProbableOption,
    possible: float | None = PossibleOption,
) -> None:
    """Link two CSV lists: writes left_id,right_id,score,grade for every pair of records of one person (score: match probability), by left id, strongest first.

    Weights are learned from both lists together (EM, unsupervised); the grades are certain (link automatically), probable (review) and possible.
    """
    from yilian.mpi.matching import link

    with friendly_errors():
        started = time.perf_counter()
        if min_grade not in GRADE_NAMES:
            raise YilianError(
                Category.INVALID, f"--min-grade must be one of {', '.join(GRADE_NAMES)} (got {min_grade!r})"
            )
        grade: Grade = min_grade  # type: ignore[assignment]  # checked just above
        left_map = read_map(columns)
        right_map = read_map(right_columns) if right_columns else left_map
        thresholds = _thresholds(certain, probable, possible)
        _check_out(out)
        reports = [read_records(left, left_map), read_records(right, right_map)]
        _print_refusals(reports)
        links, stages = _run_with_progress(
            lambda p: link(
                reports[0].records, reports[1].records, min_grade=grade, thresholds=thresholds, progress=p
            )
        )
        _write_csv(
            out,
            ("left_id", "right_id", "score", "grade"),
            [(x.left_id, x.right_id, f"{x.probability:.6f}", x.grade) for x in links],
        )
        elapsed = time.perf_counter() - started

        grades: Counter[str] = Counter(x.grade for x in links)
        table = Table(title="主索引关联 MPI link summary", show_header=False)
        table.add_column("what")
        table.add_column("count", justify="right")
        _read_rows(table, reports)
        table.add_row("pairs compared", f"{stages.totals.get('scoring', 0):,}")
        for g in GRADE_NAMES[: GRADE_NAMES.index(grade) + 1]:
            table.add_row(f"links {g}", f"{grades.get(g, 0):,}")
        table.add_row("left records with a link", f"{len({x.left_id for x in links}):,}")
        table.add_row("right records with a link", f"{len({x.right_id for x in links}):,}")
        table.add_row("written", escape(str(out)))
        table.add_row("time", f"{elapsed:.1f} s")
        console.print(table)
    if any(r.refused for r in reports):
        raise typer.Exit(EXIT_PARTIAL)


# `yilian mpi train` (learn the weights from the index and store them) is added here by the
# database-side work; it registers on `mpi_app` like the commands above.


# --------------------------------------------------------------------------- the live index

ACTOR = "cli:yilian"


def _actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in this environment (a container): still say it was the CLI
        return ACTOR


def _steward_db(database: str | None) -> Database:
    """The database for an identity decision; subscribers to ``Person`` are told of it, as when
    a steward decides through ``/api/mpi``."""
    from yilian.exchange.outbound import watch_identity_changes

    watch_identity_changes()
    return open_db(database)


def _audit(
    uow: UnitOfWork, *, action: str, subtype: str, entity: str, patients: Sequence[str], desc: str
) -> None:
    """The change's AuditEvent, in its transaction (the subtypes ``/api/mpi`` records)."""
    from yilian.security.audit import record

    record(
        uow,
        operator_record(
            action=action, subtype=subtype, entity=entity, patient_keys=patients, outcome_desc=desc
        ),
    )


@mpi_app.command("train")
def train_command(database: str | None = DatabaseOption) -> None:
    """Learn the match weights (EM) from every record in the index and make them the ones in use."""
    from yilian.db import UnitOfWork
    from yilian.mpi import train_and_store

    with friendly_errors():
        db = open_db(database)
        started = time.monotonic()
        with _progress_bar() as bar:
            task = bar.add_task("training", total=None)

            def progress(stage: str, done: int, total: int) -> None:
                bar.update(task, description=stage, completed=done, total=total or None)

            with UnitOfWork(db, write=True) as uow:
                model_id, records = train_and_store(uow, actor=_actor(), progress=progress)
                _audit(
                    uow,
                    action="C",
                    subtype="mpi-train",
                    entity="mpi/model",
                    patients=(),
                    desc=f"match model {model_id} learned from {records} records; it is now in use",
                )
                uow.commit()
        db.dispose()
    console.print(
        f"model {model_id} learned from {records} records in {time.monotonic() - started:.1f} s; it is now in use"
    )


@mpi_app.command("reviews")
def reviews_command(
    database: str | None = DatabaseOption,
    status: str = typer.Option("open", help="open, accepted, rejected, obsolete or all"),
    limit: int = typer.Option(50, min=1, max=500),
) -> None:
    """List the review queue: records that probably are a known person, with the score."""
    from yilian.db import UnitOfWork
    from yilian.mpi import list_reviews

    with friendly_errors():
        db = open_db(database)
        # The queue names patients and their candidates: the read is recorded, and committed
        # before anything is shown (the subtype /api/mpi/reviews records).
        with UnitOfWork(db, write=True) as uow:
            rows, total = list_reviews(uow, status=status, limit=limit)
            patients = {r.patient_id for r in rows} | {
                r.candidate_patient_id for r in rows if r.candidate_patient_id
            }
            _audit(
                uow,
                action="R",
                subtype="mpi-reviews",
                entity="mpi/reviews",
                patients=sorted(patients),
                desc=f"{len(rows)} of {total} {status} reviews listed at the console",
            )
        db.dispose()
    table = Table(title=f"reviews ({status}): {total}")
    # The review id is copied into `yilian mpi accept`: it is never cut or broken over lines;
    # the other columns fold when the terminal is narrow.
    table.add_column("review", no_wrap=True, min_width=36)
    for name in ("patient", "candidate person", "probability", "grade", "status"):
        table.add_column(name, overflow="fold")
    for r in rows:
        table.add_row(
            r.review_id, r.patient_id, r.candidate_person_id, f"{r.probability:.4f}", r.grade, r.status
        )
    console.print(table)


def _decide(review_id: str, reason: str, database: str | None, *, accept: bool) -> None:
    from yilian.db import UnitOfWork
    from yilian.mpi import accept_review, reject_review

    with friendly_errors():
        db = _steward_db(database)
        with UnitOfWork(db, write=True) as uow:
            decide = accept_review if accept else reject_review
            r = decide(uow, review_id=review_id, actor=_actor(), reason=reason)
            verdict = (
                f"Patient/{r.patient_id} is person {r.candidate_person_id}'s"
                if accept
                else f"Patient/{r.patient_id} stays apart from person {r.candidate_person_id}"
            )
            _audit(
                uow,
                action="U",
                subtype="mpi-review-accept" if accept else "mpi-review-reject",
                entity=f"mpi/reviews/{r.review_id}",
                patients=[r.patient_id],
                desc=f"review {r.review_id} {r.status}: {verdict}",
            )
            uow.commit()
        db.dispose()
    console.print(f"review {r.review_id}: {r.status} (Patient/{r.patient_id})")


@mpi_app.command("accept")
def accept_command(
    review_id: str,
    reason: str = typer.Option(..., help="why (recorded)"),
    database: str | None = DatabaseOption,
) -> None:
    """Accept a review: the record becomes the candidate person's."""
    _decide(review_id, reason, database, accept=True)


@mpi_app.command("reject")
def reject_command(
    review_id: str,
    reason: str = typer.Option(..., help="why (recorded)"),
    database: str | None = DatabaseOption,
) -> None:
    """Reject a review: the record stays apart and the pair is never proposed again."""
    _decide(review_id, reason, database, accept=False)


@mpi_app.command("merge")
def merge_command(
    source: str = typer.Argument(..., help="the person merged away"),
    into: str = typer.Argument(..., help="the surviving person"),
    reason: str = typer.Option(..., help="why (recorded)"),
    database: str | None = DatabaseOption,
) -> None:
    """Merge two persons (every record of SOURCE becomes INTO's); prints the event id unmerge takes."""
    from yilian.db import UnitOfWork
    from yilian.mpi import merge_persons, records_of

    with friendly_errors():
        db = _steward_db(database)
        with UnitOfWork(db, write=True) as uow:
            event_id = merge_persons(
                uow, source_person=source, target_person=into, actor=_actor(), reason=reason
            )
            _audit(
                uow,
                action="U",
                subtype="mpi-merge",
                entity=f"Person/{source}",
                patients=records_of(uow, into),
                desc=f"merged person {source} into {into} (event {event_id})",
            )
            uow.commit()
        db.dispose()
    console.print(
        f"merged {source} into {into}; undo with: yilian mpi unmerge {source} {event_id} --reason …",
        soft_wrap=True,  # a command to copy: never broken over lines
    )


@mpi_app.command("unmerge")
def unmerge_command(
    person: str = typer.Argument(..., help="the person merged away"),
    event_id: str = typer.Argument(..., help="the merge's event id"),
    reason: str = typer.Option(..., help="why (recorded)"),
    database: str | None = DatabaseOption,
) -> None:
    """Undo a merge: its records go back to the merged-away person."""
    from yilian.db import UnitOfWork
    from yilian.mpi import records_of, unmerge

    with friendly_errors():
        db = _steward_db(database)
        with UnitOfWork(db, write=True) as uow:
            undone = unmerge(uow, event_id=event_id, actor=_actor(), reason=reason)
            records = records_of(uow, person)
            _audit(
                uow,
                action="U",
                subtype="mpi-unmerge",
                entity=f"Person/{person}",
                patients=records,
                desc=f"undid merge {event_id} (event {undone}): person {person} restored with "
                f"{len(records)} records",
            )
            uow.commit()
        db.dispose()
    console.print(f"person {person} restored with {len(records)} record(s)")


@mpi_app.command("counts")
def counts_command(database: str | None = DatabaseOption) -> None:
    """Persons, records, merged persons and open reviews in the index."""
    from yilian.db import UnitOfWork
    from yilian.mpi import counts

    with friendly_errors():
        db = open_db(database)
        with UnitOfWork(db) as uow:
            c = counts(uow)
        db.dispose()
    table = Table(title="patient index")
    table.add_column("what")
    table.add_column("count", justify="right")
    for name, value in (
        ("persons", c.persons),
        ("records", c.records),
        ("merged persons", c.merged),
        ("open reviews", c.open_reviews),
    ):
        table.add_row(name, str(value))
    console.print(table)
