"""JT/T 808 sample, config errors, and one connection's rules with a small fake context."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from pydantic import ValidationError

from citylake.ingest.base import SourceContext
from citylake.ingest.jt808 import messages as m
from citylake.ingest.jt808.adapter import JT808Source
from citylake.ingest.jt808.codec import decode_frame, encode_message
from citylake.ingest.jt808.config import JT808SourceConfig
from citylake.ingest.tcp_listener import ReplyChannel
from citylake_devstack.simulators.jt808 import auth_body, location_body
from tests.unit.test_hj212_config import FakeContext, FakeWriter

REPO = Path(__file__).resolve().parents[2]
SECRET = "a-long-random-secret-for-tests"


def test_sample_validates_and_builds() -> None:
    data = yaml.safe_load((REPO / "ingest" / "jt808" / "sample.yaml").read_text())
    source = JT808Source(JT808SourceConfig.model_validate(data))
    rows = source.known_devices(0)
    assert rows[0]["device_id"] == "13912344329" and rows[0]["name"] == "苏A12345"
    assert rows[0]["type"] == "bus"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"url": "udp://0.0.0.0:7611"}, "expected tcp://host:port"),
        ({"auth_secret": "short"}, "at least 16 characters"),
        ({"terminals": [{"phone": "13x"}]}, "String should match pattern"),
        ({"other": 1}, "Extra inputs are not permitted"),
    ],
)
def test_config_errors(overrides: dict[str, Any], message: str) -> None:
    data = {
        "name": "fleet",
        "type": "jt808",
        "url": "tcp://127.0.0.1:7611",
        "auth_secret": SECRET,
        **overrides,
    }
    with pytest.raises(ValidationError, match=message):
        JT808SourceConfig.model_validate(data)


async def test_a_connection_keeps_one_phone_and_answers_only_after_landing() -> None:
    source = JT808Source(
        JT808SourceConfig.model_validate(
            {"name": "fleet", "type": "jt808", "url": "tcp://127.0.0.1:7611", "auth_secret": SECRET}
        )
    )
    ctx, writer = FakeContext(), FakeWriter()
    channel = ReplyChannel(asyncio.get_running_loop(), cast(asyncio.StreamWriter, writer))
    session = source._session_for(cast(SourceContext, ctx), ("10.0.0.9", 5000), channel)
    phone = "13800000001"
    session.received(encode_message(m.AUTHENTICATE, phone, 1, auth_body(source.auth_code(phone), None)))
    assert writer.written == []  # the 0x8001 waits for the landing of the online event
    for ack in ctx.acks:
        ack()
    await asyncio.sleep(0)
    assert decode_frame(writer.written[0][1:-1]).body[4] == m.RESULT_OK
    # Another phone on the same connection: rejected (a flood of invented ids stays one id).
    for index in range(20):
        other = f"1380000{index + 100:04d}"
        session.received(encode_message(m.LOCATION, other, 2, location_body(0, dt.datetime.now(dt.UTC))))
    assert len(ctx.rejects) == 20 and ctx.rejects[0].startswith("phone changed on a connection")
    assert session.should_close() is None  # 20 < max_errors_per_connection (100)
    assert {r["device_id"] for r in ctx.rows.get("readings", [])} == set()
