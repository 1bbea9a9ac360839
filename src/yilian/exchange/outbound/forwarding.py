"""District → city forwarding: a destination that receives every write, by FHIR REST.

The target is kept in the database, not only in the server's options: once registered, every
write to this database is queued for it — by the server, by ``yilian import``, by the HL7
listener — and nothing written while the server was down or restarted without the option is
missed. Credentials are not stored; the delivering process is given them.

Delivery is idempotent on the city: each change is a ``PUT [city]/fhir/Type/id`` of that
version (update-as-create, keeping the district's id), carrying ``meta.source`` =
``<district source>#Type/id/_history/<version>``; a deletion is a ``DELETE``, which is a
no-op when repeated. When an earlier attempt may have landed (a retry, or the first message
after a worker took over), the city's copy is read first and a ``meta.source`` equal to this
version's means it already arrived: the city gets each version exactly once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from sqlalchemy import select, update

from yilian.db import UnitOfWork
from yilian.exchange.outbound.outbox import ensure_sequence, now_us
from yilian.exchange.outbound.tables import destination, message
from yilian.fhir.store import repository as repo
from yilian.kernel.errors import Category, YilianError


@dataclass(frozen=True)
class ForwardCredentials:
    client_id: str
    client_secret: str
    scope: str | None = None  # None: whatever the client is registered for


def dest_id(url: str) -> str:
    return f"forward:{normalize(url)}"


def normalize(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise YilianError(
            Category.INVALID, f"--forward-to must be the city node's http(s) root URL, not {url!r}"
        )
    return url.strip().rstrip("/")


def register(uow: UnitOfWork, url: str) -> str:
    """Start queuing every write for ``url`` (idempotent); returns the destination id."""
    did = dest_id(url)
    now = now_us()
    existing = uow.conn.execute(select(destination.c.active).where(destination.c.dest_id == did)).first()
    if existing is None:
        uow.conn.execute(
            destination.insert().values(
                dest_id=did,
                kind="forward",
                active=True,
                endpoint=normalize(url),
                failures=0,
                created=now,
                updated=now,
            )
        )
    elif not existing.active:
        uow.conn.execute(
            update(destination).where(destination.c.dest_id == did).values(active=True, updated=now)
        )
    ensure_sequence(uow, did)
    return did


def unregister(uow: UnitOfWork, url: str) -> int:
    """Stop forwarding to ``url``; what was still queued is dropped. Returns how many were dropped."""
    did = dest_id(url)
    done = uow.conn.execute(
        update(destination).where(destination.c.dest_id == did).values(active=False, updated=now_us())
    )
    if done.rowcount == 0:
        raise YilianError(Category.NOT_FOUND, f"this node does not forward to {normalize(url)}")
    dropped = uow.conn.execute(
        update(message)
        .where(message.c.dest_id == did, message.c.state == "pending")
        .values(state="cancelled", last_error="forwarding stopped")
    )
    return int(dropped.rowcount or 0)


def credentials_from_env(
    client_id: str | None = None,
    client_secret: str | None = None,
    scope: str | None = None,
    env: Mapping[str, str] | None = None,
) -> ForwardCredentials | None:
    """Options first, then ``YILIAN_FORWARD_CLIENT_ID`` / ``_SECRET`` / ``_SCOPE``."""
    env = os.environ if env is None else env
    cid = client_id or env.get("YILIAN_FORWARD_CLIENT_ID")
    secret = client_secret or env.get("YILIAN_FORWARD_CLIENT_SECRET")
    if not cid and not secret:
        return None
    if not cid or not secret:
        raise YilianError(
            Category.INVALID, "forwarding credentials need both a client id and a client secret"
        )
    return ForwardCredentials(cid, secret, scope or env.get("YILIAN_FORWARD_SCOPE") or None)


def source_stamp(source: str, res_type: str, res_id: str, version: int) -> str:
    return f"{source}#{res_type}/{res_id}/_history/{version}"


_STAMP = re.compile(r"^(?P<source>.+)#(?P<type>[A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})/_history/\d+$")


def _stamped_source(resource: Mapping[str, Any] | None, res_type: str, res_id: str) -> str | None:
    """The sending node of a version forwarded to this one (its ``meta.source`` stamp), or None."""
    meta = resource.get("meta") if resource is not None else None
    source = meta.get("source") if isinstance(meta, Mapping) else None
    m = _STAMP.match(source) if isinstance(source, str) else None
    if m is None or m["type"] != res_type or m["id"] != res_id:
        return None
    return m["source"]


class ForwardedIdGuard:
    """On the city node: a forwarded write may not replace another node's record of a patient.

    Districts keep their ids on the city. A client-assigned id two districts both use for
    different patients' data would otherwise make the later write replace the earlier one
    silently. A forwarded version (``meta.source`` stamped ``<node>#Type/id/_history/n``) of a
    resource in a patient's compartment whose previous version came from another node is refused
    (409): the sending district's queue holds with the reason (``yilian exchange outbox``) until
    an operator skips it and the ids are made region-unique. Shared registry data (organizations,
    practitioners) is not guarded: the last node's copy of it is the city's copy.
    """

    def on_write(
        self,
        uow: UnitOfWork,
        ctx: Any,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any] | None,
        patient_key: str | None,
    ) -> None:
        if patient_key is None:
            return
        source = _stamped_source(resource, resource_type, resource_id)
        if source is None:
            return
        assert resource is not None
        version = str((resource.get("meta") or {}).get("versionId") or "")
        if not version.isdigit() or int(version) <= 1:
            return
        previous = repo.get_version(uow.conn, resource_type, resource_id, int(version) - 1)
        if previous is None or previous.content is None:
            return  # new, or re-created after a deletion
        earlier = _stamped_source(orjson.loads(previous.content), resource_type, resource_id)
        if earlier is not None and earlier != source:
            raise YilianError(
                Category.CONFLICT,
                f"{resource_type}/{resource_id} here holds a record forwarded from {earlier}; a write "
                f"forwarded from {source} with the same id would replace it: the two nodes use the same "
                "client-assigned id for different records (make ids region-unique; docs/exchange.md)",
            )
