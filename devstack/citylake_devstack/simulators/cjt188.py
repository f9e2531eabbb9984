"""Simulated CJ/T 188 water, gas and heat meters over TCP (a serial server) and a pty.

``python -m citylake_devstack.simulators.cjt188 --port 8900 --meters '{...}'``
with ``--meters`` mapping each 14-digit address to
``{"type": "cold_water", "values": {"cumulative_flow": 12.5}, "status": [st1, st2]}``
(``"abnormal": true`` answers every read with ``C1``; ``"corrupt": true`` with a
wrong checksum). A frame for an unknown address or type is met with silence.
``--di-order high_first`` expects and answers DI 901F as ``90 1F``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from citylake.ingest.cjt188.codec import (
    DI_CURRENT,
    READ_DATA,
    READ_ERROR_REPLY,
    READ_REPLY,
    DecodeError,
    DiOrder,
    build_frame,
    di_bytes,
    encode_current_data,
    find_frame,
    parse_frame,
)
from citylake.ingest.cjt188.config import TYPE_CODES
from citylake_devstack.simulators.line import RequestLog, serve_line

# 2026-12-01 08:30:15 as the meter's clock sends it: ss mm hh DD MM YY YY.
CLOCK = bytes.fromhex("1530080112 2620".replace(" ", ""))


class Cjt188Meters:
    def __init__(self, meters: Mapping[str, Mapping[str, Any]], order: DiOrder = "low_first") -> None:
        self.meters = {address: dict(spec) for address, spec in meters.items()}
        for address, spec in self.meters.items():
            if spec["type"] not in TYPE_CODES:
                raise ValueError(f"meter {address}: unknown type {spec['type']!r}")
        self.order: DiOrder = order

    def respond(self, request: bytes) -> bytes | None:
        try:
            frame = parse_frame(request)
        except DecodeError:
            return None
        spec = self.meters.get(frame.address)
        if spec is None or TYPE_CODES[spec["type"]] != frame.meter_type or frame.control != READ_DATA:
            return None
        if len(frame.data) != 3 or frame.data[:2] != di_bytes(DI_CURRENT, self.order):
            return None
        ser = frame.data[2]
        st1, st2 = spec.get("status", (0, 0))
        if spec.get("abnormal"):
            return build_frame(frame.meter_type, frame.address, READ_ERROR_REPLY, bytes([ser, st1, st2]))
        data = encode_current_data(
            frame.meter_type, ser, spec.get("values", {}), (st1, st2), CLOCK, self.order
        )
        reply = build_frame(frame.meter_type, frame.address, READ_REPLY, data)
        if spec.get("corrupt"):
            reply = reply[:-2] + bytes([(reply[-2] + 1) & 0xFF, reply[-1]])
        return reply


def demo_meters(count: int) -> dict[str, dict[str, Any]]:
    """``count`` meters, every fourth a heat meter, every seventh a gas meter."""
    meters: dict[str, dict[str, Any]] = {}
    for n in range(1, count + 1):
        address = f"{n:014d}"
        if n % 4 == 0:
            values = {
                "current_heat": 1520.5 + n, "heat_power": 12.5, "flow_rate": 0.85, "cumulative_flow": 320.0,
                "supply_temperature": 65.2, "return_temperature": 45.1, "working_hours": 8760,
            }  # fmt: skip
            meters[address] = {"type": "heat", "values": values}
        else:
            meter_type = "gas" if n % 7 == 0 else "cold_water"
            meters[address] = {"type": meter_type, "values": {"cumulative_flow": 100.0 + n * 1.25}}
    return meters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--port", type=int, help="TCP port on 127.0.0.1 (the serial server)")
    parser.add_argument("--serial", help="a pty (one end of a socat pair) to answer on as well")
    parser.add_argument("--meters", default="", help="address -> {type, values, status, abnormal, corrupt}")
    parser.add_argument("--demo-meters", type=int, default=0, help="or N generated meters")
    parser.add_argument("--di-order", choices=["low_first", "high_first"], default="low_first")
    parser.add_argument("--request-log", type=Path, help="JSON lines, one per request received")
    args = parser.parse_args()
    if args.port is None and args.serial is None:
        parser.error("give --port, --serial or both")
    meters = json.loads(args.meters) if args.meters else demo_meters(args.demo_meters or 1)
    sim = Cjt188Meters(meters, args.di_order)
    asyncio.run(serve_line(find_frame, sim.respond, args.port, args.serial, RequestLog(args.request_log)))


if __name__ == "__main__":
    main()
