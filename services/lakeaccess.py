"""The lake, opened when first read rather than when a service starts.

Opening a ``Lake`` reads its files' footers; one unreadable file would then
keep a service from starting at all, taking down what does not need the lake
(alert rules, health). Opened on demand, the error reaches the request or
refresh that needed the lake, as a 503 or in ``/healthz``, and the next use
tries again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import duckdb

from citylake.lake import Lake
from citylake.lake.manifest import TableSnapshot
from citylake.schemas import DataLayout


class LakeUnavailable(RuntimeError):
    """The lake could not be read now; the message says why."""


class LakeOnDemand:
    """``prepare`` runs once on the freshly opened lake before it serves (the
    query service locks it down there); if it fails the lake is closed, never
    served half prepared, and the next use tries again."""

    def __init__(
        self,
        layout: DataLayout,
        *,
        min_refresh_s: float = 0.0,
        prepare: Callable[[Lake], None] | None = None,
    ) -> None:
        self.layout = layout
        self.min_refresh_s = min_refresh_s
        self._prepare = prepare
        self._lock = threading.Lock()
        self._lake: Lake | None = None

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for one thread; ``LakeUnavailable`` if the lake cannot be read."""
        try:
            with self._lock:
                if self._lake is None:
                    self._lake = self._open()
                lake = self._lake
            return lake.cursor()
        except Exception as exc:  # any lake failure: the caller needs the reason, not the type
            raise LakeUnavailable(
                f"the lake at {self.layout.lake_root} cannot be read now ({type(exc).__name__}: {exc})"
            ) from exc

    def _open(self) -> Lake:
        lake = Lake(self.layout, min_refresh_s=self.min_refresh_s)
        if self._prepare is not None:
            try:
                self._prepare(lake)
            except BaseException:
                lake.close()
                raise
        return lake

    def snapshot(self, table: str) -> TableSnapshot:
        """The snapshot the views show now (the query service's serving store follows it)."""
        self.cursor().close()  # opened now if it can be, else LakeUnavailable says why
        with self._lock:
            lake = self._lake
        if lake is None:
            raise LakeUnavailable("the lake was closed")
        return lake.snapshot(table)

    def close(self) -> None:
        with self._lock:
            if self._lake is not None:
                self._lake.close()
                self._lake = None
