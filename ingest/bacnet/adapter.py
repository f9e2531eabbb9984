"""BACnet/IP source: citylake joins the network as a BACnet device of its own
(bacpypes3), finds each configured device with Who-Is/I-Am, reads its
objects' present-value, status-flags, reliability and units with one
ReadPropertyMultiple per poll, and, for objects marked ``cov``, subscribes to
change-of-value notifications between polls.

One task per device: discover, then poll on a fixed grid. A device that
answers no poll ``offline_after`` times in a row lands an ``offline`` event;
its next answer (or I-Am) lands ``online``. A status flag ``in-alarm`` that
sets or clears lands an ``alarm`` event. Datagrams are screened before
bacpypes3 decodes them, so malformed frames and frames the stack cannot
decode become counted rejects instead of log lines; I-Am answers from
devices that are not configured are counted and forgotten (the library's
device cache keeps configured devices only, so a flood of ids cannot grow it).

BACnet has no acknowledgement we could hold back until rows are durable
(reads are answered by the device; COV notifications are requested
unconfirmed), so delivery is at most once between a read and the landing
commit, as for OPC UA; the next poll reads the value again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bacpypes3.apdu import ErrorRejectAbortNack, IAmRequest
from bacpypes3.app import DeviceInfoCache
from bacpypes3.basetypes import ErrorType
from bacpypes3.ipv4.app import NormalApplication
from bacpypes3.local.device import DeviceObject
from bacpypes3.pdu import PDU, Address, IPv4Address
from bacpypes3.primitivedata import ObjectIdentifier

from citylake.config import SourceConfig
from citylake.ingest.bacnet.codec import (
    ANALOG,
    UnsupportedValue,
    bvll_problem,
    flags_set,
    reading,
    unit_symbol,
)
from citylake.ingest.bacnet.config import BacnetDevice, BacnetObject, BacnetSourceConfig
from citylake.ingest.base import Row, SourceContext, SourceUnavailable, StreamingSource, config_as
from citylake.ingest.configured_devices import configured_device_row
from citylake.schemas import EventKind, table

log = logging.getLogger(__name__)
READINGS = table("readings")
DEVICE_EVENTS = table("device_events")
VENDOR_ID = 999  # ASHRAE's "unassigned / testing" vendor identifier; citylake has none of its own
RAW_LIMIT = 1024


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    tasks.clear()


class _ConfiguredDeviceCache(DeviceInfoCache):  # type: ignore[misc]
    """bacpypes3's I-Am cache, keeping the configured instances only: any
    device on the network may answer a Who-Is, and each answer would be a new
    entry otherwise."""

    def __init__(self, instances: frozenset[int]) -> None:
        super().__init__()
        self.instances = instances

    async def set_device_info(self, apdu: IAmRequest) -> None:
        if apdu.iAmDeviceIdentifier[1] in self.instances:
            await super().set_device_info(apdu)


class _Application(NormalApplication):  # type: ignore[misc]
    """The BACnet/IP stack with the source's screen on every datagram and its
    count of I-Am answers from devices it does not read."""

    def __init__(self, source: BacnetSource, device: DeviceObject, address: IPv4Address) -> None:
        instances = frozenset(d.device_instance for d in source.config.devices)
        super().__init__(device, address, device_info_cache=_ConfiguredDeviceCache(instances))
        self.source = source
        self.instances = instances
        self.i_am_seen: dict[int, IAmRequest] = {}  # configured instances only
        server = self.normal.server
        decode = server.confirmation

        async def screened(pdu: PDU) -> None:
            datagram = bytes(pdu.pduData)
            problem = bvll_problem(datagram)
            if problem is not None:
                source.reject_frame(datagram, f"{problem} (from {pdu.pduSource})")
                return
            try:
                await decode(pdu)
            except Exception as exc:  # the stack's decoders raise many types on hostile frames
                source.reject_frame(datagram, f"undecodable BACnet frame from {pdu.pduSource}: {exc!r}")

        server.confirmation = screened

    async def do_IAmRequest(self, apdu: IAmRequest) -> None:
        instance = apdu.iAmDeviceIdentifier[1] if apdu.iAmDeviceIdentifier is not None else None
        if instance not in self.instances:
            self.source.count("i_am_unconfigured")
            return
        self.i_am_seen[instance] = apdu
        await super().do_IAmRequest(apdu)


class BacnetSource(StreamingSource):
    config_model = BacnetSourceConfig
    config: BacnetSourceConfig

    def __init__(self, config: BacnetSourceConfig) -> None:
        super().__init__(config)
        self.app: _Application | None = None
        self._ctx: SourceContext | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._counts: dict[str, int] = {
            "i_am_unconfigured": 0,
            "frames_rejected": 0,
            "polls_failed": 0,
            "cov_notifications": 0,
            "cov_refused": 0,
        }
        self.online: dict[str, bool] = {}
        self.addresses: dict[str, str] = {}
        # Last in-alarm state per (device, object): bounded by the config.
        self._alarm: dict[tuple[str, str], bool] = {}
        self._flags: dict[tuple[str, str], list[str]] = {}
        self._units: dict[tuple[str, str], str | None] = {}

    # -- lifecycle -------------------------------------------------------------

    @classmethod
    def configured_devices(cls, config: SourceConfig, now_ms: int) -> Sequence[Row]:
        cfg = config_as(config, BacnetSourceConfig)
        return [
            configured_device_row(
                device.id,
                "bacnet",
                cfg.metadata.get(device.id),
                {
                    "device_instance": device.device_instance,
                    "address": device.address,
                    "objects": [o.object for o in device.objects],
                    "metrics": [o.metric for o in device.objects],
                },
                now_ms,
            )
            for device in cfg.devices
        ]

    def counters(self) -> Mapping[str, int]:
        return dict(self._counts)

    def count(self, event: str, n: int = 1) -> None:
        self._counts[event] = self._counts.get(event, 0) + n

    def is_up(self) -> bool:
        return self.app is not None and any(self.online.values())

    def _application(self) -> _Application:
        host, port = self.config.bind
        # bacpypes3 retries a failing bind forever in a background task; try
        # it once here so a wrong address or a port in use is an error now.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((host, port))
        prefix = f"/{self.config.network_prefix}" if self.config.network_prefix is not None else ""
        device = DeviceObject(
            objectIdentifier=("device", self.config.device_instance),
            objectName=f"citylake-{self.name}",
            vendorIdentifier=VENDOR_ID,
        )
        return _Application(self, device, IPv4Address(f"{host}{prefix}:{port}"))

    async def check(self) -> None:
        """Bind, and ask the first device for an I-Am."""
        device = self.config.devices[0]
        try:
            app = self._application()
        except OSError as exc:
            raise SourceUnavailable(f"BACnet {self.name}: cannot bind {self.config.url}: {exc}") from exc
        try:
            found = await self._who_is(app, device)
        finally:
            app.close()
        if found is None:
            where = device.address or "the broadcast address"
            raise SourceUnavailable(
                f"BACnet {self.name}: device {device.device_instance} did not answer Who-Is at {where} "
                f"within {self.config.timeout_s} s; check its address, port and instance number"
            )

    async def start(self, ctx: SourceContext) -> None:
        if self.app is not None:
            return
        self._ctx = ctx
        try:
            self.app = self._application()
        except OSError as exc:
            raise SourceUnavailable(f"BACnet {self.name}: cannot bind {self.config.url}: {exc}") from exc
        for device in self.config.devices:
            self.online[device.id] = False
            self._tasks.append(asyncio.create_task(self._run(ctx, device), name=f"bacnet:{device.id}"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        app, self.app = self.app, None
        if app is not None:
            app.close()

    # -- hostile input ---------------------------------------------------------

    def reject_frame(self, datagram: bytes, reason: str) -> None:
        self.count("frames_rejected")
        if self._ctx is not None:
            self._ctx.reject(datagram[:RAW_LIMIT], reason)

    # -- one device ------------------------------------------------------------

    async def _who_is(self, app: _Application, device: BacnetDevice) -> IAmRequest | None:
        address = Address(device.address) if device.address is not None else None
        instance = device.device_instance
        i_ams = await app.who_is(instance, instance, address, timeout=self.config.timeout_s)
        matching = [i for i in i_ams if i.iAmDeviceIdentifier[1] == instance]
        return matching[0] if matching else None

    async def _run(self, ctx: SourceContext, device: BacnetDevice) -> None:
        interval = device.interval_s or self.config.interval_s
        failures = 0
        address: Address | None = None
        covs: list[asyncio.Task[None]] = []
        next_at = time.monotonic()
        try:
            while True:
                if address is None:
                    address = await self._discover(ctx, device)
                    if address is not None:
                        covs = [
                            self._start_cov(ctx, device, address, obj) for obj in device.objects if obj.cov
                        ]
                if address is not None:
                    failures = await self._poll_once(ctx, device, address, failures)
                    if failures >= self.config.offline_after and device.address is None:
                        address = None  # it may have moved: find it (and subscribe) again
                        await _cancel(covs)
                next_at += interval
                now = time.monotonic()
                if next_at < now:  # skip ticks already missed instead of bursting
                    next_at = now + interval - (now - next_at) % interval
                await asyncio.sleep(next_at - now)
        finally:
            await _cancel(covs)

    def _start_cov(
        self, ctx: SourceContext, device: BacnetDevice, address: Address, obj: BacnetObject
    ) -> asyncio.Task[None]:
        return asyncio.create_task(self._cov(ctx, device, address, obj), name=f"bacnet-cov:{device.id}")

    async def _poll_once(
        self, ctx: SourceContext, device: BacnetDevice, address: Address, failures: int
    ) -> int:
        """One poll; returns the unanswered polls in a row since."""
        if not ctx.ready():
            log.warning("BACnet %s: poll of %s skipped, landing buffer full", self.name, device.id)
            return failures
        if await self._poll(ctx, device, address):
            self._set_online(ctx, device, True, {"address": str(address)})
            return 0
        failures += 1
        self.count("polls_failed")
        if failures >= self.config.offline_after:
            self._set_online(ctx, device, False, {"address": str(address), "unanswered_polls": failures})
        return failures

    async def _discover(self, ctx: SourceContext, device: BacnetDevice) -> Address | None:
        app = self.app
        if app is None:
            return None
        try:
            i_am = await self._who_is(app, device)
        except (OSError, TimeoutError) as exc:
            log.warning("BACnet %s: Who-Is for %s failed: %s", self.name, device.id, exc)
            return None
        if i_am is None:
            log.info("BACnet %s: no I-Am from device %d yet", self.name, device.device_instance)
            return None
        address = i_am.pduSource
        self.addresses[device.id] = str(address)
        self._set_online(
            ctx,
            device,
            True,
            {
                "address": str(address),
                "device_instance": device.device_instance,
                "vendor_id": int(i_am.vendorID),
                "max_apdu": int(i_am.maxAPDULengthAccepted),
                "segmentation": str(i_am.segmentationSupported),
                "via": "i-am",
            },
        )
        return address

    def _set_online(
        self, ctx: SourceContext, device: BacnetDevice, online: bool, attrs: dict[str, Any]
    ) -> None:
        if self.online.get(device.id) == online:
            return
        self.online[device.id] = online
        kind = EventKind.ONLINE if online else EventKind.OFFLINE
        log.info("BACnet %s: device %s %s", self.name, device.id, kind.value)
        self._event(ctx, device.id, kind.value, attrs)

    def _event(self, ctx: SourceContext, device_id: str, kind: str, attrs: Mapping[str, Any]) -> None:
        now = _now_ms()
        text = json.dumps(dict(attrs), sort_keys=True)
        row = {
            "device_id": device_id,
            "ts": now,
            "kind": kind,
            "attributes": text,
            "source": self.name,
            "site": ctx.site,
            "ingest_ts": now,
        }
        ctx.emit(DEVICE_EVENTS, [row], text.encode()[:RAW_LIMIT])

    async def _poll(self, ctx: SourceContext, device: BacnetDevice, address: Address) -> bool:
        """One ReadPropertyMultiple for all objects; False if the device did not answer."""
        app = self.app
        if app is None:
            return False
        request: list[Any] = []
        for obj in device.objects:
            properties = ["present-value", "status-flags", "reliability"]
            if obj.object_type in ANALOG and obj.unit is None:
                properties.append("units")
            request += [obj.object, properties]
        try:
            results = await asyncio.wait_for(
                app.read_property_multiple(address, request), self.config.timeout_s
            )
        except (TimeoutError, OSError) as exc:
            log.warning("BACnet %s: %s did not answer: %r", self.name, device.id, exc)
            return False
        except ErrorRejectAbortNack as exc:
            ctx.reject(f"{device.id} {address} RPM".encode(), f"device refused ReadPropertyMultiple: {exc}")
            return True  # it answered: online, but refusing
        values: dict[tuple[str, str], object] = {}
        for object_id, property_id, _index, value in results:
            values[(f"{object_id[0]},{object_id[1]}", str(property_id))] = value
        now = _now_ms()
        rows: list[Row] = []
        for obj in device.objects:
            row = self._row(ctx, device, obj, values, now)
            if row is not None:
                rows.append(row)
        if rows:
            ctx.emit(READINGS, rows, repr(results)[:RAW_LIMIT].encode())
        return True

    def _row(
        self,
        ctx: SourceContext,
        device: BacnetDevice,
        obj: BacnetObject,
        values: Mapping[tuple[str, str], object],
        now: int,
    ) -> Row | None:
        key = (device.id, obj.object)
        value = values.get((obj.object, "present-value"))
        raw = f"{device.id} {obj.object} {value!r}"[:RAW_LIMIT].encode()
        if isinstance(value, ErrorType):
            ctx.reject(raw, f"present-value unreadable: {value.errorClass} {value.errorCode} ({obj.object})")
            return None
        flags_value = values.get((obj.object, "status-flags"))
        try:
            # bacpypes3's StatusFlags is a BitString: a list of 0/1.
            flags = flags_set(flags_value) if isinstance(flags_value, list) else []
        except UnsupportedValue as exc:
            ctx.reject(raw, f"{exc} ({obj.object})")
            return None
        reliability_value = values.get((obj.object, "reliability"))
        reliability = (
            None
            if isinstance(reliability_value, ErrorType) or reliability_value is None
            else str(reliability_value)
        )
        if obj.unit is not None:
            unit: str | None = obj.unit
        else:
            units_value = values.get((obj.object, "units"))
            if units_value is not None and not isinstance(units_value, ErrorType):
                self._units[key] = unit_symbol(str(units_value))
            unit = self._units.get(key)
        self._flags[key] = flags
        try:
            row = reading(device.id, obj.metric, obj.object_type, value, unit, flags, reliability, now)
        except UnsupportedValue as exc:
            ctx.reject(raw, f"{exc} ({device.id} {obj.object})")
            return None
        self._note_alarm(ctx, device, obj, flags, row["value"])
        row.update(source=self.name, site=ctx.site, ingest_ts=now)
        return row

    def _note_alarm(
        self, ctx: SourceContext, device: BacnetDevice, obj: BacnetObject, flags: Sequence[str], value: object
    ) -> None:
        key = (device.id, obj.object)
        in_alarm = "in-alarm" in flags
        if self._alarm.get(key, False) == in_alarm:
            return
        self._alarm[key] = in_alarm
        attrs = {
            "object": obj.object,
            "metric": obj.metric,
            "state": "raised" if in_alarm else "cleared",
            "status_flags": list(flags),
            "value": value,
        }
        self._event(ctx, device.id, EventKind.ALARM.value, attrs)

    async def _cov(
        self, ctx: SourceContext, device: BacnetDevice, address: Address, obj: BacnetObject
    ) -> None:
        """Change-of-value notifications of one object, as readings between polls.
        A notification carries present-value and status-flags one after the
        other; a present-value lands with the flags last known for the object."""
        app = self.app
        if app is None:
            return
        object_id = ObjectIdentifier(obj.object)
        lifetime = self.config.cov_lifetime_s
        key = (device.id, obj.object)
        try:
            if obj.object_type in ANALOG and obj.unit is None and key not in self._units:
                # The first notification may come before the first poll's answer: know the unit first.
                units = await asyncio.wait_for(
                    app.read_property(address, object_id, "units"), self.config.timeout_s
                )
                self._units[key] = None if isinstance(units, ErrorType) else unit_symbol(str(units))
            # Unconfirmed: bacpypes3 would acknowledge confirmed ones before
            # the rows land anyway, and the polls fill any notification lost.
            async with app.change_of_value(address, object_id, None, False, lifetime) as subscription:
                while True:
                    property_id, value = await subscription.get_value()
                    name = str(property_id)
                    self.count("cov_notifications")
                    if name == "status-flags":
                        with contextlib.suppress(UnsupportedValue):
                            self._flags[key] = flags_set(value)
                        continue
                    if name != "present-value":
                        continue
                    now = _now_ms()
                    values = {(obj.object, "present-value"): value, (obj.object, "units"): None}
                    flags = self._flags.get(key, [])
                    values[(obj.object, "status-flags")] = [
                        int(f in flags) for f in ("in-alarm", "fault", "overridden", "out-of-service")
                    ]
                    row = self._row(ctx, device, obj, values, now)
                    if row is not None:
                        ctx.emit(
                            READINGS, [row], f"COV {device.id} {obj.object} {value!r}"[:RAW_LIMIT].encode()
                        )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a device that refuses COV is still polled
            self.count("cov_refused")
            log.warning("BACnet %s: COV of %s %s refused or lost: %r", self.name, device.id, obj.object, exc)
