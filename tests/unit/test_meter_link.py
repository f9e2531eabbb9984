"""The shared meter line (ingest/meter_link.py) and presence: bounded in time and
bytes against a peer that floods, stalls or is not there; one offline event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from citylake.ingest.dlt645.codec import DATA_ITEMS, find_frame, read_reply, read_request
from citylake.ingest.meter_link import (
    LinkBadFrame,
    LinkConnectionFailed,
    LinkNoResponse,
    MeterLink,
    parse_link_url,
)
from citylake.ingest.meter_presence import MeterPresence
from citylake_devstack.process import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
REQUEST = read_request("000012345678", 0x02010100)


async def serve(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture
async def servers() -> AsyncIterator[list[asyncio.Server]]:
    started: list[asyncio.Server] = []
    yield started
    for server in started:
        server.close()


async def test_a_flood_of_garbage_is_one_bounded_bad_frame(servers: list[asyncio.Server]) -> None:
    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(64)
        for _ in range(1000):  # FE wake-up bytes forever: never a frame
            writer.write(b"\xfe" * 512)
            await writer.drain()

    server, port = await serve(flood)
    servers.append(server)
    link = MeterLink(parse_link_url(f"tcp://127.0.0.1:{port}"), max_reply_bytes=2048)
    with pytest.raises(LinkBadFrame, match=r"no valid frame in \d+ bytes \(limit 2048\)") as info:
        await link.exchange(REQUEST, find_frame, 5.0)
    assert len(info.value.raw) <= 256
    link.close()


async def test_silence_garbage_header_and_good_reply(servers: list[asyncio.Server]) -> None:
    replies = [
        b"",
        bytes.fromhex("68785634120000009100"),
        read_reply("000012345678", DATA_ITEMS[0x02010100], 230.0),
    ]

    async def scripted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(64):
            writer.write(replies.pop(0))
            await writer.drain()

    server, port = await serve(scripted)
    servers.append(server)
    link = MeterLink(parse_link_url(f"tcp://127.0.0.1:{port}"))
    with pytest.raises(LinkNoResponse, match=r"no reply within 0\.2s"):
        await link.exchange(REQUEST, find_frame, 0.2)
    with pytest.raises(LinkBadFrame, match="no second start byte 68"):
        await link.exchange(REQUEST, find_frame, 0.5)
    reply = await link.exchange(REQUEST, find_frame, 0.5)
    assert reply.startswith(b"\x68") and reply.endswith(b"\x16")
    assert link.exchanges == 3
    link.close()


async def test_refused_connection_backs_off() -> None:
    link = MeterLink(parse_link_url(f"tcp://127.0.0.1:{free_port()}"), backoff_s=10.0)
    with pytest.raises(LinkConnectionFailed, match=r"cannot connect to tcp://127\.0\.0\.1"):
        await link.exchange(REQUEST, find_frame, 0.5)
    with pytest.raises(LinkConnectionFailed, match="next attempt in"):
        await link.exchange(REQUEST, find_frame, 0.5)


def test_urls() -> None:
    assert (
        parse_link_url("serial:///dev/ttyS1?baudrate=9600&parity=N", 2400, "E").key
        == "serial:///dev/ttyS1?9600-8N1"
    )
    for bad, message in [
        ("tcp://host", "with the port"),
        ("serial://dev/ttyS1", "three slashes"),
        ("serial:///dev/ttyS1?speed=1", "unknown serial option"),
        ("serial:///dev/ttyS1?parity=X", "parity must be"),
        ("http://x:1", "scheme must be"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_link_url(bad)


def test_presence_one_event_per_change() -> None:
    presence = MeterPresence(offline_after=3)
    assert [presence.missed() for _ in range(5)] == [None, None, "offline", None, None]
    assert presence.answered() == "online"
    assert presence.answered() is None
    assert [presence.missed(), presence.answered(), presence.missed(), presence.missed()] == [
        None,
        None,
        None,
        None,
    ]
    assert presence.missed() == "offline"
