"""Simulated JT/T 808 vehicle terminals: each connects over TCP, registers
(0x0100), authenticates with the code the platform answered (0x0102), sends
a heartbeat and location reports (0x0200, and one 0x0704 batch), and counts
the platform's 0x8001 answers, which come only once the rows are landed.

``PUBLISHED_FRAMES`` are frames from a maintained JT/T 808 implementation's
test data (xtream-codec's jt808 codec debug fixtures) with the values it
decodes them to: facts to check our codec against.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import struct
from dataclasses import dataclass

from citylake.ingest.jt808 import messages as m
from citylake.ingest.jt808.codec import FrameSplitter, Message, decode_frame, digits_to_bcd, encode_message

PUBLISHED_FRAMES: dict[str, bytes] = {
    # 2019 header (version 1, phone 00000000013912344329): alarm 111, status 22
    # (fixed, south), lat 31234567, lon 121987654 (1e-6 deg), altitude 123 m,
    # speed 66 (1/10 km/h), direction 3, time 250129223344, extras 0x02 fuel
    # 100 and 0x01 mileage 12.
    "location_2019": bytes.fromhex(
        "7e02004026010000000001391234432900000000006f0000001601dc9a0707456246007b0042000325012922"
        "3344020200640104000000" + "0c417e"
    ),
    # 0x0704 with two locations (lat 31000562/31000563, lon 121451372/121451373,
    # altitude 666/777, speed 33/67, direction 89/90, time 241029213903).
    "batch_2019": bytes.fromhex(
        "7e0704403f01000000000139123443290000000200001c000000010000000101d907f2073d336c029a0021"
        "0059241029213903001c000000010000000101d907f3073d336d03090043005a241029213903f87e"
    ),
    # Platform answers: 0x8001 to serial 111, message 0x0200, result 0; 0x8100
    # to serial 111, result 0, auth code "ok..ok..ok".
    "reply_8001_2019": bytes.fromhex("7e8001400501000000000139123443290000006f020000dc7e"),
    "reply_8100_2019": bytes.fromhex("7e8100400d01000000000139123443290000006f006f6b2e2e6f6b2e2e6f6bd27e"),
    # A 2013 header: 0x8003, phone 013912344323, serial 0.
    "resend_8003_2013": bytes.fromhex("7e800300090139123443230000006f030002000300049d7e"),
}
BEIJING = dt.timezone(dt.timedelta(hours=8))


def terminal_phone(index: int) -> str:
    return f"139{index:08d}"


def bcd_time(when: dt.datetime) -> bytes:
    return bytes.fromhex(when.astimezone(BEIJING).strftime("%y%m%d%H%M%S"))


def location_body(step: int, when: dt.datetime, alarm: int = 0, status: int = 0b11) -> bytes:
    lat = int((32.0603 + 0.0001 * math.sin(step / 5)) * 1e6)
    lon = int((118.7969 + 0.0001 * step) * 1e6)
    speed = 300 + step % 50  # 1/10 km/h
    body = struct.pack(">IIIIHHH", alarm, status, lat, lon, 12, speed, (step * 7) % 360) + bcd_time(when)
    body += bytes([0x01, 4]) + struct.pack(">I", 123_456 + step)  # mileage, 1/10 km
    body += bytes([0x30, 1, 25, 0x31, 1, 11])  # signal strength, satellites
    return body


def register_body(phone: str, plate: str, version: int | None) -> bytes:
    manufacturer, model, terminal_id = (11, 30, 30) if version is not None else (5, 20, 7)
    return (
        struct.pack(">HH", 32, 100)
        + b"CITYL".ljust(manufacturer, b"\x00")
        + b"SIM-808".ljust(model, b"\x00")
        + phone[-7:].encode().ljust(terminal_id, b"\x00")
        + bytes([1])
        + plate.encode("gbk")
    )


def auth_body(code: str, version: int | None) -> bytes:
    if version is None:
        return code.encode()
    return bytes([len(code)]) + code.encode() + b"860000000000001" + b"1.0.0".ljust(20, b"\x00")


@dataclass
class TerminalStats:
    sent: int = 0
    acked: int = 0
    auth_code: str = ""


class Terminal:
    """One terminal's connection, request by request."""

    def __init__(self, phone: str, version: int | None) -> None:
        self.phone = phone
        self.version = version
        self.serial = 0
        self.splitter = FrameSplitter(4096)
        self.pending: list[Message] = []
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self, host: str, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection(host, port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()

    async def request(self, message_id: int, body: bytes) -> Message:
        """Send and return the platform's answer to it (matched by serial)."""
        assert self.writer is not None
        self.serial = (self.serial + 1) & 0xFFFF
        serial = self.serial
        self.writer.write(encode_message(message_id, self.phone, serial, body, self.version))
        await self.writer.drain()
        while True:
            for answer in self.pending:
                if answer.body[:2] == struct.pack(">H", serial):
                    self.pending.remove(answer)
                    return answer
            await self._read()

    async def _read(self) -> None:
        assert self.reader is not None
        data = await self.reader.read(4096)
        if not data:
            raise ConnectionError("the platform closed the connection")
        for item in self.splitter.feed(data):
            if isinstance(item, bytes):
                self.pending.append(decode_frame(item))


async def run_terminal(
    host: str, port: int, phone: str, locations: int, interval_s: float, version: int | None = 1
) -> TerminalStats:
    stats = TerminalStats()
    terminal = Terminal(phone, version)
    await terminal.connect(host, port)
    try:
        answer = await terminal.request(m.REGISTER, register_body(phone, f"苏A{phone[-5:]}", version))
        if answer.header.message_id != m.REGISTER_REPLY or answer.body[2] != m.REGISTER_OK:
            raise ConnectionError(f"registration refused: {answer.body.hex()}")
        stats.auth_code = answer.body[3:].decode()
        answer = await terminal.request(m.AUTHENTICATE, auth_body(stats.auth_code, version))
        if answer.body[4] != m.RESULT_OK:
            raise ConnectionError("authentication refused")
        await terminal.request(m.HEARTBEAT, b"")
        start = dt.datetime.now(dt.UTC).replace(microsecond=0)
        for step in range(locations):
            when = start + dt.timedelta(seconds=step)
            answer = await terminal.request(m.LOCATION, location_body(step, when))
            stats.sent += 1
            stats.acked += answer.header.message_id == m.PLATFORM_REPLY and answer.body[4] == m.RESULT_OK
            if interval_s:
                await asyncio.sleep(interval_s)
    finally:
        await terminal.close()
    return stats


async def run_terminals(
    host: str, port: int, terminals: int, locations: int, interval_s: float, version: int | None = 1
) -> list[TerminalStats]:
    return await asyncio.gather(
        *(
            run_terminal(host, port, terminal_phone(i), locations, interval_s, version)
            for i in range(terminals)
        )
    )


__all__ = ["PUBLISHED_FRAMES", "Terminal", "digits_to_bcd", "run_terminal", "run_terminals"]
