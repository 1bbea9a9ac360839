"""Outbound delivery: one mechanism for "something changed here, deliver it there, at least
once, in order, surviving restarts" — FHIR Subscriptions (rest-hook) and district → city
forwarding (docs/subscriptions.md, docs/exchange.md).

- :class:`OutboxObserver` (a FHIR write observer) queues each write for its destinations in
  the write's own transaction, and the patient index's identity decisions for subscriptions on
  ``Person`` (:func:`watch_identity_changes`, started by the observer);
- :class:`DeliveryWorker` delivers them per destination in order, with retries and backoff;
- :func:`register_forward` / :func:`unregister_forward` start and stop forwarding to a node;
  :class:`ForwardedIdGuard` (a write observer on the receiving node) refuses a forwarded write
  that would replace another node's record of a patient under the same id;
- :func:`outbox_status` says what is waiting where; :func:`skip_message` sets aside a message a
  destination refuses for good, so the ones after it can go; :func:`prune_outbox` removes
  finished messages past their retention.
"""

from __future__ import annotations

from yilian.exchange.outbound.forwarding import ForwardCredentials, ForwardedIdGuard, credentials_from_env
from yilian.exchange.outbound.forwarding import register as register_forward
from yilian.exchange.outbound.forwarding import unregister as unregister_forward
from yilian.exchange.outbound.identity import watch_identity_changes
from yilian.exchange.outbound.observer import OutboxObserver
from yilian.exchange.outbound.outbox import wakeup
from yilian.exchange.outbound.retention import PruneResult, prune_outbox
from yilian.exchange.outbound.skip import Skipped, skip_message
from yilian.exchange.outbound.status import DestinationStatus, outbox_status
from yilian.exchange.outbound.worker import DeliverySettings, DeliveryWorker, backoff_s, deliver_all
from yilian.exchange.outbound.worker import settings_from_env as delivery_settings_from_env

__all__ = [
    "DeliverySettings",
    "DeliveryWorker",
    "DestinationStatus",
    "ForwardCredentials",
    "ForwardedIdGuard",
    "OutboxObserver",
    "PruneResult",
    "Skipped",
    "backoff_s",
    "credentials_from_env",
    "deliver_all",
    "delivery_settings_from_env",
    "outbox_status",
    "prune_outbox",
    "register_forward",
    "skip_message",
    "unregister_forward",
    "wakeup",
    "watch_identity_changes",
]
