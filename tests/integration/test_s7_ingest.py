"""S7 adapter against python-snap7's own server in its own process (the
``citylake simulate s7`` PLC): typed tags land with their exact values, a
value an engineering station writes is read on the next poll, a missing DB
gives bad rows and a counted reject, and a stopped PLC goes offline."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from snap7.async_client import AsyncClient
from snap7.util import set_real

from citylake.config import load_config
from citylake.ingest import registry
from citylake.ingest.base import SourceUnavailable
from citylake.ingest.registry import build_sources
from citylake.ingest.runner import IngestRunner
from citylake.ingest.s7.adapter import S7Source
from citylake.ingest.s7.config import S7SourceConfig
from citylake.schemas import DataLayout
from citylake_devstack import ComponentUnavailable
from citylake_devstack.process import ManagedProcess, free_port
from citylake_devstack.simulators.s7 import start_s7_plc
from tests.landing_rows import landed
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def plc(tmp_path: Path) -> Iterator[tuple[ManagedProcess, str]]:
    try:
        process, url = start_s7_plc(tmp_path / "plc")
    except ComponentUnavailable as exc:
        pytest.fail(f"could not start the S7 PLC: {exc}", pytrace=False)
    yield process, url
    process.stop()


@pytest.fixture(autouse=True)
def s7_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    # As for bacnet: the shared venv's metadata predates pyproject's new line
    # (tests/unit/test_s7_codec.py checks it names S7Source).
    if "s7" not in registry.adapter_types():
        original = registry.adapter_class
        monkeypatch.setattr(
            registry, "adapter_class", lambda name: S7Source if name == "s7" else original(name)
        )


def metric_rows(layout: DataLayout, metric: str) -> list[dict[str, Any]]:
    return sorted((r for r in landed(layout, "readings") if r["metric"] == metric), key=lambda r: r["ts"])


def s7_source(url: str, **extra: object) -> dict[str, object]:
    return {
        "name": "pumps",
        "type": "s7",
        "url": url,
        "device_id": "pump-east-2",
        "interval_s": 0.2,
        "timeout_s": 1,
        "tags": [
            {"address": "DB1.DBD0", "type": "REAL", "metric": "pressure", "unit": "bar"},
            {"address": "DB1.DBW4", "type": "INT", "metric": "motor_temp", "unit": "degC", "scale": 0.1},
            {"address": "DB1.DBD6", "type": "DINT", "metric": "run_hours", "unit": "h"},
            {"address": "DB1.DBX10.3", "type": "BOOL", "metric": "running"},
            {"address": "MW20", "type": "WORD", "metric": "alarm_word"},
            {"address": "M2.1", "type": "BOOL", "metric": "remote_mode"},
            {"address": "DB7.DBD0", "type": "REAL", "metric": "missing_db"},
        ],
        "metadata": {"name": "East pump station 2", "device_type": "pump"},
        **extra,
    }


async def test_typed_tags_writes_missing_db_and_offline(
    plc: tuple[ManagedProcess, str], city_config: Callable[..., Path]
) -> None:
    process, url = plc
    await S7Source(S7SourceConfig.model_validate(s7_source(url))).check()
    loaded = load_config(city_config(sources=[s7_source(url)]))
    layout = DataLayout(loaded.config.data_dir)
    runner = IngestRunner(build_sources(loaded), layout, loaded.config.site)
    source = runner.sources[0]
    assert isinstance(source, S7Source)
    assert source.poller.spans[0].size == 11  # DB1 bytes 0..10 in one read
    await runner.start()
    station = AsyncClient()
    try:
        await wait_until(lambda: len(metric_rows(layout, "running")) >= 2, 15)
        # An engineering station writes a new pressure into DB1.
        await station.connect("127.0.0.1", 0, 1, int(url.rsplit(":", 1)[1]))
        block = bytearray(4)
        set_real(block, 0, 5.5)
        await station.db_write(1, 0, block)
        await station.disconnect()
        await wait_until(lambda: 5.5 in {r["value"] for r in metric_rows(layout, "pressure")}, 15)
        process.stop()
        await wait_until(lambda: not source.is_up(), 10)
        await asyncio.sleep(0.6)  # past a flush
    finally:
        await runner.stop()

    first = {m: metric_rows(layout, m)[0] for m in ("pressure", "motor_temp", "run_hours", "running")}
    assert [(first[m]["value"], first[m]["quality"]) for m in first] == [
        (4.25, 0),
        (41.5, 0),
        (123456.0, 0),
        (1.0, 0),
    ]
    assert first["pressure"]["unit"] == "bar" and first["motor_temp"]["unit"] == "degC"
    assert metric_rows(layout, "alarm_word")[0]["value"] == 0.0
    assert metric_rows(layout, "remote_mode")[0]["value"] == 1.0
    # The missing DB: bad rows without a value, and a reject with the PLC's reason.
    missing = metric_rows(layout, "missing_db")
    assert missing and all(r["quality"] == 2 and r["value"] is None for r in missing)
    reasons = [r["reason"] for r in landed(layout, "rejected")]
    assert any(r.startswith("s7 read refused: DB7 bytes 0..3") for r in reasons)
    assert any(r.startswith("s7 no connection") for r in reasons)  # after the PLC stopped
    # After the stop every tag is bad.
    assert metric_rows(layout, "pressure")[-1]["quality"] == 2
    assert {r["device_id"] for r in landed(layout, "readings")} == {"pump-east-2"}
    events = sorted(landed(layout, "device_events"), key=lambda e: e["ts"])
    assert [e["kind"] for e in events] == ["online", "offline"]
    assert json.loads(events[0]["attributes"])["plc"] == url
    (device,) = landed(layout, "devices")
    assert (device["device_id"], device["protocol"], device["name"]) == (
        "pump-east-2",
        "s7",
        "East pump station 2",
    )


async def test_check_names_the_plc() -> None:
    nobody = f"s7://127.0.0.1:{free_port()}"
    with pytest.raises(SourceUnavailable, match=f"cannot connect to {nobody} \\(rack 0, slot 1\\)"):
        await S7Source(S7SourceConfig.model_validate(s7_source(nobody))).check()
