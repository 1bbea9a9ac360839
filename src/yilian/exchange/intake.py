"""Receiving one HL7 v2 message: land it, store it in one transaction, acknowledge it.

1. The bytes are written to the inbox in a transaction of their own, first: whatever fails
   afterwards (the parser, the mapping, the database), the message is kept.
2. One unit of work then checks the message log for a resend (same sender MSH-3/MSH-4, same
   MSH-10, same content), runs the FHIR transaction Bundle the message maps to (plus a merge's
   follow-up writes), and writes the log row with the ACK: all commit together or none do.
3. A failure rolls that back and records a dead letter (again in its own transaction) with the
   reason, and the sender gets AE or AR with an ERR segment saying where the problem is.

Every message is written as the registered system client that sent it (its certificate, or the
listener's configured client in the insecure mode): the client must be active, MSH-3/MSH-4 must
be a sender it is registered for, and its scopes and institution make the access decision on
every write, as a token's would. Each message leaves one AuditEvent, in the transaction that
stores it, or with its dead letter when it fails or is refused.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import and_, insert, select, update
from sqlalchemy.exc import IntegrityError

from yilian import mpi
from yilian.db import Database, UnitOfWork
from yilian.db.uow import transact
from yilian.exchange import tables
from yilian.exchange.hl7.ack import Header, build_ack
from yilian.exchange.hl7.errors import Hl7Error
from yilian.exchange.hl7.parse import Message, parse
from yilian.exchange.hl7.to_fhir import Mapping_, Origin, to_fhir
from yilian.exchange.raw_messages import seal_raw
from yilian.fhir import FhirContext, FhirRequest, FhirSettings, dispatch
from yilian.fhir.access import CREATE, UPDATE
from yilian.fhir.interactions.writes import TOUCHED, flush
from yilian.kernel.errors import Category, YilianError
from yilian.kernel.ids import new_id
from yilian.security.audit import AuditRecord
from yilian.security.audit import record as audit_record
from yilian.security.audit.privacy import scrub
from yilian.security.client_certs import sender_allowed
from yilian.security.clients import Client, get_client, system_principal
from yilian.security.policy import policy_for

log = logging.getLogger("yilian.exchange.hl7")

ATTEMPTS = 3

_SEGMENT_BREAKS = re.compile(rb"\r\n|\n|\r")

# FHIR failures that mean the message content is wrong (AE, and a data-type or table error
# in ERR-3) rather than the platform failing (AE with 207).
_CONTENT_ERRORS = {
    Category.INVALID: "102",
    Category.UNPROCESSABLE: "102",
    Category.NOT_FOUND: "204",
    Category.MULTIPLE_MATCHES: "205",
    Category.PRECONDITION_FAILED: "205",
    Category.CONFLICT: "205",
}


@dataclass(frozen=True)
class IntakeSettings:
    """How the intake writes: the platform's FHIR settings (so the patient index and access
    grants see every write), and any assigning authorities mapped to known identifier systems."""

    fhir: FhirSettings
    base_url: str = "http://localhost:8080/fhir"
    # CX-4 namespace or universal id (or "namespace|type") -> Identifier.system
    authorities: Mapping[str, str] = field(default_factory=dict)

    def context_for(self, client: Client, db: Database) -> FhirContext:
        """The sender's access decision on every write, as its token would make it over REST."""
        return FhirContext(
            base_url=self.base_url, settings=self.fhir, policy=policy_for(system_principal(client), db)
        )


@dataclass(frozen=True)
class Outcome:
    ack: bytes
    code: str  # AA | AE | AR
    inbox_id: str
    duplicate: bool = False
    resources: tuple[str, ...] = ()
    error: Hl7Error | None = None


def _segments(raw: bytes) -> list[bytes]:
    body = raw.removeprefix(b"\xef\xbb\xbf")
    return [s for s in _SEGMENT_BREAKS.split(body) if s.strip()]


def digest(raw: bytes) -> str:
    """The content digest: segment terminators, a BOM and the message's own time stamp (MSH-7)
    do not make a message different. Many interfaces stamp MSH-7 afresh when they resend a
    message they got no ACK for; the message is the same one (same MSH-10, same content)."""
    segments = _segments(raw)
    if segments and segments[0].startswith(b"MSH") and len(segments[0]) > 3:
        fields = segments[0].split(segments[0][3:4])  # MSH-1 is the separator: MSH-n is fields[n - 1]
        if len(fields) > 6:
            fields[6] = b""
            segments[0] = segments[0][3:4].join(fields)
    return hashlib.sha256(b"\r".join(segments)).hexdigest()


