"""HTTP push source: devices and gateways POST JSON readings; the answer comes
only once the readings are durable.

A raw ASGI app served by uvicorn inside the ingest event loop (no framework:
every status code is ours, nothing answers 422). For each request:

1. path matches ``path`` (404 otherwise), method is POST (405);
2. bearer token is one of ``tokens`` (401, no reject row: unauthenticated
   traffic must not be able to fill the ``rejected`` table);
3. the landing buffer has room (503 with Retry-After otherwise);
4. the body is at most ``max_body_bytes`` (413 and a reject);
5. the body decodes with the MQTT ``JsonReadingsCodec`` and every reading
   passes the schema validation (400 and a reject, with the same reason text
   in the answer and in ``rejected``). A request is all or nothing: a client
   told 400 fixes and resends the whole body, so landing part of it would
   duplicate the rest;
6. the rows go to the runner with an ``ack`` that resolves a future; the
   answer (200, or 400 for a recorded reject) is sent when the future
   resolves, i.e. after the landing commit, or 503 after ``ack_timeout_s``.

An ``Idempotency-Key`` header becomes the input id: a retry of a request whose
answer was lost in a crash is recognised from the last commits and answered
200 without landing it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import orjson
import uvicorn

from citylake.ingest.base import SourceContext, SourceUnavailable, StreamingSource
from citylake.ingest.http_push.codec import PathTemplate, bearer_token, token_index
from citylake.ingest.http_push.config import HttpPushSourceConfig
from citylake.ingest.mqtt.codec import JsonReadingsCodec, PayloadError
from citylake.schemas import table, validate_row

log = logging.getLogger(__name__)
READINGS = table("readings")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Response = tuple[int, object, list[tuple[bytes, bytes]]]


class _Server(uvicorn.Server):
    """uvicorn inside the ingest loop: the loop, not uvicorn, owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _TooLarge(Exception):
    pass


