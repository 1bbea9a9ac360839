"""What every command shares: opening the database, printing errors people can read."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console

from yilian.db import Database, open_database
from yilian.kernel.errors import YilianError

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")

DatabaseOption = typer.Option(
    None,
    "--database",
    "-d",
    help="Database URL: sqlite:///path/file.db or postgresql://user@host/db (default: $YILIAN_DATABASE_URL, else sqlite:///yilian.db).",
    show_default=False,
)


def settings_from_env() -> Any:
    from yilian.fhir import FhirSettings

    def flag(name: str, default: bool) -> bool:
        value = os.environ.get(name)
        return default if value is None else value.strip().lower() not in ("0", "false", "off", "no")

    return FhirSettings(
        enforce_referential_integrity=flag("YILIAN_REFERENTIAL_INTEGRITY", True),
        enforce_delete_integrity=flag("YILIAN_DELETE_INTEGRITY", True),
    )


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn failures into one readable line and a non-zero exit, never a traceback."""
    try:
        yield
    except YilianError as err:
        err_console.print(f"[bold red]错误 error:[/] {err.message}")
        for issue in err.issues[1:6]:
            where = f" ({', '.join(issue.expression)})" if issue.expression else ""
            err_console.print(f"  - {issue.message}{where}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(130) from None


def open_db(url: str | None, *, upgrade: bool = True) -> Database:
    db = open_database(url)
    if upgrade:
        from yilian.migrations import upgrade as run_upgrade

        try:
            run_upgrade(db)
        except YilianError:
            raise
        except Exception as exc:  # connection refused, permission denied…
            raise YilianError_unavailable(db, exc) from None
    return db


def YilianError_unavailable(db: Database, exc: Exception) -> YilianError:
    from yilian.kernel.errors import Category

    reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else type(exc).__name__
    return YilianError(Category.UNAVAILABLE, f"cannot open the database {db.describe()}: {reason}")


def run_guarded(fn: Callable[[], T]) -> T:
    with friendly_errors():
        return fn()


def is_tty() -> bool:
    return sys.stdout.isatty()
