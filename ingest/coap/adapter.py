"""CoAP source, two ways round (``mode``):

- ``observe``: an aiocoap client registers as an observer (RFC 7641) of each
  configured resource and turns every notification into readings. An
  observation that ends (device reboot, 4.04, timeout, the server forgets us)
  is registered again with doubling backoff; ``device_events`` record
  ``online`` when an observation is (re)established and ``offline`` when it
  is lost. CoAP confirms a notification at the message layer (aiocoap sends
  the ACK), so delivery between a notification and the landing commit is at
  most once, as for OPC UA subscriptions; a notification that arrives while
  the landing buffer is full is skipped and counted (observe carries state:
  the next one supersedes it).
- ``server``: an aiocoap server that devices POST or PUT to, at ``path``
  (``{device_id}`` segments, as http_push). The response is ack-after-commit:
  2.04 Changed is sent only after the readings are durable (aiocoap answers a
  CON request with an empty ACK first and the response separately, RFC 7252
  5.2.2); 5.03 with Max-Age while the landing buffer is full or the commit is
  late, 4.13 above ``max_payload_bytes``, 4.15 for a Content-Format we do not
  decode, 4.00 with the reason for a payload that does not decode (also
  recorded in ``rejected``), 4.04 for other paths.

Payloads by Content-Format: ``codec.CoapPayloadCodec`` (SenML JSON/CBOR,
JSON, CBOR, text/plain).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence

import aiocoap
import orjson
from aiocoap import resource as coap_resource
from aiocoap.numbers.codes import Code

from citylake.config import SourceConfig
from citylake.ingest.backoff import Backoff
from citylake.ingest.base import Row, SourceContext, SourceUnavailable, StreamingSource, config_as
from citylake.ingest.coap.codec import FORMAT_NAMES, CoapPayloadCodec, SenmlDecoder
from citylake.ingest.coap.config import CoapResource, CoapSourceConfig, parse_coap_url
from citylake.ingest.configured_devices import configured_device_row
from citylake.ingest.http_push.codec import PathTemplate
from citylake.ingest.known_devices import KnownDevices
from citylake.ingest.mqtt.codec import JsonReadingsCodec, PayloadError, ReadingColumns
from citylake.ingest.reject_budget import RejectBudget
from citylake.schemas import EventKind, table, validate_row

log = logging.getLogger(__name__)
READINGS = table("readings")
DEVICE_EVENTS = table("device_events")
DEVICES = table("devices")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _content_format(message: aiocoap.Message) -> int | None:
    value = message.opt.content_format
    return None if value is None else int(value)


class CoapSource(StreamingSource):
    config_model = CoapSourceConfig

    def __init__(self, config: CoapSourceConfig) -> None:
        super().__init__(config)
        self.config: CoapSourceConfig = config
        self.codec = CoapPayloadCodec(
            JsonReadingsCodec(config.timestamp_field, config.timestamp_unit, config.units),
            SenmlDecoder(config.max_records),
            _now_ms,
        )
        self.template = PathTemplate(config.path)
        self._context: aiocoap.Context | None = None
        self._ctx: SourceContext | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.observing: dict[str, bool] = {}
        self.notifications = 0
        self.skipped_busy = 0
        self.responses: dict[str, int] = {}
        self._seen = KnownDevices(config.max_devices)
        self._budget = RejectBudget(config.max_rejects_per_s)

    # -- lifecycle ------------------------------------------------------------

    @classmethod
    def configured_devices(cls, config: SourceConfig, now_ms: int) -> Sequence[Row]:
        cfg = config_as(config, CoapSourceConfig)
        by_device: dict[str, list[str]] = {}
        for resource in cfg.resources:
            by_device.setdefault(resource.device_id, []).append(cfg.url_of(resource))
        for device_id in cfg.devices:
            by_device.setdefault(device_id, [])
        return [
            configured_device_row(
                device_id,
                "coap",
                cfg.devices.get(device_id),
                {"resources": urls, "mode": cfg.mode, "source": cfg.name},
                now_ms,
            )
            for device_id, urls in by_device.items()
        ]

    def is_up(self) -> bool:
        if self.config.mode == "server":
            return self._context is not None
        urls = {self.config.url_of(r) for r in self.config.resources}
        return all(self.observing.get(url, False) for url in urls)

    def counters(self) -> Mapping[str, int]:
        return {
            "notifications": self.notifications,
            "skipped_busy": self.skipped_busy,
            "rejects_suppressed": self._budget.suppressed,
            "devices_evicted": self._seen.evictions,
        }

    async def check(self) -> None:
        if self.config.mode == "server":
            import socket

            host, port = parse_coap_url(self.config.url)
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise SourceUnavailable(f"CoAP {self.config.url}: cannot listen: {exc}") from exc
            finally:
                sock.close()
            return
        context = await aiocoap.Context.create_client_context()
        try:
            failed = []
            for resource in self.config.resources:
                url = self.config.url_of(resource)
                try:
                    response = await asyncio.wait_for(
                        context.request(aiocoap.Message(code=Code.GET, uri=url)).response,
                        self.config.timeout_s,
                    )
                except (TimeoutError, aiocoap.error.Error) as exc:
                    failed.append(f"{url}: {type(exc).__name__} {exc}".rstrip())
                    continue
                if not response.code.is_successful():
                    failed.append(f"{url}: {response.code}")
            if failed:
                raise SourceUnavailable(f"CoAP source {self.name}: " + "; ".join(failed))
        finally:
            await context.shutdown()

    async def start(self, ctx: SourceContext) -> None:
        self._ctx = ctx
        if self.config.mode == "server":
            host, port = parse_coap_url(self.config.url)
            try:
                self._context = await aiocoap.Context.create_server_context(
                    _PushSite(self), bind=(host, port), transports=["udp6"]
                )
            except OSError as exc:
                raise SourceUnavailable(f"CoAP {self.config.url}: cannot listen: {exc}") from exc
            log.info("CoAP %s listening on %s, path %s", self.name, self.config.url, self.config.path)
            return
        self._context = await aiocoap.Context.create_client_context()
        for resource in self.config.resources:
            url = self.config.url_of(resource)
            self._tasks.append(asyncio.create_task(self._observe(ctx, resource, url), name=f"coap:{url}"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        context, self._context = self._context, None
        if context is not None:
            await context.shutdown()

    # -- observe --------------------------------------------------------------

    async def _observe(self, ctx: SourceContext, resource: CoapResource, url: str) -> None:
        cfg = self.config
        backoff = Backoff(cfg.reobserve_min_s, cfg.reobserve_max_s)
        while True:
            assert self._context is not None
            request = self._context.request(aiocoap.Message(code=Code.GET, uri=url, observe=0))
            reason = "observation ended"
            try:
                first = await asyncio.wait_for(request.response, cfg.timeout_s)
                if not first.code.is_successful():
                    raise _NotObservable(f"{first.code}")
                self._state(ctx, resource, url, True, None)
                backoff.reset()
                self.deliver(ctx, resource, url, first)
                async for notification in request.observation:
                    self.deliver(ctx, resource, url, notification)
            except asyncio.CancelledError:
                request.observation.cancel()
                raise
            except (TimeoutError, aiocoap.error.Error, _NotObservable) as exc:
                reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
            except Exception:  # one resource's bug must not stop the others
                log.exception("CoAP %s: observing %s failed", self.name, url)
                reason = "internal error"
            with contextlib.suppress(Exception):
                request.observation.cancel()
            self._state(ctx, resource, url, False, reason)
            log.info("CoAP %s: %s: %s; observing again in %.1f s", self.name, url, reason, backoff.delay_s)
            await backoff.sleep()

    def _state(
        self, ctx: SourceContext, resource: CoapResource, url: str, up: bool, reason: str | None
    ) -> None:
        if self.observing.get(url) == up:
            return
        self.observing[url] = up
        attributes: dict[str, object] = {"resource": url}
        if reason:
            attributes["reason"] = reason
        row = {
            "device_id": resource.device_id,
            "ts": _now_ms(),
            "kind": str(EventKind.ONLINE if up else EventKind.OFFLINE),
            "attributes": orjson.dumps(attributes, option=orjson.OPT_SORT_KEYS).decode(),
            "source": ctx.source,
            "site": ctx.site,
            "ingest_ts": _now_ms(),
        }
        ctx.emit(DEVICE_EVENTS, [row], f"{url} {row['kind']}".encode())

    def deliver(self, ctx: SourceContext, resource: CoapResource, url: str, message: aiocoap.Message) -> None:
        """One notification: readings, or a reject saying why not."""
        self.notifications += 1
        fmt = _content_format(message)
        raw = f"{url} {message.code} cf={fmt} ".encode() + message.payload[:2048]
        if not message.code.is_successful():
            ctx.reject(raw, f"coap notification {message.code}: {url}")
            return
        if not ctx.ready():
            self.skipped_busy += 1
            return
        if len(message.payload) > self.config.max_payload_bytes:
            ctx.reject(raw, f"coap payload too large: {len(message.payload)} bytes from {url} "
                            f"(max_payload_bytes {self.config.max_payload_bytes})")  # fmt: skip
            return
        try:
            decoded = self.codec.decode(fmt, message.payload, resource.device_id, resource.metric or None)
        except PayloadError as exc:
            ctx.reject(raw, f"coap {FORMAT_NAMES.get(fmt or 0, f'cf {fmt}')}: {exc} ({url})")
            return
        if resource.unit is not None:
            decoded.unit[:] = [u if u is not None else resource.unit for u in decoded.unit]
        ctx.emit_columns(READINGS, decoded.as_columns(ctx.source, ctx.site, _now_ms()), len(decoded), raw)

    # -- server ---------------------------------------------------------------

    def _count(self, code: Code) -> None:
        key = str(code)
        self.responses[key] = self.responses.get(key, 0) + 1

    async def handle_push(self, request: aiocoap.Message) -> aiocoap.Message:
        response = await self._push(request)
        self._count(response.code)
        return response

    async def _push(self, request: aiocoap.Message) -> aiocoap.Message:
        ctx = self._ctx
        path = "/" + "/".join(request.opt.uri_path)
        ids = self.template.match(path)
        if ids is None:
            return aiocoap.Message(code=Code.NOT_FOUND, payload=f"POST to {self.config.path}".encode())
        if ctx is None or not ctx.ready():
            return aiocoap.Message(code=Code.SERVICE_UNAVAILABLE, max_age=1, payload=b"busy; retry")
        fmt = _content_format(request)
        peer = str(request.remote.hostinfo) if request.remote is not None else "?"
        raw = f"{request.code} {path} cf={fmt} from {peer} ".encode() + request.payload[:2048]
        if len(request.payload) > self.config.max_payload_bytes:
            reason = (f"coap payload too large: {len(request.payload)} bytes to {path} "
                      f"(max_payload_bytes {self.config.max_payload_bytes})")  # fmt: skip
            self._reject(ctx, raw, reason)
            return aiocoap.Message(code=Code.REQUEST_ENTITY_TOO_LARGE, payload=reason.encode()[:200])
        if fmt is not None and fmt not in FORMAT_NAMES:
            reason = f"coap unsupported Content-Format {fmt} ({path})"
            self._reject(ctx, raw, reason)
            return aiocoap.Message(code=Code.UNSUPPORTED_CONTENT_FORMAT, payload=reason.encode())
        device_id = ids.get("device_id")
        try:
            decoded = self.codec.decode(fmt, request.payload, device_id, ids.get("metric"))
            columns = decoded.as_columns(ctx.source, ctx.site, _now_ms())
            for index in range(len(decoded)):
                problem = validate_row(READINGS, {k: v[index] for k, v in columns.items()})
                if problem is not None:
                    raise PayloadError(problem)
        except PayloadError as exc:
            reason = f"coap {FORMAT_NAMES.get(fmt or 0, 'payload')}: {exc} ({path})"
            self._reject(ctx, raw, reason)
            return aiocoap.Message(code=Code.BAD_REQUEST, payload=reason.encode()[:512])
        self._describe(ctx, decoded, ids, raw)
        loop = asyncio.get_running_loop()
        durable: asyncio.Future[None] = loop.create_future()

        def ack() -> None:  # the runner calls it after the commit, maybe from another thread
            loop.call_soon_threadsafe(_resolve, durable)

        ctx.emit_columns(READINGS, columns, len(decoded), raw, ack)
        try:
            await asyncio.wait_for(durable, self.config.ack_timeout_s)
        except TimeoutError:
            return aiocoap.Message(
                code=Code.SERVICE_UNAVAILABLE, max_age=1, payload=b"not durable in time; retry"
            )
        return aiocoap.Message(code=Code.CHANGED)

    def _reject(self, ctx: SourceContext, raw: bytes, reason: str) -> None:
        # Anyone who can reach the port can send: land at most the budget, count all.
        if self._budget.allow():
            ctx.reject(raw, reason)

    def _describe(self, ctx: SourceContext, decoded: ReadingColumns, ids: dict[str, str], raw: bytes) -> None:
        now = _now_ms()
        rows = []
        for device_id in dict.fromkeys(decoded.device_id):
            first = self._seen.observe(device_id, None, now)
            if first is None:
                continue
            meta = self.config.devices.get(device_id)
            row = dict(configured_device_row(device_id, "coap", meta, {"source": self.name}, first))
            row["last_seen"] = now
            rows.append(row)
        if rows:
            ctx.describe_devices(rows, raw)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _NotObservable(Exception):
    """The device answered the registration with an error code."""


class _PushSite(coap_resource.Resource):  # type: ignore[misc]  # aiocoap is untyped
    """The whole server: POST and PUT on any path go to ``CoapSource.handle_push``
    (which matches ``path``); other methods get 4.05 from aiocoap. Blockwise
    transfers (RFC 7959) are assembled first: large SenML packs arrive in blocks."""

    def __init__(self, source: CoapSource) -> None:
        super().__init__()
        self.source = source

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        return await self.source.handle_push(request)

    async def render_put(self, request: aiocoap.Message) -> aiocoap.Message:
        return await self.source.handle_push(request)
