"""Simulated HJ 212-2017 stations: each connects over TCP, uploads real-time
(CN 2011) and minute (CN 2051) data with Flag asking for an answer, and counts
the CN 9014 answers the platform sends once the rows are landed.

There is no maintained open-source HJ 212 station; this one sends frames built
by the project's codec, and ``STANDARD_FRAMES`` holds frames as published
in HJ 212-2017 (its appendix example) so tests can replay them byte for byte.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from dataclasses import dataclass, field

from citylake.ingest.hj212.codec import FrameSplitter, decode_frame, encode_packet

# HJ 212-2017's own example frame (the CRC 1C80 is the standard's): a
# station (ST 32, surface water pollution source) answers 1062, the
# real-time interval query, with RtdInterval=30; Flag=5 = 2017 version + A.
STANDARD_FRAMES: dict[str, bytes] = {
    "rtd_interval": (
        b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;"
        b"Flag=5;CP=&&RtdInterval=30&&1C80\r\n"
    ),
}
CHINA = dt.timezone(dt.timedelta(hours=8))


def station_mn(index: int) -> str:
    """24-character MN codes, as the 2017 standard sizes them."""
    return f"88888880000001{index:010d}"


def realtime_cp(when: dt.datetime, step: int) -> str:
    pm25 = 30 + 10 * math.sin(step / 7)
    so2 = 12.5 + step % 5
    return (
        f"DataTime={when.astimezone(CHINA):%Y%m%d%H%M%S};"
        f"a34004-Rtd={pm25:.1f},a34004-Flag=N;a21026-Rtd={so2:.2f},a21026-Flag=N;"
        f"a01001-Rtd=21.4,a01001-Flag=N"
    )


def qn_of(when: dt.datetime) -> str:
    local = when.astimezone(CHINA)
    return f"{local:%Y%m%d%H%M%S}{local.microsecond // 1000:03d}"


@dataclass
class StationStats:
    sent: int = 0
    acked: int = 0
    qns: list[str] = field(default_factory=list)


async def run_station(
    host: str,
    port: int,
    mn: str,
    packets: int,
    interval_s: float,
    password: str = "123456",
    ack_timeout_s: float = 10.0,
) -> StationStats:
    """One station: ``packets`` real-time uploads, each waiting for its 9014."""
    stats = StationStats()
    reader, writer = await asyncio.open_connection(host, port)
    splitter = FrameSplitter(4096)
    try:
        for step in range(packets):
            now = dt.datetime.now(dt.UTC)
            qn = qn_of(now)
            frame = encode_packet(qn, "22", "2011", password, mn, 5, realtime_cp(now, step))
            writer.write(frame)
            await writer.drain()
            stats.sent += 1
            stats.qns.append(qn)
            try:
                async with asyncio.timeout(ack_timeout_s):
                    stats.acked += await _wait_ack(reader, splitter, qn)
            except TimeoutError:
                pass  # counted as unanswered
            if interval_s:
                await asyncio.sleep(interval_s)
    finally:
        writer.close()
        await writer.wait_closed()
    return stats


async def _wait_ack(reader: asyncio.StreamReader, splitter: FrameSplitter, qn: str) -> bool:
    while True:
        data = await reader.read(4096)
        if not data:
            return False
        for item in splitter.feed(data):
            if isinstance(item, bytes):
                packet = decode_frame(item)
                if packet.cn == "9014" and packet.qn == qn:
                    return True


async def run_stations(
    host: str, port: int, stations: int, packets: int, interval_s: float, password: str = "123456"
) -> list[StationStats]:
    return await asyncio.gather(
        *(run_station(host, port, station_mn(i), packets, interval_s, password) for i in range(stations))
    )
