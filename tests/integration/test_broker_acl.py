"""Attacks on the real mosquitto, started with deploy/components/broker's own
mosquitto.conf and acl (only ports and paths rewritten for 127.0.0.1) and a
password file made with mosquitto_passwd as deploy/README.md says:

- an anonymous client is refused on both listeners;
- a device subscribed to `#` receives nothing; ingest receives its telemetry;
- a device cannot publish another device's telemetry, nor to the Dapr topics;
- the Dapr user's live topics stay apart from the devices' tree;
- a device cannot take over ingest's persistent client id.
"""

from __future__ import annotations

import getpass
import queue
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from citylake_devstack import free_port
from citylake_devstack.process import ManagedProcess

pytestmark = pytest.mark.integration

BROKER = Path(__file__).resolve().parents[2] / "deploy" / "components" / "broker"
USERS = {"citylake-ingest": "ingest-pw", "citylake-dapr": "dapr-pw", "dev-1": "dev-1-pw", "dev-2": "dev-2-pw"}
INGEST_ID = "citylake-edge-site-01-city-sensors"  # ingest's predictable persistent client id
QUIET_S = 1.0


@dataclass(frozen=True)
class Broker:
    device_port: int
    internal_port: int


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    workdir = tmp_path_factory.mktemp("broker")
    passwords = workdir / "passwords"
    for i, (user, password) in enumerate(USERS.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run(["mosquitto_passwd", *create, "-b", str(passwords), user, password], check=True)
    device_port, internal_port = free_port(), free_port()
    text = (BROKER / "mosquitto.conf").read_text()
    rewrites = {
        r"^password_file .*$": f"password_file {passwords}",
        r"^acl_file .*$": f"acl_file {BROKER / 'acl'}",  # the deploy's own file, unchanged
        r"^persistence_location .*$": f"persistence_location {workdir}/",
        r"^listener 1883 .*$": f"listener {device_port} 127.0.0.1",
        r"^listener 1884 .*$": f"listener {internal_port} 127.0.0.1",
    }
    for pattern, replacement in rewrites.items():
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        assert count == 1, f"deploy's mosquitto.conf has no single line matching {pattern}"
    # As root mosquitto would drop to user "mosquitto", which cannot read the test's files.
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"user {getpass.getuser()}\n" + text)
    process = ManagedProcess("mosquitto", ["mosquitto", "-c", str(conf)], workdir / "mosquitto.log").start()
    try:
        process.wait_port(device_port, 15)
        process.wait_port(internal_port, 15)
        yield Broker(device_port, internal_port)
    finally:
        process.stop()


class Client:
    """A paho client that records what it receives and whether it was dropped."""

    def __init__(self, port: int, user: str | None, client_id: str | None = None) -> None:
        self.received: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connected: queue.Queue[str] = queue.Queue()
        self.dropped = False
        self.mqtt = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"t-{uuid.uuid4().hex[:8]}",
            clean_session=False,
        )
        if user is not None:
            self.mqtt.username_pw_set(user, USERS[user])
        self.mqtt.on_connect = lambda c, u, f, rc, p: self.connected.put(str(rc))
        self.mqtt.on_message = lambda c, u, m: self.received.put((m.topic, bytes(m.payload)))
        self.mqtt.on_disconnect = lambda c, u, f, rc, p: setattr(self, "dropped", True)
        self.mqtt.connect("127.0.0.1", port)
        self.mqtt.loop_start()
        self.result = self.connected.get(timeout=10)

    def subscribe(self, topic: str) -> None:
        self.mqtt.subscribe(topic, 1)
        time.sleep(0.2)

    def publish(self, topic: str, payload: bytes) -> None:
        self.mqtt.publish(topic, payload, qos=1).wait_for_publish(5)

    def got(self, timeout: float = QUIET_S) -> list[tuple[str, bytes]]:
        found = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                found.append(self.received.get(timeout=left))
            except queue.Empty:
                break
        return found

    def close(self) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


def test_anonymous_clients_are_refused_on_both_listeners(broker: Broker) -> None:
    for port in (broker.device_port, broker.internal_port):
        anonymous = Client(port, None)
        assert anonymous.result == "Not authorized"
        anonymous.close()


def test_devices_publish_only_their_own_telemetry_and_read_nothing(broker: Broker) -> None:
    ingest = Client(broker.internal_port, "citylake-ingest")
    ingest.subscribe("$share/ingest/city/+/+/+/telemetry")
    dapr = Client(broker.internal_port, "citylake-dapr")
    dapr.subscribe("readings")
    dapr.subscribe("city/#")
    spy = Client(broker.device_port, "dev-2")
    spy.subscribe("#")
    device = Client(broker.device_port, "dev-1")
    try:
        device.publish("city/gulou/pm25/dev-1/telemetry", b'{"pm25": 12}')
        assert ingest.got() == [("city/gulou/pm25/dev-1/telemetry", b'{"pm25": 12}')]
        assert spy.got(0.2) == [] and dapr.got(0.2) == []  # nobody else reads the devices' tree

        # Another device's topic, a raw Arrow batch into the hot tier, an alert: all dropped.
        device.publish("city/gulou/pm25/dev-2/telemetry", b'{"pm25": 999}')
        device.publish("readings", b"ARROW1\x00forged")
        device.publish("alerts", b'{"forged": true}')
        assert ingest.got() == [] and dapr.got(0.2) == [] and spy.got(0.2) == []

        # ingest reads, and cannot write the live topics either.
        ingest.publish("readings", b"from ingest")
        assert dapr.got() == []
        # The Dapr user's own topic works (the control: the subscription is live).
        publisher = Client(broker.internal_port, "citylake-dapr")
        publisher.publish("readings", b"live")
        assert dapr.got() == [("readings", b"live")]
        publisher.close()
    finally:
        for client in (ingest, dapr, spy, device):
            client.close()


def test_a_device_cannot_take_over_ingests_session(broker: Broker) -> None:
    ingest = Client(broker.internal_port, "citylake-ingest", client_id=INGEST_ID)
    ingest.subscribe("city/+/+/+/telemetry")
    # A device asks for ingest's client id: the broker gives it its user name instead.
    thief = Client(broker.device_port, "dev-1", client_id=INGEST_ID)
    try:
        assert thief.result == "Success"
        time.sleep(QUIET_S)
        assert not ingest.dropped
        thief.publish("city/gulou/pm25/dev-1/telemetry", b"1")
        assert ingest.got() == [("city/gulou/pm25/dev-1/telemetry", b"1")]
    finally:
        thief.close()
        ingest.close()
