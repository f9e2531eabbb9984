"""Same input, both modes: every job writes identical lake contents in batch
and in continuous streaming mode (Flink's mini-cluster), with duplicates and
late readings (within the allowed lateness) in the input. The alerts and
devices jobs are also held to rows worked out by hand, in the lake and in the
one-row-per-alert / one-row-per-device views analysts query."""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow.dataset as ds
import pytest

from citylake.config import AlertRule, CityConfig, FlinkConfig, PipelinesConfig, SourceConfig
from citylake.ingest.batcher import ColumnBatcher
from citylake.ingest.landing import LandingWriter
from citylake.lake import Lake
from citylake.pipelines import runner
from citylake.pipelines.jobs import JobSet
from citylake.schemas import DataLayout, table

pytestmark = pytest.mark.integration
HOUR = 3_600_000
T0 = 1_764_072_000_000 + HOUR - 90_000  # 90 s before an hour boundary
SENTINEL = "clock"
JOBS = [
    ("readings", ["readings"]),
    ("rollups", ["readings_1m", "readings_1h"]),
    ("alerts", ["alerts"]),
    ("devices", ["devices"]),
    ("events", ["device_events", "rejected"]),
]
Row = dict[str, Any]


def reading(device: str, ts: int, value: float | None, text: str | None = None) -> Row:
    return {
        "device_id": device, "ts": ts, "metric": "level" if text is None else "state", "value": value,
        "text": text, "unit": "m", "quality": 0, "source": "s", "site": "x", "ingest_ts": T0 + 500_000,
    }  # fmt: skip


def landing_files() -> list[list[Row]]:
    """Three landing files as ingest would write them over a few minutes."""
    # Live ingest lands readings of many devices interleaved in time order.
    first = [reading(f"pump-{d}", T0 + s * 10_000, float(d * 100 + s)) for s in range(12) for d in range(3)]
    first.append(reading("pump-0", T0 + 5_000, None, text="open"))
    # A later file repeats six readings (a gateway replaying its buffer) and
    # brings readings up to 25 s older than the newest already landed: late,
    # but within the 60 s allowed lateness.
    second = [*first[:6], reading("pump-1", T0 + 85_000, 7.5), reading("pump-2", T0 + 95_000, -1.0)]
    third = [reading(f"pump-{d}", T0 + 200_000 + s * 1_000, float(s)) for d in range(2) for s in range(5)]
    return [first, second, third]


# --- alerts ------------------------------------------------------------------

RULES = [
    AlertRule(
        name="boiler-hot", metric="temp", above=90, severity="critical", device_prefix="boiler-",
        message="boiler over 90 °C",
    ),
    AlertRule(
        name="pressure-jump", metric="pressure", kind="rate", above=2.0, below=-2.0,
        message="pressure moved > 2 bar/s: check the 'relief' valve",
    ),
]  # fmt: skip


def measured(device: str, metric: str, second: float, value: float, quality: int = 0) -> Row:
    return {
        "device_id": device, "ts": T0 + int(second * 1000), "metric": metric, "value": float(value),
        "text": None, "unit": None, "quality": quality, "source": "s", "site": "x", "ingest_ts": T0 + 500_000,
    }  # fmt: skip


def series(device: str, metric: str, first_s: int, values: list[float]) -> list[Row]:
    """Readings every 10 s from ``first_s``."""
    return [measured(device, metric, first_s + 10 * i, value) for i, value in enumerate(values)]


def alert_files() -> list[list[Row]]:
    """Readings for the two rules, landed in three files."""
    first = sorted(
        series("boiler-1", "temp", 0, [80, 85, 95, 97, 99, 88, 91, 93])
        + series("boiler-2", "temp", 5, [120, 118, 110, 100, 95, 92, 94, 96])
        # Hotter than any boiler, but the rule watches boilers only.
        + series("oven-1", "temp", 0, [150, 160])
        + series("pump-1", "pressure", 0, [5.0, 5.5, 40.0, 41.0, 41.5, 10.0, 10.2, 30.0]),
        key=lambda r: r["ts"],
    )
    second = [
        # Replayed: nothing may open twice.
        measured("boiler-1", "temp", 20, 95), measured("pump-1", "pressure", 20, 40.0),
        measured("boiler-2", "temp", 75, 96),
        # Late (40 s and 20 s behind the newest landed) and they change the
        # episodes: boiler-1 cools between 30 s and 40 s, pump-1 settles at 55 s.
        measured("boiler-1", "temp", 35, 70), measured("pump-1", "pressure", 55, 10.1),
    ]  # fmt: skip
    third = [
        measured("boiler-1", "temp", 80, 85),
        # Marked bad by the device: ignored, or it would open and close an alert.
        measured("boiler-1", "temp", 85, 200, quality=2),
        measured("boiler-2", "temp", 85, 97), measured("pump-1", "pressure", 80, 60.0),
        measured("boiler-1", "temp", 90, 86),
    ]  # fmt: skip
    return [first, second, third]


