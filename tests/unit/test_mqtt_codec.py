from __future__ import annotations

from typing import Any

import orjson
import pytest

from citylake.ingest.mqtt.codec import JsonReadingsCodec, PayloadError, TopicTemplate, parse_timestamp

TEMPLATE = "city/{district}/{device_type}/{device_id}/telemetry"
TS = 1_764_072_000_000


def test_template_builds_subscription_and_extracts_ids() -> None:
    t = TopicTemplate(TEMPLATE)
    assert t.subscription == "city/+/+/+/telemetry"
    assert t.match("city/haidian/air/air-7/telemetry") == {
        "district": "haidian",
        "device_type": "air",
        "device_id": "air-7",
    }


@pytest.mark.parametrize(
    "topic",
    [
        "city/haidian/air/air-7/status",
        "city/haidian/air/telemetry",
        "city/haidian/air//telemetry",
        "x/h/a/d/telemetry",
    ],
)
def test_template_refuses_other_topics(topic: str) -> None:
    assert TopicTemplate(TEMPLATE).match(topic) is None


@pytest.mark.parametrize(
    "bad", ["city/#", "city/+/x", "city/{a}{b}/x", "city/{a}/{a}", "", "/city/{a}", "city/pre{a}/x"]
)
def test_bad_templates_raise(bad: str) -> None:
    with pytest.raises(ValueError, match="topic template"):
        TopicTemplate(bad)


def decode(payload: object | bytes, ids: dict[str, str] | None = None, **kw: Any) -> list[dict[str, object]]:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return JsonReadingsCodec(**kw).decode(
        raw, ids if ids is not None else {"device_id": "d1"}, "src", "site", TS + 1
    )


def test_object_with_several_metrics_gives_one_row_each() -> None:
    rows = decode(
        {"ts": TS, "pm25": 35.2, "temperature": -3, "state": "open", "door": True}, units={"pm25": "ug/m3"}
    )
    by_metric = {r["metric"]: r for r in rows}
    assert by_metric["pm25"]["value"] == 35.2
    assert by_metric["pm25"]["unit"] == "ug/m3"
    assert by_metric["temperature"]["value"] == -3.0
    assert by_metric["state"]["text"] == "open" and by_metric["state"]["value"] is None
    assert by_metric["door"]["value"] == 1.0
    assert {r["ts"] for r in rows} == {TS}
    assert {r["device_id"] for r in rows} == {"d1"}


def test_array_batch() -> None:
    rows = decode([{"ts": TS, "a": 1}, {"ts": TS + 1000, "a": 2}])
    assert [(r["ts"], r["value"]) for r in rows] == [(TS, 1.0), (TS + 1000, 2.0)]


def test_device_id_from_payload_when_topic_has_none() -> None:
    rows = decode({"ts": TS, "device_id": "gw-9", "a": 1}, ids={})
    assert rows[0]["device_id"] == "gw-9"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid JSON"),
        (b"\xff\xfe\x00garbage", "invalid JSON"),
        ({"a": 1}, "missing timestamp field 'ts'"),
        ({"ts": "yesterday", "a": 1}, "timestamp 'ts' must be a number of ms"),
        ({"ts": TS}, "no metrics in the payload"),
        ([1, 2], "item 0: expected a JSON object, got int"),
        ("just a string", "item 0: expected a JSON object, got str"),
    ],
)
def test_undecodable_payloads_raise_with_reason(payload: object, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        decode(payload)


def test_missing_device_id_everywhere() -> None:
    with pytest.raises(PayloadError, match="no device_id"):
        decode({"ts": TS, "a": 1}, ids={})


def test_nested_metric_value_is_left_for_validation_to_refuse() -> None:
    rows = decode({"ts": TS, "ok": 1, "nested": {"x": 1}})
    assert {r["metric"]: r["value"] for r in rows} == {"ok": 1.0, "nested": {"x": 1}}


def test_timestamp_units() -> None:
    assert parse_timestamp(1_764_072_000, "s", "ts") == TS
    assert parse_timestamp("2025-11-25T12:00:00+00:00", "iso8601", "ts") == TS
    assert parse_timestamp("2025-11-25T20:00:00+08:00", "iso8601", "ts") == TS
    with pytest.raises(PayloadError, match="no UTC offset"):
        parse_timestamp("2025-11-25T12:00:00", "iso8601", "ts")


def _uniform(i: int) -> dict[str, Any]:
    return {"ts": TS + i, "v": i, "t": 2.5, "s": "on", "quality": 3}


@pytest.mark.parametrize(
    ("items", "ids"),
    [
        ([{"ts": TS + i, "v": float(i)} for i in range(20)], {"device_id": "d"}),
        ([_uniform(i) for i in range(20)], {"device_id": "d"}),
        ([{"ts": TS + i, "v": True, "device_id": f"d{i % 3}"} for i in range(20)], {}),
        # each of these leaves the column-wise pass for the reading-by-reading one
        ([{"ts": TS + i, "v": None if i == 3 else 1.0} for i in range(20)], {"device_id": "d"}),
        ([{"ts": TS + i, "v": [1]} for i in range(20)], {"device_id": "d"}),
        ([{"ts": TS + i, **({"w": 2.0} if i == 5 else {"x": 3.0})} for i in range(20)], {"device_id": "d"}),
        ([{"ts": TS + i + 0.5, "v": 1.0} for i in range(20)], {"device_id": "d"}),
        ([{"ts": TS + i, "v": 1.0, "device_id": ""} for i in range(20)], {}),
    ],
)
def test_batched_arrays_decode_column_wise_to_the_same_readings_in_the_same_order(
    items: list[dict[str, Any]], ids: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    codec = JsonReadingsCodec(units={"v": "ug/m3"})
    payload = orjson.dumps(items)

    def decode() -> object:
        try:
            return codec.decode(payload, ids, "s", "x", 1)
        except PayloadError as exc:
            return str(exc)

    fast = decode()
    monkeypatch.setattr("citylake.ingest.mqtt.codec._UNIFORM_MIN_ITEMS", 10**9)
    assert fast == decode()
    assert fast != []
