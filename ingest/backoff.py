"""The wait between retries of a connection: ``first_s`` after the first
failure, doubling each time up to ``max_s``, back to ``first_s`` once the
connection worked. Sources, the Modbus connection and the sync sender share it
so every reconnect in the house backs off the same way."""

from __future__ import annotations

import asyncio
import math


class Backoff:
    def __init__(self, first_s: float, max_s: float = math.inf) -> None:
        if first_s < 0:
            raise ValueError(f"a backoff cannot start below 0 s, got {first_s}")
        self.first_s, self.max_s = first_s, max_s
        self._delay = first_s

    @property
    def delay_s(self) -> float:
        """The wait the next failure gets."""
        return self._delay

    def next(self) -> float:
        """The wait for this failure; the one after it is twice as long (capped)."""
        delay = self._delay
        self._delay = min(delay * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self._delay = self.first_s

    async def sleep(self) -> float:
        """Waits this failure's delay; returns how long that was."""
        delay = self.next()
        await asyncio.sleep(delay)
        return delay
