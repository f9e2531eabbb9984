"""M-Bus source: every configured meter (a primary address) is a poll target.

A poll is one REQ_UD2 and its RSP_UD. Every DIF/VIF record becomes a reading
(metric from the VIF, with ``_max``/``_min``/``_error``, ``_s<storage>``,
``_t<tariff>``, ``_u<subunit>`` suffixes; unit from the VIF), with the
quality the status byte gives (uncertain for busy, power low or a temporary
error; bad for a permanent error; uncertain for a value recorded in an error
state). The header's manufacturer, identification number, version and medium
land in ``devices`` when first seen and when they change; a status byte that
changes is a ``status`` device event. Errors and online/offline as
meter_poll.py says.
"""

from __future__ import annotations

from collections.abc import Sequence

from citylake.config import SourceConfig
from citylake.ingest.base import Row, SourceContext, config_as
from citylake.ingest.configured_devices import configured_device_row
from citylake.ingest.mbus.codec import DecodeError, Readout, decode_rsp_ud, find_frame, req_ud2
from citylake.ingest.mbus.config import MbusMeter, MbusSourceConfig
from citylake.ingest.meter_link import LinkConnectionFailed, LinkError, LinkNoResponse, MeterLink
from citylake.ingest.meter_poll import READINGS, MeterLineSource, MeterPoller, now_ms
from citylake.schemas import Quality


class MbusMeterPoller(MeterPoller):
    protocol = "mbus"

    def __init__(self, meter: MbusMeter, config: MbusSourceConfig, link: MeterLink, source: str) -> None:
        super().__init__(
            meter.id, f"primary {meter.primary_address}", link, meter.interval_s or config.interval_s,
            config.timeout_s, config.retries, config.offline_after,
        )  # fmt: skip
        self.meter = meter
        self.config = config
        self.source_name = source
        self._fcb = True
        self._metrics: list[tuple[str, str | None]] = []  # what the meter last sent: bad rows name these
        self._described: dict[str, object] | None = None
        self._last_status: int | None = None

    async def poll(self, ctx: SourceContext) -> None:
        ts = now_ms()
        request = req_ud2(self.meter.primary_address, self._fcb)
        what = "REQ_UD2"
        answered = True
        try:
            reply = await self.exchange(request, find_frame)
        except (LinkNoResponse, LinkConnectionFailed) as exc:
            answered = False
            self.fail_link(ctx, ts, self._metrics, what, request, exc)
        except LinkError as exc:
            self.fail_link(ctx, ts, self._metrics, what, request, exc)
        else:
            # A meter that answered counts the request as done: the next one is new.
            self._fcb = not self._fcb
            raw = self.raw(request, reply)
            try:
                readout = decode_rsp_ud(reply, self.meter.primary_address)
            except DecodeError as exc:
                self.fail(ctx, ts, self._metrics, "bad frame", what, str(exc), raw)
            else:
                expected = self.meter.secondary_id
                if expected is not None and readout.identification != expected:
                    detail = f"identification {readout.identification}, configured {expected}"
                    self.fail(ctx, ts, self._metrics, "wrong meter", what, detail, raw)
                else:
                    self._emit(ctx, ts, readout, raw)
        self.presence_after_poll(ctx, ts, answered)

    def _emit(self, ctx: SourceContext, ts: int, readout: Readout, raw: bytes) -> None:
        base = readout.quality
        rows = []
        for record in readout.records:
            quality = max(base, Quality.UNCERTAIN) if record.error_state else base
            rows.append(self.reading(ctx, ts, record.metric, record.value, record.unit, quality, record.text))
        self._metrics = [(r.metric, r.unit) for r in readout.records]
        if rows:
            ctx.emit(READINGS, rows, raw)
        attributes = readout.attributes()
        if attributes != self._described:
            self._described = attributes
            ctx.describe_devices([device_row(self.meter, self.config, self.source_name, ts, readout)], raw)
        if readout.status != self._last_status:
            if self._last_status is not None or readout.status != 0:
                self.event(
                    ctx, ts, "status", {"status": f"{readout.status:02X}", "quality": int(base), **attributes}
                )
            self._last_status = readout.status


def device_row(
    meter: MbusMeter, config: MbusSourceConfig, source: str, now_ms: int, readout: Readout | None = None
) -> Row:
    attributes: dict[str, object] = {
        "primary_address": meter.primary_address,
        "line": config.endpoint_of(meter).key,
        "interval_s": meter.interval_s or config.interval_s,
        "source": source,
    }
    if meter.secondary_id is not None:
        attributes["secondary_id"] = meter.secondary_id
    if readout is not None:
        attributes.update(readout.attributes())
    row = dict(configured_device_row(meter.id, "mbus", meter, attributes, now_ms))
    if readout is not None:
        row["manufacturer"] = readout.manufacturer
        row["type"] = row["type"] or f"{readout.medium}_meter"
    return row


class MbusSource(MeterLineSource):
    """Polls wired M-Bus meters through TCP M-Bus gateways or serial M-Bus masters."""

    config_model = MbusSourceConfig
    protocol = "mbus"

    def __init__(self, config: MbusSourceConfig) -> None:
        super().__init__(config)
        self.config: MbusSourceConfig = config
        for meter in config.meters:
            link = self.link_for(
                config.endpoint_of(meter), config.timeout_s, config.backoff_s, config.max_backoff_s
            )
            self.pollers.append(MbusMeterPoller(meter, config, link, config.name))

    @classmethod
    def configured_devices(cls, config: SourceConfig, now_ms: int) -> Sequence[Row]:
        cfg = config_as(config, MbusSourceConfig)
        return [device_row(meter, cfg, cfg.name, now_ms) for meter in cfg.meters]
