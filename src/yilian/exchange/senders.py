"""Who is on the other end of an MLLP connection: the registered system client its TLS client
certificate is bound to (``yilian client bind-cert``), or — on a closed lab network only — the
one client the listener was told to attribute everything to (``--insecure-trust-network
--as-client``).

The connection is authenticated once, after the TLS handshake; each message is then checked
again against the client's current registration (active, allowed senders, scopes) in the
transaction that stores it, so a revocation takes effect from the next message on.
"""

from __future__ import annotations

from dataclasses import dataclass

from yilian.db import Database
from yilian.db.uow import read
from yilian.kernel.errors import Category, YilianError
from yilian.security.client_certs import client_id_for_certificate, fingerprint
from yilian.security.clients import get_client


@dataclass(frozen=True)
class Peer:
    """An MLLP connection's sender: a client, or the reason it has none."""

    client_id: str | None
    agent: str  # who the audit log names: the client id, else the certificate's fingerprint
    refusal: str | None = None  # why its messages are refused (None: accepted)


def by_certificate(db: Database, der: bytes | None) -> Peer:
    """The client the certificate presented on the connection is bound to."""
    if der is None:
        return Peer(
            None,
            "unauthenticated",
            "no client certificate was presented; this listener requires mutual TLS",
        )
    sha256 = fingerprint(der)
    agent = f"cert-sha256:{sha256}"
    with read(db) as uow:
        client_id = client_id_for_certificate(uow, sha256)
        client = get_client(uow, client_id) if client_id is not None else None
    if client_id is None or client is None:
        return Peer(
            None,
            agent,
            f"the client certificate (SHA-256 {sha256}) is not bound to a registered client",
        )
    if not client.active:
        return Peer(client_id, client_id, f"client {client_id} is revoked")
    return Peer(client_id, client_id)


def trusted(db: Database, client_id: str) -> Peer:
    """The insecure mode's sender: every connection is ``client_id``, which must be active."""
    with read(db) as uow:
        client = get_client(uow, client_id)
    if client is None:
        raise YilianError(Category.NOT_FOUND, f"no client {client_id} (register it with `yilian client add`)")
    if not client.active:
        raise YilianError(Category.CONFLICT, f"client {client_id} is revoked")
    if not client.hl7_senders:
        raise YilianError(
            Category.INVALID,
            f"client {client_id} is registered for no HL7 senders: give it some with "
            "`yilian client hl7-senders`",
        )
    return Peer(client_id, client_id)