def alert_row(rule: AlertRule, device: str, started_s: float, ended_s: float | None, value: float) -> Row:
    started = T0 + int(started_s * 1000)
    return {
        "alert_id": hashlib.md5(f"{rule.name}|{device}|{rule.metric}|{started}".encode()).hexdigest(),
        "device_id": device, "metric": rule.metric, "rule": rule.name, "severity": rule.severity,
        "started_at": started, "ended_at": None if ended_s is None else T0 + int(ended_s * 1000),
        "value": value, "message": rule.message, "date": "2025-11-25",
    }  # fmt: skip


def rate(before: float, after: float, seconds: float) -> float:
    """A rate the way the job computes it, so the doubles compare equal."""
    return (after - before) * 1000.0 / int(seconds * 1000)


def expected_alerts() -> list[Row]:
    """Worked out by hand from alert_files(). boiler-1 (dedupe and quality
    applied): 80 85 95 97 | 70 | 99 88 91 93 85 86 at 0..90 s; boiler-2 starts
    out of bounds and stays there; pump-1's rates per second (previous reading
    to this one) are 0.05, 3.45, 0.1, 0.05, -3.15, 0.02, 0.02, 1.98, 3.0."""
    hot, jump = RULES
    return [
        alert_row(hot, "boiler-1", 20, None, 95.0), alert_row(hot, "boiler-1", 20, 35, 95.0),
        alert_row(hot, "boiler-1", 40, None, 99.0), alert_row(hot, "boiler-1", 40, 50, 99.0),
        alert_row(hot, "boiler-1", 60, None, 91.0), alert_row(hot, "boiler-1", 60, 80, 91.0),
        alert_row(hot, "boiler-2", 5, None, 120.0),  # still open
        alert_row(jump, "pump-1", 20, None, rate(5.5, 40.0, 10)),
        alert_row(jump, "pump-1", 20, 30, rate(5.5, 40.0, 10)),
        alert_row(jump, "pump-1", 50, None, rate(41.5, 10.0, 10)),
        alert_row(jump, "pump-1", 50, 55, rate(41.5, 10.0, 10)),
        alert_row(jump, "pump-1", 80, None, rate(30.0, 60.0, 10)),  # still open
    ]  # fmt: skip


def one_per_alert(rows: list[Row]) -> list[Row]:
    """What the alerts view must show: the closing row of a closed alert."""
    by_id: dict[str, Row] = {}
    for row in rows:
        if row["alert_id"] not in by_id or row["ended_at"] is not None:
            by_id[row["alert_id"]] = row
    return list(by_id.values())


# --- devices and events ----------------------------------------------------

SOURCES = [
    SourceConfig(name="video", type="gb28181", url="udp://127.0.0.1:5060"),
    SourceConfig(name="sensors", type="mqtt", url="mqtt://127.0.0.1:1883"),
]
NVR = "34020000001180000001"
CAM_1 = "34020000001320000001"
CAM_2 = "34020000001320000002"
DEVICE_COLUMNS = [f.name for f in table("devices").schema]


def json_text(attributes: Row) -> str:
    """As the adapters write attributes (orjson, keys sorted)."""
    return orjson.dumps(attributes, option=orjson.OPT_SORT_KEYS).decode()


def event(device: str, second: float, kind: str, attributes: Row | None = None, source: str = "video") -> Row:
    return {
        "device_id": device, "ts": T0 + int(second * 1000), "kind": kind,
        "attributes": None if attributes is None else json_text(attributes),
        "source": source, "site": "x", "ingest_ts": T0 + 500_000,
    }  # fmt: skip


def at_s(second: float | None) -> int | None:
    return None if second is None else T0 + int(second * 1000)


def device_row(device: str, first_s: float | None, last_s: float | None, **values: object) -> Row:
    """A `devices` row: as a source lands it, as the job writes it, as the view shows it."""
    row: Row = dict.fromkeys(DEVICE_COLUMNS) | {"device_id": device, **values}
    return row | {"first_seen": at_s(first_s), "last_seen": at_s(last_s)}


def gb_record(device: str, first_s: float, last_s: float, **values: object) -> Row:
    """A landing row as the GB28181 adapter writes it (DeviceRecord.row(): the
    record's whole state, protocol gb28181, no district or attributes)."""
    return device_row(device, first_s, last_s, protocol="gb28181", **values)


