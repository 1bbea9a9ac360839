"""``yilian client …`` and ``yilian user …``: who may call the platform, and the demo logins.

Every change records an AuditEvent as the operator in its own transaction (``client-add``,
``client-bind-cert``, ``client-unbind-cert``, ``client-hl7-senders``, ``client-revoke``,
``user-add``, ``user-revoke``, ``user-unlock``); secrets, passwords and TOTP seeds are never in
it. ``user list`` shows who may sign in (and residents' patients): it is recorded too
(``user-list``, action R, the residents' patients named), committed before anything is printed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from rich.table import Table

from yilian.cli.common import console, operator_record
from yilian.db import Database, UnitOfWork
from yilian.db.uow import transact
from yilian.fhir.interactions.context import FhirContext
from yilian.fhir.interactions.search import find
from yilian.kernel.errors import Category, YilianError
from yilian.kernel.naming import INSTITUTION_LEVEL
from yilian.security.audit import record
from yilian.security.client_certs import (
    BoundCertificate,
    bind_certificate,
    certificates_of,
    not_after_text,
    read_certificate,
    set_hl7_senders,
    unbind_certificate,
)
from yilian.security.clients import Client, list_clients, register_client, revoke_client
from yilian.security.oauth import public_jwks
from yilian.security.people import User, add_user, list_users, revoke_user, totp_secret_of, unlock_user


def add_client(
    db: Database,
    *,
    name: str,
    org: str | None,
    scopes: str,
    jwks_file: Path | None,
    redirect_uris: list[str],
    public: bool,
    cert_file: Path | None = None,
    hl7_senders: list[str] | None = None,
) -> dict[str, Any]:
    cert = read_certificate(_read(cert_file)) if cert_file is not None else None
    jwks = None
    if jwks_file is not None:
        try:
            jwks = public_jwks(jwks_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise YilianError(Category.INVALID, f"cannot read {jwks_file}: {exc.strerror}") from None

    def work(uow: UnitOfWork) -> dict[str, Any]:
        client, secret = register_client(
            uow,
            name=name,
            org_id=org,
            scopes=scopes,
            jwks=jwks,
            redirect_uris=tuple(redirect_uris),
            with_secret=not public and jwks is None,
            hl7_senders=tuple(hl7_senders or ()),
        )
        out: dict[str, Any] = {
            "client_id": client.client_id,
            "name": client.name,
            "org": client.org_id,
            "scope": str(client.scopes),
        }
        if client.hl7_senders:
            out["hl7_senders"] = list(client.hl7_senders)
        if cert is not None:
            out["certificate"] = _cert_json(bind_certificate(uow, client.client_id, cert))
        if secret:
            out["client_secret"] = secret
        record(
            uow,
            operator_record(
                action="C",
                subtype="client-add",
                entity=f"client/{client.client_id}",
                outcome_desc=f"registered client {client.client_id} ({client.name}) for "
                f"{_for_whom(client.org_id)}, scopes {client.scopes}; "
                + ("a client secret issued" if secret else "no client secret")
                + (
                    f"; certificate SHA-256 {_fingerprint(out['certificate']['sha256'])} bound"
                    if cert
                    else ""
                )
                + (f"; HL7 v2 senders {', '.join(client.hl7_senders)}" if client.hl7_senders else ""),
            ),
        )
        return out

    return transact(db, work)


def _for_whom(org_id: str | None) -> str:
    return f"Organization/{org_id}" if org_id else "the platform operator"


def _fingerprint(sha256: str) -> str:
    """AA:BB:… — also keeps a run of digits in the hex from being masked as an ID number."""
    hexa = sha256.replace(":", "").strip().upper()
    return ":".join(hexa[i : i + 2] for i in range(0, len(hexa), 2))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise YilianError(Category.INVALID, f"cannot read {path}: {exc.strerror}") from None


def _cert_json(bound: BoundCertificate) -> dict[str, Any]:
    return {"sha256": bound.sha256, "subject": bound.subject, "not_after": not_after_text(bound.not_after)}


def bind_cert(db: Database, client_id: str, cert_file: Path) -> dict[str, Any]:
    cert = read_certificate(_read(cert_file))

    def work(uow: UnitOfWork) -> BoundCertificate:
        bound = bind_certificate(uow, client_id, cert)
        record(
            uow,
            operator_record(
                action="C",
                subtype="client-bind-cert",
                entity=f"client/{client_id}",
                outcome_desc=f"bound certificate SHA-256 {_fingerprint(bound.sha256)} ({bound.subject}, "
                f"valid until {not_after_text(bound.not_after)}) to client {client_id}",
            ),
        )
        return bound

    return {"client_id": client_id, "certificate": _cert_json(transact(db, work))}


def unbind_cert(db: Database, sha256: str) -> None:
    def work(uow: UnitOfWork) -> None:
        unbind_certificate(uow, sha256.replace(":", "").strip())
        record(
            uow,
            operator_record(
                action="D",
                subtype="client-unbind-cert",
                entity="client certificates",
                outcome_desc=f"unbound certificate SHA-256 {_fingerprint(sha256)}",
            ),
        )

    transact(db, work)


def hl7_senders(db: Database, client_id: str, senders: list[str]) -> tuple[str, ...]:
    def work(uow: UnitOfWork) -> tuple[str, ...]:
        stored = set_hl7_senders(uow, client_id, senders)
        record(
            uow,
            operator_record(
                action="U",
                subtype="client-hl7-senders",
                entity=f"client/{client_id}",
                outcome_desc=f"client {client_id} may send HL7 v2 as: {', '.join(stored) or 'nobody'}",
            ),
        )
        return stored

    return transact(db, work)


def print_clients(db: Database) -> None:
    def load(uow: UnitOfWork) -> list[tuple[Client, list[BoundCertificate]]]:
        return [(c, certificates_of(uow, c.client_id)) for c in list_clients(uow)]

    clients = transact(db, load, write=False)
    table = Table(title="已注册的系统客户端 Registered clients")
    for col in ("client_id", "name", "institution", "scopes", "authentication", "HL7 senders", "active"):
        table.add_column(col, overflow="fold")
    for c, certs in clients:
        how = "private_key_jwt" if c.jwks else ("client_secret" if c.has_secret else "public (PKCE)")
        if certs:
            how += "".join(f"\nTLS cert SHA-256 {b.sha256} (to {not_after_text(b.not_after)})" for b in certs)
        table.add_row(
            c.client_id,
            c.name,
            c.org_id or "平台运营 operator",
            str(c.scopes),
            how,
            ", ".join(c.hl7_senders) or "—",
            "yes" if c.active else "[red]revoked",
        )
    console.print(table)


def revoke(db: Database, client_id: str) -> None:
    def work(uow: UnitOfWork) -> None:
        revoke_client(uow, client_id)
        record(
            uow,
            operator_record(
                action="U",
                subtype="client-revoke",
                entity=f"client/{client_id}",
                outcome_desc=f"revoked client {client_id}: no new tokens, its tokens ended",
            ),
        )

    transact(db, work)


def add_person(
    db: Database,
    *,
    username: str,
    kind: str,
    password: str,
    org: str | None,
    patient: str | None,
    name: str | None,
) -> dict[str, Any]:
    def work(uow: UnitOfWork) -> dict[str, Any]:
        user, otp_uri = add_user(
            uow,
            username=username,
            kind=kind,
            password=password,
            org_id=org,
            patient_id=patient,
            display_name=name,
        )
        out: dict[str, Any] = {"user_id": user.user_id, "username": user.username, "kind": user.kind}
        if otp_uri:
            out["totp_uri"] = otp_uri
        whose = f"Patient/{patient}" if patient else _for_whom(org)
        record(
            uow,
            operator_record(
                action="C",
                subtype="user-add",
                entity=f"user/{user.user_id}",
                patient_keys=(patient,) if patient else (),
                outcome_desc=f"added {user.kind} user {user.username} ({user.user_id}) of {whose}"
                + ("; a TOTP secret issued" if otp_uri else ""),
            ),
        )
        return out

    return transact(db, work)


def _whose(user: User) -> str:
    if user.patient_id:
        return f"Patient/{user.patient_id}"
    return f"Organization/{user.org_id}" if user.org_id else "平台运营 operator"


def print_users(db: Database) -> None:
    def load(uow: UnitOfWork) -> list[User]:
        users = list_users(uow)
        residents = sorted({u.patient_id for u in users if u.patient_id})
        record(
            uow,
            operator_record(
                action="R",
                subtype="user-list",
                entity="users",
                patient_keys=residents,
                outcome_desc=f"{len(users)} users listed at the console",
            ),
        )
        return users

    users = transact(db, load)  # recorded before anything is shown
    table = Table(title="登录用户 People who sign in")
    for col in ("username", "user_id", "kind", "of", "scopes", "second factor", "state"):
        table.add_column(col, overflow="fold")
    for u in users:
        state = "active" if u.active else "[red]revoked"
        if u.active and u.locked_until:
            state = f"[yellow]locked until {_instant(u.locked_until)}"
        table.add_row(
            u.username + (f"\n{u.display_name}" if u.display_name else ""),
            u.user_id,
            u.kind,
            _whose(u),
            u.scopes,
            "TOTP" if u.has_totp else "—",
            state,
        )
    console.print(table)


def _instant(us: int) -> str:
    from yilian.fhir.search.values import us_to_instant

    return us_to_instant(us)


def _change_person(
    db: Database, username: str, change: Callable[[UnitOfWork, str], User], subtype: str, says: str
) -> User:
    """``change`` the account and record it (``says``: what was done, after the user's name)."""

    def work(uow: UnitOfWork) -> User:
        user = change(uow, username)
        record(
            uow,
            operator_record(
                action="U",
                subtype=subtype,
                entity=f"user/{user.user_id}",
                patient_keys=(user.patient_id,) if user.patient_id else (),
                outcome_desc=says.format(user=f"user {user.username} ({user.user_id})"),
            ),
        )
        return user

    return transact(db, work)


def revoke_person(db: Database, username: str) -> User:
    return _change_person(
        db,
        username,
        revoke_user,
        "user-revoke",
        "revoked {user}: no new sign-in, its sessions and tokens ended",
    )


def unlock_person(db: Database, username: str) -> User:
    return _change_person(db, username, unlock_user, "user-unlock", "cleared the lockout of {user}")


# --- the demo logins -------------------------------------------------------------------------

DEMO_OPERATOR = ("demo-operator", "demo-operator-secret-2026")
DEMO_HOSPITAL = ("demo-hospital-his", "demo-hospital-secret-2026")
DEMO_STAFF = ("demo.doctor", "demo-doctor-2026")
DEMO_RESIDENT = ("demo.resident", "demo-resident-2026")
DEMO_APP = "demo-portal-app"


def ensure_demo_logins(db: Database) -> dict[str, Any]:
    """Create the demo clients and people once (fixed credentials: the data is synthetic)."""

    def work(uow: UnitOfWork) -> dict[str, Any]:
        from yilian.security.clients import get_client

        hospital = _tertiary_hospital(uow)
        patient = _a_demo_parent(uow)
        info: dict[str, Any] = {"hospital": hospital, "patient": patient}
        if get_client(uow, DEMO_OPERATOR[0]) is None:
            register_client(
                uow,
                name="卫健委平台运营 (demo)",
                org_id=None,
                scopes="system/*.cruds",
                client_id=DEMO_OPERATOR[0],
                secret=DEMO_OPERATOR[1],
            )
        if hospital and get_client(uow, DEMO_HOSPITAL[0]) is None:
            register_client(
                uow,
                name="三级医院 HIS (demo)",
                org_id=hospital,
                scopes="system/*.cruds",
                client_id=DEMO_HOSPITAL[0],
                secret=DEMO_HOSPITAL[1],
            )
        if get_client(uow, DEMO_APP) is None:
            register_client(
                uow,
                name="掌上医院 (demo)",
                org_id=None,
                scopes="patient/*.rs user/*.cruds",
                client_id=DEMO_APP,
                redirect_uris=("http://127.0.0.1:8080/callback",),
                with_secret=False,
            )
        from sqlalchemy import select

        from yilian.security.tables import user_account

        def exists(name: str) -> Any:
            return uow.conn.execute(
                select(user_account.c.user_id).where(user_account.c.username == name)
            ).first()

        if hospital and exists(DEMO_STAFF[0]) is None:
            add_user(
                uow,
                username=DEMO_STAFF[0],
                kind="staff",
                password=DEMO_STAFF[1],
                org_id=hospital,
                display_name="示范医生",
            )
        if patient and exists(DEMO_RESIDENT[0]) is None:
            add_user(
                uow,
                username=DEMO_RESIDENT[0],
                kind="resident",
                password=DEMO_RESIDENT[1],
                patient_id=patient,
                display_name="示范居民",
            )
        # The demo's staff secret is synthetic and printed on purpose; it is sealed at rest all the same.
        info["totp_secret"] = totp_secret_of(uow, DEMO_STAFF[0])
        return info

    return transact(db, work)


def _tertiary_hospital(uow: UnitOfWork) -> str | None:
    ctx = FhirContext()
    found = find(uow, ctx, "Organization", f"type={INSTITUTION_LEVEL}|3", limit=5)
    return found[0].res_id if found else None


def _a_demo_parent(uow: UnitOfWork) -> str | None:
    """A resident who is also recorded as a child's parent, so the demo shows both records."""
    from yilian.security.people import children_of

    ctx = FhirContext()
    for rp in find(uow, ctx, "RelatedPerson", "_count=50", limit=50):
        if rp.content is None:
            continue
        ids = [
            i
            for i in orjson.loads(rp.content).get("identifier") or []
            if i.get("system") == "urn:oid:2.16.156.10011.1.3"
        ]
        for ident in ids:
            for p in find(
                uow, ctx, "Patient", f"identifier=urn:oid:2.16.156.10011.1.3|{ident['value']}", limit=2
            ):
                if children_of(uow, p.res_id):
                    return p.res_id
    patients = find(uow, ctx, "Patient", "_count=1", limit=1)
    return patients[0].res_id if patients else None


def print_demo_logins(info: dict[str, Any], base: str) -> None:
    from yilian.demo import DEMO_AS_OF

    table = Table(title="示范登录 Demo logins (synthetic data only)")
    for col in ("who", "login", "secret / password", "what they see"):
        # fold, never truncate: a secret cut short with "…" is no use to anyone
        table.add_column(col, overflow="fold")
    table.add_row(
        "平台运营 operator (system client)",
        DEMO_OPERATOR[0],
        DEMO_OPERATOR[1],
        "the whole region (every access audited)",
    )
    if info.get("hospital"):
        table.add_row(
            "三级医院 HIS (system client)",
            DEMO_HOSPITAL[0],
            DEMO_HOSPITAL[1],
            f"patients Organization/{info['hospital']} has a reason to see",
        )
        table.add_row(
            "医生 doctor (portal)",
            DEMO_STAFF[0],
            DEMO_STAFF[1],
            f"+ one-time code from TOTP secret {info.get('totp_secret')}",
        )
    if info.get("patient"):
        table.add_row(
            "居民 resident (portal)",
            DEMO_RESIDENT[0],
            DEMO_RESIDENT[1],
            f"own record (Patient/{info['patient']}) and children's; card wallet (我的一卡通) at /portal/wallet",
        )
    console.print(table)
    console.print(
        "获取访问令牌 Get an access token:\n"
        f"  curl -s -u {DEMO_OPERATOR[0]}:{DEMO_OPERATOR[1]} -d grant_type=client_credentials {base}/auth/token\n"
        f"  curl -H 'Authorization: Bearer <access_token>' {base}/fhir/Patient?_count=5\n"
        "一卡通 The demo day's card payments and their clearing (same token):\n"
        f"  curl -H 'Authorization: Bearer <access_token>' {base}/api/settlement/days/{DEMO_AS_OF}\n"
        f"  curl -H 'Authorization: Bearer <access_token>' {base}/fhir/ClaimResponse?_count=5\n"
        f"Sign in to the portal: {base}/auth/login (a resident's card wallet: {base}/portal/wallet)",
        soft_wrap=True,
    )


def clients_json(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2)
