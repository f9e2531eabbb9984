"""A small city's lake written by the real producers, for the readers' tests.

SIPp plays a GB28181 NVR (register, a two-MESSAGE catalog in GB2312,
DeviceInfo, keepalives), simulated MQTT sensors publish on
``city/{district}/{device_type}/{device_id}/telemetry`` through mosquitto,
pymodbus serves two pump stations; real ``citylake ingest`` lands them and
the real jobs (`citylake pipeline run ... --mode batch`) bring every landing
table to the lake. The registry, query and dashboard tests read what this
wrote instead of rows written by hand.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from ruamel.yaml import YAML

from citylake.pipelines.jobs import JOB_NAMES
from citylake.schemas import DataLayout, table
from citylake_devstack import Mosquitto, start_mosquitto
from citylake_devstack.modbus_sim import start_modbus_simulator
from citylake_devstack.process import CITYLAKE, ManagedProcess, free_port
from citylake_devstack.simulators.mqtt import Manifest, device_topic, run_simulator
from citylake_devstack.sipp import SimDevice, Sipp, sim_devices
from tests.waiting import wait_for

PLATFORM = "34020000002000000001"
# The civil code (3402) of the catalogs the project's SIPp devices answer with.
DOMAIN = "3402000000"
PASSWORD = "city-s3cret"
MQTT_DEVICES = 9
MODBUS_DEVICES = 2
# Every landing table's job, run together as one batch Flink job.
BATCH_JOBS = [job for job in ("readings", "rollups", "devices", "events", "alerts") if job in JOB_NAMES]


@dataclass(frozen=True)
class RealCity:
    data_dir: Path
    config: Path
    nvr: SimDevice
    mqtt: Manifest
    mqtt_devices: tuple[str, ...]
    modbus_devices: tuple[str, ...]
    started: datetime
    ended: datetime

    @property
    def layout(self) -> DataLayout:
        return DataLayout(self.data_dir)

    def landed(self, name: str) -> list[dict[str, Any]]:
        files = sorted(self.layout.landing(table(name)).rglob("*.parquet"))
        return [row for f in files for row in pq.read_table(f).to_pylist()]


def _config(workdir: Path, broker: Mosquitto, sip_port: int, modbus: dict[str, Any]) -> Path:
    document = {
        "site": "real-city",
        "data_dir": str(workdir / "data"),
        "sources": [
            {
                "name": "city-sensors",
                "type": "mqtt",
                "url": broker.url,
                "qos": 1,
                "topics": [
                    {
                        "template": "city/{district}/{device_type}/{device_id}/telemetry",
                        "timestamp_field": "ts",
                        "units": {
                            "pm25": "ug/m3",
                            "temperature": "C",
                            "db": "dB",
                            "level": "m",
                            "flow": "m3/h",
                        },
                    }
                ],
            },
            {
                "name": "city-video",
                "type": "gb28181",
                "url": f"udp://127.0.0.1:{sip_port}",
                "platform_id": PLATFORM,
                "domain": DOMAIN,
                "password": PASSWORD,
            },
            modbus,
        ],
        "pipelines": {
            "flink": {"parallelism": 1, "checkpoint_interval_s": 2, "monitor_interval_s": 1},
            "jobs": BATCH_JOBS,
            "alerts": [
                {
                    "name": "pm25-high",
                    "metric": "pm25",
                    "above": 75,
                    "severity": "warning",
                    "message": "PM2.5",
                }
            ],
        },
    }
    path = workdir / "city.yaml"
    with path.open("w") as out:
        YAML().dump(document, out)
    return path


def _run_job(config: Path, jobs: str, start: datetime, end: datetime, log: Path) -> None:
    argv = [
        *CITYLAKE, "pipeline", "run", jobs, "--mode", "batch", "--config", str(config),
        "--from", start.isoformat(), "--to", end.isoformat(),
    ]  # fmt: skip
    with log.open("w") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=600, check=False)
    assert done.returncode == 0, f"batch jobs {jobs} failed; log {log}:\n{log.read_text()[-3000:]}"


def build_real_city(workdir: Path) -> RealCity:
    """Everything is stopped when this returns; the lake stays."""
    workdir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    broker = start_mosquitto(workdir / "mosquitto")
    modbus_sim, modbus_config = start_modbus_simulator(workdir / "modbus", MODBUS_DEVICES, interval_s=1.0)
    stopped: list[ManagedProcess] = [broker.process, modbus_sim]
    try:
        modbus = dict(YAML(typ="safe").load(modbus_config.read_text())["sources"][0])
        modbus["name"] = "pump-stations"
        # Configured where they stand, as an operator would: the map shows them.
        modbus["devices"] = [
            {**d, "name": f"pump station {i + 1}", "device_type": "pump-station", "civil_code": "340111",
             "longitude": 117.31 - 0.02 * i, "latitude": 31.74 + 0.01 * i}
            for i, d in enumerate(modbus["devices"])
        ]  # fmt: skip
        sip_port = free_port()
        config = _config(workdir, broker, sip_port, modbus)
        layout = DataLayout(workdir / "data")
        ingest = ManagedProcess(
            "ingest",
            [*CITYLAKE, "ingest", "--config", str(config)],
            workdir / "ingest.log",
        ).start()
        stopped.append(ingest)
        wait_for(
            lambda: any(layout.landing(table("devices")).rglob("*.parquet")), 60, "configured devices landed"
        )
        nvr = sim_devices(1, DOMAIN)[0]
        sipp = Sipp(
            workdir / "sipp",
            f"127.0.0.1:{sip_port}",
            "device_gb2312",
            [nvr],
            {"platform_id": PLATFORM, "domain": DOMAIN},
            PASSWORD,
        ).start()
        mqtt = run_simulator(broker.url, MQTT_DEVICES, 2.0, 4.0, qos=1)
        result = sipp.wait(120)
        assert result.ok, f"SIPp camera failed: {result.meaning}\n{result.log_tail}"
        # A few Modbus polls and the last MQTT batch landed.
        time.sleep(3)
    finally:
        for process in reversed(stopped):
            process.stop()
    ended = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
    # One Flink job in one mini-cluster: a JVM per job cost 15-20 s each on CI
    # (test_pipeline_modes proves the combined run writes what the jobs write).
    _run_job(config, ",".join(BATCH_JOBS), started, ended, workdir / "job-all.log")
    return RealCity(
        data_dir=workdir / "data",
        config=config,
        nvr=nvr,
        mqtt=mqtt,
        mqtt_devices=tuple(device_topic(i)[0] for i in range(MQTT_DEVICES)),
        modbus_devices=tuple(str(d["device_id"]) for d in modbus["devices"]),
        started=started,
        ended=ended,
    )
