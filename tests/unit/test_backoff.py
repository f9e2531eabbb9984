"""The one reconnect backoff: doubling from the first wait, capped, reset."""

from __future__ import annotations

import time

import pytest

from citylake.ingest.backoff import Backoff


def test_doubles_to_the_cap_and_starts_again_after_reset() -> None:
    backoff = Backoff(0.5, 3.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.delay_s == 0.5 and backoff.next() == 0.5 and backoff.delay_s == 1.0


def test_uncapped_by_default_and_refuses_a_negative_start() -> None:
    backoff = Backoff(1.0)
    assert [backoff.next() for _ in range(4)] == [1.0, 2.0, 4.0, 8.0]
    with pytest.raises(ValueError, match="below 0 s"):
        Backoff(-1.0)


async def test_sleep_waits_this_failures_delay() -> None:
    backoff = Backoff(0.05, 1.0)
    started = time.monotonic()
    assert await backoff.sleep() == 0.05
    assert time.monotonic() - started >= 0.05 and backoff.delay_s == 0.1
