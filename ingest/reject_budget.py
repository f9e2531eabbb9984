"""How many rejects unauthenticated traffic may land: a token bucket.

A listener that anyone on the network can reach (an SNMP trap port, a CoAP
server) must not let a flood of garbage fill the ``rejected`` table. Every
bad input is still counted; only ``rate_per_s`` of them a second (bursts up
to ``burst``) become ``rejected`` rows, and the rest are counted as
suppressed in the adapter's ``counters()``."""

from __future__ import annotations

import time
from collections.abc import Callable


class RejectBudget:
    def __init__(
        self, rate_per_s: float, burst: int | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.rate = rate_per_s
        self.burst = float(burst if burst is not None else max(1, int(rate_per_s)))
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()
        self.suppressed = 0

    def allow(self) -> bool:
        """True if this reject may land; False (and counted) if over budget."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self.suppressed += 1
        return False
