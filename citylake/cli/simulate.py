"""``citylake simulate``: simulated devices for demos, tests and benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from citylake.cli.common import console, not_implemented

app = typer.Typer(help="Simulated devices speaking real protocols.", no_args_is_help=True)


@app.command()
def mqtt(
    url: Annotated[str, typer.Option(help="broker, e.g. mqtt://127.0.0.1:1883")] = "mqtt://127.0.0.1:1883",
    devices: Annotated[int, typer.Option(min=1, help="number of simulated sensors")] = 10,
    rate: Annotated[float, typer.Option(min=0.0, help="messages per device per second")] = 1.0,
    duration: Annotated[float, typer.Option(min=0.0, help="seconds to run")] = 10.0,
    qos: Annotated[int, typer.Option(min=0, max=1)] = 1,
    manifest: Annotated[
        Path | None, typer.Option(help="write what the broker acknowledged (counts, sums, every key) here")
    ] = None,
) -> None:
    """Publish JSON telemetry on city/{district}/{type}/{device_id}/telemetry."""
    from citylake.ingest.mqtt.simulator import run_simulator

    result = run_simulator(url, devices, rate, duration, qos=qos, record_keys=manifest is not None)
    if manifest is not None:
        result.write(manifest)
    console.print(f"sent {result.messages} messages, {result.readings} readings to {url}")


@app.command()
def modbus() -> None:
    """Simulated Modbus meters and pump stations (pymodbus servers)."""
    not_implemented("simulate modbus", 3)


@app.command()
def gb28181() -> None:
    """Simulated GB28181 cameras and NVRs (SIPp scenarios)."""
    not_implemented("simulate gb28181", 4)
