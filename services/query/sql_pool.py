"""The query service's SQL workers: ``sql_max_concurrent`` processes, each
started on first use, one query at a time each, replaced when one dies.

A free worker or a 429: queries never queue behind each other. The worker
cancels its own query at ``sql_timeout_s``; should it not answer within a
grace period after that (stuck, or swapping), it is killed here, so the
slot always comes back.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import status
from prometheus_client import CollectorRegistry, Counter

from citylake.config import ServiceConfig
from citylake.services.query.errors import QueryError, too_slow
from citylake.services.query.sql_frames import PeerGone, TooSlow, read_frame, write_frame

log = logging.getLogger(__name__)

# Importing DuckDB and pyarrow and opening the lake, on a busy 2-core node.
START_TIMEOUT_S = 60.0
# After the worker's own cancellation: encoding a result up to sql_max_bytes.
ANSWER_GRACE_S = 10.0


@dataclass(frozen=True)
class Answer:
    content: bytes
    media_type: str
    rows: int


class _Worker:
    def __init__(self, data_dir: Path, config: ServiceConfig) -> None:
        self.data_dir = data_dir
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "citylake.services.query.sql_worker",
                str(self.data_dir),
                self.config.model_dump_json(),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # Where the service's own log goes: a worker's errors must be seen.
            stderr=None,
            env={**os.environ, "MALLOC_ARENA_MAX": "2"},
        )
        assert process.stdout is not None
        try:
            header, _ = read_frame(process.stdout.fileno(), time.monotonic() + START_TIMEOUT_S)
        except (PeerGone, TooSlow, ValueError) as exc:
            self._kill(process)
            raise QueryError(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"a SQL worker could not start ({exc}; exit status {process.returncode}); "
                "the service's log says why",
            ) from exc
        if not header.get("ready"):
            self._kill(process)
            raise QueryError(status.HTTP_503_SERVICE_UNAVAILABLE, f"a SQL worker did not start: {header}")
        return process

    @staticmethod
    def _kill(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.kill()
        process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            self._kill(process)

    def run(self, sql: str, fmt: str, restarts: Counter) -> Answer:
        if self.process is None or self.process.poll() is not None:
            if self.process is not None:
                self.stop()
                restarts.labels(reason="exited").inc()
            self.process = self._start()
        process = self.process
        assert process.stdin is not None and process.stdout is not None
        deadline = time.monotonic() + self.config.sql_timeout_s + ANSWER_GRACE_S
        try:
            write_frame(process.stdin.fileno(), {"sql": sql, "format": fmt})
            header, body = read_frame(process.stdout.fileno(), deadline, max_body=self.config.sql_max_bytes)
        except TooSlow:
            self.stop()
            restarts.labels(reason="unresponsive").inc()
            raise too_slow("sql_timeout_s", self.config.sql_timeout_s) from None
        except (PeerGone, BrokenPipeError, ValueError) as exc:
            code = process.poll()
            self.stop()
            restarts.labels(reason="exited").inc()
            log.warning("a SQL worker stopped during a query (exit status %s): %s", code, exc)
            raise QueryError(
                status.HTTP_400_BAD_REQUEST,
                f"the SQL worker running this query stopped (exit status {code}), most likely out of its "
                f"memory ({self.config.sql_memory_mb} MiB); narrow the query (aggregate, fewer or narrower "
                "columns, a LIMIT). A new worker serves the next query.",
                "sql_memory_mb",
            ) from None
        code = int(header.get("status", 500))
        if code != status.HTTP_200_OK:
            limit = header.get("limit")
            raise QueryError(code, str(header.get("detail", "")), str(limit) if limit else None)
        return Answer(body, str(header["media_type"]), int(header["rows"]))


class SqlWorkers:
    def __init__(self, data_dir: Path, config: ServiceConfig, registry: CollectorRegistry) -> None:
        self.config = config
        self._all = [_Worker(data_dir, config) for _ in range(config.sql_max_concurrent)]
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        for worker in self._all:
            self._idle.put(worker)
        self._closed = threading.Event()
        self.restarts = Counter(
            "citylake_query_sql_worker_restarts",
            "SQL workers replaced: exited (out of memory, crashed) or unresponsive (killed)",
            ["reason"],
            registry=registry,
        )

    def run(self, sql: str, fmt: str) -> Answer:
        try:
            worker = self._idle.get_nowait()
        except queue.Empty:
            raise QueryError(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"{self.config.sql_max_concurrent} SQL queries are already running; retry shortly",
                "sql_max_concurrent",
            ) from None
        try:
            if self._closed.is_set():
                raise QueryError(status.HTTP_503_SERVICE_UNAVAILABLE, "the service is stopping")
            return worker.run(sql, fmt, self.restarts)
        finally:
            self._idle.put(worker)

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._all if w.process is not None and w.process.poll() is None]

    def close(self) -> None:
        self._closed.set()
        for worker in self._all:
            worker.stop()
