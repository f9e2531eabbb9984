"""What a scale run simulates and how the stack is configured for it.

The default is a city district's edge at full size: 100,000 devices, of which
95 % MQTT sensors reporting once a minute, 2 % Modbus meters polled every 10 s
behind gateways (pymodbus servers with up to 247 unit ids each) and 3 %
GB28181 devices that register in a storm SIPp plays at a rate one ingest
process handles, then keep alive every minute.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from citylake.pipelines.jobs import JOB_NAMES
from citylake_devstack.scale.edge_settings import EdgeSettings
from citylake_devstack.simulators.mqtt import DEVICE_TYPES, METRICS

MQTT, MODBUS, GB28181 = "mqtt", "modbus", "gb28181"
SOURCE_NAMES = {MQTT: "mqtt-sensors", MODBUS: "modbus-meters", GB28181: "gb28181-cameras"}
PROTOCOL_OF_SOURCE = {name: protocol for protocol, name in SOURCE_NAMES.items()}
# The built-in jobs, as pipelines/jobs.py lists them (the one list); a
# scale run runs them all unless told otherwise (issue 12).
ALL_JOBS = JOB_NAMES
DEFAULT_JOBS = tuple(JOB_NAMES)
GB28181_PLATFORM, GB28181_DOMAIN, GB28181_PASSWORD = "34020000002000000001", "3402000000", "scale-pw"
MARKER_DEVICE = "scale-marker"
MARKER_TOPIC = f"city/scale/marker/{MARKER_DEVICE}/telemetry"


def split_devices(total: int, modbus: int | None = None, gb28181: int | None = None) -> dict[str, int]:
    """95 / 2 / 3 % unless Modbus or GB28181 counts are given; MQTT takes the rest."""
    if total < 3:
        raise ValueError(f"a scale run needs at least 3 devices (one per protocol), got {total}")
    modbus = max(1, round(total * 0.02)) if modbus is None else modbus
    gb28181 = max(1, round(total * 0.03)) if gb28181 is None else gb28181
    mqtt = total - modbus - gb28181
    if mqtt < 1 or modbus < 0 or gb28181 < 0:
        raise ValueError(f"{modbus} Modbus + {gb28181} GB28181 devices leave no MQTT sensors of {total}")
    return {MQTT: mqtt, MODBUS: modbus, GB28181: gb28181}


def readings_per_mqtt_message() -> float:
    """The simulated sensors' mix (device i is type i % 3) in readings per message."""
    return sum(len(METRICS[t]) for t in DEVICE_TYPES) / len(DEVICE_TYPES)


@dataclass(frozen=True)
class ScalePlan:
    devices: dict[str, int]
    minutes: float = 10.0
    mqtt_period_s: float = 60.0
    modbus_interval_s: float = 10.0
    modbus_per_gateway: int = 125
    modbus_profile: str = "power-meter"
    gb28181_rate: float = 300.0  # REGISTERs started per second (the storm)
    gb28181_keepalive_s: float = 60.0
    jobs: tuple[str, ...] = DEFAULT_JOBS
    combine: bool = True  # the jobs as one Flink job (pipelines.combine), as `citylake run` runs them
    checkpoint_s: float = 2.0
    query_rate: float = 200.0  # requests per second, open loop
    query_via_dapr: bool = True
    marker_every_s: float = 2.0
    sample_s: float = 5.0
    hot_window_s: float = 600.0
    # The edge in a box (scale/edgebox.py): the edge's own processes in a
    # cgroup of the edge node's size, configured as deploy/overlays/edge is.
    edge_box: bool = False
    edge_box_cpus: float = 2.0
    edge_box_memory_mb: int = 4096
    alert_rules: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.devices.values())

    def expected_rates(self) -> dict[str, float]:
        """Readings per second the devices should produce at steady state."""
        from citylake.ingest.modbus.profiles import load_profile

        fields = len(load_profile(self.modbus_profile).fields) if self.devices[MODBUS] else 0
        return {
            MQTT: self.devices[MQTT] / self.mqtt_period_s * readings_per_mqtt_message(),
            MODBUS: self.devices[MODBUS] / self.modbus_interval_s * fields,
        }

    def describe(self) -> dict[str, Any]:
        """The plan as the report shows it."""
        out = asdict(self)
        out.pop("alert_rules")
        out["jobs"] = ",".join(self.jobs)
        out["expected_readings_per_s"] = {k: round(v, 1) for k, v in self.expected_rates().items()}
        return out


def write_scale_config(
    path: Path,
    plan: ScalePlan,
    data_dir: Path,
    mqtt_url: str,
    modbus_source: dict[str, Any] | None,
    sip_port: int,
    edge: EdgeSettings | None = None,
) -> Path:
    """city.yaml for the run: one source per protocol, the live feed on Dapr
    pub/sub into the query service's hot tier, the jobs' checkpoint interval;
    with ``edge``, the edge overlay's ingest, Flink memory and query settings
    on top (edge_settings.py says which)."""
    sources: list[dict[str, Any]] = [
        {
            "name": SOURCE_NAMES[MQTT],
            "type": "mqtt",
            "url": mqtt_url,
            "qos": 1,
            "client_id": "citylake-scale-ingest",
            "topics": [
                {
                    "template": "city/{district}/{device_type}/{device_id}/telemetry",
                    "timestamp_field": "ts",
                    "timestamp_unit": "ms",
                }
            ],
        }
    ]
    if modbus_source is not None:
        sources.append({**modbus_source, "name": SOURCE_NAMES[MODBUS]})
    if plan.devices[GB28181]:
        sources.append(
            {
                "name": SOURCE_NAMES[GB28181],
                "type": "gb28181",
                # TCP too, so the port can be waited on; SIPp speaks UDP.
                "url": f"udp://127.0.0.1:{sip_port}",
                "transports": ["udp", "tcp"],
                "platform_id": GB28181_PLATFORM,
                "domain": GB28181_DOMAIN,
                "password": GB28181_PASSWORD,
                "keepalive_interval_s": plan.gb28181_keepalive_s,
            }
        )
    document: dict[str, Any] = {
        "site": "scale",
        "data_dir": str(data_dir),
        "sources": sources,
        "ingest": {"live_pubsub": "citylake-pubsub"},
        "pipelines": {
            "flink": {"parallelism": 1, "checkpoint_interval_s": plan.checkpoint_s, "monitor_interval_s": 1},
            "jobs": list(plan.jobs),
            "alerts": plan.alert_rules,
        },
        "services": {
            "query": {
                "host": "127.0.0.1",
                "live_pubsub": "citylake-pubsub",
                "hot_window_s": plan.hot_window_s,
            }
        },
    }
    if edge is not None:
        document["ingest"].update(edge.ingest)
        document["pipelines"]["flink"].update(edge.flink)
        document["services"]["query"].update(edge.query)
    yaml = YAML()
    yaml.width = 200
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        yaml.dump(document, handle)
    return path
