"""Modbus source: every configured device is a poll target on the runner's loop.

Each ``ModbusDevicePoller`` reads its device with the request plan made once
at start (codec.plan_requests) and emits one batch of ``readings`` per request.
Devices on the same endpoint share one ``EndpointConnection``.

Error policy (one rule for every failure): a request that yields no values
(exception response, no answer after the retries, a bad frame, no connection)
never raises out of ``poll``. Each of its fields gets a row with
``quality=2`` (bad) and no value, at the poll's time, and the request is
recorded once in ``rejected`` with a reason
``modbus <what>: device <id> (slave <n>) <type> <first>..<last>[: detail]``;
the text before the first colon is the rejected-metrics label, so it names the
kind of failure only. After a request goes unanswered (or the connection
fails), the device's remaining requests in that poll are not sent: they get
the same bad rows and a ``modbus skipped`` reject, so a dead slave costs one
timeout per poll and does not hold a shared gateway for the others.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
from collections.abc import Sequence

from citylake.config import SourceConfig
from citylake.ingest.base import PollingSource, PollTarget, Row, SourceContext, SourceUnavailable, config_as
from citylake.ingest.configured_devices import configured_device_row
from citylake.ingest.modbus.codec import DecodeError, ModbusRequest, ModbusRequestPlan, plan_requests
from citylake.ingest.modbus.config import ModbusDevice, ModbusSourceConfig
from citylake.ingest.modbus.connection import (
    EndpointConnection,
    ModbusConnectionFailed,
    ModbusExceptionResponse,
    ModbusNoResponse,
    ModbusReadError,
    ReadResult,
)
from citylake.schemas import Quality, table

log = logging.getLogger(__name__)
READINGS = table("readings")
_GOOD, _BAD = int(Quality.GOOD), int(Quality.BAD)
# Exception codes 5 (acknowledge) and 6 (busy) mean "ask again later".
TRANSIENT_EXCEPTIONS = frozenset({5, 6})


def _now_ms() -> int:
    return int(time.time() * 1000)


class ModbusDevicePoller(PollTarget):
    """Polls one device (one slave id) on its own interval."""

    def __init__(
        self, device: ModbusDevice, config: ModbusSourceConfig, connection: EndpointConnection
    ) -> None:
        self.device = device
        self.name = device.device_id
        self.interval_s = device.interval_s if device.interval_s is not None else config.interval_s
        self.timeout_s = device.timeout_s if device.timeout_s is not None else config.timeout_s
        self.retries = device.retries if device.retries is not None else config.retries
        self.backoff_s = device.backoff_s if device.backoff_s is not None else config.backoff_s
        self.connection = connection
        self.plan = ModbusRequestPlan(
            tuple(
                plan_requests(
                    device.register_fields,
                    max_gap=config.max_gap_registers,
                    max_regs=config.max_registers_per_request,
                    max_bits=config.max_bits_per_request,
                    one_per_field=config.one_request_per_field,
                )
            )
        )
        self._units = {f.name: f.unit for f in device.register_fields}
        # By row count: the context they were made for and its device, source and site columns.
        self._constant: dict[int, tuple[SourceContext, list[object], list[object], list[object]]] = {}
        # Per request, fixed for the life of the poller: the metric and unit
        # columns and the start of ``raw``. A poll only adds what was read.
        key = connection.endpoint.key
        self._requests = tuple(
            (
                request,
                [part.field.name for part in request.fields],
                [self._units[part.field.name] for part in request.fields],
                f"{key} slave {device.slave_id} request {request.pdu().hex()} -> ",
            )
            for request in self.plan.requests
        )

    async def poll(self, ctx: SourceContext) -> None:
        ts = _now_ms()
        unanswered: str | None = None
        for request, metrics, units, raw_prefix in self._requests:
            if unanswered is not None:
                self._bad(ctx, request, ts, "skipped", f"not sent after {unanswered}")
                continue
            try:
                result = await self._read(request)
                columns = self._columns(ctx, request, result, ts, metrics, units)
            except ModbusExceptionResponse as exc:
                self._bad(ctx, request, ts, str(exc), None)
            except (ModbusNoResponse, ModbusConnectionFailed) as exc:
                kind = "connection failed" if isinstance(exc, ModbusConnectionFailed) else "no response"
                self._bad(ctx, request, ts, kind, str(exc))
                unanswered = f"{kind} on {request.describe()}"
            except (ModbusReadError, DecodeError) as exc:
                self._bad(ctx, request, ts, "bad response", str(exc))
            else:
                raw = (raw_prefix + result.payload().hex()).encode()
                ctx.emit_columns(READINGS, columns, len(metrics), raw)

    async def _read(self, request: ModbusRequest) -> ReadResult:
        """``request`` with up to ``retries`` more tries after no answer or a busy
        device, waiting ``backoff_s`` (doubling) in between."""
        attempt = 0
        while True:
            try:
                return await self.connection.read(request, self.device.slave_id, self.timeout_s)
            except ModbusExceptionResponse as exc:
                if exc.code not in TRANSIENT_EXCEPTIONS or attempt >= self.retries:
                    raise
            except ModbusNoResponse:
                if attempt >= self.retries:
                    raise
            await asyncio.sleep(self.backoff_s * 2**attempt)
            attempt += 1

    def _row(self, ctx: SourceContext, metric: str, ts: int, quality: Quality) -> dict[str, object]:
        return {
            "device_id": self.device.device_id,
            "ts": ts,
            "metric": metric,
            "value": None,
            "text": None,
            "unit": self._units.get(metric),
            "quality": int(quality),
            "source": ctx.source,
            "site": ctx.site,
            "ingest_ts": _now_ms(),
        }

    def _columns(
        self,
        ctx: SourceContext,
        request: ModbusRequest,
        result: ReadResult,
        ts: int,
        metrics: list[str],
        units: list[str | None],
    ) -> dict[str, Sequence[object]]:
        """One request's readings as columns (the batcher's fast path)."""
        values: list[object] = []
        texts: list[object] = []
        qualities: list[object] = []
        numbers = request.numbers(result.words)
        if numbers is not None:  # the common register map: numbers only, two struct calls each
            values.extend(numbers)
            texts = [None] * len(numbers)
            qualities = [_BAD if number is None else _GOOD for number in numbers]
        else:
            for _, decoded in request.decode(result.words, result.bits):
                number, text = decoded.number, decoded.text
                values.append(number)
                texts.append(text)
                # NaN or infinity is how many meters say "no value": a bad row, not a reject.
                qualities.append(_BAD if number is None and text is None else _GOOD)
        count = len(values)
        constant = self._constant.get(count)
        if constant is None or constant[0] is not ctx:
            # The batcher copies what it is given, so one poll's lists serve the next.
            constant = self._constant[count] = (
                ctx,
                [self.device.device_id] * count,
                [ctx.source] * count,
                [ctx.site] * count,
            )
        return {
            "device_id": constant[1],
            "ts": [ts] * count,
            "metric": metrics,
            "value": values,
            "text": texts,
            "unit": units,
            "quality": qualities,
            "source": constant[2],
            "site": constant[3],
            "ingest_ts": [_now_ms()] * count,
        }

    def _raw(self, request: ModbusRequest, outcome: str) -> bytes:
        key = self.connection.endpoint.key
        return f"{key} slave {self.device.slave_id} request {request.pdu().hex()} -> {outcome}".encode()

    def _bad(
        self, ctx: SourceContext, request: ModbusRequest, ts: int, kind: str, detail: str | None
    ) -> None:
        where = f"device {self.device.device_id} (slave {self.device.slave_id}) {request.describe()}"
        reason = f"modbus {kind}: {where}" + (f": {detail}" if detail else "")
        raw = self._raw(request, reason)
        rows = [self._row(ctx, part.field.name, ts, Quality.BAD) for part in request.fields]
        ctx.emit(READINGS, rows, raw)
        ctx.reject(raw, reason)
        log.debug("%s", reason)


class ModbusSource(PollingSource):
    """Polls Modbus devices over TCP, RTU over TCP or serial RTU."""

    config_model = ModbusSourceConfig

    def __init__(self, config: ModbusSourceConfig) -> None:
        super().__init__(config)
        self.config: ModbusSourceConfig = config
        by_endpoint: dict[str, list[ModbusDevice]] = {}
        for device in config.devices:
            by_endpoint.setdefault(config.endpoint_of(device).key, []).append(device)
        self.connections: dict[str, EndpointConnection] = {}
        self._pollers: list[ModbusDevicePoller] = []
        for key, devices in by_endpoint.items():
            timeout = max(d.timeout_s or config.timeout_s for d in devices)
            connection = EndpointConnection(
                config.endpoint_of(devices[0]), timeout, config.backoff_s, config.max_backoff_s,
                config.pause_between_requests_s,
            )  # fmt: skip
            self.connections[key] = connection
            self._pollers.extend(ModbusDevicePoller(d, config, connection) for d in devices)
        # In configuration order (by identity: comparing pydantic models is slow).
        order = {id(d): i for i, d in enumerate(config.devices)}
        self._pollers.sort(key=lambda p: order[id(p.device)])

    def validate(self) -> list[str]:
        serial = sorted(k for k, c in self.connections.items() if c.endpoint.transport == "serial")
        if serial and importlib.util.find_spec("serial") is None:
            return [f"{', '.join(serial)}: serial Modbus needs the pyserial package (pip install pyserial)"]
        return []

    def targets(self) -> Sequence[ModbusDevicePoller]:
        return self._pollers

    @classmethod
    def configured_devices(cls, config: SourceConfig, now_ms: int) -> Sequence[Row]:
        cfg = config_as(config, ModbusSourceConfig)
        return [
            configured_device_row(
                device.device_id,
                "modbus",
                device,
                {
                    "endpoint": cfg.endpoint_of(device).key,
                    "slave_id": device.slave_id,
                    "profile": device.profile,
                    "interval_s": device.interval_s or cfg.interval_s,
                    "metrics": [f.name for f in device.register_fields],
                    "source": cfg.name,
                },
                now_ms,
            )
            for device in cfg.devices
        ]

    def is_up(self) -> bool:
        return all(c.connected for c in self.connections.values())

    async def check(self) -> None:
        failed: list[str] = []
        for key, shared in self.connections.items():
            # A throwaway connection: the shared one's backoff must not be spent here.
            probe = EndpointConnection(shared.endpoint, shared.connect_timeout_s, 0.0, 0.0)
            try:
                await probe.connect()
            except ModbusConnectionFailed as exc:
                devices = [p.name for p in self._pollers if p.connection is shared]
                failed.append(f"{exc} (devices {', '.join(devices)})")
                log.debug("check of %s failed", key)
            finally:
                probe.close()
        if failed:
            raise SourceUnavailable(f"modbus source {self.name}: " + "; ".join(failed))

    async def close(self) -> None:
        for connection in self.connections.values():
            async with connection.lock:
                connection.close()
