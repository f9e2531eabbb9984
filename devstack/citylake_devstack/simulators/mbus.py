"""Simulated wired M-Bus meters behind a TCP M-Bus gateway (and a pty).

``python -m citylake_devstack.simulators.mbus --port 9001 --meters '{...}'``
with ``--meters`` mapping each primary address to either ``{"frame": HEX}``
(a recorded RSP_UD, e.g. EN 13757-3's example telegram; its A field and
checksum are set to the address) or a telegram to build:
``{"id": "12345678", "manufacturer": "PAD", "version": 1, "medium": 4,
"status": 0, "records": [["04", "06", 1234], ...]}`` where each record is
its DIF (+DIFEs) and VIF (+VIFEs) in hex and the integer its data field
holds (binary or BCD, as the DIF's low nibble says). ``"corrupt": true``
answers with a wrong checksum, ``"ack_only": true`` with a bare E5. SND_NKE
is acknowledged with E5; an unknown address is met with silence.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from citylake.ingest.mbus.codec import ACK, REQ_UD2, REQ_UD2_FCB, SHORT_START, SND_NKE, find_frame
from citylake_devstack.simulators.line import RequestLog, serve_line

# EN 13757-3 (M-Bus documentation rev. 4.8, p. 43): meter 12345678 of "PAD",
# water, 12.565 m3, max. volume flow 113 l/h (storage 5), 218.37 kWh (tariff 2, subunit 1).
EN13757_EXAMPLE = "681F1F680802727856341224400107550000000313153100DA023B13018B60043718021816"
BINARY_LENGTHS = {0x1: 1, 0x2: 2, 0x3: 3, 0x4: 4, 0x6: 6, 0x7: 8}
BCD_LENGTHS = {0x9: 1, 0xA: 2, 0xB: 3, 0xC: 4, 0xE: 6}


def manufacturer_code(flag: str) -> bytes:
    if len(flag) != 3 or not flag.isalpha() or not flag.isupper():
        raise ValueError(f"manufacturer {flag!r}: three capital letters")
    code = ((ord(flag[0]) - 64) << 10) | ((ord(flag[1]) - 64) << 5) | (ord(flag[2]) - 64)
    return code.to_bytes(2, "little")


def encode_record(dif_hex: str, vif_hex: str, value: int) -> bytes:
    dib, vib = bytes.fromhex(dif_hex), bytes.fromhex(vif_hex)
    field = dib[0] & 0x0F
    if field in BINARY_LENGTHS:
        data = value.to_bytes(BINARY_LENGTHS[field], "little", signed=value < 0)
    elif field in BCD_LENGTHS:
        data = bytes.fromhex(f"{value:0{2 * BCD_LENGTHS[field]}d}")[::-1]
    else:
        raise ValueError(f"DIF {dif_hex}: data field {field:X} is not supported by the simulator")
    return dib + vib + data


def long_frame(address: int, user_data: bytes, control: int = 0x08) -> bytes:
    body = bytes([control, address]) + user_data
    return bytes([0x68, len(body), len(body), 0x68]) + body + bytes([sum(body) & 0xFF, 0x16])


def build_telegram(address: int, spec: Mapping[str, Any], access: int) -> bytes:
    if "frame" in spec:
        recorded = bytes.fromhex(spec["frame"])
        return long_frame(address, recorded[6:-2], recorded[4])
    header = (
        bytes.fromhex(spec["id"])[::-1] + manufacturer_code(spec["manufacturer"])
        + bytes([spec.get("version", 1), spec.get("medium", 0x07), access & 0xFF, spec.get("status", 0)])
        + b"\x00\x00"
    )  # fmt: skip
    records = b"".join(encode_record(d, v, int(x)) for d, v, x in spec.get("records", []))
    return long_frame(address, bytes([0x72]) + header + records)


class MbusMeters:
    def __init__(self, meters: Mapping[int, Mapping[str, Any]]) -> None:
        self.meters = {int(a): dict(spec) for a, spec in meters.items()}
        self.access = 0
        for address, spec in self.meters.items():
            if not spec.get("ack_only"):
                build_telegram(address, spec, 0)  # fail at start, not on the first request

    def respond(self, request: bytes) -> bytes | None:
        if len(request) != 5 or request[0] != SHORT_START or request[3] != (request[1] + request[2]) & 0xFF:
            return None
        control, address = request[1], request[2]
        spec = self.meters.get(address)
        if spec is None:
            return None
        if control == SND_NKE or spec.get("ack_only"):
            return bytes([ACK])
        if control not in (REQ_UD2, REQ_UD2_FCB):
            return None
        self.access += 1
        reply = build_telegram(address, spec, self.access)
        if spec.get("corrupt"):
            reply = reply[:-2] + bytes([(reply[-2] + 1) & 0xFF, 0x16])
        return reply


def demo_meters(count: int) -> dict[int, dict[str, Any]]:
    """Primary addresses 1..count: heat meters (energy, volume, power, flow, temperatures)."""
    meters: dict[int, dict[str, Any]] = {}
    for n in range(1, min(count, 250) + 1):
        meters[n] = {
            "id": f"{70000000 + n:08d}", "manufacturer": "KAM", "version": 1, "medium": 0x04,
            "records": [["04", "06", 15000 + n], ["04", "13", 320500 + n], ["02", "2B", 12000],
                        ["02", "3B", 850], ["02", "5B", 65], ["02", "5F", 45]],
        }  # fmt: skip
    return meters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--port", type=int, help="TCP port on 127.0.0.1 (the M-Bus gateway)")
    parser.add_argument("--serial", help="a pty (one end of a socat pair) to answer on as well")
    parser.add_argument(
        "--meters", default="", help="primary address -> {frame} or {id, manufacturer, records}"
    )
    parser.add_argument("--demo-meters", type=int, default=0, help="or N generated heat meters")
    parser.add_argument("--request-log", type=Path, help="JSON lines, one per request received")
    args = parser.parse_args()
    if args.port is None and args.serial is None:
        parser.error("give --port, --serial or both")
    meters = json.loads(args.meters) if args.meters else demo_meters(args.demo_meters or 1)
    sim = MbusMeters(meters)
    asyncio.run(serve_line(request_span, sim.respond, args.port, args.serial, RequestLog(args.request_log)))


def request_span(buffer: bytes) -> tuple[int, int] | None:
    """Requests are short frames (or long ones the simulator ignores); skip noise."""
    start = next((i for i, b in enumerate(buffer) if b in (SHORT_START, 0x68, ACK)), None)
    if start is None:
        return None
    span = find_frame(buffer[start:])
    return None if span is None else (start + span[0], start + span[1])


if __name__ == "__main__":
    main()
