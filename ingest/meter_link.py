"""One request, one reply on a meter line: a TCP transparent gateway or a serial port.

DL/T 645, CJ/T 188 and wired M-Bus meters sit on an RS-485 (or M-Bus) line
that answers one request at a time, reached either through a serial server
("transparent gateway": bytes in on TCP, bytes out on the line) or through a
local serial port. All three frame their replies the same way at this layer:
a start byte somewhere after optional wake-up bytes, a length, an end byte.
So the line is shared here and the protocol brings only a ``FrameFinder``.

Requests on one line are serialised by an ``asyncio.Lock``; the line connects
lazily, reconnects after a failure with exponential backoff, and every
exchange is bounded in time and in bytes (``max_reply_bytes``): a peer that
streams garbage costs one counted error, never memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger(__name__)

Parity = Literal["N", "E", "O"]
_SERIAL_KEYS = {"baudrate", "parity", "stopbits", "bytesize"}


class FrameError(Exception):
    """The bytes on the line cannot be (the start of) a valid frame; ``str()`` says why."""


# buffer -> (start, end) of the first complete frame, or None while more bytes are
# needed. Raises FrameError when the buffer can never become a valid frame.
FrameFinder = Callable[[bytes], "tuple[int, int] | None"]


class LinkError(Exception):
    """An exchange that yielded no frame; ``kind`` labels it for the reject reason."""

    kind = "link error"

    def __init__(self, message: str, raw: bytes = b"") -> None:
        super().__init__(message)
        self.raw = raw


class LinkNoResponse(LinkError):
    kind = "no response"


class LinkConnectionFailed(LinkError):
    kind = "connection failed"


class LinkBadFrame(LinkError):
    kind = "bad frame"


@dataclass(frozen=True)
class LinkEndpoint:
    """Where a meter is reached. Meters with equal ``key`` share one line."""

    transport: Literal["tcp", "serial"]
    host: str = ""
    port: int = 0
    serial_port: str = ""
    baudrate: int = 2400
    parity: Parity = "E"
    stopbits: int = 1
    bytesize: int = 8

    @property
    def key(self) -> str:
        """A normalised URL: ``tcp://127.0.0.1:8899``, ``serial:///dev/ttyS0?2400-8E1``."""
        if self.transport == "serial":
            return f"serial://{self.serial_port}?{self.baudrate}-{self.bytesize}{self.parity}{self.stopbits}"
        return f"tcp://{self.host}:{self.port}"


