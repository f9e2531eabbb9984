"""GB28181 platform against SIPp devices (Debian sip-tester) and plain sockets:
the real IngestRunner, landed Parquet read back, exact rows asserted."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from citylake.config import load_config
from citylake.ingest.gb28181.adapter import GB28181Source
from citylake.ingest.gb28181.digest import expected_response, parse_digest
from citylake.ingest.registry import build_sources
from citylake.ingest.runner import FlushPolicy, IngestRunner
from citylake.schemas import DataLayout
from citylake_devstack.process import CITYLAKE, free_port
from citylake_devstack.sipp import Sipp, SippResult, sim_devices
from tests.landing_rows import landed
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
PLATFORM = "34020000002000000001"
DOMAIN = "3402000000"
PASSWORD = "s3cret"
SHANGHAI = ZoneInfo("Asia/Shanghai")


def gb_source(port: int, transport: str = "udp", **extra: object) -> dict[str, object]:
    return {
        "name": "video",
        "type": "gb28181",
        "url": f"{transport}://127.0.0.1:{port}",
        "transports": ["udp", "tcp"],
        "platform_id": PLATFORM,
        "domain": DOMAIN,
        "password": PASSWORD,
        **extra,
    }


async def start_runner(config: Path) -> tuple[IngestRunner, DataLayout, GB28181Source]:
    loaded = load_config(config)
    layout = DataLayout(loaded.config.data_dir)
    # The platform answers once a request's rows landed, so a flush age of
    # 0.05 s keeps the answers inside SIPp's tight keepalive timing.
    policy = FlushPolicy(max_age_s=0.05)
    runner = IngestRunner(build_sources(loaded), layout, loaded.config.site, policy)
    await runner.start()
    source = runner.sources[0]
    assert isinstance(source, GB28181Source)
    await wait_until(source.is_up, 20)
    return runner, layout, source


async def play(
    workdir: Path,
    port: int,
    scenario: str,
    count: int,
    transport: str = "udp",
    password: str = PASSWORD,
    **options: Any,
) -> SippResult:
    keys = {"platform_id": PLATFORM, "domain": DOMAIN, **options.pop("keys", {})}
    sipp = Sipp(
        workdir,
        f"127.0.0.1:{port}",
        scenario,
        sim_devices(count, DOMAIN),
        keys,
        password,
        transport,
        **options,
    )
    sipp.start()
    # The platform runs on this event loop: wait for SIPp in a thread.
    return await asyncio.to_thread(sipp.wait, 60)


def kinds_by_device(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in events:
        out.setdefault(row["device_id"], []).append(row["kind"])
    return out


def local_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=SHANGHAI).timestamp() * 1000)


def latest_devices(layout: DataLayout) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for row in landed(layout, "devices"):
        rows[row["device_id"]] = row
    return rows


def assert_keepalive_life(kinds: list[str]) -> None:
    """The keepalive scenario's events: its empty catalog comes in the call of
    the platform's query, so it may land between its keepalives."""
    assert kinds[:2] == ["register", "online"] and kinds[-1] == "offline"
    assert sorted(kinds[2:-1]) == ["catalog", *["keepalive"] * 4]


