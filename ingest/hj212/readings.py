"""HJ 212 packets -> readings rows and device events. Pure: the clock is passed in.

Which commands carry data (HJ 212-2017 table 6) and how their CP fields
become metrics:

| CN | data | field -> metric |
|---|---|---|
| 2011 | real-time | ``a34004-Rtd`` -> ``pm25``; ``-ZsRtd`` (converted) -> ``pm25_zs`` |
| 2051 | minute | ``-Avg``/``-Min``/``-Max``/``-Cou`` -> ``pm25_1m_avg`` ... |
| 2061 | hourly | -> ``pm25_1h_avg`` ... |
| 2031 | daily | -> ``pm25_1d_avg`` ... |

``-Flag`` (the data flag) sets ``quality``; an over-limit flag ``T`` keeps
the value good and adds an ``alarm`` event. The interval is in the metric
name because a station sends the same minute's average in its minute packet
and, at the top of the hour, the hour's average at the same DataTime.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from citylake.ingest.hj212.codec import Packet
from citylake.ingest.hj212.pollutants import Pollutant
from citylake.schemas import Quality

DATA_COMMANDS: dict[str, str] = {"2011": "", "2051": "_1m", "2061": "_1h", "2031": "_1d"}
# The station's answers to platform requests: status events.
REPLY_COMMANDS: dict[str, str] = {"9011": "request_reply", "9012": "execution_result", "9013": "notice_reply"}

# HJ 212-2017 table 7, data flags.
FLAG_QUALITY: dict[str, Quality] = {
    "N": Quality.GOOD,  # normal
    "T": Quality.GOOD,  # over the limit: a true value, an alarm
    "M": Quality.UNCERTAIN,  # maintenance
    "S": Quality.UNCERTAIN,  # set manually
    "C": Quality.UNCERTAIN,  # calibration
    "F": Quality.BAD,  # station stopped
    "D": Quality.BAD,  # instrument fault
    "B": Quality.BAD,  # communication fault
}
FLAG_MEANING: dict[str, str] = {
    "N": "normal",
    "T": "over_limit",
    "M": "maintenance",
    "S": "manual",
    "C": "calibration",
    "F": "stopped",
    "D": "fault",
    "B": "comm_fault",
}
_REALTIME_FIELDS = {"Rtd": "", "ZsRtd": "_zs"}
_STAT_FIELDS = {
    "Avg": "avg",
    "Min": "min",
    "Max": "max",
    "Cou": "cou",
    "ZsAvg": "zs_avg",
    "ZsMin": "zs_min",
    "ZsMax": "zs_max",
}
# Fields that carry no number of their own: ignored, not rejected.
_META_FIELDS = {"Flag", "EFlag", "SampleTime"}


@dataclass
class Decoded:
    """What one packet yields."""

    readings: list[dict[str, object]] = field(default_factory=list)
    # (kind, ts, attributes)
    events: list[tuple[str, int, dict[str, object]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def parse_data_time(text: str, offset: dt.timezone) -> int:
    """``YYYYMMDDhhmmss`` in the station's local time -> epoch ms UTC."""
    if len(text) != 14 or not text.isdigit():
        raise ValueError(f"bad DataTime: {text[:20]!r} is not YYYYMMDDhhmmss")
    try:
        local = dt.datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=offset)
    except ValueError:
        raise ValueError(f"bad DataTime: {text!r} is not a valid time") from None
    return int(local.timestamp() * 1000)


def decode_packet(
    packet: Packet,
    codes: Mapping[str, Pollutant],
    offset: dt.timezone,
    source: str,
    site: str,
    now_ms: int,
) -> Decoded:
    """Readings of a data packet (CN in ``DATA_COMMANDS``) or the event of a
    reply; raises ``ValueError`` for a packet that cannot be taken at all
    (no or bad DataTime). Fields that cannot be read are ``problems``: the
    packet's other readings still land."""
    out = Decoded()
    if packet.cn in REPLY_COMMANDS:
        attributes: dict[str, object] = {"cn": packet.cn, "reply": REPLY_COMMANDS[packet.cn], "qn": packet.qn}
        for group in packet.groups:
            attributes.update(group)
        out.events.append(("status", now_ms, attributes))
        return out
    interval = DATA_COMMANDS[packet.cn]
    data_time = packet.cp_value("DataTime")
    if data_time is None:
        raise ValueError(f"no DataTime: CN {packet.cn} packet has none")
    ts = parse_data_time(data_time, offset)
    for group in packet.groups:
        by_code: dict[str, dict[str, str]] = {}
        for key, value in group.items():
            code, dash, name = key.partition("-")
            if dash:
                by_code.setdefault(code, {})[name] = value
        for code, values in by_code.items():
            _code_readings(out, packet.mn, code, values, interval, codes, ts, source, site, now_ms)
    return out


def _code_readings(
    out: Decoded,
    device_id: str,
    code: str,
    values: dict[str, str],
    interval: str,
    codes: Mapping[str, Pollutant],
    ts: int,
    source: str,
    site: str,
    now_ms: int,
) -> None:
    known = codes.get(code)
    # An unknown code keeps its data under its own name: a station with a new
    # analyser loses nothing; the README lists the codes mapped.
    pollutant = known if known is not None else Pollutant(code, None, None)
    flag = values.get("Flag")
    quality = Quality.GOOD
    if flag is not None:
        found = FLAG_QUALITY.get(flag)
        if found is None:
            out.problems.append(
                f"unknown data flag: {code}-Flag={flag[:8]!r} is not one of NTMSCFDB; landed uncertain"
            )
            quality = Quality.UNCERTAIN
        else:
            quality = found
    fields = _REALTIME_FIELDS if not interval else _STAT_FIELDS
    for name, text in values.items():
        if name in _META_FIELDS:
            continue
        suffix = fields.get(name)
        if suffix is None:
            out.problems.append(f"unexpected field: {code}-{name} in this CN; skipped")
            continue
        try:
            value = float(text)
        except ValueError:
            out.problems.append(f"not a number: {code}-{name}={text[:20]!r}")
            continue
        if not math.isfinite(value):
            out.problems.append(f"not a finite number: {code}-{name}={text[:20]!r}")
            continue
        if interval:
            metric = f"{pollutant.metric}{interval}_{suffix}"
            unit = pollutant.cou_unit if name == "Cou" else pollutant.unit
        else:
            metric = f"{pollutant.metric}{suffix}"
            unit = pollutant.unit
        out.readings.append(
            {
                "device_id": device_id,
                "ts": ts,
                "metric": metric,
                "value": value,
                "text": None,
                "unit": unit,
                "quality": int(quality),
                "source": source,
                "site": site,
                "ingest_ts": now_ms,
            }
        )
    if flag == "T":
        alarm: dict[str, object] = {
            "code": code,
            "metric": pollutant.metric,
            "flag": "T",
            "meaning": "over_limit",
        }
        alarm.update({name: text for name, text in values.items() if name != "Flag"})
        out.events.append(("alarm", ts, alarm))
