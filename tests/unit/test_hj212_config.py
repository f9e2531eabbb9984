"""HJ 212 sample, config errors, and one connection's bounds with a small fake context."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from pydantic import ValidationError

from citylake.ingest.base import Ack, Row, SourceContext
from citylake.ingest.hj212.adapter import MAX_STATIONS_PER_CONNECTION, HJ212Source
from citylake.ingest.hj212.codec import encode_packet
from citylake.ingest.hj212.config import HJ212SourceConfig
from citylake.ingest.tcp_listener import ReplyChannel
from citylake.schemas import TableSpec

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "ingest" / "hj212" / "sample.yaml"


def sample() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    return data


def test_sample_validates_and_builds() -> None:
    config = HJ212SourceConfig.model_validate(sample())
    source = HJ212Source(config)
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 6000)
    assert source.codes["a99051"].metric == "noise_leq"
    rows = source.known_devices(1000)
    assert rows[0]["device_id"] == "888888800000010000000001"
    assert rows[0]["protocol"] == "hj212" and rows[0]["latitude"] == 32.0662


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"url": "udp://0.0.0.0:6000"}, "expected tcp://host:port"),
        ({"url": "tcp://0.0.0.0"}, "expected tcp://host:port"),
        ({"max_data_length": 20000}, "less than or equal to 9999"),
        ({"stations": [{"mn": "bad mn!"}]}, "String should match pattern"),
        ({"password": "1234567890"}, "at most 9 characters"),
        ({"utc_offset_minutes": 2000}, "less than or equal to 840"),
        ({"surprise": 1}, "Extra inputs are not permitted"),
    ],
)
def test_config_errors(overrides: dict[str, Any], message: str) -> None:
    data = {"name": "eco", "type": "hj212", "url": "tcp://127.0.0.1:6000", **overrides}
    with pytest.raises(ValidationError, match=message):
        HJ212SourceConfig.model_validate(data)


class FakeContext:
    """Records what a session hands over (unit test: the runner is not under test)."""

    source = "eco"
    site = "s"

    def __init__(self) -> None:
        self.rows: dict[str, list[Row]] = {}
        self.rejects: list[str] = []
        self.acks: list[Ack] = []

    def emit(
        self, table: TableSpec, rows: Any, raw: bytes, ack: Ack | None = None, input_id: Any = None
    ) -> None:
        self.rows.setdefault(table.name, []).extend(rows)
        if ack is not None:
            self.acks.append(ack)

    def reject(self, raw: bytes, reason: str, ack: Ack | None = None, input_id: Any = None) -> None:
        self.rejects.append(reason)

    def describe_devices(self, rows: Any, raw: bytes) -> None:
        self.rows.setdefault("devices", []).extend(rows)

    def ready(self) -> bool:
        return True


class FakeWriter:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.written.append(data)


PEER = ("10.0.0.1", 4000)


def channel(writer: FakeWriter) -> ReplyChannel:
    return ReplyChannel(asyncio.get_running_loop(), cast(asyncio.StreamWriter, writer))


def frame(mn: str, pw: str = "123456", cn: str = "2011") -> bytes:
    return encode_packet("20261201083000123", "22", cn, pw, mn, 5, "DataTime=20261201083000;a34004-Rtd=1")


async def test_a_connection_inventing_mn_codes_is_bounded_and_dropped() -> None:
    config = HJ212SourceConfig.model_validate(
        {"name": "eco", "type": "hj212", "url": "tcp://127.0.0.1:6000", "max_errors_per_connection": 10}
    )
    source = HJ212Source(config)
    ctx = FakeContext()
    writer = FakeWriter()
    session = source._session_for(cast(SourceContext, ctx), PEER, channel(writer))
    for index in range(MAX_STATIONS_PER_CONNECTION + 10):
        session.received(frame(f"MN{index:06d}"))
    assert len(session.mns) == MAX_STATIONS_PER_CONNECTION
    assert len(ctx.rejects) == 10 and ctx.rejects[0].startswith("too many stations on one connection")
    assert session.should_close() == "10 rejected frames in a row"
    # The 9014 answers go out only when the runner acks.
    assert writer.written == []
    for ack in ctx.acks:
        ack()
    await asyncio.sleep(0)
    assert len(writer.written) == MAX_STATIONS_PER_CONNECTION and session.unacked() == 0


async def test_password_unknown_station_and_unknown_cn_are_rejected() -> None:
    config = HJ212SourceConfig.model_validate(
        {
            "name": "eco",
            "type": "hj212",
            "url": "tcp://127.0.0.1:6000",
            "password": "123456",
            "accept_unknown": False,
            "stations": [{"mn": "KNOWN1"}, {"mn": "KNOWN2", "password": "999"}],
        }
    )
    source = HJ212Source(config)
    ctx = FakeContext()
    session = source._session_for(cast(SourceContext, ctx), PEER, channel(FakeWriter()))
    session.received(frame("STRANGER"))
    session.received(frame("KNOWN1", pw="000000"))
    session.received(frame("KNOWN2", pw="123456"))
    session.received(frame("KNOWN1", cn="3020"))
    session.received(frame("KNOWN2", pw="999"))
    assert [r.split(":")[0] for r in ctx.rejects] == [
        "unknown station",
        "wrong PW",
        "wrong PW",
        "unsupported CN",
    ]
    assert [r["device_id"] for r in ctx.rows["readings"]] == ["KNOWN2"]
    kinds = [(e["device_id"], e["kind"]) for e in ctx.rows["device_events"]]
    assert kinds == [("KNOWN2", "online")]
    session.closed("closed by peer")
    assert [(e["device_id"], e["kind"]) for e in ctx.rows["device_events"]][-1] == ("KNOWN2", "offline")