def legacy_digest(raw: bytes) -> str:
    """The digest as messages stored before MSH-7 was left out were logged under (with MSH-7), so
    that a resend of one of them is still recognised."""
    return hashlib.sha256(b"\r".join(_segments(raw))).hexdigest()


def receive(
    db: Database, raw: bytes, *, settings: IntakeSettings, client_id: str, peer: str | None = None
) -> Outcome:
    """Land, store and acknowledge one message (the bytes between the MLLP frame markers) sent
    by the registered system client ``client_id``."""
    inbox_id = new_id()
    transact(
        db,
        lambda uow: uow.conn.execute(
            insert(tables.inbox).values(
                inbox_id=inbox_id,
                received=_now_us(),
                peer=peer,
                client_id=client_id,
                raw=seal_raw(db, raw),
                state="received",
            )
        ),
    )
    return process(db, inbox_id, raw, settings=settings, client_id=client_id, peer=peer)


def refuse(db: Database, raw: bytes, *, reason: str, agent: str, peer: str | None = None) -> Outcome:
    """Answer a message from a sender that is not authenticated: AR with ERR saying why, and a
    denial in the audit log. Nothing of the message is kept (it is not ours to keep)."""
    header = Header.salvage(raw)
    err = Hl7Error(f"not authorised: {reason}", code="207", reject=True, denied=True)
    ack = build_ack(header, "AR", error=err)
    rec = _audit(None, agent, header, None, err=err, peer=peer)
    transact(db, lambda uow: audit_record(uow, rec))
    log.warning("HL7 message refused from %s (%s): %s", peer, agent, reason)
    return Outcome(ack, "AR", "", error=err)


def process(
    db: Database,
    inbox_id: str,
    raw: bytes,
    *,
    settings: IntakeSettings,
    client_id: str,
    peer: str | None = None,
) -> Outcome:
    """Store a landed message (a first delivery or a replay of a dead letter) as ``client_id``."""
    header = Header.salvage(raw)
    sender = _Sender(client_id, peer, inbox_id)
    try:
        msg = parse(raw)
        header = Header.of(msg)
        if not msg.control_id:
            raise Hl7Error(
                "MSH-10 (message control id) is empty",
                code="101",
                segment="MSH",
                sequence=1,
                field=10,
                reject=True,
            )
    except Hl7Error as err:
        return _dead(db, inbox_id, raw, header, None, err, sender)
    mapping_box: list[Mapping_] = []
    for attempt in range(ATTEMPTS):
        last = attempt + 1 == ATTEMPTS
        try:
            return transact(db, lambda uow: _store(uow, db, sender, raw, msg, header, settings, mapping_box))
        except Hl7Error as err:
            return _dead(db, inbox_id, raw, header, msg, err, sender)
        except YilianError as err:
            if err.category in (Category.FORBIDDEN, Category.UNAUTHENTICATED):
                # The sender's scopes or institution refuse a write: the same every time.
                return _dead(db, inbox_id, raw, header, msg, _refused(err, client_id), sender)
            # A write can lose a race with another connection's (two new messages creating the
            # same new Patient or facility at once): a fresh transaction sees the winner's rows.
            # A message that is simply wrong fails the same way each time and is then kept.
            if not last:
                time.sleep(0.02 * (attempt + 1))
                continue
            return _dead(
                db,
                inbox_id,
                raw,
                header,
                msg,
                _from_fhir(err, mapping_box[-1] if mapping_box else None),
                sender,
            )
        except IntegrityError:
            # The same message claimed by another connection at the same moment: the next pass
            # waits for it, finds its log row and answers with that ACK.
            if not last:
                continue
            log.exception("HL7 message %s could not be stored", msg.control_id)
            return _dead(
                db,
                inbox_id,
                raw,
                header,
                msg,
                Hl7Error("the message clashed with a concurrent write; resend it", code="206"),
                sender,
            )
        except Exception as exc:  # the sender must get an answer whatever broke
            log.exception("HL7 message %s failed", msg.control_id)
            return _dead(
                db,
                inbox_id,
                raw,
                header,
                msg,
                Hl7Error(f"internal error: {type(exc).__name__}: {exc}"[:400], code="207"),
                sender,
            )
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class _Sender:
    client_id: str
    peer: str | None
    inbox_id: str


