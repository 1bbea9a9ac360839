"""What every command shares: opening the database, the two consoles, errors people can read.

Standard output carries what a command produces (summaries, exported NDJSON); standard error
carries progress bars and errors, so ``yilian export -o - > all.ndjson`` stays clean data and a
log of a nightly import keeps its summary apart from its noise.

A command that changes data records one AuditEvent for it, as the platform operator at the
command line (``agent_kind`` ``operator``, the login name as agent): :func:`operator_record`
builds it, ``yilian.security.audit.record`` writes it in the change's own transaction. Work
done in many short transactions (re-encryption, retention) is recorded once after it, by
:func:`record_alone`, and :func:`audit_partial` records what was changed when it stops midway.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from yilian.db import Database, open_database
from yilian.kernel.errors import Category, YilianError

if TYPE_CHECKING:
    from yilian.security.audit import AuditRecord

console = Console()
err_console = Console(stderr=True)

DatabaseOption = typer.Option(
    None,
    "--database",
    "-d",
    help="Database URL: sqlite:///path/file.db or postgresql://user@host/db (default: $YILIAN_DATABASE_URL, else sqlite:///yilian.db).",
    show_default=False,
)

# Exit statuses, the same for every command (documented in `yilian --help`).
EXIT_PARTIAL = 1  # the command ran, but some of the data it was given failed
EXIT_UNUSABLE = 2  # bad arguments or input, or the database cannot be used: nothing was done
EXIT_INTERRUPTED = 130


def settings_from_env() -> Any:
    from yilian.api.wiring import platform_settings

    return platform_settings()


def print_error(message: str) -> None:
    # soft_wrap: one line however narrow the terminal, and a log file (80 columns by default
    # when stderr is not a terminal) gets the whole message on one line it can be grepped for.
    # escape(): messages quote user data (file names, ids) that may contain Rich markup.
    err_console.print(f"[bold red]错误 error:[/] {escape(message)}", soft_wrap=True)


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """End a long-running command on SIGTERM as on Ctrl-C: by ``KeyboardInterrupt``, so that its
    ``finally`` blocks run (leases given up, the transaction in progress rolled back).

    A service manager stops a process with SIGTERM, and a shell script's background job starts
    with SIGINT ignored: without this, such a process could only be killed outright."""
    import signal

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn failures into one readable line and a non-zero exit, never a traceback.

    ``YILIAN_DEBUG=1`` lets unexpected exceptions through with their traceback, for bug reports.
    """
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except YilianError as err:
        print_error(err.message)
        for issue in err.issues[1:6]:
            where = f" ({', '.join(issue.expression)})" if issue.expression else ""
            err_console.print(f"  - {escape(issue.message)}{escape(where)}", soft_wrap=True)
        raise typer.Exit(EXIT_UNUSABLE) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except OSError as exc:
        # A file that cannot be read or written: say which and why.
        where = f": {exc.filename}" if exc.filename else ""
        print_error(f"{exc.strerror or type(exc).__name__}{where}")
        raise typer.Exit(EXIT_UNUSABLE) from None
    except Exception as exc:
        if os.environ.get("YILIAN_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print_error(
            f"unexpected {type(exc).__name__}: {first} (run again with YILIAN_DEBUG=1 for the details)"
        )
        raise typer.Exit(EXIT_PARTIAL) from None


def describe(db: Database) -> str:
    """The URL as people write it (no driver name), password hidden."""
    return db.url.set(drivername=db.url.get_backend_name()).render_as_string(hide_password=True)


def effective_url(url: str | None) -> str:
    """The URL ``open_database`` will use: the option, else $YILIAN_DATABASE_URL, else the default file."""
    from yilian.db.engine import DEFAULT_SQLITE_PATH

    return url or os.environ.get("YILIAN_DATABASE_URL") or f"sqlite:///{DEFAULT_SQLITE_PATH}"


def sqlite_file(url: str | None) -> Path | None:
    """The file behind a SQLite URL (None for PostgreSQL or an in-memory database)."""
    from yilian.db.engine import DEFAULT_SQLITE_PATH, normalize_url

    parsed = normalize_url(effective_url(url))
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database or DEFAULT_SQLITE_PATH).expanduser()


