"""JT/T 808 source: a TCP server vehicle terminals connect to (JT/T 808-2013
and -2019 headers on the same port).

A terminal registers (0x0100; answered 0x8100 with an auth code), then
authenticates (0x0102) on every connection, sends heartbeats (0x0002),
locations (0x0200) and batches of them (0x0704). Every answer that tells the
terminal its message was taken (0x8100 success, 0x8001 success) is written from
the runner's ack, i.e. once the message's rows are durable in the landing
zone; a terminal that gets none resends. Refusals (bad auth, unsupported
message) are answered at once, with a reject row.

Auth codes are an HMAC of the phone under ``auth_secret``: the platform keeps
no table of them, and a terminal keeps its code across ingest restarts.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping, Sequence

import orjson

from citylake.config import SourceConfig
from citylake.ingest.base import Row, SourceContext, config_as
from citylake.ingest.configured_devices import configured_device_row
from citylake.ingest.jt808 import messages as m
from citylake.ingest.jt808.codec import FrameError, FrameSplitter, Message, decode_frame, encode_message
from citylake.ingest.jt808.config import JT808SourceConfig
from citylake.ingest.jt808.readings import alarm_names, location_readings
from citylake.ingest.known_devices import KnownDevices
from citylake.ingest.tcp_listener import ListeningSource, ReplyChannel, TcpListener
from citylake.schemas import table

log = logging.getLogger(__name__)
READINGS = table("readings")
DEVICE_EVENTS = table("device_events")
PROTOCOL = "jt808"


def _now_ms() -> int:
    return int(time.time() * 1000)


def device_id_of(phone: str) -> str:
    """The BCD phone without its padding zeros: one id whether the terminal
    speaks 2013 (12 digits) or 2019 (20 digits)."""
    return phone.lstrip("0") or "0"


class JT808Source(ListeningSource):
    protocol = "JT/T 808"
    config_model = JT808SourceConfig

    def __init__(self, config: JT808SourceConfig) -> None:
        super().__init__(config)
        self.config: JT808SourceConfig = config
        self.terminals = {device_id_of(t.phone): t for t in config.terminals}
        self.known = KnownDevices(config.max_devices)
        self._secret = config.auth_secret.encode()
        self._ctx: SourceContext | None = None
        self.listener = TcpListener(
            f"jt808:{config.name}",
            config.listen_host,
            config.listen_port,
            self._session,
            self._ready,
            config.max_connections,
            config.idle_timeout_s,
            config.max_unacked,
        )
        self.replies_sent = 0

    def auth_code(self, device_id: str) -> str:
        return hmac.new(self._secret, device_id.encode(), hashlib.sha256).hexdigest()[:16]

    def _ready(self) -> bool:
        return self._ctx is not None and self._ctx.ready()

    def _session(self, peer: tuple[str, int], channel: ReplyChannel) -> TerminalSession:
        assert self._ctx is not None
        return self._session_for(self._ctx, peer, channel)

    def _session_for(
        self, ctx: SourceContext, peer: tuple[str, int], channel: ReplyChannel
    ) -> TerminalSession:
        return TerminalSession(self, ctx, peer, channel)

    def is_up(self) -> bool:
        return self.listener.listening

    @classmethod
    def configured_devices(cls, config: SourceConfig, now_ms: int) -> Sequence[Row]:
        cfg = config_as(config, JT808SourceConfig)
        rows = []
        for device_id, terminal in {device_id_of(t.phone): t for t in cfg.terminals}.items():
            row = dict(configured_device_row(device_id, PROTOCOL, terminal, {"source": cfg.name}, now_ms))
            if row.get("name") is None and terminal.plate:
                row["name"] = terminal.plate
            rows.append(row)
        return rows

    def counters(self) -> Mapping[str, int]:
        return {
            **self.listener.counters(),
            "known_devices_evicted": self.known.evictions,
            "replies_sent": self.replies_sent,
        }


class TerminalSession:
    """One terminal connection (``TcpSession``)."""

    def __init__(
        self, source: JT808Source, ctx: SourceContext, peer: tuple[str, int], channel: ReplyChannel
    ) -> None:
        self.source = source
        self.ctx = ctx
        self.peer = f"{peer[0]}:{peer[1]}"
        self.channel = channel
        self.splitter = FrameSplitter(source.config.max_frame_bytes)
        self.device_id: str | None = None
        self.authenticated = False
        self.last_alarm = 0
        self._serial = 0
        self._unacked = 0
        self._errors_in_row = 0
        self._loop = asyncio.get_running_loop()

    # -- TcpSession ---------------------------------------------------------

    def unacked(self) -> int:
        return self._unacked

    def should_close(self) -> str | None:
        if self._errors_in_row >= self.source.config.max_errors_per_connection:
            return f"{self._errors_in_row} rejected frames in a row"
        return None

    def received(self, data: bytes) -> None:
        for item in self.splitter.feed(data):
            if isinstance(item, FrameError):
                self._reject(data, f"{item} (from {self.peer})")
                continue
            raw = b"\x7e" + item + b"\x7e"
            try:
                message = decode_frame(item)
            except FrameError as exc:
                self._reject(raw, f"{exc} (from {self.peer})")
                continue
            try:
                self._take(message, raw)
            except FrameError as exc:
                self._reject(
                    raw, f"{exc} (message 0x{message.header.message_id:04x}, phone {message.header.phone})"
                )
                self._reply(message, m.RESULT_BAD_MESSAGE)

    def closed(self, reason: str) -> None:
        if self.device_id is not None and self.authenticated:
            self._events([("offline", _now_ms(), {"peer": self.peer, "reason": reason})], b"")

    # -- messages -------------------------------------------------------------

    def _take(self, message: Message, raw: bytes) -> None:
        header = message.header
        device_id = device_id_of(header.phone)
        if self.device_id is not None and device_id != self.device_id:
            self._reject(raw, f"phone changed on a connection: {self.device_id} then {device_id}")
            return
        if header.packet_count is not None:
            self._reject(
                raw,
                f"split packets not supported: message 0x{header.message_id:04x} "
                f"part {header.packet_index} of {header.packet_count}",
            )
            self._reply(message, m.RESULT_UNSUPPORTED)
            return
        handler = self._handlers.get(header.message_id)
        if handler is None:
            self._reject(raw, f"unsupported message: 0x{header.message_id:04x} from phone {device_id}")
            self._reply(message, m.RESULT_UNSUPPORTED)
            return
        needs_auth = header.message_id not in (m.REGISTER, m.AUTHENTICATE, m.UNREGISTER)
        if needs_auth and self.source.config.require_auth and not self.authenticated:
            self._reject(
                raw,
                f"not authenticated: message 0x{header.message_id:04x} from phone {device_id} before 0x0102",
            )
            self._reply(message, m.RESULT_FAILED)
            return
        self._errors_in_row = 0
        handler(self, message, device_id, raw)

    def _register(self, message: Message, device_id: str, raw: bytes) -> None:
        header = message.header
        registration = m.decode_registration(message.body, header.is_2019)
        source = self.source
        if device_id not in source.terminals and not source.config.accept_unknown:
            self._reject(
                raw, f"unknown terminal: phone {device_id} is not in `terminals` (accept_unknown is false)"
            )
            self._send(message, m.REGISTER_REPLY, m.register_reply_body(header.serial, 4, ""))
            return
        now = _now_ms()
        self.device_id = device_id
        attributes: dict[str, object] = {
            "peer": self.peer,
            "version": "2019" if header.is_2019 else "2013",
            "province": registration.province,
            "city": registration.city,
            "manufacturer": registration.manufacturer,
            "model": registration.model,
            "terminal_id": registration.terminal_id,
            "plate_color": registration.plate_color,
            "plate": registration.plate,
        }
        row: dict[str, object] = {
            "device_id": device_id,
            "name": registration.plate or None,
            "type": "vehicle_terminal",
            "protocol": PROTOCOL,
            "manufacturer": registration.manufacturer or None,
            "model": registration.model or None,
            "civil_code": f"{registration.province:02d}{registration.city:04d}",
            "status": "registered",
            "attributes": orjson.dumps(
                {"terminal_id": registration.terminal_id, "plate_color": registration.plate_color},
                option=orjson.OPT_SORT_KEYS,
            ).decode(),
            "first_seen": now,
            "last_seen": now,
        }
        self.source.known.observe(device_id, "seen", now)  # auth then adds no row
        self.ctx.describe_devices([row], raw)
        reply = m.register_reply_body(header.serial, m.REGISTER_OK, self.source.auth_code(device_id))
        self._events([("register", now, attributes)], raw, self._answer(message, m.REGISTER_REPLY, reply))

    def _authenticate(self, message: Message, device_id: str, raw: bytes) -> None:
        auth = m.decode_authentication(message.body, message.header.is_2019)
        expected = self.source.auth_code(device_id)
        if not hmac.compare_digest(auth.code.encode(), expected.encode()):
            self._reject(raw, f"wrong auth code: phone {device_id}")
            self._reply(message, m.RESULT_FAILED)
            return
        now = _now_ms()
        self.device_id = device_id
        self.authenticated = True
        attributes: dict[str, object] = {
            "peer": self.peer,
            "version": "2019" if message.header.is_2019 else "2013",
        }
        if auth.imei:
            attributes["imei"] = auth.imei
        if auth.software_version:
            attributes["software_version"] = auth.software_version
        self._describe(device_id, raw, now)
        self._events([("online", now, attributes)], raw, self._ok(message))

    def _heartbeat(self, message: Message, device_id: str, raw: bytes) -> None:
        self.device_id = device_id
        self._events([("keepalive", _now_ms(), {"peer": self.peer})], raw, self._ok(message))

    def _unregister(self, message: Message, device_id: str, raw: bytes) -> None:
        self.device_id = device_id
        self.authenticated = False
        self._events([("unregister", _now_ms(), {"peer": self.peer})], raw, self._ok(message))

    def _terminal_reply(self, message: Message, device_id: str, raw: bytes) -> None:
        # A terminal's answer to a platform command: we send none but 0x8001/0x8100.
        if len(message.body) >= 5:
            serial, answered, result = (
                message.body[0] << 8 | message.body[1],
                message.body[2] << 8 | message.body[3],
                message.body[4],
            )
            attributes: dict[str, object] = {
                "serial": serial,
                "message": f"0x{answered:04x}",
                "result": result,
            }
            self._events([("status", _now_ms(), attributes)], raw)

    def _location(self, message: Message, device_id: str, raw: bytes) -> None:
        location = m.decode_location(message.body)
        self._land_locations(message, device_id, [location], raw)

    def _batch(self, message: Message, device_id: str, raw: bytes) -> None:
        kind, items = m.decode_batch(message.body)
        locations = [m.decode_location(item) for item in items]
        self._land_locations(message, device_id, locations, raw, backfill=kind == 1)

    _handlers: dict[int, Callable[[TerminalSession, Message, str, bytes], None]] = {
        m.REGISTER: _register,
        m.AUTHENTICATE: _authenticate,
        m.HEARTBEAT: _heartbeat,
        m.UNREGISTER: _unregister,
        m.TERMINAL_REPLY: _terminal_reply,
        m.LOCATION: _location,
        m.BATCH_LOCATION: _batch,
    }

    def _land_locations(
        self,
        message: Message,
        device_id: str,
        locations: Sequence[m.Location],
        raw: bytes,
        backfill: bool = False,
    ) -> None:
        now = _now_ms()
        self.device_id = device_id
        self._describe(device_id, raw, now)
        ctx = self.ctx
        rows: list[dict[str, object]] = []
        events: list[tuple[str, int, dict[str, object]]] = []
        for location in locations:
            rows.extend(location_readings(device_id, location, ctx.source, ctx.site, now))
            # An alarm flag repeats in every report while it lasts: one event when it changes.
            if location.alarm != self.last_alarm and not backfill:
                events.append(
                    (
                        "alarm",
                        location.ts_ms,
                        {
                            "alarm": location.alarm,
                            "names": alarm_names(location.alarm),
                            "status": location.status,
                        },
                    )
                )
                self.last_alarm = location.alarm
        if events:
            self._events(events, raw)
        self._unacked += 1
        ctx.emit(READINGS, rows, raw, self._landed_then(self._ok_bytes(message)))

    # -- rows and answers -------------------------------------------------------

    def _describe(self, device_id: str, raw: bytes, now: int) -> None:
        first = self.source.known.observe(device_id, "seen", now)
        if first is None:
            return
        row: dict[str, object] = {
            "device_id": device_id,
            "type": "vehicle_terminal",
            "protocol": PROTOCOL,
            "status": "online",
            "first_seen": first,
            "last_seen": now,
        }
        terminal = self.source.terminals.get(device_id)
        if terminal is not None:
            row["name"] = terminal.name or terminal.plate
        self.ctx.describe_devices([row], raw)

    def _events(
        self,
        events: Sequence[tuple[str, int, dict[str, object]]],
        raw: bytes,
        ack: Callable[[], None] | None = None,
    ) -> None:
        assert self.device_id is not None
        now = _now_ms()
        rows = [
            {
                "device_id": self.device_id,
                "ts": ts,
                "kind": kind,
                "attributes": orjson.dumps(attributes, option=orjson.OPT_SORT_KEYS).decode(),
                "source": self.ctx.source,
                "site": self.ctx.site,
                "ingest_ts": now,
            }
            for kind, ts, attributes in events
        ]
        if ack is not None:
            self._unacked += 1
        self.ctx.emit(DEVICE_EVENTS, rows, raw, ack)

    def _reject(self, raw: bytes, reason: str) -> None:
        self._errors_in_row += 1
        self.ctx.reject(raw, reason)

    def _next_serial(self) -> int:
        self._serial = (self._serial + 1) & 0xFFFF
        return self._serial

    def _frame(self, message: Message, message_id: int, body: bytes) -> bytes:
        header = message.header
        return encode_message(message_id, header.phone, self._next_serial(), body, header.version)

    def _send(self, message: Message, message_id: int, body: bytes) -> None:
        self.channel.send(self._frame(message, message_id, body))
        self.source.replies_sent += 1

    def _reply(self, message: Message, result: int) -> None:
        """An immediate 0x8001 (refusals: nothing to land first)."""
        header = message.header
        self._send(message, m.PLATFORM_REPLY, m.platform_reply_body(header.serial, header.message_id, result))

    def _ok_bytes(self, message: Message) -> bytes:
        header = message.header
        return self._frame(
            message, m.PLATFORM_REPLY, m.platform_reply_body(header.serial, header.message_id, m.RESULT_OK)
        )

    def _ok(self, message: Message) -> Callable[[], None]:
        return self._landed_then(self._ok_bytes(message))

    def _answer(self, message: Message, message_id: int, body: bytes) -> Callable[[], None]:
        return self._landed_then(self._frame(message, message_id, body))

    def _landed_then(self, reply: bytes) -> Callable[[], None]:
        """An ack for the runner that writes ``reply`` once the rows are landed."""

        def landed() -> None:  # on the event loop
            self._unacked -= 1
            self.channel.send(reply)
            self.source.replies_sent += 1

        def ack() -> None:  # the runner, after the landing commit, any thread
            self._loop.call_soon_threadsafe(landed)

        return ack
