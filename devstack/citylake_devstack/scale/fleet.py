"""A fleet of simulated MQTT sensors at city rates, as one child process.

``citylake simulate mqtt`` publishes every device at once per tick; a city's
sensors report on their own clocks. Here device ``i`` of ``N`` reports at
offset ``i / N`` of every period, so the broker sees a steady stream of
``N / period`` messages a second (95,000 sensors once a minute: ~1,600/s).
Devices, topics and payloads are those of ``citylake_devstack.simulators.mqtt``
(``device_topic(i)``), so a query for ``air-000000`` finds the first sensor.

Every reading goes out at QoS 1; the broker's PUBACKs are counted. Progress is
written as JSON to ``--status`` every second (atomically) for the orchestrator.

    python -m citylake_devstack.scale.fleet --url mqtt://127.0.0.1:1883 --devices 95000 \
        --period 60 --status fleet.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from citylake_devstack.simulators.mqtt import DEVICE_TYPES, METRICS, device_topic

# Publish in slices of at most this long a pause; the loop catches up in bursts
# no bigger than MAX_BURST when it was held up (a GC pause, a busy machine).
TICK_S = 0.02
MAX_BURST = 5_000
# Keepalives and PUBACKs are paho's network thread's (loop_start), never this
# loop's; but a burst holds the GIL, and at 200 % machine CPU mosquitto
# dropped the fleet for missed keepalives. The loop yields every SLICE
# publishes, the keepalive is long, and a dropped connection is re-made at
# once (within RECONNECT_S) instead of after paho's default backoff of up to 2 min.
SLICE = 250
KEEPALIVE_S = 120
RECONNECT_S = (1, 2)


@dataclass
class FleetStatus:
    devices: int
    period_s: float
    published: int = 0
    acked: int = 0
    readings_acked: int = 0
    devices_reported: int = 0  # distinct devices with at least one acknowledged message
    behind: int = 0  # messages due but not yet published (the simulator's own lag)
    connected: bool = False
    disconnects: int = 0
    elapsed_s: float = 0.0
    done: bool = False

    @property
    def pending(self) -> int:
        return self.published - self.acked


class Fleet:
    def __init__(self, url: str, devices: int, period_s: float, seed: int = 11) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 1883
        self.devices = devices
        self.period_s = period_s
        self.status = FleetStatus(devices, period_s)
        self._rng = random.Random(seed)
        # Published, not yet acknowledged, in publishing order (the broker
        # acknowledges one connection's QoS 1 messages in order).
        self._in_flight: deque[tuple[mqtt.MQTTMessageInfo, int]] = deque()
        self._reported = bytearray(devices)
        self._readings = [len(METRICS[DEVICE_TYPES[i % len(DEVICE_TYPES)]]) for i in range(len(DEVICE_TYPES))]
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"citylake-scale-fleet-{os.getpid()}", clean_session=True
        )
        self.client.max_inflight_messages_set(20_000)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.reconnect_delay_set(*RECONNECT_S)

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, code: ReasonCode, props: Properties | None
    ) -> None:
        self.status.connected = not code.is_failure

    def _on_disconnect(
        self, client: mqtt.Client, userdata: object, flags: object, code: ReasonCode, props: Properties | None
    ) -> None:
        self.status.connected = False
        self.status.disconnects += 1

    def _count_acks(self) -> None:
        """Move acknowledged messages off the in-flight queue (this thread only:
        no lock shared with paho's network thread, which holds its own while
        it handles a PUBACK)."""
        while self._in_flight and self._in_flight[0][0].is_published():
            _, index = self._in_flight.popleft()
            self.status.acked += 1
            self.status.readings_acked += self._readings[index % len(DEVICE_TYPES)]
            if not self._reported[index]:
                self._reported[index] = 1
                self.status.devices_reported += 1

    def _payload(self, index: int) -> str:
        device_type = DEVICE_TYPES[index % len(DEVICE_TYPES)]
        payload: dict[str, float] = {"ts": int(time.time() * 1000)}
        for metric in METRICS[device_type]:
            payload[metric] = round(self._rng.uniform(0, 100), 3)
        return json.dumps(payload)

    def run(self, duration_s: float | None, stop: threading.Event, status_path: Path | None) -> FleetStatus:
        self.client.connect(self.host, self.port, keepalive=KEEPALIVE_S)
        self.client.loop_start()
        started = time.monotonic()
        per_s = self.devices / self.period_s
        sent = 0  # message k goes to device k % N at started + k / per_s
        next_status = started
        try:
            while not stop.is_set():
                now = time.monotonic()
                elapsed = now - started
                if duration_s is not None and elapsed >= duration_s:
                    break
                due = int(elapsed * per_s) + 1
                burst_end = min(due, sent + MAX_BURST)
                while sent < burst_end:
                    index = sent % self.devices
                    _, topic = device_topic(index)
                    self._in_flight.append((self.client.publish(topic, self._payload(index), qos=1), index))
                    self.status.published += 1
                    sent += 1
                    if sent % SLICE == 0:
                        time.sleep(0)  # the GIL to the network thread: keepalives, acks
                self._count_acks()
                self.status.behind = max(0, due - sent)
                self.status.elapsed_s = elapsed
                if status_path is not None and now >= next_status:
                    self._write(status_path)
                    next_status = now + 1.0
                stop.wait(max(0.0, min(TICK_S, started + (sent + 1) / per_s - time.monotonic())))
            # Let the last acknowledgements arrive.
            deadline = time.monotonic() + 10
            while self.status.pending and time.monotonic() < deadline:
                time.sleep(0.1)
                self._count_acks()
        finally:
            self.status.done = True
            self.status.elapsed_s = time.monotonic() - started
            if status_path is not None:
                self._write(status_path)
            self.client.disconnect()
            self.client.loop_stop()
        return self.status

    def _write(self, path: Path) -> None:
        document = {**asdict(self.status), "pending": self.status.pending}
        partial = path.with_name(f".{path.name}.tmp")
        partial.write_text(json.dumps(document))
        partial.replace(path)


def read_status(path: Path) -> dict[str, float]:
    """The fleet's last status, or {} before it wrote one."""
    try:
        document: dict[str, float] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return document


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--period", type=float, default=60.0, help="seconds between two reports of a device")
    parser.add_argument("--duration", type=float, default=None, help="seconds; default until SIGTERM")
    parser.add_argument("--status", type=Path, default=None)
    args = parser.parse_args()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    Fleet(args.url, args.devices, args.period).run(args.duration, stop, args.status)


if __name__ == "__main__":
    main()