def catalog_items(first_s: float, last_s: float) -> list[Row]:
    """The two channels of a catalog answer, as _on_catalog records them."""
    return [
        gb_record(
            CAM_1, first_s, last_s, name="东门摄像机", type="ipc", manufacturer="Hikvision", model="DS-2CD",
            parent_id=NVR, civil_code="340200", address="人民路1号", longitude=117.2272, latitude=31.8206,
            status="online",
        ),
        gb_record(
            CAM_2, first_s, last_s, name="西门球机", type="ipc", manufacturer="Dahua", model="SD-6C",
            parent_id=NVR, civil_code="340200", address="解放路2号", longitude=117.2301, latitude=31.819,
            status="offline",
        ),
    ]  # fmt: skip


def device_files() -> list[list[tuple[str, list[Row]]]]:
    """Three landings (each a `devices` file and a `device_events` file, as
    ingest commits them together) from a GB28181 NVR with two channels, an
    MQTT meter and a Modbus PLC reported by two sources at the same moment."""
    sip = {"address": "127.0.0.1:5061", "expires": 3600, "refresh": False, "transport": "udp"}
    catalog = {"channels": [CAM_1, CAM_2], "num": 2, "received": 2, "sn": 1, "sum_num": 2}
    position = {"altitude": None, "direction": 90.0, "from": NVR, "speed": 1.5, "time": "2025-11-25T20:19:10"}
    alarm = {
        "description": "区域入侵", "from": NVR, "latitude": 2.0, "longitude": 1.0, "method": "5",
        "priority": "1", "time": "2025-11-25T20:19:00", "type": "5",
    }  # fmt: skip
    nvr_registered = gb_record(NVR, 0, 0, type="nvr", civil_code="34020000", status="online")
    nvr_info = nvr_registered | gb_record(
        NVR, 0, 3, type="nvr", civil_code="34020000", status="online", name="一号录像机",
        manufacturer="Hikvision", model="DS-7808N",
    )  # fmt: skip
    first_events = [
        event(NVR, 0, "register", sip), event(NVR, 0, "online", {"reason": "registered"}),
        event(NVR, 2, "catalog", catalog),
        event(NVR, 10, "keepalive", {"status": "OK"}),
        # An alarm's type and position describe the alarm, not the camera.
        event(CAM_1, 20, "alarm", alarm),
        event("meter-9", 25, "online", {"sparkplug": "DBIRTH", "seq": 0}, source="sensors"),
        event(CAM_1, 40, "position", position | {"longitude": 117.23, "latitude": 31.82}),
    ]  # fmt: skip
    first_devices = [
        nvr_registered, *catalog_items(2, 2), nvr_info,
        device_row(
            "meter-9", 25, 25, type="meter", protocol="mqtt", district="Luyang",
            attributes='{"floor":"3","zone":"b"}',
        ),
    ]  # fmt: skip
    second_events = [
        *first_events[2:4],  # replayed
        # Late: older than the position already landed, so it must not win.
        event(CAM_1, 35, "position", position | {"longitude": 117.0, "latitude": 31.0}),
        event("meter-9", 85, "offline", {"sparkplug": "DDEATH"}, source="sensors"),
    ]
    second_devices = [
        first_devices[1],  # replayed
        # The meter's later report: a new district and zone, no type (a null
        # never overwrites), and a JSON null that keeps the floor.
        device_row(
            "meter-9", 25, 80, protocol="mqtt", district="Shushan", attributes='{"floor":null,"zone":"c"}'
        ),
        # Two sources describe the PLC at the same millisecond: the larger value wins.
        device_row("plc-3", 65, 65, protocol="modbus", name="PLC 3", model="S7-1200", status="online"),
        device_row("plc-3", 65, 65, protocol="modbus", name="PLC three", model="S7-1500", district="Yaohai"),
    ]  # fmt: skip
    third_events = [
        event(CAM_1, 95, "position", position | {"longitude": 117.24, "latitude": None}),
        event(NVR, 120, "unregister", {}), event(NVR, 120, "offline", {"reason": "unregistered"}),
        # From a source city.yaml does not name: the protocol it states counts.
        event("plc-4", 130, "register", {"protocol": "modbus", "name": "PLC 4"}, source="yard"),
    ]  # fmt: skip
    third_devices = [
        nvr_info | {"status": "offline", "last_seen": at_s(120)},
        # Says nothing of the status: the meter stays offline (its DDEATH at 85 s).
        device_row("meter-9", None, 90, name="Meter 9", attributes='{"room":"12"}'),
        # A source that gives no time at all: it loses to every timed row.
        device_row("plc-3", None, None, name="PLC untimed", manufacturer="Siemens"),
    ]  # fmt: skip
    return [
        [("devices", first_devices), ("device_events", first_events)],
        [("devices", second_devices), ("device_events", second_events)],
        [("devices", third_devices), ("device_events", third_events)],
    ]


