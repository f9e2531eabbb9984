"""Simulated DL/T 645-2007 meters answering over TCP (a serial server) and a pty.

``python -m citylake_devstack.simulators.dlt645 --port 8899 --meters '{...}'``
with ``--meters`` mapping each 12-digit address to ``{metric: value}``
(metrics as in ``ingest/dlt645/codec.py``). A read of a DI a meter does not
have gets an abnormal reply (``D1``, error 0x02 "no requested data"), as a
real meter answers; ``--corrupt ADDRESS:METRIC`` answers that read with a
wrong checksum; a frame for an unknown address is met with silence (nobody on
the bus has that address). ``0x13`` (read address) is answered by the first meter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections.abc import Mapping
from pathlib import Path

from citylake.ingest.dlt645.codec import (
    DATA_ITEMS,
    DATA_ITEMS_BY_METRIC,
    READ_ADDRESS,
    READ_ADDRESS_REPLY,
    READ_DATA,
    DecodeError,
    build_frame,
    encode_address,
    error_reply,
    find_frame,
    parse_frame,
    read_reply,
)
from citylake_devstack.simulators.line import RequestLog, serve_line


class Dlt645Meters:
    """The meters on the simulated line and how they answer."""

    def __init__(
        self, meters: Mapping[str, Mapping[str, float]], corrupt: set[tuple[str, str]], wobble: bool = False
    ) -> None:
        for address, values in meters.items():
            encode_address(address)
            unknown = set(values) - set(DATA_ITEMS_BY_METRIC)
            if unknown:
                raise ValueError(f"meter {address}: unknown metrics {sorted(unknown)}")
        self.meters = {a: dict(v) for a, v in meters.items()}
        self.corrupt = corrupt
        self.wobble = wobble
        self.started = time.monotonic()

    def value(self, address: str, metric: str) -> float:
        value = self.meters[address][metric]
        if self.wobble and "energy" not in metric:
            value *= 1 + 0.01 * math.sin(time.monotonic() - self.started)
        elif self.wobble:
            value += round(time.monotonic() - self.started) / 100
        return value

    def respond(self, request: bytes) -> bytes | None:
        try:
            frame = parse_frame(request)
        except DecodeError:
            return None  # a meter ignores a frame it cannot check
        if frame.control == READ_ADDRESS and self.meters:
            address = next(iter(self.meters))
            return build_frame(address, READ_ADDRESS_REPLY, encode_address(address))
        if frame.address not in self.meters or frame.control != READ_DATA or len(frame.data) != 4:
            return None
        item = DATA_ITEMS.get(int.from_bytes(frame.data, "little"))
        if item is None or item.metric not in self.meters[frame.address]:
            return error_reply(frame.address, 0x02)
        reply = read_reply(frame.address, item, self.value(frame.address, item.metric))
        if (frame.address, item.metric) in self.corrupt:
            reply = reply[:-2] + bytes([(reply[-2] + 1) & 0xFF, reply[-1]])
        return reply


def demo_meters(count: int) -> dict[str, dict[str, float]]:
    """``count`` meters with plausible readings: addresses 000000000001.."""
    meters: dict[str, dict[str, float]] = {}
    for n in range(1, count + 1):
        meters[f"{n:012d}"] = {
            "combined_active_energy": 1000 + 12.5 * n,
            "voltage_a": 220.0 + n % 10,
            "current_a": 5.0 + n % 7,
            "active_power": 1.1 + (n % 5) / 10,
            "power_factor": 0.95,
            "frequency": 50.0,
        }
    return meters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--port", type=int, help="TCP port on 127.0.0.1 (the serial server)")
    parser.add_argument("--serial", help="a pty (one end of a socat pair) to answer on as well")
    parser.add_argument("--meters", default="", help='{"000012345678": {"voltage_a": 231.5}, ...}')
    parser.add_argument("--demo-meters", type=int, default=0, help="or N generated meters")
    parser.add_argument(
        "--corrupt", action="append", default=[], help="ADDRESS:METRIC answered with a bad CS"
    )
    parser.add_argument("--wobble", action="store_true", help="let values change over time")
    parser.add_argument("--request-log", type=Path, help="JSON lines, one per request received")
    args = parser.parse_args()
    meters = json.loads(args.meters) if args.meters else demo_meters(args.demo_meters or 1)
    corrupt = {(c.partition(":")[0], c.partition(":")[2]) for c in args.corrupt}
    sim = Dlt645Meters(meters, corrupt, args.wobble)
    if args.port is None and args.serial is None:
        parser.error("give --port, --serial or both")
    asyncio.run(serve_line(find_frame, sim.respond, args.port, args.serial, RequestLog(args.request_log)))


if __name__ == "__main__":
    main()
