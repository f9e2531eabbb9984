"""The whole system on one machine: broker, ingest, the streaming readings job,
the query service and its Dapr sidecar. ``citylake demo`` runs it with
simulated devices; later the scale run drives it harder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ruamel.yaml import YAML

from citylake_devstack.components import Daprd, Mosquitto, start_daprd, start_mosquitto, start_service
from citylake_devstack.process import CITYLAKE, ManagedProcess, free_port

Progress = Callable[[str], None]


def write_stack_config(source: Path, workdir: Path, mqtt_url: str) -> Path:
    """The operator's city.yaml pointed at the stack's broker and a fresh data_dir."""
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


@dataclass
class LocalStack:
    """Started by ``start()``, stopped (in reverse order) by ``stop()``."""

    config_source: Path
    workdir: Path
    processes: list[ManagedProcess] = field(default_factory=list)
    broker: Mosquitto | None = None
    sidecar: Daprd | None = None
    config_path: Path | None = None
    data_dir: Path | None = None
    ingest_metrics_port: int = 0
    query_port: int = 0

    def _citylake(self, name: str, *args: str) -> ManagedProcess:
        argv = [*CITYLAKE, *args]
        process = ManagedProcess(name, argv, self.workdir / f"{name}.log").start()
        self.processes.append(process)
        return process

    def start(self, progress: Progress = lambda _: None) -> LocalStack:
        progress("starting mosquitto")
        self.broker = start_mosquitto(self.workdir / "mosquitto")
        self.processes.append(self.broker.process)
        self.config_path = write_stack_config(self.config_source, self.workdir, self.broker.url)
        self.data_dir = self.workdir / "data"
        config = str(self.config_path)

        progress("starting ingest")
        self.ingest_metrics_port = free_port()
        ingest = self._citylake(
            "ingest", "ingest", "--config", config, "--metrics-port", str(self.ingest_metrics_port)
        )
        ingest.wait_port(self.ingest_metrics_port, 30)

        progress("starting the PyFlink readings job on Flink's local mini-cluster")
        self._citylake(
            "pipeline-readings", "pipeline", "run", "readings", "--mode", "streaming", "--config", config
        )

        progress("starting the query service and its Dapr sidecar")
        self.query_port = free_port()
        self.processes.append(start_service("query", self.config_path, self.query_port, self.workdir))
        self.sidecar = start_daprd("query", self.query_port, self.workdir / "dapr", self.broker.url)
        self.processes.append(self.sidecar.process)
        return self

    def dead(self) -> list[ManagedProcess]:
        return [p for p in self.processes if not p.alive()]

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
