"""NMEA 0183 sentences -> readings, with pynmea2. Pure: the clock is passed in.

| sentence | metrics |
|---|---|
| GGA (fix) | ``latitude``, ``longitude`` (deg), ``altitude`` (m), ``fix_quality``, ``satellites``, ``hdop`` |
| RMC (recommended minimum) | ``speed`` (km/h, from knots), ``course`` (deg); its date dates GGA |
| VTG (track and speed) | ``speed`` (km/h), ``course`` (deg, true) |
| GSA (DOPs, active satellites) | ``fix_type`` (1 none, 2 2D, 3 3D), ``pdop``, ``vdop``, ``satellites_used`` |

Positions come from GGA only: RMC carries the same fix, and two sentences
landing one (device, metric, ts) twice would be repeats. A GGA with fix
quality 0 (no fix) or an RMC/VTG with status V (void) or mode N lands bad;
GGA quality 6 (dead reckoning) lands uncertain.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pynmea2

from citylake.schemas import Quality

KNOT_KMH = 1.852
TAKEN = ("GGA", "RMC", "VTG", "GSA")


class SentenceError(ValueError):
    """A line that is not a usable sentence; the message says why, for ``rejected``."""


@dataclass
class FixClock:
    """The talker's time: GGA says only the time of day, RMC the date as well."""

    date: dt.date | None = None
    last_ts_ms: int | None = None

    def at(self, time_of_day: dt.time | None, now_ms: int) -> int:
        if time_of_day is None:
            return self.last_ts_ms if self.last_ts_ms is not None else now_ms
        now = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC)
        day = self.date or now.date()
        when = dt.datetime.combine(day, time_of_day.replace(tzinfo=dt.UTC))
        if self.date is None and when - now > dt.timedelta(hours=12):
            when -= dt.timedelta(days=1)  # just before midnight UTC, seen just after
        self.last_ts_ms = int(when.timestamp() * 1000)
        return self.last_ts_ms


@dataclass
class Decoded:
    sentence_type: str
    readings: list[tuple[str, float, str | None, int]] = field(default_factory=list)
    ts_ms: int = 0


def parse_line(line: bytes) -> pynmea2.NMEASentence:
    try:
        text = line.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise SentenceError(f"not ASCII: byte {exc.start}") from None
    if not text.startswith(("$", "!")):
        raise SentenceError(f"not a sentence: {text[:40]!r} does not start with $")
    try:
        return pynmea2.parse(text, check=True)
    except pynmea2.ChecksumError as exc:
        raise SentenceError(f"bad checksum: {_message(exc)}") from None
    except pynmea2.SentenceTypeError as exc:
        raise SentenceError(f"unknown sentence: {_message(exc)}") from None
    except pynmea2.ParseError as exc:
        raise SentenceError(f"unparsable: {_message(exc)}") from None


def _message(exc: Exception) -> str:
    """pynmea2's errors carry (message, data), sometimes nested in one tuple."""
    first: object = exc.args[0] if exc.args else exc
    while isinstance(first, tuple) and first:
        first = first[0]
    return str(first)[:120]


def _number(sentence: pynmea2.NMEASentence, name: str) -> float | None:
    value = getattr(sentence, name, None)
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SentenceError(f"bad field: {sentence.sentence_type} {name}={str(value)[:20]!r}") from None


def decode(sentence: pynmea2.NMEASentence, clock: FixClock, now_ms: int) -> Decoded:
    """Readings of a taken sentence (``TAKEN``); raises ``SentenceError``."""
    kind = sentence.sentence_type
    out = Decoded(kind)
    try:
        if kind == "GGA":
            _gga(sentence, clock, now_ms, out)
        elif kind == "RMC":
            _rmc(sentence, clock, now_ms, out)
        elif kind == "VTG":
            out.ts_ms = clock.at(None, now_ms)
            mode = getattr(sentence, "faa_mode", None)
            quality = int(Quality.BAD if mode == "N" else Quality.GOOD)
            speed = _number(sentence, "spd_over_grnd_kmph")
            course = _number(sentence, "true_track")
            _add(out, "speed", speed, "km/h", quality)
            _add(out, "course", course, "deg", quality)
        elif kind == "GSA":
            out.ts_ms = clock.at(None, now_ms)
            fix = _number(sentence, "mode_fix_type")
            quality = int(Quality.BAD if fix in (None, 1.0) else Quality.GOOD)
            used = sum(1 for i in range(1, 13) if getattr(sentence, f"sv_id{i:02d}", ""))
            _add(out, "fix_type", fix, None, int(Quality.GOOD))
            _add(out, "pdop", _number(sentence, "pdop"), None, quality)
            _add(out, "vdop", _number(sentence, "vdop"), None, quality)
            _add(out, "satellites_used", float(used), None, int(Quality.GOOD))
        else:
            raise SentenceError(f"sentence not taken: {kind} (taken: {', '.join(TAKEN)})")
    except (ValueError, TypeError, AttributeError) as exc:
        if isinstance(exc, SentenceError):
            raise
        raise SentenceError(f"bad field: {kind}: {exc}") from None
    return out


def _add(out: Decoded, metric: str, value: float | None, unit: str | None, quality: int) -> None:
    if value is not None:
        out.readings.append((metric, value, unit, quality))


def _gga(sentence: pynmea2.NMEASentence, clock: FixClock, now_ms: int, out: Decoded) -> None:
    out.ts_ms = clock.at(sentence.timestamp, now_ms)
    fix = sentence.gps_qual
    fix_quality = int(fix) if fix not in (None, "") else 0
    if fix_quality == 0:
        quality = int(Quality.BAD)
    elif fix_quality == 6:
        quality = int(Quality.UNCERTAIN)
    else:
        quality = int(Quality.GOOD)
    if sentence.lat and sentence.lon:
        latitude, longitude = sentence.latitude, sentence.longitude
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            raise SentenceError(f"bad position: {latitude}, {longitude}")
        _add(out, "latitude", latitude, "deg", quality)
        _add(out, "longitude", longitude, "deg", quality)
    if sentence.altitude is not None and getattr(sentence, "altitude_units", "M") in ("M", ""):
        _add(out, "altitude", float(sentence.altitude), "m", quality)
    _add(out, "fix_quality", float(fix_quality), None, int(Quality.GOOD))
    _add(out, "satellites", _number(sentence, "num_sats"), None, int(Quality.GOOD))
    _add(out, "hdop", _number(sentence, "horizontal_dil"), None, quality)


def _rmc(sentence: pynmea2.NMEASentence, clock: FixClock, now_ms: int, out: Decoded) -> None:
    if sentence.datestamp is not None:
        clock.date = sentence.datestamp
    out.ts_ms = clock.at(sentence.timestamp, now_ms)
    quality = int(Quality.GOOD if sentence.status == "A" else Quality.BAD)
    knots = _number(sentence, "spd_over_grnd")
    _add(out, "speed", knots * KNOT_KMH if knots is not None else None, "km/h", quality)
    _add(out, "course", _number(sentence, "true_course"), "deg", quality)
