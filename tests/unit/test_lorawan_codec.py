"""ChirpStack v4 event decoding: the documented ``up`` example (ChirpStack's
integration docs: deviceInfo, object, rxInfo, fCnt, nanosecond time), the other
event types, hostile events ending in a clear EventError, and the bounded
frame-counter table."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import yaml

from citylake.ingest.lorawan.adapter import LorawanSource
from citylake.ingest.lorawan.codec import (
    MAX_OBJECT_FIELDS,
    EventError,
    EventTopic,
    FrameCounters,
    decode_event,
    parse_time,
    parse_topic,
)
from citylake.ingest.lorawan.config import LorawanSourceConfig

REPO = Path(__file__).resolve().parents[2]
NOW = 1_764_072_000_000
DOC_UP = {
    "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
    "time": "2022-07-18T09:34:15.775023242+00:00",
    "deviceInfo": {
        "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242", "tenantName": "ChirpStack",
        "applicationId": "17c82e96-be03-4f38-aef3-f83d48582d97", "applicationName": "Test application",
        "deviceProfileId": "14855bf7-d10d-4aee-b618-ebfcb64dc7ad", "deviceProfileName": "Test device-profile",
        "deviceName": "Test device", "devEui": "0101010101010101", "tags": {"key": "value"},
    },
    "devAddr": "00189440", "dr": 1, "fPort": 1, "data": "qg==",
    "rxInfo": [{"gatewayId": "0016c001f153a14c", "uplinkId": 4217106255, "rssi": -36, "snr": 10.5,
                "context": "E3OWOQ==", "metadata": {"region_name": "eu868"}}],
    "txInfo": {"frequency": 868100000, "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 11,
                                                              "codeRate": "CR_4_5"}}},
    "fCnt": 10, "object": {"temperature": 22.5, "battery": {"ok": True}},
}  # fmt: skip
UP = EventTopic("17c82e96-be03-4f38-aef3-f83d48582d97", "0101010101010101", "up")


def test_documented_uplink() -> None:
    decoded = decode_event(UP, json.dumps(DOC_UP).encode(), NOW, {"temperature": "Cel"})
    assert decoded.ts == 1658136855775  # nanoseconds cut to milliseconds
    assert decoded.f_cnt == 10
    assert decoded.readings == [
        ("temperature", 22.5, None, "Cel"), ("battery_ok", 1.0, None, None),
        ("lora_rssi", -36.0, None, "dBm"), ("lora_snr", 10.5, None, "dB"),
    ]  # fmt: skip
    assert decoded.device is not None
    assert (decoded.device["name"], decoded.device["type"], decoded.device["tags"]) == (
        "Test device", "Test device-profile", {"key": "value"},
    )  # fmt: skip


def test_topics() -> None:
    assert parse_topic("application/abc/device/0101010101010101/event/join").event == "join"
    assert parse_topic("application/abc/device/0A0B0C0D0E0F0102/event/up").dev_eui == "0a0b0c0d0e0f0102"
    for topic, message in [
        ("application/abc/device/0101/event/up", "is not 16 hex digits"),
        ("application/abc/device/0101010101010101/event/location", "unknown event type 'location'"),
        ("app/abc/device/0101010101010101/event/up", "is not application/<id>/device/<devEui>/event/<type>"),
    ]:
        with pytest.raises(EventError, match=message):
            parse_topic(topic)


def test_times() -> None:
    assert parse_time("2022-07-18T09:34:15Z", NOW) == 1658136855000
    assert parse_time(None, NOW) == NOW
    with pytest.raises(EventError, match="no UTC offset"):
        parse_time("2022-07-18T09:34:15", NOW)
    with pytest.raises(EventError, match="is not RFC 3339"):
        parse_time("yesterday", NOW)


def event(kind: str, **payload: object) -> bytes:
    return json.dumps({"deviceInfo": DOC_UP["deviceInfo"], "time": DOC_UP["time"], **payload}).encode()


def test_other_events() -> None:
    at = EventTopic("a", "0101010101010101", "status")
    status = decode_event(at, event("status", margin=6, batteryLevel=55.1), NOW, {})
    assert status.readings == [("link_margin", 6.0, None, "dB"), ("battery_level", 55.1, None, "%")]
    assert status.events == [("status", {"event": "status", "margin": 6, "external_power_source": False,
                                         "battery_level": 55.1})]  # fmt: skip
    mains = decode_event(at, event("status", margin=3, externalPowerSource=True), NOW, {})
    assert [r[0] for r in mains.readings] == ["link_margin"]
    log = decode_event(
        EventTopic("a", at.dev_eui, "log"), event("log", level="ERROR", code="UPLINK_CODEC"), NOW, {}
    )
    assert log.events[0][0] == "alarm"
    joined = decode_event(EventTopic("a", at.dev_eui, "join"), event("join", devAddr="00189440"), NOW, {})
    assert joined.events == [("register", {"event": "join", "dev_addr": "00189440"})]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"[1, 2]", "lorawan up payload is not a JSON object"),
        (json.dumps({"time": "2022-07-18T09:34:15Z"}).encode(), "lorawan event has no deviceInfo object"),
        (event("up", fCnt=-1, object={"t": 1}), "lorawan up fCnt -1 is not a 32-bit counter"),
        (event("up", fCnt=True, object={"t": 1}), "lorawan up fCnt True is not a 32-bit counter"),
        (event("up", object=[1]), "lorawan up object is not a JSON object"),
        (event("up", object={"a": {"b": {"c": {"d": {"e": 1}}}}}), "nested deeper than 4 levels"),
        (event("up", object={f"f{i}": i for i in range(MAX_OBJECT_FIELDS + 1)}), "more than 256 fields"),
        (event("up", object={"t": 1}, rxInfo={"rssi": 1}), "lorawan up rxInfo is not a list"),
    ],
)
def test_hostile_events(payload: bytes, message: str) -> None:
    with pytest.raises(EventError, match=message):
        decode_event(UP, payload, NOW, {})


def test_frame_counters_are_bounded_and_reset_by_join() -> None:
    counters = FrameCounters(max_devices=2, window=3)
    assert counters.first_time("a", 1) and not counters.first_time("a", 1)
    assert counters.first_time("a", 2) and counters.first_time("a", 3) and counters.first_time("a", 4)
    assert counters.first_time("a", 1)  # out of the window of 3: taken again
    counters.joined("a")
    assert counters.first_time("a", 4)
    for dev in ("b", "c", "d"):
        counters.first_time(dev, 0)
    assert len(counters) == 2 and counters.evictions == 2


def test_sample_and_config() -> None:
    data = yaml.safe_load((REPO / "ingest" / "lorawan" / "sample.yaml").read_text())
    source = LorawanSource(LorawanSourceConfig.model_validate(data))
    assert source.validate() == []
    assert source._subscriptions() == ["$share/citylake-lorawan/application/+/device/+/event/+"]
    with pytest.raises(ValueError, match="subscribes to ChirpStack's topics itself"):
        LorawanSourceConfig.model_validate({**data, "topics": [{"template": "a/{device_id}"}]})
    with pytest.raises(ValueError, match="a ChirpStack application UUID or"):
        LorawanSourceConfig.model_validate({**data, "application_ids": ["a/b"]})
    adapters = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    assert adapters["citylake.adapters"]["lorawan"] == "citylake.ingest.lorawan.adapter:LorawanSource"


class RecordingContext:
    """A small fake of the runner's SourceContext: what the adapter handed over."""

    source, site = "lora", "test-site"

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.rejects: list[str] = []
        self.acks = 0

    def emit(
        self, table: object, rows: list[object], raw: bytes, ack: object = None, input_id: object = None
    ) -> None:
        name = getattr(table, "name", str(table))
        self.rows[name] = self.rows.get(name, 0) + len(rows)
        if callable(ack):
            ack()

    def describe_devices(self, rows: list[object], raw: bytes) -> None:
        self.rows["devices"] = self.rows.get("devices", 0) + len(rows)

    def reject(self, raw: bytes, reason: str, ack: object = None, input_id: object = None) -> None:
        self.rejects.append(reason)
        if callable(ack):
            ack()


def test_a_flood_of_distinct_devices_stays_bounded() -> None:
    data = yaml.safe_load((REPO / "ingest" / "lorawan" / "sample.yaml").read_text())
    source = LorawanSource(LorawanSourceConfig.model_validate({**data, "known_devices_max": 50}))
    ctx = RecordingContext()
    acked: list[int] = []
    for n in range(500):
        dev_eui = f"{n:016x}"
        payload = json.dumps({**DOC_UP, "deviceInfo": {**DOC_UP["deviceInfo"], "devEui": dev_eui}}).encode()  # type: ignore[dict-item]
        topic = f"application/app/device/{dev_eui}/event/up"
        source._route(ctx, topic, payload, payload, lambda n=n: acked.append(n), None)  # type: ignore[arg-type, misc]
    assert len(acked) == 500 and ctx.rejects == []
    assert ctx.rows["readings"] == 500 * 4 and ctx.rows["devices"] == 500
    assert len(source.known) == 50 and len(source.frame_counters) == 50
    counters = source.counters()
    assert counters["known_devices_evicted"] == 450 and counters["frame_counters_evicted"] == 450
