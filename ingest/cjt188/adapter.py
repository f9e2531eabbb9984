"""CJ/T 188 source: every configured water, gas or heat meter is a poll target.

A poll is one read of DI 901F (current cumulative data). The reply's
quantities become readings with the units their unit codes name; its status
bytes become the ``valve`` (text) and ``battery_low`` readings, make the
poll's values ``quality=1`` (uncertain) when the battery is low or the valve
reports a fault, and, when they change, a ``status`` device event and a
``devices`` row whose attributes carry them. Errors and online/offline as
meter_poll.py says (``cjt188 error reply`` for an abnormal ``C1`` answer).
"""

from __future__ import annotations

from collections.abc import Sequence

from citylake.config import SourceConfig
from citylake.ingest.base import Row, SourceContext, config_as
from citylake.ingest.cjt188.codec import (
    HEAT_TYPES,
    METER_TYPES,
    CurrentData,
    DecodeError,
    MeterStatus,
    decode_current_data,
    find_frame,
    parse_frame,
    read_request,
)
from citylake.ingest.cjt188.config import Cjt188Meter, Cjt188SourceConfig
from citylake.ingest.configured_devices import configured_device_row
from citylake.ingest.meter_link import LinkConnectionFailed, LinkError, LinkNoResponse, MeterLink
from citylake.ingest.meter_poll import READINGS, MeterLineSource, MeterPoller, now_ms
from citylake.schemas import Quality

WATER_METRICS = (("cumulative_flow", "m3"), ("settlement_day_flow", "m3"))
HEAT_METRICS = (
    ("settlement_day_heat", "kWh"), ("current_heat", "kWh"), ("heat_power", "kW"), ("flow_rate", "m3/h"),
    ("cumulative_flow", "m3"), ("supply_temperature", "Cel"), ("return_temperature", "Cel"),
    ("working_hours", "h"),
)  # fmt: skip
STATUS_METRICS = (("valve", None), ("battery_low", None))


class Cjt188MeterPoller(MeterPoller):
    protocol = "cjt188"

    def __init__(self, meter: Cjt188Meter, config: Cjt188SourceConfig, link: MeterLink, source: str) -> None:
        super().__init__(
            meter.id, meter.meter_address, link, meter.interval_s or config.interval_s,
            config.timeout_s, config.retries, config.offline_after,
        )  # fmt: skip
        self.meter = meter
        self.config = config
        self.source_name = source
        self.type_code = meter.type_code
        values = HEAT_METRICS if self.type_code in HEAT_TYPES else WATER_METRICS
        self.metrics: tuple[tuple[str, str | None], ...] = (*values, *STATUS_METRICS)
        self._ser = 0
        self._last_status: tuple[str, bool, int, int] | None = None

    def _next_request(self) -> tuple[int, bytes]:
        self._ser = (self._ser + 1) & 0xFF
        cfg = self.config
        return self._ser, read_request(
            self.type_code, self.address, self._ser, cfg.di_byte_order, cfg.preamble
        )

    async def poll(self, ctx: SourceContext) -> None:
        ts = now_ms()
        ser, request = self._next_request()
        what = f"DI 901F (type {self.type_code:02X})"
        answered = True
        try:
            reply = await self.exchange(request, find_frame)
        except (LinkNoResponse, LinkConnectionFailed) as exc:
            answered = False
            self.fail_link(ctx, ts, self.metrics, what, request, exc)
        except LinkError as exc:
            self.fail_link(ctx, ts, self.metrics, what, request, exc)
        else:
            raw = self.raw(request, reply)
            try:
                decoded = decode_current_data(
                    parse_frame(reply), self.type_code, self.address, ser, self.config.di_byte_order
                )
            except DecodeError as exc:
                self.fail(ctx, ts, self.metrics, "bad frame", what, str(exc), raw)
            else:
                if isinstance(decoded, MeterStatus):
                    detail = f"status ST1 {decoded.st1:02X} ST2 {decoded.st2:02X} (valve {decoded.valve})"
                    self.fail(ctx, ts, self.metrics, "error reply", what, detail, raw)
                    self._status_changed(ctx, ts, decoded, None, raw)
                else:
                    self._emit(ctx, ts, decoded, raw)
        self.presence_after_poll(ctx, ts, answered)

    def _emit(self, ctx: SourceContext, ts: int, data: CurrentData, raw: bytes) -> None:
        quality = Quality.UNCERTAIN if data.status.degraded else Quality.GOOD
        rows = [self.reading(ctx, ts, q.metric, q.value, q.unit, quality) for q in data.quantities]
        rows.append(self.reading(ctx, ts, "valve", None, None, text=data.status.valve))
        rows.append(self.reading(ctx, ts, "battery_low", float(data.status.battery_low), None))
        ctx.emit(READINGS, rows, raw)
        self._status_changed(ctx, ts, data.status, data.meter_time, raw)

    def _status_changed(
        self, ctx: SourceContext, ts: int, status: MeterStatus, meter_time: str | None, raw: bytes
    ) -> None:
        """A ``status`` event and a ``devices`` row when valve or battery change (not every poll)."""
        key = (status.valve, status.battery_low, status.st1, status.st2)
        if key == self._last_status:
            return
        self._last_status = key
        attributes: dict[str, object] = {
            "valve": status.valve, "battery_low": status.battery_low,
            "st1": f"{status.st1:02X}", "st2": f"{status.st2:02X}", "meter_address": self.address,
        }  # fmt: skip
        if meter_time is not None:
            attributes["meter_time"] = meter_time
        self.event(ctx, ts, "status", attributes)
        ctx.describe_devices([device_row(self.meter, self.config, self.source_name, ts, attributes)], raw)


def device_row(
    meter: Cjt188Meter,
    config: Cjt188SourceConfig,
    source: str,
    now_ms: int,
    status: dict[str, object] | None = None,
) -> Row:
    row = dict(
        configured_device_row(
            meter.id,
            "cjt188",
            meter,
            {
                "meter_address": meter.meter_address,
                "meter_type": METER_TYPES[meter.type_code],
                # A5 A6 of the address: the manufacturer's code.
                "manufacturer_code": meter.meter_address[:4],
                "line": config.endpoint_of(meter).key,
                "interval_s": meter.interval_s or config.interval_s,
                "source": source,
                **(status or {}),
            },
            now_ms,
        )
    )
    row["type"] = row["type"] or METER_TYPES[meter.type_code]
    return row


class Cjt188Source(MeterLineSource):
    """Polls CJ/T 188 water, gas and heat meters through serial servers or serial ports."""

    config_model = Cjt188SourceConfig
    protocol = "cjt188"

    def __init__(self, config: Cjt188SourceConfig) -> None:
        super().__init__(config)
        self.config: Cjt188SourceConfig = config
        for meter in config.meters:
            link = self.link_for(
                config.endpoint_of(meter), config.timeout_s, config.backoff_s, config.max_backoff_s
            )
            self.pollers.append(Cjt188MeterPoller(meter, config, link, config.name))

    @classmethod
    def configured_devices(cls, config: SourceConfig, now_ms: int) -> Sequence[Row]:
        cfg = config_as(config, Cjt188SourceConfig)
        return [device_row(meter, cfg, cfg.name, now_ms) for meter in cfg.meters]
