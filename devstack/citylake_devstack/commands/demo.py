"""``citylake demo``: a small city on one machine.

mosquitto, simulated MQTT sensors (daily cycles, a few polluters) and Modbus
pump stations, and the site itself as ``citylake run``: ingest, the streaming
jobs on Flink's mini-cluster, lake maintenance, the query, registry and alerts
services each beside a real daprd. All on free local ports under
``<data_dir>/demo``. Ctrl-C stops everything.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from typing import TYPE_CHECKING, Annotated

import httpx
import typer
from rich.status import Status

from citylake.cli.common import DEFAULT_CONFIG, ConfigOption, console, fail, load, setup_logging
from citylake.lake import Lake
from citylake.schemas import DataLayout

if TYPE_CHECKING:
    # Imported by the command itself: listing the commands should not load the site.
    from citylake_devstack.demo_site import DemoSite


def _simulate(url: str, devices: int, rate: float, stop: threading.Event, sent: list[int]) -> None:
    from citylake_devstack.simulators.mqtt import run_simulator

    while not stop.is_set():
        try:
            sent.append(run_simulator(url, devices, rate, 5.0, qos=1, stop=stop.is_set).readings)
        except OSError:
            time.sleep(1)  # the broker is going away with the demo


def _lake_rows(site: DemoSite, table: str) -> int:
    lake = Lake(DataLayout(site.workdir / "data"))
    try:
        row = lake.cursor().execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0
    finally:
        lake.close()


def _wait_for_first_rows(site: DemoSite, sent: list[int], status: Status, timeout_s: float = 300) -> int:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if site.dead():
            dead = site.dead()[0]
            fail(f"{dead.name} stopped; see {dead.log_path}:\n{dead.log_tail(2000)}")
        rows = _lake_rows(site, "readings")
        # The dashboard's map and device list read `devices`: wait for it too.
        if rows and _lake_rows(site, "devices"):
            return rows
        status.update(
            f"waiting for the first lake commits of readings and devices ({time.monotonic() - started:.0f}s; "
            f"{sum(sent)} readings sent so far)"
        )
        time.sleep(1)
    fail(f"no readings reached the lake in {timeout_s:.0f}s; logs in {site.workdir / 'data' / 'logs'}")


def _show(site: DemoSite, rows: int) -> None:
    from citylake_devstack.simulators.mqtt import device_topic

    health = site.health()
    endpoints = health.get("endpoints", {})
    device_id, _ = device_topic(0)
    via_dapr = f"{endpoints['dapr-query']}/v1.0/invoke/query/method/v1/devices/{device_id}/latest"
    latest = httpx.get(via_dapr, timeout=10)
    query = site.service_url("query")
    assert site.config_path is not None and site.broker is not None
    counts = {t: _lake_rows(site, t) for t in ("readings", "devices", "device_events")}
    lines = [
        f"[bold green]citylake is running[/]: {rows} readings in the lake",
        "  lake            " + ", ".join(f"{t} {n}" for t, n in counts.items()),
        f"  dashboard       {query}/dashboard",
        f"  query service   {query}/docs",
        f"  registry        {site.service_url('registry')}/v1/devices",
        f"  alerts          {site.service_url('alerts')}/v1/alerts/active",
        f"  through Dapr    {via_dapr}",
        f"  site health     {site.health_url}",
        f"  MQTT broker     {site.broker.url}  (topics city/+/+/+/telemetry)",
        f"  logs            {site.workdir / 'data' / 'logs'}",
        "try:",
        f"  citylake sql --config {site.config_path} "
        '"SELECT device_id, metric, count(*) AS n, round(avg(value), 1) AS avg FROM readings '
        'GROUP BY ALL ORDER BY n DESC LIMIT 10"',
        f"  curl -s {via_dapr}",
        f"latest of {device_id} through Dapr: {latest.status_code} {latest.text[:400]}",
    ]
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)


def demo(
    config: ConfigOption = DEFAULT_CONFIG,
    devices: Annotated[int, typer.Option(min=1, help="simulated MQTT sensors")] = 50,
    modbus_devices: Annotated[int, typer.Option(min=0, help="simulated Modbus pump stations")] = 6,
    rate: Annotated[float, typer.Option(min=0.1, help="messages per sensor per second")] = 1.0,
    duration: Annotated[
        float, typer.Option(min=0, help="seconds to run after the first result; 0 = until Ctrl-C")
    ] = 0,
) -> None:
    """Run a small simulated city through the whole pipeline and show where to look."""
    from citylake_devstack import ComponentUnavailable
    from citylake_devstack.demo_site import DemoSite

    setup_logging()
    loaded = load(config)
    workdir = loaded.config.data_dir / "demo"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    site = DemoSite(config.resolve(), workdir, modbus_devices=modbus_devices)
    # A SIGTERM (a terminal closed, a test's timeout) stops the city like Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    stop_simulator = threading.Event()
    sent: list[int] = []
    try:
        with Status("starting", console=console) as status:
            site.start(status.update)
            assert site.broker is not None
            site.wait_healthy(300, status.update)
            status.update(f"starting {devices} simulated MQTT sensors at {rate} Hz")
            threading.Thread(
                target=_simulate, args=(site.broker.url, devices, rate, stop_simulator, sent), daemon=True
            ).start()
            rows = _wait_for_first_rows(site, sent, status)
        _show(site, rows)
        console.print("Ctrl-C stops the demo" + (f" (or it ends in {duration:.0f}s)" if duration else ""))
        deadline = time.monotonic() + duration if duration else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)
            if site.dead():
                fail(f"{site.dead()[0].name} stopped unexpectedly; see {site.dead()[0].log_path}")
    except ComponentUnavailable as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        stop_simulator.set()
        site.stop()