def _authorise(uow: UnitOfWork, sender: _Sender, msg: Message) -> Client:
    """The sending client, if it may send this message at all (checked per message: a client
    revoked while its connection is open is refused from its next message on)."""
    client = get_client(uow, sender.client_id)
    if client is None or not client.active:
        state = "is not registered" if client is None else "is revoked"
        raise Hl7Error(
            f"not authorised: client {sender.client_id} {state}", code="207", reject=True, denied=True
        )
    application, facility = msg.msh.raw(3), msg.msh.raw(4)
    if not sender_allowed(client.hl7_senders, application, facility, component=msg.d.component):
        allowed = ", ".join(client.hl7_senders) or "none"
        raise Hl7Error(
            f"not authorised: client {client.client_id} may not send as MSH-3 {application!r} / "
            f"MSH-4 {facility!r} (registered senders: {allowed})",
            code="103",
            segment="MSH",
            sequence=1,
            field=4,
            reject=True,
            denied=True,
        )
    return client


def _check_scopes(client: Client, mapping: Mapping_) -> None:
    """Refuse a message whose writes the client's scopes do not cover, before writing any.

    An entry keyed on a business identifier may create or update (the sender cannot know
    which), so it needs both; reference data (conditional create) needs create; a merge needs
    update of Patient. Checked up front so the answer does not depend on what is stored.
    """
    need: dict[str, set[str]] = {}
    for entry in mapping.entries:
        kind = entry["resource"]["resourceType"]
        perms = {CREATE} if entry["request"]["method"] == "POST" else {CREATE, UPDATE}
        need.setdefault(kind, set()).update(perms)
    if mapping.merges:
        need.setdefault("Patient", set()).add(UPDATE)
    missing = [
        f"{'create' if p == CREATE else 'update'} {kind}"
        for kind, perms in sorted(need.items())
        for p in sorted(perms)
        if not client.scopes.allows(p, kind)
    ]
    if missing:
        raise Hl7Error(
            f"not authorised: the scopes of client {client.client_id} ({client.scopes}) do not allow "
            + ", ".join(missing),
            code="207",
            reject=True,
            denied=True,
        )


def _refused(err: YilianError, client_id: str) -> Hl7Error:
    reason = err.message.replace("the access token", f"the scopes of client {client_id}")
    return Hl7Error(f"not authorised: {reason}"[:400], code="207", reject=True, denied=True)