def expected_from_events() -> list[Row]:
    """Worked out by hand: the partial row each device event becomes (the
    replayed catalog and keepalive twice)."""
    gb = {"protocol": "gb28181"}
    catalog = device_row(NVR, 2, 2, **gb)
    keepalive = device_row(NVR, 10, 10, **gb, status="online")
    return [
        device_row(NVR, 0, 0, **gb, status="online"),  # register: no address (its SIP contact)
        device_row(NVR, 0, 0, **gb, status="online"),
        catalog, catalog, keepalive, keepalive,
        device_row(CAM_1, 20, 20, **gb),  # the alarm's type and position are not the camera's
        device_row("meter-9", 25, 25, protocol="mqtt", status="online"),
        device_row(CAM_1, 40, 40, **gb, longitude=117.23, latitude=31.82),
        device_row(CAM_1, 35, 35, **gb, longitude=117.0, latitude=31.0),
        device_row("meter-9", 85, 85, protocol="mqtt", status="offline"),
        device_row(CAM_1, 95, 95, **gb, longitude=117.24),
        device_row(NVR, 120, 120, **gb, status="offline"),
        device_row(NVR, 120, 120, **gb, status="offline"),
        device_row("plc-4", 130, 130, protocol="modbus", name="PLC 4", status="online"),
    ]  # fmt: skip


def expected_device_rows() -> list[Row]:
    """The lake's `devices` rows: every landing row as it came, with its
    single time as `last_seen` where it gave only `first_seen` (none here
    does), and the rows from events."""
    reported = [row for files in device_files() for name, rows in files if name == "devices" for row in rows]
    # The meter's report with last_seen only: first_seen becomes the same time.
    untimed_first = [r | {"first_seen": r["last_seen"]} if r["first_seen"] is None else r for r in reported]
    return untimed_first + expected_from_events()


def expected_devices() -> list[Row]:
    """What the devices view must show, one row per device, worked out by hand
    with the merge rule (lake/README.md)."""
    return [
        device_row(
            NVR, 0, 120, protocol="gb28181", type="nvr", civil_code="34020000", name="一号录像机",
            manufacturer="Hikvision", model="DS-7808N", status="offline",
        ),
        device_row(
            # The catalog's coordinates until the position at 40 s; the late
            # one at 35 s loses to it, the one at 95 s brings a longitude only.
            CAM_1, 2, 95, protocol="gb28181", name="东门摄像机", type="ipc", manufacturer="Hikvision",
            model="DS-2CD", parent_id=NVR, civil_code="340200", address="人民路1号", longitude=117.24,
            latitude=31.82, status="online",
        ),
        device_row(
            CAM_2, 2, 2, protocol="gb28181", name="西门球机", type="ipc", manufacturer="Dahua", model="SD-6C",
            parent_id=NVR, civil_code="340200", address="解放路2号", longitude=117.2301, latitude=31.819,
            status="offline",
        ),
        device_row(
            "meter-9", 25, 90, protocol="mqtt", type="meter", district="Shushan", name="Meter 9",
            status="offline", attributes='{"floor":"3","room":"12","zone":"c"}',
        ),
        device_row(
            "plc-3", 65, 65, protocol="modbus", name="PLC three", model="S7-1500", district="Yaohai",
            status="online", manufacturer="Siemens",
        ),
        device_row("plc-4", 130, 130, protocol="modbus", name="PLC 4", status="online"),
    ]  # fmt: skip


def rejected(source: str, second: float, reason: str, raw: bytes | None) -> Row:
    return {"source": source, "received_at": T0 + int(second * 1000), "reason": reason, "raw": raw}


def event_files() -> list[list[tuple[str, list[Row]]]]:
    """Device events of every kind and rejects, in three landings."""
    files = device_files()
    first_rejects = [
        rejected("sensors", 1, "malformed JSON: expecting value at line 1", b"{temp: 15"),
        rejected("video", 3, "unregistered device: MESSAGE from 3402", b"MESSAGE sip:x SIP/2.0\r\n\r\n"),
        rejected("sensors", 4, "no payload", None),
    ]
    second_rejects = [
        first_rejects[0],  # replayed
        # The same reason and time from another source is another reject.
        rejected("yard", 1, "malformed JSON: expecting value at line 1", b"{temp: 15"),
    ]
    third_rejects = [rejected("sensors", 100, "topic does not match any template: a/b", b"\x00\xff")]
    rejects = [first_rejects, second_rejects, third_rejects]
    return [
        [
            ("device_events", [r for name, rows in landing if name == "device_events" for r in rows]),
            ("rejected", more),
        ]
        for landing, more in zip(files, rejects, strict=True)
    ]


