"""The exchange platform (数据交换平台): HL7 v2 over MLLP, legacy CSV migration, bulk data, subscriptions, forwarding.

HL7 v2 intake (docs/exchange.md):

- :func:`receive` one message (bytes) and get its :class:`Outcome` (the ACK);
- :class:`MllpServer` listens for framed messages over TCP or TLS;
- :func:`dead_letters` lists what failed, :func:`replay` processes it again;
- :func:`stranded` lists messages landed but never stored nor refused (the process died in
  between), :func:`recover` processes them (the listener does so by itself every minute).
"""

from __future__ import annotations

from yilian.exchange.intake import IntakeSettings, Outcome, receive
from yilian.exchange.mllp import MllpServer, tls_context
from yilian.exchange.service import DeadLetter, dead_letters, replay
from yilian.exchange.stranded import Recovered, Stranded, recover, stranded

__all__ = [
    "DeadLetter",
    "IntakeSettings",
    "MllpServer",
    "Outcome",
    "Recovered",
    "Stranded",
    "dead_letters",
    "receive",
    "recover",
    "replay",
    "stranded",
    "tls_context",
]
