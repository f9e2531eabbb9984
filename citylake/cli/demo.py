"""``citylake demo``: the whole system on one machine with simulated devices.

mosquitto, ingest, the PyFlink ``readings`` job on the local mini-cluster, the
query service beside a real daprd, and simulated MQTT sensors, all on free
local ports under ``<data_dir>/demo``. Ctrl-C stops everything.
"""

from __future__ import annotations

import shutil
import threading
import time
from typing import Annotated

import httpx
import typer
from rich.status import Status

from citylake.cli.common import DEFAULT_CONFIG, ConfigOption, console, fail, load, setup_logging
from citylake.devstack import ComponentUnavailable
from citylake.devstack.stack import LocalStack
from citylake.ingest.mqtt.simulator import device_topic, run_simulator
from citylake.lake import Lake
from citylake.schemas import DataLayout


def _simulate(url: str, devices: int, rate: float, stop: threading.Event, sent: list[int]) -> None:
    while not stop.is_set():
        sent.append(run_simulator(url, devices, rate, 5.0, qos=1).readings)


def _wait_for_first_rows(stack: LocalStack, sent: list[int], status: Status) -> int:
    assert stack.data_dir is not None
    lake = Lake(DataLayout(stack.data_dir))
    started = time.monotonic()
    try:
        while True:
            if stack.dead():
                dead = stack.dead()[0]
                fail(f"{dead.name} stopped; see {dead.log_path}:\n{dead.log_tail(2000)}")
            row = lake.cursor().execute("SELECT count(*) FROM readings").fetchone()
            if row and row[0]:
                return int(row[0])
            status.update(
                f"waiting for the first lake commit ({time.monotonic() - started:.0f}s; "
                f"{sum(sent)} readings sent so far)"
            )
            time.sleep(1)
    finally:
        lake.close()


def _show(stack: LocalStack, rows: int) -> None:
    assert stack.sidecar is not None and stack.broker is not None
    device_id, _ = device_topic(0)
    via_dapr = stack.sidecar.invoke_url("query", f"v1/devices/{device_id}/latest")
    latest = httpx.get(via_dapr, timeout=10)
    lines = [
        f"[bold green]citylake is running[/]: {rows} readings in the lake",
        f"  query service   http://127.0.0.1:{stack.query_port}/docs",
        f"  through Dapr    {via_dapr}",
        f"  ingest metrics  http://127.0.0.1:{stack.ingest_metrics_port}/metrics",
        f"  MQTT broker     {stack.broker.url}  (topics city/+/+/+/telemetry)",
        f"  logs            {stack.workdir}",
        "try:",
        f"  citylake sql --config {stack.config_path} "
        '"SELECT device_id, metric, count(*) AS n, avg(value) FROM readings '
        'GROUP BY ALL ORDER BY n DESC LIMIT 10"',
        f"  curl -s {via_dapr}",
        f"latest of {device_id} through Dapr: {latest.status_code} {latest.text[:400]}",
    ]
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)


def demo(
    config: ConfigOption = DEFAULT_CONFIG,
    devices: Annotated[int, typer.Option(min=1, help="simulated MQTT sensors")] = 50,
    rate: Annotated[float, typer.Option(min=0.1, help="messages per sensor per second")] = 1.0,
    duration: Annotated[
        float, typer.Option(min=0, help="seconds to run after the first result; 0 = until Ctrl-C")
    ] = 0,
) -> None:
    """Run the whole pipeline locally and show where to look."""
    setup_logging()
    loaded = load(config)
    workdir = loaded.config.data_dir / "demo"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    stack = LocalStack(config.resolve(), workdir)
    stop_simulator = threading.Event()
    sent: list[int] = []
    try:
        with Status("starting", console=console) as status:
            stack.start(status.update)
            assert stack.broker is not None
            status.update(f"starting {devices} simulated MQTT sensors at {rate} Hz")
            threading.Thread(
                target=_simulate, args=(stack.broker.url, devices, rate, stop_simulator, sent), daemon=True
            ).start()
            rows = _wait_for_first_rows(stack, sent, status)
        _show(stack, rows)
        console.print("Ctrl-C stops the demo" + (f" (or it ends in {duration:.0f}s)" if duration else ""))
        deadline = time.monotonic() + duration if duration else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)
            if stack.dead():
                fail(f"{stack.dead()[0].name} stopped unexpectedly; see {stack.dead()[0].log_path}")
    except ComponentUnavailable as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        stop_simulator.set()
        stack.stop()
