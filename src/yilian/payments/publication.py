"""Publishing the ledger's facts to the shared record as stored FHIR resources.

Every ledger change queues what it changed (:mod:`yilian.payments.publish_queue`) in its own
transaction; this module writes the FHIR resources for the queue, so that member systems read,
search, export and subscribe to them like any other resource:

- ``charge:<id>`` → a ``Claim`` and its ``ClaimResponse`` (rewritten after each refund);
- ``wallet:<patient>`` → the card wallet's ``Account`` (balance and held);
- ``day:<date>`` → one ``PaymentReconciliation`` per party of the day's clearing: each paid
  institution gets its lines, each fund administrator (``YILIAN_FUND_ADMINISTRATORS``) the lines
  its funds pay. It is written *as that party* and PaymentReconciliation is an owned type, so only
  the party and the platform operator can see it.

Why asynchronous: a charge is what a patient waits for at the desk; three FHIR writes (each
validated, indexed, told to subscriptions) would more than double its time. The queue row is in
the charge's transaction, so nothing acknowledged is left unpublished, only published a moment
later.

Safety: each subject is published in its own transaction, which also deletes the queue rows it
took, so a crash publishes it again at worst, and a republication that changes nothing writes
no new version (the content is compared first). Resources are found by their platform
identifier; a new one is a conditional create (backed by the unique constraint), an update names
the version it read (``If-Match``), so two publishers can never both write one. On PostgreSQL a
publisher skips a subject another holds (an advisory lock). A subject that fails is kept with
its error and tried again later (backoff), without holding up the others. Every write is
audited, as the publisher.

A reference to a resource the shared record does not hold (an encounter id a hospital never
sent) is written as text, not as a reference: the ledger is the fact, and referential integrity
would otherwise refuse it for ever.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import delete, func, select, text, update

from yilian.db import Database, UnitOfWork
from yilian.db.uow import read, transact
from yilian.fhir import FhirContext, FhirRequest, FhirSettings, dispatch
from yilian.fhir.store import repository as repo
from yilian.kernel import clock
from yilian.kernel.errors import Category, YilianError
from yilian.payments import fhir_views as views
from yilian.payments import tables as t
from yilian.payments.administrators import fund_administrators
from yilian.payments.model import to_us
from yilian.payments.payouts import payouts_of
from yilian.payments.publish_queue import CHARGE, DAY, WALLET
from yilian.security.audit import AuditRecord, record
from yilian.security.policy import policy_for
from yilian.security.principal import SYSTEM, Principal
from yilian.security.scopes import parse_scopes

log = logging.getLogger("yilian.payments.publication")

PUBLISHER = "payments-publisher"  # the agent every publication is written and audited as
_SCOPES = parse_scopes(
    "system/Claim.crus system/ClaimResponse.crus system/Account.crus system/PaymentReconciliation.crus"
)
_LOCAL_REFERENCE = re.compile(r"^([A-Z][A-Za-z]{1,63})/([A-Za-z0-9\-.]{1,64})$")
_LOCK_CLASS = 7426  # advisory lock namespace of the publisher (PostgreSQL)
BACKOFF_CAP_S = 300.0


@dataclass(frozen=True)
class PublishResult:
    subjects: int  # subjects taken from the queue
    written: int  # resources created or updated
    unchanged: int  # resources already as the ledger says
    failed: int  # subjects kept for a later try


@dataclass(frozen=True)
class Waiting:
    subject: str
    queued: int  # queue rows (changes) for it
    attempts: int
    last_error: str | None
    not_before_us: int | None


@dataclass(frozen=True)
class QueueStatus:
    pending: int  # queue rows
    subjects: int
    failing: list[Waiting]  # subjects with an error, most attempts first
    oldest_us: int | None = None  # when the oldest waiting change was made: the views' lag


def _principal(org: str | None) -> Principal:
    return Principal(kind=SYSTEM, subject=PUBLISHER, scopes=_SCOPES, org_id=org, client_id=PUBLISHER)


class _Publisher:
    """One subject's publication in one unit of work."""

    def __init__(self, db: Database, uow: UnitOfWork, settings: FhirSettings, base_url: str) -> None:
        self.db, self.uow, self.settings, self.base_url = db, uow, settings, base_url
        self.written = 0
        self.unchanged = 0

    def ctx(self, org: str | None = None) -> FhirContext:
        return FhirContext(
            base_url=self.base_url, settings=self.settings, policy=policy_for(_principal(org), self.db)
        )

    # --- what a subject becomes ----------------------------------------------------------------

    def publish(self, subject: str) -> None:
        if subject.startswith(CHARGE):
            self._charge(subject.removeprefix(CHARGE))
        elif subject.startswith(WALLET):
            self._wallet(subject)
        elif subject.startswith(DAY):
            self._day(subject.removeprefix(DAY))
        else:
            raise YilianError(Category.INVALID, f"unknown publication subject {subject!r}")

    def _charge(self, charge_id: str) -> None:
        row = self.uow.conn.execute(select(t.charge).where(t.charge.c.charge_id == charge_id)).first()
        if row is None:
            return  # queued by hand or by an upgrade for a charge that is not in the ledger
        ctx = self.ctx()
        claim_id = self.upsert(ctx, views.claim(row), views.CHARGE_SID, charge_id, row.patient_id)
        self.upsert(ctx, views.claim_response(row, claim_id), views.CHARGE_SID, charge_id, row.patient_id)

    def _wallet(self, account_id: str) -> None:
        a = t.account
        row = self.uow.conn.execute(
            select(a.c.owner, a.c.balance, a.c.held).where(a.c.account_id == account_id)
        ).first()
        if row is None:
            return
        body = views.account(row.owner, int(row.balance), int(row.held))
        self.upsert(self.ctx(), body, views.WALLET_SID, row.owner, row.owner)

    def _day(self, business_date: str) -> None:
        d = t.day
        row = self.uow.conn.execute(select(d).where(d.c.business_date == business_date)).first()
        if row is None or row.status != "closed":
            return
        lines: list[dict[str, Any]] = orjson.loads(row.report)["lines"]
        paid = payouts_of(self.uow, business_date)
        for line in lines:
            line["payout"] = paid.get(int(line["line_id"]))
        administrators = fund_administrators()
        parties: dict[tuple[str, bool], list[dict[str, Any]]] = {}
        for line in lines:
            parties.setdefault((line["payee"], False), []).append(line)
            admin = administrators.get(line["payer"])
            if admin is not None:
                parties.setdefault((admin, True), []).append(line)
        for (party, administers), mine in parties.items():
            body = views.reconciliation(row, party, mine, administers=administers)
            key = views.settlement_key(business_date, party, administers)
            self.upsert(self.ctx(party), body, views.SETTLEMENT_SID, key, None)

    # --- writing one resource ------------------------------------------------------------------

    def upsert(
        self, ctx: FhirContext, built: dict[str, Any], system: str, value: str, patient: str | None
    ) -> str:
        """Write ``built`` as the resource carrying identifier ``system|value`` (created, updated,
        or left alone when already the same); its id."""
        body = self._with_known_references(orjson.loads(orjson.dumps(built)))
        rtype = body["resourceType"]
        token = f"{system}|{_escape(value)}"
        # Create first: a conditional create is one search and one insert when the resource is
        # new (the usual case: a charge), and when it is not, it answers with the resource as
        # stored, which is all an update needs to compare and name the version.
        created = dispatch(
            self.uow,
            ctx,
            FhirRequest("POST", rtype, headers={"if-none-exist": f"identifier={token}"}, body=dict(body)),
        )
        written = _json(created)
        action = "C"
        if created.status != 201:
            current = written
            if {k: v for k, v in current.items() if k not in ("id", "meta", "text")} == body:
                self.unchanged += 1
                return str(current["id"])
            body["id"] = current["id"]
            version = current.get("meta", {}).get("versionId")
            headers = {"if-match": f'W/"{version}"'} if version else {}
            written = _json(
                dispatch(
                    self.uow, ctx, FhirRequest("PUT", f"{rtype}/{current['id']}", headers=headers, body=body)
                )
            )
            action = "U"
        resource_id = str(written["id"])
        record(
            self.uow,
            AuditRecord(
                action=action,
                subtype="create" if action == "C" else "update",
                agent_kind="system",
                agent_id=PUBLISHER,
                agent_name="支付发布 payments publisher",
                org_id=getattr(ctx.policy, "author_org", None),
                patient_keys=(patient,) if patient else (),
                entity=f"{rtype}/{resource_id}",
                resource_types=(rtype,),
            ),
        )
        self.written += 1
        return resource_id

    def _with_known_references(self, body: dict[str, Any]) -> dict[str, Any]:
        refs = list(_references(body))
        keys = {id(r): _local(r["reference"]) for r in refs}
        known = repo.existing(self.uow.conn, {k for k in keys.values() if k is not None})
        for r in refs:
            if keys[id(r)] not in known:
                r["display"] = f"{r.pop('reference')} (不在共享档案中 not in the shared record)"
        return body