@pytest.mark.parametrize(
    ("transport", "scenario"), [("udp", "device_gb2312"), ("tcp", "device"), ("udp", "device")]
)
async def test_device_lifecycle_lands_exact_rows(
    city_config: Callable[..., Path], tmp_path: Path, transport: str, scenario: str
) -> None:
    port = free_port()
    runner, layout, source = await start_runner(city_config(sources=[gb_source(port, transport)]))
    result = await play(tmp_path / "sipp", port, scenario, 2, transport)
    assert result.ok, result.log_tail
    assert result.successful == 2
    await wait_until(
        lambda: len(landed(layout, "device_events")) >= 20 and len(landed(layout, "readings")) >= 10, 20
    )
    await runner.stop()

    nvrs = sim_devices(2, DOMAIN)
    events = landed(layout, "device_events")
    by_device = kinds_by_device(events)
    for nvr in nvrs:
        # The catalog comes in calls of its own, beside the REGISTER call's
        # keepalives: only their relative order is the device's.
        kinds = by_device[nvr.device_id]
        assert kinds[:2] == ["register", "online"] and kinds[-2:] == ["unregister", "offline"]
        assert sorted(kinds[2:-2]) == ["catalog", "catalog", "keepalive", "keepalive"]
        assert by_device[nvr.channels[0]] == ["alarm", "position"]
        catalogs = [
            json.loads(e["attributes"])
            for e in events
            if e["device_id"] == nvr.device_id and e["kind"] == "catalog"
        ]
        assert [(c["num"], c["received"], c["sum_num"]) for c in catalogs] == [(2, 2, 3), (1, 3, 3)]
        assert catalogs[0]["channels"] == list(nvr.channels[:2])
    assert len(events) == 20
    assert {e["source"] for e in events} == {"video"} and {e["site"] for e in events} == {"test-site"}
    register = json.loads(events[0]["attributes"])
    assert register["transport"] == transport and register["expires"] == 3600
    alarm = next(e for e in events if e["kind"] == "alarm")
    assert alarm["ts"].timestamp() * 1000 == local_ms("2026-11-25T10:00:00")
    assert json.loads(alarm["attributes"])["description"] == "区域入侵"
    offline = [json.loads(e["attributes"]) for e in events if e["kind"] == "offline"]
    assert offline == [{"reason": "unregistered"}] * 2

    devices = latest_devices(layout)
    assert len(devices) == 8
    for nvr in nvrs:
        got = {k: v for k, v in devices[nvr.device_id].items() if k not in ("first_seen", "last_seen")}
        assert got == {
            "device_id": nvr.device_id,
            "name": "一号录像机",
            "type": "nvr",
            "protocol": "gb28181",
            "manufacturer": "Hikvision",
            "model": "DS-7808N",
            "parent_id": None,
            "civil_code": "34020000",
            "address": None,
            "longitude": None,
            "latitude": None,
            "status": "offline",
            "district": None,
            "attributes": None,
        }
        row = devices[nvr.device_id]
        assert row["first_seen"] <= row["last_seen"]
        channels = [devices[c] for c in nvr.channels]
        assert [(c["name"], c["address"], c["status"]) for c in channels] == [
            ("东门摄像机", "人民路1号", "online"),
            ("西门球机", "解放路2号", "offline"),
            ("停车场入口", "长江路3号", "online"),
        ]
        assert [(c["manufacturer"], c["model"], c["longitude"], c["latitude"]) for c in channels] == [
            ("Hikvision", "DS-2CD", 117.2272, 31.8206),
            ("Dahua", "SD-6C", 117.2301, 31.8190),
            ("Uniview", "IPC-B", None, None),
        ]
        assert {(c["parent_id"], c["civil_code"], c["type"], c["protocol"]) for c in channels} == {
            (nvr.device_id, "340200", "camera", "gb28181")
        }

    readings = landed(layout, "readings")
    at = local_ms("2026-11-25T10:00:05")
    got_readings = sorted(
        (r["device_id"], r["metric"], r["value"], r["unit"], r["ts"].timestamp() * 1000, r["quality"])
        for r in readings
    )
    expected = sorted(
        (nvr.channels[0], metric, value, unit, at, 0)
        for nvr in nvrs
        for metric, value, unit in [
            ("longitude", 117.228, "deg"),
            ("latitude", 31.821, "deg"),
            ("speed", 36.5, "km/h"),
            ("direction", 90.0, "deg"),
            ("altitude", 25.0, "m"),
        ]
    )
    assert got_readings == expected
    assert landed(layout, "rejected") == []
    assert source.stats["queries_sent"] == 6  # Catalog + DeviceInfo + Alarm response per device
    # Each a new call, answered by the devices' out-of-call scenario.
    assert source.stats["queries_answered"] == 6 and source.stats["queries_timed_out"] == 0
    if transport == "tcp":
        assert source.stats["queries_retransmitted"] == 0  # reliable transport: no Timer E


