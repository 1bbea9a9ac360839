"""The platform's clock. Tests and replays can pin it; everything else asks it for 'now'."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

UTC = dt.UTC

_now: Callable[[], dt.datetime] = lambda: dt.datetime.now(UTC)  # noqa: E731


def now() -> dt.datetime:
    """Timezone-aware current instant (UTC)."""
    return _now()


def set_clock(fn: Callable[[], dt.datetime] | None) -> None:
    """Pin the clock (``None`` restores the real one)."""
    global _now
    _now = fn if fn is not None else (lambda: dt.datetime.now(UTC))


@contextmanager
def running_from(start: dt.datetime) -> Iterator[None]:
    """The clock reads ``start`` when the block begins and runs on at the real pace from there,
    until the block ends: for replaying dated work (the demo region's day) in one process."""
    started = time.monotonic()
    set_clock(lambda: start + dt.timedelta(seconds=time.monotonic() - started))
    try:
        yield
    finally:
        set_clock(None)


def fhir_instant(value: dt.datetime) -> str:
    """FHIR ``instant`` text with millisecond precision: 2026-12-03T07:15:00.123Z."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