def unavailable(db: Database, exc: BaseException) -> YilianError:
    """The first line of what the driver said (``connection refused``, ``database … does not exist``)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    reason = text.splitlines()[0] if text else type(exc).__name__
    return YilianError(Category.UNAVAILABLE, f"cannot open the database {describe(db)}: {reason}")


def upgrade_schema(db: Database) -> None:
    """Apply pending migrations; a database that cannot be reached or written says so in one line."""
    from yilian.migrations import upgrade

    try:
        upgrade(db)
    except YilianError:
        raise
    except Exception as exc:  # connection refused, permission denied, a read-only file…
        raise unavailable(db, exc) from None


def open_db(url: str | None, *, upgrade: bool = True) -> Database:
    """Open the database; with ``upgrade``, bring its schema to the newest revision first.

    Without ``upgrade`` the database is still asked a question, so that an unreachable server
    or a wrong password fails here with one line rather than on the first request served.
    """
    try:
        db = open_database(url)
    except OSError as exc:  # the folder of a SQLite file cannot be made
        raise YilianError(
            Category.UNAVAILABLE,
            f"cannot open the database {effective_url(url)}: {exc.strerror}: {exc.filename}",
        ) from None
    if upgrade:
        upgrade_schema(db)
    else:
        from sqlalchemy import text

        try:
            with db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            raise unavailable(db, exc) from None
    from yilian.api.wiring import install_keys

    install_keys(db)
    return db


def progress_bar() -> Progress:
    """The commands' progress bar (on stderr): the task's description, bar, done/total, time."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
    )


# --- auditing what a command changes ---------------------------------------------------------

CLI_AGENT_NAME = "yilian command line"  # tells an operator at the console from an operator client


def os_user() -> str:
    """Who runs the command: the login name (``operator`` where there is none, as in some containers)."""
    try:
        return getpass.getuser() or "operator"
    except Exception:  # no LOGNAME/USER and no passwd entry for the uid
        return "operator"


def operator_record(
    *,
    action: str,
    subtype: str,
    outcome_desc: str,
    outcome: int = 0,
    entity: str | None = None,
    patient_keys: Sequence[str] = (),
) -> AuditRecord:
    """The AuditEvent of a change made by the platform operator at the command line.

    ``outcome_desc`` says what was changed and how much; it never carries secrets or key
    material (ID numbers and phones in it are masked by the record itself).
    """
    from yilian.security.audit import AuditRecord

    return AuditRecord(
        action=action,
        subtype=subtype,
        agent_kind="operator",
        agent_id=os_user()[:128],
        agent_name=CLI_AGENT_NAME,
        outcome=outcome,
        outcome_desc=outcome_desc[:2000],
        entity=entity,
        patient_keys=tuple(patient_keys),
    )


def record_alone(db: Database, record: AuditRecord) -> None:
    """Write ``record`` in a transaction of its own (for work that committed in many)."""
    from yilian.db.uow import transact
    from yilian.security.audit import record as audit_record

    transact(db, lambda uow: audit_record(uow, record))


def _failure(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    # Only our own messages: a driver's may quote the row values it failed on.
    return f"failed: {exc.message}" if isinstance(exc, YilianError) else f"failed: {type(exc).__name__}"


@contextmanager
def audit_partial(
    db: Database,
    *,
    action: str,
    subtype: str,
    entity: str | None,
    done: Callable[[], str | None],
) -> Iterator[None]:
    """Around work done in many transactions: if it stops midway after some of them committed,
    record what they changed (outcome 8, serious failure) before the error is reported.

    ``done`` says what has been changed so far, or None when nothing has (then nothing is
    recorded: the command changed no data). A record that cannot be written (the database went
    away) is reported on stderr, and the original error is raised either way.
    """
    try:
        yield
    except (Exception, KeyboardInterrupt) as exc:
        what = done()
        if what is not None:
            try:
                record_alone(
                    db,
                    operator_record(
                        action=action,
                        subtype=subtype,
                        outcome=8,
                        entity=entity,
                        outcome_desc=f"{what}; then {_failure(exc)}",
                    ),
                )
            except Exception as audit_exc:
                print_error(
                    f"the audit record of this partial change could not be written: {_failure(audit_exc)}"
                )
        raise
