"""``yilian keys``: the data-encryption keys of a database — status, rotate, re-encrypt, retire.

Sensitive values are sealed under the keyring's current data key (ID numbers and phones in the
FHIR record, health card numbers, the HL7 inbox, staff TOTP secrets). A rotation is: a new current key (``rotate``,
or ``YILIAN_DATA_KEYS`` with the new key first), every stored value re-encrypted under it
(``reencrypt``, in batches, safe beside a running server, safe to run again), then the old key
removed (``retire``, refused while any value still needs it).

Each of the three records an AuditEvent as the operator (``key-rotate``, ``key-reencrypt``,
``key-retire``) naming key ids and counts, never key material.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.progress import Progress, TaskID
from rich.table import Table

from yilian.cli.common import (
    DatabaseOption,
    audit_partial,
    console,
    err_console,
    friendly_errors,
    open_db,
    operator_record,
    progress_bar,
    record_alone,
)
from yilian.db import Database, UnitOfWork
from yilian.db.rewrite import RewriteCount
from yilian.kernel.crypto import Keyring, key_ids_in
from yilian.kernel.errors import Category, YilianError

keys_app = typer.Typer(
    help="Encryption keys of sealed data: status, rotate, reencrypt, retire.", no_args_is_help=True
)


KEYS_ENTITY = "data keys"  # the audit entity of every key command


@dataclass(frozen=True)
class Sealed:
    """One place where sealed values are stored, and how to bring a value to the current key."""

    label: str
    table: Any
    column: str
    reencrypt: Callable[[Keyring, Any], Any | None]


def _places() -> list[Sealed]:
    from yilian.card import reencrypt_number
    from yilian.card.tables import card
    from yilian.exchange.raw_messages import reencrypt_raw
    from yilian.exchange.tables import inbox
    from yilian.fhir.store import sealing
    from yilian.fhir.store.tables import resource, resource_version
    from yilian.security.people import reencrypt_totp
    from yilian.security.tables import user_account

    def document(keyring: Keyring, content: Any) -> Any | None:
        return sealing.reencrypt(bytes(content), keyring)

    return [
        Sealed("FHIR resources (current versions)", resource, "content", document),
        Sealed("FHIR resources (history)", resource_version, "content", document),
        Sealed("health card numbers", card, "number_sealed", reencrypt_number),
        Sealed("HL7 v2 inbox", inbox, "raw", lambda k, raw: reencrypt_raw(k, bytes(raw))),
        Sealed("staff TOTP secrets", user_account, "totp_secret", reencrypt_totp),
    ]


def _keyring(db: Database) -> Keyring:
    from yilian.fhir.store.sealing import keyring_for

    keyring = keyring_for(db.engine)
    if keyring is None:  # open_db installs it; a database without keys has nothing sealed
        raise YilianError(Category.UNAVAILABLE, "the database has no encryption keys installed")
    return keyring


def _count_rows(db: Database, table: Any) -> int:
    from sqlalchemy import func, select

    with db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


Scan = list[tuple[Sealed, RewriteCount, dict[str, int]]]


def _scan(db: Database, keyring: Keyring, *, dry_run: bool, into: Scan | None = None) -> Scan:
    """Every place, rewritten (or, with ``dry_run``, only counted), with the key ids seen.

    Each place is added to ``into`` before its rows are visited and its counts grow as batches
    commit, so a pass that stops midway leaves there what it had done.
    """
    from yilian.db.rewrite import rewrite_column

    results: Scan = into if into is not None else []
    with progress_bar() as bar:
        for place in _places():
            task = bar.add_task(place.label, total=_count_rows(db, place.table))
            seen: dict[str, int] = {}
            count = RewriteCount()
            results.append((place, count, seen))

            def transform(value: Any, place: Sealed = place, seen: dict[str, int] = seen) -> Any | None:
                stored = bytes(value) if isinstance(value, (bytes, memoryview)) else value
                for key_id in key_ids_in(stored):
                    seen[key_id] = seen.get(key_id, 0) + 1
                return place.reencrypt(keyring, stored)

            rewrite_column(
                db,
                place.table,
                place.column,
                transform,
                dry_run=dry_run,
                progress=functools.partial(_advance, bar, task),
                into=count,
            )
    return results


def _advance(bar: Progress, task: TaskID, n: int) -> None:
    bar.advance(task, n)


def _key_source(db: Database) -> str:
    from yilian.api.wiring import key_file_of

    path = key_file_of(db)
    return f"key file {path}" if path is not None else "YILIAN_DATA_KEYS / YILIAN_INDEX_KEY (environment)"


def _key_file(db: Database, instead: str) -> Path:
    """The key file to change, or a refusal saying what to do ``instead`` with keys from the environment."""
    from yilian.api.wiring import key_file_of

    path = key_file_of(db)
    if path is None:
        raise YilianError(Category.INVALID, f"the keys come from YILIAN_DATA_KEYS: {instead}")
    return path


@keys_app.command("status")
def status_command(database: str | None = DatabaseOption) -> None:
    """The keyring's data keys and, for every place sealed values are stored, which keys they use."""
    with friendly_errors():
        db = open_db(database)
        keyring = _keyring(db)
        results = _scan(db, keyring, dry_run=True)
    console.print(f"keys from {_key_source(db)}; current data key [bold]{keyring.current_key_id}[/]")
    table = Table(title="Sealed values by data key (values holding several tokens count once per key)")
    for name in ("where", "rows", *keyring.key_ids, "to re-encrypt"):
        table.add_column(name, justify="left" if name == "where" else "right")
    for place, count, seen in results:
        table.add_row(
            place.label,
            f"{count.rows:,}",
            *(f"{seen.get(k, 0):,}" for k in keyring.key_ids),
            f"{count.changed:,}",
        )
    console.print(table)
    unknown = sorted({k for _, _, seen in results for k in seen} - set(keyring.key_ids))
    if unknown:
        err_console.print(
            f"[bold red]values sealed under keys this keyring does not have: {', '.join(unknown)}[/]"
        )
        raise typer.Exit(1)


