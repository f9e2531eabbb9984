"""The lake, opened when first read rather than when a service starts.

Opening a ``Lake`` reads its files' footers; one unreadable file would then
keep a service from starting at all, taking down what does not need the lake
(alert rules, health). Opened on demand, the error reaches the request or
refresh that needed the lake, as a 503 or in ``/healthz``, and the next use
tries again.
"""

from __future__ import annotations

import threading

import duckdb

from citylake.lake import Lake
from citylake.schemas import DataLayout


class LakeUnavailable(RuntimeError):
    """The lake could not be read now; the message says why."""


class LakeOnDemand:
    def __init__(self, layout: DataLayout) -> None:
        self.layout = layout
        self._lock = threading.Lock()
        self._lake: Lake | None = None

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for one thread; ``LakeUnavailable`` if the lake cannot be read."""
        try:
            with self._lock:
                if self._lake is None:
                    self._lake = Lake(self.layout)
                lake = self._lake
            return lake.cursor()
        except Exception as exc:  # any lake failure: the caller needs the reason, not the type
            raise LakeUnavailable(
                f"the lake at {self.layout.lake_root} cannot be read now ({type(exc).__name__}: {exc})"
            ) from exc

    def close(self) -> None:
        with self._lock:
            if self._lake is not None:
                self._lake.close()
                self._lake = None
