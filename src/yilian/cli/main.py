"""``yilian``: run the platform, load and export data, manage the database."""

from __future__ import annotations

from pathlib import Path

import typer

from yilian import __version__
from yilian.cli.common import (
    EXIT_PARTIAL,
    EXIT_UNUSABLE,
    DatabaseOption,
    console,
    describe,
    err_console,
    friendly_errors,
    open_db,
    settings_from_env,
    sqlite_file,
    unavailable,
    upgrade_schema,
)

app = typer.Typer(
    name="yilian",
    help=(
        "医联 Yilian — regional health information platform (区域卫生信息平台).\n\n"
        "Exit status: 0 done; 1 some of the data given failed (the rest was loaded); "
        "2 bad arguments or input, or the database cannot be used."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    # Errors are handled by friendly_errors; should one slip through, its locals (database
    # URLs with passwords) must not be printed.
    pretty_exceptions_show_locals=False,
)
# Flags take no value: without an empty metavar, --help would show them as `--serve <bool>`.
FLAG = ""

db_app = typer.Typer(
    help="Database schema: upgrade to the newest version, show the current one.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
client_app = typer.Typer(
    help="System clients (a hospital's HIS, LIS, a district node): register, list, revoke.",
    no_args_is_help=True,
)
app.add_typer(client_app, name="client")
from yilian.cli.audit import audit_app  # noqa: E402  (registered beside the other groups)

app.add_typer(audit_app, name="audit")
from yilian.cli.mpi import mpi_app  # noqa: E402

app.add_typer(mpi_app, name="mpi")
from yilian.cli.payments import payments_app  # noqa: E402

app.add_typer(payments_app, name="payments")
from yilian.cli.card import card_app  # noqa: E402

app.add_typer(card_app, name="card")
from yilian.cli.keys import keys_app  # noqa: E402

app.add_typer(keys_app, name="keys")
from yilian.cli.exchange import (  # noqa: E402
    AsClientOption,
    ForwardIdOption,
    ForwardSecretOption,
    InsecureOption,
    TlsCertOption,
    TlsClientCaOption,
    TlsKeyOption,
    exchange_app,
    mllp_command,
)

app.add_typer(exchange_app, name="exchange")
app.command("mllp")(mllp_command)
user_app = typer.Typer(
    help="People who sign in: staff (password + one-time code) and residents: add, list, revoke, unlock.",
    no_args_is_help=True,
)
app.add_typer(user_app, name="user")


def _version(value: bool) -> None:
    if value:
        console.print(f"yilian {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, metavar=FLAG, help="Print the version and exit."
    ),
) -> None:
    """医联 Yilian — regional health information platform (区域卫生信息平台)."""


@app.command()
def serve(
    database: str | None = DatabaseOption,
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, help="Port to listen on."),
    upgrade: bool = typer.Option(
        True, metavar=FLAG, help="Bring the database schema up to date before serving."
    ),
    mllp_port: int | None = typer.Option(
        None,
        "--mllp-port",
        help="Also listen for HL7 v2 over MLLP on this port (with the TLS options below, or "
        "--insecure-trust-network --as-client).",
    ),
    tls_cert: str | None = TlsCertOption,
    tls_key: str | None = TlsKeyOption,
    tls_client_ca: str | None = TlsClientCaOption,
    insecure_trust_network: bool = InsecureOption,
    as_client: str | None = AsClientOption,
    deliver: bool = typer.Option(
        True,
        metavar=FLAG,
        help="Deliver subscription notifications and forwarded writes in the background (--no-deliver: leave it to `yilian exchange deliver`).",
    ),
    publish: bool = typer.Option(
        True,
        metavar=FLAG,
        help="Write the payments' FHIR views in the background (--no-publish: leave it to `yilian payments publish`).",
    ),
    forward_to: str | None = typer.Option(
        None,
        "--forward-to",
        envvar="YILIAN_FORWARD_TO",
        help="City node root URL: forward every write accepted here to it (store and forward).",
    ),
    forward_client_id: str | None = ForwardIdOption,
    forward_client_secret: str | None = ForwardSecretOption,
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        max=64,
        metavar="N",
        envvar="YILIAN_WORKERS",
        help="Worker processes serving HTTP, 1 to 64 (one per core on PostgreSQL; keep 1 on SQLite).",
    ),
) -> None:
    """Serve the platform: FHIR API at /fhir, front page at /; deliver subscriptions and forwarded writes; publish the payments' FHIR views."""
    from yilian.cli.exchange import MllpOptions
    from yilian.cli.serve import serve as run
    from yilian.kernel.errors import Category, YilianError

    with friendly_errors():
        db = open_db(database, upgrade=upgrade)
        mllp = MllpOptions(tls_cert, tls_key, tls_client_ca, insecure_trust_network, as_client)
        if mllp_port is None and mllp != MllpOptions():
            raise YilianError(Category.INVALID, "the MLLP options need --mllp-port")
        run(
            db,
            host=host,
            port=port,
            mllp_port=mllp_port,
            mllp=mllp,
            deliver=deliver,
            publish=publish,
            forward_to=forward_to,
            forward_client_id=forward_client_id,
            forward_client_secret=forward_client_secret,
            workers=workers,
        )