def expected_events() -> list[Row]:
    """Lake `device_events`: each event once (the replayed catalog and keepalive dropped)."""
    events = [r for files in device_files() for name, rows in files if name == "device_events" for r in rows]
    assert len(events) == 7 + 4 + 4
    replayed = events[7:9]
    unique = events[:7] + events[9:]
    assert replayed == events[2:4] and len(unique) == 13
    return [r | {"date": "2025-11-25"} for r in unique]


def expected_rejected() -> list[Row]:
    first, second, third = (dict(landing)["rejected"] for landing in event_files())
    return [r | {"date": "2025-11-25"} for r in [*first, second[1], *third]]


# --- running jobs --------------------------------------------------------------

Landing = list[tuple[str, list[Row]]]


def inputs(job: str) -> list[Landing]:
    """What is landed for a job, in order: per landing, (table, rows) pairs."""
    if job == "alerts":
        return [[("readings", rows)] for rows in alert_files()]
    if job == "devices":
        return device_files()
    if job == "events":
        return event_files()
    return [[("readings", rows)] for rows in landing_files()]


def sentinel(job: str) -> list[Landing]:
    """A reading far ahead, for the jobs with event-time windows: in a live
    stream, newer data is what moves the watermark past the last windows. It
    is left out of the comparison. The devices and events jobs hold no
    windows: what they read is written at the next checkpoint."""
    if job in ("devices", "events"):
        return []
    return [[("readings", [reading(SENTINEL, T0 + 2 * HOUR, 0.0)])]]


def config_for(data_dir: Path, rules: list[AlertRule] | None = None) -> CityConfig:
    flink = FlinkConfig(allowed_lateness_s=60, checkpoint_interval_s=1, monitor_interval_s=0.3)
    pipelines = PipelinesConfig(flink=flink, alerts=RULES if rules is None else rules)
    return CityConfig(site="x", data_dir=data_dir, sources=SOURCES, pipelines=pipelines)


def land(data_dir: Path, rows: list[Row], table_name: str = "readings") -> None:
    land_together(data_dir, [(table_name, rows)])


def land_together(data_dir: Path, landing: Landing) -> None:
    """One ingest commit: every table's file appears at once."""
    batches = []
    for table_name, rows in landing:
        batcher = ColumnBatcher(table(table_name))
        for row in rows:
            batcher.append(row)
        batch, bad = batcher.take()
        assert not bad, bad
        batches.append((table(table_name), batch))
    LandingWriter(DataLayout(data_dir)).commit(batches)


def epoch_ms(value: Any) -> Any:
    if not isinstance(value, datetime):
        return value
    if value.tzinfo is None:  # INT64 timestamps without the UTC flag: still UTC
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def plain(row: Row) -> Row:
    """Instants as epoch ms and dates as text, so rows compare with hand-written ones."""
    return {k: str(v) if k == "date" else epoch_ms(v) for k, v in row.items()}


def ordered(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: tuple(str(v) for v in r.values()))


def lake_rows(data_dir: Path, name: str) -> list[Row]:
    """Committed lake rows (Flink's in-progress files start with a dot), sentinel excluded."""
    files = [str(p) for p in (data_dir / "lake" / name).rglob("part-*")]
    if not files:
        return []
    dataset = ds.dataset(files, format="parquet", partitioning=ds.partitioning(flavor="hive"))
    rows = [r for r in dataset.to_table().to_pylist() if r.get("device_id") != SENTINEL]
    return ordered(rows)


def view_rows(data_dir: Path, name: str) -> list[Row]:
    """What analysts see: the lake's public view of the table, sentinel excluded."""
    lake = Lake(DataLayout(data_dir))
    try:
        cursor = lake.cursor()
        cursor.execute(f'SELECT * FROM "{name}"')
        columns = [d[0] for d in cursor.description]
        rows = [plain(dict(zip(columns, values, strict=True))) for values in cursor.fetchall()]
        return ordered([r for r in rows if r.get("device_id") != SENTINEL])
    finally:
        lake.close()


def run_batch(data_dir: Path, job: str) -> None:
    for landing in [*inputs(job), *sentinel(job)]:
        land_together(data_dir, landing)
    runner.start(config_for(data_dir), job, "batch").wait()


