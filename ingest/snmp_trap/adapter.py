"""SNMP trap source: a pysnmp notification receiver on a UDP port.

v1 and v2c traps are accepted by community, v3 traps and informs by USM user
(authenticated, and decrypted for authPriv, by pysnmp with keys localised to
the sender's engine id). Each notification becomes one ``device_events`` row
(kind from ``codec.TRAPS``: linkDown and upsTrapOnBattery are alarms,
coldStart is online, ...) with the trap's name, OID, uptime and varbinds as
attributes.

Every datagram is screened before pysnmp sees it: larger than
``max_datagram_bytes``, not BER, or a v1/v2c community not configured ->
counted and rejected (at most ``max_rejects_per_s`` rows a second: the
port is open to anyone on the network, so a flood must not fill
``rejected``). pysnmp drops v3 messages that fail authentication; those are
counted from its USM statistics (RFC 3414 usmStats*).

There is nothing to hold back until landing: traps are unconfirmed, and
pysnmp answers an INFORM before it hands the notification over, so delivery
is at most once between receipt and the landing commit (as MQTT QoS 0).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence

import orjson
from pyasn1.codec.ber import decoder
from pyasn1.error import PyAsn1Error
from pysnmp.carrier.asyncio.dgram import udp
from pysnmp.entity import config as engine_config
from pysnmp.entity import engine as snmp_engine
from pysnmp.entity.rfc3413 import ntfrcv
from pysnmp.proto import api

from citylake.config import SourceConfig
from citylake.ingest.base import Row, SourceContext, SourceUnavailable, StreamingSource, config_as
from citylake.ingest.configured_devices import configured_device_row
from citylake.ingest.known_devices import KnownDevices
from citylake.ingest.reject_budget import RejectBudget
from citylake.ingest.snmp.codec import NotificationError, authoritative_engine_id, notification
from citylake.ingest.snmp.config import parse_udp_url
from citylake.ingest.snmp.engine import add_trap_user
from citylake.ingest.snmp_trap.config import SnmpTrapSourceConfig
from citylake.schemas import table

log = logging.getLogger(__name__)
DEVICE_EVENTS = table("device_events")
DEVICES = table("devices")
_RECEIVE = "rfc3412.receiveMessage:request"
_USM_STATS = (
    "usmStatsUnknownUserNames",
    "usmStatsWrongDigests",
    "usmStatsDecryptionErrors",
    "usmStatsUnknownEngineIDs",
    "usmStatsNotInTimeWindows",
    "usmStatsUnsupportedSecLevels",
)


def _now_ms() -> int:
    return int(time.time() * 1000)


class _ScreenedUdpTransport(udp.UdpAsyncioTransport):  # type: ignore[misc]  # pysnmp is untyped
    """pysnmp's UDP transport with our screen in front of its dispatcher."""

    source: SnmpTrapSource

    def datagram_received(self, datagram: bytes, transportAddress: object) -> None:
        if self.source.screen(datagram, transportAddress):
            super().datagram_received(datagram, transportAddress)


