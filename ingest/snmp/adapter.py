"""SNMP source: every configured agent is a poll target on the runner's loop.

Each ``SnmpAgentPoller`` sends its scalar objects in GET requests of at most
``max_oids_per_request`` varbinds and walks each table column with GETBULK
(bounded by ``max_walk_rows``). One ``SnmpEngine`` (pysnmp's asyncio
dispatcher, one UDP socket) serves every agent of the source.

Error policy, as for Modbus (one rule for every failure): a request that
yields no values never raises out of ``poll``. Each of its objects gets a
``quality=2`` row without a value at the poll's time, and the request is
recorded once in ``rejected`` with the reason
``snmp <kind>: device <id> (<endpoint>) <oids>[: detail]`` where kind is
``timeout``, ``auth`` (wrong digest, unknown user, decryption failed),
``error`` (anything else the engine reports) or the PDU's error-status
(``authorizationError``, ``noAccess``, ``tooBig``, ...). A varbind the agent
answers with ``noSuchObject``/``noSuchInstance``/``endOfMibView`` is a bad
row of its own plus a reject naming the OID. After a timeout or an auth
failure the device's remaining requests in that poll are not sent (bad rows
and ``snmp skipped``), so a dead agent costs one timeout per poll.

Reachability becomes ``device_events``: ``online`` when an agent answers after
it did not (or at its first answer), ``offline`` when it stops answering.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import orjson
from pysnmp.hlapi.v3arch.asyncio import (
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    bulk_cmd,
    get_cmd,
)
from pysnmp.proto import errind

from citylake.config import SourceConfig
from citylake.ingest.base import PollingSource, PollTarget, Row, SourceContext, SourceUnavailable, config_as
from citylake.ingest.configured_devices import configured_device_row
from citylake.ingest.snmp.auth import SnmpAuth, UsmUser
from citylake.ingest.snmp.codec import SYS_UPTIME, SnmpValueError, column_index, decode, exception_of, reading
from citylake.ingest.snmp.config import SnmpDevice, SnmpObject, SnmpSourceConfig
from citylake.ingest.snmp.engine import auth_data
from citylake.schemas import EventKind, table

log = logging.getLogger(__name__)
READINGS = table("readings")
DEVICE_EVENTS = table("device_events")

# Engine errors that mean "the agent refused who we are": wrong keys, unknown
# user or security level, or a clock outside the time window (RFC 3414 3.2).
_AUTH_ERRORS = (
    errind.WrongDigest,
    errind.UnknownUserName,
    errind.AuthenticationError,
    errind.AuthenticationFailure,
    errind.DecryptionError,
    errind.UnknownSecurityName,
    errind.UnsupportedSecurityLevel,
    errind.NotInTimeWindow,
)
_RAW_LIMIT = 2048


def _now_ms() -> int:
    return int(time.time() * 1000)


def error_kind(indication: object) -> str:
    """The rejected-reason label of an engine error indication."""
    if isinstance(indication, errind.RequestTimedOut):
        return "timeout"
    if isinstance(indication, _AUTH_ERRORS):
        return "auth"
    return "error"


class _Failed(Exception):
    """A request that yielded no values: its kind and what the engine said."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class SnmpAgentPoller(PollTarget):
    """Polls one agent on its own interval."""

    def __init__(self, device: SnmpDevice, config: SnmpSourceConfig, source: SnmpSource) -> None:
        self.device = device
        self.name = device.device_id
        self.source = source
        self.interval_s = device.interval_s if device.interval_s is not None else config.interval_s
        self.timeout_s = device.timeout_s if device.timeout_s is not None else config.timeout_s
        self.retries = device.retries if device.retries is not None else config.retries
        self.host, self.port = config.endpoint_of(device)
        self.endpoint = f"udp://{self.host}:{self.port}"
        auth = config.auth_of(device)
        self.credentials = auth
        self.auth = auth_data(auth)
        self.context = ContextData(contextName=auth.context)
        scalars = [o for o in device.objects if not o.walk]
        step = config.max_oids_per_request
        self.requests: list[list[SnmpObject]] = [scalars[i : i + step] for i in range(0, len(scalars), step)]
        self.columns = [o for o in device.objects if o.walk]
        self.max_repetitions = config.max_repetitions
        self.max_walk_rows = config.max_walk_rows
        self._target: UdpTransportTarget | None = None
        self.answering: bool | None = None  # None until the first poll

    async def _transport(self) -> UdpTransportTarget:
        if self._target is None:
            self._target = await UdpTransportTarget.create(
                (self.host, self.port), timeout=self.timeout_s, retries=self.retries
            )
        return self._target

    async def poll(self, ctx: SourceContext) -> None:
        ts = _now_ms()
        engine = self.source.engine(self.credentials)
        try:
            target = await self._transport()
        except Exception as exc:  # pysnmp raises PySnmpError for a name it cannot resolve
            self._fail_all(ctx, ts, _Failed("error", f"cannot resolve {self.host}: {exc}"))
            return
        stopped: _Failed | None = None
        answered = False
        for objects in self.requests:
            if stopped is not None:
                self._bad(ctx, objects, ts, _Failed("skipped", f"not sent after {stopped.kind}"))
                continue
            try:
                varbinds = await self._get(engine, target, objects)
            except _Failed as failed:
                self._bad(ctx, objects, ts, failed)
                if failed.kind in ("timeout", "auth"):
                    stopped = failed
                continue
            answered = True
            self._emit(ctx, objects, varbinds, ts, "GET")
        for column in self.columns:
            if stopped is not None:
                self._bad(ctx, [column], ts, _Failed("skipped", f"not sent after {stopped.kind}"))
                continue
            try:
                answered |= await self._walk(ctx, engine, target, column, ts)
            except _Failed as failed:
                self._bad(ctx, [column], ts, failed)
                if failed.kind in ("timeout", "auth"):
                    stopped = failed
        self._reachability(ctx, answered or stopped is None, stopped, ts)

    async def _get(
        self, engine: SnmpEngine, target: UdpTransportTarget, objects: Sequence[SnmpObject]
    ) -> list[tuple[object, object]]:
        indication, status, index, varbinds = await get_cmd(
            engine,
            self.auth,
            target,
            self.context,
            *[ObjectType(ObjectIdentity(o.oid)) for o in objects],
            lookupMib=False,
        )
        if indication:
            raise _Failed(error_kind(indication), str(indication))
        if status:
            at = objects[int(index) - 1].oid if 0 < int(index) <= len(objects) else "the request"
            raise _Failed(status.prettyPrint(), f"at {at}")
        return [(oid, value) for oid, value in varbinds]

    async def _walk(
        self, ctx: SourceContext, engine: SnmpEngine, target: UdpTransportTarget, column: SnmpObject, ts: int
    ) -> bool:
        """GETBULK from the column's OID until the agent leaves its subtree;
        one reading per row, metric ``<metric>.<index>``."""
        found: list[tuple[str, object]] = []
        cursor = column.oid
        truncated = False
        while True:
            indication, status, _, varbinds = await bulk_cmd(
                engine,
                self.auth,
                target,
                self.context,
                0,
                self.max_repetitions,
                ObjectType(ObjectIdentity(cursor)),
                lookupMib=False,
            )
            if indication:
                raise _Failed(error_kind(indication), str(indication))
            if status:
                raise _Failed(status.prettyPrint(), f"walking {column.oid}")
            left = not varbinds
            for oid, value in varbinds:
                text = str(oid)
                if column_index(column.oid, text) is None or exception_of(value) == "endOfMibView":
                    left = True
                    break
                found.append((text, value))
                if len(found) >= self.max_walk_rows:
                    truncated = True
                    left = True
                    break
            if left:
                break
            cursor = found[-1][0]
        if truncated:
            reason = (
                f"snmp walk truncated: device {self.name} ({self.endpoint}) {column.oid}: "
                f"more than max_walk_rows {self.max_walk_rows} rows; the rest is not read"
            )
            ctx.reject(reason.encode(), reason)
        if not found:
            return True  # an empty table is an answer
        objects = [column.model_copy(update={"metric": f"{column.metric}.{column_index(column.oid, oid)}"})
                   for oid, _ in found]  # fmt: skip
        self._emit(ctx, objects, found, ts, "GETBULK")
        return True

    def _emit(
        self,
        ctx: SourceContext,
        objects: Sequence[SnmpObject],
        varbinds: Sequence[tuple[object, object]],
        ts: int,
        request: str,
    ) -> None:
        raw = self._raw(request, varbinds)
        rows: list[Row] = []
        now = _now_ms()
        for obj, (oid, value) in zip(objects, varbinds, strict=False):
            try:
                decoded = decode(value, obj.value_type, obj.scale, obj.offset)
            except SnmpValueError as exc:
                row = reading(self.name, obj.metric, obj.unit, None, ts)
                reason = f"snmp bad value: device {self.name} ({self.endpoint}) {oid} ({obj.metric}): {exc}"
                ctx.reject(raw, reason)
            else:
                row = reading(self.name, obj.metric, obj.unit, decoded, ts)
                if decoded.exception is not None:
                    where = f"device {self.name} ({self.endpoint}) {oid} ({obj.metric})"
                    ctx.reject(raw, f"snmp {decoded.exception}: {where}")
            row.update(source=ctx.source, site=ctx.site, ingest_ts=now)
            rows.append(row)
        if len(varbinds) < len(objects):  # an agent that answered fewer varbinds than asked
            for obj in objects[len(varbinds) :]:
                row = reading(self.name, obj.metric, obj.unit, None, ts)
                row.update(source=ctx.source, site=ctx.site, ingest_ts=now)
                rows.append(row)
            ctx.reject(raw, f"snmp short response: device {self.name} ({self.endpoint}) "
                            f"{len(varbinds)} of {len(objects)} varbinds")  # fmt: skip
        ctx.emit(READINGS, rows, raw)

    def _raw(self, request: str, varbinds: Sequence[tuple[object, object]]) -> bytes:
        parts = [f"{oid}={_pretty(value)}" for oid, value in varbinds]
        return f"{self.endpoint} {request} -> {' '.join(parts)}"[:_RAW_LIMIT].encode()

    def _bad(self, ctx: SourceContext, objects: Sequence[SnmpObject], ts: int, failed: _Failed) -> None:
        oids = objects[0].oid if len(objects) == 1 else f"{objects[0].oid}..{objects[-1].oid}"
        reason = f"snmp {failed.kind}: device {self.name} ({self.endpoint}) {oids}: {failed.detail}"
        raw = reason[:_RAW_LIMIT].encode()
        now = _now_ms()
        rows: list[Row] = []
        for obj in objects:
            row = reading(self.name, obj.metric, obj.unit, None, ts)
            row.update(source=ctx.source, site=ctx.site, ingest_ts=now)
            rows.append(row)
        ctx.emit(READINGS, rows, raw)
        ctx.reject(raw, reason)
        log.debug("%s", reason)

    def _fail_all(self, ctx: SourceContext, ts: int, failed: _Failed) -> None:
        for objects in self.requests:
            self._bad(ctx, objects, ts, failed)
        if self.columns:
            self._bad(ctx, self.columns, ts, failed)
        self._reachability(ctx, False, failed, ts)

    def _reachability(self, ctx: SourceContext, answering: bool, failed: _Failed | None, ts: int) -> None:
        if answering == self.answering:
            return
        self.answering = answering
        attributes: dict[str, object] = {"endpoint": self.endpoint}
        if failed is not None:
            attributes["reason"] = f"{failed.kind}: {failed.detail}"
        row = {
            "device_id": self.name,
            "ts": ts,
            "kind": str(EventKind.ONLINE if answering else EventKind.OFFLINE),
            "attributes": orjson.dumps(attributes, option=orjson.OPT_SORT_KEYS).decode(),
            "source": ctx.source,
            "site": ctx.site,
            "ingest_ts": _now_ms(),
        }
        ctx.emit(DEVICE_EVENTS, [row], f"{self.endpoint} {row['kind']}".encode())