@app.command()
def demo(
    database: str = typer.Option(
        "sqlite:///yilian-demo.db",
        "--database",
        "-d",
        help="Where the demo region lives (created if absent).",
    ),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, help="Port to listen on."),
    residents: int = typer.Option(300, min=10, max=100_000, help="How many residents the demo region has."),
    serve: bool = typer.Option(
        True, metavar=FLAG, help="Serve the platform after loading (--no-serve only loads)."
    ),
) -> None:
    """Create a demo region (consortium, practitioners, residents, clinical data, health cards and a day of card payments, cleared) if the database is empty, and serve it."""
    from yilian.cli.access import ensure_demo_logins, print_demo_logins
    from yilian.cli.demo import load_demo

    with friendly_errors():
        db = open_db(database)
        summary = load_demo(db, residents=residents)
        logins = ensure_demo_logins(db)
        print_demo_logins(logins, f"http://{host}:{port}")
        if serve:
            from yilian.cli.serve import serve as run

            run(db, host=host, port=port, extra=summary)


@client_app.command("add")
def client_add(
    name: str = typer.Argument(..., help="What the client is, e.g. '市第一人民医院 HIS'."),
    org: str | None = typer.Option(
        None,
        "--org",
        help="Id of the institution's FHIR Organization; omit for the platform operator (region-wide).",
    ),
    scope: str = typer.Option(
        "system/*.rs",
        "--scope",
        help="SMART scopes, space-separated, e.g. 'system/Patient.rs system/Observation.cruds'.",
    ),
    jwks: Path | None = typer.Option(
        None, "--jwks", help="Public key (JWKS, JWK or PEM) for private_key_jwt; then no secret is issued."
    ),
    redirect_uri: list[str] = typer.Option(
        [], "--redirect-uri", help="For apps that sign people in (authorization code + PKCE); repeatable."
    ),
    public: bool = typer.Option(False, "--public", metavar=FLAG, help="An app without a secret (PKCE only)."),
    cert: Path | None = typer.Option(
        None, "--cert", help="A TLS client certificate (PEM or DER) to bind: the client's identity on MLLP."
    ),
    hl7_sender: list[str] = typer.Option(
        [],
        "--hl7-sender",
        help="An HL7 v2 sender it may send as over MLLP: FACILITY (MSH-4) or APPLICATION|FACILITY; "
        "repeatable; '*' (any) for operator clients only.",
    ),
    database: str | None = DatabaseOption,
) -> None:
    """Register a system client and print its client_id (and client_secret, shown once) as JSON."""
    from yilian.cli.access import add_client, clients_json

    with friendly_errors():
        db = open_db(database)
        console.print_json(
            clients_json(
                add_client(
                    db,
                    name=name,
                    org=org,
                    scopes=scope,
                    jwks_file=jwks,
                    redirect_uris=redirect_uri,
                    public=public,
                    cert_file=cert,
                    hl7_senders=hl7_sender,
                )
            )
        )


@client_app.command("bind-cert")
def client_bind_cert(
    client_id: str = typer.Argument(..., help="The client (see `yilian client list`)."),
    cert: Path = typer.Argument(..., help="Its TLS client certificate, PEM or DER."),
    database: str | None = DatabaseOption,
) -> None:
    """Bind a TLS client certificate to a client: the MLLP listener then knows it by that certificate."""
    from yilian.cli.access import bind_cert, clients_json

    with friendly_errors():
        console.print_json(clients_json(bind_cert(open_db(database), client_id, cert)))