def _store(
    uow: UnitOfWork,
    db: Database,
    sender: _Sender,
    raw: bytes,
    msg: Message,
    header: Header,
    settings: IntakeSettings,
    mapping_box: list[Mapping_],
) -> Outcome:
    inbox_id = sender.inbox_id
    client = _authorise(uow, sender, msg)
    key = _log_key(msg, raw)
    digests = sorted({key[3], legacy_digest(raw)})
    conn = uow.conn
    t = tables.message
    found = conn.execute(
        select(t.c.ack, t.c.ack_code, t.c.resources).where(
            and_(
                t.c.sending_application == key[0],
                t.c.sending_facility == key[1],
                t.c.control_id == key[2],
                t.c.digest.in_(digests),
            )
        )
    ).first()
    if found is not None:
        conn.execute(
            update(tables.inbox).where(tables.inbox.c.inbox_id == inbox_id).values(state="duplicate")
        )
        audit_record(uow, _audit(client, client.client_id, header, msg, peer=sender.peer, inbox_id=inbox_id))
        return Outcome(
            bytes(found.ack),
            found.ack_code,
            inbox_id,
            duplicate=True,
            resources=tuple(orjson.loads(found.resources)),
        )
    # Claim the message before writing anything: a second connection storing the same message
    # now waits on this row and then fails on its key (and answers with our ACK on its retry)
    # instead of writing the same resources alongside us.
    conn.execute(
        insert(t).values(
            sending_application=key[0],
            sending_facility=key[1],
            control_id=key[2],
            digest=key[3],
            inbox_id=inbox_id,
            message_type=f"{msg.message_code}^{msg.trigger_event}"[:24],
            version=msg.version[:16] or None,
            charset=(msg.charset or msg.codec)[:32],
            stored=_now_us(),
            ack_code="AA",
            ack=b"",
            resources="[]",
        )
    )
    mapping = to_fhir(msg, authorities=settings.authorities)
    mapping_box.append(mapping)
    _check_scopes(client, mapping)
    ctx = settings.context_for(client, db)
    _keep_links(uow, ctx, mapping)
    resp = dispatch(uow, ctx, FhirRequest("POST", "", body=mapping.bundle()))
    # Created entries say where they went (Location); updated ones have had their id stamped
    # into the request body by the FHIR core.
    responses = orjson.loads(resp.body or b"{}").get("entry", [])
    written = [
        _type_id(r.get("response", {}).get("location", ""))
        or (f"{e['resource']['resourceType']}/{e['resource']['id']}" if e["resource"].get("id") else "")
        for e, r in zip(mapping.entries, responses, strict=False)
    ]

    for survivor, old, origin in mapping.merges:
        written += merge_patients(
            uow,
            ctx,
            survivor,
            old,
            origin,
            actor=f"hl7v2:{client.client_id}:{key[0]}|{key[1]}",
            reason=f"{msg.message_code}^{msg.trigger_event} {msg.control_id}",
        )
    flush(uow)
    ack = build_ack(header, "AA")
    resources = sorted({w for w in written if w})
    conn.execute(
        update(t)
        .where(
            and_(
                t.c.sending_application == key[0],
                t.c.sending_facility == key[1],
                t.c.control_id == key[2],
                t.c.digest == key[3],
            )
        )
        .values(stored=_now_us(), ack=ack, resources=orjson.dumps(resources).decode())
    )
    conn.execute(update(tables.inbox).where(tables.inbox.c.inbox_id == inbox_id).values(state="stored"))
    dl = tables.dead_letter
    conn.execute(
        update(dl)
        .where(and_(dl.c.digest.in_(digests), dl.c.status == "open"))
        .values(status="resolved", resolved=_now_us())
    )
    audit_record(
        uow,
        _audit(
            client,
            client.client_id,
            header,
            msg,
            peer=sender.peer,
            inbox_id=inbox_id,
            patients=set(uow.state.get(TOUCHED, ())),
            resources=resources,
        ),
    )
    return Outcome(ack, "AA", inbox_id, resources=tuple(resources))


def _log_key(msg: Message, raw: bytes) -> tuple[str, str, str, str]:
    return (msg.msh.raw(3)[:180], msg.msh.raw(4)[:180], msg.control_id[:199], digest(raw))


def _type_id(location: str) -> str:
    parts = location.split("/")
    for i in range(len(parts) - 1):
        if parts[i][:1].isupper() and parts[i].isalpha():
            return f"{parts[i]}/{parts[i + 1]}"
    return ""


def _from_fhir(err: YilianError, mapping: Mapping_ | None) -> Hl7Error:
    origin = mapping.origin_of(err) if mapping is not None else None
    code = _CONTENT_ERRORS.get(err.category, "207")
    reason = err.message[:400]
    if origin is None:
        return Hl7Error(reason, code=code)
    return Hl7Error(reason, code=code, segment=origin.segment, sequence=origin.sequence, field=origin.field)


def _dead(
    db: Database,
    inbox_id: str,
    raw: bytes,
    header: Header,
    msg: Message | None,
    err: Hl7Error,
    sender: _Sender,
) -> Outcome:
    ack = build_ack(header, err.ack_code, error=err)
    dl = tables.dead_letter

    def record(uow: UnitOfWork) -> None:
        conn = uow.conn
        # The failure or refusal is an access too: its event commits with the dead letter.
        client = get_client(uow, sender.client_id)
        audit_record(
            uow, _audit(client, sender.client_id, header, msg, err=err, peer=sender.peer, inbox_id=inbox_id)
        )
        existing = conn.execute(
            select(dl.c.dead_id, dl.c.attempts).where(and_(dl.c.inbox_id == inbox_id, dl.c.status == "open"))
        ).first()
        values: dict[str, Any] = {
            "failed": _now_us(),
            "ack_code": err.ack_code,
            "error_code": err.code,
            "location": err.location[:64] or None,
            "reason": err.reason,
            "ack": ack,
        }
        if existing is not None:
            conn.execute(
                update(dl)
                .where(dl.c.dead_id == existing.dead_id)
                .values(attempts=existing.attempts + 1, **values)
            )
        else:
            conn.execute(
                insert(dl).values(
                    inbox_id=inbox_id,
                    sending_application=(msg.msh.raw(3) if msg else header.sending_application)[:180] or None,
                    sending_facility=(msg.msh.raw(4) if msg else header.sending_facility)[:180] or None,
                    control_id=(msg.control_id if msg else header.control_id)[:199] or None,
                    message_type=(f"{msg.message_code}^{msg.trigger_event}" if msg else None),
                    digest=digest(raw),
                    attempts=1,
                    status="open",
                    **values,
                )
            )
        conn.execute(update(tables.inbox).where(tables.inbox.c.inbox_id == inbox_id).values(state="failed"))

    transact(db, record)
    log.warning(
        "HL7 message %s from %s (client %s): %s %s %s",
        header.control_id,
        header.sending_facility,
        sender.client_id,
        err.ack_code,
        err.location,
        scrub(err.reason),  # a reason may quote a value: no ID or phone number in the log
    )
    return Outcome(ack, err.ack_code, inbox_id, error=err)


