"""DL/T 645-2007 source: every configured meter is a poll target on the runner's loop.

Each poll reads the meter's data items one request each (a DL/T 645 read
names one DI). Meters on the same line (a serial server's TCP port or a
serial port) share one ``MeterLink``. The error policy and the online/offline
events are meter_poll.py's: an abnormal reply (``D1``) is a counted
``dlt645 error reply`` reject with a bad-quality row, a garbled one a
``dlt645 bad frame``, silence ``dlt645 no response`` and, after
``offline_after`` silent polls, an ``offline`` device event.
"""

from __future__ import annotations

from collections.abc import Sequence

from citylake.config import SourceConfig
from citylake.ingest.base import Row, SourceContext, config_as
from citylake.ingest.configured_devices import configured_device_row
from citylake.ingest.dlt645.codec import (
    DataItem,
    DecodeError,
    decode_read_reply,
    di_text,
    error_text,
    find_frame,
    parse_frame,
    read_request,
)
from citylake.ingest.dlt645.config import Dlt645Meter, Dlt645SourceConfig
from citylake.ingest.meter_link import LinkConnectionFailed, LinkError, LinkNoResponse, MeterLink
from citylake.ingest.meter_poll import READINGS, MeterLineSource, MeterPoller, now_ms


class Dlt645MeterPoller(MeterPoller):
    protocol = "dlt645"

    def __init__(self, meter: Dlt645Meter, config: Dlt645SourceConfig, link: MeterLink) -> None:
        super().__init__(
            meter.id, meter.meter_address, link, meter.interval_s or config.interval_s,
            config.timeout_s, config.retries, config.offline_after,
        )  # fmt: skip
        self.meter = meter
        self.requests: tuple[tuple[DataItem, bytes], ...] = tuple(
            (item, read_request(meter.meter_address, item.di, config.preamble))
            for item in config.items_of(meter)
        )

    async def poll(self, ctx: SourceContext) -> None:
        ts = now_ms()
        answered = False
        unanswered: str | None = None
        for item, request in self.requests:
            what = f"DI {di_text(item.di)} ({item.metric})"
            metric = [(item.metric, item.unit)]
            if unanswered is not None:
                self.fail(
                    ctx,
                    ts,
                    metric,
                    "skipped",
                    what,
                    f"not sent after {unanswered}",
                    self.raw(request, "skipped"),
                )
                continue
            try:
                reply = await self.exchange(request, find_frame)
            except (LinkNoResponse, LinkConnectionFailed) as exc:
                self.fail_link(ctx, ts, metric, what, request, exc)
                unanswered = f"{exc.kind} on DI {di_text(item.di)}"
                continue
            except LinkError as exc:  # bytes came back, but no frame: the meter is there
                answered = True
                self.fail_link(ctx, ts, metric, what, request, exc)
                continue
            answered = True
            raw = self.raw(request, reply)
            try:
                decoded = decode_read_reply(parse_frame(reply), self.address, item)
            except DecodeError as exc:
                self.fail(ctx, ts, metric, "bad frame", what, str(exc), raw)
                continue
            if decoded.error is not None:
                self.fail(ctx, ts, metric, "error reply", what, error_text(decoded.error), raw)
                continue
            ctx.emit(READINGS, [self.reading(ctx, ts, item.metric, decoded.value, item.unit)], raw)
        self.presence_after_poll(ctx, ts, answered)


class Dlt645Source(MeterLineSource):
    """Polls DL/T 645-2007 meters through serial servers or serial ports."""

    config_model = Dlt645SourceConfig
    protocol = "dlt645"

    def __init__(self, config: Dlt645SourceConfig) -> None:
        super().__init__(config)
        self.config: Dlt645SourceConfig = config
        for meter in config.meters:
            link = self.link_for(
                config.endpoint_of(meter), config.timeout_s, config.backoff_s, config.max_backoff_s
            )
            self.pollers.append(Dlt645MeterPoller(meter, config, link))

    @classmethod
    def configured_devices(cls, config: SourceConfig, now_ms: int) -> Sequence[Row]:
        cfg = config_as(config, Dlt645SourceConfig)
        return [
            configured_device_row(
                meter.id,
                "dlt645",
                meter,
                {
                    "meter_address": meter.meter_address,
                    "line": cfg.endpoint_of(meter).key,
                    "data_items": [i.metric for i in cfg.items_of(meter)],
                    "interval_s": meter.interval_s or cfg.interval_s,
                    "source": cfg.name,
                },
                now_ms,
            )
            for meter in cfg.meters
        ]
