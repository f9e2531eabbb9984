"""A real Kafka broker in KRaft mode (one node, broker and controller) from
the Maven Central jars tools/setup/kafka-jars.sh fetched, on free ports:
``kafka.tools.StorageTool format`` once, then ``kafka.Kafka``."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from citylake_devstack.process import ComponentUnavailable, ManagedProcess, free_port, port_open

KAFKA_VERSION = "4.4.0"


def kafka_classpath(version: str = KAFKA_VERSION) -> str:
    from citylake.pipelines.jars import cache_dir

    folder = cache_dir() / "kafka-jars" / version
    if not (folder / ".complete").exists():
        raise ComponentUnavailable(f"Kafka {version} jars not in {folder}; run tools/setup/kafka-jars.sh")
    return ":".join(str(p) for p in sorted(folder.glob("*.jar")))


@dataclass
class KafkaBroker:
    process: ManagedProcess
    port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"


def start_kafka(workdir: Path, timeout_s: float = 90) -> KafkaBroker:
    java = shutil.which("java")
    if java is None:
        raise ComponentUnavailable("java not found; install openjdk-17-jre-headless (tools/setup/apt.sh)")
    classpath = kafka_classpath()
    port, controller = free_port(), free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "data"
    props = workdir / "server.properties"
    props.write_text(
        "\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={logs}",
            "num.partitions=2",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
        ]) + "\n"
    )  # fmt: skip
    # A small heap: the edge node's budget, and the machine is shared.
    jvm = [java, "-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-cp", classpath]
    cluster_id = uuid.uuid4().hex[:22]
    fmt = subprocess.run(
        [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
         "--no-initial-controllers"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if fmt.returncode != 0:
        raise ComponentUnavailable(
            f"kafka StorageTool format failed: {fmt.stderr[-2000:] or fmt.stdout[-2000:]}"
        )
    process = ManagedProcess("kafka", [*jvm, "kafka.Kafka", str(props)], workdir / "kafka.log").start()
    try:
        process.wait_until(lambda: port_open(port), timeout_s, "Kafka's PLAINTEXT listener")
    except ComponentUnavailable:
        process.stop()
        raise
    return KafkaBroker(process, port)
