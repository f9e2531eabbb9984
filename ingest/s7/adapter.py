"""Siemens S7 source: one poll target per PLC, read with python-snap7's
asyncio client (ISO-on-TCP, RFC 1006) on the runner's loop.

The tags are planned once at start into as few area reads as cover them
(``codec.plan_reads``). Error policy as for Modbus: a read that yields no
bytes (an S7 error such as "object does not exist" for a missing DB, an
address beyond the area, a timeout, no connection) never raises out of
``poll``: each of its tags gets a row with ``quality=2`` and no value at the
poll's time, and the read is recorded once in ``rejected`` with the reason.
The connection opens lazily and again after a failure; the PLC's reachability
lands as ``online``/``offline`` device events. S7 has no acknowledgement to
hold back and no quality of its own: a value read is good.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping, Sequence

from snap7.async_client import AsyncClient
from snap7.type import Area

from citylake.config import SourceConfig
from citylake.ingest.base import PollingSource, PollTarget, Row, SourceContext, SourceUnavailable, config_as
from citylake.ingest.configured_devices import configured_device_row
from citylake.ingest.s7.codec import ReadSpan, UnsupportedValue, decode, plan_reads
from citylake.ingest.s7.config import S7SourceConfig, S7Tag
from citylake.schemas import EventKind, table

log = logging.getLogger(__name__)
READINGS = table("readings")
DEVICE_EVENTS = table("device_events")
_AREAS = {"DB": Area.DB, "MK": Area.MK}


def _now_ms() -> int:
    return int(time.time() * 1000)


class S7Poller(PollTarget):
    """One PLC: its connection, its read plan, its online state."""

    def __init__(self, source: S7Source) -> None:
        self.source = source
        self.config = source.config
        self.name = self.config.device_id
        self.interval_s = self.config.interval_s
        self.spans = plan_reads([t.parsed for t in self.config.tags], self.config.max_gap)
        self.tags_of: dict[ReadSpan, list[S7Tag]] = {span: [] for span in self.spans}
        for tag in self.config.tags:
            address = tag.parsed
            span = next(
                s
                for s in self.spans
                if (s.area, s.db) == (address.area, address.db) and s.start <= address.byte < s.start + s.size
            )
            self.tags_of[span].append(tag)
        self.client: AsyncClient | None = None
        self.online: bool | None = None

    async def _connected(self) -> AsyncClient:
        if self.client is not None and self.client.get_connected():
            return self.client
        cfg = self.config
        client = AsyncClient()
        await asyncio.wait_for(client.connect(cfg.host, cfg.rack, cfg.slot, cfg.port), cfg.timeout_s)
        self.client = client
        return client

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.disconnect()

    async def poll(self, ctx: SourceContext) -> None:
        now = _now_ms()
        try:
            client = await self._connected()
        except Exception as exc:  # refused, timed out, or snap7's own errors: the PLC is not reachable
            await self.close()
            self._set_online(ctx, False, f"{type(exc).__name__}: {exc}")
            self.source.count("connect_failures")
            for span in self.spans:
                self._failed(ctx, span, now, f"s7 no connection: {self.config.url}: {exc}")
            return
        self._set_online(ctx, True, None)
        for span in self.spans:
            try:
                data = await asyncio.wait_for(
                    client.read_area(_AREAS[span.area], span.db, span.start, span.size), self.config.timeout_s
                )
            except TimeoutError:
                await self.close()
                self._failed(ctx, span, now, f"s7 timeout: {_where(span)}")
                continue
            except Exception as exc:  # snap7's S7ProtocolError and friends: the PLC's answer
                self.source.count("read_errors")
                self._failed(ctx, span, now, f"s7 read refused: {_where(span)}: {exc}")
                continue
            self._emit(ctx, span, bytes(data), now)

    def _emit(self, ctx: SourceContext, span: ReadSpan, data: bytes, now: int) -> None:
        rows: list[Row] = []
        for tag in self.tags_of[span]:
            try:
                value = decode(data, span.start, tag.parsed, tag.type) * tag.scale + tag.offset
            except UnsupportedValue as exc:
                ctx.reject(data[:1024], f"s7 value: {tag.address} {tag.type}: {exc}")
                continue
            rows.append(self._row(ctx, tag, now, value, 0))
        if rows:
            ctx.emit(READINGS, rows, data[:1024])

    def _failed(self, ctx: SourceContext, span: ReadSpan, now: int, reason: str) -> None:
        raw = f"{self.config.url} {_where(span)}".encode()
        ctx.emit(READINGS, [self._row(ctx, tag, now, None, 2) for tag in self.tags_of[span]], raw)
        ctx.reject(raw, reason)

    def _row(self, ctx: SourceContext, tag: S7Tag, now: int, value: float | None, quality: int) -> Row:
        return {
            "device_id": self.config.device_id,
            "metric": tag.metric,
            "ts": now,
            "value": value,
            "text": None,
            "unit": tag.unit,
            "quality": quality,
            "source": self.source.name,
            "site": ctx.site,
            "ingest_ts": now,
        }

    def _set_online(self, ctx: SourceContext, online: bool, error: str | None) -> None:
        if self.online == online:
            return
        self.online = online
        now = _now_ms()
        attrs = {"plc": self.config.url, "rack": self.config.rack, "slot": self.config.slot}
        if error is not None:
            attrs["error"] = error
        text = json.dumps(attrs, sort_keys=True)
        kind = EventKind.ONLINE if online else EventKind.OFFLINE
        row = {
            "device_id": self.config.device_id,
            "ts": now,
            "kind": kind.value,
            "attributes": text,
            "source": self.source.name,
            "site": ctx.site,
            "ingest_ts": now,
        }
        ctx.emit(DEVICE_EVENTS, [row], text.encode())


def _where(span: ReadSpan) -> str:
    area = f"DB{span.db}" if span.area == "DB" else "M"
    return f"{area} bytes {span.start}..{span.start + span.size - 1}"


class S7Source(PollingSource):
    config_model = S7SourceConfig
    config: S7SourceConfig

    def __init__(self, config: S7SourceConfig) -> None:
        super().__init__(config)
        self.poller = S7Poller(self)
        self._counts = {"connect_failures": 0, "read_errors": 0}

    def targets(self) -> Sequence[PollTarget]:
        return [self.poller]

    def counters(self) -> Mapping[str, int]:
        return dict(self._counts)

    def count(self, event: str) -> None:
        self._counts[event] = self._counts.get(event, 0) + 1

    def is_up(self) -> bool:
        return bool(self.poller.online)

    @classmethod
    def configured_devices(cls, config: SourceConfig, now_ms: int) -> Sequence[Row]:
        cfg = config_as(config, S7SourceConfig)
        attributes = {
            "plc": cfg.url,
            "rack": cfg.rack,
            "slot": cfg.slot,
            "tags": [t.address for t in cfg.tags],
            "metrics": [t.metric for t in cfg.tags],
        }
        return [configured_device_row(cfg.device_id, "s7", cfg.metadata, attributes, now_ms)]

    async def check(self) -> None:
        client = AsyncClient()
        cfg = self.config
        try:
            await asyncio.wait_for(client.connect(cfg.host, cfg.rack, cfg.slot, cfg.port), cfg.timeout_s)
        except Exception as exc:
            raise SourceUnavailable(
                f"S7 {self.name}: cannot connect to {cfg.url} (rack {cfg.rack}, slot {cfg.slot}): {exc}; "
                "check the address, port, rack and slot"
            ) from exc
        finally:
            with contextlib.suppress(Exception):
                await client.disconnect()

    async def close(self) -> None:
        await self.poller.close()
