"""Child processes that are started, waited for and always stopped."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

# How every test, bench and dev-stack process runs citylake: this interpreter,
# so the child sees the same venv and editable install as its parent.
CITYLAKE: tuple[str, ...] = (sys.executable, "-m", "citylake")


class ComponentUnavailable(RuntimeError):
    """A real component could not be started; the message says why and what to do."""


# Ports for the components are drawn below the kernel's ephemeral range: a
# port the kernel hands out by itself (bind to 0) is in that range, and so is
# the local port of every outgoing connection on the machine, which can take
# it in the moment between our pick and the component's bind (seen: an
# ingest's health server refused with EADDRINUSE in the scale run's test).
FIRST_PORT = 10_000
_handed_out: set[tuple[int, int]] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free(kind: int) -> int:
    low = _ephemeral_low()
    if low - FIRST_PORT >= 1000:
        rng = random.SystemRandom()
        for _ in range(200):
            port = rng.randrange(FIRST_PORT, low)
            if (kind, port) in _handed_out:
                continue
            with socket.socket(socket.AF_INET, kind) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add((kind, port))
            return port
    # A range too narrow to draw from: let the kernel choose, as before.
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now, never handed out
    before by this process, outside the ephemeral range."""
    return _free(socket.SOCK_STREAM)


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 nobody is bound to right now (SNMP, CoAP)."""
    return _free(socket.SOCK_DGRAM)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def require_port_free(port: int, what: str) -> None:
    if port_open(port):
        raise ComponentUnavailable(f"{what}: port {port} on 127.0.0.1 is already in use")


class ManagedProcess:
    """A child process with its output in a log file, stopped by ``stop()``
    (SIGTERM, then SIGKILL) and by leaving a ``with`` block. ``prefix`` is
    run before ``argv`` and must ``exec`` it (the scale run's edge box puts
    the process in a cgroup that way), so ``pid`` is still the command's."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.prefix = list(prefix)
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Behind a prefix a missing program is the shell's exit 127, not an
        # exception here: look for it first, so the message is the same.
        if self.prefix and shutil.which(self.argv[0]) is None:
            raise ComponentUnavailable(f"{self.name}: {self.argv[0]} not found; run `make setup`")
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        try:
            self.proc = subprocess.Popen(
                [*self.prefix, *self.argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise ComponentUnavailable(
                f"{self.name}: {self.argv[0]} not found ({exc}); run `make setup`"
            ) from exc
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def wait_until(self, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Wait for ``ready()``; fail with the log tail if the process died or time ran out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                code = self.proc.returncode if self.proc else None
                raise ComponentUnavailable(
                    f"{self.name} exited with {code} before {what}; log {self.log_path}:\n{self.log_tail()}"
                )
            if ready():
                return
            time.sleep(0.1)
        raise ComponentUnavailable(
            f"{self.name}: no {what} after {timeout_s:.0f}s; log {self.log_path}:\n{self.log_tail()}"
        )

    def wait_port(self, port: int, timeout_s: float = 30.0) -> None:
        self.wait_until(lambda: port_open(port), timeout_s, f"listener on port {port}")

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """Stop the process group: SIGTERM, then SIGKILL after ``timeout_s``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(10)
        # The group may hold children (Flink's JVM under a shell) that outlived the leader.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