@keys_app.command("rotate")
def rotate_command(database: str | None = DatabaseOption) -> None:
    """Add a new data key to the key file and make it current (old keys stay, to read old values).

    Then run `yilian keys reencrypt`, and `yilian keys retire OLD_ID` once it reports nothing left.
    Restart running servers to pick the new key up (until then they write with the old one, which
    the re-encryption pass catches on a second run). Keys kept in YILIAN_DATA_KEYS are rotated
    where they are kept: put a new key first in the list.
    """
    with friendly_errors():
        db = open_db(database)
        path = _key_file(
            db,
            "rotate them in the secret store (a new <id>:<base64 32 bytes> first in the list), "
            "restart, then run `yilian keys reencrypt`",
        )
        rotated = Keyring.load(path).with_new_current_key()
        _save_audited(
            db,
            rotated,
            path,
            action="U",
            subtype="key-rotate",
            outcome_desc=f"new current data key {rotated.current_key_id} added to the key file {path} "
            f"(keys: {', '.join(rotated.key_ids)})",
        )
    console.print(
        f"new current data key [bold]{rotated.current_key_id}[/] in {path} (keys: {', '.join(rotated.key_ids)}); "
        "now run `yilian keys reencrypt`"
    )


@keys_app.command("reencrypt")
def reencrypt_command(database: str | None = DatabaseOption) -> None:
    """Re-encrypt every sealed value under the current data key, in batches (safe beside a running server; run again to finish)."""
    with friendly_errors():
        db = open_db(database)
        keyring = _keyring(db)
        results: Scan = []
        # Every batch commits on its own (a pass over millions of rows must not hold locks), so
        # the pass cannot share one transaction with its AuditEvent: one record is written
        # after it, saying how many values it rewrote, and a pass that stops midway (an error,
        # Ctrl-C) records what it had rewritten by then, with outcome 8 (serious failure).
        with audit_partial(
            db,
            action="U",
            subtype="key-reencrypt",
            entity=KEYS_ENTITY,
            done=lambda: _reencrypted(keyring, results) if _changed(results) else None,
        ):
            _scan(db, keyring, dry_run=False, into=results)
            record_alone(
                db,
                operator_record(
                    action="U",
                    subtype="key-reencrypt",
                    entity=KEYS_ENTITY,
                    outcome_desc=_reencrypted(keyring, results),
                ),
            )
    table = Table(title=f"Re-encrypted under data key {keyring.current_key_id}")
    for name in ("where", "rows read", "re-encrypted", "changed meanwhile (run again)"):
        table.add_column(name, justify="left" if name == "where" else "right")
    for place, count, _seen in results:
        table.add_row(place.label, f"{count.rows:,}", f"{count.changed:,}", f"{count.skipped:,}")
    console.print(table)


