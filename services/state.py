"""The state-store port: keys holding JSON values with ETags.

``DaprStateStore`` keeps them in the sidecar's state store component (SQLite
on the node in ``deploy/dapr/components/statestore.yaml``); without a sidecar
``EmbeddedStateStore`` keeps them in a SQLite file of its own (or in memory),
with the same ETag rules, so handlers behave the same in both.

The rules, Dapr's ``first-write`` concurrency: a save with an ETag succeeds only
if the key still has it; a ``create_only`` save succeeds only if the key does
not exist; any other save overwrites. A failed comparison raises ``EtagMismatch``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


class EtagMismatch(Exception):
    """The key changed (or appeared, or vanished) since it was read."""


@dataclass(frozen=True)
class StateEntry:
    value: Any
    etag: str


class StateStore(Protocol):
    async def get(self, key: str) -> StateEntry | None: ...

    async def get_many(self, keys: Sequence[str]) -> dict[str, StateEntry]:
        """The entries of ``keys`` that exist."""
        ...

    async def save(
        self,
        key: str,
        value: Any,
        *,
        etag: str | None = None,
        create_only: bool = False,
        ttl_s: int | None = None,
    ) -> None: ...

    def check(self) -> str:
        """``ok``, or why the store cannot be used now."""
        ...

    async def aclose(self) -> None: ...


class StateSidecar(Protocol):
    """What a state store needs of the Dapr sidecar client (services/sidecar.py's
    ``DaprSidecar``), named here so that sidecar.py imports this module and not
    the other way round."""

    async def get_state(self, store: str, key: str) -> StateEntry | None: ...

    async def get_bulk_state(self, store: str, keys: Sequence[str]) -> dict[str, StateEntry]: ...

    async def save_state(
        self,
        store: str,
        key: str,
        value: Any,
        etag: str | None = None,
        create_only: bool = False,
        ttl_s: int | None = None,
    ) -> None: ...

    def check(self) -> str: ...


class DaprStateStore:
    """One state store component, reached through the sidecar."""

    def __init__(self, sidecar: StateSidecar, name: str) -> None:
        self.sidecar = sidecar
        self.name = name

    async def get(self, key: str) -> StateEntry | None:
        return await self.sidecar.get_state(self.name, key)

    async def get_many(self, keys: Sequence[str]) -> dict[str, StateEntry]:
        found: dict[str, StateEntry] = {}
        # Bounded requests: a restart may ask about every alert of the last day.
        for start in range(0, len(keys), 500):
            found.update(await self.sidecar.get_bulk_state(self.name, keys[start : start + 500]))
        return found

    async def save(
        self,
        key: str,
        value: Any,
        *,
        etag: str | None = None,
        create_only: bool = False,
        ttl_s: int | None = None,
    ) -> None:
        await self.sidecar.save_state(self.name, key, value, etag=etag, create_only=create_only, ttl_s=ttl_s)

    def check(self) -> str:
        return self.sidecar.check()

    async def aclose(self) -> None:
        pass  # the sidecar client belongs to the app, which closes it after every user


class EmbeddedStateStore:
    """SQLite in this process: a file that survives restarts, or ``:memory:``
    when ``path`` is None. Calls run in a worker thread so the event loop never
    waits on the disk."""

    def __init__(self, path: Path | None = None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            ":memory:" if path is None else str(path), check_same_thread=False, isolation_level=None
        )
        if path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS state "
            "(key TEXT PRIMARY KEY, value TEXT NOT NULL, etag TEXT NOT NULL, expires REAL)"
        )

    def _get(self, key: str, now: float) -> StateEntry | None:
        row = self._db.execute(
            "SELECT value, etag FROM state WHERE key = ? AND (expires IS NULL OR expires > ?)", (key, now)
        ).fetchone()
        return None if row is None else StateEntry(json.loads(row[0]), row[1])

    def _get_many(self, keys: Sequence[str]) -> dict[str, StateEntry]:
        now = time.time()
        with self._lock:
            found = {key: self._get(key, now) for key in keys}
        return {key: entry for key, entry in found.items() if entry is not None}

    def _save(self, key: str, value: Any, etag: str | None, create_only: bool, ttl_s: int | None) -> None:
        now = time.time()
        text = json.dumps(value, separators=(",", ":"))
        expires = now + ttl_s if ttl_s is not None else None
        with self._lock:
            current = self._get(key, now)
            if etag is not None and (current is None or current.etag != etag):
                raise EtagMismatch(f"{key!r} changed since it was read")
            if etag is None and create_only and current is not None:
                raise EtagMismatch(f"{key!r} exists already")
            self._db.execute(
                "INSERT OR REPLACE INTO state (key, value, etag, expires) VALUES (?, ?, ?, ?)",
                (key, text, uuid.uuid4().hex, expires),
            )
            # Expired keys are dropped as writes happen, so the file stays as small as the live set.
            self._db.execute("DELETE FROM state WHERE expires IS NOT NULL AND expires <= ?", (now,))

    async def get(self, key: str) -> StateEntry | None:
        found = await asyncio.to_thread(self._get_many, [key])
        return found.get(key)

    async def get_many(self, keys: Sequence[str]) -> dict[str, StateEntry]:
        return await asyncio.to_thread(self._get_many, list(keys))

    async def save(
        self,
        key: str,
        value: Any,
        *,
        etag: str | None = None,
        create_only: bool = False,
        ttl_s: int | None = None,
    ) -> None:
        await asyncio.to_thread(self._save, key, value, etag, create_only, ttl_s)

    def check(self) -> str:
        return "ok"

    async def aclose(self) -> None:
        with self._lock:
            self._db.close()
