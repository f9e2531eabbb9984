"""Issue 13's GB28181 attacks against the real platform (the IngestRunner with
its GB28181 source) from raw UDP and TCP sockets: each case is the attack,
and what must come of it (refused, counted, bounded, nothing filed)."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from citylake.ingest.gb28181.digest import expected_response, parse_digest
from citylake_devstack.process import free_port
from tests.integration.test_gb28181_sipp import DOMAIN, PASSWORD, PLATFORM, gb_source, start_runner
from tests.landing_rows import landed
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
CAMERA = "34020000001327000001"
OTHER = "34020000001327000002"
NVR = "34020000001187000001"
CHANNEL = "34020000001317000001"
_seq = itertools.count(1)


def request(
    method: str,
    device: str,
    headers: tuple[str, ...] = (),
    body: bytes = b"",
    via_host: str = "127.0.0.1:5999",
    transport: str = "UDP",
) -> bytes:
    n = next(_seq)
    lines = [
        f"{method} sip:{PLATFORM}@{DOMAIN} SIP/2.0",
        f"Via: SIP/2.0/{transport} {via_host};branch=z9hG4bKsec{n}",
        f"From: <sip:{device}@{DOMAIN}>;tag=f{n}",
        f"To: <sip:{PLATFORM}@{DOMAIN}>",
        f"Call-ID: sec-{n}",
        f"CSeq: {n} {method}",
        *headers,
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def manscdp(device: str, xml: str) -> bytes:
    body = f'<?xml version="1.0" encoding="GB2312"?>\r\n{xml}'.encode("gb2312")
    return request("MESSAGE", device, ("Content-Type: Application/MANSCDP+xml",), body)


def keepalive(device: str) -> bytes:
    return manscdp(
        device, f"<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>{device}</DeviceID></Notify>"
    )


def status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


class Peer:
    """One UDP socket: one device's address (or an attacker's). ``host`` is
    another loopback address where a test needs another host (127.0.0.0/8)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(5)
        self.target = ("127.0.0.1", port)

    def ask(self, data: bytes) -> bytes:
        self.sock.sendto(data, self.target)
        while True:
            reply, _ = self.sock.recvfrom(65536)
            if reply.startswith(b"SIP/2.0"):
                return reply  # skip the platform's own queries

    def authorization(
        self, device: str, password: str, username: str | None = None, nc: str = "00000001"
    ) -> str:
        first = self.ask(request("REGISTER", device, ("Expires: 3600",)))
        assert status(first) == 401
        challenge = next(
            line.split(":", 1)[1]
            for line in first.decode().split("\r\n")
            if line.startswith("WWW-Authenticate")
        )
        params = parse_digest(challenge.strip())
        assert params is not None
        user = username or device
        uri = f"sip:{PLATFORM}@{DOMAIN}"
        realm, nonce = params["realm"], params["nonce"]
        response = expected_response(user, realm, password, "REGISTER", uri, nonce, "auth", nc, "cn")
        return (
            f'Authorization: Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm=MD5, qop=auth, nc={nc}, cnonce="cn"'
        )

    def register(
        self, device: str, password: str = PASSWORD, username: str | None = None
    ) -> tuple[int, bytes]:
        auth = self.authorization(device, password, username)
        data = request("REGISTER", device, ("Expires: 3600", auth))
        return status(self.ask(data)), data


async def ask(peer: Peer, data: bytes) -> int:
    return status(await asyncio.to_thread(peer.ask, data))


