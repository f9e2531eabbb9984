"""NMEA 0183 source: a client of a talker's TCP port (a GPS receiver's
network output, a gpsd-style NMEA feed, a boat's multiplexer), reconnecting
with exponential backoff.

NMEA has no acknowledgement, so there is nothing to answer after landing;
backpressure is not reading while the landing buffer is full (the talker's
TCP window fills). Each line is one input: a bad checksum or a broken line is
a reject; sentences citylake does not take (GSV, GLL, ZDA, ...) are counted
and dropped, since every receiver sends them all the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence

import orjson

from citylake.config import SourceConfig
from citylake.ingest.backoff import Backoff
from citylake.ingest.base import Row, SourceContext, SourceUnavailable, StreamingSource, config_as
from citylake.ingest.configured_devices import configured_device_row
from citylake.ingest.nmea.codec import TAKEN, FixClock, SentenceError, decode, parse_line
from citylake.ingest.nmea.config import NmeaSourceConfig
from citylake.schemas import table

log = logging.getLogger(__name__)
READINGS = table("readings")
DEVICE_EVENTS = table("device_events")
BACKPRESSURE_POLL_S = 0.1


def _now_ms() -> int:
    return int(time.time() * 1000)


class NmeaSource(StreamingSource):
    config_model = NmeaSourceConfig

    def __init__(self, config: NmeaSourceConfig) -> None:
        super().__init__(config)
        self.config: NmeaSourceConfig = config
        self._ctx: SourceContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = False
        self.clock = FixClock()
        self.connects = 0
        self.disconnects = 0
        self.ignored: dict[str, int] = {}  # sentence type -> count, bounded below
        self.ignored_total = 0

    def is_up(self) -> bool:
        return self._connected

    @classmethod
    def configured_devices(cls, config: SourceConfig, now_ms: int) -> Sequence[Row]:
        cfg = config_as(config, NmeaSourceConfig)
        return [
            configured_device_row(cfg.device_id, "nmea", cfg, {"talker": cfg.url, "source": cfg.name}, now_ms)
        ]

    def counters(self) -> Mapping[str, int]:
        return {
            "connects": self.connects,
            "disconnects": self.disconnects,
            "sentences_ignored": self.ignored_total,
        }

    async def check(self) -> None:
        cfg = self.config
        try:
            async with asyncio.timeout(cfg.connect_timeout_s):
                _, writer = await asyncio.open_connection(cfg.host, cfg.port)
        except (OSError, TimeoutError) as exc:
            raise SourceUnavailable(f"NMEA talker {cfg.url}: cannot connect: {exc!r}") from exc
        writer.close()

    async def start(self, ctx: SourceContext) -> None:
        self._ctx = ctx
        self._task = asyncio.create_task(self._run(ctx), name=f"nmea:{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, ctx: SourceContext) -> None:
        cfg = self.config
        backoff = Backoff(cfg.backoff_s, cfg.max_backoff_s)
        while True:
            try:
                async with asyncio.timeout(cfg.connect_timeout_s):
                    reader, writer = await asyncio.open_connection(
                        cfg.host, cfg.port, limit=cfg.max_line_bytes + 2
                    )
            except (OSError, TimeoutError) as exc:
                delay = backoff.next()
                log.warning(
                    "NMEA %s: cannot connect to %s (%r); retry in %.1f s", self.name, cfg.url, exc, delay
                )
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            self._connected = True
            self.connects += 1
            self._event(ctx, "online", {"talker": cfg.url})
            reason = "closed by the talker"
            try:
                reason = await self._read(ctx, reader)
            except (ConnectionError, OSError) as exc:
                reason = f"connection error: {exc!r}"
            except Exception as exc:  # a bug must cost a reconnect, not the source
                log.exception("NMEA %s: reading from %s failed", self.name, cfg.url)
                reason = f"internal error: {exc!r}"
            finally:
                self._connected = False
                self.disconnects += 1
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
                self._event(ctx, "offline", {"talker": cfg.url, "reason": reason})
            log.info("NMEA %s: %s; reconnecting", self.name, reason)
            await asyncio.sleep(cfg.backoff_s)

    async def _read(self, ctx: SourceContext, reader: asyncio.StreamReader) -> str:
        cfg = self.config
        while True:
            while not ctx.ready():  # noqa: ASYNC110 - polls the runner
                await asyncio.sleep(BACKPRESSURE_POLL_S)
            try:
                async with asyncio.timeout(cfg.idle_timeout_s):
                    line = await reader.readuntil(b"\n")
            except TimeoutError:
                return f"silent for {cfg.idle_timeout_s:g} s"
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    ctx.reject(exc.partial, "incomplete line: the talker closed mid-sentence")
                return "closed by the talker"
            except asyncio.LimitOverrunError as exc:
                # Drop the overlong line up to its end (or what is buffered).
                chunk = await reader.read(exc.consumed or cfg.max_line_bytes)
                ctx.reject(chunk, f"line too long: over max_line_bytes {cfg.max_line_bytes}")
                await self._skip_to_newline(reader)
                continue
            self.take(ctx, line)

    async def _skip_to_newline(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                await reader.readuntil(b"\n")
                return
            except asyncio.LimitOverrunError as exc:
                await reader.read(exc.consumed or self.config.max_line_bytes)
            except asyncio.IncompleteReadError:
                return  # the talker closed mid-line: the read loop sees the end next

    def take(self, ctx: SourceContext, line: bytes) -> None:
        """One line -> readings, a reject, or a counted ignore."""
        if not line.strip():
            return
        now = _now_ms()
        try:
            sentence = parse_line(line)
            kind = sentence.sentence_type
            if kind not in TAKEN:
                self._ignore(kind)
                return
            decoded = decode(sentence, self.clock, now)
        except SentenceError as exc:
            ctx.reject(line, str(exc))
            return
        device = self.config.device_id
        rows = [
            {
                "device_id": device,
                "ts": decoded.ts_ms,
                "metric": metric,
                "value": value,
                "text": None,
                "unit": unit,
                "quality": quality,
                "source": ctx.source,
                "site": ctx.site,
                "ingest_ts": now,
            }
            for metric, value, unit, quality in decoded.readings
        ]
        ctx.emit(READINGS, rows, line)

    def _ignore(self, kind: str) -> None:
        self.ignored_total += 1
        if kind in self.ignored or len(self.ignored) < 64:
            self.ignored[kind] = self.ignored.get(kind, 0) + 1

    def _event(self, ctx: SourceContext, kind: str, attributes: dict[str, object]) -> None:
        now = _now_ms()
        row = {
            "device_id": self.config.device_id,
            "ts": now,
            "kind": kind,
            "attributes": orjson.dumps(attributes, option=orjson.OPT_SORT_KEYS).decode(),
            "source": ctx.source,
            "site": ctx.site,
            "ingest_ts": now,
        }
        ctx.emit(DEVICE_EVENTS, [row], b"")
