"""WebSocket push source: gateways and apps keep a connection open and send
JSON readings in the shapes HTTP push takes (one reading object or an array;
decoded by the same ``JsonReadingsCodec``), each text message answered with
an ack once its readings are durable in the landing zone.

Per connection: the handshake needs a bearer token (401 otherwise, no
reject row: unauthenticated clients cannot fill ``rejected``) and a path that
matches ``path`` (404); messages are numbered from 1 and each is answered,
in order, with ``{"ack": n, "accepted": k}`` after landing or ``{"ack": n,
"error": reason}`` after its reject row landed. A token bucket bounds the
messages a connection may send per second: over it, the connection is not
read (the client's sends block), nothing is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from citylake.ingest.base import SourceContext, SourceUnavailable, StreamingSource
from citylake.ingest.http_push.codec import PathTemplate, bearer_token, token_accepted
from citylake.ingest.mqtt.codec import JsonReadingsCodec, PayloadError
from citylake.ingest.websocket.config import WebSocketSourceConfig
from citylake.schemas import table, validate_row

log = logging.getLogger(__name__)
READINGS = table("readings")
BACKPRESSURE_POLL_S = 0.05
CLOSE_TOO_BIG = 1009  # RFC 6455 7.4.1
MAX_IN_FLIGHT = 32  # messages of one connection being landed at once


class TokenBucket:
    """``rate`` per second, up to ``burst`` at once; the clock is injected."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def wait_s(self, now: float) -> float:
        """0 and one token taken, or how long until one is there."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class WebSocketSource(StreamingSource):
    config_model = WebSocketSourceConfig

    def __init__(self, config: WebSocketSourceConfig) -> None:
        super().__init__(config)
        self.config: WebSocketSourceConfig = config
        self.template = PathTemplate(config.path)
        self.codec = JsonReadingsCodec(config.timestamp_field, config.timestamp_unit, config.units)
        self._tokens = [t.encode() for t in config.tokens]
        self._ctx: SourceContext | None = None
        self._server: Server | None = None
        self.connections = 0
        self.refused: dict[str, int] = {"unauthorized": 0, "not_found": 0, "busy": 0}
        self.rate_limited = 0
        self.acks_sent = 0

    def is_up(self) -> bool:
        return self._server is not None

    def counters(self) -> Mapping[str, int]:
        return {
            "connections": self.connections,
            **{f"handshakes_refused_{k}": v for k, v in self.refused.items()},
            "rate_limited": self.rate_limited,
            "acks_sent": self.acks_sent,
        }

    async def check(self) -> None:
        import socket

        with socket.socket() as sock:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.config.host, self.config.port))
            except OSError as exc:
                raise SourceUnavailable(f"WebSocket {self.config.url}: cannot listen: {exc}") from exc

    async def start(self, ctx: SourceContext) -> None:
        self._ctx = ctx
        cfg = self.config
        tls: ssl.SSLContext | None = None
        if cfg.tls_cert and cfg.tls_key:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        try:
            self._server = await serve(
                self._connection,
                cfg.host,
                cfg.port,
                process_request=self._handshake,
                max_size=cfg.max_message_bytes,
                # Reading is ours to pace: a small queue keeps unread frames in TCP.
                max_queue=4,
                compression=None,
                ssl=tls,
                server_header=None,
            )
        except OSError as exc:
            raise SourceUnavailable(f"WebSocket {cfg.url}: cannot listen: {exc}") from exc
        log.info("WebSocket %s listening on %s, path %s", self.name, cfg.url, cfg.path)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), self.config.ack_timeout_s + 5)

    def _handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if self.template.match(path) is None:
            self.refused["not_found"] += 1
            return connection.respond(
                http.HTTPStatus.NOT_FOUND, f"no such path; connect to {self.config.path}\n"
            )
        header = request.headers.get("Authorization")
        if not token_accepted(bearer_token(header.encode() if header else None), self._tokens):
            self.refused["unauthorized"] += 1
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token\n")
        if self.connections >= self.config.max_connections:
            self.refused["busy"] += 1
            return connection.respond(
                http.HTTPStatus.SERVICE_UNAVAILABLE, "too many connections; retry later\n"
            )
        return None

    async def _connection(self, connection: ServerConnection) -> None:
        ctx = self._ctx
        assert ctx is not None and connection.request is not None
        path = connection.request.path.split("?", 1)[0]
        ids = self.template.match(path) or {}
        bucket = TokenBucket(self.config.max_messages_per_s, self.config.burst, time.monotonic())
        # Messages are decoded and landed while the next ones are read (a
        # connection is not held to one landing flush per message); the
        # answers go out in order. Bounded: at most MAX_IN_FLIGHT per connection.
        pending: asyncio.Queue[asyncio.Task[dict[str, Any]] | None] = asyncio.Queue(MAX_IN_FLIGHT)
        answering = asyncio.create_task(self._answer_in_order(connection, pending))
        self.connections += 1
        sequence = 0
        try:
            while True:
                await self._paced(ctx, bucket)
                try:
                    message = await connection.recv()
                except ConnectionClosed as exc:
                    # The library closes with 1009 when a message exceeds max_size.
                    if exc.sent is not None and exc.sent.code == CLOSE_TOO_BIG:
                        limit = self.config.max_message_bytes
                        ctx.reject(
                            path.encode(), f"message too big: over max_message_bytes {limit} (path {path})"
                        )
                    return
                sequence += 1
                await pending.put(asyncio.create_task(self._take(ctx, ids, path, message, sequence)))
        finally:
            self.connections -= 1
            await pending.put(None)
            await answering

    async def _answer_in_order(
        self, connection: ServerConnection, pending: asyncio.Queue[asyncio.Task[dict[str, Any]] | None]
    ) -> None:
        closed = False
        while (task := await pending.get()) is not None:
            answer = await task
            if closed:
                continue  # keep draining, so the reader is never stuck on a full queue
            try:
                await connection.send(orjson.dumps(answer).decode())
                self.acks_sent += 1
            except ConnectionClosed:
                closed = True  # the client resends what it got no ack for

    async def _paced(self, ctx: SourceContext, bucket: TokenBucket) -> None:
        limited = False
        while True:
            if not ctx.ready():
                await asyncio.sleep(BACKPRESSURE_POLL_S)
                continue
            wait = bucket.wait_s(time.monotonic())
            if wait == 0:
                return
            if not limited:
                self.rate_limited += 1
                limited = True
            await asyncio.sleep(wait)

    async def _take(
        self, ctx: SourceContext, ids: dict[str, str], path: str, message: str | bytes, sequence: int
    ) -> dict[str, Any]:
        if isinstance(message, bytes):
            return await self._reject(
                ctx, message, f"binary message: send JSON as text (path {path})", sequence
            )
        body = message.encode()
        try:
            decoded = self.codec.decode_columns(body, ids)
        except PayloadError as exc:
            return await self._reject(ctx, body, f"{exc} (path {path})", sequence)
        columns = decoded.as_columns(self.name, ctx.site, int(time.time() * 1000))
        count = len(decoded)
        for index in range(count):
            problem = validate_row(READINGS, {name: values[index] for name, values in columns.items()})
            if problem is not None:
                # All or nothing, as HTTP push: the client resends the whole message.
                return await self._reject(ctx, body, f"{problem} (path {path})", sequence)
        if count == 0:
            return {"ack": sequence, "accepted": 0}
        ack, durable = self._durable()
        kept = ctx.emit_columns(READINGS, columns, count, body, ack)
        if not await self._wait(durable):
            return {"ack": sequence, "error": "not durable in time; resend"}
        if kept < count:
            return {"ack": sequence, "accepted": kept, "rejected": count - kept}
        return {"ack": sequence, "accepted": count}

    async def _reject(self, ctx: SourceContext, raw: bytes, reason: str, sequence: int) -> dict[str, Any]:
        ack, durable = self._durable()
        ctx.reject(raw, reason, ack)
        await self._wait(durable)
        return {"ack": sequence, "error": reason}

    def _durable(self) -> tuple[Callable[[], None], asyncio.Future[None]]:
        loop = asyncio.get_running_loop()
        durable: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not durable.done():
                durable.set_result(None)

        def ack() -> None:  # the runner, after the landing commit, any thread
            loop.call_soon_threadsafe(resolve)

        return ack, durable

    async def _wait(self, durable: asyncio.Future[None]) -> bool:
        try:
            await asyncio.wait_for(durable, self.config.ack_timeout_s)
        except TimeoutError:
            return False
        return True