async def test_wrong_password_gets_403(city_config: Callable[..., Path], tmp_path: Path) -> None:
    port = free_port()
    runner, layout, source = await start_runner(city_config(sources=[gb_source(port)]))
    result = await play(tmp_path / "sipp", port, "wrong_password", 1, password="not-the-password")
    assert result.ok, result.log_tail
    await wait_until(lambda: len(landed(layout, "rejected")) == 1, 20)
    await runner.stop()
    [rejected] = landed(layout, "rejected")
    assert rejected["reason"].startswith("REGISTER refused: 34020000001187000001: wrong digest response")
    assert landed(layout, "device_events") == []
    assert source.stats["sent_403"] == 1


async def test_expired_registration_goes_offline(city_config: Callable[..., Path], tmp_path: Path) -> None:
    port = free_port()
    config = city_config(sources=[gb_source(port, check_interval_s=0.1, catalog_query_on_register=True)])
    runner, layout, source = await start_runner(config)
    result = await play(tmp_path / "sipp", port, "keepalive", 1, pause_ms=100, keys={"expires": "2"})
    assert result.ok, result.log_tail
    await wait_until(lambda: any(e["kind"] == "offline" for e in landed(layout, "device_events")), 10)
    await runner.stop()
    events = landed(layout, "device_events")
    assert_keepalive_life([e["kind"] for e in events])
    assert json.loads(events[-1]["attributes"]) == {"reason": "registration expired"}
    lasted = events[-1]["ts"] - events[0]["ts"]
    assert 2.0 <= lasted.total_seconds() < 3.0
    assert not source.registry.is_registered(sim_devices(1, DOMAIN)[0].device_id)


async def test_missed_keepalives_offline_and_none_while_on_time(
    city_config: Callable[..., Path], tmp_path: Path
) -> None:
    port = free_port()
    # Timeout 3 x 0.5 s = 1.5 s; keepalives come every 1 s for 3 s, so a
    # false offline would show inside the run.
    config = city_config(sources=[gb_source(port, keepalive_interval_s=0.5, check_interval_s=0.05)])
    runner, layout, _ = await start_runner(config)
    result = await play(tmp_path / "sipp", port, "keepalive", 1, pause_ms=1000)
    assert result.ok, result.log_tail
    await wait_until(lambda: any(e["kind"] == "offline" for e in landed(layout, "device_events")), 10)
    await runner.stop()
    events = landed(layout, "device_events")
    assert_keepalive_life([e["kind"] for e in events])
    assert json.loads(events[-1]["attributes"])["reason"] == "missed keepalives"
    last_keepalive = [e for e in events if e["kind"] == "keepalive"][-1]
    silence = (events[-1]["ts"] - last_keepalive["ts"]).total_seconds()
    assert 1.5 <= silence < 2.2


# --- hostile input over plain sockets -----------------------------------------


