"""What the polled-meter integration tests (DL/T 645, CJ/T 188, M-Bus) share:
reading the landing zone back and waiting for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pyarrow.parquet as pq

from citylake.schemas import DataLayout, table


def landed(layout: DataLayout, name: str) -> list[dict[str, Any]]:
    files = sorted(layout.landing(table(name)).rglob("*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)
