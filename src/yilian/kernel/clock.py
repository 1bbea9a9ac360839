"""The platform's clock. Tests and replays can pin it; everything else asks it for 'now'."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

UTC = dt.UTC

_now: Callable[[], dt.datetime] = lambda: dt.datetime.now(UTC)  # noqa: E731


def now() -> dt.datetime:
    """Timezone-aware current instant (UTC)."""
    return _now()


def set_clock(fn: Callable[[], dt.datetime] | None) -> None:
    """Pin the clock (``None`` restores the real one)."""
    global _now
    _now = fn if fn is not None else (lambda: dt.datetime.now(UTC))


def fhir_instant(value: dt.datetime) -> str:
    """FHIR ``instant`` text with millisecond precision: 2026-12-03T07:15:00.123Z."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