def _request(method: str, device: str, cseq: int, headers: list[str], body: bytes = b"") -> bytes:
    lines = [
        f"{method} sip:{PLATFORM}@{DOMAIN} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{cseq}x",
        f"From: <sip:{device}@{DOMAIN}>;tag=t{cseq}",
        f"To: <sip:{PLATFORM}@{DOMAIN}>",
        "Call-ID: hostile-1",
        f"CSeq: {cseq} {method}",
        *headers,
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


class UdpPeer:
    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(5)
        self.target = ("127.0.0.1", port)

    def ask(self, data: bytes) -> bytes:
        self.sock.sendto(data, self.target)
        while True:
            reply, _ = self.sock.recvfrom(65536)
            if reply.startswith(b"SIP/2.0"):
                return reply  # skip the platform's own queries

    def register(self, device: str) -> None:
        first = self.ask(_request("REGISTER", device, 1, ["Expires: 3600"]))
        assert _status(first) == 401
        challenge = next(
            line.split(":", 1)[1]
            for line in first.decode().split("\r\n")
            if line.startswith("WWW-Authenticate")
        )
        params = parse_digest(challenge.strip())
        assert params is not None
        uri = f"sip:{PLATFORM}@{DOMAIN}"
        response = expected_response(
            device, params["realm"], PASSWORD, "REGISTER", uri, params["nonce"], "auth", "00000001", "abc"
        )
        realm, nonce = params["realm"], params["nonce"]
        auth = (
            f'Authorization: Digest username="{device}", realm="{realm}", nonce="{nonce}", '
            f'uri="{uri}", response="{response}", algorithm=MD5, qop=auth, nc=00000001, cnonce="abc"'
        )
        assert _status(self.ask(_request("REGISTER", device, 2, ["Expires: 3600", auth]))) == 200


def _manscdp(device: str, cseq: int, body: bytes) -> bytes:
    return _request("MESSAGE", device, cseq, ["Content-Type: Application/MANSCDP+xml"], body)


def _keepalive(device: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify><CmdType>Keepalive</CmdType><SN>7</SN>'
        f"<DeviceID>{device}</DeviceID><Status>OK</Status></Notify>"
    ).encode()


async def test_hostile_input_gets_400_or_a_counted_reject(city_config: Callable[..., Path]) -> None:
    port = free_port()
    config = city_config(sources=[gb_source(port, max_body_bytes=1024, catalog_query_on_register=False)])
    runner, layout, source = await start_runner(config)
    device = "34020000001327000009"
    udp = UdpPeer(port)
    await asyncio.to_thread(udp.register, device)

    def udp_status(data: bytes) -> int:
        return _status(udp.ask(data))

    bad_head = b"MESSAGE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKa\r\nno colon here\r\n\r\n"
    broken_xml = b"<Notify><CmdType>Keepalive</CmdType><DeviceID>1</Notify>"
    bad_gb2312 = b'<?xml version="1.0" encoding="GB2312"?><Notify>\xff\xff</Notify>'
    gb2312_as_utf8 = '<?xml version="1.0" encoding="UTF-8"?><Notify>中文</Notify>'.encode("gb2312")
    bomb = b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]><Notify>&b;</Notify>'
    ebcdic = b'<?xml version="1.0" encoding="EBCDIC"?><Notify/>'
    stranger = "34020000001327000099"
    cases: list[tuple[bytes, int, str]] = [
        (bad_head, 400, "malformed SIP"),
        (_manscdp(device, 3, broken_xml), 400, "bad MANSCDP body: malformed XML"),
        (_manscdp(device, 4, bad_gb2312), 400, "bad MANSCDP body: body is not valid GB2312"),
        (_manscdp(device, 5, gb2312_as_utf8), 400, "bad MANSCDP body: body is not valid UTF-8"),
        (_manscdp(device, 6, bomb), 400, "bad MANSCDP body: XML with <!DOCTYPE refused"),
        (_manscdp(device, 7, ebcdic), 400, "bad MANSCDP body: unsupported XML encoding"),
        (_manscdp(device, 8, b"<Notify>" + b"x" * 2000 + b"</Notify>"), 400, "oversized body"),
        (_manscdp(stranger, 9, _keepalive(stranger)), 403, "unregistered device"),
        (
            _request("MESSAGE", device, 10, ["Content-Type: text/plain"], b"hi"),
            415,
            "unsupported Content-Type",
        ),
    ]
    for data, status, _ in cases:
        assert await asyncio.to_thread(udp_status, data) == status, data[:60]
    # Garbage without a request line: no answer possible, but counted.
    udp.sock.sendto(b"\x00\xff\xfegarbage", ("127.0.0.1", port))
    # Still serving: a good keepalive gets 200.
    assert await asyncio.to_thread(udp_status, _manscdp(device, 11, _keepalive(device))) == 200

    # TCP: an oversized body is skipped and the connection goes on; a head
    # without Content-Length gets 400 and the stream resynchronises; the
    # keepalive of a device registered over UDP is refused on it (403).
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    big = _manscdp(device, 12, b"<Notify>" + b"y" * 5000 + b"</Notify>")
    no_length = (
        b"MESSAGE sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 1.2.3.4;branch=z9hG4bKb\r\nFrom: <sip:a@b>\r\n"
        b"To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\n\r\n"
    )
    writer.write(big + no_length + _manscdp(device, 13, _keepalive(device)))
    await writer.drain()
    statuses = []
    for _ in range(3):
        line = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        statuses.append(_status(line))
    writer.close()
    assert statuses == [400, 400, 403]

    await wait_until(lambda: len(landed(layout, "rejected")) == len(cases) + 4, 20)
    await runner.stop()
    reasons = [r["reason"] for r in landed(layout, "rejected")]
    for (_, _, prefix), reason in zip(cases, reasons, strict=False):
        assert reason.startswith(prefix), (prefix, reason)
    assert reasons[len(cases)].startswith("malformed SIP: no blank line")
    assert reasons[len(cases) + 1].startswith("oversized body: body of 5")
    assert reasons[len(cases) + 2].startswith("malformed SIP: no Content-Length on a stream transport")
    assert reasons[len(cases) + 3].startswith("foreign address: MESSAGE from 34020000001327000009 at tcp://")
    keepalives = [e for e in landed(layout, "device_events") if e["kind"] == "keepalive"]
    assert len(keepalives) == 1
    assert runner.metrics.rejected.labels("video", "bad MANSCDP body")._value.get() == 5
    assert source.stats["rejected"] == len(cases) + 4


