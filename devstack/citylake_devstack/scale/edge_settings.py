"""The edge overlay's own settings, read from deploy/, for a scale run in the
edge box: so what the box measures is the edge's configuration, not the
scale run's defaults.

Taken from ``deploy/overlays/edge/city.yaml``: ingest's buffer and landing
bounds, the query service's DuckDB memory and SQL concurrency (and any hot
tier or serving store key it sets; those it leaves out are the defaults the
edge runs with). From ``deploy/components/broker/mosquitto.conf``: the
broker's queue bound in bytes. From ``deploy/overlays/edge/flink.yaml``: the
session cluster's JobManager and TaskManager memory, laid out by Flink's own
memory model and folded into the one mini-cluster JVM a scale run starts
(``pipelines.flink.local_*``): its heap is the JobManager's heap plus the
TaskManager's framework and task heap; managed memory and network buffers as
the TaskManager has them.

Not taken: the checkpoint and monitor intervals (the scale run's
``--checkpoint`` sets freshness, the goal under test) and ``rest_url`` (a
scale run has no session cluster).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from citylake_devstack.components import REPO_ROOT

EDGE_OVERLAY = REPO_ROOT / "deploy" / "overlays" / "edge"
BROKER_CONF = REPO_ROOT / "deploy" / "components" / "broker" / "mosquitto.conf"
INGEST_KEYS = ("flush_max_rows", "flush_max_age_s", "max_buffered_rows", "landing_max_bytes")
QUERY_KEYS = ("memory_limit_mb", "sql_max_concurrent", "sql_memory_mb", "duckdb_threads")
QUERY_PREFIXES = ("hot_", "serving_")
BROKER_KEYS = ("max_queued_bytes", "max_queued_messages")
# Flink's defaults where the overlay sets nothing (Flink 2.x memory model).
JVM_OVERHEAD_FRACTION, JVM_OVERHEAD_MAX_MB = 0.1, 1024
NETWORK_FRACTION, NETWORK_MIN_MB, NETWORK_MAX_MB = 0.1, 64, 1024
MB_SIZE = re.compile(r"^\s*(\d+)\s*(m|mb|mi|g|gb|gi)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class EdgeSettings:
    ingest: dict[str, Any] = field(default_factory=dict)
    flink: dict[str, int] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)
    broker: list[str] = field(default_factory=list)  # mosquitto.conf lines

    def describe(self) -> dict[str, Any]:
        return {
            "ingest": dict(self.ingest),
            "pipelines.flink": dict(self.flink),
            "services.query": dict(self.query),
            "mosquitto": list(self.broker),
        }


def megabytes(value: object) -> int:
    """A Flink or Kubernetes memory size (``640m``, ``1g``, ``832Mi``) in MiB."""
    found = MB_SIZE.match(str(value))
    if not found:
        raise ValueError(f"not a memory size in m or g: {value!r}")
    number, unit = int(found.group(1)), (found.group(2) or "m").lower()
    return number * 1024 if unit.startswith("g") else number


def _patched(ops: list[dict[str, Any]], path: str) -> Any:
    for op in ops:
        if op.get("path") == path and op.get("op") in ("add", "replace"):
            return op.get("value")
    return None


def _overhead(process_mb: int, minimum: int) -> int:
    return int(min(max(process_mb * JVM_OVERHEAD_FRACTION, minimum), JVM_OVERHEAD_MAX_MB))


def mini_cluster_memory(flink_patch: list[dict[str, Any]]) -> dict[str, int]:
    """The edge session cluster's memory (the overlay's JSON patch of the
    FlinkDeployment) as ``pipelines.flink`` local_heap_mb, local_managed_mb and
    local_network_mb of one mini-cluster JVM."""
    conf = "/spec/flinkConfiguration/"

    def option(name: str, default: int | None = None) -> int:
        value = _patched(flink_patch, conf + name)
        if value is None:
            if default is None:
                raise ValueError(f"edge flink.yaml sets no {name}")
            return default
        return megabytes(value)

    jm = _patched(flink_patch, "/spec/jobManager/resource") or {}
    tm = _patched(flink_patch, "/spec/taskManager/resource") or {}
    if "memory" not in jm or "memory" not in tm:
        raise ValueError("edge flink.yaml sets no jobManager/taskManager resource memory")
    jm_process, tm_process = megabytes(jm["memory"]), megabytes(tm["memory"])
    jm_flink = (
        jm_process
        - option("jobmanager.memory.jvm-metaspace.size")
        - _overhead(jm_process, option("jobmanager.memory.jvm-overhead.min", 192))
    )
    jm_heap = jm_flink - option("jobmanager.memory.off-heap.size", 128)
    tm_flink = (
        tm_process
        - option("taskmanager.memory.jvm-metaspace.size")
        - _overhead(tm_process, option("taskmanager.memory.jvm-overhead.min", 192))
    )
    network = int(min(max(tm_flink * NETWORK_FRACTION, NETWORK_MIN_MB), NETWORK_MAX_MB))
    managed = option("taskmanager.memory.managed.size")
    framework_heap = option("taskmanager.memory.framework.heap.size", 128)
    task_heap = (
        tm_flink
        - framework_heap
        - option("taskmanager.memory.framework.off-heap.size", 128)
        - option("taskmanager.memory.task.off-heap.size", 0)
        - managed
        - network
    )
    if jm_heap <= 0 or task_heap <= 0:
        raise ValueError(f"edge flink.yaml leaves no heap (JobManager {jm_heap} MiB, task {task_heap} MiB)")
    return {
        "local_heap_mb": jm_heap + framework_heap + task_heap,
        "local_managed_mb": managed,
        "local_network_mb": network,
    }


def broker_bounds(conf_text: str) -> list[str]:
    """The queue bounds of a mosquitto.conf, as lines to add to another."""
    lines = []
    for line in conf_text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in BROKER_KEYS:
            lines.append(f"{parts[0]} {parts[1]}")
    return lines


def edge_settings(overlay: Path = EDGE_OVERLAY, broker_conf: Path = BROKER_CONF) -> EdgeSettings:
    yaml = YAML(typ="safe")
    city = yaml.load((overlay / "city.yaml").read_text())
    flink_patch = yaml.load((overlay / "flink.yaml").read_text())
    ingest = city.get("ingest") or {}
    query = (city.get("services") or {}).get("query") or {}
    return EdgeSettings(
        ingest={k: ingest[k] for k in INGEST_KEYS if k in ingest},
        flink={
            "parallelism": int((city.get("pipelines") or {}).get("flink", {}).get("parallelism", 1)),
            **mini_cluster_memory(flink_patch),
        },
        query={k: v for k, v in query.items() if k in QUERY_KEYS or k.startswith(QUERY_PREFIXES)},
        broker=broker_bounds(broker_conf.read_text()),
    )
