"""Values that look like a city's, for the simulated sensors: daily cycles in
China Standard Time, a fixed offset per device, small noise, and now and then
a pollution episode on a few air sensors (so the demo's alert rule fires).

Plausible ranges: urban air 5-150 ug/m3 PM2.5 (GB 3095-2012 grade II daily
limit 75), -5..35 C, street noise 40-75 dB(A), a river gauge of about 2.4 m
with a slow tide, district water mains of 60-220 m3/h."""

from __future__ import annotations

import math
import random

CST_OFFSET_H = 8.0
# One air sensor in this many has pollution episodes: 4 minutes in every 15.
POLLUTER_EVERY = 13
EPISODE_PERIOD_MS = 15 * 60_000
EPISODE_LENGTH_MS = 4 * 60_000


def _hour(ts_ms: int) -> float:
    return ((ts_ms / 3_600_000) + CST_OFFSET_H) % 24


def _peaks(hour: float, *centres: float, width_h: float = 1.5) -> float:
    """0..1: how close ``hour`` is to one of the day's rush-hour centres."""
    return max(math.exp(-(((hour - c + 12) % 24 - 12) ** 2) / (2 * width_h**2)) for c in centres)


def device_offset(index: int, spread: float) -> float:
    """The same small offset for a device every run (sensors differ a little)."""
    return random.Random(index * 7919).uniform(-spread, spread)


def city_value(metric: str, index: int, ts_ms: int, rng: random.Random) -> float:
    """A reading of ``metric`` for device number ``index`` at ``ts_ms``."""
    hour = _hour(ts_ms)
    if metric == "temperature":
        value = 14 + 7 * math.cos(2 * math.pi * (hour - 15) / 24) + device_offset(index, 1.5)
        return round(value + rng.gauss(0, 0.2), 2)
    if metric == "pm25":
        value = 28 + 30 * _peaks(hour, 8, 18.5) + device_offset(index, 6)
        if index % POLLUTER_EVERY == 0 and (ts_ms + index * 60_000) % EPISODE_PERIOD_MS < EPISODE_LENGTH_MS:
            value += 70  # a truck idling, a construction site: the pm25-high rule opens an alert
        return round(max(3.0, value + rng.gauss(0, 2)), 1)
    if metric == "db":
        value = 47 + 20 * _peaks(hour, 9, 13, 18, width_h=3) + device_offset(index, 3)
        return round(value + rng.gauss(0, 1.5), 1)
    if metric == "level":
        tide = 0.15 * math.sin(2 * math.pi * ts_ms / (12.42 * 3_600_000))
        return round(2.4 + tide + device_offset(index, 0.3) + rng.gauss(0, 0.005), 3)
    if metric == "flow":
        value = 90 + 110 * _peaks(hour, 7.5, 19.5, width_h=2) + device_offset(index, 15)
        return round(max(0.0, value + rng.gauss(0, 4)), 1)
    return round(rng.uniform(0, 100), 3)
