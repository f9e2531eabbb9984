"""PyFlink's gateway JVM gone (killed here, as a machine under load or a stray
signal may do it) and a job planned again in the same process: citylake
starts a new gateway instead of failing with "Answer from Java side is empty"
for the rest of the process's life."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from py4j.finalizer import ThreadSafeFinalizer
from pyflink import java_gateway

from citylake.config import load_config
from citylake.ingest.batcher import ColumnBatcher
from citylake.ingest.landing import LandingWriter
from citylake.lake import Lake
from citylake.pipelines import runner
from citylake.schemas import DataLayout, table

pytestmark = pytest.mark.integration
T0 = 1_764_072_000_000


def land(layout: DataLayout, first: int, count: int) -> None:
    batcher = ColumnBatcher(table("readings"))
    for n in range(first, first + count):
        batcher.append({
            "device_id": "meter-1", "ts": T0 + n * 1000, "metric": "kwh", "value": float(n), "text": None,
            "unit": "kWh", "quality": 0, "source": "modbus", "site": "s", "ingest_ts": T0,
        })  # fmt: skip
    batch, bad = batcher.take()
    assert not bad
    LandingWriter(layout).write(table("readings"), batch)


def lake_count(layout: DataLayout) -> int:
    lake = Lake(layout)
    try:
        row = lake.cursor().execute("SELECT count(*) FROM readings").fetchone()
    finally:
        lake.close()
    return int(row[0]) if row else 0


def gateway_jvms() -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process().children(recursive=True)
        if any("PythonGatewayServer" in part for part in p.cmdline())
    ]


def test_a_job_after_the_gateway_jvm_died_starts_a_new_one(city_config: Callable[..., Path]) -> None:
    config = load_config(city_config(pipelines={"flink": {"parallelism": 1}})).config
    layout = DataLayout(config.data_dir)
    land(layout, 0, 10)
    runner.run(config, "readings", "batch")
    assert lake_count(layout) == 10
    jvms = gateway_jvms()
    assert jvms, "no gateway JVM under this process"
    dead = java_gateway._gateway
    assert dead is not None
    dead_prefix = f"{dead._gateway_client.address}{dead._gateway_client.port}o"
    assert any(str(k).startswith(dead_prefix) for k in ThreadSafeFinalizer.finalizers)
    for jvm in jvms:
        jvm.send_signal(signal.SIGKILL)
    psutil.wait_procs(jvms, timeout=30)

    land(layout, 10, 5)
    runner.run(config, "readings", "batch", fresh=True)
    # The second run read every landed file again (a batch run reads all);
    # the lake's view keeps each reading key once (the conflict rule).
    assert lake_count(layout) == 15
    assert gateway_jvms(), "a new gateway JVM runs the second job"
    # The dead JVM's proxies were let go: none will call it when collected.
    assert not [k for k in ThreadSafeFinalizer.finalizers if str(k).startswith(dead_prefix)]
