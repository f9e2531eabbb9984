"""What every polled meter protocol (DL/T 645, CJ/T 188, M-Bus) does the same way.

A ``MeterPoller`` is one meter on a shared ``MeterLink``. The protocol module
subclasses it and writes ``poll`` from its requests and its decoder; this
class owns the rest, once:

- **Retries**: a request without a reply is sent again up to ``retries``
  times; a lost connection is not retried inside the poll (the link backs off).
- **Error policy** (as Modbus): a request that yields no value never raises
  out of ``poll``. Its metrics get ``quality=2`` rows without a value at the
  poll's time and the request one ``rejected`` row, reason
  ``<protocol> <kind>: meter <id> (<address>) <what>[: detail]``; the text
  before the first colon is the rejected-metrics label, so it names the kind
  only. After an unanswered request the meter's later requests in that poll
  are not sent (``skipped``): a dead meter costs one timeout per poll and
  does not hold the line for its neighbours.
- **Presence**: ``online``/``offline`` ``device_events`` (meter_presence.py).
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Mapping, Sequence

from citylake.config import SourceConfig
from citylake.ingest.base import PollingSource, PollTarget, Row, SourceContext, SourceUnavailable
from citylake.ingest.meter_link import (
    FrameFinder,
    LinkConnectionFailed,
    LinkEndpoint,
    LinkError,
    LinkNoResponse,
    MeterLink,
)
from citylake.ingest.meter_presence import MeterPresence
from citylake.schemas import Quality, table

READINGS = table("readings")
DEVICE_EVENTS = table("device_events")


def now_ms() -> int:
    return int(time.time() * 1000)


class MeterPoller(PollTarget):
    """One meter: its id, its line, its schedule; subclasses implement ``poll``."""

    protocol: str = "meter"

    def __init__(
        self,
        device_id: str,
        address: str,
        link: MeterLink,
        interval_s: float,
        timeout_s: float,
        retries: int,
        offline_after: int,
    ) -> None:
        self.name = device_id
        self.device_id = device_id
        self.address = address
        self.link = link
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.retries = retries
        self.presence = MeterPresence(offline_after)

    async def exchange(self, request: bytes, find_frame: FrameFinder) -> bytes:
        """``request`` with up to ``retries`` more tries while nothing answers."""
        attempt = 0
        while True:
            try:
                return await self.link.exchange(request, find_frame, self.timeout_s)
            except LinkNoResponse:
                if attempt >= self.retries:
                    raise
                attempt += 1

    def raw(self, request: bytes, outcome: bytes | str) -> bytes:
        """``rejected.raw`` / the input's raw bytes: the line, the request and what came back."""
        said = outcome.hex() if isinstance(outcome, bytes) else outcome
        return f"{self.link.endpoint.key} meter {self.address} request {request.hex()} -> {said}".encode()

    def reading(
        self,
        ctx: SourceContext,
        ts: int,
        metric: str,
        value: float | None,
        unit: str | None,
        quality: Quality = Quality.GOOD,
        text: str | None = None,
    ) -> dict[str, object]:
        return {
            "device_id": self.device_id,
            "ts": ts,
            "metric": metric,
            "value": value,
            "text": text,
            "unit": unit,
            "quality": int(quality),
            "source": ctx.source,
            "site": ctx.site,
            "ingest_ts": now_ms(),
        }

    def fail(
        self,
        ctx: SourceContext,
        ts: int,
        metrics: Sequence[tuple[str, str | None]],
        kind: str,
        what: str,
        detail: str | None,
        raw: bytes,
    ) -> None:
        """Bad-quality rows for ``metrics`` (name, unit) and one counted reject."""
        reason = f"{self.protocol} {kind}: meter {self.device_id} ({self.address}) {what}"
        reason += f": {detail}" if detail else ""
        if metrics:
            rows = [self.reading(ctx, ts, m, None, u, Quality.BAD) for m, u in metrics]
            ctx.emit(READINGS, rows, raw)
        ctx.reject(raw, reason)

    def fail_link(
        self,
        ctx: SourceContext,
        ts: int,
        metrics: Sequence[tuple[str, str | None]],
        what: str,
        request: bytes,
        exc: LinkError,
    ) -> None:
        self.fail(ctx, ts, metrics, exc.kind, what, str(exc), self.raw(request, exc.raw or exc.kind))

    def event(self, ctx: SourceContext, ts: int, kind: str, attributes: Mapping[str, object]) -> None:
        row: Row = {
            "device_id": self.device_id,
            "ts": ts,
            "kind": kind,
            "attributes": json.dumps(dict(attributes), sort_keys=True),
            "source": ctx.source,
            "site": ctx.site,
            "ingest_ts": now_ms(),
        }
        ctx.emit(DEVICE_EVENTS, [row], f"{self.link.endpoint.key} meter {self.address} {kind}".encode())

    def presence_after_poll(self, ctx: SourceContext, ts: int, answered: bool) -> None:
        """After each poll: an ``online`` or ``offline`` event when the meter's state changed."""
        kind = self.presence.answered() if answered else self.presence.missed()
        if kind is not None:
            attributes: dict[str, object] = {"meter_address": self.address, "line": self.link.endpoint.key}
            if not answered:
                attributes["missed_polls"] = self.presence.missed_in_a_row
            self.event(ctx, ts, str(kind), attributes)


class MeterLineSource(PollingSource):
    """A source of meters on shared lines: the subclass builds its pollers with
    ``link_for`` (one ``MeterLink`` per line) and appends them to ``pollers``."""

    protocol = "meter"

    def __init__(self, config: SourceConfig) -> None:
        super().__init__(config)
        self.links: dict[str, MeterLink] = {}
        self.pollers: list[MeterPoller] = []

    def link_for(
        self, endpoint: LinkEndpoint, timeout_s: float, backoff_s: float, max_backoff_s: float
    ) -> MeterLink:
        link = self.links.get(endpoint.key)
        if link is None:
            link = self.links[endpoint.key] = MeterLink(
                endpoint, max(timeout_s, 1.0), backoff_s, max_backoff_s
            )
        return link

    def validate(self) -> list[str]:
        serial = sorted(k for k, link in self.links.items() if link.endpoint.transport == "serial")
        if serial and importlib.util.find_spec("serial") is None:
            return [f"{', '.join(serial)}: a serial line needs the pyserial package"]
        return []

    def targets(self) -> Sequence[MeterPoller]:
        return self.pollers

    def counters(self) -> dict[str, int]:
        return {
            "exchanges": sum(link.exchanges for link in self.links.values()),
            "reconnects": sum(link.reconnects for link in self.links.values()),
        }

    def is_up(self) -> bool:
        return all(link.connected for link in self.links.values())

    async def check(self) -> None:
        failed: list[str] = []
        for key, shared in self.links.items():
            probe = MeterLink(shared.endpoint, shared.connect_timeout_s, 0.0, 0.0)
            try:
                await probe.connect()
            except LinkConnectionFailed as exc:
                failed.append(f"{exc} (meters on {key}: {sum(p.link is shared for p in self.pollers)})")
            finally:
                probe.close()
        if failed:
            raise SourceUnavailable(f"{self.protocol} source {self.name}: " + "; ".join(failed))

    async def close(self) -> None:
        for link in self.links.values():
            async with link.lock:
                link.close()
