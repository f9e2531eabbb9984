"""OPC UA source: an asyncua client that subscribes to (or polls) configured
variables and turns every reported value into a ``readings`` row.

One task owns one connection at a time: connect, resolve the nodes (browse
paths are resolved again at every connect, since a restarted server may
number its nodes differently), subscribe or poll, and wait until either
``stop()`` or asyncua's connection supervisor reports the connection lost
(its watchdog probes the server every ``watchdog_interval_s``). Then the
client is dropped and a fresh one connects with exponential backoff and
subscribes again. asyncua 2.x can also reconnect by itself
(``auto_reconnect``); we keep the loop here so re-resolving browse paths,
``is_up()`` and the backoff are ours and tested.

OPC UA has no acknowledgement we can hold back until the rows are durable
(asyncua acknowledges publish responses itself), so delivery is at most once
between a notification and the landing commit, as for MQTT QoS 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeNotif
from asyncua.crypto import security_policies
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from citylake.config import SourceConfig
from citylake.ingest.backoff import Backoff
from citylake.ingest.base import Row, SourceContext, SourceUnavailable, StreamingSource, config_as
from citylake.ingest.configured_devices import configured_device_row, without_credentials
from citylake.ingest.opcua.codec import UnsupportedValue, parse_browse_path, reading, timestamp_ms
from citylake.ingest.opcua.config import Deadband, OpcUaNode, OpcUaSourceConfig
from citylake.schemas import table

log = logging.getLogger(__name__)
READINGS = table("readings")

# asyncua's errors that mean "this connection (attempt) failed": socket errors,
# timeouts, and service faults the server answered with (wrong password,
# unknown security policy, BadSessionIdInvalid after a restart).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, UaError)


@dataclass(frozen=True)
class _Monitored:
    """A configured node resolved on the current connection."""

    config: OpcUaNode
    node: Node


_FILTER_REFUSED = frozenset({StatusCodes.BadFilterNotAllowed, StatusCodes.BadMonitoredItemFilterUnsupported})


def _deadband_filter(deadband: Deadband) -> ua.DataChangeFilter | None:
    if deadband.value == 0:  # "deadband: {value: 0}" on a node turns the source's default off
        return None
    flt = ua.DataChangeFilter()
    # StatusValue: a change of status (good -> bad) is reported even inside the deadband.
    flt.Trigger = ua.DataChangeTrigger.StatusValue
    flt.DeadbandType = ua.DeadbandType.Absolute if deadband.type == "absolute" else ua.DeadbandType.Percent
    flt.DeadbandValue = deadband.value
    return flt


class _Handler:
    """asyncua calls this from its event loop for every change the server published."""

    def __init__(self, source: OpcUaSource, ctx: SourceContext, by_handle: dict[int, OpcUaNode]) -> None:
        self.source = source
        self.ctx = ctx
        self.by_handle = by_handle

    def datachange_notification(self, node: Node, val: Any, data: DataChangeNotif) -> None:
        handle = data.subscription_data.client_handle
        config = self.by_handle.get(handle) if handle is not None else None
        if config is None:
            return
        self.source.deliver(self.ctx, config, data.monitored_item.Value)

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        # BadTimeout / BadShutdown: the server dropped the subscription; reconnecting
        # creates it again.
        if not status.Status.is_good():
            self.source.connection_lost(f"subscription status {status.Status}")


class OpcUaSource(StreamingSource):
    config_model = OpcUaSourceConfig

    def __init__(self, config: OpcUaSourceConfig) -> None:
        super().__init__(config)
        self.config: OpcUaSourceConfig = config
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._first_server_certificate: bytes | None = None  # trust_on_first_use
        self._lost = asyncio.Event()
        self.connected = False
        self.connects = 0  # successful (re)connects with subscriptions in place
        self.last_error: str | None = None
        self.unresolved: list[str] = []

    @classmethod
    def configured_devices(cls, config: SourceConfig, now_ms: int) -> Sequence[Row]:
        cfg = config_as(config, OpcUaSourceConfig)
        metrics: dict[str, list[str]] = {}
        for node in cfg.nodes:
            metrics.setdefault(node.device_id, []).append(node.metric)
        endpoint = without_credentials(cfg.url)
        return [
            configured_device_row(
                device_id,
                "opcua",
                cfg.devices.get(device_id),
                {"endpoint": endpoint, "metrics": names, "source": cfg.name},
                now_ms,
            )
            for device_id, names in metrics.items()
        ]

    def is_up(self) -> bool:
        return self.connected

    # -- connection -----------------------------------------------------------

    async def _client(self) -> Client:
        cfg = self.config
        client = Client(cfg.url, timeout=cfg.timeout_s, watchdog_intervall=cfg.watchdog_interval_s)
        if cfg.application_uri is not None:
            client.application_uri = cfg.application_uri
        if cfg.username is not None:
            client.set_user(cfg.username)
            client.set_password(cfg.password or "")
        if cfg.security_mode != "None":
            assert cfg.security_policy and cfg.certificate and cfg.private_key  # the model checked
            policy = getattr(security_policies, f"SecurityPolicy{cfg.security_policy}")
            # Without a pinned server certificate asyncua reads it from the
            # server's endpoint list over an unsecured channel (a network call):
            # allowed only with trust_on_first_use (the model checked), and the
            # certificate taken then is pinned for every later connection.
            pinned: str | bytes | None = cfg.server_certificate or self._first_server_certificate
            await asyncio.wait_for(
                client.set_security(
                    policy,
                    cfg.certificate,
                    cfg.private_key,
                    cfg.private_key_password,
                    pinned,
                    getattr(ua.MessageSecurityMode, cfg.security_mode),
                ),
                cfg.timeout_s * 2,
            )
            if pinned is None:
                taken = client.security_policy.peer_certificate
                self._first_server_certificate = taken
                log.warning(
                    "OPC UA %s: trusting the server certificate presented at first use (sha256 %s); "
                    "pin it with server_certificate",
                    self.name,
                    hashlib.sha256(taken or b"").hexdigest()[:16],
                )
        return client

    async def _connect(self) -> Client:
        client = await self._client()
        await asyncio.wait_for(client.connect(), self.config.timeout_s * 2)
        return client

    @staticmethod
    async def _disconnect(client: Client, timeout_s: float) -> None:
        # The server may already be gone: closing the session then times out or
        # fails on the socket; either way the client is dropped.
        with contextlib.suppress(*CONNECTION_ERRORS):
            await asyncio.wait_for(client.disconnect(), timeout_s)

    def _describe(self, exc: BaseException) -> str:
        return f"OPC UA server {self.config.url}: {type(exc).__name__}: {exc}".rstrip(": ")

    async def check(self) -> None:
        """Connect once (security handshake and user authentication included)."""
        try:
            client = await self._connect()
        except CONNECTION_ERRORS as exc:
            raise SourceUnavailable(self._describe(exc)) from exc
        await self._disconnect(client, self.config.timeout_s)

    async def start(self, ctx: SourceContext) -> None:
        self._stopping.clear()
        # The loop connects in the background: a server that is down at start
        # is retried with backoff instead of failing the whole ingest process.
        self._task = asyncio.create_task(self._run(ctx), name=f"opcua:{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(task, self.config.timeout_s * 3)
        except TimeoutError:
            log.warning("OPC UA %s: session did not close in time; cancelled", self.name)

    def connection_lost(self, reason: str) -> None:
        if not self._lost.is_set():
            log.info("OPC UA %s: connection lost (%s)", self.name, reason)
        self._lost.set()

    async def _run(self, ctx: SourceContext) -> None:
        backoff = Backoff(self.config.reconnect_min_s, self.config.reconnect_max_s)
        while not self._stopping.is_set():
            try:
                await self._session(ctx)
                backoff.reset()  # it was up: start the backoff afresh
            except CONNECTION_ERRORS as exc:
                self.last_error = self._describe(exc)
                log.warning("%s; retrying in %.1f s", self.last_error, backoff.delay_s)
            except Exception:  # a bug in one session must not end ingest from this server
                log.exception("OPC UA %s: session failed; retrying in %.1f s", self.name, backoff.delay_s)
            finally:
                self.connected = False
            if self._stopping.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff.next())

    async def _session(self, ctx: SourceContext) -> None:
        """One connection: returns when it is lost or the source stops."""
        self._lost.clear()
        client = await self._connect()
        try:

            async def lost(exc: Exception) -> None:
                self.connection_lost(repr(exc))

            client.connection_lost_callback = lost
            monitored = await self._resolve(client)
            if self.config.mode == "subscribe":
                await self._subscribe(client, ctx, monitored)
                self._up()
                await self._wait_lost_or_stop(None)
            else:
                self._up()
                await self._poll_loop(client, ctx, monitored)
        finally:
            self.connected = False
            await self._disconnect(client, self.config.timeout_s)

    def _up(self) -> None:
        self.connected = True
        self.connects += 1
        self.last_error = None
        log.info("OPC UA %s: connected to %s (%s)", self.name, self.config.url, self.config.mode)

    async def _wait_lost_or_stop(self, timeout_s: float | None) -> bool:
        """Wait up to ``timeout_s`` (None: forever); True if the session should end."""
        waiters = [asyncio.ensure_future(self._lost.wait()), asyncio.ensure_future(self._stopping.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return self._lost.is_set() or self._stopping.is_set()

    async def _resolve(self, client: Client) -> list[_Monitored]:
        """Nodes for the configured addresses; one that cannot be found is
        logged and left out, so one typo does not stop the other nodes."""
        resolved: list[_Monitored] = []
        unresolved: list[str] = []
        for config in self.config.nodes:
            if config.node_id is not None:
                resolved.append(_Monitored(config, client.get_node(config.node_id)))
                continue
            path = parse_browse_path(config.browse_path or "")
            names = [f"{ns}:{name}" for ns, name in path]
            start = client.nodes.root
            if names[0] == "0:Root":
                names = names[1:]
            try:
                node = await asyncio.wait_for(start.get_child(names), self.config.timeout_s)
            except UaStatusCodeError as exc:
                unresolved.append(config.address)
                log.error("OPC UA %s: browse path %s not found: %s", self.name, config.address, exc)
                continue
            resolved.append(_Monitored(config, node))
        self.unresolved = unresolved
        return resolved

    async def _subscribe(self, client: Client, ctx: SourceContext, monitored: Sequence[_Monitored]) -> None:
        cfg = self.config
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = cfg.publishing_interval_ms
        # Keep-alives every few publishing intervals, and the server keeps the
        # subscription for a while when we miss them (OPC UA defaults: 10 and 3000).
        params.RequestedMaxKeepAliveCount = 10
        params.RequestedLifetimeCount = 3000
        params.MaxNotificationsPerPublish = 10_000
        params.Priority = 0
        by_handle: dict[int, OpcUaNode] = {}
        handler = _Handler(self, ctx, by_handle)
        subscription = await asyncio.wait_for(client.create_subscription(params, handler), cfg.timeout_s)
        requests = []
        for handle, item in enumerate(monitored, start=1):
            read = ua.ReadValueId()
            read.NodeId = item.node.nodeid
            read.AttributeId = AttributeIds.Value
            parameters = ua.MonitoringParameters()
            parameters.ClientHandle = handle
            parameters.SamplingInterval = cfg.sampling_interval_ms
            parameters.QueueSize = cfg.queue_size
            parameters.DiscardOldest = True
            deadband = item.config.deadband or cfg.deadband
            if deadband is not None:
                parameters.Filter = _deadband_filter(deadband)
            request = ua.MonitoredItemCreateRequest()
            request.ItemToMonitor = read
            request.MonitoringMode = ua.MonitoringMode.Reporting
            request.RequestedParameters = parameters
            requests.append(request)
            by_handle[handle] = item.config
        if not requests:
            return
        results = await asyncio.wait_for(subscription.create_monitored_items(requests), cfg.timeout_s)
        retry = []
        for item, request, result in zip(monitored, requests, results, strict=True):
            if not isinstance(result, ua.StatusCode):
                continue
            if request.RequestedParameters.Filter is not None and result.value in _FILTER_REFUSED:
                # A deadband on a string or boolean node: servers refuse the
                # filter; every change of such a node is worth reporting anyway.
                log.info(
                    "OPC UA %s: %s refuses a deadband; monitoring it without", self.name, item.config.address
                )
                request.RequestedParameters.Filter = None
                retry.append((item, request))
            else:
                log.error("OPC UA %s: cannot monitor %s: %s", self.name, item.config.address, result)
        if retry:
            again = await asyncio.wait_for(
                subscription.create_monitored_items([r for _, r in retry]), cfg.timeout_s
            )
            for (item, _), result in zip(retry, again, strict=True):
                if isinstance(result, ua.StatusCode):
                    log.error("OPC UA %s: cannot monitor %s: %s", self.name, item.config.address, result)

    async def _poll_loop(self, client: Client, ctx: SourceContext, monitored: Sequence[_Monitored]) -> None:
        """Poll mode: all nodes in one Read request every ``interval_s``, on a
        fixed grid so the schedule does not drift by the read time."""
        interval = self.config.interval_s
        nodes = [m.node for m in monitored]
        next_at = time.monotonic()
        while True:
            if not ctx.ready():
                log.warning("OPC UA %s: poll skipped, landing buffer full", self.name)
            elif nodes:
                values = await asyncio.wait_for(client.read_attributes(nodes), self.config.timeout_s)
                for item, data_value in zip(monitored, values, strict=True):
                    self.deliver(ctx, item.config, data_value)
            next_at += interval
            now = time.monotonic()
            if next_at < now:  # skip ticks already missed instead of bursting
                next_at = now + interval - (now - next_at) % interval
            if await self._wait_lost_or_stop(next_at - now):
                return

    # -- values ---------------------------------------------------------------

    def deliver(self, ctx: SourceContext, node: OpcUaNode, data_value: ua.DataValue) -> None:
        """One value of one node: a readings row, or a reject saying why not."""
        status = data_value.StatusCode
        code = status.value if status is not None else 0
        value = data_value.Value.Value if data_value.Value is not None else None
        now = int(time.time() * 1000)
        ts = timestamp_ms(data_value.SourceTimestamp, data_value.ServerTimestamp, now)
        raw = f"{node.address} {code:#010x} {value!r}"[:1024].encode()
        try:
            row = reading(node.device_id, node.metric, node.unit, value, code, ts)
        except UnsupportedValue as exc:
            ctx.reject(raw, f"{exc} (node {node.address})")
            return
        row.update(source=self.name, site=ctx.site, ingest_ts=now)
        ctx.emit(READINGS, [row], raw)
