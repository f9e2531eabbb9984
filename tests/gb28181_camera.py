"""A GB28181 camera (an NVR with two channels) that keeps its dialogs apart,
as many real cameras do: written with asyncio's own datagram socket, playing
exact SIP text, so it shares no code with the platform under test.

- Its REGISTER, keepalives and unregister are one call (one Call-ID, one From
  tag, CSeq counting up); a request from the platform that carries that
  Call-ID is filed under the registration and never answered, the way a
  camera that files requests by Call-ID (RFC 3261 8.1.1.4 lets it) behaves.
- It answers the platform's Catalog and DeviceInfo queries with a 200 OK and
  then sends the responses as requests of its own, each under a NEW Call-ID
  (the catalog split over two MESSAGEs, in GB2312); alarm and mobile position
  are new calls too; it answers the platform's Alarm response with 200.
- It drops the first copy of the DeviceInfo query, so the platform has to
  retransmit it over UDP (Timer E) for the device info to land.

SIPp cannot play this: a call's requests carry that call's Call-ID, and a
response to a request sent under another Call-ID cannot be mapped back to
the call that sent it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

T1_S = 0.5


@dataclass
class Received:
    """A request from the platform, as the camera saw it."""

    at: float
    data: bytes
    method: str
    headers: dict[str, str]
    body: bytes

    @property
    def call_id(self) -> str:
        return self.headers["call-id"]

    @property
    def branch(self) -> str:
        found = re.search(r"branch=([^;\s]+)", self.headers["via"])
        return found.group(1) if found else ""

    @property
    def from_tag(self) -> str:
        found = re.search(r"tag=([^;\s]+)", self.headers["from"])
        return found.group(1) if found else ""

    @property
    def cmd_type(self) -> str:
        found = re.search(rb"<CmdType>(\w+)</CmdType>", self.body)
        return found.group(1).decode() if found else ""


@dataclass
class Exchange:
    """One request of the camera and the final response it got."""

    request: bytes
    response_head: dict[str, str]
    status: int


def _parse(data: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    return lines[0], headers, body


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # RFC 2617 digest is MD5


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, camera: SeparateDialogCamera) -> None:
        self.camera = camera

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.camera._on_datagram(data)


@dataclass
class SeparateDialogCamera:
    platform: tuple[str, int]
    platform_id: str
    domain: str
    password: str
    device_id: str
    channels: tuple[str, str]
    received: list[Received] = field(default_factory=list)
    ignored: list[Received] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)
    register_call_id: str = field(default_factory=lambda: f"reg-{secrets.token_hex(8)}@camera")
    # A camera that takes the platform's requests but never answers them.
    silent: bool = False

    def __post_init__(self) -> None:
        self._transport: asyncio.DatagramTransport | None = None
        self._port = 0
        self._register_tag = secrets.token_hex(4)
        self._register_cseq = 0
        self._waiting: dict[tuple[str, int], asyncio.Future[tuple[int, dict[str, str]]]] = {}
        self._answered: dict[tuple[str, str], bytes] = {}
        self._dropped_device_info = False
        self.answered_queries: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> SeparateDialogCamera:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Socket(self), local_addr=("127.0.0.1", 0))
        self._transport = transport
        self._port = transport.get_extra_info("sockname")[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._transport is not None:
            self._transport.close()

    # --- the camera's own requests ---------------------------------------------

    def _via(self, branch: str) -> str:
        return f"SIP/2.0/UDP 127.0.0.1:{self._port};rport;branch={branch}"

    async def _request(
        self, lines: list[str], body: bytes, call_id: str, cseq: int
    ) -> tuple[int, dict[str, str]]:
        """Send, retransmit every T1 (doubling), return the final response."""
        data = ("\r\n".join([*lines, f"Content-Length: {len(body)}"]) + "\r\n\r\n").encode() + body
        waiter: asyncio.Future[tuple[int, dict[str, str]]] = asyncio.get_running_loop().create_future()
        self._waiting[(call_id, cseq)] = waiter
        assert self._transport is not None
        interval = T1_S
        deadline = time.monotonic() + 16
        try:
            while True:
                self._transport.sendto(data, self.platform)
                try:
                    status, headers = await asyncio.wait_for(asyncio.shield(waiter), interval)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"no answer from the platform to {lines[0]}") from None
                    interval = min(interval * 2, 4.0)
        finally:
            self._waiting.pop((call_id, cseq), None)
        self.exchanges.append(Exchange(data, headers, status))
        return status, headers

    async def _register(self, expires: int) -> int:
        uri = f"sip:{self.platform_id}@{self.domain}"
        authorization: list[str] = []
        for _ in range(2):
            self._register_cseq += 1
            cseq = self._register_cseq
            lines = [
                f"REGISTER {uri} SIP/2.0",
                f"Via: {self._via('z9hG4bK' + secrets.token_hex(6))}",
                f"From: <sip:{self.device_id}@{self.domain}>;tag={self._register_tag}",
                f"To: <sip:{self.device_id}@{self.domain}>",
                f"Call-ID: {self.register_call_id}",
                f"CSeq: {cseq} REGISTER",
                f"Contact: <sip:{self.device_id}@127.0.0.1:{self._port}>",
                "Max-Forwards: 70",
                "User-Agent: separate-dialog camera",
                f"Expires: {expires}",
                *authorization,
            ]
            status, headers = await self._request(lines, b"", self.register_call_id, cseq)
            if status != 401:
                return status
            challenge = headers["www-authenticate"]
            realm = re.search(r'realm="([^"]*)"', challenge)
            nonce = re.search(r'nonce="([^"]*)"', challenge)
            assert realm and nonce, challenge
            cnonce, nc = secrets.token_hex(4), "00000001"
            ha1 = _md5(f"{self.device_id}:{realm.group(1)}:{self.password}")
            ha2 = _md5(f"REGISTER:{uri}")
            response = _md5(f"{ha1}:{nonce.group(1)}:{nc}:{cnonce}:auth:{ha2}")
            authorization = [
                f'Authorization: Digest username="{self.device_id}", realm="{realm.group(1)}", '
                f'nonce="{nonce.group(1)}", uri="{uri}", response="{response}", algorithm=MD5, '
                f'qop=auth, nc={nc}, cnonce="{cnonce}"'
            ]
        return status

    async def register(self) -> int:
        return await self._register(3600)

    async def unregister(self) -> int:
        return await self._register(0)

    async def keepalive(self, sn: int) -> tuple[int, dict[str, str]]:
        """A keepalive in the registration's call (its Call-ID, tag, next CSeq)."""
        self._register_cseq += 1
        body = self._xml(
            f"<Notify><CmdType>Keepalive</CmdType><SN>{sn}</SN>"
            f"<DeviceID>{self.device_id}</DeviceID><Status>OK</Status></Notify>"
        )
        return await self._message(body, self.register_call_id, self._register_tag, self._register_cseq)

    async def new_call(self, body: bytes) -> tuple[int, dict[str, str]]:
        """A MESSAGE as a call of its own: a Call-ID and tag never used before."""
        return await self._message(body, f"{secrets.token_hex(10)}@camera", secrets.token_hex(4), 1)

    async def _message(self, body: bytes, call_id: str, tag: str, cseq: int) -> tuple[int, dict[str, str]]:
        lines = [
            f"MESSAGE sip:{self.platform_id}@{self.domain} SIP/2.0",
            f"Via: {self._via('z9hG4bK' + secrets.token_hex(6))}",
            f"From: <sip:{self.device_id}@{self.domain}>;tag={tag}",
            f"To: <sip:{self.platform_id}@{self.domain}>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} MESSAGE",
            "Max-Forwards: 70",
            "Content-Type: Application/MANSCDP+xml",
        ]
        return await self._request(lines, body, call_id, cseq)

    @staticmethod
    def _xml(inner: str) -> bytes:
        return ('<?xml version="1.0" encoding="GB2312"?>\r\n' + inner + "\r\n").encode("gb2312")

    async def alarm(self, channel: str) -> tuple[int, dict[str, str]]:
        return await self.new_call(self._xml(
            f"<Notify><CmdType>Alarm</CmdType><SN>21</SN><DeviceID>{channel}</DeviceID>"
            "<AlarmPriority>2</AlarmPriority><AlarmMethod>5</AlarmMethod>"
            "<AlarmTime>2026-11-30T08:15:00</AlarmTime><AlarmDescription>越线告警</AlarmDescription>"
            "<Longitude>121.4737</Longitude><Latitude>31.2304</Latitude>"
            "<Info><AlarmType>4</AlarmType></Info></Notify>"
        ))  # fmt: skip

    async def position(self, channel: str) -> tuple[int, dict[str, str]]:
        return await self.new_call(self._xml(
            f"<Notify><CmdType>MobilePosition</CmdType><SN>22</SN><DeviceID>{channel}</DeviceID>"
            "<Time>2026-11-30T08:15:10</Time><Longitude>121.4741</Longitude><Latitude>31.2311</Latitude>"
            "<Speed>12.5</Speed><Direction>270</Direction><Altitude>8</Altitude></Notify>"
        ))  # fmt: skip

    # --- the platform's requests -------------------------------------------------

    def _on_datagram(self, data: bytes) -> None:
        start, headers, body = _parse(data)
        if start.startswith("SIP/2.0 "):
            status = int(start.split()[1])
            number = int(headers["cseq"].split()[0])
            waiter = self._waiting.get((headers["call-id"], number))
            if waiter is not None and not waiter.done() and status >= 200:
                waiter.set_result((status, headers))
            return
        request = Received(time.monotonic(), data, start.split()[0], headers, body)
        if request.call_id == self.register_call_id:
            # Filed under the registration dialog, where the platform has no
            # business sending requests: such a camera never answers them.
            self.ignored.append(request)
            return
        self.received.append(request)
        if self.silent:
            return
        key = (request.call_id, headers["cseq"])
        if key in self._answered:  # a retransmission: the same answer again
            assert self._transport is not None
            self._transport.sendto(self._answered[key], self.platform)
            return
        if request.cmd_type == "DeviceInfo" and not self._dropped_device_info:
            self._dropped_device_info = True  # lost on the way: the platform must retransmit
            return
        ok = (
            "\r\n".join([
                "SIP/2.0 200 OK",
                f"Via: {headers['via']}",
                f"From: {headers['from']}",
                f"To: {headers['to']};tag={secrets.token_hex(4)}",
                f"Call-ID: {request.call_id}",
                f"CSeq: {headers['cseq']}",
                "Content-Length: 0",
            ]) + "\r\n\r\n"
        ).encode()  # fmt: skip
        self._answered[key] = ok
        assert self._transport is not None
        self._transport.sendto(ok, self.platform)
        sn = re.search(rb"<SN>(\d+)</SN>", body)
        if request.cmd_type == "Catalog" and sn:
            self._spawn(self._answer_catalog(int(sn.group(1))), "Catalog")
        elif request.cmd_type == "DeviceInfo" and sn:
            self._spawn(self._answer_device_info(int(sn.group(1))), "DeviceInfo")

    def _spawn(self, coroutine: Coroutine[Any, Any, None], query: str) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            if not finished.cancelled() and finished.exception() is None:
                self.answered_queries.append(query)

        task.add_done_callback(done)

    async def _answer_catalog(self, sn: int) -> None:
        first, second = self.channels
        head = (
            f"<Response><CmdType>Catalog</CmdType><SN>{sn}</SN>"
            f"<DeviceID>{self.device_id}</DeviceID><SumNum>2</SumNum>"
        )
        await self.new_call(self._xml(
            f'{head}<DeviceList Num="1"><Item><DeviceID>{first}</DeviceID><Name>南京路步行街</Name>'
            "<Manufacturer>海康威视</Manufacturer><Model>DS-2DE4</Model><CivilCode>310101</CivilCode>"
            f"<Address>南京东路100号</Address><ParentID>{self.device_id}</ParentID><Status>ON</Status>"
            "<Longitude>121.4737</Longitude><Latitude>31.2304</Latitude></Item></DeviceList></Response>"
        ))  # fmt: skip
        await self.new_call(self._xml(
            f'{head}<DeviceList Num="1"><Item><DeviceID>{second}</DeviceID><Name>外滩观景台</Name>'
            "<Manufacturer>大华</Manufacturer><Model>DH-SD6C</Model><CivilCode>310101</CivilCode>"
            f"<Address>中山东一路</Address><ParentID>{self.device_id}</ParentID><Status>OFF</Status>"
            "<Longitude>121.4903</Longitude><Latitude>31.2397</Latitude></Item></DeviceList></Response>"
        ))  # fmt: skip

    async def _answer_device_info(self, sn: int) -> None:
        await self.new_call(self._xml(
            f"<Response><CmdType>DeviceInfo</CmdType><SN>{sn}</SN><DeviceID>{self.device_id}</DeviceID>"
            "<DeviceName>黄浦区录像机</DeviceName><Result>OK</Result><Manufacturer>海康威视</Manufacturer>"
            "<Model>DS-9616N</Model><Firmware>V4.1</Firmware><Channel>2</Channel></Response>"
        ))  # fmt: skip

    async def settled(self, timeout_s: float = 20) -> None:
        """Until the answers it owes the platform have been sent and answered."""
        deadline = time.monotonic() + timeout_s
        while sorted(self.answered_queries) != ["Catalog", "DeviceInfo"]:
            got = [r.cmd_type for r in self.received]
            assert time.monotonic() < deadline, f"camera answered {self.answered_queries}; received {got}"
            await asyncio.sleep(0.05)
