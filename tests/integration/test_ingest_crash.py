"""kill -9 of `citylake ingest` at random moments while sensors publish QoS 1:
after restarts, the landing zone holds every message the broker acknowledged
to the simulator, exactly once."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pyarrow.dataset as ds
import pytest

from citylake_devstack import ManagedProcess, Mosquitto, free_port
from citylake_devstack.process import CITYLAKE
from citylake_devstack.simulators.mqtt import Manifest, run_simulator
from tests.conftest import mqtt_source

pytestmark = pytest.mark.integration


def start_ingest(config: Path, workdir: Path, n: int) -> tuple[ManagedProcess, int]:
    port = free_port()
    process = ManagedProcess(
        f"ingest-{n}",
        [*CITYLAKE, "ingest", "--config", str(config), "--metrics-port", str(port)],
        workdir / f"ingest-{n}.log",
    ).start()
    process.wait_port(port, 30)
    return process, port


def landed_keys(data_dir: Path) -> Counter[tuple[str, str, int]]:
    root = data_dir / "landing" / "readings"
    if not root.exists():
        return Counter()
    table = ds.dataset(root, format="parquet", partitioning="hive").to_table(
        columns=["device_id", "metric", "ts"]
    )
    ts = table.column("ts").cast("int64").to_pylist()
    return Counter(
        zip(table.column("device_id").to_pylist(), table.column("metric").to_pylist(), ts, strict=True)
    )


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
    mosquitto: Mosquitto, city_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = city_config(sources=[mqtt_source(mosquitto.url, client_id="citylake-crash-test")])
    data_dir = tmp_path / "data"
    rng = random.Random(20261125)

    process, port = start_ingest(config, tmp_path, 0)
    # The session's subscription must exist before the first publish: the
    # broker acknowledges a message nobody subscribed to and drops it.
    process.wait_until(
        lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200, 30, "subscribed"
    )
    result: list[Manifest] = []
    simulator = threading.Thread(
        target=lambda: result.append(
            run_simulator(mosquitto.url, devices=30, rate_hz=20, duration_s=14, qos=1, record_keys=True)
        )
    )
    simulator.start()
    kills = 0
    while simulator.is_alive() and kills < 4:
        time.sleep(rng.uniform(1.0, 3.0))
        process.signal(signal.SIGKILL)
        process.proc.wait(10)  # type: ignore[union-attr]
        kills += 1
        time.sleep(rng.uniform(0.0, 1.0))
        process, port = start_ingest(config, tmp_path, kills)
    simulator.join()
    manifest = result[0]
    assert manifest.keys is not None and kills >= 3

    expected = Counter(manifest.keys)
    deadline = time.monotonic() + 60
    landed = landed_keys(data_dir)
    while sum(landed.values()) < len(manifest.keys) and time.monotonic() < deadline:
        time.sleep(0.5)
        landed = landed_keys(data_dir)
    time.sleep(2)  # anything still to come would be a duplicate
    landed = landed_keys(data_dir)
    process.stop()

    missing = expected - landed
    duplicated = {k: n for k, n in landed.items() if n > 1}
    assert not missing, f"{len(missing)} acknowledged readings lost, e.g. {list(missing)[:3]}"
    assert not duplicated, f"{len(duplicated)} readings landed twice, e.g. {list(duplicated.items())[:3]}"
    assert set(landed) == set(expected)
    assert manifest.readings == len(expected) > 5000
