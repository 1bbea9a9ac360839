"""The platform's clock: pinned for dated work, and always given back."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from yilian.kernel import clock

START = dt.datetime(2026, 12, 1, 7, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))


def test_running_from_starts_at_the_given_instant_and_moves_on() -> None:
    with clock.running_from(START):
        first = clock.now()
        time.sleep(0.02)
        second = clock.now()
    assert dt.timedelta(0) <= first - START < dt.timedelta(seconds=1)
    assert second - first >= dt.timedelta(seconds=0.02)
    assert abs(clock.now() - dt.datetime.now(dt.UTC)) < dt.timedelta(seconds=5)  # the real one again


def test_running_from_gives_the_real_clock_back_after_an_error() -> None:
    with pytest.raises(RuntimeError), clock.running_from(START):
        raise RuntimeError("the dated work failed")
    assert abs(clock.now() - dt.datetime.now(dt.UTC)) < dt.timedelta(seconds=5)
