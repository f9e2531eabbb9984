"""What MQTT topic levels and Sparkplug topics say about devices, and how often
the adapter lands it (first sight and change only, in a bounded table)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import paho.mqtt.client as mqtt

from citylake.ingest.base import Ack, Row
from citylake.ingest.known_devices import KnownDevices
from citylake.ingest.mqtt import sparkplug
from citylake.ingest.mqtt.adapter import MqttSource
from citylake.ingest.mqtt.codec import DeviceLevels, TopicTemplate
from citylake.ingest.mqtt.config import MqttSourceConfig
from citylake.schemas import TableSpec, table, validate_row

REPO = Path(__file__).resolve().parents[2]
TABLES_DEVICES = table("devices")
T = 1_764_072_000_000
TEMPLATE = TopicTemplate("city/{district}/{device_type}/{device_id}/{floor}/telemetry")


def levels(topic: str) -> DeviceLevels:
    ids = TEMPLATE.match(topic)
    assert ids is not None
    return DeviceLevels(ids)


def test_a_place_name_is_the_district_and_other_levels_are_attributes() -> None:
    row = levels("city/gulou/air_quality/aq-1/f3/telemetry").row("aq-1", 10, 20)
    assert row == {
        "device_id": "aq-1", "type": "air_quality", "protocol": "mqtt", "civil_code": None,
        "district": "gulou", "attributes": '{"floor":"f3"}', "first_seen": 10, "last_seen": 20,
    }  # fmt: skip
    assert validate_row(TABLES_DEVICES, {**row, "first_seen": T, "last_seen": T}) is None


def test_a_gb2260_code_is_the_civil_code() -> None:
    row = levels("city/320106/air_quality/aq-1/f3/telemetry").row("aq-1", 1, 1)
    assert (row["civil_code"], row["district"]) == ("320106", None)
    # Digits outside 2..12 are not a GB/T 2260 code: kept as the name.
    assert levels("city/1/x/aq-1/f3/telemetry").district == "1"
    assert levels("city/3201061234567/x/aq-1/f3/telemetry").district == "3201061234567"


def test_a_template_without_levels_still_gives_a_first_sight_row() -> None:
    ids = TopicTemplate("sensors/{device_id}").match("sensors/s1")
    assert ids is not None
    row = DeviceLevels(ids).row("s1", 5, 5)
    assert (row["type"], row["district"], row["civil_code"], row["attributes"]) == (None, None, None, None)


def test_known_devices_notice_new_and_changed_and_forget_the_least_recent() -> None:
    known = KnownDevices(max_devices=2)
    assert known.observe("a", ("x",), 1) == 1  # first sight
    assert known.observe("a", ("x",), 2) is None  # nothing new
    assert known.observe("a", ("y",), 3) == 1  # changed: the row keeps the first sight
    known.observe("b", ("x",), 4)
    known.observe("a", ("y",), 5)  # a is the most recent now
    known.observe("c", ("x",), 6)  # b goes
    assert (len(known), known.evictions, "b" in known, "a" in known) == (2, 1, False, True)
    assert known.observe("b", ("x",), 7) == 7  # first sight again


class RecordingContext:
    source = "m"
    site = "s1"

    def __init__(self) -> None:
        self.handed: list[tuple[str, list[Row]]] = []
        self.rejects: list[str] = []

    def emit(
        self,
        table: TableSpec,
        rows: Sequence[Row],
        raw: bytes,
        ack: Ack | None = None,
        input_id: str | None = None,
    ) -> None:
        self.handed.append((table.name, list(rows)))

    def emit_columns(
        self, table: TableSpec, columns: Mapping[str, Sequence[object]], count: int, raw: bytes,
        ack: Ack | None = None, input_id: str | None = None,
    ) -> int:  # fmt: skip
        self.handed.append((table.name, [{k: v[i] for k, v in columns.items()} for i in range(count)]))
        return count

    def reject(self, raw: bytes, reason: str, ack: Ack | None = None, input_id: str | None = None) -> None:
        self.rejects.append(reason)

    def describe_devices(self, rows: Sequence[Row], raw: bytes) -> None:
        self.handed.append(("devices", list(rows)))

    def ready(self) -> bool:
        return True

    def already_landed(self, input_id: str) -> bool:
        return False

    def devices(self) -> list[Row]:
        return [row for name, rows in self.handed if name == "devices" for row in rows]


def deliver(source: MqttSource, topic: str, payload: bytes) -> None:
    message = mqtt.MQTTMessage(topic=topic.encode())
    message.payload = payload
    message.qos = 0
    source._on_message(None, None, message)  # type: ignore[arg-type]


def test_the_adapter_lands_a_device_row_on_first_sight_and_change_only() -> None:
    config = MqttSourceConfig(
        name="m",
        url="mqtt://127.0.0.1:1883",
        topics=[{"template": "city/{district}/{device_type}/{device_id}/telemetry"}],
        known_devices_max=3,
    )
    source = MqttSource(config)
    ctx = RecordingContext()
    source._ctx = ctx
    body = b'{"ts": 1764072000000, "pm25": 3}'
    deliver(source, "city/gulou/air/aq-1/telemetry", body)
    deliver(source, "city/gulou/air/aq-1/telemetry", body)
    deliver(source, "city/320106/air/aq-1/telemetry", body)
    assert [(d["device_id"], d["district"], d["civil_code"]) for d in ctx.devices()] == [
        ("aq-1", "gulou", None), ("aq-1", None, "320106"),
    ]  # fmt: skip
    assert ctx.devices()[0]["first_seen"] == ctx.devices()[1]["first_seen"]
    assert sum(len(rows) for name, rows in ctx.handed if name == "readings") == 3
    for index in range(10):  # a flood of new ids stays within the bound
        deliver(source, f"city/gulou/air/flood-{index}/telemetry", body)
    assert len(source.known) == 3
    assert source.counters() == {"known_devices_evicted": 8}


def test_payload_device_ids_get_rows_when_the_topic_has_none() -> None:
    config = MqttSourceConfig(
        name="m", url="mqtt://127.0.0.1:1883",
        topics=[{"template": "gw/{district}/batch"}],
    )  # fmt: skip
    source = MqttSource(config)
    ctx = RecordingContext()
    source._ctx = ctx
    items = [{"device_id": d, "ts": 1764072000000, "v": 1} for d in ("a", "b", "a")]
    deliver(source, "gw/gulou/batch", json.dumps(items).encode())
    assert [d["device_id"] for d in ctx.devices()] == ["a", "b"]


def test_sparkplug_births_and_data_give_device_rows_once() -> None:
    where = sparkplug.parse_topic("spBv1.0/plant1/DBIRTH/gw-7/pump-3")
    row = sparkplug.device_row(where, 1, 2)
    assert (row["device_id"], row["parent_id"], row["type"]) == ("gw-7/pump-3", "gw-7", "sparkplug_device")
    assert json.loads(str(row["attributes"])) == {
        "sparkplug_edge_node_id": "gw-7",
        "sparkplug_group_id": "plant1",
    }
    node = sparkplug.device_row(sparkplug.parse_topic("spBv1.0/plant1/NBIRTH/gw-7"), 1, 2)
    assert (node["device_id"], node["parent_id"], node["type"]) == ("gw-7", None, "sparkplug_edge_node")
    config = MqttSourceConfig(name="m", url="mqtt://127.0.0.1:1883", sparkplug_groups=["plant1"])
    source = MqttSource(config)
    ctx = RecordingContext()
    source._ctx = ctx
    birth = sparkplug.Payload(timestamp=1764072000000, seq=0)
    birth.metrics.add(name="p", alias=1, datatype=sparkplug.DOUBLE, double_value=1.0)
    for kind in ("DBIRTH", "DDATA", "DBIRTH", "DDEATH"):
        deliver(source, f"spBv1.0/plant1/{kind}/gw-7/pump-3", birth.SerializeToString())
    assert [d["device_id"] for d in ctx.devices()] == ["gw-7/pump-3"]


def test_readme_documents_every_key() -> None:
    readme = (REPO / "ingest" / "mqtt" / "README.md").read_text()
    for key in MqttSourceConfig.model_fields:
        assert f"`{key}`" in readme, f"ingest/mqtt/README.md does not document {key}"
    for key in ("template", "payload", "timestamp_field", "timestamp_unit", "units"):
        assert f"`topics[].{key}`" in readme, f"ingest/mqtt/README.md does not document topics[].{key}"
