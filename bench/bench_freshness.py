"""Freshness: time from a reading's acknowledgement at the edge (the broker's
PUBACK to the publisher, which ingest only sends after its landing commit)
to its visibility in the lake through DuckDB (`citylake sql`'s view), with
the streaming `readings` job running on Flink's mini-cluster.

Baseline, same run: the same readings' visibility in the landing zone (DuckDB
reading the landing Parquet), i.e. what the edge alone costs; the difference
is the pipeline (file discovery, checkpoint-aligned lake commits).

    .venv/bin/python bench/bench_freshness.py [--seconds S] [--devices N] [--checkpoint-s C]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from citylake.lake import Lake
from citylake.schemas import DataLayout
from citylake_devstack import ManagedProcess, free_port, start_mosquitto
from citylake_devstack.ingest_probe import IngestProbe
from citylake_devstack.process import CITYLAKE
from citylake_devstack.scalereport.summary import quantile  # the one percentile of every figure

T0 = 1_764_072_000_000


def write_config(work: Path, broker_url: str, checkpoint_s: float) -> Path:
    config = work / "city.yaml"
    config.write_text(
        f"site: bench\ndata_dir: {work}/data\n"
        f"sources:\n  - name: sensors\n    type: mqtt\n    url: {broker_url}\n    client_id: fresh\n"
        "    topics:\n      - template: city/{district}/{device_type}/{device_id}/telemetry\n"
        f"pipelines:\n  flink:\n    checkpoint_interval_s: {checkpoint_s}\n    monitor_interval_s: 0.5\n"
    )
    return config


def publish(port: int, devices: int, stop: threading.Event, acked: dict[int, float]) -> None:
    """QoS 1 readings; the broker acknowledges each only once ingest has
    committed it (ingest acks after landing), so acked[n] is the edge's promise."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fresh-pub")
    client.connect("127.0.0.1", port)
    client.loop_start()
    n = 0
    while not stop.is_set():
        for d in range(devices):
            payload = json.dumps({"ts": T0 + n, "seq": float(n)})
            client.publish(f"city/d/meter/m{d}/telemetry", payload, qos=1).wait_for_publish(30)
            acked[n] = time.time()
            n += 1
        time.sleep(0.1)
    client.disconnect()
    client.loop_stop()


def watch(
    data_dir: Path, until: Callable[[], bool], seen_lake: dict[int, float], seen_landing: dict[int, float]
) -> None:
    layout = DataLayout(data_dir)
    lake = Lake(layout)
    landing = duckdb.connect()
    glob = str(layout.landing_root / "readings" / "date=*" / "*.parquet")
    while not until():
        now = time.time()
        for (n,) in (
            lake.cursor().execute("SELECT CAST(value AS BIGINT) FROM readings WHERE value >= 0").fetchall()
        ):
            seen_lake.setdefault(n, now)
        with contextlib.suppress(duckdb.IOException):
            for (n,) in landing.execute(
                f"SELECT CAST(value AS BIGINT) FROM read_parquet('{glob}')"
            ).fetchall():
                seen_landing.setdefault(n, now)
        time.sleep(0.2)
    lake.close()


def report(
    acked: dict[int, float], seen_lake: dict[int, float], seen_landing: dict[int, float], checkpoint_s: float
) -> None:
    lake_lag = [seen_lake[n] - acked[n] for n in acked if n in seen_lake]
    landing_lag = [seen_landing[n] - acked[n] for n in acked if n in seen_landing]
    counts = f"visible in the lake {len(lake_lag)}, in landing {len(landing_lag)}"
    print(f"readings acknowledged {len(acked)}, {counts}")
    print(f"checkpoint interval {checkpoint_s}s, landing monitor 0.5s, views polled every 0.2s")
    for name, lags in (("lake (citylake sql)", lake_lag), ("landing (baseline)", landing_lag)):
        if lags:
            p50, p99 = statistics.median(lags), quantile(lags, 0.99)
            print(f"{name:22s} p50 {p50:6.2f}s  p99 {p99:6.2f}s  max {max(lags):6.2f}s")
    if lake_lag and landing_lag:
        print(f"ratio p99 lake / landing  {quantile(lake_lag, 0.99) / quantile(landing_lag, 0.99):.1f}")
        print(f"goal p99 <= 10 s          {'met' if quantile(lake_lag, 0.99) <= 10 else 'MISSED'}")


def warm_up(port: int, data_dir: Path, job: ManagedProcess) -> None:
    """One reading through the whole path before the clock runs: the job's
    JVM and Flink start-up (about 10 s) is not freshness."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fresh-warm")
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(
        "city/d/meter/warm/telemetry", json.dumps({"ts": T0 - 1, "seq": -1.0}), qos=1
    ).wait_for_publish(30)
    client.disconnect()
    client.loop_stop()
    lake = Lake(DataLayout(data_dir))

    def landed() -> bool:
        return bool(lake.cursor().execute("SELECT count(*) FROM readings").fetchall()[0][0])

    try:
        job.wait_until(landed, 120, "warm-up")
    finally:
        lake.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--checkpoint-s", type=float, default=2.0)
    args = parser.parse_args()
    acked: dict[int, float] = {}
    seen_lake: dict[int, float] = {}
    seen_landing: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = start_mosquitto(work / "mosquitto")
        config = write_config(work, broker.url, args.checkpoint_s)
        port = free_port()
        ingest_argv = [*CITYLAKE, "ingest", "--config", str(config), "--metrics-port", str(port)]
        job_argv = [*CITYLAKE, "pipeline", "run", "readings", "--mode", "streaming", "--config", str(config)]
        ingest = ManagedProcess("ingest", ingest_argv, work / "ingest.log").start()
        job = ManagedProcess("job", job_argv, work / "job.log").start()
        try:
            ingest.wait_until(IngestProbe(port).healthy, 60, "ingest healthy")
            warm_up(broker.port, work / "data", job)
            stop = threading.Event()
            give_up = time.time() + args.seconds + 60

            def finished() -> bool:
                return stop.is_set() and (len(seen_lake) >= len(acked) or time.time() > give_up)

            watcher = threading.Thread(target=watch, args=(work / "data", finished, seen_lake, seen_landing))
            publisher = threading.Thread(target=publish, args=(broker.port, args.devices, stop, acked))
            watcher.start()
            publisher.start()
            time.sleep(args.seconds)
            stop.set()
            publisher.join()
            watcher.join()
        finally:
            job.stop()
            ingest.stop()
            broker.process.stop()
    report(acked, seen_lake, seen_landing, args.checkpoint_s)


if __name__ == "__main__":
    main()
