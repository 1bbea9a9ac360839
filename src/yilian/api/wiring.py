"""Assembling the platform: the FHIR settings every entry point (server, CLI loaders) runs with.

The systems that must see every write as it happens (access grants now; the patient index,
subscriptions and forwarding as they land) are plugged in here, once, for every entry point.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from yilian import card, payments
from yilian.db import Database
from yilian.exchange.bulk import bulk_operations
from yilian.exchange.outbound import ForwardedIdGuard, OutboxObserver
from yilian.fhir.interactions.context import FhirSettings
from yilian.fhir.store import sealing
from yilian.kernel.crypto import Keyring
from yilian.mpi import PatientIndexObserver, check_configuration
from yilian.mpi import operations as mpi_operations
from yilian.mpi import virtual_types as mpi_virtual_types
from yilian.security.audit_view import virtual_types
from yilian.security.grants import GrantDeriver


def install_keys(db: Database, env: Mapping[str, str] | None = None) -> Keyring:
    """Give the database its keyring: sensitive fields are sealed at rest with it.

    Keys come from ``YILIAN_DATA_KEYS``/``YILIAN_INDEX_KEY`` or ``YILIAN_KEY_FILE``; the embedded
    SQLite default keeps a key file beside the database file (``<file>.keys``, created once).
    """
    env = os.environ if env is None else env
    key_file = None
    if db.is_sqlite and db.url.database not in (None, "", ":memory:"):
        key_file = Path(str(db.url.database) + ".keys")
    keyring = Keyring.from_config(env, key_file=key_file)
    sealing.install(db.engine, keyring)
    return keyring


def key_file_of(db: Database, env: Mapping[str, str] | None = None) -> Path | None:
    """The key file the database's keyring comes from, or None when keys come from the
    environment (``YILIAN_DATA_KEYS``) and must be changed where they are kept."""
    env = os.environ if env is None else env
    if env.get("YILIAN_DATA_KEYS", "").strip() or env.get("YILIAN_INDEX_KEY", "").strip():
        return None
    configured = env.get("YILIAN_KEY_FILE", "").strip()
    if configured:
        return Path(configured)
    if db.is_sqlite and db.url.database not in (None, "", ":memory:"):
        return Path(str(db.url.database) + ".keys")
    return None


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    return default if value is None else value.strip().lower() not in ("0", "false", "off", "no")


def platform_settings(env: Mapping[str, str] | None = None) -> FhirSettings:
    env = os.environ if env is None else env
    check_configuration(dict(env))  # a bad threshold stops the start, with its reason
    payments.check_fund_administrators(env)  # so does a fund mapping naming an unknown fund
    return FhirSettings(
        enforce_referential_integrity=_flag(env, "YILIAN_REFERENTIAL_INTEGRITY", True),
        enforce_delete_integrity=_flag(env, "YILIAN_DELETE_INTEGRITY", True),
        # A forwarded write that would replace another node's patient record is refused before
        # anything is derived from it. The index next: a Patient it refuses (an invalid ID
        # number) derives no grants. The outbox last: a subscription's match is decided with
        # the grants this write derived.
        observers=(ForwardedIdGuard(), PatientIndexObserver(), GrantDeriver(), OutboxObserver()),
        # A lost, suspended, replaced or revoked card's number finds nobody, on every lookup path.
        lookup_guards=(card.CardLookupGuard(),),
        virtual_types={**virtual_types(), **mpi_virtual_types()},
        operations=(*mpi_operations(), *bulk_operations()),
    )
