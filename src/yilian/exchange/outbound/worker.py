"""The delivery worker: takes each destination's messages in sequence order and delivers them.

All state is in the database, so a worker can stop at any moment and another (or the same,
restarted) continues where it left off:

- **Claim.** A worker leases one destination at a time (``lease_owner``/``lease_until`` on its
  row, set in a short transaction; on PostgreSQL the candidate row is picked with
  ``FOR UPDATE SKIP LOCKED`` so that concurrent workers never queue behind each other). While
  the lease holds, no other worker touches that destination, so its messages go out one at a
  time, in order. A worker that dies leaves a lease that simply expires. No transaction is
  held open during an HTTP call.
- **Deliver.** At least once: a message is marked delivered only after the receiver answered
  2xx. Receivers see an ``X-Yilian-Sequence`` header to recognise a repeat.
- **Fail.** In order means a failed message holds its destination back: attempts, the error
  and the next try (exponential backoff, capped, with jitter) are written down, and the
  destination is not claimed again before that time. When the receiver is back, everything
  waiting goes out in order.
- **Subscriptions in trouble.** After ``error_after`` consecutive failures the Subscription
  resource is set to ``status = error`` with the reason in ``error`` (R4: the server keeps
  trying); the first success sets it back to ``active``.

On SQLite, writers are serialised by the database itself; several workers are still safe
(the lease is taken under ``BEGIN IMMEDIATE``) but one is all a single file needs.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from sqlalchemy import exists, or_, select, update

from yilian.db import Database, UnitOfWork
from yilian.db.uow import read, transact
from yilian.exchange.outbound import forwarding, owners, retention
from yilian.exchange.outbound.disclosure import notification_record
from yilian.exchange.outbound.outbox import now_us, wakeup
from yilian.exchange.outbound.tables import destination, message
from yilian.fhir.access import ALLOW_ALL, READ
from yilian.fhir.interactions import writes
from yilian.fhir.interactions.context import FhirContext, FhirSettings
from yilian.fhir.store import repository as repo
from yilian.kernel.errors import YilianError
from yilian.security.audit import record as audit_record

log = logging.getLogger("yilian.exchange.outbound")


@dataclass(frozen=True)
class DeliverySettings:
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 300.0
    # Consecutive failures after which a Subscription shows status=error (delivery goes on).
    error_after: int = 5
    lease_s: float = 60.0
    batch: int = 200
    poll_s: float = 1.0
    timeout_s: float = 10.0
    # Credentials per city node root URL (forwarding targets).
    forward: Mapping[str, forwarding.ForwardCredentials] = field(default_factory=dict)
    # What this node calls itself in meta.source of what it forwards.
    source: str = "urn:yilian:node"
    fhir: FhirSettings = field(default_factory=FhirSettings)
    base_url: str = "http://localhost:8080/fhir"
    # Finished messages older than this are removed, once an hour (0: never; else at least 1).
    retention_days: float = 30.0
    prune_every_s: float = 3600.0


def backoff_s(attempts: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Delay before the next try after ``attempts`` failures: doubling, capped, with jitter
    ("equal jitter": between half and all of the step, so receivers coming back are not hit by
    every sender at the same instant, and no delay collapses to nothing)."""
    step = min(cap, base * (2 ** max(0, attempts - 1)))
    r = rng or random
    return float(step / 2 + r.uniform(0, step / 2))


class Failure(Exception):
    """A delivery that did not succeed; ``str`` is what the status shows."""


@dataclass
class _Claim:
    dest_id: str
    kind: str
    endpoint: str
    payload: str | None
    headers: list[str]
    owner: str | None
    failures: int


def _notification_headers(claim: _Claim, msg: Any) -> dict[str, str]:
    headers = {"X-Yilian-Subscription": claim.dest_id, "X-Yilian-Sequence": str(msg.seq)}
    for h in claim.headers:
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()
    return headers


