"""A bounded asyncio TCP listener for protocols whose devices connect to us and
stream frames (HJ 212 stations, JT/T 808 terminals).

It owns what every such server needs once: the connection bound, the idle
timeout, backpressure (a connection is not read while the landing buffer is
full or while it has too many frames waiting for their acknowledgement) and
replies written from the runner's ack callbacks, which may run on another
thread. The protocol lives in a ``TcpSession``: bytes in, rows and replies out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import ClassVar, Protocol

from citylake.ingest.base import SourceContext, SourceUnavailable, StreamingSource

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
# While held back, a connection looks again this often: 10k connections that
# wake ten times a second cost little, and only while landing is full.
BACKPRESSURE_POLL_S = 0.1


class TcpSession(Protocol):
    """One connection's protocol state."""

    def received(self, data: bytes) -> None:
        """Bytes read from the peer; decode, emit, queue replies."""

    def unacked(self) -> int:
        """Inputs handed to the runner whose acknowledgement has not run yet."""

    def should_close(self) -> str | None:
        """A reason to drop the connection (a peer that only sends garbage), or None."""

    def closed(self, reason: str) -> None:
        """The connection ended (the peer left, idle, dropped, stopping)."""


class ReplyChannel:
    """Writes replies to one peer from any thread: the runner's ack callbacks
    run after the landing commit, possibly in its flush thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, writer: asyncio.StreamWriter) -> None:
        self._loop = loop
        self._writer = writer
        self.sent = 0

    def _write(self, data: bytes) -> None:
        if not self._writer.is_closing():
            self._writer.write(data)
            self.sent += 1

    def send(self, data: bytes) -> None:
        """Write now; call from the event loop."""
        self._write(data)

    def send_threadsafe(self, data: bytes) -> None:
        """Write from an ack callback (any thread)."""
        with contextlib.suppress(RuntimeError):  # the loop closed while stopping
            self._loop.call_soon_threadsafe(self._write, data)


SessionFactory = Callable[[tuple[str, int], ReplyChannel], TcpSession]


class TcpListener:
    """Accepts connections and runs one ``TcpSession`` per connection."""

    def __init__(
        self,
        label: str,
        host: str,
        port: int,
        session_factory: SessionFactory,
        ready: Callable[[], bool],
        max_connections: int,
        idle_timeout_s: float,
        max_unacked: int,
    ) -> None:
        self.label = label
        self.host = host
        self.port = port
        self._factory = session_factory
        self._ready = ready
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.max_unacked = max_unacked
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections_accepted = 0
        self.connections_refused = 0
        self.connections_idle_closed = 0
        self.connections_dropped = 0

    @property
    def connections(self) -> int:
        return len(self._tasks)

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    def bound_port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self.port
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def probe_bind(self) -> None:
        """Raise OSError if the address cannot be bound (a listener's check)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))

    async def start(self) -> None:
        # backlog: a city's stations reconnect together after an uplink outage.
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, backlog=4096, reuse_address=True, limit=READ_CHUNK
        )

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._tasks) >= self.max_connections:
            # Refused before any byte is read: unauthenticated traffic must not
            # cost more than the accept (counted, no reject row).
            self.connections_refused += 1
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections_accepted += 1
        peer = writer.get_extra_info("peername") or ("?", 0)
        channel = ReplyChannel(asyncio.get_running_loop(), writer)
        session = self._factory((str(peer[0]), int(peer[1])), channel)
        reason = "closed by peer"
        try:
            reason = await self._read_loop(reader, session)
        except asyncio.CancelledError:
            reason = "listener stopping"
        except (ConnectionError, OSError) as exc:
            reason = f"connection error: {exc}"
        finally:
            self._tasks.discard(task)
            try:
                session.closed(reason)
            except Exception:  # a session bug must not leak the socket
                log.exception("%s: closing session of %s", self.label, peer)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    async def _read_loop(self, reader: asyncio.StreamReader, session: TcpSession) -> str:
        while True:
            # Backpressure: unread bytes stay in the kernel, TCP's window
            # closes and the device waits (stations and terminals resend).
            while not self._ready() or session.unacked() >= self.max_unacked:  # noqa: ASYNC110 - polls the runner
                await asyncio.sleep(BACKPRESSURE_POLL_S)
            try:
                async with asyncio.timeout(self.idle_timeout_s):
                    data = await reader.read(READ_CHUNK)
            except TimeoutError:
                self.connections_idle_closed += 1
                return f"idle for {self.idle_timeout_s:g} s"
            if not data:
                return "closed by peer"
            session.received(data)
            drop = session.should_close()
            if drop is not None:
                self.connections_dropped += 1
                return drop

    def counters(self) -> dict[str, int]:
        return {
            "connections_accepted": self.connections_accepted,
            "connections_refused": self.connections_refused,
            "connections_idle_closed": self.connections_idle_closed,
            "connections_dropped": self.connections_dropped,
        }


class ListeningSource(StreamingSource):
    """A source that is a TCP server devices connect to (HJ 212, JT/T 808):
    binding, start and stop of its ``listener``, named by ``protocol``."""

    protocol: ClassVar[str]
    listener: TcpListener
    _ctx: SourceContext | None

    async def check(self) -> None:
        try:
            self.listener.probe_bind()
        except OSError as exc:
            raise SourceUnavailable(f"{self.protocol} {self.config.url}: cannot listen: {exc}") from exc

    async def start(self, ctx: SourceContext) -> None:
        self._ctx = ctx
        try:
            await self.listener.start()
        except OSError as exc:
            raise SourceUnavailable(f"{self.protocol} {self.config.url}: cannot listen: {exc}") from exc
        log.info("%s %s listening on %s", self.protocol, self.name, self.config.url)

    async def stop(self) -> None:
        await self.listener.stop()