def run_streaming(data_dir: Path, job: str, expected: dict[str, int]) -> None:
    """The continuous job, fed file by file as ingest would, until the lake
    holds ``expected`` rows per table; then cancelled."""
    data_dir.mkdir(parents=True, exist_ok=True)
    result = runner.start(config_for(data_dir), job, "streaming")
    client = result.get_job_client()
    counts: dict[str, int] = {}
    try:
        landings = [*inputs(job), *sentinel(job)]
        for i, landing in enumerate(landings):
            land_together(data_dir, landing)
            # Picked up before the next file lands: files found in the same
            # directory scan are not read in a guaranteed order, and a jump of
            # two hours read first would make the rest late (live data never
            # jumps like that; the sentinel does). After the last file there
            # is nothing left to come out of order.
            if i < len(landings) - 1:
                time.sleep(2.0)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            counts = {name: len(lake_rows(data_dir, name)) for name in expected}
            if counts == expected:
                return
            time.sleep(0.5)
        raise AssertionError(f"streaming {job}: lake holds {counts}, expected {expected}")
    finally:
        client.cancel().result()


def check_alerts(data_dir: Path) -> None:
    assert ordered([plain(r) for r in lake_rows(data_dir, "alerts")]) == ordered(expected_alerts())
    assert view_rows(data_dir, "alerts") == ordered(one_per_alert(expected_alerts()))


def check_devices(data_dir: Path) -> None:
    assert ordered([plain(r) for r in lake_rows(data_dir, "devices")]) == ordered(expected_device_rows())
    assert view_rows(data_dir, "devices") == ordered(expected_devices())


def check_events(data_dir: Path) -> None:
    for name, expected in (("device_events", expected_events()), ("rejected", expected_rejected())):
        assert ordered([plain(r) for r in lake_rows(data_dir, name)]) == ordered(expected), name
        # `citylake sql` and the services see them through the lake's views.
        assert view_rows(data_dir, name) == ordered(expected), name


# Jobs whose output is also held to rows worked out by hand (in both modes:
# the streaming run is compared with the batch run).
HAND_CHECKED: dict[str, Callable[[Path], None]] = {
    "alerts": check_alerts,
    "devices": check_devices,
    "events": check_events,
}


@pytest.mark.parametrize(("job", "tables"), JOBS)
def test_batch_and_streaming_write_the_same_lake(tmp_path: Path, job: str, tables: list[str]) -> None:
    run_batch(tmp_path / "batch", job)
    expected = {name: lake_rows(tmp_path / "batch", name) for name in tables}
    assert all(expected.values()), f"{job}: batch wrote nothing"
    if job in HAND_CHECKED:
        HAND_CHECKED[job](tmp_path / "batch")
    run_streaming(tmp_path / "streaming", job, {name: len(rows) for name, rows in expected.items()})
    for name in tables:
        assert lake_rows(tmp_path / "streaming", name) == expected[name], f"{job}: {name} differs"


