"""IEC 60870-5-104 source: a c104 client (lib60870 underneath) connects to an
RTU, starts data transfer, sends a general interrogation and then receives
spontaneous measurands; every configured information object becomes a
``readings`` row with its quality descriptor as quality and its CP56Time2a
time tag (where the type has one) as event time.

c104 runs its own thread: it connects, reconnects, answers TESTFR and
acknowledges I-frames (S-frames) by itself. Its callbacks run on that
thread and hand rows to the thread-safe ``SourceContext``. The connection's
state changes land as ``online``/``offline`` events of every station's
device. Information objects that are not configured are counted and
rejected, never added (c104 would grow a point per address otherwise), so a
flood of addresses cannot grow a table; so are frames the codec finds
malformed and the messages c104 reports as unexpected.

104's acknowledgement (the receive sequence number in S/I frames) is sent
by lib60870 when its window (w, 8 frames) fills or t2 runs out, not when we
say so: delivery is at most once between receipt and the landing commit. A
general interrogation after every reconnect (and every
``interrogation_interval_s``) reads every value again.

No ``from __future__ import annotations`` here: c104 checks a callback's
annotations against the signature it expects, and string annotations fail.
"""

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import c104

from citylake.config import SourceConfig
from citylake.ingest.base import Row, SourceContext, SourceUnavailable, StreamingSource, config_as
from citylake.ingest.configured_devices import configured_device_row
from citylake.ingest.iec104.codec import (
    DOUBLE_POINT,
    NORMALIZED,
    SCALED,
    SINGLE_POINT,
    UnsupportedValue,
    parse_apdu,
    quality_flags,
    reading,
)
from citylake.ingest.iec104.config import Iec104Point, Iec104SourceConfig, Iec104Station
from citylake.schemas import EventKind, table

log = logging.getLogger(__name__)
READINGS = table("readings")
DEVICE_EVENTS = table("device_events")
RAW_LIMIT = 1024
_OPEN = (c104.ConnectionState.OPEN, c104.ConnectionState.OPEN_MUTED)
_DELIVERED_ANYWAY = (c104.Umc.INVALID_COT, c104.Umc.UNKNOWN_COT)
_SUPERVISE_S = 0.25
_MUTED_GRACE_S = 1.0


def _now_ms() -> int:
    return int(time.time() * 1000)


def _plain(type_name: str, value: Any) -> object:
    """c104's value types as the codec's plain Python values."""
    if type_name in DOUBLE_POINT:
        return int(value.value)
    if type_name in SCALED:
        return int(value)
    if type_name in NORMALIZED:
        return float(value)
    if type_name in SINGLE_POINT:
        return bool(value)
    return value