def _audit(
    client: Client | None,
    agent: str,
    header: Header,
    msg: Message | None,
    *,
    err: Hl7Error | None = None,
    peer: str | None = None,
    inbox_id: str | None = None,
    patients: set[str] | frozenset[str] = frozenset(),
    resources: list[str] | None = None,
) -> AuditRecord:
    """The message's AuditEvent (a DICOM "Import" of HL7 v2 data, or a denial): the sending
    client and its institution, MSH-9, MSH-10, MSH-3/MSH-4, the patients whose records it
    wrote, and the FHIR types written. Identifiers in the reason are masked by the record."""
    message_type = f"{msg.message_code}^{msg.trigger_event}" if msg else header.trigger or "?"
    control_id = (msg.control_id if msg else header.control_id)[:64]
    details = [
        ("MSH-9", message_type),
        ("MSH-10", control_id),
        ("MSH-3", (msg.msh.raw(3) if msg else header.sending_application)[:180]),
        ("MSH-4", (msg.msh.raw(4) if msg else header.sending_facility)[:180]),
    ]
    if inbox_id:
        details.append(("hl7-inbox", inbox_id))
    if err is not None:
        details.append(("ack", f"{err.ack_code} {err.code}"))
    outcome = 0 if err is None else (8 if err.code in ("206", "207") and not err.denied else 4)
    host = peer.rsplit(":", 1)[0] if peer else None
    return AuditRecord(
        action="C",
        subtype="access-denied" if err is not None and err.denied else "hl7v2-message",
        agent_kind=("operator" if client.org_id is None else "system") if client else "system",
        agent_id=agent[:128] or "unauthenticated",
        agent_name=client.name if client else None,
        outcome=outcome,
        org_id=client.org_id if client else None,
        patient_keys=tuple(sorted(patients)),
        entity=f"HL7v2 {message_type} {control_id}",
        resource_types=tuple(sorted({r.split("/")[0] for r in resources or ()})),
        details=tuple(details),
        source_ip=host[:64] if host else None,
        outcome_desc=err.reason[:500] if err is not None else None,
    )


def _now_us() -> int:
    from yilian.kernel.clock import now

    return int(now().timestamp() * 1_000_000)


# --------------------------------------------------------------------------- patients