@keys_app.command("retire")
def retire_command(
    key_id: str = typer.Argument(..., help="The old data key to remove from the key file."),
    database: str | None = DatabaseOption,
) -> None:
    """Remove an old data key from the key file, once no stored value needs it."""
    with friendly_errors():
        db = open_db(database)
        path = _key_file(db, "remove the key from the list where it is kept")
        keyring = Keyring.load(path)
        if key_id not in keyring.key_ids:
            raise YilianError(
                Category.NOT_FOUND, f"no data key {key_id!r} in {path} (keys: {', '.join(keyring.key_ids)})"
            )
        if key_id == keyring.current_key_id:
            raise YilianError(Category.INVALID, f"{key_id!r} is the current key: rotate first")
        scanned = _scan(db, keyring, dry_run=True)
        still = [(place.label, seen[key_id]) for place, _c, seen in scanned if seen.get(key_id)]
        audited = _audit_rows_under(db, key_id)
        if audited:
            # Audit rows cannot be re-sealed (the log is append-only): they keep the key they
            # were sealed with until retention prunes them (`yilian audit prune`).
            still.append(("audit log rows sealed (MAC) under it, kept until pruned", audited))
        if still:
            where = "; ".join(f"{label}: {n:,}" for label, n in still)
            todo = (
                "run `yilian keys reencrypt` first"
                if len(still) > int(bool(audited))
                else "it is needed to verify them until `yilian audit prune` has removed them"
            )
            raise YilianError(
                Category.CONFLICT, f"values are still sealed under {key_id!r} ({where}): {todo}"
            )
        kept = keyring.without_key(key_id)
        checked = sum(count.rows for _p, count, _s in scanned)
        _save_audited(
            db,
            kept,
            path,
            action="D",
            subtype="key-retire",
            outcome_desc=f"data key {key_id} removed from the key file {path}; no stored value was sealed "
            f"under it ({checked} rows checked); keys left: {', '.join(kept.key_ids)} "
            f"(current {kept.current_key_id})",
        )
    console.print(f"retired data key {key_id} from {path}")


def _audit_rows_under(db: Database, key_id: str) -> int:
    from yilian.security.audit.chain import key_usage

    with db.engine.connect() as conn:
        return key_usage(conn, key_id)


def _changed(results: Scan) -> int:
    return sum(count.changed for _p, count, _s in results)


def _reencrypted(keyring: Keyring, results: Scan) -> str:
    places = ", ".join(f"{place.label}: {count.changed}" for place, count, _s in results)
    skipped = sum(count.skipped for _p, count, _s in results)
    return (
        f"re-encrypted {_changed(results)} sealed values under data key {keyring.current_key_id} "
        f"({places}); {skipped} changed meanwhile, left for the next run"
    )


def _save_audited(
    db: Database, keyring: Keyring, path: Path, *, action: str, subtype: str, outcome_desc: str
) -> None:
    """Replace the key file with ``keyring`` and record it, as one change as far as a file allows.

    The key file cannot join the database transaction. The record is inserted first (so a
    database that cannot take it leaves the keys as they were), the file is replaced (atomically)
    while the transaction is still open, and the commit follows. Should the commit itself fail
    after the file changed, a record of its own says so (outcome 8).
    """
    from yilian.security.audit import flush, record

    saved: list[str] = []
    with (
        audit_partial(
            db,
            action=action,
            subtype=subtype,
            entity=KEYS_ENTITY,
            done=lambda: f"{outcome_desc}, but not recorded with it" if saved else None,
        ),
        UnitOfWork(db, write=True) as uow,
    ):
        record(
            uow,
            operator_record(action=action, subtype=subtype, entity=KEYS_ENTITY, outcome_desc=outcome_desc),
        )
        flush(uow)
        keyring.save(path)
        saved.append(str(path))