class Iec104Source(StreamingSource):
    config_model = Iec104SourceConfig
    config: Iec104SourceConfig

    def __init__(self, config: Iec104SourceConfig) -> None:
        super().__init__(config)
        self._ctx: SourceContext | None = None
        self._client: c104.Client | None = None
        self._connection: c104.Connection | None = None
        self._interrogations: asyncio.Task[None] | None = None
        self._lock = threading.Lock()  # the counters are bumped from c104's thread
        self._counts: dict[str, int] = {
            "unknown_ioa": 0,
            "unexpected_messages": 0,
            "cot_warnings": 0,
            "frames_rejected": 0,
            "connects": 0,
            "disconnects": 0,
            "interrogations": 0,
            "unmutes": 0,
        }
        self._points: dict[tuple[int, int], tuple[Iec104Station, Iec104Point]] = {
            (s.common_address, p.ioa): (s, p) for s in config.stations for p in s.points
        }
        self.connected = False
        self._last_raw = b""

    # -- lifecycle -------------------------------------------------------------

    @classmethod
    def configured_devices(cls, config: SourceConfig, now_ms: int) -> Sequence[Row]:
        cfg = config_as(config, Iec104SourceConfig)
        rows = []
        for device in cfg.device_ids():
            stations = [s for s in cfg.stations if cfg.station_device(s) == device]
            points = [
                p for s in cfg.stations for p in s.points if (p.device_id or cfg.station_device(s)) == device
            ]
            attributes = {
                "rtu": f"{cfg.host}:{cfg.port}",
                "common_addresses": sorted({s.common_address for s in stations}),
                "ioas": [p.ioa for p in points],
                "metrics": [p.metric for p in points],
            }
            rows.append(configured_device_row(device, "iec104", cfg.metadata.get(device), attributes, now_ms))
        return rows

    def counters(self) -> Mapping[str, int]:
        with self._lock:
            return dict(self._counts)

    def count(self, event: str) -> None:
        with self._lock:
            self._counts[event] = self._counts.get(event, 0) + 1

    def is_up(self) -> bool:
        return self.connected

    def _address(self) -> str:
        try:
            return socket.gethostbyname(self.config.host)
        except OSError as exc:
            raise SourceUnavailable(f"IEC 104 {self.name}: cannot resolve {self.config.host}: {exc}") from exc

    def _build(self, ctx: SourceContext | None) -> tuple[c104.Client, c104.Connection]:
        cfg = self.config
        client = c104.Client(tick_rate_ms=cfg.tick_rate_ms, command_timeout_ms=int(cfg.timeout_s * 1000))
        client.originator_address = cfg.originator_address
        connection = client.add_connection(ip=self._address(), port=cfg.port, init=c104.Init.INTERROGATION)
        if connection is None:
            raise SourceUnavailable(f"IEC 104 {self.name}: c104 refused the connection to {cfg.url}")
        if ctx is not None:
            self._wire(ctx, client, connection)
        return client, connection

    async def check(self) -> None:
        client, connection = self._build(None)
        client.start()
        try:
            deadline = time.monotonic() + self.config.timeout_s
            while connection.state not in _OPEN:
                if time.monotonic() > deadline:
                    raise SourceUnavailable(
                        f"IEC 104 {self.name}: no connection to {self.config.url} within "
                        f"{self.config.timeout_s} s (state {connection.state.name}); check the RTU's "
                        "address, port and that it admits this client"
                    )
                await asyncio.sleep(0.05)
        finally:
            await asyncio.to_thread(client.stop)

    async def start(self, ctx: SourceContext) -> None:
        if self._client is not None:
            return
        self._ctx = ctx
        self._client, self._connection = self._build(ctx)
        self._client.start()
        self._interrogations = asyncio.create_task(self._supervise(), name=f"iec104:{self.name}")

    async def stop(self) -> None:
        task, self._interrogations = self._interrogations, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.stop)
        self.connected = False

    async def _supervise(self) -> None:
        """Start data transfer where c104 left the connection muted, and
        interrogate every ``interrogation_interval_s``.

        c104 sends STARTDT act on connect, but now and then (one connect in a
        few on a busy machine) the connection stays OPEN_MUTED: the RTU sends
        nothing until STARTDT is sent again."""
        interval = self.config.interrogation_interval_s
        muted_since: float | None = None
        last_interrogation = time.monotonic()
        while True:
            await asyncio.sleep(_SUPERVISE_S)
            connection = self._connection
            if connection is None:
                continue
            now = time.monotonic()
            if connection.state == c104.ConnectionState.OPEN_MUTED:
                muted_since = muted_since or now
                if now - muted_since > _MUTED_GRACE_S:
                    log.info("IEC 104 %s: still muted; sending STARTDT again", self.name)
                    self.count("unmutes")
                    if await asyncio.to_thread(connection.unmute):
                        await self.interrogate()
                    muted_since = None
            else:
                muted_since = None
            if interval and now - last_interrogation >= interval:
                last_interrogation = now
                await self.interrogate()

    async def interrogate(self) -> None:
        """A general interrogation of every station (the RTU answers with every value)."""
        connection = self._connection
        if connection is None or not self.connected:
            return
        for station in self.config.stations:
            self.count("interrogations")
            await asyncio.to_thread(connection.interrogation, station.common_address, wait_for_response=False)

    # -- c104's thread ---------------------------------------------------------

    def _wire(self, ctx: SourceContext, client: c104.Client, connection: c104.Connection) -> None:
        source = self

        def on_state_change(connection: c104.Connection, state: c104.ConnectionState) -> None:
            source._state_changed(ctx, state)

        def on_receive_raw(connection: c104.Connection, data: bytes) -> None:
            source._screen(ctx, data)

        def on_unexpected_message(
            connection: c104.Connection, message: c104.IncomingMessage, cause: c104.Umc
        ) -> None:
            if cause in _DELIVERED_ANYWAY:
                # c104 still hands such a value to its point (an RTU that
                # answers interrogation with time-tagged types, say): it lands.
                source.count("cot_warnings")
                log.debug("IEC 104 %s: %s (CA %s)", source.name, cause.name, message.common_address)
                return
            source.count("unexpected_messages")
            ctx.reject(
                source._last_raw[:RAW_LIMIT],
                f"unexpected message: {cause.name} (CA {message.common_address}, type {message.type.name}, "
                f"COT {message.cot.name})",
            )

        def on_new_point(
            client: c104.Client, station: c104.Station, io_address: int, point_type: c104.Type
        ) -> None:
            source.count("unknown_ioa")
            ctx.reject(
                source._last_raw[:RAW_LIMIT],
                f"unconfigured information object: CA {station.common_address} IOA {io_address} "
                f"type {point_type.name}",
            )

        def on_receive(
            point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage
        ) -> c104.ResponseState:
            source._received(ctx, point, message)
            return c104.ResponseState.NONE

        connection.on_state_change(callable=on_state_change)
        connection.on_receive_raw(callable=on_receive_raw)
        connection.on_unexpected_message(callable=on_unexpected_message)
        client.on_new_point(callable=on_new_point)
        for station in self.config.stations:
            added = connection.add_station(common_address=station.common_address)
            if added is None:
                raise SourceUnavailable(f"IEC 104 {self.name}: c104 refused station {station.common_address}")
            for point in station.points:
                handle = added.add_point(io_address=point.ioa, type=getattr(c104.Type, point.type))
                if handle is None:
                    raise SourceUnavailable(f"IEC 104 {self.name}: c104 refused IOA {point.ioa}")
                handle.on_receive(callable=on_receive)

    def _screen(self, ctx: SourceContext, frame: bytes) -> None:
        self._last_raw = frame
        try:
            parse_apdu(frame)
        except UnsupportedValue as exc:
            self.count("frames_rejected")
            ctx.reject(frame[:RAW_LIMIT], str(exc))

    def _state_changed(self, ctx: SourceContext, state: c104.ConnectionState) -> None:
        up = state in _OPEN
        if up == self.connected:
            return
        self.connected = up
        # lib60870 closes the connection itself on a frame it cannot parse (a
        # bad start octet or length, an unknown U function: IEC 60870-5-104
        # 5.1), before any callback sees the bytes; a disconnect is what such
        # a frame leaves, and it is counted.
        self.count("connects" if up else "disconnects")
        kind = EventKind.ONLINE if up else EventKind.OFFLINE
        log.info("IEC 104 %s: %s %s (%s)", self.name, self.config.url, kind.value, state.name)
        now = _now_ms()
        attrs = json.dumps({"rtu": self.config.url, "state": state.name}, sort_keys=True)
        rows = [
            {
                "device_id": device,
                "ts": now,
                "kind": kind.value,
                "attributes": attrs,
                "source": self.name,
                "site": ctx.site,
                "ingest_ts": now,
            }
            for device in dict.fromkeys(self.config.station_device(s) for s in self.config.stations)
        ]
        ctx.emit(DEVICE_EVENTS, rows, attrs.encode())

    def _received(self, ctx: SourceContext, point: c104.Point, message: c104.IncomingMessage) -> None:
        station_of = point.station
        key = (station_of.common_address if station_of is not None else -1, point.io_address)
        configured = self._points.get(key)
        raw = self._last_raw[:RAW_LIMIT]
        if configured is None:  # c104 only calls points we added; kept for safety
            ctx.reject(raw, f"unconfigured information object: CA {key[0]} IOA {key[1]}")
            return
        station, cfg = configured
        now = _now_ms()
        recorded = point.recorded_at
        ts = int(recorded.timestamp() * 1000) if recorded is not None else now
        quality = point.quality
        descriptor = int(quality.value) if quality is not None else 0
        device = cfg.device_id or self.config.station_device(station)
        try:
            row = reading(
                device,
                cfg.metric,
                cfg.type,
                _plain(cfg.type, point.value),
                descriptor,
                cfg.unit,
                ts,
                cfg.scale,
                cfg.offset,
            )
        except (UnsupportedValue, AttributeError, TypeError, ValueError) as exc:
            ctx.reject(raw, f"{exc} (CA {key[0]} IOA {key[1]})")
            return
        row.update(source=self.name, site=ctx.site, ingest_ts=now)
        if quality_flags(descriptor):
            log.debug("IEC 104 %s: IOA %d quality %s", self.name, key[1], quality_flags(descriptor))
        ctx.emit(READINGS, [row], raw)