def _references(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def _local(reference: str) -> tuple[str, str] | None:
    m = _LOCAL_REFERENCE.match(reference)
    return (m.group(1), m.group(2)) if m else None


def _escape(value: str) -> str:
    """A token search value's reserved characters escaped (FHIR search: ``\\`` ``|`` ``,`` ``$``)."""
    return re.sub(r"([\\|,$])", r"\\\1", value)


def _json(response: Any) -> dict[str, Any]:
    return dict(orjson.loads(response.body or b"{}"))


# --- the queue ---------------------------------------------------------------------------------------


def _backoff_s(attempts: int) -> float:
    return float(min(BACKOFF_CAP_S, 2.0 ** max(0, attempts - 1)))


def _due(db: Database, limit: int, now: int) -> list[tuple[str, list[int]]]:
    """Subjects waiting and due, in the order they were first queued, with the rows taken."""
    q = t.publication
    with read(db) as uow:
        rows = uow.conn.execute(
            select(q.c.seq, q.c.subject)
            .where((q.c.not_before.is_(None)) | (q.c.not_before <= now))
            .order_by(q.c.seq)
            .limit(limit)
        ).all()
    subjects: dict[str, list[int]] = {}
    for r in rows:
        subjects.setdefault(r.subject, []).append(int(r.seq))
    return list(subjects.items())


def _take(uow: UnitOfWork, subject: str, seqs: list[int]) -> list[int]:
    """The rows still there (another publisher may have just done them), deleted with the
    publication; on PostgreSQL only if no other publisher holds the subject."""
    conn = uow.conn
    if conn.dialect.name == "postgresql":
        got = conn.execute(
            text("SELECT pg_try_advisory_xact_lock(:c, hashtext(:s))"), {"c": _LOCK_CLASS, "s": subject}
        ).scalar_one()
        if not got:
            return []
    q = t.publication
    present = [int(s) for s in conn.execute(select(q.c.seq).where(q.c.seq.in_(seqs))).scalars()]
    if present:
        conn.execute(delete(q).where(q.c.seq.in_(present)))
    return present


GROUP = 8  # subjects per transaction: fewer commits, while a SQLite writer waits no more than a moment


def publish_pending(
    db: Database,
    settings: FhirSettings,
    *,
    base_url: str = "http://localhost:8080/fhir",
    limit: int = 500,
) -> PublishResult:
    """Publish up to ``limit`` queued changes, each subject once.

    Subjects go in small groups, one transaction each; a group that fails is tried again one
    subject per transaction, so only the subject at fault is kept back (with its error)."""
    now = to_us(clock.now())
    due = _due(db, limit, now)
    written = unchanged = failed = 0

    def run(uow: UnitOfWork, group: list[tuple[str, list[int]]]) -> tuple[int, int]:
        publisher = _Publisher(db, uow, settings, base_url)
        for subject, seqs in group:
            if _take(uow, subject, seqs):
                publisher.publish(subject)
        return publisher.written, publisher.unchanged

    for start in range(0, len(due), GROUP):
        group = due[start : start + GROUP]
        try:
            w, u = transact(db, lambda uow, group=group: run(uow, group))  # type: ignore[misc]
        except Exception as exc:
            if len(group) == 1:
                _record_failure(db, group[0], exc)
                failed += 1
                continue
            w = u = 0
            for item in group:
                try:
                    w1, u1 = transact(db, lambda uow, item=item: run(uow, [item]))  # type: ignore[misc]
                except Exception as one:
                    _record_failure(db, item, one)
                    failed += 1
                    continue
                w, u = w + w1, u + u1
        written += w
        unchanged += u
    return PublishResult(len(due), written, unchanged, failed)


def _record_failure(db: Database, item: tuple[str, list[int]], exc: Exception) -> None:
    subject, seqs = item
    if isinstance(exc, YilianError):
        reason = str(exc)
    else:
        reason = f"{type(exc).__name__}: {exc}"
        log.error("publication of %s failed", subject, exc_info=exc)
    _failed(db, seqs, reason)


def _failed(db: Database, seqs: list[int], reason: str) -> None:
    q = t.publication

    def mark(uow: UnitOfWork) -> None:
        attempts = uow.conn.execute(select(func.max(q.c.attempts)).where(q.c.seq.in_(seqs))).scalar() or 0
        wait = _backoff_s(int(attempts) + 1)
        uow.conn.execute(
            update(q)
            .where(q.c.seq.in_(seqs))
            .values(
                attempts=q.c.attempts + 1,
                last_error=reason[:1000],
                not_before=to_us(clock.now()) + int(wait * 1_000_000),
            )
        )

    transact(db, mark)


def retry_now(db: Database) -> int:
    """Make every failed subject due at once (after a fix); how many queue rows."""

    def run(uow: UnitOfWork) -> int:
        q = t.publication
        return int(
            uow.conn.execute(update(q).where(q.c.not_before.is_not(None)).values(not_before=None)).rowcount
        )

    return transact(db, run)


def queue_status(db: Database, *, failing_limit: int = 50) -> QueueStatus:
    q = t.publication
    with read(db) as uow:
        pending, subjects, oldest = uow.conn.execute(
            select(func.count(), func.count(func.distinct(q.c.subject)), func.min(q.c.queued)).select_from(q)
        ).one()
        rows = uow.conn.execute(
            select(
                q.c.subject,
                func.count().label("queued"),
                func.max(q.c.attempts).label("attempts"),
                func.max(q.c.last_error).label("last_error"),
                func.max(q.c.not_before).label("not_before"),
            )
            .where(q.c.attempts > 0)
            .group_by(q.c.subject)
            .order_by(func.max(q.c.attempts).desc(), q.c.subject)
            .limit(failing_limit)
        ).all()
    failing = [Waiting(r.subject, int(r.queued), int(r.attempts), r.last_error, r.not_before) for r in rows]
    return QueueStatus(int(pending), int(subjects), failing, int(oldest) if oldest is not None else None)


class PublicationWorker:
    """Publishes in a daemon thread until :meth:`stop`: drains the queue, then polls it.

    Its state is the queue, in the database: stopping (or a crash) loses nothing."""

    def __init__(
        self,
        db: Database,
        settings: FhirSettings,
        *,
        base_url: str = "http://localhost:8080/fhir",
        poll_s: float = 1.0,
        batch: int = 200,
    ) -> None:
        self.db, self.settings, self.base_url = db, settings, base_url
        self.poll_s, self.batch = poll_s, batch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_forever, name="payments-publication", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_forever(self) -> None:
        while not self._stop.is_set():
            try:
                done = publish_pending(self.db, self.settings, base_url=self.base_url, limit=self.batch)
            except Exception:
                log.exception("payments publication round failed")
                done = PublishResult(0, 0, 0, 0)
            if done.subjects - done.failed < 1:
                self._stop.wait(self.poll_s)