class DeliveryWorker:
    def __init__(
        self, db: Database, settings: DeliverySettings | None = None, *, client: httpx.Client | None = None
    ) -> None:
        self.db = db
        self.settings = settings or DeliverySettings()
        self.name = f"w-{uuid.uuid4().hex[:12]}"
        self.http = client or httpx.Client(timeout=self.settings.timeout_s)
        self._tokens: dict[str, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- running -------------------------------------------------------------------------------

    def start(self) -> None:
        """Deliver in a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self.run_forever, name="outbound-delivery", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.http.close()

    def run_forever(self) -> None:
        next_prune = time.monotonic()
        while not self._stop.is_set():
            try:
                worked = self.run_once()
                if self.settings.retention_days and time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + self.settings.prune_every_s
                    pruned = retention.prune_outbox(self.db, older_than_days=self.settings.retention_days)
                    if pruned.removed:
                        log.info("outbox: removed %d finished messages past retention", pruned.removed)
            except Exception:  # the database may be down for a moment: keep the worker alive
                log.exception("outbound delivery round failed; retrying")
                worked = 0
            if not worked:
                wakeup.wait(self.settings.poll_s)
                wakeup.clear()

    def run_once(self) -> int:
        """Claim and work through every destination that is due; returns messages delivered."""
        total = 0
        seen: set[str] = set()
        while not self._stop.is_set():
            claim = self._claim(exclude=seen)
            if claim is None:
                return total
            seen.add(claim.dest_id)
            try:
                total += self._work(claim)
            finally:
                self._release(claim.dest_id)
        return total

    # --- claiming ------------------------------------------------------------------------------

    def _claim(self, *, exclude: set[str]) -> _Claim | None:
        def work(uow: UnitOfWork) -> _Claim | None:
            now = now_us()
            d, m = destination.c, message.c
            pending = exists().where(m.dest_id == d.dest_id, m.state == "pending", m.seq.is_not(None))
            stmt = (
                select(destination)
                .where(
                    d.active.is_(True),
                    or_(d.next_try.is_(None), d.next_try <= now),
                    or_(d.lease_until.is_(None), d.lease_until < now, d.lease_owner == self.name),
                    pending,
                )
                .order_by(d.dest_id)
                .limit(1)
            )
            if exclude:
                stmt = stmt.where(d.dest_id.not_in(sorted(exclude)))
            if uow.dialect == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True, of=destination)
            row = uow.conn.execute(stmt).first()
            if row is None:
                return None
            uow.conn.execute(
                update(destination)
                .where(d.dest_id == row.dest_id)
                .values(lease_owner=self.name, lease_until=now + int(self.settings.lease_s * 1_000_000))
            )
            return _Claim(
                row.dest_id,
                row.kind,
                row.endpoint,
                row.payload,
                json.loads(row.headers) if row.headers else [],
                row.owner,
                int(row.failures or 0),
            )

        return transact(self.db, work)

    def _release(self, dest_id: str) -> None:
        def work(uow: UnitOfWork) -> None:
            uow.conn.execute(
                update(destination)
                .where(destination.c.dest_id == dest_id, destination.c.lease_owner == self.name)
                .values(lease_owner=None, lease_until=None)
            )

        try:
            transact(self.db, work)
        except Exception:  # the lease expires by itself
            log.warning("could not release the lease on %s", dest_id)

    def _still_mine(self, uow: UnitOfWork, dest_id: str) -> bool:
        now = now_us()
        done = uow.conn.execute(
            update(destination)
            .where(
                destination.c.dest_id == dest_id,
                destination.c.lease_owner == self.name,
                destination.c.lease_until >= now,
            )
            .values(lease_until=now + int(self.settings.lease_s * 1_000_000))
        )
        return bool(done.rowcount)

    # --- working one destination -----------------------------------------------------------------

    def _work(self, claim: _Claim) -> int:
        m = message.c
        with read(self.db) as uow:
            batch = uow.conn.execute(
                select(message)
                .where(m.dest_id == claim.dest_id, m.state == "pending", m.seq.is_not(None))
                .order_by(m.seq)
                .limit(self.settings.batch)
            ).all()
        delivered = 0
        started = time.monotonic()
        for i, msg in enumerate(batch):
            if self._stop.is_set() or time.monotonic() - started > self.settings.lease_s / 2:
                break  # the lease must not run out under us; the next round continues
            try:
                outcome, disclosed = self._deliver(claim, msg, suspect=i == 0 or msg.attempts > 0)
            except Failure as exc:
                self._failed(claim, msg, str(exc))
                return delivered
            if not self._succeeded(claim, msg, outcome, disclosed):
                return delivered  # lease lost: another worker has it now
            delivered += 1
            if claim.failures:
                claim.failures = 0
        return delivered

    def _succeeded(self, claim: _Claim, msg: Any, outcome: str, disclosed: tuple[str, ...] | None) -> bool:
        """Mark ``msg`` done; ``disclosed`` (the patients of what a notification carried, or None
        when nothing went to a member) is recorded in the audit log in the same transaction."""
        recovered = claim.failures >= self.settings.error_after and claim.kind == "subscription"

        def work(uow: UnitOfWork) -> bool:
            if not self._still_mine(uow, claim.dest_id):
                return False
            now = now_us()
            uow.conn.execute(
                update(message)
                .where(message.c.msg_id == msg.msg_id, message.c.state == "pending")
                .values(
                    state=outcome,
                    delivered=now,
                    attempts=message.c.attempts + 1,
                    last_error=None if outcome == "delivered" else msg.last_error,
                )
            )
            uow.conn.execute(
                update(destination)
                .where(destination.c.dest_id == claim.dest_id)
                .values(failures=0, next_try=None, last_delivered_at=now)
            )
            if recovered:
                self._set_subscription_status(uow, claim.dest_id, "active", None)
            if disclosed is not None and outcome == "delivered":
                audit_record(
                    uow,
                    notification_record(
                        claim.owner,
                        claim.dest_id,
                        msg.res_type,
                        msg.res_id,
                        msg.version,
                        disclosed,
                        payload=bool(claim.payload),
                    ),
                )
            return True

        return transact(self.db, work)

    def _failed(self, claim: _Claim, msg: Any, error: str) -> None:
        attempts = int(msg.attempts) + 1
        failures = claim.failures + 1
        delay = backoff_s(attempts, self.settings.backoff_base_s, self.settings.backoff_cap_s)
        log.info(
            "delivery to %s failed (attempt %d, next in %.1fs): %s", claim.dest_id, attempts, delay, error
        )

        def work(uow: UnitOfWork) -> None:
            if not self._still_mine(uow, claim.dest_id):
                return
            now = now_us()
            next_try = now + int(delay * 1_000_000)
            uow.conn.execute(
                update(message)
                .where(
                    message.c.msg_id == msg.msg_id, message.c.state == "pending"
                )  # not if skipped meanwhile
                .values(attempts=attempts, next_try=next_try, last_error=error[:2000])
            )
            uow.conn.execute(
                update(destination)
                .where(destination.c.dest_id == claim.dest_id)
                .values(failures=failures, last_error=error[:2000], last_error_at=now, next_try=next_try)
            )
            if claim.kind == "subscription" and failures == self.settings.error_after:
                self._set_subscription_status(uow, claim.dest_id, "error", error[:500])

        transact(self.db, work)

    def _set_subscription_status(self, uow: UnitOfWork, dest_id: str, status: str, error: str | None) -> None:
        """Show delivery trouble on the Subscription itself (R4 ``status``/``error``)."""
        sub_id = dest_id.split("/", 1)[1]
        current = repo.get_current(uow.conn, "Subscription", sub_id, for_update=True)
        if current is None or current.deleted or current.content is None:
            return
        resource = orjson.loads(current.content)
        if resource.get("status") not in ("active", "error") or resource.get("status") == status:
            return
        resource["status"] = status
        resource.pop("error", None)
        if error:
            resource["error"] = f"delivery failing: {error}"
        ctx = FhirContext(base_url=self.settings.base_url, settings=self.settings.fhir, policy=ALLOW_ALL)
        writes.store_next(uow, ctx, current, resource, method="PUT")
        writes.finish(uow, ctx)

    # --- one message ---------------------------------------------------------------------------

    def _deliver(self, claim: _Claim, msg: Any, *, suspect: bool) -> tuple[str, tuple[str, ...] | None]:
        """Send one message; returns the state it ends in (delivered, withheld) and, for a
        notification, the patients whose record it carried; or raises Failure."""
        if claim.kind == "forward":
            return self._forward(claim, msg, suspect=suspect), None
        return self._notify(claim, msg)

    def _notify(self, claim: _Claim, msg: Any) -> tuple[str, tuple[str, ...] | None]:
        virtual = self.settings.fhir.virtual_types.get(msg.res_type)
        if virtual is not None:
            return self._notify_virtual(claim, msg, virtual)
        with read(self.db) as uow:
            policy = owners.policy_of(uow, self.db, claim.owner)
            stored = repo.get_version(uow.conn, msg.res_type, msg.res_id, msg.version)
            # Access is decided again now: a consent withdrawn since the write is honoured.
            visible = (
                policy is not None
                and stored is not None
                and policy.allows(READ, msg.res_type)
                and policy.can_see(uow, msg.res_type, stored.patient_key, msg.res_id)
            )
        if not visible:
            return "withheld", None
        assert stored is not None
        headers = _notification_headers(claim, msg)
        body = b""
        if claim.payload:
            headers["Content-Type"] = "application/fhir+json"
            body = stored.content or b""
        self._send("POST", claim.endpoint, headers=headers, content=body)
        return "delivered", (stored.patient_key,) if stored.patient_key else ()

    def _notify_virtual(self, claim: _Claim, msg: Any, virtual: Any) -> tuple[str, tuple[str, ...] | None]:
        """A type another system computes (Person): sent as it is now, if the owner may see it now."""
        with read(self.db) as uow:
            policy = owners.policy_of(uow, self.db, claim.owner)
            if policy is None or not policy.allows(READ, msg.res_type):
                return "withheld", None
            ctx = FhirContext(base_url=self.settings.base_url, settings=self.settings.fhir, policy=policy)
            try:
                read_back = virtual.read(uow, ctx, msg.res_id)
            except YilianError:
                return "withheld", None  # gone, or no longer visible to the owner
        content = read_back.body or b""
        headers = _notification_headers(claim, msg)
        if claim.payload:
            headers["Content-Type"] = "application/fhir+json"
        self._send("POST", claim.endpoint, headers=headers, content=content if claim.payload else b"")
        return "delivered", tuple(sorted(read_back.patients))

    def _forward(self, claim: _Claim, msg: Any, *, suspect: bool) -> str:
        url = f"{claim.endpoint}/fhir/{msg.res_type}/{msg.res_id}"
        headers = {"X-Yilian-Sequence": str(msg.seq), **self._auth(claim.endpoint)}
        if msg.deleted:
            # Deleting what is gone already is a success with nothing done: safe to repeat.
            self._send("DELETE", url, headers=headers, ok_extra=(404, 410))
            return "delivered"
        with read(self.db) as uow:
            stored = repo.get_version(uow.conn, msg.res_type, msg.res_id, msg.version)
        if stored is None or stored.content is None:
            return "withheld"
        stamp = forwarding.source_stamp(self.settings.source, msg.res_type, msg.res_id, msg.version)
        if suspect and self._already_there(url, headers, stamp):
            return "delivered"
        resource = orjson.loads(stored.content)
        meta = dict(resource.get("meta") or {})
        meta["source"] = stamp
        meta.pop("versionId", None)
        meta.pop("lastUpdated", None)
        resource["meta"] = meta
        headers["Content-Type"] = "application/fhir+json"
        self._send("PUT", url, headers=headers, content=orjson.dumps(resource))
        return "delivered"

    def _already_there(self, url: str, headers: dict[str, str], stamp: str) -> bool:
        try:
            resp = self.http.get(url, headers=headers)
        except httpx.HTTPError:
            return False
        if resp.status_code != 200:
            return False
        try:
            meta = resp.json().get("meta") or {}
        except ValueError:
            return False
        return bool(meta.get("source") == stamp)

    def _auth(self, endpoint: str) -> dict[str, str]:
        creds = self.settings.forward.get(endpoint)
        if creds is None:
            raise Failure(f"no credentials for {endpoint}: give --forward-client-id/--forward-client-secret")
        cached = self._tokens.get(endpoint)
        if cached is not None and cached[1] > time.monotonic():
            return {"Authorization": f"Bearer {cached[0]}"}
        form = {"grant_type": "client_credentials"}
        if creds.scope:
            form["scope"] = creds.scope
        try:
            resp = self.http.post(
                f"{endpoint}/auth/token", data=form, auth=(creds.client_id, creds.client_secret)
            )
        except httpx.HTTPError as exc:
            raise Failure(f"token request to {endpoint} failed: {exc or type(exc).__name__}") from None
        if resp.status_code != 200:
            raise Failure(f"token request to {endpoint} refused: HTTP {resp.status_code} {resp.text[:200]}")
        body = resp.json()
        token = str(body["access_token"])
        lifetime = float(body.get("expires_in", 300))
        self._tokens[endpoint] = (token, time.monotonic() + max(5.0, lifetime - 30.0))
        return {"Authorization": f"Bearer {token}"}

    def _send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        content: bytes = b"",
        ok_extra: tuple[int, ...] = (),
    ) -> None:
        try:
            resp = self.http.request(method, url, headers=headers, content=content)
        except httpx.HTTPError as exc:
            raise Failure(f"{method} {url}: {type(exc).__name__}: {exc}") from None
        if 200 <= resp.status_code < 300 or resp.status_code in ok_extra:
            return
        if resp.status_code == 401:
            self._tokens.pop(url.split("/fhir/", 1)[0], None)  # expired or revoked: ask again
        raise Failure(f"{method} {url}: HTTP {resp.status_code} {resp.text[:300]}")


def deliver_all(db: Database, settings: DeliverySettings | None = None) -> int:
    """One round over everything due (``yilian exchange deliver --once``)."""
    worker = DeliveryWorker(db, settings)
    try:
        return worker.run_once()
    finally:
        worker.http.close()


__all__ = ["DeliverySettings", "DeliveryWorker", "Failure", "backoff_s", "deliver_all", "settings_from_env"]


def settings_from_env(env: Mapping[str, str] | None = None, **given: Any) -> DeliverySettings:
    """Delivery settings: ``YILIAN_DELIVERY_BACKOFF_BASE`` / ``_BACKOFF_CAP`` (seconds),
    ``YILIAN_DELIVERY_ERROR_AFTER`` (failures), ``YILIAN_DELIVERY_POLL`` (seconds),
    ``YILIAN_DELIVERY_TIMEOUT`` (seconds per HTTP request), ``YILIAN_OUTBOX_RETENTION_DAYS``
    (finished messages kept; 0 keeps them for ever); keyword arguments win."""
    import os

    env = os.environ if env is None else env
    names = {
        "backoff_base_s": ("YILIAN_DELIVERY_BACKOFF_BASE", float),
        "backoff_cap_s": ("YILIAN_DELIVERY_BACKOFF_CAP", float),
        "error_after": ("YILIAN_DELIVERY_ERROR_AFTER", int),
        "poll_s": ("YILIAN_DELIVERY_POLL", float),
        "timeout_s": ("YILIAN_DELIVERY_TIMEOUT", float),
        "retention_days": ("YILIAN_OUTBOX_RETENTION_DAYS", float),
    }
    values: dict[str, Any] = {}
    for key, (var, kind) in names.items():
        raw = env.get(var)
        if raw:
            try:
                values[key] = kind(raw)
            except ValueError:
                from yilian.kernel.errors import Category, YilianError

                raise YilianError(Category.INVALID, f"{var} must be a number, not {raw!r}") from None
    values.update(given)
    if values.get("retention_days"):
        retention.check_retention(values["retention_days"])
    return DeliverySettings(**values)
