"""A time limit on one DuckDB query, enforced by really cancelling it.

A timer thread calls ``cursor.interrupt()``: DuckDB checks for interruption
between vectors, so a runaway scan stops within milliseconds and frees its
thread and memory, where abandoning the request would leave it running.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from citylake.services.query.errors import too_slow


@contextmanager
def deadline(cursor: duckdb.DuckDBPyConnection, seconds: float, limit: str) -> Iterator[None]:
    """Interrupts what runs on ``cursor`` inside the block after ``seconds``;
    an interrupted query becomes a 408 naming ``limit``."""
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def fire() -> None:
        # Under the lock, so the interrupt can never race the request closing
        # the cursor once the block has ended.
        with lock:
            if not state["done"]:
                state["fired"] = True
                cursor.interrupt()

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    except Exception as exc:
        # Whatever the interrupt surfaced as: DuckDB's InterruptException, or
        # an Arrow error when it struck while rows were streaming out.
        if state["fired"]:
            raise too_slow(limit, seconds) from exc
        raise
    finally:
        with lock:
            state["done"] = True
        timer.cancel()
