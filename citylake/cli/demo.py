"""``citylake demo``: the whole system on one machine with simulated devices.

mosquitto, ingest, the PyFlink ``readings`` job on the local mini-cluster, the
query service beside a real daprd, and simulated MQTT sensors, all on free
local ports under ``<data_dir>/demo``. Ctrl-C stops everything.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.panel import Panel
from rich.status import Status
from ruamel.yaml import YAML

from citylake.cli.common import DEFAULT_CONFIG, ConfigOption, console, fail, load, setup_logging
from citylake.devstack import ComponentUnavailable, ManagedProcess, free_port, start_daprd, start_mosquitto, start_service
from citylake.ingest.mqtt.simulator import Manifest, device_topic, run_simulator
from citylake.lake import Lake
from citylake.schemas import DataLayout


def _demo_config(source: Path, workdir: Path, mqtt_url: str) -> Path:
    """The operator's city.yaml with the demo's broker and a fresh data_dir."""
    yaml = YAML()
    document = yaml.load(source.read_text())
    document["data_dir"] = str(workdir / "data")
    for item in document.get("sources") or []:
        if item.get("type") == "mqtt":
            item["url"] = mqtt_url
    path = workdir / "city.yaml"
    with open(path, "w") as handle:
        yaml.dump(document, handle)
    return path


def demo(
    config: ConfigOption = DEFAULT_CONFIG,
    devices: Annotated[int, typer.Option(min=1, help="simulated MQTT sensors")] = 50,
    rate: Annotated[float, typer.Option(min=0.1, help="messages per sensor per second")] = 1.0,
    duration: Annotated[float, typer.Option(min=0, help="seconds to run after the first result; 0 = until Ctrl-C")] = 0,
) -> None:
    """Run the whole pipeline locally and show where to look."""
    setup_logging()
    loaded = load(config)
    workdir = loaded.config.data_dir / "demo"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    processes: list[ManagedProcess] = []
    stop_simulator = threading.Event()
    try:
        with Status("starting mosquitto", console=console) as status:
            broker = start_mosquitto(workdir / "mosquitto")
            processes.append(broker.process)
            config_path = _demo_config(config.resolve(), workdir, broker.url)
            python = [sys.executable, "-m", "citylake"]

            status.update("starting ingest")
            metrics_port = free_port()
            ingest = ManagedProcess(
                "ingest", [*python, "ingest", "--config", str(config_path), "--metrics-port", str(metrics_port)],
                workdir / "ingest.log",
            ).start()
            processes.append(ingest)
            ingest.wait_port(metrics_port, 30)

            status.update("starting the PyFlink readings job (Flink mini-cluster)")
            flink = ManagedProcess(
                "flink-readings",
                [*python, "pipeline", "run", "readings", "--mode", "streaming", "--config", str(config_path)],
                workdir / "pipeline-readings.log",
            ).start()
            processes.append(flink)

            status.update("starting the query service and its Dapr sidecar")
            query_port = free_port()
            processes.append(start_service("query", config_path, query_port, workdir))
            sidecar = start_daprd("query", query_port, workdir / "dapr", broker.url)
            processes.append(sidecar.process)

            status.update(f"starting {devices} simulated MQTT sensors at {rate} Hz")
            manifest = Manifest()

            def simulate() -> None:
                while not stop_simulator.is_set():
                    sent = run_simulator(broker.url, devices, rate, 5.0, qos=1)
                    manifest.messages += sent.messages
                    manifest.readings += sent.readings

            threading.Thread(target=simulate, daemon=True, name="simulator").start()

            lake = Lake(DataLayout(Path(YAML().load(config_path.read_text())["data_dir"])))
            started = time.monotonic()
            rows = 0
            while rows == 0:
                if not flink.alive():
                    fail(f"the Flink job stopped; see {flink.log_path}:\n{flink.log_tail(2000)}")
                rows = lake.cursor().execute("SELECT count(*) FROM readings").fetchone()[0]  # type: ignore[index]
                status.update(
                    f"waiting for the first lake commit ({time.monotonic() - started:.0f}s; "
                    f"{manifest.readings} readings sent so far)"
                )
                time.sleep(1)
        device_id, _ = device_topic(0)
        latest = httpx.get(sidecar.invoke_url("query", f"v1/devices/{device_id}/latest"), timeout=10)
        console.print(
            Panel.fit(
                f"[bold]citylake is running[/] ({rows} readings in the lake after {time.monotonic() - started:.0f}s)\n\n"
                f"query service    http://127.0.0.1:{query_port}/docs\n"
                f"through Dapr     {sidecar.invoke_url('query', f'v1/devices/{device_id}/latest')}\n"
                f"ingest metrics   http://127.0.0.1:{metrics_port}/metrics\n"
                f"MQTT broker      {broker.url}  (topics city/+/+/+/telemetry)\n"
                f"logs             {workdir}\n\n"
                f"try:\n"
                f"  citylake sql --config {config_path} \"SELECT device_id, metric, count(*) n, avg(value) FROM readings GROUP BY ALL ORDER BY n DESC LIMIT 10\"\n"
                f"  curl -s {sidecar.invoke_url('query', f'v1/devices/{device_id}/latest')}\n\n"
                f"latest of {device_id} through Dapr: {latest.status_code} {latest.text[:300]}",
                title="citylake demo",
            )
        )
        lake.close()
        deadline = time.monotonic() + duration if duration else None
        console.print("Ctrl-C stops the demo" + (f" (or it ends in {duration:.0f}s)" if duration else ""))
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)
            for process in processes:
                if not process.alive():
                    fail(f"{process.name} stopped unexpectedly; see {process.log_path}")
    except ComponentUnavailable as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        stop_simulator.set()
        for process in reversed(processes):
            process.stop()