@client_app.command("unbind-cert")
def client_unbind_cert(
    sha256: str = typer.Argument(
        ..., help="The certificate's SHA-256 fingerprint (see `yilian client list`)."
    ),
    database: str | None = DatabaseOption,
) -> None:
    """Unbind a TLS client certificate (retired or compromised): its connections are refused from now on."""
    from yilian.cli.access import unbind_cert

    with friendly_errors():
        unbind_cert(open_db(database), sha256)
        console.print(f"certificate {sha256} unbound")


@client_app.command("hl7-senders")
def client_hl7_senders(
    client_id: str = typer.Argument(..., help="The client (see `yilian client list`)."),
    senders: list[str] = typer.Argument(
        None, help="FACILITY (MSH-4) or APPLICATION|FACILITY, any number; none: it may send no HL7."
    ),
    database: str | None = DatabaseOption,
) -> None:
    """Set the HL7 v2 senders (MSH-3/MSH-4) a client may send messages as over MLLP."""
    from yilian.cli.access import hl7_senders

    with friendly_errors():
        stored = hl7_senders(open_db(database), client_id, senders or [])
        console.print(f"client {client_id} may send HL7 v2 as: {', '.join(stored) or 'nobody'}")


@client_app.command("list")
def client_list(database: str | None = DatabaseOption) -> None:
    """List registered clients with their institution, scopes and state."""
    from yilian.cli.access import print_clients

    with friendly_errors():
        print_clients(open_db(database))


@client_app.command("revoke")
def client_revoke(
    client_id: str = typer.Argument(..., help="The client to revoke."), database: str | None = DatabaseOption
) -> None:
    """Revoke a client: no new tokens, and its tokens stop working (within seconds)."""
    from yilian.cli.access import revoke

    with friendly_errors():
        revoke(open_db(database), client_id)
        console.print(f"client {client_id} revoked")


@user_app.command("add")
def user_add(
    username: str = typer.Argument(..., help="The sign-in name."),
    kind: str = typer.Option("staff", "--kind", help="staff or resident."),
    org: str | None = typer.Option(
        None,
        "--org",
        help="Staff: id of their institution's FHIR Organization (omit for platform operator staff).",
    ),
    patient: str | None = typer.Option(None, "--patient", help="Residents: id of their FHIR Patient."),
    name: str | None = typer.Option(None, "--name", help="Display name."),
    password: str = typer.Option(
        ...,
        "--password",
        prompt=True,
        hide_input=True,
        confirmation_prompt=True,
        help="At least 10 characters.",
    ),
    database: str | None = DatabaseOption,
) -> None:
    """Add a person who signs in. Staff get a TOTP secret for their authenticator app (printed once)."""
    from yilian.cli.access import add_person, clients_json

    with friendly_errors():
        db = open_db(database)
        console.print_json(
            clients_json(
                add_person(
                    db, username=username, kind=kind, password=password, org=org, patient=patient, name=name
                )
            )
        )


@user_app.command("list")
def user_list(database: str | None = DatabaseOption) -> None:
    """List the people who sign in, with their institution or patient, second factor and state (recorded in the audit log)."""
    from yilian.cli.access import print_users

    with friendly_errors():
        print_users(open_db(database))


@user_app.command("revoke")
def user_revoke(
    username: str = typer.Argument(..., help="The sign-in name of the account to revoke."),
    database: str | None = DatabaseOption,
) -> None:
    """Revoke (deactivate) an account: no new sign-in, and its sessions and tokens stop working at once."""
    from yilian.cli.access import revoke_person

    with friendly_errors():
        user = revoke_person(open_db(database), username)
        console.print(f"user {user.username} ({user.user_id}) revoked")


@user_app.command("unlock")
def user_unlock(
    username: str = typer.Argument(..., help="The sign-in name of the locked account."),
    database: str | None = DatabaseOption,
) -> None:
    """Clear the lockout after repeated failed sign-ins, so the person can sign in again now."""
    from yilian.cli.access import unlock_person

    with friendly_errors():
        user = unlock_person(open_db(database), username)
        console.print(f"user {user.username} ({user.user_id}) unlocked")


