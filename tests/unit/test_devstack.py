"""Starters fail loudly with the reason, so a fixture never skips silently."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import psutil
import pytest

from citylake_devstack import ComponentUnavailable, ManagedProcess, start_mosquitto
from citylake_devstack.process import free_port


def test_busy_port_is_named(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ComponentUnavailable, match=f"port {port} on 127.0.0.1 is already in use"):
            start_mosquitto(tmp_path, port=port)


def test_missing_binary_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ComponentUnavailable, match=r"not found.*make setup"):
        ManagedProcess("ghost", ["/nonexistent/citylake-ghost"], tmp_path / "ghost.log").start()


def test_a_process_that_dies_reports_its_log(tmp_path: Path) -> None:
    process = ManagedProcess(
        "crasher",
        [sys.executable, "-c", "import sys; print('boom: bad config'); sys.exit(3)"],
        tmp_path / "c.log",
    ).start()
    with pytest.raises(ComponentUnavailable, match=r"(?s)crasher exited with 3.*boom: bad config"):
        process.wait_port(free_port(), 10)


def test_stop_kills_the_whole_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    grandchild = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    script = (
        "import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', {grandchild!r}]); time.sleep(60)"
    )
    process = ManagedProcess("parent", [sys.executable, "-c", script], tmp_path / "p.log").start()
    process.wait_until(lambda: pid_file.exists() and pid_file.read_text() != "", 10, "grandchild")
    grandchild_pid = int(pid_file.read_text())
    process.stop(timeout_s=5)
    assert not process.alive()
    deadline = time.monotonic() + 5
    while _running(grandchild_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(grandchild_pid)


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie has ended; its parent just has not reaped it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_free_ports_are_below_the_ephemeral_range_and_never_repeat() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(10_000 <= p < low for p in ports), (min(ports), max(ports), low)


def test_a_port_someone_listens_on_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", free_port()))
        holder.listen()
        taken = holder.getsockname()[1]
        draws = iter([taken, taken + 1])
        monkeypatch.setattr("random.SystemRandom.randrange", lambda self, a, b: next(draws))
        assert free_port() == taken + 1
