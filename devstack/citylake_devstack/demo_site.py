"""The demo's city: a broker, simulated devices of several protocols, and the
site itself as ``citylake run`` over a city.yaml written for them.

The devices stay outside the site, as a city's would: MQTT sensors with daily
cycles (devstack/citylake_devstack/simulators/signals.py), pymodbus pump stations behind a gateway.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from ruamel.yaml import YAML

from citylake_devstack.components import (
    DAPR_COMPONENTS,
    DAPR_CONFIG,
    Mosquitto,
    daprd_binary,
    start_mosquitto,
)
from citylake_devstack.modbus_sim import start_modbus_simulator
from citylake_devstack.process import CITYLAKE, ManagedProcess, free_port

Progress = Callable[[str], None]
DEMO_JOBS = ["readings", "rollups", "alerts", "devices", "events"]
DEMO_SERVICES = ["query", "registry", "alerts"]
LIVE_PUBSUB = "citylake-pubsub"


# Pump stations along the Chaohu shore of Hefei's Baohe district (GB/T 2260 340111).
PUMP_STATIONS = [(117.3102, 31.7408), (117.2935, 31.7551), (117.2768, 31.7695), (117.3261, 31.7302)]


def _placed(device: dict[str, Any], index: int) -> dict[str, Any]:
    lon, lat = PUMP_STATIONS[index % len(PUMP_STATIONS)]
    return {
        **device,
        "name": f"Baohe pump station {index + 1}",
        "device_type": "pump-station",
        "civil_code": "340111",
        "longitude": round(lon + 0.01 * (index // len(PUMP_STATIONS)), 4),
        "latitude": lat,
    }


def demo_site_config(
    operator: dict[str, Any], workdir: Path, broker: Mosquitto, modbus_source: dict[str, Any] | None
) -> dict[str, Any]:
    """The operator's city.yaml, pointed at the demo's broker, devices, ports
    and data directory, with every unit of an edge site switched on."""
    document = dict(operator)
    document["data_dir"] = str(workdir / "data")
    sources = [dict(s) for s in document.get("sources") or []]
    for source in sources:
        if source.get("type") == "mqtt":
            source["url"] = broker.url
    if modbus_source is not None:
        sources.append(modbus_source)
    document["sources"] = sources
    ingest = dict(document.get("ingest") or {})
    ingest["live_pubsub"] = LIVE_PUBSUB
    document["ingest"] = ingest
    pipelines = dict(document.get("pipelines") or {})
    pipelines["jobs"] = list(dict.fromkeys([*pipelines.get("jobs", []), *DEMO_JOBS]))
    document["pipelines"] = pipelines
    services = {name: dict(value) for name, value in (document.get("services") or {}).items()}
    for name in DEMO_SERVICES:
        services.setdefault(name, {}).update(host="127.0.0.1", port=free_port())
    services["query"]["live_pubsub"] = LIVE_PUBSUB
    document["services"] = services
    document["run"] = {
        "services": DEMO_SERVICES,
        "maintenance": True,
        "ingest_metrics_port": free_port(),
        "health_port": free_port(),
        "sidecars": {
            "enabled": True,
            "daprd": str(daprd_binary()),
            "resources_path": str(DAPR_COMPONENTS),
            "config": str(DAPR_CONFIG),
            "mqtt_url": broker.url,
        },
    }
    return document


@dataclass
class DemoSite:
    """``start()`` brings the city up; ``stop()`` takes it all down (the site
    first, so ingest lands what it holds before its broker goes)."""

    operator_config: Path
    workdir: Path
    modbus_devices: int = 6
    processes: list[ManagedProcess] = field(default_factory=list)
    broker: Mosquitto | None = None
    site: ManagedProcess | None = None
    config_path: Path | None = None
    document: dict[str, Any] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)

    def start(self, progress: Progress = lambda _: None) -> DemoSite:
        progress("starting mosquitto (the devices' broker and Dapr's pub/sub)")
        self.broker = start_mosquitto(self.workdir / "mosquitto")
        self.processes.append(self.broker.process)
        modbus = None
        if self.modbus_devices:
            progress(f"starting {self.modbus_devices} simulated Modbus pump stations (pymodbus)")
            sim, sim_config = start_modbus_simulator(
                self.workdir / "modbus", self.modbus_devices, per_endpoint=self.modbus_devices, interval_s=5.0
            )
            self.processes.append(sim)
            modbus = dict(YAML(typ="safe").load(sim_config.read_text())["sources"][0])
            modbus["name"] = "pump-stations"
            modbus["devices"] = [_placed(d, i) for i, d in enumerate(modbus["devices"])]
        operator = YAML(typ="safe").load(self.operator_config.read_text())
        self.document = demo_site_config(operator, self.workdir, self.broker, modbus)
        self.config_path = self.workdir / "city.yaml"
        yaml = YAML()
        yaml.width = 200
        with self.config_path.open("w") as out:
            yaml.dump(self.document, out)
        progress("starting the site: citylake run (ingest, Flink jobs, maintenance, services, sidecars)")
        self.site = ManagedProcess(
            "citylake-run",
            [*CITYLAKE, "run", "--config", str(self.config_path)],
            self.workdir / "citylake-run.log",
        ).start()
        self.processes.append(self.site)
        return self

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.document['run']['health_port']}/healthz"

    def health(self) -> dict[str, Any]:
        try:
            return dict(httpx.get(self.health_url, timeout=3).json())
        except (httpx.HTTPError, ValueError):
            return {}

    def service_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.document['services'][name]['port']}"

    def wait_healthy(self, timeout_s: float, progress: Progress = lambda _: None) -> dict[str, Any]:
        assert self.site is not None

        def ready() -> bool:
            view = self.health()
            units = view.get("units", {})
            waiting = sorted(n for n, u in units.items() if u["state"] != "healthy")
            progress(f"waiting for the site: {', '.join(waiting) or 'starting'}")
            return bool(view.get("healthy"))

        self.site.wait_until(ready, timeout_s, "a healthy site")
        return self.health()

    def dead(self) -> list[ManagedProcess]:
        return [p for p in self.processes if not p.alive()]

    def stop(self) -> None:
        self.stopping.set()
        for process in reversed(self.processes):
            process.stop(timeout_s=40 if process is self.site else 15)
        self.processes.clear()
