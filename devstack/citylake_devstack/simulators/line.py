"""A simulated meter line: request frames in, reply frames out, over TCP and a pty.

The TCP side is what a transparent serial server looks like to the poller;
the pty side is one end of a ``socat`` pty pair, the poller holding the other
end as its serial port. The protocol module brings a ``FrameFinder`` (to cut
requests out of the byte stream) and a responder; this module owns the
sockets, the pty, the request log and the process helpers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import termios
import tty
from collections.abc import Callable, Sequence
from pathlib import Path

from citylake.ingest.meter_link import FrameError, FrameFinder
from citylake_devstack.process import ManagedProcess, free_port

log = logging.getLogger(__name__)
READY_LINE = "meter line simulator ready"
# request frame -> reply bytes (None: stay silent, as a bus does for an unknown address)
Responder = Callable[[bytes], "bytes | None"]
MAX_PENDING = 4096


class RequestLog:
    """One JSON line per request received: what the poller really sent."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def write(self, via: str, frame: bytes, replied: bool) -> None:
        if self.path is not None:
            with self.path.open("a") as out:
                out.write(json.dumps({"via": via, "frame": frame.hex(), "replied": replied}) + "\n")


def read_request_log(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


class _Cutter:
    """Bytes in, request frames out; garbage is dropped (as a meter ignores it)."""

    def __init__(self, find_frame: FrameFinder) -> None:
        self.find_frame = find_frame
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        frames: list[bytes] = []
        while self.buffer:
            try:
                span = self.find_frame(bytes(self.buffer))
            except FrameError:
                self.buffer.clear()
                break
            if span is None:
                if len(self.buffer) > MAX_PENDING:
                    self.buffer.clear()
                break
            frames.append(bytes(self.buffer[span[0] : span[1]]))
            del self.buffer[: span[1]]
        return frames


async def serve_line(
    find_frame: FrameFinder,
    respond: Responder,
    port: int | None,
    serial_path: str | None,
    request_log: RequestLog,
) -> None:
    """Serve until cancelled; prints ``READY_LINE`` once listening."""

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cutter = _Cutter(find_frame)
        try:
            while data := await reader.read(1024):
                for frame in cutter.feed(data):
                    reply = respond(frame)
                    request_log.write("tcp", frame, reply is not None)
                    if reply:
                        writer.write(reply)
                        await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", port) if port is not None else None
    if serial_path is not None:
        fd = os.open(serial_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        with contextlib.suppress(termios.error):
            tty.setraw(fd)
        cutter = _Cutter(find_frame)

        def on_serial() -> None:
            try:
                data = os.read(fd, 1024)
            except BlockingIOError:
                return
            for frame in cutter.feed(data):
                reply = respond(frame)
                request_log.write("serial", frame, reply is not None)
                if reply:
                    os.write(fd, reply)

        asyncio.get_running_loop().add_reader(fd, on_serial)
    sys.stdout.write(READY_LINE + "\n")
    sys.stdout.flush()
    try:
        await asyncio.Event().wait()
    finally:
        if server is not None:
            server.close()


def start_line_simulator(
    module: str, args: Sequence[str], workdir: Path, name: str, serial_path: Path | None = None
) -> tuple[ManagedProcess, int]:
    """``python -m <module> --port P [--serial PATH] <args>`` as a managed process."""
    port = free_port()
    argv = [sys.executable, "-m", module, "--port", str(port), *args]
    if serial_path is not None:
        argv += ["--serial", str(serial_path)]
    process = ManagedProcess(f"{name}:{port}", argv, workdir / f"{name}-{port}.log").start()
    process.wait_until(lambda: READY_LINE in process.log_tail(), 20, f"{name} ready")
    return process, port


def start_pty_pair(workdir: Path) -> tuple[ManagedProcess, Path, Path]:
    """``socat -d -d pty,raw,echo=0 pty,raw,echo=0``: (socat, the meter's end, the poller's end)."""
    line = workdir / "line"
    line.mkdir(parents=True, exist_ok=True)
    meter_end, poller_end = line / "meter", line / "poller"
    socat = ManagedProcess(
        "socat-pty-pair",
        ["socat", "-d", "-d", f"pty,raw,echo=0,link={meter_end}", f"pty,raw,echo=0,link={poller_end}"],
        workdir / "socat.log",
    ).start()
    socat.wait_until(lambda: meter_end.exists() and poller_end.exists(), 10, "pty pair")
    return socat, meter_end, poller_end