class SnmpTrapSource(StreamingSource):
    config_model = SnmpTrapSourceConfig

    def __init__(self, config: SnmpTrapSourceConfig) -> None:
        super().__init__(config)
        self.config: SnmpTrapSourceConfig = config
        self.host, self.port = parse_udp_url(config.url)
        self._communities = {c.encode() for c in config.communities}
        self._by_address = {a.address: a for a in config.agents if a.address is not None}
        self._by_engine = {a.engine_id: a for a in config.agents if a.engine_id is not None}
        self._engine: snmp_engine.SnmpEngine | None = None
        self._receiver: ntfrcv.NotificationReceiver | None = None
        self._ctx: SourceContext | None = None
        self._seen = KnownDevices(config.max_devices)
        self._budget = RejectBudget(config.max_rejects_per_s, burst=max(1, int(config.max_rejects_per_s)))
        self.notifications = 0
        self.screened_out = 0

    # -- lifecycle ------------------------------------------------------------

    async def check(self) -> None:
        import socket

        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            raise SourceUnavailable(f"SNMP trap {self.config.url}: cannot listen: {exc}") from exc
        finally:
            sock.close()

    async def start(self, ctx: SourceContext) -> None:
        self._ctx = ctx
        engine = snmp_engine.SnmpEngine()
        transport = _ScreenedUdpTransport()
        transport.source = self
        try:
            engine_config.add_transport(
                engine, udp.DOMAIN_NAME, transport.open_server_mode((self.host, self.port))
            )
            # open_server_mode schedules the bind; wait for it to fail or succeed here.
            await transport._lport
        except Exception as exc:
            with contextlib.suppress(Exception):
                engine.close_dispatcher()
            raise SourceUnavailable(f"SNMP trap {self.config.url}: cannot listen: {exc}") from exc
        for index, community in enumerate(self.config.communities):
            engine_config.add_v1_system(engine, f"community-{index}", community)
        for user in self.config.users:
            add_trap_user(engine, user)
        # Keeps the receive context (sender, security name, whole message) for the callback.
        engine.observer.register_observer(lambda *_: None, _RECEIVE)
        self._receiver = ntfrcv.NotificationReceiver(engine, self._received)
        self._engine = engine
        log.info("SNMP trap %s listening on %s", self.name, self.config.url)

    async def stop(self) -> None:
        engine, self._engine = self._engine, None
        if engine is None:
            return
        if self._receiver is not None:
            self._receiver.close(engine)
            self._receiver = None
        engine.close_dispatcher()

    def is_up(self) -> bool:
        return self._engine is not None

    @classmethod
    def configured_devices(cls, config: SourceConfig, now_ms: int) -> Sequence[Row]:
        cfg = config_as(config, SnmpTrapSourceConfig)
        return [
            configured_device_row(
                agent.device_id,
                "snmp",
                agent,
                {"address": agent.address, "engine_id": agent.engine_id, "source": cfg.name},
                now_ms,
            )
            for agent in cfg.agents
        ]

    def counters(self) -> Mapping[str, int]:
        counts = {
            "notifications": self.notifications,
            "screened_out": self.screened_out,
            "rejects_suppressed": self._budget.suppressed,
            "devices_evicted": self._seen.evictions,
        }
        counts.update(self.usm_failures())
        return counts

    def usm_failures(self) -> dict[str, int]:
        """pysnmp's USM statistics: v3 messages it dropped, by reason."""
        engine = self._engine
        if engine is None:
            return {}
        builder = engine.get_mib_builder()
        values = builder.import_symbols("__SNMP-USER-BASED-SM-MIB", *_USM_STATS)
        return {name: int(v.syntax) for name, v in zip(_USM_STATS, values, strict=True)}

    # -- screening ------------------------------------------------------------

    def _reject(self, raw: bytes, reason: str) -> None:
        self.screened_out += 1
        ctx = self._ctx
        if ctx is not None and self._budget.allow():
            ctx.reject(raw, reason)

    def screen(self, datagram: bytes, sender: object) -> bool:
        """True to let pysnmp process ``datagram``; otherwise it is rejected here."""
        origin = _address(sender)
        if len(datagram) > self.config.max_datagram_bytes:
            self._reject(datagram[:256], f"snmp trap too large: {len(datagram)} bytes from {origin} "
                         f"(max_datagram_bytes {self.config.max_datagram_bytes})")  # fmt: skip
            return False
        try:
            version = int(api.decodeMessageVersion(datagram))
        except (PyAsn1Error, ValueError, TypeError) as exc:
            self._reject(
                datagram, f"snmp trap undecodable: {len(datagram)} bytes from {origin}: not BER ({exc})"
            )
            return False
        if version in api.PROTOCOL_MODULES:
            module = api.PROTOCOL_MODULES[version]
            try:
                message, _ = decoder.decode(datagram, asn1Spec=module.Message())
                community = bytes(module.apiMessage.get_community(message))
            except (PyAsn1Error, ValueError, TypeError) as exc:
                self._reject(datagram, f"snmp trap undecodable: v{version + 1} message from {origin}: {exc}")
                return False
            if community not in self._communities:
                self._reject(datagram, f"snmp trap bad community: from {origin}")
                return False
        elif version != 3:
            self._reject(datagram, f"snmp trap unsupported version: {version} from {origin}")
            return False
        return True

    # -- notifications --------------------------------------------------------

    def _received(
        self,
        engine: snmp_engine.SnmpEngine,
        state_reference: object,
        context_engine_id: object,
        context_name: object,
        varbinds: Sequence[tuple[object, object]],
        cb_ctx: object,
    ) -> None:
        ctx = self._ctx
        if ctx is None:
            return
        try:
            receive = engine.observer.get_execution_context(_RECEIVE)
        except KeyError:
            receive = {}
        raw_full = bytes(receive.get("wholeMsg", b""))
        raw = raw_full[:2048]
        sender = _address(receive.get("transportAddress"))
        ip = sender.rsplit(":", 1)[0]
        model = int(receive.get("messageProcessingModel", 1))
        engine_id = authoritative_engine_id(raw_full) if model == 3 else None
        agent = (self._by_engine.get(engine_id) if engine_id else None) or self._by_address.get(ip)
        if agent is None and self.config.unknown_agents == "reject":
            self._reject(
                raw, f"snmp trap unknown agent: {sender}" + (f" engine {engine_id}" if engine_id else "")
            )
            return
        device_id = agent.device_id if agent is not None else f"snmp-{ip}"
        try:
            note = notification([(str(oid), value) for oid, value in varbinds], self.config.max_variables)
        except NotificationError as exc:
            ctx.reject(raw, f"snmp trap malformed: from {sender}: {exc}")
            return
        self.notifications += 1
        now = _now_ms()
        attributes: dict[str, object] = {
            "trap": note.trap,
            "trap_oid": note.trap_oid,
            "uptime_s": note.uptime_s,
            "from": sender,
            "version": {0: "1", 1: "2c", 3: "3"}.get(model, str(model)),
            "security_name": str(receive.get("securityName", "")),
            "variables": note.variables,
        }
        if engine_id:
            attributes["engine_id"] = engine_id
        row = {
            "device_id": device_id,
            "ts": now,
            "kind": str(note.kind),
            "attributes": orjson.dumps(attributes, option=orjson.OPT_SORT_KEYS).decode(),
            "source": ctx.source,
            "site": ctx.site,
            "ingest_ts": now,
        }
        if agent is None:
            first = self._seen.observe(device_id, ip, now)
            if first is not None:
                ctx.describe_devices([{
                    "device_id": device_id, "protocol": "snmp", "address": None,
                    "attributes": orjson.dumps({"address": ip, "source": self.name}).decode(),
                    "first_seen": first, "last_seen": now,
                }], raw)  # fmt: skip
        ctx.emit(DEVICE_EVENTS, [row], raw)


def _address(sender: object) -> str:
    if isinstance(sender, tuple) and len(sender) >= 2:
        return f"{sender[0]}:{sender[1]}"
    return str(sender)