async def test_messages_bind_to_the_registered_address_and_the_sender_s_own_ids(
    city_config: Callable[..., Path],
) -> None:
    port = free_port()
    config = city_config(sources=[gb_source(port, catalog_query_on_register=False)])
    runner, layout, source = await start_runner(config)
    camera, nvr, attacker = Peer(port), Peer(port), Peer(port)
    assert (await asyncio.to_thread(camera.register, CAMERA))[0] == 200
    assert (await asyncio.to_thread(nvr.register, NVR))[0] == 200

    # Naming a registered device in From from another address: refused.
    assert await ask(attacker, keepalive(CAMERA)) == 403
    assert source.stats["foreign_address"] == 1
    # Over TCP, from the camera's own host but not its registration: refused.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(keepalive(CAMERA))
    await writer.drain()
    assert status(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)) == 403
    writer.close()
    assert source.stats["foreign_address"] == 2

    # The answer comes once the rows are on disk.
    assert await ask(camera, keepalive(CAMERA)) == 200
    assert [e["kind"] for e in landed(layout, "device_events") if e["kind"] == "keepalive"] == ["keepalive"]

    # The NVR's catalog names a channel of its own, and tries the camera's record.
    catalog = (
        f"<Response><CmdType>Catalog</CmdType><SN>9</SN><DeviceID>{NVR}</DeviceID><SumNum>2</SumNum>"
        f'<DeviceList Num="2"><Item><DeviceID>{CHANNEL}</DeviceID><Name>gate</Name></Item>'
        f"<Item><DeviceID>{CAMERA}</DeviceID><Name>hijacked</Name><Longitude>1.0</Longitude></Item>"
        "</DeviceList></Response>"
    )
    assert await ask(nvr, manscdp(NVR, catalog)) == 200
    assert source.registry.records[CHANNEL].owner == NVR
    assert source.registry.records[CAMERA].name is None
    # Alarms, positions and status only for itself or its own channels.
    alarm = "<Notify><CmdType>Alarm</CmdType><SN>3</SN><DeviceID>{}</DeviceID></Notify>"
    position = (
        "<Notify><CmdType>MobilePosition</CmdType><SN>4</SN><DeviceID>{}</DeviceID><Longitude>1</Longitude>"
    )
    position += "</Notify>"
    device_status = "<Response><CmdType>DeviceStatus</CmdType><SN>5</SN><DeviceID>{}</DeviceID></Response>"
    for xml in (alarm, position, device_status):
        assert await ask(nvr, manscdp(NVR, xml.format(CAMERA))) == 403
        assert await ask(nvr, manscdp(NVR, xml.format(OTHER))) == 403
    assert await ask(nvr, manscdp(NVR, alarm.format(CHANNEL))) == 200
    assert source.stats["foreign_device_id"] == 7
    await runner.stop()

    events = landed(layout, "device_events")
    assert {e["device_id"] for e in events if e["kind"] in ("alarm", "position", "status")} == {CHANNEL}
    devices = landed(layout, "devices")
    assert not any(d["device_id"] == CAMERA and d["name"] == "hijacked" for d in devices)
    reasons = [r["reason"] for r in landed(layout, "rejected")]
    assert sum(r.startswith("foreign address") for r in reasons) == 2
    assert sum(r.startswith("foreign device id") for r in reasons) == 7
    assert runner.metrics.rejected.labels("video", "foreign address")._value.get() == 2


async def test_digest_is_one_use_per_device_bound_and_rate_limited(city_config: Callable[..., Path]) -> None:
    port = free_port()
    own = "own-camera-password"
    config = city_config(
        sources=[
            gb_source(port, catalog_query_on_register=False, passwords={OTHER: own}, auth_failures_max=3)
        ]
    )
    runner, layout, source = await start_runner(config)
    camera, attacker, brute = Peer(port), Peer(port, "127.0.0.2"), Peer(port, "127.0.0.5")
    code, captured = await asyncio.to_thread(camera.register, CAMERA)
    assert code == 200
    # The captured REGISTER replayed from another host (a new transaction): challenged.
    replay = captured.replace(b"branch=z9hG4bKsec", b"branch=z9hG4bKreplay").replace(b"tag=f", b"tag=r")
    assert await ask(attacker, replay) == 401
    assert source.auth.replays == 1
    assert source.registry.registrations[CAMERA].addr == camera.sock.getsockname()

    # Per-device password: the shared one does not open OTHER, its own does.
    assert (await asyncio.to_thread(attacker.register, OTHER))[0] == 403
    assert (await asyncio.to_thread(Peer(port, "127.0.0.3").register, OTHER, own))[0] == 200
    # A digest computed for another user name (the camera's) does not register OTHER.
    assert (await asyncio.to_thread(Peer(port, "127.0.0.4").register, OTHER, PASSWORD, CAMERA))[0] == 403

    # Wrong passwords from one address: after auth_failures_max, even the right one is refused.
    device = "34020000001327000003"
    for _ in range(3):
        assert (await asyncio.to_thread(brute.register, device, "guess"))[0] == 403
    assert await ask(brute, request("REGISTER", device, ("Expires: 3600",))) == 403  # not even a challenge
    assert source.stats["auth_rate_limited"] == 1
    assert (await asyncio.to_thread(Peer(port, "127.0.0.6").register, device, PASSWORD))[0] == 200
    await runner.stop()

    rejected = landed(layout, "rejected")
    assert len(rejected) >= 5
    for row in rejected:
        assert b"response=" not in row["raw"] and b"nonce=" not in row["raw"], row["raw"][:200]
    # The five refused after authentication kept their header, without its value.
    assert sum(b"Authorization: <redacted>" in row["raw"] for row in rejected) == 5


