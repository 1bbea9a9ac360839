"""FHIR R4 Subscriptions with rest-hook channels: kept in step with the Subscription resources,
and matched against every write with the search engine itself.

A Subscription is stored through the normal FHIR API. As it is written (in its transaction)
its criteria are parsed and compiled by the search engine — a criteria the engine refuses is
refused with the write, with the engine's OperationOutcome — and its destination row is
created or updated. A new or re-submitted subscription (``status = requested``) is activated
in the same transaction: the server writes its next version with ``status = active``.

Matching is exact by construction: when a resource is written, each active subscription on its
type runs its own criteria with ``_id=<the resource>`` added, in the writing transaction, under
its owner's access policy. What the search would return is what is notified — no second
matcher to drift from the first, and nothing the owner could not have found themselves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from sqlalchemy import select, update

from yilian.db import UnitOfWork
from yilian.exchange.outbound import owners
from yilian.exchange.outbound.outbox import ensure_sequence, now_us
from yilian.exchange.outbound.tables import destination, message
from yilian.fhir.access import AccessPolicy
from yilian.fhir.interactions import search as fhir_search
from yilian.fhir.interactions import writes
from yilian.fhir.interactions.context import FhirContext
from yilian.fhir.model import model
from yilian.fhir.search import params as sp
from yilian.fhir.store import repository as repo
from yilian.kernel.errors import Category, Issue, YilianError

RESOURCE_PAYLOADS = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
# Parameters that shape a result page rather than select resources: meaningless in criteria.
_NOT_CRITERIA = frozenset({"_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total"})


@dataclass(frozen=True)
class Channel:
    criteria: str
    res_type: str
    pairs: list[tuple[str, str]]
    endpoint: str
    payload: str | None  # None: an empty notification
    headers: list[str]


def dest_id(subscription_id: str) -> str:
    return f"Subscription/{subscription_id}"


def _refuse(message_: str, path: str) -> YilianError:
    return YilianError(Category.UNPROCESSABLE, message_, issues=[Issue(message_, (path,), code="value")])


def parse_criteria(criteria: str) -> tuple[str, list[tuple[str, str]]]:
    res_type, _, query = criteria.strip().partition("?")
    if not res_type or not model().is_resource_type(res_type):
        raise _refuse(
            f"Subscription.criteria must start with a resource type, e.g. Observation?code=…; got {criteria!r}",
            "Subscription.criteria",
        )
    pairs = parse_qsl(query, keep_blank_values=True)
    for name, _value in pairs:
        if name in _NOT_CRITERIA or name.startswith(("_include", "_revinclude")):
            raise _refuse(
                f"Subscription.criteria cannot use {name}: criteria select resources, they do not page them",
                "Subscription.criteria",
            )
    return res_type, pairs


def channel_of(resource: dict[str, Any]) -> Channel:
    """The subscription's channel and criteria, or a refusal saying which element is wrong."""
    criteria = resource.get("criteria")
    if not isinstance(criteria, str) or not criteria.strip():
        raise _refuse(
            "Subscription.criteria is required (a FHIR search, e.g. Observation?code=…)",
            "Subscription.criteria",
        )
    res_type, pairs = parse_criteria(criteria)
    channel = resource.get("channel") or {}
    kind = channel.get("type")
    if kind != "rest-hook":
        raise YilianError(
            Category.UNSUPPORTED,
            f"Subscription.channel.type {kind!r} is not supported here: only rest-hook",
            issues=[
                Issue(
                    "only rest-hook channels are supported",
                    ("Subscription.channel.type",),
                    code="not-supported",
                )
            ],
        )
    endpoint = channel.get("endpoint")
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise _refuse(
            "Subscription.channel.endpoint must be an http(s) URL for a rest-hook",
            "Subscription.channel.endpoint",
        )
    payload = channel.get("payload") or None
    if payload is not None and payload not in RESOURCE_PAYLOADS:
        raise YilianError(
            Category.UNSUPPORTED,
            f"Subscription.channel.payload {payload!r} is not supported: use application/fhir+json, or none for an empty notification",
            issues=[Issue("unsupported payload", ("Subscription.channel.payload",), code="not-supported")],
        )
    headers = [h for h in channel.get("header") or [] if isinstance(h, str)]
    for i, h in enumerate(headers):
        name, sep, _ = h.partition(":")
        if not sep or not name.strip() or any(c in name for c in " \r\n") or "\n" in h or "\r" in h:
            raise _refuse(
                f"Subscription.channel.header must be 'Name: value'; got {h!r}",
                f"Subscription.channel.header[{i}]",
            )
    return Channel(criteria.strip(), res_type, pairs, str(endpoint), payload, headers)


