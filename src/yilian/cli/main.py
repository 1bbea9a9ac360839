"""``yilian``: run the platform, load and export data, manage the database."""

from __future__ import annotations

from pathlib import Path

import typer

from yilian import __version__
from yilian.cli.common import (
    DatabaseOption,
    console,
    err_console,
    friendly_errors,
    open_db,
    settings_from_env,
)

app = typer.Typer(
    name="yilian",
    help="医联 Yilian — regional health information platform (区域卫生信息平台).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)
db_app = typer.Typer(help="Database schema: upgrade to the newest version, show the current one.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _version(value: bool) -> None:
    if value:
        console.print(f"yilian {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """医联 Yilian — regional health information platform (区域卫生信息平台)."""


@app.command()
def serve(
    database: str | None = DatabaseOption,
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, help="Port to listen on."),
    upgrade: bool = typer.Option(True, help="Bring the database schema up to date before serving."),
) -> None:
    """Serve the platform: FHIR API at /fhir, front page at /."""
    from yilian.cli.serve import serve as run

    with friendly_errors():
        db = open_db(database, upgrade=upgrade)
    run(db, host=host, port=port)


@app.command()
def demo(
    database: str = typer.Option(
        "sqlite:///yilian-demo.db", "--database", "-d", help="Where the demo region lives (created if absent)."
    ),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, help="Port to listen on."),
    residents: int = typer.Option(300, min=10, max=100_000, help="How many residents the demo region has."),
    serve: bool = typer.Option(True, help="Serve the platform after loading (--no-serve only loads)."),
) -> None:
    """Create a demo region (consortium, practitioners, residents, clinical data) if absent, and serve it."""
    from yilian.cli.demo import load_demo

    with friendly_errors():
        db = open_db(database)
        summary = load_demo(db, residents=residents)
    if serve:
        from yilian.cli.serve import serve as run

        run(db, host=host, port=port, extra=summary)


@db_app.command("upgrade")
def db_upgrade(database: str | None = DatabaseOption) -> None:
    """Apply every pending migration (safe to run again)."""
    from yilian.migrations import current_revision

    with friendly_errors():
        db = open_db(database)
        console.print(f"database {db.describe()} is at revision [bold]{current_revision(db)}[/] (newest)")


@db_app.command("current")
def db_current(database: str | None = DatabaseOption) -> None:
    """Show the schema revision of the database and the newest one this version knows."""
    from yilian.migrations import current_revision, head_revision

    with friendly_errors():
        db = open_db(database, upgrade=False)
        try:
            cur = current_revision(db)
        except Exception as exc:
            from yilian.cli.common import YilianError_unavailable

            raise YilianError_unavailable(db, exc) from None
        head = head_revision(db)
        state = "up to date" if cur == head else "needs `yilian db upgrade`"
        console.print(f"current: {cur or '(empty database)'}   newest: {head}   — {state}")


@app.command("import")
def import_(
    paths: list[Path] = typer.Argument(..., help="FHIR JSON files (resources or Bundles), NDJSON files, or folders of them."),
    database: str | None = DatabaseOption,
) -> None:
    """Load FHIR resources: transaction/batch Bundles as such, other resources with their own ids."""
    from yilian.cli.transfer import run_import

    with friendly_errors():
        db = open_db(database)
        failed = run_import(db, settings_from_env(), paths)
    if failed:
        raise typer.Exit(1)


@app.command()
def export(
    out: Path = typer.Option(Path("export"), "--out", "-o", help="Folder for the NDJSON files (one per resource type); '-' for standard output."),
    types: str | None = typer.Option(None, "--type", "-t", help="Comma-separated resource types (default: all)."),
    since: str | None = typer.Option(None, help="Only resources changed at or after this instant (FHIR date/instant)."),
    database: str | None = DatabaseOption,
) -> None:
    """Write every current resource as NDJSON, one file per resource type."""
    from yilian.cli.transfer import run_export

    with friendly_errors():
        db = open_db(database)
        run_export(db, out, [t.strip() for t in types.split(",")] if types else None, since)


if __name__ == "__main__":  # pragma: no cover
    app()

__all__ = ["app", "err_console"]