async def test_tables_and_caches_fed_by_the_network_stay_bounded(city_config: Callable[..., Path]) -> None:
    port = free_port()
    config = city_config(
        sources=[
            gb_source(
                port,
                catalog_query_on_register=False,
                answered_cache_max=50,
                answered_cache_bytes=65536,
                max_devices=20,
            )
        ]
    )
    runner, _, source = await start_runner(config)
    peer = Peer(port)
    assert (await asyncio.to_thread(peer.register, NVR))[0] == 200
    # Each OPTIONS answer echoes a long Via: the cache holds at most its bytes.
    long_via = "127.0.0.1:5999;x=" + "v" * 8000
    for i in range(200):
        data = request("OPTIONS", NVR, via_host=long_via)
        assert await ask(peer, data) == 200, i
        assert len(source.layer.server) <= 50 and source.layer.server.bytes <= 65536
    assert source.stats["answered_evicted"] > 0
    # Methods of the sender's choosing do not become stats keys.
    for i in range(100):
        await ask(peer, request(f"X{i}", NVR))
    assert source.stats["received_other"] == 100
    assert not any(key.startswith("received_X") for key in source.stats)
    # A catalog of 100 channels: the device records stay at max_devices.
    items = "".join(f"<Item><DeviceID>340200000013170{i:05d}</DeviceID></Item>" for i in range(100))
    catalog = (
        f"<Response><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>{NVR}</DeviceID><SumNum>100</SumNum>"
        f'<DeviceList Num="100">{items}</DeviceList></Response>'
    )
    assert await ask(peer, manscdp(NVR, catalog)) == 200
    assert len(source.registry.records) == 20 and NVR in source.registry.records
    assert source.registry.evicted == 81
    await runner.stop()


async def test_tcp_connections_are_capped_idle_ones_closed_and_non_readers_cut(
    city_config: Callable[..., Path],
) -> None:
    port = free_port()
    config = city_config(
        sources=[
            gb_source(
                port,
                "tcp",
                catalog_query_on_register=False,
                max_tcp_connections=3,
                tcp_idle_timeout_s=1.0,
                tcp_write_buffer_max=65536,
            )
        ]
    )
    runner, _, source = await start_runner(config)
    started = time.monotonic()
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    await asyncio.sleep(0.2)
    reader, _ = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed at once: over the cap
    assert source.stats["tcp_refused"] == 1
    for r, _ in held:  # silent: closed after the idle timeout
        assert await asyncio.wait_for(r.read(), 5) == b""
    assert 0.9 <= time.monotonic() - started < 4
    assert source.stats["tcp_idle_closed"] == 3

    # A peer that sends requests and never reads the answers is cut off.
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    long_via = "127.0.0.1:5999;x=" + "v" * 8000
    flood = b"".join(request("OPTIONS", NVR, via_host=long_via, transport="TCP") for _ in range(100))

    def send_until_cut() -> None:
        with sock:
            try:
                for _ in range(40):
                    sock.sendall(flood)
            except OSError:
                return

    await asyncio.to_thread(send_until_cut)
    await wait_until(lambda: source.stats["tcp_slow_reader_closed"] == 1 and not source.transport.streams, 10)
    await runner.stop()
