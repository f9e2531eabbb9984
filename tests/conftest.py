"""Fixtures that start real components on free ports on 127.0.0.1.

A fixture that cannot start its component fails the test with the reason
(missing binary, busy port, the component's own log); nothing is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
import yaml

from citylake_devstack import ComponentUnavailable, Daprd, Mosquitto, start_daprd, start_mosquitto
from citylake_devstack.flink import FlinkSessionCluster
from citylake_devstack.process import ManagedProcess

if TYPE_CHECKING:
    from citylake_devstack.kafka import KafkaBroker
    from citylake_devstack.rabbitmq import RabbitMq

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        help="run only the tests marked `long` (the full-length proofs; `make test-long`)",
    )


# Files whose tests start daprd (directly or as part of a site). Self-hosted
# daprd finds an app id by mDNS across the machine, so two of these running at
# once on two xdist workers answer each other's invocations (seen: a 404 from
# another test's query service). `make test` runs `pytest -n 2 --dist
# loadfile`: each file on one worker, and these files on one worker, in turn.
DAPR_FILES = {
    "test_alert_rules_live.py",
    "test_dapr_sdk.py",
    "test_demo.py",
    "test_hot_tier.py",
    "test_scale_run.py",
    "test_services_dapr.py",
    "test_site_run.py",
    "test_soak_short.py",
    "test_thin_slice.py",
}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile`` with the daprd files as one unit. (xdist_group
    marks would say the same, but pytest-xdist 3.8 adds their group to
    ``item._nodeid``, which pytest 9 no longer reads.)"""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    class FilesAndDaprd(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "daprd" if Path(path).name in DAPR_FILES else path

    return FilesAndDaprd(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`make test` runs the short variants; `make test-long` (--long) the long
    ones. Each side is deselected from the other, not skipped: the run that
    owns a test always runs it."""
    long = bool(config.getoption("--long"))
    keep = [item for item in items if (item.get_closest_marker("long") is not None) == long]
    dropped = [item for item in items if (item.get_closest_marker("long") is not None) != long]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def _start(starter: Callable[[], T]) -> T:
    try:
        return starter()
    except ComponentUnavailable as exc:
        pytest.fail(f"could not start a real component: {exc}", pytrace=False)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = _start(lambda: start_mosquitto(tmp_path / "mosquitto"))
    yield broker
    broker.process.stop()


@pytest.fixture
def daprd_factory(tmp_path: Path) -> Iterator[Callable[[str, int, str], Daprd]]:
    started: list[Daprd] = []

    def factory(app_id: str, app_port: int, mqtt_url: str) -> Daprd:
        sidecar = _start(lambda: start_daprd(app_id, app_port, tmp_path / f"dapr-{app_id}", mqtt_url))
        started.append(sidecar)
        return sidecar

    yield factory
    for sidecar in started:
        sidecar.process.stop()


@pytest.fixture(scope="session")
def flink_session_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlinkSessionCluster]:
    cluster = FlinkSessionCluster(tmp_path_factory.mktemp("flink-session"))
    _start(cluster.start)
    yield cluster
    cluster.stop()


@pytest.fixture
def city_config(tmp_path: Path) -> Callable[..., Path]:
    """Writes a city.yaml for this test: ``city_config(sources=[...], **overrides)``."""

    def write(sources: list[dict[str, object]] | None = None, **overrides: object) -> Path:
        document: dict[str, object] = {
            "site": "test-site",
            "data_dir": str(tmp_path / "data"),
            "sources": sources or [],
            "pipelines": {"flink": {"parallelism": 1, "checkpoint_interval_s": 1, "monitor_interval_s": 0.5}},
        }
        document.update(overrides)
        path = tmp_path / "city.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    return write


def mqtt_source(url: str, **extra: object) -> dict[str, object]:
    return {
        "name": "sensors",
        "type": "mqtt",
        "url": url,
        "qos": 1,
        "topics": [
            {"template": "city/{district}/{device_type}/{device_id}/telemetry", "units": {"pm25": "ug/m3"}}
        ],
        **extra,
    }


class ModbusDevices:
    """Starts pymodbus servers as separate processes: ``devices(holding, inputs,
    device_id, **options)`` returns the port; the options are those of
    ``start_modbus_device`` (coils, discrete, more slaves, RTU framing, silence,
    a fixed port). Each server logs the requests it receives."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: dict[int, ManagedProcess] = {}

    def __call__(
        self,
        holding: dict[int, int],
        inputs: dict[int, int] | None = None,
        device_id: int = 1,
        **options: Any,
    ) -> int:
        from citylake_devstack.modbus_device import start_modbus_device

        workdir = self.workdir
        process, port = _start(lambda: start_modbus_device(workdir, holding, inputs, device_id, **options))
        self.processes[port] = process
        return port

    def stop(self, port: int) -> None:
        self.processes.pop(port).stop()

    def requests(self, port: int) -> list[dict[str, Any]]:
        """The requests the server on ``port`` received, oldest first."""
        from citylake_devstack.modbus_device import read_request_log, request_log_path

        return read_request_log(request_log_path(self.workdir, port))

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.stop()
        self.processes.clear()


@pytest.fixture
def modbus_device(tmp_path: Path) -> Iterator[ModbusDevices]:
    """Starts pymodbus servers as separate processes; calling it returns a port."""
    devices = ModbusDevices(tmp_path)
    yield devices
    devices.stop_all()


@pytest.fixture
def modbus_serial_device(tmp_path: Path) -> Iterator[Callable[..., tuple[Path, Path]]]:
    """A pymodbus serial RTU server on one end of a socat pty pair; calling it with
    ``{slave_id: DeviceRegisters}`` returns (the client's end, the request log)."""
    from citylake_devstack.modbus_device import request_log_path, start_serial_modbus_device

    started: list[ManagedProcess] = []

    def start(devices: dict[int, Any]) -> tuple[Path, Path]:
        socat, device, client_end = _start(lambda: start_serial_modbus_device(tmp_path, devices))
        started.extend([device, socat])
        return client_end, request_log_path(tmp_path, "serial")

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def real_city(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A lake the real producers wrote (tests/realcity.py), built once per
    session: the readers' integration tests read it instead of hand-written rows."""
    from tests.realcity import build_real_city

    return _start(lambda: build_real_city(tmp_path_factory.mktemp("real-city")))


# Brokers whose boot costs seconds (4-6 s idle, far more on a loaded machine):
# one per session, started by the first test that asks for it and shared by
# every file after it. Each user keeps to names of its own (exchanges, queues,
# topics, consumer groups), so no test sees another one's messages.


@pytest.fixture(scope="session")
def rabbitmq_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMq]:
    from citylake_devstack.rabbitmq import start_rabbitmq, stop_rabbitmq

    try:
        broker = start_rabbitmq(tmp_path_factory.mktemp("rabbitmq"), timeout_s=240)
    except ComponentUnavailable as exc:
        pytest.fail(f"could not start RabbitMQ: {exc}", pytrace=False)
    yield broker
    stop_rabbitmq(broker)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    from citylake_devstack.kafka import start_kafka

    try:
        broker = start_kafka(tmp_path_factory.mktemp("kafka"), timeout_s=150)
    except ComponentUnavailable as exc:
        pytest.fail(f"could not start Kafka: {exc}", pytrace=False)
    yield broker
    broker.process.stop()