def _search(
    uow: UnitOfWork, ctx: FhirContext, path: str, query: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    flush(uow)
    resp = dispatch(uow, ctx, FhirRequest("GET", path, query=query))
    body = orjson.loads(resp.body or b"{}")
    return [
        e["resource"] for e in body.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"
    ]


def _find_patient(uow: UnitOfWork, ctx: FhirContext, ident: dict[str, str]) -> dict[str, Any] | None:
    found = _search(uow, ctx, "Patient", [("identifier", f"{ident['system']}|{ident['value']}")])
    return found[0] if found else None


def _put(uow: UnitOfWork, ctx: FhirContext, resource: dict[str, Any]) -> str:
    dispatch(uow, ctx, FhirRequest("PUT", f"{resource['resourceType']}/{resource['id']}", body=resource))
    return f"{resource['resourceType']}/{resource['id']}"


def _keep_links(uow: UnitOfWork, ctx: FhirContext, mapping: Mapping_) -> None:
    """Keep what a message does not own when it replaces a Patient or an Encounter.

    A PID is the sender's whole view of the person, but merge links are the platform's, and
    identifiers of other systems (a health card the card system issued, an ID number another
    hospital supplied) are not the sender's to drop: those are carried over, and a merged-away
    record stays inactive. An Encounter update that leaves out the admission time, location or
    staff (an A03 often does) keeps the ones stored.
    """
    for entry in mapping.entries:
        resource = entry["resource"]
        kind = resource["resourceType"]
        if kind not in ("Patient", "Encounter") or entry["request"]["method"] != "PUT":
            continue
        key = resource["identifier"][0]
        found = _search(uow, ctx, kind, [("identifier", f"{key['system']}|{key['value']}")])
        if not found:
            continue
        current = found[0]
        mine = {i.get("system") for i in resource["identifier"]}
        resource["identifier"] += [i for i in current.get("identifier", []) if i.get("system") not in mine]
        if kind == "Patient" and current.get("link"):
            resource["link"] = current["link"]
            if any(link.get("type") == "replaced-by" for link in current["link"]):
                resource["active"] = False
        if kind == "Encounter":
            for element in ("location", "participant", "reasonCode"):
                if element not in resource and element in current:
                    resource[element] = current[element]
            start = current.get("period", {}).get("start")
            if start and "start" not in resource.get("period", {}):
                resource.setdefault("period", {})["start"] = start


def merge_patients(
    uow: UnitOfWork,
    ctx: FhirContext,
    survivor_ident: dict[str, str],
    old_ident: dict[str, str],
    origin: Origin,
    *,
    actor: str,
    reason: str,
) -> list[str]:
    """Merge the record ``old_ident`` names into the one ``survivor_ident`` names.

    The old Patient is kept (inactive, ``replaced-by`` the survivor; the survivor ``replaces``
    it) so every reference to it still resolves; what referred to it is re-pointed to the
    survivor; the patient index is told the old record is the survivor's person.
    """
    survivor = _find_patient(uow, ctx, survivor_ident)
    if survivor is None:
        raise Hl7Error(
            "the surviving patient was not stored",
            code="204",
            segment="PID",
            sequence=origin.sequence,
            field=3,
        )
    old = _find_patient(uow, ctx, old_ident)
    written: list[str] = []
    if old is None:
        # The platform never had the old record: keep its identifier on an inactive stub so a
        # later message naming it still finds who it became.
        stub: dict[str, Any] = {"resourceType": "Patient", "active": False, "identifier": [old_ident]}
        resp = dispatch(uow, ctx, FhirRequest("POST", "Patient", body=stub))
        assert resp.resource is not None
        old = orjson.loads(resp.body or b"{}")
    if old["id"] == survivor["id"]:
        return written
    sid, oid = survivor["id"], old["id"]
    old["active"] = False
    old["link"] = [lk for lk in old.get("link", []) if lk.get("type") != "replaced-by"] + [
        {"other": {"reference": f"Patient/{sid}"}, "type": "replaced-by"}
    ]
    written.append(_put(uow, ctx, _strip_meta(old)))
    links = survivor.get("link", [])
    if not any(lk.get("other", {}).get("reference") == f"Patient/{oid}" for lk in links):
        survivor["link"] = [*links, {"other": {"reference": f"Patient/{oid}"}, "type": "replaces"}]
        written.append(_put(uow, ctx, _strip_meta(survivor)))
    written += _repoint(uow, ctx, oid, sid)
    flush(uow)
    # The index links the old record to the survivor's person; a record the index has never
    # seen (an index-less deployment, or the stub above) has nothing to re-link.
    person = mpi.person_of(uow, sid)
    if person is not None and mpi.person_of(uow, oid) not in (None, person):
        mpi.link_record(uow, patient_id=oid, person_id=person, actor=actor, reason=reason)
    return written


def _repoint(uow: UnitOfWork, ctx: FhirContext, old_id: str, new_id_: str) -> list[str]:
    """Point everything in the old record's compartment at the survivor."""
    old_ref, new_ref = f"Patient/{old_id}", f"Patient/{new_id_}"
    written: list[str] = []
    for resource in _search(uow, ctx, f"Patient/{old_id}/*", [("_count", "1000")]):
        if resource.get("resourceType") == "Patient":
            continue
        if _rewrite(resource, old_ref, new_ref):
            written.append(_put(uow, ctx, _strip_meta(resource)))
    return written


def _rewrite(node: Any, old: str, new: str) -> bool:
    changed = False
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "reference" and v == old:
                node[k] = new
                changed = True
            else:
                changed = _rewrite(v, old, new) or changed
    elif isinstance(node, list):
        for item in node:
            changed = _rewrite(item, old, new) or changed
    return changed


def _strip_meta(resource: dict[str, Any]) -> dict[str, Any]:
    resource.pop("meta", None)
    return resource
