"""MQTT ingest on a live stream, split over P `citylake ingest` processes with
a shared subscription ($share/ingest/...), against `mosquitto_sub` reading the
same live stream. A C publisher (`mosquitto_pub -l`) sends N messages as fast
as the broker takes them; throughput is messages over the time until the last
one is landed (citylake) or received (mosquitto_sub).

    .venv/bin/python bench/bench_mqtt_shared.py [--messages N] [--processes P] [--qos 0|1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from citylake_devstack import ManagedProcess, free_port, start_mosquitto
from citylake_devstack.ingest_probe import IngestProbe

T0 = 1_764_072_000_000
TOPIC = "bench/live/telemetry"


def payload_lines(messages: int) -> bytes:
    return "".join(
        json.dumps({"device_id": f"dev-{i % 1000:04d}", "ts": T0 + i, "v": float(i % 997)}) + "\n"
        for i in range(messages)
    ).encode()


def publish(port: int, lines: bytes, qos: int) -> subprocess.Popen[bytes]:
    publisher = subprocess.Popen(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", str(qos), "-t", TOPIC, "-l"],
        stdin=subprocess.PIPE,
    )
    assert publisher.stdin is not None
    publisher.stdin.write(lines)
    publisher.stdin.close()
    return publisher


def run_citylake(
    work: Path, broker_url: str, broker_port: int, lines: bytes, args: argparse.Namespace
) -> float:
    processes: list[tuple[ManagedProcess, int]] = []
    try:
        for n in range(args.processes):
            config = work / f"city-{n}.yaml"
            config.write_text(
                f"site: bench\ndata_dir: {work}/data-{n}\nsources:\n  - name: live\n    type: mqtt\n"
                f"    url: {broker_url}\n    qos: {args.qos}\n    client_id: ingest-{n}\n"
                f"    shared_group: ingest\n    topics:\n      - template: bench/{{district}}/telemetry\n"
            )
            port = free_port()
            argv = [
                sys.executable,
                "-m",
                "citylake",
                "ingest",
                "--config",
                str(config),
                "--metrics-port",
                str(port),
            ]
            process = ManagedProcess(f"ingest-{n}", argv, work / f"ingest-{n}.log").start()
            processes.append((process, port))
        for process, port in processes:
            process.wait_until(IngestProbe(port).healthy, 60, "subscribed")
        started = time.perf_counter()
        publisher = publish(broker_port, lines, args.qos)
        deadline = time.monotonic() + 600
        while sum(IngestProbe(port).landed_rows() for _, port in processes) < args.messages:
            assert time.monotonic() < deadline, "citylake did not land every message"
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        publisher.wait(60)
        return elapsed
    finally:
        for process, _ in processes:
            process.stop()


def run_mosquitto_sub(broker_port: int, lines: bytes, args: argparse.Namespace) -> float:
    subscriber = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker_port), "-q", str(args.qos), "-t", TOPIC,
         "-C", str(args.messages)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)  # subscribed
    started = time.perf_counter()
    publish(broker_port, lines, args.qos).wait(600)
    subscriber.wait(600)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1)
    args = parser.parse_args()
    lines = payload_lines(args.messages)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = start_mosquitto(work / "mosquitto")
        try:
            baseline = run_mosquitto_sub(broker.port, lines, args)
            ours = run_citylake(work, broker.url, broker.port, lines, args)
        finally:
            broker.process.stop()
    print(f"live stream of {args.messages} messages (1 reading each), QoS {args.qos}, from mosquitto_pub -l")
    print(f"mosquitto_sub -> /dev/null                   {args.messages / baseline:10,.0f} msg/s")
    print(f"citylake ingest x{args.processes} ($share) -> landing     {args.messages / ours:10,.0f} msg/s")
    print(f"ratio citylake / mosquitto_sub               {baseline / ours:.2f}")


if __name__ == "__main__":
    main()