@db_app.command("upgrade")
def db_upgrade(database: str | None = DatabaseOption) -> None:
    """Apply every pending migration (safe to run again)."""
    from yilian.migrations import current_revision

    with friendly_errors():
        db = open_db(database, upgrade=False)
        try:
            before = current_revision(db)
        except Exception as exc:
            raise unavailable(db, exc) from None
        upgrade_schema(db)
        after = current_revision(db)
        if before == after:
            console.print(f"{describe(db)} is at revision [bold]{after}[/] (newest); nothing to do")
        else:
            console.print(
                f"{describe(db)} upgraded from {before or '(empty)'} to revision [bold]{after}[/] (newest)"
            )


@db_app.command("current")
def db_current(database: str | None = DatabaseOption) -> None:
    """Show the schema revision of the database and the newest one this version knows."""
    from yilian.migrations import current_revision, head_revision

    with friendly_errors():
        path = sqlite_file(database)
        if path is not None and not path.exists():
            # Opening it would create an empty file: a typo in the path must not leave one behind.
            from yilian.kernel.errors import Category, YilianError

            raise YilianError(
                Category.NOT_FOUND, f"there is no database file {path} (`yilian db upgrade` creates it)"
            )
        db = open_db(database, upgrade=False)
        try:
            cur = current_revision(db)
        except Exception as exc:
            raise unavailable(db, exc) from None
        head = head_revision(db)
        state = "up to date" if cur == head else "needs `yilian db upgrade`"
        console.print(f"current: {cur or '(empty database)'}   newest: {head}   — {state}")


@app.command("import")
def import_(
    paths: list[Path] = typer.Argument(
        ..., help="FHIR JSON files (resources or Bundles), NDJSON files, or folders of them."
    ),
    database: str | None = DatabaseOption,
) -> None:
    """Load FHIR resources: transaction/batch Bundles as such, other resources with their own ids (importing again adds no resources).

    Files may come in any order: a resource referring to one loaded later is retried once that is in. A resource that fails is reported with its file, line and reason, and the rest still loads (exit status 1).

    Resources are validated, indexed and seen by the patient index one by one, but written 500 to a transaction in bulk (the path the server's $import uses; see docs/bulk.md).
    """  # one line per paragraph: Rich keeps a docstring's line breaks in --help
    from yilian.cli.transfer import run_import

    with friendly_errors():
        db = open_db(database)
        failed = run_import(db, settings_from_env(), paths)
    if failed:
        raise typer.Exit(EXIT_PARTIAL)


@app.command()
def migrate(
    mapping: str = typer.Argument(
        ..., help="The mapping file (YAML, docs/migrate.md), or the name of a shipped mapping: synthea."
    ),
    data_dir: Path = typer.Argument(..., help="The folder holding the legacy system's CSV files."),
    report: Path | None = typer.Option(
        None,
        "--report",
        "-r",
        help="Write the data-quality report here: every row not loaded, with file, line, column and reason (.json for JSON, else CSV).",
    ),
    database: str | None = DatabaseOption,
) -> None:
    """Migrate a legacy system's CSV tables into FHIR resources through a YAML mapping (running it again creates nothing new).

    Tables load in the order their references need (organizations and practitioners before patients, patients before encounters). Patients go through the patient index. A row that cannot be loaded is reported with its file, line, column and reason, and the rest still loads (exit status 1).
    """
    from yilian.cli.migrate import run_migrate

    with friendly_errors():
        db = open_db(database)
        done = run_migrate(db, settings_from_env(), mapping, data_dir, report)
    if done.problems:
        raise typer.Exit(EXIT_PARTIAL)


@app.command()
def export(
    out: Path = typer.Option(
        Path("export"),
        "--out",
        "-o",
        help="Folder for the NDJSON files (one per resource type); '-' for standard output.",
    ),
    types: str | None = typer.Option(
        None, "--type", "-t", help="Comma-separated resource types (default: all)."
    ),
    since: str | None = typer.Option(
        None, help="Only resources changed at or after this instant (FHIR date/instant)."
    ),
    database: str | None = DatabaseOption,
) -> None:
    """Write every current resource as NDJSON, one file per resource type (`yilian import` reads them back)."""
    from yilian.cli.transfer import run_export

    with friendly_errors():
        db = open_db(database)
        run_export(db, out, [t.strip() for t in types.split(",") if t.strip()] if types else None, since)


if __name__ == "__main__":  # pragma: no cover
    app()

__all__ = ["EXIT_UNUSABLE", "app", "err_console"]
