"""Each unit's output in a size-bounded log: a site runs for months."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import IO


class BoundedLog:
    """Appends a child's output to ``path``; at ``max_bytes`` the file moves to
    ``path.1`` (the older ``.1`` is dropped), so a unit never holds more than
    twice the bound on disk."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            self._file.write(data)
            self._file.flush()
            if self._file.tell() >= self.max_bytes:
                self._file.close()
                self.path.replace(self.path.with_name(self.path.name + ".1"))
                self._file = open(self.path, "ab")  # noqa: SIM115

    def pump(self, stream: IO[bytes]) -> threading.Thread:
        """Copies ``stream`` (a child's stdout) here until it closes."""

        def copy() -> None:
            with stream:
                for chunk in iter(lambda: stream.read1(65536), b""):  # type: ignore[attr-defined]
                    self.write(chunk)

        thread = threading.Thread(target=copy, name=f"log-{self.path.stem}", daemon=True)
        thread.start()
        return thread

    def tail(self, chars: int = 2000) -> str:
        with self._lock:
            try:
                return self.path.read_bytes()[-chars:].decode(errors="replace")
            except FileNotFoundError:
                return ""

    def close(self) -> None:
        with self._lock:
            self._file.close()