async def test_udp_retransmissions_are_answered_not_processed_twice(city_config: Callable[..., Path]) -> None:
    port = free_port()
    runner, layout, source = await start_runner(
        city_config(sources=[gb_source(port, catalog_query_on_register=False)])
    )
    device = "34020000001327000010"
    udp = UdpPeer(port)
    await asyncio.to_thread(udp.register, device)
    keepalive = _manscdp(device, 3, _keepalive(device))
    first = await asyncio.to_thread(udp.ask, keepalive)
    again = await asyncio.to_thread(udp.ask, keepalive)  # a retransmission: same branch, CSeq, tag
    assert _status(first) == 200 and again == first
    assert _status(await asyncio.to_thread(udp.ask, _manscdp(device, 4, _keepalive(device)))) == 200
    await wait_until(lambda: len(landed(layout, "device_events")) >= 4, 20)
    await asyncio.sleep(0.6)  # one more flush: nothing else may land
    await runner.stop()
    assert [e["kind"] for e in landed(layout, "device_events")] == [
        "register",
        "online",
        "keepalive",
        "keepalive",
    ]
    assert source.stats["retransmissions"] == 1


async def test_simulate_cli_plays_devices(city_config: Callable[..., Path], tmp_path: Path) -> None:
    port = free_port()
    runner, layout, _ = await start_runner(city_config(sources=[gb_source(port)]))
    argv = [
        *CITYLAKE, "simulate", "gb28181",
        "--url", f"tcp://127.0.0.1:{port}", "--platform-id", PLATFORM, "--domain", DOMAIN,
        "--password", PASSWORD, "--devices", "2", "--transport", "tcp", "--workdir", str(tmp_path / "sim"),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env={**os.environ}
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, output.decode(errors="replace")
    assert b"2 devices: 2 successful, 0 failed" in output
    await wait_until(lambda: len(landed(layout, "device_events")) >= 20, 20)
    await runner.stop()
    registered = {e["device_id"] for e in landed(layout, "device_events") if e["kind"] == "register"}
    assert registered == {d.device_id for d in sim_devices(2, DOMAIN)}
