"""The bottom layer: SIP over UDP (an asyncio DatagramProtocol) and TCP
(asyncio streams, framed by Content-Length) on one host:port and one loop.

It turns bytes into ``SipMessage``s for its user (the transaction layer) and
sends bytes back to a ``Peer``: over UDP to the address, over TCP on the
connection that address names. Its bounds are the ones the network could
otherwise push past (issue 13): connections open at once, idle connections,
bytes queued to a peer that does not read.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from typing import Any, Protocol

from citylake.ingest.base import SourceUnavailable
from citylake.ingest.gb28181 import sip
from citylake.ingest.gb28181.config import GB28181SourceConfig
from citylake.ingest.gb28181.peer import Addr, Peer

log = logging.getLogger(__name__)


class TransportUser(Protocol):
    def received(self, raw: bytes, message: sip.SipMessage, peer: Peer) -> None:
        """One whole SIP message from ``peer``."""

    def unreadable(self, raw: bytes, reason: str, partial: sip.SipMessage | None, peer: Peer) -> None:
        """Bytes that are no SIP message (``partial``: what of its head parsed)."""


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, transport: SipTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.transport._on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable for a device that went away: nothing to do.
        log.debug("GB28181 UDP error: %s", exc)


class SipTransport:
    def __init__(self, config: GB28181SourceConfig, stats: Counter[str], name: str) -> None:
        self.config = config
        self.stats = stats
        self.name = name
        self.port = config.listen_port
        self.user: TransportUser | None = None
        self.streams: dict[Addr, asyncio.StreamWriter] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    def is_up(self) -> bool:
        wanted = self.config.listen_transports
        return ("udp" not in wanted or self._udp is not None) and (
            "tcp" not in wanted or self._tcp is not None
        )

    def check(self) -> None:
        """Bind each listen address once: catches a busy port or a foreign host."""
        host, port = self.config.listen_host, self.config.listen_port
        for transport in self.config.listen_transports:
            kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
            try:
                with socket.socket(socket.AF_INET, kind) as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((host, port))
            except OSError as exc:
                raise SourceUnavailable(f"GB28181 {transport}://{host}:{port}: {exc}") from exc

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.config.listen_host, self.config.listen_port
        transports = self.config.listen_transports
        if "udp" in transports:
            udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(host, port))
            self._udp = udp
            port = udp.get_extra_info("sockname")[1]
        if "tcp" in transports:
            self._tcp = await asyncio.start_server(self._on_stream, host, port, reuse_address=True)
            port = self._tcp.sockets[0].getsockname()[1]
        self.port = port
        log.info("GB28181 %s listening on %s %s:%d", self.name, "+".join(transports), host, port)

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        for writer in list(self.streams.values()):
            writer.close()
        self.streams.clear()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
            self._tcp = None

    def local_host(self, peer: Peer) -> str:
        """The host ``peer`` reaches the platform at (for a Via header)."""
        host = self.config.listen_host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1" if peer.host.startswith("127.") else socket.gethostname()
        return host

    def send(self, data: bytes, peer: Peer) -> None:
        if peer.transport == "udp":
            if self._udp is not None:
                self._udp.sendto(data, peer.addr)
            return
        writer = self.streams.get(peer.addr)
        if writer is None or writer.is_closing():
            log.info("GB28181 %s: TCP connection to %s:%d is gone; dropped", self.name, *peer.addr)
            return
        # The write is queued; a peer that sends but never reads would grow
        # the queue without bound: past tcp_write_buffer_max it is closed.
        if writer.transport.get_write_buffer_size() + len(data) > self.config.tcp_write_buffer_max:
            self.stats["tcp_slow_reader_closed"] += 1
            log.warning("GB28181 %s: TCP %s:%d does not read its answers; closed", self.name, *peer.addr)
            writer.transport.abort()
            return
        writer.write(data)

    def _on_datagram(self, data: bytes, addr: Addr) -> None:
        if data.strip(b"\r\n") == b"":
            return  # RFC 5626 keepalive
        user = self.user
        if user is None:
            return
        peer = Peer("udp", addr)
        try:
            message = sip.parse_datagram(data)
        except sip.SipParseError as exc:
            user.unreadable(data, f"malformed SIP: {exc.reason}", exc.partial, peer)
            return
        user.received(data, message, peer)

    async def _on_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name = writer.get_extra_info("peername")
        addr: Addr = (str(name[0]), int(name[1]))
        if len(self.streams) >= self.config.max_tcp_connections:
            self.stats["tcp_refused"] += 1
            log.warning(
                "GB28181 %s: %d TCP connections open (max_tcp_connections); closed %s:%d",
                self.name,
                len(self.streams),
                *addr,
            )
            writer.close()
            return
        self.streams[addr] = writer
        peer = Peer("tcp", addr)
        framer = sip.StreamFramer(self.config.max_body_bytes)
        try:
            while not framer.broken:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), self.config.tcp_idle_timeout_s)
                except TimeoutError:
                    self.stats["tcp_idle_closed"] += 1
                    log.info("GB28181 %s: TCP %s:%d idle; closed", self.name, *addr)
                    break
                if not chunk:
                    break
                user = self.user
                for item in framer.feed(chunk):
                    if user is None:
                        continue
                    if isinstance(item, sip.FramingError):
                        reason = item.reason
                        prefix = "oversized body" if "exceeds max_body_bytes" in reason else "malformed SIP"
                        user.unreadable(item.raw, f"{prefix}: {reason}", item.partial, peer)
                    else:
                        user.received(item.to_bytes(), item, peer)
        except (ConnectionError, OSError) as exc:
            log.debug("GB28181 TCP %s:%d closed: %s", addr[0], addr[1], exc)
        finally:
            self.streams.pop(addr, None)
            writer.close()