def _pretty(value: object) -> str:
    pretty = getattr(value, "prettyPrint", None)
    return str(pretty()) if callable(pretty) else repr(value)


class SnmpSource(PollingSource):
    """Polls SNMP agents (v2c or v3) over UDP."""

    config_model = SnmpSourceConfig

    def __init__(self, config: SnmpSourceConfig) -> None:
        super().__init__(config)
        self.config: SnmpSourceConfig = config
        self._engines: dict[UsmUser | None, SnmpEngine] = {}
        self._pollers = [SnmpAgentPoller(d, config, self) for d in config.devices]

    def engine(self, auth: SnmpAuth) -> SnmpEngine:
        """The engine for agents with these credentials. One engine holds one
        set of keys per USM user name, so two devices with the same user name
        and different keys need two engines; v2c agents share one.

        Made on first use, inside the running loop: pysnmp binds its asyncio
        dispatcher to the loop that is current when the engine is created."""
        key = auth.usm
        engine = self._engines.get(key)
        if engine is None:
            engine = self._engines[key] = SnmpEngine()
        return engine

    def targets(self) -> Sequence[SnmpAgentPoller]:
        return self._pollers

    @classmethod
    def configured_devices(cls, config: SourceConfig, now_ms: int) -> Sequence[Row]:
        cfg = config_as(config, SnmpSourceConfig)
        rows = []
        for device in cfg.devices:
            host, port = cfg.endpoint_of(device)
            rows.append(
                configured_device_row(
                    device.device_id,
                    "snmp",
                    device,
                    {
                        "endpoint": f"udp://{host}:{port}",
                        "version": cfg.auth_of(device).version,
                        "oids": [o.oid for o in device.objects],
                        "interval_s": device.interval_s if device.interval_s is not None else cfg.interval_s,
                        "source": cfg.name,
                    },
                    now_ms,
                )
            )
        return rows

    def is_up(self) -> bool:
        return all(p.answering is not False for p in self._pollers)

    async def check(self) -> None:
        """GET sysUpTime.0 (every agent has it) from each agent once."""
        failed: list[str] = []
        for poller in self._pollers:
            engine = self.engine(poller.credentials)
            try:
                target = await poller._transport()
                indication, status, _, _ = await get_cmd(
                    engine, poller.auth, target, poller.context,
                    ObjectType(ObjectIdentity(SYS_UPTIME)), lookupMib=False,
                )  # fmt: skip
            except Exception as exc:
                failed.append(f"{poller.name} ({poller.endpoint}): {exc}")
                continue
            if indication or status:
                what = str(indication) if indication else status.prettyPrint()
                failed.append(f"{poller.name} ({poller.endpoint}): {what}")
        if failed:
            raise SourceUnavailable(f"snmp source {self.name}: " + "; ".join(failed))

    async def close(self) -> None:
        engines, self._engines = self._engines, {}
        for engine in engines.values():
            engine.close_dispatcher()
