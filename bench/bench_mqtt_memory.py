"""Memory of one ingest process holding 100k active MQTT devices: every device
publishes, the process lands them all; peak RSS is reported against a bare
paho subscriber receiving the same messages (the baseline).

    .venv/bin/python bench/bench_mqtt_memory.py [--devices N] [--rounds R]
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

BARE = """
import sys, threading, resource, paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, total = int(sys.argv[1]), int(sys.argv[2])
done, seen = threading.Event(), [0]
def on_message(c, u, m):
    seen[0] += 1
    if seen[0] >= total: done.set()
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bare-mem", clean_session=False)
c.on_message = on_message
c.connect("127.0.0.1", port); c.subscribe("city/+/+/+/telemetry", 0); c.loop_start()
print("ready", flush=True); done.wait(600)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, flush=True)
"""


def publish(port: int, devices: int, rounds: int) -> None:
    lines = []
    for r in range(rounds):
        for i in range(devices):
            lines.append(
                f"city/d{i % 16}/meter/m-{i:06d}/telemetry\t"
                + json.dumps({"ts": T0 + r * 1000, "kwh": i + r})
            )
    # One fast C publisher per topic would be too many processes; paho batches.
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="mem-pub")
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = []
    for line in lines:
        topic, payload = line.split("\t")
        infos.append(client.publish(topic, payload, qos=0))
    for info in infos:
        info.wait_for_publish(120)
    client.disconnect()
    client.loop_stop()


def vm_hwm_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    total = args.devices * args.rounds
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_mosquitto(Path(tmp) / "mosquitto")
        config = Path(tmp) / "city.yaml"
        config.write_text(
            f"site: bench\ndata_dir: {tmp}/data\nsources:\n  - name: meters\n    type: mqtt\n"
            f"    url: {broker.url}\n    qos: 0\n    client_id: citylake-mem\n    topics:\n"
            "      - template: city/{district}/{device_type}/{device_id}/telemetry\n"
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
        ingest = ManagedProcess("ingest", argv, Path(tmp) / "ingest.log").start()
        try:
            bare = subprocess.Popen(
                [sys.executable, "-c", BARE, str(broker.port), str(total)], stdout=subprocess.PIPE, text=True
            )
            assert bare.stdout is not None and bare.stdout.readline().strip() == "ready"
            probe = IngestProbe(port)
            ingest.wait_until(probe.healthy, 60, "healthz")
            publish(broker.port, args.devices, args.rounds)
            deadline = time.monotonic() + 300
            landed = 0.0
            while landed < total and time.monotonic() < deadline:
                time.sleep(0.5)
                landed = probe.landed_rows()
            ours_mb = vm_hwm_mb(ingest.pid)
            bare_mb = int(bare.communicate(timeout=300)[0].strip().splitlines()[-1])
        finally:
            ingest.stop()
            broker.process.stop()
    print(f"devices {args.devices}, {args.rounds} messages each, {int(landed)} readings landed")
    print(f"citylake ingest process peak RSS  {ours_mb:6d} MB")
    print(f"bare paho subscriber peak RSS     {bare_mb:6d} MB")
    print(f"ratio citylake / bare             {ours_mb / bare_mb:.2f}")
    print(f"goal RSS <= 300 MB                {'met' if ours_mb <= 300 else 'MISSED'}")


if __name__ == "__main__":
    main()
