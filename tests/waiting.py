"""Polling for a condition in integration tests, with a failure that says what
never happened: `wait_for` blocks (for tests that run a stack in processes),
`wait_until` awaits (for tests that run sources in their own event loop)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"no {what} after {timeout_s:.0f} s")


async def wait_until(
    check: Callable[[], bool],
    timeout_s: float,
    what: str | None = None,
    *,
    state: Callable[[], object] | None = None,
    poll_s: float = 0.05,
) -> None:
    """Await ``check()``; on timeout fail naming ``what`` (by default the
    check's own source line) and, if given, ``state()`` at that moment."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() >= deadline:
            told = f"; {state()}" if state is not None else ""
            failed = f"no {what}" if what else f"never true: {_described(check)}"
            raise AssertionError(f"{failed} after {timeout_s:g} s{told}")
        await asyncio.sleep(poll_s)


def _described(check: Callable[[], bool]) -> str:
    # A lambda's source line says what the test waited for better than its name.
    try:
        return " ".join(inspect.getsource(check).split())
    except (OSError, TypeError):
        return getattr(check, "__qualname__", repr(check))