def test_readings_are_deduplicated_and_late_ones_kept(tmp_path: Path) -> None:
    run_batch(tmp_path, "readings")
    rows = lake_rows(tmp_path, "readings")
    keys = [(r["device_id"], r["metric"], r["ts"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert len(rows) == 3 * 12 + 1 + 2 + 10
    assert {r["text"] for r in rows if r["metric"] == "state"} == {"open"}


def window_ms(row: Row) -> int:
    return int(epoch_ms(row["window_start"]))


def test_rollups_match_a_python_reference(tmp_path: Path) -> None:
    run_batch(tmp_path, "rollups")
    unique = {
        (r["device_id"], r["ts"]): r["value"]
        for rows in landing_files()
        for r in rows
        if r["value"] is not None
    }
    for name, size in (("readings_1m", 60_000), ("readings_1h", HOUR)):
        windows: dict[tuple[str, int], list[tuple[int, float]]] = defaultdict(list)
        for (device, ts), value in unique.items():
            windows[(device, ts - ts % size)].append((ts, value))
        got = {(r["device_id"], window_ms(r)): r for r in lake_rows(tmp_path, name)}
        assert set(got) == set(windows), name
        for key, values in windows.items():
            row = got[key]
            assert row["count"] == len(values)
            assert row["min"] == min(v for _, v in values)
            assert row["max"] == max(v for _, v in values)
            assert row["avg"] == pytest.approx(sum(v for _, v in values) / len(values))
            assert row["last"] == max(values)[1]


def test_batch_backfill_of_a_range(tmp_path: Path) -> None:
    """`pipeline run --mode batch --from --to`: only readings in [from, to) are processed."""
    for rows in landing_files():
        land(tmp_path, rows)
    start = datetime.fromtimestamp((T0 + 30_000) / 1000, tz=UTC)
    end = datetime.fromtimestamp((T0 + 60_000) / 1000, tz=UTC)
    runner.start(config_for(tmp_path), "readings", "batch", time_range=(start, end)).wait()
    rows = lake_rows(tmp_path, "readings")
    assert rows and all(start <= r["ts"].replace(tzinfo=UTC) < end for r in rows)
    assert len(rows) == 3 * 3  # three pumps, readings at +30, +40 and +50 s


def test_a_hostile_rule_is_data_not_sql(tmp_path: Path) -> None:
    """Quotes, comment markers, a statement separator, a newline and non-ASCII
    text in a rule's free-text settings reach the lake unchanged and select
    exactly the readings they name."""
    metric = "o'clock -- temp; DROP TABLE alerts; --"
    prefix = "Kessel'ß--"
    message = "it's \"hot\" -- réchauffé 🔥\n' OR '1'='1"
    rule = AlertRule(name="odd", metric=metric, above=50, device_prefix=prefix, message=message)
    # And a rule with every optional setting left out (nulls among its keys).
    bare = AlertRule(name="bare", metric="temp", below=0)
    rows = [
        measured(f"{prefix}1", metric, 0, 60.0),
        measured("Kessel-2", metric, 0, 60.0),  # not the prefix
        measured(f"{prefix}1", "temp", 1, 60.0),  # not the metric
        measured("Kessel-2", "temp", 2, -1.0),
    ]
    land(tmp_path, rows)
    runner.start(config_for(tmp_path, [rule, bare]), "alerts", "batch").wait()
    got = ordered([plain(r) for r in lake_rows(tmp_path, "alerts")])
    expected = [alert_row(rule, f"{prefix}1", 0, None, 60.0), alert_row(bare, "Kessel-2", 2, None, -1.0)]
    assert got == ordered(expected)


# --- the merge rule (lake/README.md), case by case, through the real job ------


@pytest.fixture(scope="module")
def merged_devices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Row]:
    """The devices view after a batch run of the devices job over device_files()."""
    data_dir = tmp_path_factory.mktemp("merge")
    run_batch(data_dir, "devices")
    return {r["device_id"]: r for r in view_rows(data_dir, "devices")}


def test_merge_two_sources_disagreeing_at_different_times(merged_devices: dict[str, Row]) -> None:
    # The meter's district: Luyang at 25 s, Shushan at 80 s. The camera's
    # longitude: the catalog's at 2 s, positions at 35, 40 and 95 s (35 s
    # landed after 40 s and loses to it).
    assert merged_devices["meter-9"]["district"] == "Shushan"
    assert (merged_devices[CAM_1]["longitude"], merged_devices[CAM_1]["latitude"]) == (117.24, 31.82)


def test_merge_equal_times_take_the_larger_value(merged_devices: dict[str, Row]) -> None:
    plc = merged_devices["plc-3"]
    # "PLC three" > "PLC 3" and "S7-1500" > "S7-1200"; the status and the
    # district come from the one row at 65 s that has them.
    assert (plc["name"], plc["model"], plc["status"], plc["district"]) == (
        "PLC three",
        "S7-1500",
        "online",
        "Yaohai",
    )


def test_merge_a_null_never_overwrites_a_value(merged_devices: dict[str, Row]) -> None:
    meter = merged_devices["meter-9"]
    # Its later reports carry no type, and a JSON null for the floor.
    assert meter["type"] == "meter"
    assert orjson.loads(meter["attributes"]) == {"floor": "3", "room": "12", "zone": "c"}
    # The position at 95 s had no latitude; the row without any time named
    # the PLC's manufacturer, which no timed row did.
    assert merged_devices[CAM_1]["latitude"] == 31.82
    assert merged_devices["plc-3"]["manufacturer"] == "Siemens"


def test_merge_status_comes_from_the_latest_status_bearing_event(merged_devices: dict[str, Row]) -> None:
    # The meter's DDEATH at 85 s, then a report at 90 s saying nothing of its
    # status; the NVR unregistered at 120 s; the camera's catalog status
    # stands through its alarm and positions (not status-bearing).
    assert merged_devices["meter-9"]["status"] == "offline"
    assert merged_devices[NVR]["status"] == "offline"
    assert merged_devices[CAM_1]["status"] == "online"


def test_a_devices_backfill_selects_landing_devices_rows_by_their_time(tmp_path: Path) -> None:
    """Landing `devices` has no date partitions: a range takes the rows whose
    last_seen (or first_seen) is in [from, to), and the events in it."""
    for landing in device_files():
        land_together(tmp_path, landing)
    start = datetime.fromtimestamp((T0 + 60_000) / 1000, tz=UTC)
    end = datetime.fromtimestamp((T0 + 100_000) / 1000, tz=UTC)
    runner.start(config_for(tmp_path), "devices", "batch", time_range=(start, end)).wait()
    got = sorted((r["device_id"], epoch_ms(r["last_seen"]) - T0) for r in lake_rows(tmp_path, "devices"))
    # Reported: the meter at 80 s and 90 s, the PLC twice at 65 s (not its
    # untimed row); events: the meter's DDEATH at 85 s, a position at 95 s.
    assert got == sorted(
        [("meter-9", 80_000), ("meter-9", 90_000), ("plc-3", 65_000), ("plc-3", 65_000),
         ("meter-9", 85_000), (CAM_1, 95_000)]
    )  # fmt: skip


ALL_TABLES = [name for _, tables in JOBS for name in tables]


def combined_inputs() -> list[Landing]:
    """Readings (the alert cases) and every kind of event and reject, landed
    side by side as a site's ingest lands them."""
    return [*inputs("alerts"), *inputs("events"), *sentinel("alerts")]


def run_combined_batch(data_dir: Path, all_jobs: JobSet) -> dict[str, list[Row]]:
    """Every job in one batch Flink job over combined_inputs(), held to the
    hand-worked alerts and events; returns the lake's rows per table."""
    for landing in combined_inputs():
        land_together(data_dir, landing)
    runner.start(config_for(data_dir), all_jobs, "batch").wait()
    check_alerts(data_dir)
    check_events(data_dir)
    expected = {name: lake_rows(data_dir, name) for name in ALL_TABLES}
    assert all(expected[name] for name in ("readings", "readings_1m", "readings_1h", "devices"))
    return expected


def test_all_jobs_as_one_batch_flink_job_write_the_hand_worked_rows(tmp_path: Path) -> None:
    """`make test`'s part of the proof below: the combined batch job (one
    landing scan and dedupe for all) writes every table, the hand-worked
    alerts and events among them."""
    run_combined_batch(tmp_path, JobSet.of([name for name, _ in JOBS]))


@pytest.mark.long
def test_all_jobs_as_one_flink_job_write_what_the_jobs_write(tmp_path: Path) -> None:
    """Every job in ONE Flink job (how `citylake run` runs a site's jobs): the
    shared landing scan and dedupe change nothing in any table, batch and
    streaming agree, and the hand-worked alerts and events come out."""
    all_jobs = JobSet.of([name for name, _ in JOBS])
    batch, streaming = tmp_path / "batch", tmp_path / "streaming"
    expected = run_combined_batch(batch, all_jobs)

    streaming.mkdir()
    result = runner.start(config_for(streaming), all_jobs, "streaming")
    client = result.get_job_client()
    assert client is not None
    first, *rest = combined_inputs()
    sentinel_file = rest.pop()
    row_for_row = ("readings", "device_events", "rejected")
    try:
        # The job is reading once the first file is in the lake; files found
        # by one directory scan are read in no set order, and the sentinel two
        # hours ahead must come after the rest (a job slow to start on a
        # loaded machine would otherwise find them all at once).
        land_together(streaming, first)
        wait_for_rows(streaming, {"readings": 1}, exact=False)
        for landing in rest:
            land_together(streaming, landing)
            time.sleep(2.0)
        wait_for_rows(streaming, {name: len(expected[name]) for name in row_for_row})
        land_together(streaming, sentinel_file)
        wait_for_rows(streaming, {name: len(rows) for name, rows in expected.items()})
    finally:
        client.cancel().result()
    for name in ALL_TABLES:
        assert rounded_avg(lake_rows(streaming, name)) == rounded_avg(expected[name]), name


def rounded_avg(rows: list[Row]) -> list[Row]:
    """A window's ``avg`` sums in arrival order when streaming and in sort
    order in batch: equal up to float rounding (1e-12 relative), no closer."""
    return [{**r, "avg": float(f"{r['avg']:.12g}")} if "avg" in r else r for r in rows]


def wait_for_rows(data_dir: Path, want: dict[str, int], timeout_s: float = 120, exact: bool = True) -> None:
    """Until the lake holds ``want`` rows per table (at least that many when
    not ``exact``)."""
    counts: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = {name: len(lake_rows(data_dir, name)) for name in want}
        if all(counts[name] >= n for name, n in want.items()):
            break
        time.sleep(0.5)
    if exact:
        assert counts == want
    else:
        assert all(counts[name] >= n for name, n in want.items()), counts


def test_a_combined_run_refuses_state_of_another_job_set(tmp_path: Path) -> None:
    """Flink maps operator state by the whole plan: resuming a changed set
    must fail before Flink starts, saying which sets and what to do."""
    config = config_for(tmp_path)
    runner.record_job_set(config, JobSet.of(["readings", "rollups"]))
    with pytest.raises(runner.JobSetChanged, match=r"readings, rollups, not readings, rollups, alerts"):
        runner.prepare_state(config, JobSet.of(["readings", "rollups", "alerts"]), fresh=False)
    # --fresh keeps the old state aside and starts over.
    runner.prepare_state(config, JobSet.of(["readings", "rollups", "alerts"]), fresh=True)
    assert list(DataLayout(tmp_path).checkpoints.glob("combined.before-*/job-set.json"))
    assert not runner.job_set_file(config, "combined").exists()
