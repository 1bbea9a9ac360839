"""Client certificates and HL7 v2 senders of registered system clients (the MLLP listener's
mutual TLS).

A hospital's interface engine proves who it is with a TLS client certificate its own CA (or
the region's) issued. The certificate is *bound* to a registered client by the SHA-256 of its
DER bytes: the listener maps the certificate a connection presented to that client, whose
scopes and institution then decide what its messages may write, exactly as a token's would.
Binding by fingerprint rather than by subject name means a second certificate the CA issues
with the same name is not taken for the first; a renewed certificate is bound alongside the
old one (several per client) and the old one unbound when it retires.

A client also names the HL7 v2 senders it may speak for: entries ``FACILITY`` (any MSH-3 from
that MSH-4) or ``APPLICATION|FACILITY``, compared with the HD's namespace id or universal id
(or the whole field). ``*`` (any sender) is for platform-operator clients only — a district
node relaying its hospitals' messages.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import delete, select, update

from yilian.db import UnitOfWork
from yilian.fhir.search.values import instant_to_us
from yilian.kernel import clock
from yilian.kernel.errors import Category, YilianError
from yilian.security.tables import client, client_cert

ANY_SENDER = "*"


@dataclass(frozen=True)
class Certificate:
    sha256: str  # hex, lower case, of the DER bytes
    subject: str  # RFC 4514 string, for people
    not_after: int  # microseconds since the epoch


@dataclass(frozen=True)
class BoundCertificate:
    sha256: str
    client_id: str
    subject: str
    not_after: int


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def read_certificate(pem_or_der: bytes) -> Certificate:
    """The certificate in a PEM (the first one, if a chain) or DER file."""
    try:
        if b"-----BEGIN" in pem_or_der:
            cert = x509.load_pem_x509_certificate(pem_or_der)
        else:
            cert = x509.load_der_x509_certificate(pem_or_der)
    except ValueError as exc:
        raise YilianError(Category.INVALID, f"not an X.509 certificate (PEM or DER): {exc}") from None
    der = cert.public_bytes(serialization.Encoding.DER)
    return Certificate(
        sha256=fingerprint(der),
        subject=cert.subject.rfc4514_string(),
        not_after=instant_to_us(cert.not_valid_after_utc),
    )


def bind_certificate(uow: UnitOfWork, client_id: str, cert: Certificate) -> BoundCertificate:
    """Bind ``cert`` to the client; a certificate belongs to one client only."""
    row = uow.conn.execute(select(client.c.active).where(client.c.client_id == client_id)).first()
    if row is None:
        raise YilianError(Category.NOT_FOUND, f"no client {client_id}")
    if not row.active:
        raise YilianError(Category.CONFLICT, f"client {client_id} is revoked")
    if cert.not_after <= instant_to_us(clock.now()):
        raise YilianError(Category.INVALID, "the certificate has expired")
    owner = uow.conn.execute(
        select(client_cert.c.client_id).where(client_cert.c.sha256 == cert.sha256)
    ).scalar_one_or_none()
    if owner is not None and owner != client_id:
        raise YilianError(Category.CONFLICT, f"the certificate is already bound to client {owner}")
    if owner is None:
        uow.conn.execute(
            client_cert.insert().values(
                sha256=cert.sha256,
                client_id=client_id,
                subject=cert.subject,
                not_after=cert.not_after,
                added=instant_to_us(clock.now()),
            )
        )
    return BoundCertificate(cert.sha256, client_id, cert.subject, cert.not_after)


def unbind_certificate(uow: UnitOfWork, sha256: str) -> None:
    done = uow.conn.execute(delete(client_cert).where(client_cert.c.sha256 == sha256.lower()))
    if done.rowcount == 0:
        raise YilianError(Category.NOT_FOUND, f"no certificate with SHA-256 {sha256} is bound")


def certificates_of(uow: UnitOfWork, client_id: str) -> list[BoundCertificate]:
    rows = uow.conn.execute(
        select(client_cert).where(client_cert.c.client_id == client_id).order_by(client_cert.c.added)
    ).all()
    return [BoundCertificate(r.sha256, r.client_id, r.subject, r.not_after) for r in rows]


def client_id_for_certificate(uow: UnitOfWork, sha256: str) -> str | None:
    """The client the certificate is bound to (active or not: the caller says why it refuses)."""
    found: str | None = uow.conn.execute(
        select(client_cert.c.client_id).where(client_cert.c.sha256 == sha256)
    ).scalar_one_or_none()
    return found


def check_senders(senders: Sequence[str], *, operator: bool) -> tuple[str, ...]:
    out: list[str] = []
    for s in senders:
        s = s.strip()
        if not s:
            continue
        if s == ANY_SENDER and not operator:
            raise YilianError(
                Category.INVALID,
                "only a platform-operator client (no --org) may send as any HL7 facility ('*')",
            )
        app, _, facility = s.rpartition("|")
        if not facility.strip() or (s.count("|") > 1):
            raise YilianError(Category.INVALID, f"HL7 sender {s!r}: give FACILITY or APPLICATION|FACILITY")
        if len(s) > 180:
            raise YilianError(Category.INVALID, f"HL7 sender {s[:40]!r}…: longer than 180 characters")
        out.append(f"{app.strip()}|{facility.strip()}" if app else facility.strip())
    return tuple(dict.fromkeys(out))


def set_hl7_senders(uow: UnitOfWork, client_id: str, senders: Sequence[str]) -> tuple[str, ...]:
    """Replace the HL7 senders the client may send as; returns them as stored."""
    row = uow.conn.execute(select(client.c.org_id).where(client.c.client_id == client_id)).first()
    if row is None:
        raise YilianError(Category.NOT_FOUND, f"no client {client_id}")
    checked = check_senders(senders, operator=row.org_id is None)
    uow.conn.execute(
        update(client)
        .where(client.c.client_id == client_id)
        .values(hl7_senders=json.dumps(list(checked), ensure_ascii=False) if checked else None)
    )
    return checked


def parse_senders(stored: str | None) -> tuple[str, ...]:
    if not stored:
        return ()
    value = json.loads(stored)
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _hd_names(field: str, component: str) -> set[str]:
    """The names an HD field goes by: the whole field, its namespace id, its universal id."""
    parts = field.split(component)
    return {p for p in (field, parts[0], parts[1] if len(parts) > 1 else "") if p}


def sender_allowed(senders: Sequence[str], application: str, facility: str, *, component: str = "^") -> bool:
    """Whether a message from MSH-3 ``application`` / MSH-4 ``facility`` is one the client may send."""
    if ANY_SENDER in senders:
        return True
    apps, facilities = _hd_names(application, component), _hd_names(facility, component)
    for entry in senders:
        app, _, fac = entry.rpartition("|")
        if fac in facilities and (not app or app in apps):
            return True
    return False


def not_after_text(us: int) -> str:
    return dt.datetime.fromtimestamp(us / 1_000_000, dt.UTC).strftime("%Y-%m-%d")
