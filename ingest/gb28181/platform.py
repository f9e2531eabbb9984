"""The top layer: what a GB28181 platform makes of its devices' requests.

REGISTER (digest authentication, expiry, the bound on registrations),
MESSAGE (the sender bound to the peer it registered from, body size,
Content-Type, MANSCDP), and each MANSCDP document (Keepalive, Catalog,
DeviceInfo, DeviceStatus, Alarm, MobilePosition) becomes registry state,
``device_events``, ``devices`` and ``readings`` rows, and sometimes a
request back (the Catalog and DeviceInfo queries after a first REGISTER, the
Alarm response), which the transaction layer sends.

The rows of a request are landed together and the request is answered once
they are durable: a device retransmits, or resends, what was not answered.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from citylake.ingest.base import Ack, SourceContext
from citylake.ingest.gb28181 import manscdp, sip
from citylake.ingest.gb28181.config import GB28181SourceConfig
from citylake.ingest.gb28181.device_id import is_device_id
from citylake.ingest.gb28181.digest import Verdict
from citylake.ingest.gb28181.peer import Peer, PeerAuth
from citylake.ingest.gb28181.registry import DeviceRecord, Event, Registry
from citylake.ingest.gb28181.rows import (
    DEVICE_EVENTS,
    DEVICES,
    READINGS,
    event_rows,
    normalize_status,
    position_rows,
    redact,
)
from citylake.ingest.gb28181.transaction_layer import TransactionLayer
from citylake.schemas import TableSpec

log = logging.getLogger(__name__)
MANSCDP_TYPE = "application/manscdp+xml"
# Catalog answers split over several MESSAGEs, tracked per (device, SN).
MAX_CATALOG_PROGRESS = 4096


def _now_ms() -> int:
    return int(time.time() * 1000)


class Platform:
    def __init__(
        self, config: GB28181SourceConfig, stats: Counter[str], layer: TransactionLayer, name: str
    ) -> None:
        self.config = config
        self.stats = stats
        self.layer = layer
        self.name = name
        layer.user = self
        self.auth = PeerAuth(
            config.digest_realm,
            config.nonce_ttl_s,
            config.max_nonces,
            config.auth_failures_max,
            config.auth_failure_window_s,
        )
        self.registry = Registry(config.keepalive_interval_s, config.missed_keepalives, config.max_devices)
        self.zone = ZoneInfo(config.timezone)
        self.ctx: SourceContext | None = None
        self._sn = itertools.count(1)
        self._catalog_progress: dict[tuple[str, int | None], int] = {}
        # Devices asked for their catalog that have not answered all of it.
        self._catalog_pending: set[str] = set()
        # Rows of the request being handled, landed together with its answer.
        self._out: list[tuple[TableSpec, list[dict[str, object]]]] | None = None

    # --- what the transaction layer asks (TransactionUser) ----------------

    def peer_of(self, device_id: str) -> Peer | None:
        registration = self.registry.registrations.get(device_id)
        return registration.peer if registration is not None else None

    def request(self, raw: bytes, message: sip.SipMessage, peer: Peer) -> None:
        if message.method == "REGISTER":
            self._on_register(raw, message, peer)
        elif message.method == "MESSAGE":
            self._on_message(raw, message, peer)
        elif message.method == "OPTIONS":
            self.layer.reply(message, 200, peer)
        elif message.method == "ACK":
            return
        else:
            # INVITE/BYE (media) and the rest are not this platform's business.
            self.layer.reply(message, 501, peer)

    def bad(
        self, raw: bytes, reason: str, partial: sip.SipMessage | None, peer: Peer, status: int = 400
    ) -> None:
        """Reject and, when the request line could be read, answer ``status``."""
        self.stats["rejected"] += 1
        self._out = None
        log.info("GB28181 %s: %s:%d %s", self.name, peer.addr[0], peer.addr[1], reason[:300])
        if self.ctx is not None:
            self.ctx.reject(redact(raw), reason)
        if partial is not None and partial.is_request and partial.get("Via") is not None:
            # The reason travels in a Warning header (RFC 3261 20.43, code 399:
            # miscellaneous) so a device's log says what was wrong.
            warning = reason.replace('"', "'").replace("\r", " ").replace("\n", " ")[:200]
            self.layer.reply(partial, status, peer, [("Warning", f'399 citylake "{warning}"')])

    # --- time -------------------------------------------------------------

    def sweep(self) -> None:
        """Offline transitions due now; an expired device must REGISTER again."""
        events = self.registry.sweep(_now_ms())
        for event in events:
            if event.device_id not in self.registry.registrations:
                self._forget_device(event.device_id)
        if events:
            self._emit_events(events, b"")
            records = [self.registry.records[e.device_id] for e in events if e.kind == "offline"]
            self._emit_devices(records, b"")

    def _forget_device(self, device_id: str) -> None:
        self._catalog_pending.discard(device_id)
        self.layer.forget_device(device_id)

    # --- REGISTER ---------------------------------------------------------

    def _authenticated(self, raw: bytes, message: sip.SipMessage, peer: Peer) -> str | None:
        """The device id of a REGISTER with the right password; otherwise
        None, the REGISTER answered (401 challenge, 403) and counted."""
        device_id = self._device_of(message)
        if device_id is None:
            reason = f"bad REGISTER: From {str(message.get('From'))[:80]!r} is not a 20-digit id"
            self.bad(raw, reason, message, peer)
            return None
        if self.auth.limited(peer):
            self.stats["auth_rate_limited"] += 1
            reason = (
                f"REGISTER refused: {device_id}: {self.config.auth_failures_max} wrong passwords from "
                f"{peer.host} within {self.config.auth_failure_window_s:.0f} s; try again later"
            )
            self.bad(raw, reason, message, peer, 403)
            return None
        password = self.config.password_of(device_id)
        authorization = message.get("Authorization")
        if authorization is None or password is None:
            if password is None:
                # No password for this id: challenge like any other, so a
                # scan cannot tell configured ids from unknown ones.
                self.stats["auth_unknown_device"] += 1
            self.layer.reply(message, 401, peer, [("WWW-Authenticate", self.auth.challenge())])
            return None
        verdict, why = self.auth.verify(authorization, password, username=device_id)
        if verdict is Verdict.WRONG:
            self.stats["auth_failed"] += 1
            self.auth.failed(peer)
            self.bad(raw, f"REGISTER refused: {device_id}: {why}", message, peer, 403)
            return None
        if verdict is not Verdict.OK:
            stale = verdict is Verdict.STALE
            self.layer.reply(message, 401, peer, [("WWW-Authenticate", self.auth.challenge(stale))])
            return None
        return device_id

    def _on_register(self, raw: bytes, message: sip.SipMessage, peer: Peer) -> None:
        raw = redact(raw)
        device_id = self._authenticated(raw, message, peer)
        if device_id is None:
            return
        expires = self._expires(message)
        if expires is None:
            self.bad(raw, f"malformed SIP: bad Expires in REGISTER from {device_id}", message, peer)
            return
        now = _now_ms()
        date = ("Date", self._date())
        self._out = []
        if expires == 0:
            self._forget_device(device_id)
            events = self.registry.unregister(device_id, now)
            self._emit_events(events, raw)
            self._emit_devices([self.registry.records[device_id]], raw)
            self._reply_when_landed(raw, message, 200, peer, [date, ("Expires", "0")])
            return
        registrations = self.registry.registrations
        if device_id not in registrations and len(registrations) >= self.config.max_registrations:
            self.stats["registrations_refused"] += 1
            reason = (
                f"REGISTER refused: {device_id}: {len(registrations)} devices registered (max_registrations)"
            )
            self.bad(raw, reason, message, peer, 503)
            return
        expires = min(expires, self.config.register_expires_max)
        contact = message.get("Contact") or f"<sip:{device_id}@{peer.addr[0]}:{peer.addr[1]}>"
        headers = [date, ("Contact", sip.name_addr_uri(contact).join("<>")), ("Expires", str(expires))]
        events, first = self.registry.register(
            device_id, peer.transport, peer.addr, contact, message.call_id or "", expires, now
        )
        self._emit_events(events, raw)
        self._emit_devices([self.registry.records[device_id]], raw)
        self._reply_when_landed(raw, message, 200, peer, headers)
        if first and self.config.catalog_query_on_register:
            self._catalog_pending.add(device_id)
            self.layer.queue(device_id, manscdp.catalog_query(next(self._sn), device_id))
            self.layer.queue(device_id, manscdp.device_info_query(next(self._sn), device_id))

    def _expires(self, message: sip.SipMessage) -> int | None:
        value = message.get("Expires")
        if value is None:
            contact = message.get("Contact")
            value = sip.header_params(contact).get("expires") if contact else None
        if value is None:
            return self.config.register_expires_default
        value = value.strip()
        return int(value) if value.isdigit() else None

    # --- MESSAGE ----------------------------------------------------------

    def _on_message(self, raw: bytes, message: sip.SipMessage, peer: Peer) -> None:
        device_id = self._device_of(message)
        registration = self.registry.registrations.get(device_id) if device_id is not None else None
        if device_id is None or registration is None:
            who = device_id or str(message.get("From"))[:80]
            self.bad(raw, f"unregistered device: MESSAGE from {who}", message, peer, 403)
            return
        if peer != registration.peer:
            # Naming a registered device in From is not enough: the device is
            # bound to the transport and address it registered (with its
            # password) from.
            self.stats["foreign_address"] += 1
            reason = (
                f"foreign address: MESSAGE from {device_id} at {peer}; it registered from {registration.peer}"
            )
            self.bad(raw, reason, message, peer, 403)
            return
        if len(message.body) > self.config.max_body_bytes:
            limit = self.config.max_body_bytes
            reason = f"oversized body: {len(message.body)} bytes exceeds max_body_bytes {limit}"
            self.bad(raw, reason, message, peer)
            return
        content_type = (message.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if content_type != MANSCDP_TYPE:
            self.bad(raw, f"unsupported Content-Type: {content_type[:60] or 'none'}", message, peer, 415)
            return
        try:
            document = manscdp.parse_document(message.body)
        except manscdp.ManscdpError as exc:
            self.bad(raw, f"bad MANSCDP body: {exc}", message, peer)
            return
        target = document.header.device_id
        scoped = (manscdp.DeviceStatus, manscdp.Alarm, manscdp.MobilePosition)
        if isinstance(document, scoped) and not self._in_scope(device_id, target):
            self.stats["foreign_device_id"] += 1
            reason = (
                f"foreign device id: {device_id} sent a {document.header.cmd_type} for {target[:40]}, "
                "neither itself nor a channel of its catalog"
            )
            self.bad(raw, reason, message, peer, 403)
            return
        self._out = []
        self._on_document(raw, device_id, document)
        self._reply_when_landed(raw, message, 200, peer)

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
            self.layer.queue(device_id, manscdp.alarm_response(document.header.sn, target))
        elif isinstance(document, manscdp.MobilePosition):
            self._on_position(raw, device_id, document, now)
        else:
            header = document.header
            self._out = None
            self._reject(raw, f"unsupported MANSCDP: {header.root} {header.cmd_type} from {device_id}")

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
            self._reject(
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
        ctx = self.ctx
        if ctx is None:
            return
        rows = position_rows(target, ts, values, ctx.source, ctx.site, now)
        if rows:
            self._land(READINGS, rows, raw)

    # --- helpers ----------------------------------------------------------

    def _device_of(self, message: sip.SipMessage) -> str | None:
        sender = message.get("From")
        if sender is None:
            return None
        user = sip.uri_user(sip.name_addr_uri(sender))
        return user if user is not None and is_device_id(user) else None

    def _date(self) -> str:
        now = datetime.now(self.zone)
        return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}"

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

    def _reject(self, raw: bytes, reason: str) -> None:
        self.stats["rejected"] += 1
        if self.ctx is not None:
            self.ctx.reject(redact(raw), reason)

    # --- rows -------------------------------------------------------------

    def _reply_when_landed(
        self,
        raw: bytes,
        request: sip.SipMessage,
        status: int,
        peer: Peer,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Land the rows collected for ``request`` and answer once they are
        durable (the device retransmits, or resends, what was not answered)."""
        out, self._out = self._out or [], None
        ctx = self.ctx
        if ctx is None:
            self.layer.reply(request, status, peer, headers)
            return
        self.layer.hold(request, peer)

        def answer() -> None:
            self.layer.reply(request, status, peer, headers)

        ack: Ack = answer
        if not out:
            out = [(DEVICE_EVENTS, [])]
        for index, (spec, rows) in enumerate(out):
            ctx.emit(spec, rows, raw, ack if index == len(out) - 1 else None)

    def _emit_events(self, events: Sequence[Event], raw: bytes) -> None:
        ctx = self.ctx
        if ctx is None or not events:
            return
        self._land(DEVICE_EVENTS, event_rows(events, ctx.source, ctx.site, _now_ms()), raw)

    def _emit_devices(self, records: Sequence[DeviceRecord], raw: bytes) -> None:
        if self.ctx is None or not records:
            return
        self._land(DEVICES, [r.row() for r in records], raw)

    def _land(self, spec: TableSpec, rows: list[dict[str, object]], raw: bytes) -> None:
        """Rows of the request being handled wait for its answer (see
        ``_reply_when_landed``); the sweeper's go at once."""
        if self._out is not None:
            self._out.append((spec, rows))
        elif self.ctx is not None:
            self.ctx.emit(spec, rows, raw)
