"""HJ 212 source: a TCP server that environmental monitoring stations (or
their data collectors) connect to and upload real-time, minute, hourly and
daily data on.

Each connection is a ``StationSession``: the ``FrameSplitter`` cuts frames,
``decode_frame`` checks CRC and header, ``decode_packet`` makes readings. A
packet whose Flag asks for an answer gets its CN 9014 data answer only from the
runner's ack, i.e. once its rows are durable in the landing zone; a station
that gets no answer resends, so nothing it was told is landed can be lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence

import orjson

from citylake.config import SourceConfig
from citylake.ingest.base import Row, SourceContext, config_as
from citylake.ingest.configured_devices import configured_device_row
from citylake.ingest.hj212.codec import FrameError, FrameSplitter, Packet, data_ack, decode_frame
from citylake.ingest.hj212.config import HJ212SourceConfig
from citylake.ingest.hj212.pollutants import POLLUTANTS, SYSTEM_TYPES, Pollutant
from citylake.ingest.hj212.readings import DATA_COMMANDS, REPLY_COMMANDS, decode_packet
from citylake.ingest.known_devices import KnownDevices
from citylake.ingest.tcp_listener import ListeningSource, ReplyChannel, TcpListener
from citylake.schemas import table

log = logging.getLogger(__name__)
READINGS = table("readings")
DEVICE_EVENTS = table("device_events")
PROTOCOL = "hj212"
# A data collector relays a handful of stations; beyond this, a connection
# inventing MN codes is refused more of them.
MAX_STATIONS_PER_CONNECTION = 64
_OWN_KEYS = ("first_seen", "last_seen", "attributes")
_ACCEPTED_CN = ", ".join([*DATA_COMMANDS, *REPLY_COMMANDS])


def _now_ms() -> int:
    return int(time.time() * 1000)


class HJ212Source(ListeningSource):
    protocol = "HJ 212"
    config_model = HJ212SourceConfig

    def __init__(self, config: HJ212SourceConfig) -> None:
        super().__init__(config)
        self.config: HJ212SourceConfig = config
        self.codes: dict[str, Pollutant] = dict(POLLUTANTS)
        for code, mapped in config.codes.items():
            self.codes[code] = Pollutant(mapped.metric, mapped.unit, mapped.cou_unit)
        self.stations = {s.mn: s for s in config.stations}
        self.known = KnownDevices(config.max_devices)
        self._ctx: SourceContext | None = None
        self.listener = TcpListener(
            f"hj212:{config.name}",
            config.listen_host,
            config.listen_port,
            self._session,
            self._ready,
            config.max_connections,
            config.idle_timeout_s,
            config.max_unacked,
        )
        self.acks_sent = 0

    def _ready(self) -> bool:
        return self._ctx is not None and self._ctx.ready()

    def _session(self, peer: tuple[str, int], channel: ReplyChannel) -> StationSession:
        assert self._ctx is not None
        return self._session_for(self._ctx, peer, channel)

    def _session_for(
        self, ctx: SourceContext, peer: tuple[str, int], channel: ReplyChannel
    ) -> StationSession:
        return StationSession(self, ctx, peer, channel)

    def is_up(self) -> bool:
        return self.listener.listening

    @classmethod
    def configured_devices(cls, config: SourceConfig, now_ms: int) -> Sequence[Row]:
        cfg = config_as(config, HJ212SourceConfig)
        return [configured_device_row(s.mn, PROTOCOL, s, {"source": cfg.name}, now_ms) for s in cfg.stations]

    def counters(self) -> Mapping[str, int]:
        return {
            **self.listener.counters(),
            "known_devices_evicted": self.known.evictions,
            "acks_sent": self.acks_sent,
        }

    def password_of(self, mn: str) -> str | None:
        station = self.stations.get(mn)
        if station is not None and station.password is not None:
            return station.password
        return self.config.password


class StationSession:
    """One station connection (``TcpSession``)."""

    def __init__(
        self, source: HJ212Source, ctx: SourceContext, peer: tuple[str, int], channel: ReplyChannel
    ) -> None:
        self.source = source
        self.ctx = ctx
        self.peer = f"{peer[0]}:{peer[1]}"
        self.channel = channel
        self.splitter = FrameSplitter(source.config.max_data_length)
        self.mns: dict[str, str] = {}  # MN -> ST, seen on this connection
        self._unacked = 0
        self._errors_in_row = 0
        self._loop = asyncio.get_running_loop()

    def unacked(self) -> int:
        return self._unacked

    def should_close(self) -> str | None:
        limit = self.source.config.max_errors_per_connection
        if self._errors_in_row >= limit:
            return f"{self._errors_in_row} rejected frames in a row"
        return None

    def received(self, data: bytes) -> None:
        for item in self.splitter.feed(data):
            if isinstance(item, FrameError):
                self._reject(data, f"{item} (from {self.peer})")
                continue
            try:
                packet = decode_frame(item)
            except FrameError as exc:
                self._reject(item, f"{exc} (from {self.peer})")
                continue
            self._take(packet, item)

    def _reject(self, raw: bytes, reason: str) -> None:
        self._errors_in_row += 1
        self.ctx.reject(raw, reason)

    def _take(self, packet: Packet, raw: bytes) -> None:
        source = self.source
        mn = packet.mn
        if mn not in source.stations and not source.config.accept_unknown:
            self._reject(raw, f"unknown station: MN {mn} is not in `stations` (accept_unknown is false)")
            return
        expected = source.password_of(mn)
        if expected is not None and packet.pw != expected:
            self._reject(raw, f"wrong PW: MN {mn}")
            return
        if packet.cn not in DATA_COMMANDS and packet.cn not in REPLY_COMMANDS:
            self._reject(raw, f"unsupported CN: {packet.cn} from MN {mn} (taken: {_ACCEPTED_CN})")
            return
        if mn not in self.mns and len(self.mns) >= MAX_STATIONS_PER_CONNECTION:
            self._reject(raw, f"too many stations on one connection: MN {mn} after {len(self.mns)}")
            return
        now = _now_ms()
        ctx = self.ctx
        try:
            decoded = decode_packet(packet, source.codes, source.config.utc_offset, ctx.source, ctx.site, now)
        except ValueError as exc:
            self._reject(raw, f"{exc} (MN {mn}, CN {packet.cn})")
            return
        self._errors_in_row = 0
        events = decoded.events
        if mn not in self.mns:
            self.mns[mn] = packet.st
            events = [("online", now, {"peer": self.peer, "st": packet.st}), *events]
            self._describe(packet, raw, now)
        if events:
            self._emit_events(mn, events, raw)
        for problem in decoded.problems:
            ctx.reject(raw, f"{problem} (MN {mn}, CN {packet.cn})")
        self._unacked += 1
        ctx.emit(READINGS, decoded.readings, raw, self._ack_for(packet))

    def _ack_for(self, packet: Packet) -> Callable[[], None]:
        # 9014 answers data uploads; a station's own replies (9011-9013) get none.
        reply = data_ack(packet) if packet.wants_ack and packet.cn in DATA_COMMANDS else None

        def landed() -> None:  # on the event loop
            self._unacked -= 1
            if reply is not None:
                self.channel.send(reply)
                self.source.acks_sent += 1

        def ack() -> None:  # the runner, after the landing commit, any thread
            self._loop.call_soon_threadsafe(landed)

        return ack

    def _describe(self, packet: Packet, raw: bytes, now: int) -> None:
        first = self.source.known.observe(packet.mn, packet.st, now)
        if first is None:
            return
        station = self.source.stations.get(packet.mn)
        row: dict[str, object] = {
            "device_id": packet.mn,
            "type": SYSTEM_TYPES.get(packet.st, f"hj212_st_{packet.st}"),
            "protocol": PROTOCOL,
            "status": "online",
            "attributes": orjson.dumps(
                {"st": packet.st, "peer": self.peer}, option=orjson.OPT_SORT_KEYS
            ).decode(),
            "first_seen": first,
            "last_seen": now,
        }
        if station is not None:
            # What the config says of the station wins over what we derived.
            configured = configured_device_row(packet.mn, PROTOCOL, station, {}, now)
            row.update({k: v for k, v in configured.items() if v is not None and k not in _OWN_KEYS})
        self.ctx.describe_devices([row], raw)

    def _emit_events(self, mn: str, events: Sequence[tuple[str, int, dict[str, object]]], raw: bytes) -> None:
        now = _now_ms()
        rows = [
            {
                "device_id": mn,
                "ts": ts,
                "kind": kind,
                "attributes": orjson.dumps(attributes, option=orjson.OPT_SORT_KEYS).decode(),
                "source": self.ctx.source,
                "site": self.ctx.site,
                "ingest_ts": now,
            }
            for kind, ts, attributes in events
        ]
        self.ctx.emit(DEVICE_EVENTS, rows, raw)

    def closed(self, reason: str) -> None:
        now = _now_ms()
        for mn in self.mns:
            self._emit_events(mn, [("offline", now, {"peer": self.peer, "reason": reason})], b"")