def parse_link_url(url: str, default_baudrate: int = 2400, default_parity: Parity = "E") -> LinkEndpoint:
    """``tcp://host:port`` (a transparent serial server) or
    ``serial:///dev/ttyUSB0?baudrate=2400&parity=E&stopbits=1&bytesize=8``;
    the protocol's usual line settings are the defaults."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "tcp":
        if not parts.hostname:
            raise ValueError(f"no host in {url!r}; expected tcp://host:port")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{url!r}: the port must be a number 1..65535") from None
        if port is None or parts.query or parts.path not in ("", "/"):
            raise ValueError(f"{url!r}: a tcp:// url is host:port only, with the port")
        return LinkEndpoint("tcp", host=parts.hostname, port=port)
    if scheme == "serial":
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError(f"{url!r}: expected serial:///dev/ttyX?baudrate=2400 (three slashes)")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(query) - _SERIAL_KEYS)
        if unknown:
            raise ValueError(f"{url!r}: unknown serial option(s) {unknown}; known: {sorted(_SERIAL_KEYS)}")
        parity = query.get("parity", default_parity).upper()
        if parity not in ("N", "E", "O"):
            raise ValueError(f"{url!r}: parity must be N, E or O")
        try:
            baudrate = int(query.get("baudrate", default_baudrate))
            stopbits = int(query.get("stopbits", 1))
            bytesize = int(query.get("bytesize", 8))
        except ValueError:
            raise ValueError(f"{url!r}: baudrate, stopbits and bytesize are numbers") from None
        if stopbits not in (1, 2) or bytesize not in (7, 8) or baudrate <= 0:
            raise ValueError(f"{url!r}: stopbits 1|2, bytesize 7|8, baudrate > 0")
        return LinkEndpoint(
            "serial", serial_port=parts.path, baudrate=baudrate, parity=parity,  # type: ignore[arg-type]
            stopbits=stopbits, bytesize=bytesize,
        )  # fmt: skip
    raise ValueError(f"{url!r}: scheme must be tcp:// (a serial server) or serial:// (a local port)")


class _Channel:
    """Bytes to and from the line; the exchange logic is in ``MeterLink``."""

    async def write(self, data: bytes) -> None:
        raise NotImplementedError

    async def read_some(self) -> bytes:
        """At least one byte; b"" when the peer closed."""
        raise NotImplementedError

    def discard_pending(self) -> None:
        """Drop bytes that arrived between exchanges (a late reply, line noise)."""

    def close(self) -> None:
        raise NotImplementedError


class _TcpChannel(_Channel):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_some(self) -> bytes:
        return await self.reader.read(512)

    def discard_pending(self) -> None:
        # StreamReader keeps what arrived in its buffer; there is no public
        # "drop", so read what is there without waiting.
        buffered = len(getattr(self.reader, "_buffer", b""))
        if buffered:
            self.reader._buffer.clear()  # type: ignore[attr-defined]

    def close(self) -> None:
        self.writer.close()


class _SerialChannel(_Channel):
    """A pyserial port read through the event loop (``add_reader``): no thread,
    no blocking read on the loop."""

    def __init__(self, port: Any) -> None:
        self.port = port
        self.fd: int = port.fileno()
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)
        asyncio.get_running_loop().add_reader(self.fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, 512)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if self._chunks.full():  # nobody is reading: an unsolicited flood
            self.discard_pending()
        self._chunks.put_nowait(data)

    async def write(self, data: bytes) -> None:
        self.port.write(data)

    async def read_some(self) -> bytes:
        return await self._chunks.get()

    def discard_pending(self) -> None:
        while not self._chunks.empty():
            self._chunks.get_nowait()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.fd)
        self.port.close()


def _open_serial(endpoint: LinkEndpoint) -> Any:
    import serial  # type: ignore[import-untyped]  # pyserial: imported only by sites with a serial line

    return serial.Serial(
        endpoint.serial_port, baudrate=endpoint.baudrate, bytesize=endpoint.bytesize,
        parity=endpoint.parity, stopbits=endpoint.stopbits, timeout=0, exclusive=True,
    )  # fmt: skip


class MeterLink:
    """The one connection to a line, shared by every meter on it."""

    def __init__(
        self,
        endpoint: LinkEndpoint,
        connect_timeout_s: float = 3.0,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_reply_bytes: int = 1024,
    ) -> None:
        self.endpoint = endpoint
        self.connect_timeout_s = connect_timeout_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_reply_bytes = max_reply_bytes
        self.lock = asyncio.Lock()
        self.exchanges = 0
        self.reconnects = 0
        self._channel: _Channel | None = None
        self._failures = 0
        self._next_connect_at = 0.0

    @property
    def connected(self) -> bool:
        return self._channel is not None

    async def connect(self) -> None:
        """Connect if not connected; within the backoff after a failure, fail at once."""
        if self._channel is not None:
            return
        now = time.monotonic()
        if now < self._next_connect_at:
            wait = self._next_connect_at - now
            raise LinkConnectionFailed(f"not connected to {self.endpoint.key} (next attempt in {wait:.1f}s)")
        ep = self.endpoint
        try:
            if ep.transport == "tcp":
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(ep.host, ep.port), self.connect_timeout_s
                )
                self._channel = _TcpChannel(reader, writer)
            else:
                self._channel = _SerialChannel(_open_serial(ep))
        except TimeoutError:
            self._failed(f"no connection within {self.connect_timeout_s}s")
        except (OSError, ValueError, ImportError) as exc:  # serial.SerialException is an OSError
            self._failed(str(exc) or type(exc).__name__)
        self._failures = 0
        log.info("meter line %s: connected", ep.key)

    def _failed(self, reason: str) -> None:
        delay = min(self.max_backoff_s, self.backoff_s * 2**self._failures)
        self._failures += 1
        self._next_connect_at = time.monotonic() + delay
        log.warning("meter line %s: %s; next attempt in %.1fs", self.endpoint.key, reason, delay)
        raise LinkConnectionFailed(f"cannot connect to {self.endpoint.key}: {reason}")

    def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()

    async def exchange(self, request: bytes, find_frame: FrameFinder, timeout_s: float) -> bytes:
        """Send ``request``, return the first complete reply frame within ``timeout_s``.
        Raises ``LinkNoResponse``, ``LinkConnectionFailed`` or ``LinkBadFrame``
        (with the bytes received, for ``rejected.raw``)."""
        async with self.lock:
            await self.connect()
            channel = self._channel
            assert channel is not None
            self.exchanges += 1
            channel.discard_pending()
            buffer = bytearray()
            try:
                async with asyncio.timeout(timeout_s):
                    await channel.write(request)
                    while True:
                        chunk = await channel.read_some()
                        if not chunk:
                            self.close()
                            self.reconnects += 1
                            raise LinkConnectionFailed(f"{self.endpoint.key} closed the connection")
                        buffer += chunk
                        span = find_frame(bytes(buffer))
                        if span is not None:
                            return bytes(buffer[span[0] : span[1]])
                        if len(buffer) > self.max_reply_bytes:
                            raise LinkBadFrame(
                                f"no valid frame in {len(buffer)} bytes (limit {self.max_reply_bytes})",
                                bytes(buffer[:256]),
                            )
            except TimeoutError:
                detail = f"; {len(buffer)} bytes of no complete frame" if buffer else ""
                raise LinkNoResponse(f"no reply within {timeout_s}s{detail}", bytes(buffer[:256])) from None
            except FrameError as exc:
                raise LinkBadFrame(str(exc), bytes(buffer[:256])) from None
            except (ConnectionError, OSError) as exc:
                self.close()
                self.reconnects += 1
                raise LinkConnectionFailed(f"connection to {self.endpoint.key} lost: {exc}") from None
