"""A token bucket: the sync's share of an edge's uplink, in bytes per second."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``take(n)`` returns once ``n`` more bytes fit in ``rate`` bytes/s with at
    most ``burst`` bytes at once. A take larger than the bucket goes into debt
    (waits for all of it), so any piece size keeps the average rate."""

    def __init__(
        self,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"rate and burst must be positive, got {rate} and {burst}")
        self.rate, self.burst = float(rate), float(burst)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst
        self._last = clock()
        self.waited_s = 0.0

    def take(self, n: int) -> float:
        """Wait until ``n`` bytes may go; returns the seconds waited."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= n
        if self._tokens >= 0:
            return 0.0
        wait = -self._tokens / self.rate
        self._sleep(wait)
        self.waited_s += wait
        return wait