def check_criteria(uow: UnitOfWork, ctx: FhirContext, channel: Channel) -> None:
    """Have the search engine parse and compile the criteria (strictly: an unknown parameter is
    an error, or the subscription would silently match everything of the type)."""
    try:
        virtual = ctx.settings.virtual_types.get(channel.res_type)
        if virtual is not None:
            # A type another system serves (Person, from the patient index) is matched by its
            # own search: the criteria must be what that search takes.
            virtual.search(uow, ctx, [*channel.pairs, ("_id", "-")], path=channel.res_type)
        else:
            req = sp.parse(
                channel.res_type, [*channel.pairs, ("_count", "0"), ("_total", "none")], strict=True
            )
            fhir_search.run(uow, ctx, req)
    except YilianError as err:
        if err.category is Category.FORBIDDEN:
            raise
        raise YilianError(
            Category.UNPROCESSABLE,
            f"Subscription.criteria is not a search this server can run: {err.message}",
            issues=[Issue(err.message, ("Subscription.criteria",), code="invalid")],
        ) from None


def on_subscription_write(
    uow: UnitOfWork, ctx: FhirContext, sub_id: str, resource: dict[str, Any] | None
) -> None:
    """Keep the destination in step with the Subscription resource (in the write's transaction)."""
    did = dest_id(sub_id)
    existing = uow.conn.execute(select(destination).where(destination.c.dest_id == did)).first()
    caller = owners.owner_of(ctx.policy)
    if existing is not None and existing.owner:
        owner = json.loads(existing.owner)
        if not owners.is_operator(caller) and not owners.same_owner(owner, caller):
            # A subscription sends what its owner may see: nobody else may redirect it.
            raise YilianError(Category.FORBIDDEN, f"Subscription/{sub_id} belongs to another client")
    else:
        owner = caller
    now = now_us()
    if resource is None:
        if existing is not None:
            uow.conn.execute(
                update(destination).where(destination.c.dest_id == did).values(active=False, updated=now)
            )
            _cancel_pending(uow, did)
        return
    status = resource.get("status")
    channel = channel_of(resource)
    check_criteria(uow, ctx, channel)
    values = {
        "kind": "subscription",
        "active": status in ("requested", "active", "error"),
        "res_type": channel.res_type,
        "criteria": channel.criteria,
        "endpoint": channel.endpoint,
        "payload": channel.payload,
        "headers": json.dumps(channel.headers),
        "owner": json.dumps(owner),
        "updated": now,
    }
    if existing is None:
        uow.conn.execute(destination.insert().values(dest_id=did, failures=0, created=now, **values))
        ensure_sequence(uow, did)
    else:
        if existing.criteria != channel.criteria or existing.endpoint != channel.endpoint:
            # What was queued was for the old criteria or receiver: it no longer applies.
            _cancel_pending(uow, did)
        uow.conn.execute(update(destination).where(destination.c.dest_id == did).values(**values))
        if status == "off":
            _cancel_pending(uow, did)
    if status == "requested":
        _activate(uow, ctx, sub_id, resource)


def _activate(uow: UnitOfWork, ctx: FhirContext, sub_id: str, resource: dict[str, Any]) -> None:
    current = repo.get_current(uow.conn, "Subscription", sub_id, for_update=True)
    if current is None or current.deleted:
        return
    activated = {k: v for k, v in resource.items() if k != "error"}
    activated["status"] = "active"
    writes.store_next(uow, ctx, current, activated, method="PUT")


def _cancel_pending(uow: UnitOfWork, did: str) -> None:
    uow.conn.execute(
        update(message)
        .where(message.c.dest_id == did, message.c.state == "pending")
        .values(state="cancelled", last_error="the subscription changed or ended")
    )


def matches(
    uow: UnitOfWork,
    ctx: FhirContext,
    policy: AccessPolicy,
    criteria_pairs: list[tuple[str, str]],
    res_type: str,
    res_id: str,
) -> bool:
    """Whether the resource as just written is what the criteria find, for the owner."""
    owner_ctx = FhirContext(base_url=ctx.base_url, settings=ctx.settings, policy=policy)
    virtual = ctx.settings.virtual_types.get(res_type)
    if virtual is not None:
        try:
            response = virtual.search(uow, owner_ctx, [*criteria_pairs, ("_id", res_id)], path=res_type)
        except YilianError:
            return False
        entries = orjson.loads(response.body or b"{}").get("entry") or []
        return any((e.get("resource") or {}).get("id") == res_id for e in entries)
    req = sp.parse(res_type, [*criteria_pairs, ("_id", res_id), ("_count", "1"), ("_total", "none")])
    try:
        found = fhir_search.run(uow, owner_ctx, req)
    except YilianError:
        return False  # the owner may no longer search this type (scopes changed): nothing to send
    return any(m.res_id == res_id for m in found.matches)
