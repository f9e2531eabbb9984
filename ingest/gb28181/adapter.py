"""GB28181 source: a SIP server acting as the platform devices register with.

UDP (an asyncio DatagramProtocol) and TCP (asyncio streams) share one event
loop and one handler. Every request is answered on the transport and address
it came from; the platform's own requests (Catalog/DeviceInfo queries, the
Alarm response) go to the device the same way, on the same TCP connection.

The platform's own requests are client transactions (``transactions.py``):
each carries a fresh Call-ID, From tag and Via branch and the platform's own
CSeq (RFC 3261 8.1.1), is retransmitted over UDP by Timer E and given up by
Timer F. A device that files requests by Call-ID sees each query as a new
call, as the RFC requires of a request outside a dialog; the device's own
requests are accepted whatever Call-ID they carry.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import secrets
import socket
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from citylake.ingest.base import Ack, SourceContext, SourceUnavailable, StreamingSource
from citylake.ingest.gb28181 import manscdp, sip
from citylake.ingest.gb28181.config import GB28181SourceConfig
from citylake.ingest.gb28181.device_id import is_device_id
from citylake.ingest.gb28181.digest import DigestAuthenticator, Verdict
from citylake.ingest.gb28181.registry import DeviceRecord, Event, Registration, Registry
from citylake.ingest.gb28181.transactions import ClientTransaction, ClientTransactions, PendingFull
from citylake.schemas import TableSpec, table

log = logging.getLogger(__name__)
READINGS = table("readings")
DEVICE_EVENTS = table("device_events")
DEVICES = table("devices")
MANSCDP_TYPE = "application/manscdp+xml"
POSITION_UNITS = {"longitude": "deg", "latitude": "deg", "speed": "km/h", "direction": "deg", "altitude": "m"}
_ONLINE = {"on", "online", "ok"}
_OFFLINE = {"off", "offline"}

Addr = tuple[str, int]
# Requests queued for one device behind the one in flight (Catalog, DeviceInfo,
# Alarm responses); a device that never answers cannot grow its queue past it.
MAX_QUEUED_PER_DEVICE = 32
# A request retransmitted over UDP (same branch, Call-ID, CSeq, From tag) is
# answered with the response already sent, not processed again: otherwise a
# device retransmitting under load would land every keepalive, catalog and
# alarm twice. 32 s is RFC 3261's Timer J for non-INVITE over UDP.
TRANSACTION_TTL_S = 32.0
# Methods counted by name in stats; any other is counted as received_other
# (the method is the sender's choice: as a key it would grow without bound).
KNOWN_METHODS = frozenset(
    {"REGISTER", "MESSAGE", "OPTIONS", "ACK", "INVITE", "BYE", "CANCEL", "INFO", "NOTIFY", "SUBSCRIBE"}
)
# Catalog answers split over several MESSAGEs, tracked per (device, SN).
MAX_CATALOG_PROGRESS = 4096
# Marks a request whose answer waits for its rows to land: a retransmission
# meanwhile is dropped rather than processed a second time.
_PENDING = b""
_AUTHORIZATION = re.compile(rb"(?im)^((?:proxy-)?authorization[ \t]*:)[^\r\n]*")


def redact(raw: bytes) -> bytes:
    """``raw`` without the values of its Authorization headers: rejects are
    readable through /v1/sql, and a digest response there invites offline
    cracking of the password."""
    if b"uthorization" not in raw and b"UTHORIZATION" not in raw:
        return raw
    return _AUTHORIZATION.sub(rb"\1 <redacted>", raw)


_EXPORTED_STATS = frozenset(
    {
        "foreign_address",
        "foreign_device_id",
        "auth_failed",
        "auth_rate_limited",
        "registrations_refused",
        "tcp_refused",
        "tcp_idle_closed",
        "tcp_slow_reader_closed",
        "answered_evicted",
        "retransmissions_pending",
    }
)


def _now_ms() -> int:
    return int(time.time() * 1000)


def normalize_status(value: str | None) -> str | None:
    """Catalog Status values (ON, OFF, ONLINE, OK, ...) as online/offline."""
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in _ONLINE:
        return "online"
    if lowered in _OFFLINE:
        return "offline"
    return lowered


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, source: GB28181Source) -> None:
        self.source = source

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.source._on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable for a device that went away: nothing to do.
        log.debug("GB28181 UDP error: %s", exc)


class GB28181Source(StreamingSource):
    config_model = GB28181SourceConfig

    def __init__(self, config: GB28181SourceConfig) -> None:
        super().__init__(config)
        self.config: GB28181SourceConfig = config
        self.auth = DigestAuthenticator(config.digest_realm, config.nonce_ttl_s, max_nonces=config.max_nonces)
        self.registry = Registry(config.keepalive_interval_s, config.missed_keepalives, config.max_devices)
        self.zone = ZoneInfo(config.timezone)
        self.stats: Counter[str] = Counter()
        self.port = config.listen_port
        self._ctx: SourceContext | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._streams: dict[Addr, asyncio.StreamWriter] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sn = itertools.count(1)
        self.transactions = ClientTransactions()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # monotonic time the timer is set for
        self._catalog_progress: dict[tuple[str, int | None], int] = {}
        # The platform's requests to a device go one at a time: the next
        # leaves when the device gave a final answer to the previous one (or
        # Timer F gave it up). Cameras handle one transaction at a time; a
        # query that arrives while they still answer the previous one may be
        # dropped. Values: the branch of the request in flight.
        self._outbox: dict[str, deque[bytes]] = {}
        self._in_flight: dict[str, str] = {}
        self._answered: dict[tuple[str, str, str, str], tuple[bytes, float]] = {}
        self._answered_bytes = 0
        # Devices asked for their catalog that have not answered all of it.
        self._catalog_pending: set[str] = set()
        # Source address -> (wrong-password REGISTERs, window start), oldest first.
        self._auth_failures: OrderedDict[str, tuple[int, float]] = OrderedDict()
        # Rows of the request being handled, landed together with its answer.
        self._out: list[tuple[TableSpec, list[dict[str, object]]]] | None = None

    # --- lifecycle ---------------------------------------------------------

    def counters(self) -> dict[str, int]:
        return {
            "devices_evicted": self.registry.evicted,
            "nonces_evicted": self.auth.evicted,
            "nonce_replays": self.auth.replays,
            **{k: v for k, v in self.stats.items() if k in _EXPORTED_STATS},
        }

    def is_up(self) -> bool:
        wanted = self.config.listen_transports
        return ("udp" not in wanted or self._udp is not None) and (
            "tcp" not in wanted or self._tcp is not None
        )

    async def check(self) -> None:
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

    async def start(self, ctx: SourceContext) -> None:
        self._ctx = ctx
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
        self._sweeper = asyncio.create_task(self._sweep_loop(), name=f"gb28181-sweep-{self.name}")
        log.info("GB28181 %s listening on %s %s:%d", self.name, "+".join(transports), host, port)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for task in list(self._tasks):
            task.cancel()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        for writer in list(self._streams.values()):
            writer.close()
        self._streams.clear()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
            self._tcp = None

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_every_s)
            self._forget_transactions(time.monotonic() - TRANSACTION_TTL_S)
            events = self.registry.sweep(_now_ms())
            for event in events:
                if event.device_id not in self.registry.registrations:
                    self._forget_device_requests(event.device_id)  # expired: must REGISTER again
            if events:
                self._emit_events(events, b"")
                records = [self.registry.records[e.device_id] for e in events if e.kind == "offline"]
                self._emit_devices(records, b"")

    # --- transports --------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: Addr) -> None:
        if data.strip(b"\r\n") == b"":
            return  # RFC 5626 keepalive
        try:
            message = sip.parse_datagram(data)
        except sip.SipParseError as exc:
            self._bad(data, f"malformed SIP: {exc.reason}", exc.partial, "udp", addr)
            return
        self._dispatch(data, message, "udp", addr)

    async def _on_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        addr: Addr = (str(peer[0]), int(peer[1]))
        if len(self._streams) >= self.config.max_tcp_connections:
            self.stats["tcp_refused"] += 1
            log.warning(
                "GB28181 %s: %d TCP connections open (max_tcp_connections); closed %s:%d",
                self.name,
                len(self._streams),
                *addr,
            )
            writer.close()
            return
        self._streams[addr] = writer
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
                for item in framer.feed(chunk):
                    if isinstance(item, sip.FramingError):
                        reason = item.reason
                        prefix = "oversized body" if "exceeds max_body_bytes" in reason else "malformed SIP"
                        self._bad(item.raw, f"{prefix}: {reason}", item.partial, "tcp", addr)
                    else:
                        self._dispatch(item.to_bytes(), item, "tcp", addr)
        except (ConnectionError, OSError) as exc:
            log.debug("GB28181 TCP %s:%d closed: %s", addr[0], addr[1], exc)
        finally:
            self._streams.pop(addr, None)
            writer.close()

    def _forget_transactions(self, before: float) -> None:
        answered = self._answered
        limit, limit_bytes = self.config.answered_cache_max, self.config.answered_cache_bytes
        # Insertion order is age order: stop at the first one young enough and
        # within the bounds (count and bytes: each response echoes its Via).
        while answered:
            key, (data, at) = next(iter(answered.items()))
            if at >= before and len(answered) <= limit and self._answered_bytes <= limit_bytes:
                break
            del answered[key]
            self._answered_bytes -= len(data)
            if at >= before:
                self.stats["answered_evicted"] += 1

    def _remember_answer(self, key: tuple[str, str, str, str], data: bytes) -> None:
        old = self._answered.pop(key, None)
        if old is not None:
            self._answered_bytes -= len(old[0])
        self._answered[key] = (data, time.monotonic())
        self._answered_bytes += len(data)
        if len(self._answered) > self.config.answered_cache_max or (
            self._answered_bytes > self.config.answered_cache_bytes
        ):
            self._forget_transactions(time.monotonic() - TRANSACTION_TTL_S)

    @staticmethod
    def _transaction(message: sip.SipMessage) -> tuple[str, str, str, str]:
        via = message.get("Via") or ""
        return (
            sip.header_params(via).get("branch", ""),
            message.call_id or "",
            message.get("CSeq") or "",
            sip.tag_of(message.get("From") or "") or "",
        )

    def _send_bytes(self, data: bytes, transport: str, addr: Addr) -> None:
        if transport == "udp":
            if self._udp is not None:
                self._udp.sendto(data, addr)
        else:
            writer = self._streams.get(addr)
            if writer is None or writer.is_closing():
                log.info("GB28181 %s: TCP connection to %s:%d is gone; dropped", self.name, *addr)
                return
            # The write is queued; a peer that sends but never reads would grow
            # the queue without bound: past tcp_write_buffer_max it is closed.
            if writer.transport.get_write_buffer_size() + len(data) > self.config.tcp_write_buffer_max:
                self.stats["tcp_slow_reader_closed"] += 1
                log.warning("GB28181 %s: TCP %s:%d does not read its answers; closed", self.name, *addr)
                writer.transport.abort()
                return
            writer.write(data)

    # --- requests ----------------------------------------------------------

    def _dispatch(self, raw: bytes, message: sip.SipMessage, transport: str, addr: Addr) -> None:
        try:
            if not message.is_request:
                self._on_response(message)
                return
            method = message.method if message.method in KNOWN_METHODS else "other"
            self.stats[f"received_{method}"] += 1
            missing = [h for h in ("Via", "From", "To", "Call-ID", "CSeq") if message.get(h) is None]
            if missing:
                self._bad(raw, f"malformed SIP: missing {', '.join(missing)}", message, transport, addr)
                return
            try:
                message.cseq()
            except ValueError as exc:
                self._bad(raw, f"malformed SIP: {exc}", message, transport, addr)
                return
            answered = self._answered.get(self._transaction(message))
            if answered is not None and message.method != "ACK":
                if answered[0] == _PENDING:
                    self.stats["retransmissions_pending"] += 1  # its answer waits for landing
                    return
                self.stats["retransmissions"] += 1
                self._send_bytes(answered[0], transport, addr)
                return
            if message.method == "REGISTER":
                self._on_register(raw, message, transport, addr)
            elif message.method == "MESSAGE":
                self._on_message(raw, message, transport, addr)
            elif message.method == "OPTIONS":
                self._reply(message, 200, transport, addr)
            elif message.method == "ACK":
                return
            else:
                # INVITE/BYE (media) and the rest are not this platform's business.
                self._reply(message, 501, transport, addr)
        except Exception as exc:  # one bad message must never stop the server
            log.exception("GB28181 %s: failed on a message from %s:%d", self.name, *addr)
            self._bad(raw, f"internal error: {type(exc).__name__}: {exc}", message, transport, addr, 500)

    def _on_response(self, message: sip.SipMessage) -> None:
        """A device answering one of our requests: the next one may go."""
        self.stats["responses_received"] += 1
        done = self.transactions.on_response(message, time.monotonic())
        if done is None:
            if (message.status or 0) >= 200:
                # Late (after Timer F), a retransmitted final or not ours.
                self.stats["responses_unmatched"] += 1
            return
        self.stats["queries_answered"] += 1
        if done.status is not None and done.status >= 300:
            self.stats["queries_refused"] += 1
            log.info(
                "GB28181 %s: %s answered a %s with %d", self.name, done.device_id, done.method, done.status
            )
        self._finished(done)
        self._arm_timer()

    def _finished(self, transaction: ClientTransaction) -> None:
        if self._in_flight.get(transaction.device_id) == transaction.key:
            del self._in_flight[transaction.device_id]
            self._pump(transaction.device_id)

    def _on_timer(self) -> None:
        self._timer = None
        resend, timed_out = self.transactions.due(time.monotonic())
        for transaction in resend:
            self.stats["queries_retransmitted"] += 1
            self._send_bytes(transaction.data, transaction.transport, transaction.addr)
        for transaction in timed_out:
            self.stats["queries_timed_out"] += 1
            log.info(
                "GB28181 %s: %s did not answer a %s within %.0f s (Timer F); next request",
                self.name,
                transaction.device_id,
                transaction.method,
                self.transactions.timeout_s,
            )
            self._finished(transaction)
        self._arm_timer()

    def _arm_timer(self) -> None:
        """One loop timer for all client transactions, at the next deadline."""
        deadline = self.transactions.next_deadline()
        if deadline is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer_at = deadline
        delay = max(0.0, deadline - time.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _queue(self, device_id: str, body: bytes) -> None:
        queue = self._outbox.setdefault(device_id, deque())
        if len(queue) >= MAX_QUEUED_PER_DEVICE:
            queue.popleft()
            self.stats["queries_dropped"] += 1
            log.info(
                "GB28181 %s: %s has %d requests queued; dropped the oldest", self.name, device_id, len(queue)
            )
        queue.append(body)
        self._pump(device_id)

    def _pump(self, device_id: str) -> None:
        if device_id in self._in_flight:
            return
        queue = self._outbox.get(device_id)
        registration = self.registry.registrations.get(device_id)
        if not queue or registration is None:
            self._outbox.pop(device_id, None)
            return
        transaction = self._send_query(registration, queue.popleft())
        if transaction is not None:
            self._in_flight[device_id] = transaction.key
            self._arm_timer()
        if not queue:
            self._outbox.pop(device_id, None)

    def _forget_device_requests(self, device_id: str) -> None:
        """A device that unregistered gets no more of our requests."""
        self._catalog_pending.discard(device_id)
        self._outbox.pop(device_id, None)
        self._in_flight.pop(device_id, None)
        self.transactions.drop_device(device_id)

    def _reply(
        self,
        request: sip.SipMessage,
        status: int,
        transport: str,
        addr: Addr,
        headers: Sequence[tuple[str, str]] = (),
        reason: str | None = None,
    ) -> None:
        if request.method == "ACK":
            return
        response = sip.build_response(
            request,
            status,
            reason,
            [*headers, ("User-Agent", "citylake")],
            to_tag=secrets.token_hex(4),
        )
        data = response.to_bytes()
        self._send_bytes(data, transport, addr)
        self.stats[f"sent_{status}"] += 1
        key = self._transaction(request)
        if transport == "udp" and all(key[:3]):
            self._remember_answer(key, data)

    def _reply_when_landed(
        self,
        raw: bytes,
        request: sip.SipMessage,
        status: int,
        transport: str,
        addr: Addr,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Land the rows collected for ``request`` and answer once they are
        durable (the device retransmits, or resends, what was not answered)."""
        out, self._out = self._out or [], None
        ctx = self._ctx
        if ctx is None:
            self._reply(request, status, transport, addr, headers)
            return
        key = self._transaction(request)
        if transport == "udp" and all(key[:3]):
            self._remember_answer(key, _PENDING)

        def answer() -> None:
            self._reply(request, status, transport, addr, headers)

        ack: Ack = answer
        if not out:
            out = [(DEVICE_EVENTS, [])]
        for index, (spec, rows) in enumerate(out):
            ctx.emit(spec, rows, raw, ack if index == len(out) - 1 else None)

    def _bad(
        self,
        raw: bytes,
        reason: str,
        partial: sip.SipMessage | None,
        transport: str,
        addr: Addr,
        status: int = 400,
    ) -> None:
        """Reject and, when the request line could be read, answer ``status``."""
        self.stats["rejected"] += 1
        self._out = None
        log.info("GB28181 %s: %s:%d %s", self.name, addr[0], addr[1], reason[:300])
        if self._ctx is not None:
            self._ctx.reject(redact(raw), reason)
        if partial is not None and partial.is_request and partial.get("Via") is not None:
            # The reason travels in a Warning header (RFC 3261 20.43, code 399:
            # miscellaneous) so a device's log says what was wrong.
            warning = reason.replace('"', "'").replace("\r", " ").replace("\n", " ")[:200]
            self._reply(partial, status, transport, addr, [("Warning", f'399 citylake "{warning}"')])

    def _device_of(self, message: sip.SipMessage) -> str | None:
        sender = message.get("From")
        if sender is None:
            return None
        user = sip.uri_user(sip.name_addr_uri(sender))
        return user if user is not None and is_device_id(user) else None

    def _date(self) -> str:
        now = datetime.now(self.zone)
        return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}"

    def _auth_limited(self, host: str) -> bool:
        """Whether ``host`` used up its wrong-password REGISTERs for now."""
        entry = self._auth_failures.get(host)
        if entry is None:
            return False
        failures, since = entry
        if time.monotonic() - since > self.config.auth_failure_window_s:
            del self._auth_failures[host]
            return False
        return failures >= self.config.auth_failures_max

    def _auth_failed(self, host: str) -> None:
        now = time.monotonic()
        failures, since = self._auth_failures.pop(host, (0, now))
        if now - since > self.config.auth_failure_window_s:
            failures, since = 0, now
        self._auth_failures[host] = (failures + 1, since)
        # One entry per source address, bounded like the nonces: the oldest go.
        while len(self._auth_failures) > self.config.max_nonces:
            self._auth_failures.popitem(last=False)

    def _on_register(self, raw: bytes, message: sip.SipMessage, transport: str, addr: Addr) -> None:
        raw = redact(raw)
        device_id = self._device_of(message)
        if device_id is None:
            self._bad(
                raw,
                f"bad REGISTER: From {str(message.get('From'))[:80]!r} is not a 20-digit id",
                message,
                transport,
                addr,
            )
            return
        if self._auth_limited(addr[0]):
            self.stats["auth_rate_limited"] += 1
            reason = (
                f"REGISTER refused: {device_id}: {self.config.auth_failures_max} wrong passwords from "
                f"{addr[0]} within {self.config.auth_failure_window_s:.0f} s; try again later"
            )
            self._bad(raw, reason, message, transport, addr, 403)
            return
        password = self.config.password_of(device_id)
        authorization = message.get("Authorization")
        if authorization is None or password is None:
            if password is None:
                # No password for this id: challenge like any other, so a
                # scan cannot tell configured ids from unknown ones.
                self.stats["auth_unknown_device"] += 1
            self._reply(message, 401, transport, addr, [("WWW-Authenticate", self.auth.challenge())])
            return
        verdict, why = self.auth.verify(authorization, "REGISTER", password, username=device_id)
        if verdict is Verdict.WRONG:
            self.stats["auth_failed"] += 1
            self._auth_failed(addr[0])
            self._bad(raw, f"REGISTER refused: {device_id}: {why}", message, transport, addr, 403)
            return
        if verdict is not Verdict.OK:
            stale = verdict is Verdict.STALE
            self._reply(message, 401, transport, addr, [("WWW-Authenticate", self.auth.challenge(stale))])
            return
        expires = self._expires(message)
        if expires is None:
            self._bad(
                raw, f"malformed SIP: bad Expires in REGISTER from {device_id}", message, transport, addr
            )
            return
        now = _now_ms()
        date = ("Date", self._date())
        self._out = []
        if expires == 0:
            self._forget_device_requests(device_id)
            events = self.registry.unregister(device_id, now)
            self._emit_events(events, raw)
            self._emit_devices([self.registry.records[device_id]], raw)
            self._reply_when_landed(raw, message, 200, transport, addr, [date, ("Expires", "0")])
            return
        registrations = self.registry.registrations
        if device_id not in registrations and len(registrations) >= self.config.max_registrations:
            self.stats["registrations_refused"] += 1
            self._bad(
                raw,
                f"REGISTER refused: {device_id}: {len(registrations)} devices registered (max_registrations)",
                message,
                transport,
                addr,
                503,
            )
            return
        expires = min(expires, self.config.register_expires_max)
        contact = message.get("Contact") or f"<sip:{device_id}@{addr[0]}:{addr[1]}>"
        headers = [date, ("Contact", sip.name_addr_uri(contact).join("<>")), ("Expires", str(expires))]
        events, first = self.registry.register(
            device_id, transport, addr, contact, message.call_id or "", expires, now
        )
        self._emit_events(events, raw)
        self._emit_devices([self.registry.records[device_id]], raw)
        self._reply_when_landed(raw, message, 200, transport, addr, headers)
        if first and self.config.catalog_query_on_register:
            self._catalog_pending.add(device_id)
            self._queue(device_id, manscdp.catalog_query(next(self._sn), device_id))
            self._queue(device_id, manscdp.device_info_query(next(self._sn), device_id))

    def _expires(self, message: sip.SipMessage) -> int | None:
        value = message.get("Expires")
        if value is None:
            contact = message.get("Contact")
            value = sip.header_params(contact).get("expires") if contact else None
        if value is None:
            return self.config.register_expires_default
        value = value.strip()
        return int(value) if value.isdigit() else None

    def _send_query(self, registration: Registration, body: bytes) -> ClientTransaction | None:
        """Send a MESSAGE to a registered device as a new client transaction
        (a new call: nothing in it is taken from the device's REGISTER)."""
        host = self.config.listen_host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1" if registration.addr[0].startswith("127.") else socket.gethostname()
        device_id = registration.device_id
        ids = self.transactions.new_request(host)
        via = f"SIP/2.0/{registration.transport.upper()} {host}:{self.port};rport;branch={ids.branch}"
        request = sip.build_request(
            "MESSAGE",
            f"sip:{device_id}@{registration.addr[0]}:{registration.addr[1]}",
            [
                ("Via", via),
                ("From", f"<sip:{self.config.platform_id}@{self.config.domain}>;tag={ids.from_tag}"),
                ("To", f"<sip:{device_id}@{self.config.domain}>"),
                ("Call-ID", ids.call_id),
                ("CSeq", f"{ids.cseq} MESSAGE"),
                ("Max-Forwards", "70"),
                ("Content-Type", "Application/MANSCDP+xml"),
                ("User-Agent", "citylake"),
            ],
            body,
        )
        data = request.to_bytes()
        try:
            transaction = self.transactions.start(
                ids, device_id, "MESSAGE", data, registration.transport, registration.addr, time.monotonic()
            )
        except PendingFull as exc:
            self.stats["queries_dropped"] += 1
            log.warning("GB28181 %s: request to %s not sent: %s", self.name, device_id, exc)
            return None
        self.stats["queries_sent"] += 1
        self._send_bytes(data, registration.transport, registration.addr)
        return transaction

    def _in_scope(self, device_id: str, target: str) -> bool:
        """Whether a body naming ``target`` may be filed by ``device_id``: the
        device itself or a channel its own catalog named."""
        if target == device_id or self.registry.children_of(device_id, target):
            return True
        # Between its REGISTER and its catalog answer a device may already
        # report for its channels: an id no record holds yet is taken as its
        # channel then (and claimed); a known record of another never is.
        if device_id in self._catalog_pending and target not in self.registry.records:
            self.registry.record(target, _now_ms()).owner = device_id
            return True
        return False

    def _on_message(self, raw: bytes, message: sip.SipMessage, transport: str, addr: Addr) -> None:
        device_id = self._device_of(message)
        registration = self.registry.registrations.get(device_id) if device_id is not None else None
        if device_id is None or registration is None:
            who = device_id or str(message.get("From"))[:80]
            self._bad(raw, f"unregistered device: MESSAGE from {who}", message, transport, addr, 403)
            return
        if (transport, addr) != (registration.transport, registration.addr):
            # Naming a registered device in From is not enough: the device is
            # bound to the transport and address it registered (with its
            # password) from.
            self.stats["foreign_address"] += 1
            where = f"{transport}://{addr[0]}:{addr[1]}"
            bound = f"{registration.transport}://{registration.addr[0]}:{registration.addr[1]}"
            reason = f"foreign address: MESSAGE from {device_id} at {where}; it registered from {bound}"
            self._bad(raw, reason, message, transport, addr, 403)
            return
        if len(message.body) > self.config.max_body_bytes:
            limit = self.config.max_body_bytes
            reason = f"oversized body: {len(message.body)} bytes exceeds max_body_bytes {limit}"
            self._bad(raw, reason, message, transport, addr)
            return
        content_type = (message.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if content_type != MANSCDP_TYPE:
            self._bad(
                raw, f"unsupported Content-Type: {content_type[:60] or 'none'}", message, transport, addr, 415
            )
            return
        try:
            document = manscdp.parse_document(message.body)
        except manscdp.ManscdpError as exc:
            self._bad(raw, f"bad MANSCDP body: {exc}", message, transport, addr)
            return
        target = document.header.device_id
        scoped = (manscdp.DeviceStatus, manscdp.Alarm, manscdp.MobilePosition)
        if isinstance(document, scoped) and not self._in_scope(device_id, target):
            self.stats["foreign_device_id"] += 1
            reason = (
                f"foreign device id: {device_id} sent a {document.header.cmd_type} for {target[:40]}, "
                "neither itself nor a channel of its catalog"
            )
            self._bad(raw, reason, message, transport, addr, 403)
            return
        self._out = []
        self._on_document(raw, device_id, document)
        self._reply_when_landed(raw, message, 200, transport, addr)

    def _on_document(self, raw: bytes, device_id: str, document: manscdp.Document) -> None:
        now = _now_ms()
        target = document.header.device_id
        if isinstance(document, manscdp.Keepalive):
            self._emit_events(self.registry.keepalive(device_id, now, document.status), raw)
        elif isinstance(document, manscdp.CatalogResponse):
            self._on_catalog(raw, device_id, document, now)
        elif isinstance(document, manscdp.DeviceInfo):
            record = self.registry.record(device_id, now)
            record.name = document.name or record.name
            record.manufacturer = document.manufacturer or record.manufacturer
            record.model = document.model or record.model
            self._emit_devices([record], raw)
        elif isinstance(document, manscdp.DeviceStatus):
            attributes = {
                "result": document.result,
                "online": document.online,
                "status": document.status,
                "encode": document.encode,
                "record": document.record,
                "device_time": document.device_time,
            }
            self._emit_events([Event(target, now, "status", attributes)], raw)
        elif isinstance(document, manscdp.Alarm):
            self._on_alarm(raw, device_id, document, now)
            self._queue(device_id, manscdp.alarm_response(document.header.sn, target))
        elif isinstance(document, manscdp.MobilePosition):
            self._on_position(raw, device_id, document, now)
        else:
            header = document.header
            self._out = None
            self._ctx_reject(raw, f"unsupported MANSCDP: {header.root} {header.cmd_type} from {device_id}")

    def _ctx_reject(self, raw: bytes, reason: str) -> None:
        self.stats["rejected"] += 1
        if self._ctx is not None:
            self._ctx.reject(redact(raw), reason)

    def _device_time(self, value: str | None, default: int) -> int:
        """Device times are local wall-clock times without a zone."""
        if not value:
            return default
        try:
            parsed = datetime.fromisoformat(value.strip().replace(" ", "T"))
        except ValueError:
            return default
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=self.zone)
        return int(parsed.timestamp() * 1000)

    def _on_catalog(self, raw: bytes, device_id: str, document: manscdp.CatalogResponse, now: int) -> None:
        key = (device_id, document.header.sn)
        received = self._catalog_progress.pop(key, 0) + len(document.items)
        if received >= document.sum_num:
            self._catalog_pending.discard(device_id)
        else:
            self._catalog_progress[key] = received
            while len(self._catalog_progress) > MAX_CATALOG_PROGRESS:
                del self._catalog_progress[next(iter(self._catalog_progress))]
        records: list[DeviceRecord] = []
        refused: list[str] = []
        for item in document.items:
            # A catalog may name new channels and rewrite its own; another
            # device's record (registered, or a channel of another) is not its.
            known = self.registry.records.get(item.device_id)
            if item.device_id != device_id and known is not None and known.owner != device_id:
                # Another device's channel, or a device on its own (registered
                # now or before): not this catalog's to rewrite.
                refused.append(item.device_id)
                continue
            record = self.registry.record(item.device_id, now)
            if item.device_id != device_id:
                record.owner = device_id
            record.name = item.name
            record.manufacturer = item.manufacturer
            record.model = item.model
            record.parent_id = item.parent_id or device_id
            record.civil_code = item.civil_code or record.civil_code
            record.address = item.address
            record.longitude = item.longitude
            record.latitude = item.latitude
            record.status = normalize_status(item.status)
            records.append(record)
        attributes = {
            "sn": document.header.sn,
            "sum_num": document.sum_num,
            "num": document.num,
            "received": received,
            "channels": [item.device_id for item in document.items],
        }
        self._emit_events([Event(device_id, now, "catalog", attributes)], raw)
        self._emit_devices(records, raw)
        if refused:
            self.stats["foreign_device_id"] += len(refused)
            self._ctx_reject(
                raw,
                f"foreign device id: the catalog of {device_id} names {len(refused)} record(s) of other "
                f"devices, not taken: {', '.join(r[:20] for r in refused[:5])}",
            )

    def _on_alarm(self, raw: bytes, device_id: str, document: manscdp.Alarm, now: int) -> None:
        attributes = {
            "from": device_id,
            "priority": document.priority,
            "method": document.method,
            "type": document.alarm_type,
            "description": document.description,
            "time": document.time,
            "longitude": document.longitude,
            "latitude": document.latitude,
        }
        ts = self._device_time(document.time, now)
        self._emit_events([Event(document.header.device_id, ts, "alarm", attributes)], raw)

    def _on_position(self, raw: bytes, device_id: str, document: manscdp.MobilePosition, now: int) -> None:
        ts = self._device_time(document.time, now)
        target = document.header.device_id
        values = {
            "longitude": document.longitude,
            "latitude": document.latitude,
            "speed": document.speed,
            "direction": document.direction,
            "altitude": document.altitude,
        }
        attributes: dict[str, Any] = {"from": device_id, "time": document.time, **values}
        self._emit_events([Event(target, ts, "position", attributes)], raw)
        ctx = self._ctx
        if ctx is None:
            return
        rows = [
            {
                "device_id": target,
                "ts": ts,
                "metric": metric,
                "value": value,
                "unit": POSITION_UNITS[metric],
                "quality": 0,
                "source": ctx.source,
                "site": ctx.site,
                "ingest_ts": now,
            }
            for metric, value in values.items()
            if value is not None
        ]
        if rows:
            self._land(READINGS, rows, raw)

    # --- rows --------------------------------------------------------------

    def _emit_events(self, events: Sequence[Event], raw: bytes) -> None:
        ctx = self._ctx
        if ctx is None or not events:
            return
        ingest = _now_ms()
        rows = [
            {
                "device_id": e.device_id,
                "ts": e.ts,
                "kind": e.kind,
                "attributes": orjson.dumps(e.attributes, option=orjson.OPT_SORT_KEYS).decode(),
                "source": ctx.source,
                "site": ctx.site,
                "ingest_ts": ingest,
            }
            for e in events
        ]
        self._land(DEVICE_EVENTS, rows, raw)

    def _emit_devices(self, records: Sequence[DeviceRecord], raw: bytes) -> None:
        ctx = self._ctx
        if ctx is None or not records:
            return
        self._land(DEVICES, [r.row() for r in records], raw)

    def _land(self, spec: TableSpec, rows: list[dict[str, object]], raw: bytes) -> None:
        """Rows of the request being handled wait for its answer (see
        ``_reply_when_landed``); the sweeper's go at once."""
        if self._out is not None:
            self._out.append((spec, rows))
        elif self._ctx is not None:
            self._ctx.emit(spec, rows, raw)