class HttpPushSource(StreamingSource):
    config_model = HttpPushSourceConfig

    def __init__(self, config: HttpPushSourceConfig) -> None:
        super().__init__(config)
        self.config: HttpPushSourceConfig = config
        parts = urlsplit(config.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 8080
        self.template = PathTemplate(config.path)
        self.codec = JsonReadingsCodec(config.timestamp_field, config.timestamp_unit, config.units)
        self._tokens = [(t if isinstance(t, str) else t.token).encode() for t in config.tokens]
        # Per token: the device-id patterns it is bound to (None: any), and the
        # scope of its Idempotency-Keys: a key names an input of one token only,
        # so another client cannot make a token's retries look like duplicates.
        self._grants = [None if isinstance(t, str) else tuple(t.devices) for t in config.tokens]
        self._scopes = [hashlib.sha256(t).hexdigest()[:12] for t in self._tokens]
        self._ctx: SourceContext | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.responses: dict[int, int] = {}  # status -> count, for tests and logs

    def is_up(self) -> bool:
        return self._server is not None and self._server.started

    def validate(self) -> list[str]:
        if "device_id" not in self.template.names:
            log.info("path %s has no {device_id}: payloads must carry one", self.config.path)
        return []

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        return sock

    async def check(self) -> None:
        """A listener's check: can it bind its address?"""
        try:
            self._bind().close()
        except OSError as exc:
            raise SourceUnavailable(f"HTTP push {self.config.url}: cannot listen: {exc}") from exc

    async def start(self, ctx: SourceContext) -> None:
        self._ctx = ctx
        # We bind the socket ourselves: uvicorn calls sys.exit() when it cannot
        # bind, which would end the whole ingest process.
        try:
            sock = self._bind()
        except OSError as exc:
            raise SourceUnavailable(f"HTTP push {self.config.url}: cannot listen: {exc}") from exc
        cfg = self.config
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            interface="asgi3",
            proxy_headers=False,
            timeout_keep_alive=30,
            # In-flight requests are answered once the runner's final flush acks them.
            timeout_graceful_shutdown=int(cfg.ack_timeout_s) + 1,
            ssl_certfile=cfg.tls_cert,
            ssl_keyfile=cfg.tls_key,
            ssl_cert_reqs=ssl.CERT_NONE,
        )
        server = _Server(config)
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name=f"http_push:{self.name}")
        deadline = time.monotonic() + 10
        while not server.started:
            if self._task.done() or time.monotonic() > deadline:
                raise SourceUnavailable(f"HTTP push {self.config.url}: server did not start")
            await asyncio.sleep(0.01)
        log.info("HTTP push %s listening on %s, path %s", self.name, self.config.url, self.config.path)

    async def stop(self) -> None:
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            await asyncio.wait_for(task, self.config.ack_timeout_s + 5)
        except TimeoutError:
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- ASGI -----------------------------------------------------------------

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        status, body, headers = await self._handle(scope, receive)
        self.responses[status] = self.responses.get(status, 0) + 1
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), *headers],
            }
        )
        await send({"type": "http.response.body", "body": orjson.dumps(body)})

    async def _handle(self, scope: Scope, receive: Receive) -> Response:
        ctx = self._ctx
        # The raw (still percent-encoded) path: "gauge%2F2" is one segment.
        raw_path: bytes | None = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else str(scope["path"])
        if path == "/healthz":
            return 200, {"status": "ok" if ctx is not None and ctx.ready() else "busy"}, []
        ids = self.template.match(path)
        if ids is None:
            return 404, {"error": f"no such path; POST to {self.config.path}"}, []
        if scope["method"] != "POST":
            return 405, {"error": "use POST"}, [(b"allow", b"POST")]
        headers = dict(scope["headers"])  # ASGI header names are lower-case bytes
        grant = token_index(bearer_token(headers.get(b"authorization")), self._tokens)
        if grant is None:
            return 401, {"error": "missing or wrong bearer token"}, [(b"www-authenticate", b"Bearer")]
        if ctx is None or not ctx.ready():
            # Backpressure: the device keeps its readings and retries.
            return 503, {"error": "ingest is busy; retry later"}, [(b"retry-after", b"1")]
        head = f"{scope['method']} {path} ".encode()
        limit = self.config.max_body_bytes
        declared = headers.get(b"content-length")
        try:
            body = await self._read_body(receive, limit, int(declared) if declared is not None else None)
        except _TooLarge as exc:
            reason = f"body of {exc} bytes exceeds max_body_bytes {limit} (path {path})"
            return await self._reject(ctx, head, reason, 413)
        except ValueError:
            return 400, {"error": "invalid Content-Length"}, []
        except ConnectionResetError:
            return 400, {"error": "incomplete body"}, []  # sent to nobody; uvicorn drops it
        key_header = headers.get(b"idempotency-key")
        key = f"{self._scopes[grant]}:{key_header.decode('latin-1')[:128]}" if key_header else None
        return await self._accept(ctx, ids, path, head + body, body, key, self._grants[grant])

    async def _accept(
        self,
        ctx: SourceContext,
        ids: dict[str, str],
        path: str,
        raw: bytes,
        body: bytes,
        key: str | None,
        devices: tuple[str, ...] | None = None,
    ) -> Response:
        """Decode, validate, hand over and wait until durable."""
        if key is not None and ctx.already_landed(key):
            return 200, {"accepted": None, "duplicate": True}, []
        try:
            decoded = self.codec.decode_columns(body, ids)
        except PayloadError as exc:
            return await self._reject(ctx, raw, f"{exc} (path {path})", 400, key)
        columns = decoded.as_columns(self.name, ctx.site, int(time.time() * 1000))
        count = len(decoded)
        if devices is not None:
            for device in dict.fromkeys(columns.get("device_id") or ()):
                if not any(fnmatch.fnmatchcase(str(device), pattern) for pattern in devices):
                    reason = f"token not allowed for device {str(device)[:80]!r} (path {path})"
                    return await self._reject(ctx, raw, reason, 403, key)
        for index in range(count):
            problem = validate_row(READINGS, {name: values[index] for name, values in columns.items()})
            if problem is not None:
                return await self._reject(ctx, raw, f"{problem} (path {path})", 400, key)
        if count == 0:
            return 200, {"accepted": 0}, []
        ack, durable = self._ack()
        kept = ctx.emit_columns(READINGS, columns, count, raw, ack, key)
        if not await self._wait(durable):
            return 503, {"error": "not durable in time; retry"}, [(b"retry-after", b"1")]
        if kept < count:
            # A reading whose metric has the other type (metric_types): landed in
            # `rejected`; its neighbours were accepted, so the answer is still 200.
            return 200, {"accepted": kept, "rejected": count - kept}, []
        return 200, {"accepted": count}, []

    async def _read_body(self, receive: Receive, limit: int, declared: int | None) -> bytes:
        if declared is not None and declared > limit:
            raise _TooLarge(declared)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await asyncio.wait_for(receive(), self.config.ack_timeout_s)
            if message["type"] == "http.disconnect":
                # The client went away mid-body: nothing to decode or answer.
                raise ConnectionResetError("client disconnected before the body was complete")
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                # Chunked uploads have no Content-Length: stop reading at the limit.
                raise _TooLarge(f"more than {limit}")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _ack(self) -> tuple[Callable[[], None], asyncio.Future[None]]:
        """An ack for the runner and the future it resolves. The runner calls
        acks after the landing commit, possibly from another thread."""
        loop = asyncio.get_running_loop()
        durable: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not durable.done():
                durable.set_result(None)

        def ack() -> None:
            loop.call_soon_threadsafe(resolve)

        return ack, durable

    async def _wait(self, durable: asyncio.Future[None]) -> bool:
        try:
            await asyncio.wait_for(durable, self.config.ack_timeout_s)
        except TimeoutError:
            log.warning("HTTP push %s: rows not durable within %.1f s", self.name, self.config.ack_timeout_s)
            return False
        return True

    async def _reject(
        self, ctx: SourceContext, raw: bytes, reason: str, status: int, key: str | None = None
    ) -> Response:
        """Record the input in ``rejected`` and answer once that is durable."""
        ack, durable = self._ack()
        ctx.reject(raw, reason, ack, key)
        await self._wait(durable)
        return status, {"error": reason}, []
