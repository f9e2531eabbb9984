"""A decoded location -> readings rows. Pure.

Readings carry no coordinates of their own (schemas/tables.py), so the
position is two readings, ``latitude`` and ``longitude``, at the location's
time, beside ``speed``, ``altitude``, ``direction`` and the extra items.
Position readings are bad quality when the terminal says it has no fix
(status bit 1 clear) or reports a GNSS fault alarm (bits 4-6).
"""

from __future__ import annotations

from citylake.ingest.jt808.messages import ALARM_GNSS_FAULTS, ALARM_NAMES, STATUS_ACC, STATUS_FIXED, Location
from citylake.schemas import Quality

# extra item id -> (metric, unit)
EXTRA_METRICS: dict[int, tuple[str, str | None]] = {
    0x01: ("mileage", "km"),
    0x02: ("fuel", "L"),
    0x03: ("recorder_speed", "km/h"),
    0x25: ("vehicle_signal_status", None),
    0x2A: ("io_status", None),
    0x2B: ("analog", None),
    0x30: ("signal_strength", None),
    0x31: ("gnss_satellites", None),
}


def location_readings(
    device_id: str, location: Location, source: str, site: str, now_ms: int
) -> list[dict[str, object]]:
    fixed = bool(location.status & STATUS_FIXED) and not location.alarm & ALARM_GNSS_FAULTS
    position_quality = int(Quality.GOOD if fixed else Quality.BAD)
    values: list[tuple[str, float, str | None, int]] = [
        ("latitude", location.latitude, "deg", position_quality),
        ("longitude", location.longitude, "deg", position_quality),
        ("altitude", float(location.altitude_m), "m", position_quality),
        ("speed", location.speed_kmh, "km/h", position_quality),
        ("direction", float(location.direction_deg), "deg", position_quality),
        ("acc", 1.0 if location.status & STATUS_ACC else 0.0, None, int(Quality.GOOD)),
    ]
    for item, value in location.extras.items():
        metric = EXTRA_METRICS.get(item)
        if metric is not None:
            values.append((metric[0], value, metric[1], int(Quality.GOOD)))
    return [
        {
            "device_id": device_id,
            "ts": location.ts_ms,
            "metric": metric,
            "value": value,
            "text": None,
            "unit": unit,
            "quality": quality,
            "source": source,
            "site": site,
            "ingest_ts": now_ms,
        }
        for metric, value, unit, quality in values
    ]


def alarm_names(alarm: int) -> list[str]:
    return [ALARM_NAMES.get(bit, f"bit{bit}") for bit in range(32) if alarm >> bit & 1]
